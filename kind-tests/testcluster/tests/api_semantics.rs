//! kube-rs conformance: patches (merge, JSON, strategic, server-side
//! apply with managed fields), field validation, garbage collection,
//! namespace and CRD deletion, RBAC and reviews.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, ValidationDirective};
use kube::core::ObjectMeta;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(5);

fn status_of(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm_apply(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_ownership() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let m1 = PatchParams::apply("m1");
    api.patch("ssa", &m1, &Patch::Apply(cm_apply(json!({"a": "1", "b": "2"})))).await.unwrap();
    let after = api.patch("ssa", &m1, &Patch::Apply(cm_apply(json!({"a": "1"})))).await.unwrap();
    assert_eq!(after.data.unwrap(), [("a".to_string(), "1".to_string())].into(), "dropped field removed");
    let mf = after.metadata.managed_fields.unwrap();
    assert_eq!((mf[0].manager.as_deref(), mf[0].operation.as_deref()), (Some("m1"), Some("Apply")));

    let m2 = PatchParams::apply("m2");
    let e = status_of(api.patch("ssa", &m2, &Patch::Apply(cm_apply(json!({"a": "2"})))).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(e.message, "Apply failed with 1 conflict: conflict with \"m1\" using v1: .data.a");
    let forced = api.patch("ssa", &m2.clone().force(), &Patch::Apply(cm_apply(json!({"a": "2"})))).await.unwrap();
    assert_eq!(forced.data.unwrap()["a"], "2");

    // A merge patch by another manager takes ownership of what it changes.
    let mp = PatchParams { field_manager: Some("editor".into()), ..Default::default() };
    api.patch("ssa", &mp, &Patch::Merge(json!({"data": {"c": "3"}}))).await.unwrap();
    let got = api.get("ssa").await.unwrap();
    let managers: Vec<_> = got.metadata.managed_fields.unwrap().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"editor".to_string()), "{managers:?}");

    let dry = PatchParams { dry_run: true, ..PatchParams::apply("m2") };
    let preview = api.patch("ssa", &dry, &Patch::Apply(cm_apply(json!({"a": "dry"})))).await.unwrap();
    assert_eq!(preview.data.unwrap()["a"], "dry");
    assert_eq!(api.get("ssa").await.unwrap().data.unwrap()["a"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_and_strict_validation_rejects_unknown_fields() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let mut pp = PatchParams::apply("m");
    pp.field_validation = Some(ValidationDirective::Strict);
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "bogus": 1});
    let e = status_of(api.patch("x", &pp, &Patch::Apply(&bad)).await.unwrap_err());
    assert_eq!(e.code, 400);
    assert!(e.message.contains("strict decoding error: unknown field \"bogus\""), "{}", e.message);
    let good = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}});
    let created = api.patch("x", &pp, &Patch::Apply(&good)).await.unwrap();
    assert!(created.metadata.uid.is_some());
    let e = status_of(api.patch("x", &PatchParams::default(), &Patch::Apply(&good)).await.unwrap_err());
    assert_eq!(e.code, 400, "apply needs a field manager");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_strategic_patches() {
    // On a Deployment's pod template: a real server refuses these changes on a Pod itself
    // (only images may change there; see `pod_updates_are_refused_as_the_server_does`).
    let c = start().await;
    let api: Api<Deployment> = Api::default_namespaced(c.client().await.unwrap());
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
        "selector": {"matchLabels": {"app": "p"}},
        "template": {"metadata": {"labels": {"app": "p"}}, "spec": {"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}], "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "b:1"}]}}}}))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    let containers = |d: Deployment| d.spec.unwrap().template.spec.unwrap().containers;
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}}}});
    let p = api.patch("p", &PatchParams::default(), &Patch::Strategic(&smp)).await.unwrap();
    let cs = containers(p);
    assert_eq!(cs.len(), 2, "containers merged by name");
    assert_eq!(cs[0].image.as_deref(), Some("a:2"));
    assert_eq!(cs[0].env.as_ref().unwrap().len(), 2, "env merged by name");
    assert_eq!(cs[0].ports.as_ref().unwrap().len(), 1);

    let jp: json_patch::Patch = serde_json::from_value(
        json!([{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "b:2"}]),
    )
    .unwrap();
    let p = api.patch("p", &PatchParams::default(), &Patch::<()>::Json(jp)).await.unwrap();
    assert_eq!(containers(p)[1].image.as_deref(), Some("b:2"));
    let bad: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/spec/template/spec/containers/1/image", "value": "zzz"}]),
    )
    .unwrap();
    let e = status_of(api.patch("p", &PatchParams::default(), &Patch::<()>::Json(bad)).await.unwrap_err());
    assert_eq!(e.code, 422);

    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"minReadySeconds": 5}});
    let e = status_of(api.patch("p", &PatchParams::default(), &Patch::Merge(&stale)).await.unwrap_err());
    assert_eq!(e.code, 409);
}

