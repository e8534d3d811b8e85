//! Exec and liveness probes, and postStart hooks.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use scistream_nodeagent::{NetworkMode, NodeSpec, Topology};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_readiness_probe_runs_inside_the_pod_mounts() {
    let env = start(Topology::new().node(NodeSpec::new("gw-a")), NetworkMode::Loopback).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "execp", "namespace": NS},
        "spec": {"nodeName": "gw-a", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
                 "containers": [{"name": "c", "image": "sh", "args": ["-c", "sleep 600"],
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/run/s2ds/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
                    "volumeMounts": [{"name": "run", "mountPath": "/run/s2ds"}]}],
                 "volumes": [{"name": "run", "emptyDir": {}}]}
    }))
    .expect("pod");
    create_pod(&env.client, &pod).await;
    let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let p = wait_pod(&env.client, "execp", 20, "Running", running).await;
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    let flag = env.agent.pods_dir().join(p.uid().expect("uid")).join("volumes/run/ready");
    std::fs::write(&flag, b"").expect("flag");
    wait_pod(&env.client, "execp", 20, "Ready after the file appears in the emptyDir", is_ready).await;
    std::fs::remove_file(&flag).expect("unflag");
    wait_pod(&env.client, "execp", 20, "not Ready again", |p| condition(p, "Ready").as_deref() == Some("False")).await;
    env.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_liveness_probe_restarts_the_container() {
    let env = start(Topology::new().node(NodeSpec::new("gw-a")), NetworkMode::Loopback).await;
    let addr = env.agent.network().address("gw-a").expect("address").to_string();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "live", "namespace": NS},
        "spec": {"nodeName": "gw-a", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "sh", "args": ["-c", "sleep 600"],
                    "livenessProbe": {"tcpSocket": {"host": addr, "port": port(23000)}, "periodSeconds": 1, "failureThreshold": 1}}]}
    }))
    .expect("pod");
    create_pod(&env.client, &pod).await;
    wait_pod(&env.client, "live", 30, "restarted by liveness", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    let events: Api<Event> = Api::namespaced(env.client.clone(), NS);
    let reasons: Vec<String> =
        events.list(&ListParams::default()).await.expect("events").items.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "Unhealthy"), "{reasons:?}");
    env.agent.stop().await;
}

/// A container is not running, and not probed, while its postStart hook runs; the moment the
/// hook returns its readiness is probed (not a probe period later), as the kubelet does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_start_hook_holds_the_container_until_it_returns_then_readiness_is_probed_at_once() {
    let env = start(Topology::new().node(NodeSpec::new("gw-a")), NetworkMode::Loopback).await;
    let hook = "touch /run/s2ds/hook; while [ ! -f /run/s2ds/go ]; do sleep 0.05; done; touch /run/s2ds/ready";
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hooked", "namespace": NS},
        "spec": {"nodeName": "gw-a", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "sh", "args": ["-c", "sleep 600"],
                    "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", hook]}}},
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/run/s2ds/ready"]}, "periodSeconds": 300},
                    "volumeMounts": [{"name": "run", "mountPath": "/run/s2ds"}]}],
                 "volumes": [{"name": "run", "emptyDir": {}}]}
    }))
    .expect("pod");
    create_pod(&env.client, &pod).await;
    let p = wait_pod(&env.client, "hooked", 20, "a uid", |p| p.uid().is_some()).await;
    let run = env.agent.pods_dir().join(p.uid().expect("uid")).join("volumes/run");
    eventually(20, "the hook started", || {
        let started = run.join("hook").exists();
        async move { started.then_some(()) }
    })
    .await;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    let p = api.get("hooked").await.expect("pod");
    let state = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.clone());
    assert!(
        state.as_ref().is_some_and(|s| s.running.is_none() && s.waiting.is_some()),
        "running while its postStart hook runs: {state:?}"
    );
    assert_ne!(condition(&p, "Ready").as_deref(), Some("True"));
    std::fs::write(run.join("go"), b"").expect("go");
    // Well inside the 300 s probe period: probed when the hook returned.
    wait_pod(&env.client, "hooked", 20, "Ready at once after the hook", is_ready).await;
    env.agent.stop().await;
}

/// A failed postStart hook records FailedPostStartHook (without the handler's output) and
/// restarts the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_post_start_hook_kills_and_restarts_the_container() {
    let env = start(Topology::new().node(NodeSpec::new("gw-a")), NetworkMode::Loopback).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "badhook", "namespace": NS},
        "spec": {"nodeName": "gw-a", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "sh", "args": ["-c", "sleep 600"],
                    "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo secret-ish >&2; exit 7"]}}}}]}
    }))
    .expect("pod");
    create_pod(&env.client, &pod).await;
    wait_pod(&env.client, "badhook", 30, "restarted after the failed hook", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .is_some_and(|c| c.restart_count >= 1 && c.state.as_ref().is_some_and(|s| s.running.is_none()))
    })
    .await;
    let events: Api<Event> = Api::namespaced(env.client.clone(), NS);
    let failed: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedPostStartHook"))
        .collect();
    assert!(!failed.is_empty(), "no FailedPostStartHook event");
    assert!(
        failed
            .iter()
            .all(|e| e.type_.as_deref() == Some("Warning") && e.message.as_deref() == Some("PostStartHook failed")),
        "{failed:?}"
    );
    env.agent.stop().await;
}
