//! The `nodeagent` binary against the embedded cluster, with the example files.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use scistream_testcluster::TestCluster;
use serde_json::json;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_registers_nodes_runs_pods_and_stops_on_sigterm() {
    let cluster = TestCluster::builder().name("nodeagent-bin").start().await.expect("cluster");
    let client = cluster.client().await.expect("client");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["--topology", &format!("{EXAMPLES}/two-facilities.yaml")])
        .args(["--images", &format!("{EXAMPLES}/images.yaml")])
        .args(["--mode", "loopback", "--heartbeat-seconds", "1", "--fast-backoff"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nodeagent");
    let nodes: Api<Node> = Api::all(client.clone());
    for n in ["gw-a", "gw-b"] {
        eventually(30, "node Ready", || async {
            (node_ready(&nodes.get_opt(n).await.ok()??)? == "True").then_some(())
        })
        .await;
    }
    let gw_a = nodes.get("gw-a").await.expect("gw-a");
    let taints = gw_a.spec.and_then(|s| s.taints).unwrap_or_default();
    assert_eq!(taints.first().map(|t| t.key.as_str()), Some("scistream.io/gateway"));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bb", "namespace": NS},
        "spec": {"nodeName": "gw-b", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox:1.36", "args": ["sleep 600"]}]}
    }))
    .expect("pod");
    create_pod(&client, &pod).await;
    wait_pod(&client, "bb", 30, "Ready", is_ready).await;

    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
    let status =
        tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits in time").expect("wait");
    assert!(status.success(), "{status}");
    for n in ["gw-a", "gw-b"] {
        assert_eq!(node_ready(&nodes.get(n).await.expect("node")).as_deref(), Some("False"));
    }
}