fn owned_cm(name: &str, owner: &ConfigMap) -> ConfigMap {
    let oref = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid});
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![serde_json::from_value(oref).unwrap()]),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn gone(api: &Api<ConfigMap>, name: &str) {
    let (api, name) = (api.clone(), name.to_string());
    eventually(T, move || {
        let (api, name) = (api.clone(), name.clone());
        async move { api.get_opt(&name).await.unwrap().is_none() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_garbage_collection() {
    let c = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await.unwrap());
    let pp = PostParams::default();
    let mk = |n: &str| ConfigMap {
        metadata: ObjectMeta { name: Some(n.into()), ..Default::default() },
        ..Default::default()
    };

    let owner = api.create(&pp, &mk("bg-owner")).await.unwrap();
    api.create(&pp, &owned_cm("bg-dep", &owner)).await.unwrap();
    api.delete("bg-owner", &DeleteParams::background()).await.unwrap();
    gone(&api, "bg-dep").await;

    let owner = api.create(&pp, &mk("fg-owner")).await.unwrap();
    api.create(&pp, &owned_cm("fg-dep", &owner)).await.unwrap();
    api.delete("fg-owner", &DeleteParams::foreground()).await.unwrap();
    gone(&api, "fg-dep").await;
    gone(&api, "fg-owner").await;

    let owner = api.create(&pp, &mk("or-owner")).await.unwrap();
    api.create(&pp, &owned_cm("or-dep", &owner)).await.unwrap();
    api.delete("or-owner", &DeleteParams::orphan()).await.unwrap();
    gone(&api, "or-owner").await;
    let dep = api.get("or-dep").await.unwrap();
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty(), "orphaned dependents lose the reference");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_empties_then_removes() {
    let c = start().await;
    let client = c.client().await.unwrap();
    install_widget_crd(&client).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns =
        Namespace { metadata: ObjectMeta { name: Some("doomed".into()), ..Default::default() }, ..Default::default() };
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let mut held =
        ConfigMap { metadata: ObjectMeta { name: Some("held".into()), ..Default::default() }, ..Default::default() };
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "doomed");
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();

    nss.delete("doomed", &DeleteParams::default()).await.unwrap();
    let n = nss.get("doomed").await.unwrap();
    assert_eq!(n.status.unwrap().phase.as_deref(), Some("Terminating"));
    let w2 = widget("late", 1);
    let e = status_of(widgets.create(&PostParams::default(), &w2).await.unwrap_err());
    assert_eq!(e.code, 403);
    assert!(e.message.contains("because it is being terminated"), "{}", e.message);
    eventually(T, || {
        let w = widgets.clone();
        async move { w.list(&ListParams::default()).await.unwrap().items.is_empty() }
    })
    .await;
    assert!(nss.get_opt("doomed").await.unwrap().is_some(), "held by the finalizer of its content");
    cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    eventually(T, || {
        let nss = nss.clone();
        async move { nss.get_opt("doomed").await.unwrap().is_none() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_lifecycle() {
    let c = start().await;
    let client = c.client().await.unwrap();
    install_widget_crd(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("widgets.example.com").await.unwrap();
    let conds = crd.status.unwrap().conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    assert!(conds.iter().any(|c| c.type_ == "NamesAccepted" && c.status == "True"));
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    crds.delete("widgets.example.com", &DeleteParams::default()).await.unwrap();
    eventually(T, || {
        let crds = crds.clone();
        async move { crds.get_opt("widgets.example.com").await.unwrap().is_none() }
    })
    .await;
    let e = status_of(widgets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(e.code, 404, "resource no longer served");
    // Re-creating the CRD serves an empty collection.
    install_widget_crd(&client).await;
    assert!(widgets.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_and_reviews() {
    let c = start().await;
    let admin = c.client().await.unwrap();
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]}))
    .unwrap();
    Api::<Role>::default_namespaced(admin.clone()).create(&PostParams::default(), &role).await.unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "dev-read"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "Group", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}]}))
    .unwrap();
    Api::<RoleBinding>::default_namespaced(admin.clone()).create(&PostParams::default(), &rb).await.unwrap();

    let alice = c.client_for_token("tok-alice").await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(alice.clone());
    cms.list(&ListParams::default()).await.unwrap();
    let e = status_of(
        cms.create(
            &PostParams::default(),
            &ConfigMap { metadata: ObjectMeta { name: Some("x".into()), ..Default::default() }, ..Default::default() },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    let other_ns: Api<ConfigMap> = Api::namespaced(alice.clone(), "kube-system");
    assert_eq!(status_of(other_ns.list(&ListParams::default()).await.unwrap_err()).code, 403);

    let ssar: SelfSubjectAccessReview = serde_json::from_value(
        json!({"spec": {"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "configmaps"}}}),
    )
    .unwrap();
    let r = Api::<SelfSubjectAccessReview>::all(alice.clone()).create(&PostParams::default(), &ssar).await.unwrap();
    assert!(r.status.unwrap().allowed);
    let bob = c.client_for_token("tok-bob").await.unwrap();
    let r = Api::<SelfSubjectAccessReview>::all(bob).create(&PostParams::default(), &ssar).await.unwrap();
    assert!(!r.status.unwrap().allowed);

    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let sar = |user: &str, groups: &[&str]| -> SubjectAccessReview {
        serde_json::from_value(json!({"spec": {"user": user, "groups": groups,
            "resourceAttributes": {"namespace": "default", "verb": "get", "resource": "configmaps"}}}))
        .unwrap()
    };
    let sars = Api::<SubjectAccessReview>::all(admin.clone());
    let yes = sars.create(&PostParams::default(), &sar("carol", &["dev"])).await.unwrap();
    assert!(yes.status.unwrap().allowed);
    let no = sars.create(&PostParams::default(), &sar("carol", &["ops"])).await.unwrap();
    assert!(!no.status.unwrap().allowed);
    // Validated as kube-apiserver does: a review naming nobody is refused.
    let e = status_of(sars.create(&PostParams::default(), &sar("", &[])).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "SubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified"
    );
    let tr: TokenReview = serde_json::from_value(json!({"spec": {"token": "tok-alice"}})).unwrap();
    let r = Api::<TokenReview>::all(admin).create(&PostParams::default(), &tr).await.unwrap();
    let st = r.status.unwrap();
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(st.user.unwrap().username.as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_are_core_events_too() {
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder};
    let c = start().await;
    let client = c.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm =
        ConfigMap { metadata: ObjectMeta { name: Some("evented".into()), ..Default::default() }, ..Default::default() };
    let cm = cms.create(&PostParams::default(), &cm).await.unwrap();
    let recorder = Recorder::new(client.clone(), "widget-controller".into());
    let ev = Event {
        type_: EventType::Normal,
        reason: "Configured".into(),
        note: Some("all good".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&ev, &cm.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &cm.object_ref(&())).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client.clone());
    let listed = core.list(&ListParams::default().fields("involvedObject.name=evented")).await.unwrap();
    assert_eq!(listed.items.len(), 1, "a repeated event is one object with a series");
    let e = &listed.items[0];
    assert_eq!((e.reason.as_deref(), e.message.as_deref()), (Some("Configured"), Some("all good")));
    assert_eq!(e.reporting_component.as_deref(), Some("widget-controller"));
    let new_api: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client);
    let same = new_api.get(e.metadata.name.as_deref().unwrap()).await.unwrap();
    assert_eq!(same.note.as_deref(), Some("all good"));
    assert_eq!(same.regarding.unwrap().name.as_deref(), Some("evented"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_discovery_legacy_and_aggregated() {
    use kube::api::{DynamicObject, GroupVersionKind};
    use kube::discovery::{self, Discovery, Scope};
    let c = start().await;
    let client = c.client().await.unwrap();
    install_widget_crd(&client).await;
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    for d in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone()).run_aggregated().await.unwrap(),
    ] {
        let (ar, caps) = d.resolve_gvk(&gvk).expect("widgets discovered");
        assert_eq!(ar.plural, "widgets");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(
            caps.subresources.iter().any(|(s, _)| s.plural == "widgets/status" || s.plural == "status"),
            "{:?}",
            caps.subresources
        );
        let pods = d.resolve_gvk(&GroupVersionKind::gvk("", "v1", "Pod")).expect("pods discovered");
        assert_eq!(pods.0.plural, "pods");
    }
    let (ar, _) = discovery::pinned_kind(&client, &gvk).await.unwrap();
    let dynamic: Api<DynamicObject> = Api::default_namespaced_with(client, &ar);
    dynamic.create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "dyn"}, "spec": {"replicas": 1}})).unwrap()).await.unwrap();
    assert_eq!(dynamic.get("dyn").await.unwrap().data["spec"]["replicas"], 1);
}
