//! kube-rs conformance: CRUD, Status error shapes, status subresource,
//! generation, finalizers, dry run, selectors and paging.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

fn api_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_and_error_shapes() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let created = api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some());

    let dup = api_status(api.create(&PostParams::default(), &cm("a", &[])).await.unwrap_err());
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    let missing = api_status(api.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");
    assert_eq!(missing.details.as_ref().map(|d| d.name.as_str()), Some("nope"));

    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = api.replace("a", &PostParams::default(), &fresh).await.unwrap();
    assert_ne!(updated.metadata.resource_version, created.metadata.resource_version);
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    let conflict = api_status(api.replace("a", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(conflict.message.contains("the object has been modified"), "{}", conflict.message);

    let bad = api_status(api.create(&PostParams::default(), &cm("Bad_Name", &[])).await.unwrap_err());
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    let causes = bad.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");

    let gen_name = ConfigMap {
        metadata: ObjectMeta { generate_name: Some("gen-".into()), ..Default::default() },
        ..Default::default()
    };
    let g = api.create(&PostParams::default(), &gen_name).await.unwrap();
    let name = g.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let dry = PostParams { dry_run: true, ..Default::default() };
    api.create(&dry, &cm("dry", &[])).await.unwrap();
    assert!(api.get_opt("dry").await.unwrap().is_none());

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_must_exist() {
    let c = start().await;
    let client = c.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let e = api_status(api.create(&PostParams::default(), &cm("a", &[])).await.unwrap_err());
    assert_eq!((e.code, e.message.as_str()), (404, "namespaces \"nowhere\" not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_and_generation() {
    let c = start().await;
    let client = c.client().await.unwrap();
    install_widget_crd(&client).await;
    let api: Api<Widget> = Api::default_namespaced(client);
    let mut w = widget("w", 1);
    w.status = Some(WidgetStatus { phase: Some("ignored".into()), ..Default::default() });
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.status, None, "status is dropped on create");

    let pp = PatchParams::default();
    let st = json!({"status": {"phase": "Ready"}, "spec": {"replicas": 99}});
    let after = api.patch_status("w", &pp, &Patch::Merge(&st)).await.unwrap();
    assert_eq!(after.status.as_ref().unwrap().phase.as_deref(), Some("Ready"));
    assert_eq!(after.spec.replicas, 1, "/status ignores spec");
    assert_eq!(after.metadata.generation, Some(1), "status changes keep generation");

    let main = json!({"status": {"phase": "Hacked"}, "spec": {"replicas": 3}});
    let after = api.patch("w", &pp, &Patch::Merge(&main)).await.unwrap();
    assert_eq!(after.status.unwrap().phase.as_deref(), Some("Ready"), "main endpoint ignores status");
    assert_eq!(after.spec.replicas, 3);
    assert_eq!(after.metadata.generation, Some(2));

    let labels = json!({"metadata": {"labels": {"x": "y"}}});
    let after = api.patch("w", &pp, &Patch::Merge(&labels)).await.unwrap();
    assert_eq!(after.metadata.generation, Some(2), "metadata changes keep generation");

    let same = api.patch("w", &pp, &Patch::Merge(&labels)).await.unwrap();
    assert_eq!(same.metadata.resource_version, after.metadata.resource_version, "no-op writes keep the version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let mut obj = cm("f", &[]);
    obj.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &obj).await.unwrap();
    let res = api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = res.left().expect("object returned while finalizers pending");
    assert!(held.metadata.deletion_timestamp.is_some());
    let still = api.get("f").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    // No new finalizer on an object being deleted (apimachinery pkg/api/validation/objectmeta.go,
    // ValidateObjectMetaUpdate -> ValidateNoNewFinalizers)...
    let add = json!({"metadata": {"finalizers": ["example.com/hold", "example.com/late"]}});
    let refused = match api.patch("f", &PatchParams::default(), &Patch::Merge(&add)).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("a new finalizer on a deleting object: {other:?}"),
    };
    assert_eq!(refused.code, 422);
    assert!(
        refused.message.contains(
            r#"metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"example.com/late"}"#
        ),
        "{}",
        refused.message
    );
    assert_eq!(api.get("f").await.unwrap().metadata.finalizers.unwrap(), ["example.com/hold"]);
    // ... but removing the last one deletes it at once.
    let rm = json!({"metadata": {"finalizers": null}});
    api.patch("f", &PatchParams::default(), &Patch::Merge(&rm)).await.unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_preconditions() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    api.create(&PostParams::default(), &cm("p", &[])).await.unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: Some("wrong".into()), resource_version: None }),
        ..Default::default()
    };
    let e = api_status(api.delete("p", &dp).await.unwrap_err());
    assert_eq!(e.code, 409);
    assert!(e.message.contains("Precondition failed: UID in precondition: wrong"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_node_wait_for_the_node_agent() {
    let c = start().await;
    let api: Api<Pod> = Api::default_namespaced(c.client().await.unwrap());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"nodeName": "gw-a", "containers": [{"name": "c", "image": "x"}]}}))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    api.delete("p", &DeleteParams::default()).await.unwrap();
    let p = api.get("p").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    api.delete("p", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    assert!(api.get_opt("p").await.unwrap().is_none());
    // Without a node, deletion is immediate.
    let unbound: Pod = serde_json::from_value(
        json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &unbound).await.unwrap();
    api.delete("q", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("q").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_paging() {
    let c = start().await;
    let client = c.client().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[("tier", tier), ("app", "t")])).await.unwrap();
    }
    let even = api.list(&ListParams::default().labels("tier=even")).await.unwrap();
    assert_eq!(even.items.len(), 4);
    let set = api.list(&ListParams::default().labels("tier in (odd),app")).await.unwrap();
    assert_eq!(set.items.len(), 3);
    let named = api.list(&ListParams::default().fields("metadata.name=c3")).await.unwrap();
    assert_eq!(named.items.len(), 1);
    let not = api
        .list(&ListParams::default().labels("app=t").fields("metadata.name!=c3,metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(not.items.len(), 6);

    let mut names = vec![];
    let mut lp = ListParams::default().labels("app=t").limit(3);
    for _ in 0..10 {
        let page = api.list(&lp).await.unwrap();
        names.extend(page.items.iter().filter_map(|i| i.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());

    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default().labels("app=t")).await.unwrap().items.len(), 7);
    let bad = api_status(all.list(&ListParams::default().labels("a in b")).await.unwrap_err());
    assert_eq!(bad.code, 400);

    let pods: Api<Pod> = Api::default_namespaced(client);
    for (n, node) in [("p1", "gw-a"), ("p2", "gw-b")] {
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": n}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}),
        )
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let on_a = pods.list(&ListParams::default().fields("spec.nodeName=gw-a")).await.unwrap();
    assert_eq!(on_a.items.len(), 1);
    let pending = pods.list(&ListParams::default().fields("status.phase=Pending")).await.unwrap();
    assert_eq!(pending.items.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_clusters_are_independent() {
    let (a, b) = (start().await, start().await);
    assert_ne!(a.url(), b.url());
    let api_a: Api<ConfigMap> = Api::default_namespaced(a.client().await.unwrap());
    let api_b: Api<ConfigMap> = Api::default_namespaced(b.client().await.unwrap());
    api_a.create(&PostParams::default(), &cm("only-a", &[])).await.unwrap();
    assert!(api_b.get_opt("only-a").await.unwrap().is_none());
    // A token of one cluster is useless on the other.
    let cross = b.client_for_token(a.admin_token()).await.unwrap();
    let e = Api::<Namespace>::all(cross).list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_status(e).code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = scistream_testcluster::TestCluster::builder().data_dir(dir.path()).start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let created = api.create(&PostParams::default(), &cm("kept", &[])).await.unwrap();
    let rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    c.shutdown().await;
    let c2 = scistream_testcluster::TestCluster::builder().data_dir(dir.path()).start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(c2.client().await.unwrap());
    let kept = api.get("kept").await.unwrap();
    assert_eq!(kept.metadata.uid, created.metadata.uid);
    let next = api.create(&PostParams::default(), &cm("next", &[])).await.unwrap();
    assert!(next.metadata.resource_version.unwrap().parse::<u64>().unwrap() > rv);
    tokio::time::timeout(Duration::from_secs(5), c2.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_seeded_like_a_real_cluster() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let c = start().await;
    let client = c.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns =
        Namespace { metadata: ObjectMeta { name: Some("fresh".into()), ..Default::default() }, ..Default::default() };
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "fresh");
    let sas: Api<ServiceAccount> = Api::namespaced(client, "fresh");
    common::eventually(std::time::Duration::from_secs(5), || {
        let (cms, sas) = (cms.clone(), sas.clone());
        async move {
            cms.get_opt("kube-root-ca.crt").await.unwrap().is_some() && sas.get_opt("default").await.unwrap().is_some()
        }
    })
    .await;
    let ca = cms.get("kube-root-ca.crt").await.unwrap().data.unwrap();
    assert_eq!(ca["ca.crt"], c.ca_pem());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collection_dry_run_and_list_versions() {
    use kube::api::VersionMatch;
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    for i in 0..4 {
        let tier = if i < 2 { "a" } else { "b" };
        api.create(&PostParams::default(), &cm(&format!("d{i}"), &[("tier", tier)])).await.unwrap();
    }
    let dry = DeleteParams { dry_run: true, ..Default::default() };
    api.delete("d0", &dry).await.unwrap();
    assert!(api.get_opt("d0").await.unwrap().is_some(), "dry-run delete keeps the object");

    let gone = api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=a")).await.unwrap();
    let names: Vec<_> = gone.left().unwrap().items.into_iter().filter_map(|o| o.metadata.name).collect();
    assert_eq!(names, ["d0", "d1"]);
    assert_eq!(api.list(&ListParams::default().labels("tier")).await.unwrap().items.len(), 2);

    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let exact = ListParams::default().at(&rv).matching(VersionMatch::Exact);
    assert_eq!(api.list(&exact).await.unwrap().metadata.resource_version.as_deref(), Some(rv.as_str()));
    api.create(&PostParams::default(), &cm("newer", &[])).await.unwrap();
    let e = api_status(api.list(&exact).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    // (A version from the future is 504 Timeout; kube-rs retries those, so
    // that case is checked with kubectl in tests/kubectl.rs.)
}
