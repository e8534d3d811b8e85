//! kube-rs conformance: raw watches (resume, 410, bookmarks, selectors,
//! sendInitialEvents), kube-runtime watcher (list-then-watch and streaming
//! lists), reflector, and a Controller that must converge.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        ..Default::default()
    }
}

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_version() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let first = api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    let rv = first.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("b", &[])).await.unwrap();
    api.delete("a", &Default::default()).await.unwrap();
    let mut s = api.watch(&WatchParams::default().timeout(10), &rv).await.unwrap().boxed();
    let mut seen = vec![];
    while seen.len() < 2 {
        match tokio::time::timeout(T, s.try_next()).await.unwrap().unwrap().unwrap() {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED b", "DELETED a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_versions_are_gone() {
    scistream_testcluster::tls::install_crypto_provider();
    let c = scistream_testcluster::TestCluster::builder().watch_cache_size(3).start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    for i in 0..6 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[])).await.unwrap();
    }
    let mut s = api.watch(&WatchParams::default(), "1").await.unwrap().boxed();
    match tokio::time::timeout(T, s.try_next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(e.message.starts_with("too old resource version: 1"), "{}", e.message);
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_and_selector_transitions() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let wp = WatchParams::default().labels("app=web").timeout(20);
    let mut s = api.watch(&wp, &rv).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("x", &[("app", "web")])).await.unwrap();
    let relabel = json!({"metadata": {"labels": {"app": "db"}}});
    api.patch("x", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    let (mut added, mut deleted, mut bookmark) = (false, false, false);
    for _ in 0..20 {
        match tokio::time::timeout(T, s.try_next()).await.unwrap().unwrap().unwrap() {
            WatchEvent::Added(_) => added = true,
            WatchEvent::Deleted(o) => {
                assert_eq!(o.metadata.labels.unwrap()["app"], "db");
                deleted = true;
            }
            WatchEvent::Bookmark(b) => {
                assert!(!b.metadata.resource_version.is_empty());
                bookmark = true;
            }
            other => panic!("unexpected {other:?}"),
        }
        if added && deleted && bookmark {
            return;
        }
    }
    panic!("added={added} deleted={deleted} bookmark={bookmark}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_timeout_ends_the_stream() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let s = api.watch(&WatchParams::default().labels("nothing=here").timeout(1), "0").await.unwrap();
    let all: Vec<_> = tokio::time::timeout(T, s.collect::<Vec<_>>()).await.unwrap();
    // The stream ends by itself; only bookmarks may have come (no objects exist).
    assert!(all.iter().all(|e| matches!(e, Ok(WatchEvent::Bookmark(_)))), "{all:?}");
}

async fn watcher_sees_everything(cfg: watcher::Config) {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("pre{i}"), &[("t", "w")])).await.unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), cfg.labels("t=w"))).applied_objects();
    let handle = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(Ok(_)) = s.next().await {}
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 3);
    api.create(&PostParams::default(), &cm("live", &[("t", "w")])).await.unwrap();
    api.delete("pre0", &Default::default()).await.unwrap();
    eventually(T, || {
        let r = reader.clone();
        async move {
            let mut names: Vec<String> = r.state().iter().filter_map(|o| o.metadata.name.clone()).collect();
            names.sort();
            names == ["live", "pre1", "pre2"]
        }
    })
    .await;
    handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_list_then_watch() {
    watcher_sees_everything(watcher::Config::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_streaming_list() {
    watcher_sees_everything(watcher::Config::default().streaming_lists()).await;
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed")]
struct ReconcileError(#[source] kube::Error);

async fn reconcile(w: Arc<Widget>, api: Arc<Api<Widget>>) -> Result<Action, ReconcileError> {
    let name = w.metadata.name.clone().unwrap_or_default();
    let generation = w.metadata.generation;
    if w.status.as_ref().and_then(|s| s.observed_generation) != generation {
        let st = json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"phase": "Ready", "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        api.patch_status(&name, &PatchParams::apply("widget-controller").force(), &Patch::Apply(&st))
            .await
            .map_err(ReconcileError)?;
    }
    Ok(Action::await_change())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_converges() {
    let c = start().await;
    let client = c.client().await.unwrap();
    install_widget_crd(&client).await;
    let api: Api<Widget> = Api::default_namespaced(client);
    for i in 0..5 {
        api.create(&PostParams::default(), &widget(&format!("w{i}"), i)).await.unwrap();
    }
    let ctx = Arc::new(api.clone());
    let ctl = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), ctx)
        .for_each(|_| async {});
    let handle = tokio::spawn(ctl);
    let bump = json!({"spec": {"replicas": 42}});
    api.patch("w3", &PatchParams::default(), &Patch::Merge(&bump)).await.unwrap();
    eventually(Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.unwrap();
            list.items.len() == 5
                && list.items.iter().all(|w| {
                    w.status.as_ref().and_then(|s| s.observed_generation) == w.metadata.generation
                        && w.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Ready")
                })
        }
    })
    .await;
    handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_finalizer_helper_cleans_up() {
    use kube::runtime::finalizer::{Event as Fin, finalizer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let c = start().await;
    let client = c.client().await.unwrap();
    install_widget_crd(&client).await;
    let api: Api<Widget> = Api::default_namespaced(client);
    let cleaned = Arc::new(AtomicUsize::new(0));
    let ctx = Arc::new((api.clone(), cleaned.clone()));
    async fn reconcile(
        w: Arc<Widget>,
        ctx: Arc<(Api<Widget>, Arc<AtomicUsize>)>,
    ) -> Result<Action, kube::runtime::finalizer::Error<kube::Error>> {
        let (api, cleaned) = (&ctx.0, ctx.1.clone());
        finalizer(api, "example.com/cleanup", w, |ev| async move {
            if let Fin::Cleanup(_) = ev {
                cleaned.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, kube::Error>(Action::await_change())
        })
        .await
    }
    let ctl = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_millis(200)), ctx)
        .for_each(|_| async {});
    let handle = tokio::spawn(ctl);
    api.create(&PostParams::default(), &widget("f", 1)).await.unwrap();
    eventually(T, || {
        let api = api.clone();
        async move { api.get("f").await.unwrap().metadata.finalizers.unwrap_or_default() == ["example.com/cleanup"] }
    })
    .await;
    api.delete("f", &Default::default()).await.unwrap();
    eventually(T, || {
        let api = api.clone();
        async move { api.get_opt("f").await.unwrap().is_none() }
    })
    .await;
    assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    handle.abort();
}
