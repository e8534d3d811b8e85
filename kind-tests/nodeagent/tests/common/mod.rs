//! Shared helpers: a test cluster with an agent, pod builders, bounded waits.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use scistream_nodeagent::{Backoff, NetworkMode, NodeAgent, NodeAgentBuilder, Topology};
use scistream_testcluster::TestCluster;
use serde_json::{Value, json};

/// Namespace of test pods.
pub const NS: &str = "default";

/// A cluster and an agent running `topology` in `mode`.
pub struct Env {
    pub cluster: TestCluster,
    pub client: Client,
    pub agent: NodeAgent,
}

pub async fn start(topology: Topology, mode: NetworkMode) -> Env {
    start_with(topology, mode, None).await
}

/// As [`start`], with the s2ds image mapped to `s2ds`.
pub async fn start_with(topology: Topology, mode: NetworkMode, s2ds: Option<&std::path::Path>) -> Env {
    start_custom(topology, mode, |b| match s2ds {
        Some(p) => b.s2ds(p),
        None => b,
    })
    .await
}

/// As [`start`], with rules of `customize` ahead of the tests' image rules.
pub async fn start_custom(
    topology: Topology,
    mode: NetworkMode,
    customize: impl FnOnce(NodeAgentBuilder) -> NodeAgentBuilder,
) -> Env {
    let cluster = TestCluster::builder().name("nodeagent").start().await.expect("cluster");
    let client = cluster.client().await.expect("client");
    let builder = customize(NodeAgent::builder(client.clone()));
    let agent = builder
        .topology(topology)
        .mode(mode)
        .image("socat", "/usr/bin/socat")
        .image("python3", "/usr/bin/python3")
        .image("sh", "/bin/sh")
        .backoff(Backoff::fast())
        .heartbeat(Duration::from_millis(500))
        .sync_period(Duration::from_millis(200))
        .start()
        .await
        .expect("agent");
    Env { cluster, client, agent }
}

/// Polls `f` every 50 ms until it returns `Some`, at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until pod `name` satisfies `pred`, returns it.
pub async fn wait_pod(client: &Client, name: &str, secs: u64, what: &str, pred: impl Fn(&Pod) -> bool) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(secs, what, || {
        let api = api.clone();
        let pred = &pred;
        async move { api.get_opt(name).await.ok().flatten().filter(|p| pred(p)) }
    })
    .await
}

/// Waits until pod `name` no longer exists.
pub async fn wait_gone(client: &Client, name: &str, secs: u64) {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(secs, "pod removal", || {
        let api = api.clone();
        async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
    })
    .await
}

pub fn is_ready(p: &Pod) -> bool {
    let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    running && condition(p, "Ready") == Some("True".into())
}

pub fn condition(p: &Pod, t: &str) -> Option<String> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t).map(|c| c.status.clone())
}

pub fn node_ready(n: &Node) -> Option<String> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

/// The operator's relay pod shape (hostNetwork, pinned, non-root, config/tls/run volumes).
pub fn relay_pod(name: &str, node: &str, image: &str, args: &[String], probe: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "relay"}},
        "spec": {
            "nodeName": node, "hostNetwork": true, "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
            "containers": [{
                "name": "relay", "image": image, "args": args,
                "readinessProbe": probe,
                // As the operator's relay pods request: the server makes the pod Burstable.
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/s2ds/config", "readOnly": true},
                    {"name": "tls", "mountPath": "/etc/s2ds/tls", "readOnly": true},
                    {"name": "run", "mountPath": "/run/s2ds"}
                ]
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": format!("{name}-config"), "items": [{"key": "node.yaml", "path": "config.yaml"}]}},
                {"name": "tls", "secret": {"secretName": format!("{name}-tls"), "defaultMode": 0o440}},
                {"name": "run", "emptyDir": {}}
            ]
        }
    }))
    .expect("pod")
}

/// Creates the ConfigMap and Secret `relay_pod(name, …)` mounts.
pub async fn create_config(client: &Client, name: &str, config: &str, cert: &str) {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-config")}, "data": {"node.yaml": config}
    }))
    .expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), NS).create(&PostParams::default(), &cm).await.expect("create cm");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-tls")}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": cert, "tls.key": "KEY"}
    }))
    .expect("secret");
    let s = Secret {
        data: Some(
            s.string_data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                .collect(),
        ),
        string_data: None,
        ..s
    };
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &s).await.expect("create secret");
}

pub async fn create_pod(client: &Client, pod: &Pod) {
    Api::<Pod>::namespaced(client.clone(), NS).create(&PostParams::default(), pod).await.expect("create pod");
}

/// A socat server on `addr:port` answering each connection with `cat` of `files`.
pub fn socat_args(addr: &str, port: u16, files: &str) -> Vec<String> {
    vec![format!("TCP-LISTEN:{port},bind={addr},reuseaddr,fork"), format!("SYSTEM:cat {files}")]
}

pub fn tcp_probe(addr: &str, port: u16) -> Value {
    json!({"tcpSocket": {"host": addr, "port": port}, "periodSeconds": 1, "failureThreshold": 1})
}

/// Reads everything a TCP server at `addr` sends.
pub async fn fetch(s: std::io::Result<tokio::net::TcpStream>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut s = s.ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.ok()?.ok()?;
    Some(out)
}

/// A free-ish TCP port for tests (distinct per test by construction).
pub fn port(base: u16) -> u16 {
    base + (std::process::id() % 500) as u16
}

/// Whether any process's command line contains `marker`.
pub fn process_with(marker: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else { return false };
    rd.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).map(|c| String::from_utf8_lossy(&c).contains(marker)).unwrap_or(false)
    })
}
