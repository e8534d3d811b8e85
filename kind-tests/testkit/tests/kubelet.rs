//! The stand-in kubelet against the embedded API server: what it writes, and only that.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use scistream_testkit::{Facility, wait_until};
use serde_json::json;

fn relay_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"nodeName": node, "hostNetwork": true, "containers": [{"name": "relay", "image": "s2ds"}]}}))
    .unwrap()
}

fn ready(pod: &Pod) -> Option<bool> {
    let status = pod.status.as_ref()?;
    let condition = status.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some(status.phase.as_deref() == Some("Running") && condition.status == "True")
}

async fn wait_ready(f: &Facility, name: &str, want: bool) -> Pod {
    wait_until(Duration::from_secs(10), || async move {
        f.pods().get(name).await.ok().as_ref().and_then(ready) == Some(want)
    })
    .await;
    f.pods().get(name).await.unwrap()
}

#[tokio::test]
async fn runs_pods_leaves_broken_nodes_not_ready_and_removes_deleted_pods() {
    let f = Facility::start("kubelet").await;
    f.kubelet.set_broken(&["gw-b"]);
    let created = f.pods().create(&PostParams::default(), &relay_pod("a", "gw-a")).await.unwrap();
    f.pods().create(&PostParams::default(), &relay_pod("b", "gw-b")).await.unwrap();
    let a = wait_ready(&f, "a", true).await;
    wait_ready(&f, "b", false).await;
    // Only status is written, and never the class the API server derived at creation.
    let qos = |p: &Pod| p.status.as_ref().and_then(|s| s.qos_class.clone());
    assert_eq!(qos(&created).as_deref(), Some("BestEffort"));
    assert_eq!(qos(&a), qos(&created));
    assert_eq!(a.spec, created.spec);

    f.kubelet.set_broken(&[]);
    f.pods().delete("b", &DeleteParams::default()).await.unwrap();
    wait_until(Duration::from_secs(10), || async { f.pods().get_opt("b").await.unwrap().is_none() }).await;
    f.shutdown().await;
}
