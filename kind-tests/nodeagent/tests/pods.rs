//! Pods on loopback-mode nodes: running, volumes, updates, deletion, crash loops, probes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use scistream_nodeagent::{NetworkMode, NodeSpec, Topology};
use serde_json::json;

fn two_nodes() -> Topology {
    Topology::new().node(NodeSpec::new("gw-a")).node(NodeSpec::new("gw-b"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_pod_runs_reads_volumes_follows_updates_and_is_deleted() {
    let env = start(two_nodes(), NetworkMode::Loopback).await;
    let addr = env.agent.network().address("gw-a").expect("address").to_string();
    let port = port(20000);
    create_config(&env.client, "r1", "listen: one\n", "CERT-PEM\n").await;
    let args = socat_args(
        &addr,
        port,
        "/etc/s2ds/config/config.yaml /etc/s2ds/tls/tls.crt; id -u; touch /run/s2ds/w && echo rw",
    );
    create_pod(&env.client, &relay_pod("r1", "gw-a", "socat", &args, tcp_probe(&addr, port))).await;
    let pod = wait_pod(&env.client, "r1", 20, "r1 Running and Ready", is_ready).await;
    let st = pod.status.as_ref().expect("status");
    // The server derived the class from the requests and refuses any other: the agent's status
    // writes must leave it alone to get through at all.
    assert_eq!(st.qos_class.as_deref(), Some("Burstable"));
    assert_eq!(st.pod_ip.as_deref(), Some(addr.as_str()));
    assert_eq!(st.host_ip.as_deref(), Some(addr.as_str()));
    let logs = env.agent.logs_dir(&pod.uid().expect("uid"));
    assert!(logs.join("relay.log").exists());
    assert!(
        pod.metadata.annotations.as_ref().is_none_or(|a| a.keys().all(|k| !k.starts_with("nodeagent."))),
        "a kubelet writes nothing into the pod's metadata"
    );

    let sock: std::net::SocketAddr = format!("{addr}:{port}").parse().expect("addr");
    let body = fetch(tokio::net::TcpStream::connect(sock).await).await.expect("served");
    assert_eq!(
        body, "listen: one\nCERT-PEM\n65532\nrw\n",
        "config and secret at the mount paths, uid 65532, writable emptyDir"
    );
    let host_view = std::fs::read_dir("/etc/s2ds/config").map(|d| d.count()).unwrap_or(0);
    assert_eq!(host_view, 0, "the bind mounts are private to the pod's mount namespace");

    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), NS);
    let patch = json!({"data": {"node.yaml": "listen: two\n"}});
    cms.patch("r1-config", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("update cm");
    eventually(10, "updated config file", || async {
        let b = fetch(tokio::net::TcpStream::connect(sock).await).await?;
        b.starts_with("listen: two").then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    let t0 = Instant::now();
    pods.delete("r1", &DeleteParams::default()).await.expect("delete");
    wait_gone(&env.client, "r1", 15).await;
    assert!(t0.elapsed() < Duration::from_secs(5 + 3), "stopped within the grace period");
    assert!(tokio::net::TcpStream::connect(sock).await.is_err(), "process is gone");
    let events: Api<Event> = Api::namespaced(env.client.clone(), NS);
    let reasons: Vec<String> =
        events.list(&ListParams::default()).await.expect("events").items.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "Started") && reasons.iter().any(|r| r == "Killing"), "{reasons:?}");
    env.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_program_restarts_with_backoff() {
    let env = start(two_nodes(), NetworkMode::Loopback).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "crash", "namespace": NS},
        "spec": {"nodeName": "gw-b", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "relay", "image": "sh", "args": ["-c", "echo dying; exit 3"]}]}
    }))
    .expect("pod");
    create_pod(&env.client, &pod).await;
    let p = wait_pod(&env.client, "crash", 20, "CrashLoopBackOff with 2 restarts", |p| {
        let cs = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first().cloned());
        cs.is_some_and(|c| {
            let waiting = c.state.and_then(|s| s.waiting).and_then(|w| w.reason);
            c.restart_count >= 2 && waiting.as_deref() == Some("CrashLoopBackOff")
        })
    })
    .await;
    let cs = &p.status.as_ref().and_then(|s| s.container_statuses.clone()).expect("statuses")[0];
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).expect("last terminated");
    assert_eq!(last.exit_code, 3);
    assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    let logs = env.agent.logs_dir(&p.uid().expect("uid"));
    let text = std::fs::read_to_string(logs.join("relay.log")).expect("log");
    assert!(text.matches("dying").count() >= 2, "every run logs to the file: {text:?}");
    env.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_probe() {
    let env = start(two_nodes(), NetworkMode::Loopback).await;
    let addr = env.agent.network().address("gw-a").expect("address").to_string();
    let probe_port = port(21000);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probed", "namespace": NS},
        "spec": {"nodeName": "gw-a", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "relay", "image": "sh", "args": ["-c", "exec sleep 600"],
                                 "readinessProbe": tcp_probe(&addr, probe_port)}]}
    }))
    .expect("pod");
    create_pod(&env.client, &pod).await;
    let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let p = wait_pod(&env.client, "probed", 20, "Running", running).await;
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"), "nothing listens yet");
    let listener = tokio::net::TcpListener::bind((addr.as_str(), probe_port)).await.expect("bind");
    wait_pod(&env.client, "probed", 20, "Ready once the port listens", is_ready).await;
    drop(listener);
    wait_pod(&env.client, "probed", 20, "not Ready once it stops", |p| {
        condition(p, "Ready").as_deref() == Some("False")
    })
    .await;
    env.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_the_same_port_and_http_probes_work() {
    let env = start(two_nodes(), NetworkMode::Loopback).await;
    let port = port(22000);
    for node in ["gw-a", "gw-b"] {
        let addr = env.agent.network().address(node).expect("address").to_string();
        let dir = format!("/tmp/nodeagent-http-{}-{node}", std::process::id());
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(format!("{dir}/id"), node).expect("file");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{node}"), "namespace": NS},
            "spec": {"nodeName": node, "hostNetwork": true, "terminationGracePeriodSeconds": 2,
                     "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
                     "containers": [{"name": "web", "image": "python3",
                        "args": ["-m", "http.server", "--bind", addr, "--directory", dir, port.to_string()],
                        "readinessProbe": {"httpGet": {"host": addr, "path": "/id", "port": port}, "periodSeconds": 1},
                        "livenessProbe": {"httpGet": {"host": addr, "path": "/id", "port": port}, "periodSeconds": 1, "initialDelaySeconds": 5}}]}
        }))
        .expect("pod");
        create_pod(&env.client, &pod).await;
    }
    for node in ["gw-a", "gw-b"] {
        wait_pod(&env.client, &format!("web-{node}"), 30, "web Ready", is_ready).await;
        let addr = env.agent.network().address(node).expect("address");
        let mut s = tokio::net::TcpStream::connect((addr, port)).await.expect("connect");
        use tokio::io::AsyncWriteExt;
        s.write_all(b"GET /id HTTP/1.0\r\n\r\n").await.expect("write");
        let body = fetch(Ok(s)).await.expect("response");
        assert!(body.ends_with(node), "{node} answered {body:?}");
        std::fs::remove_dir_all(format!("/tmp/nodeagent-http-{}-{node}", std::process::id())).expect("cleanup");
    }
    env.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_heartbeat_and_turn_not_ready_at_stop() {
    let topo = Topology::new().node(NodeSpec::new("gw-a").label("scistream.io/gateway", "g").taint(
        "scistream.io/gw",
        "true",
        "NoSchedule",
    ));
    let env = start(topo, NetworkMode::Loopback).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let n = nodes.get("gw-a").await.expect("node");
    assert_eq!(node_ready(&n).as_deref(), Some("True"));
    let addr = env.agent.network().address("gw-a").expect("address").to_string();
    let st = n.status.as_ref().expect("status");
    assert!(st.addresses.iter().flatten().any(|a| a.type_ == "InternalIP" && a.address == addr));
    assert_eq!(n.metadata.annotations.as_ref().and_then(|a| a.get("scistream.io/lan-address")), Some(&addr));
    assert_eq!(n.spec.as_ref().and_then(|s| s.taints.as_ref()).map(Vec::len), Some(1));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let first = leases.get("gw-a").await.expect("lease").spec.and_then(|s| s.renew_time).expect("renewed");
    eventually(10, "lease renewal", || async {
        let t = leases.get("gw-a").await.ok()?.spec?.renew_time?;
        (t.0 > first.0).then_some(())
    })
    .await;

    let marker = format!("nodeagent-marker-{}", std::process::id());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stays", "namespace": NS},
        "spec": {"nodeName": "gw-a", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "sh", "args": ["-c", format!("sleep 600; echo {marker}")]}]}
    }))
    .expect("pod");
    create_pod(&env.client, &pod).await;
    wait_pod(&env.client, "stays", 20, "Ready", is_ready).await;
    assert!(process_with(&marker));
    let Env { agent, client, cluster: _cluster } = env;
    agent.stop().await;
    assert!(!process_with(&marker), "no process left behind");
    let n = Api::<Node>::all(client.clone()).get("gw-a").await.expect("node");
    assert_eq!(node_ready(&n).as_deref(), Some("False"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_with_only_a_node_selector_are_scheduled_to_a_matching_node() {
    let topo =
        Topology::new().node(NodeSpec::new("gw-a").label("site", "a")).node(NodeSpec::new("gw-b").label("site", "b"));
    let env = start(topo, NetworkMode::Loopback).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sel", "namespace": NS},
        "spec": {"nodeSelector": {"site": "b"}, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "sh", "args": ["-c", "sleep 600"]}]}
    }))
    .expect("pod");
    create_pod(&env.client, &pod).await;
    let p = wait_pod(&env.client, "sel", 20, "scheduled and Ready", is_ready).await;
    assert_eq!(p.spec.and_then(|s| s.node_name).as_deref(), Some("gw-b"));
    env.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_mode_rewrites_mount_paths_in_args_and_files() {
    let cluster = scistream_testcluster::TestCluster::builder().start().await.expect("cluster");
    let client = cluster.client().await.expect("client");
    let agent = scistream_nodeagent::NodeAgent::builder(client.clone())
        .node(NodeSpec::new("gw-a"))
        .privileged(false)
        .image("socat", "/usr/bin/socat")
        .start()
        .await
        .expect("agent");
    let addr = agent.network().address("gw-a").expect("address").to_string();
    let port = port(25000);
    create_config(&client, "rw", "cert: /etc/s2ds/tls/tls.crt\n", "PEM\n").await;
    let args = socat_args(&addr, port, "/etc/s2ds/config/config.yaml");
    create_pod(&client, &relay_pod("rw", "gw-a", "socat", &args, tcp_probe(&addr, port))).await;
    let pod = wait_pod(&client, "rw", 20, "Ready", is_ready).await;
    let body = fetch(tokio::net::TcpStream::connect((addr.as_str(), port)).await).await.expect("served");
    let uid = pod.metadata.uid.expect("uid");
    let tls_dir = agent.pods_dir().join(&uid).join("volumes/tls");
    assert_eq!(body, format!("cert: {}/tls.crt\n", tls_dir.display()), "paths point into the pod directory");
    assert_eq!(std::fs::read_to_string(tls_dir.join("tls.crt")).expect("secret file"), "PEM\n");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_to_completion_pods_end_succeeded_or_failed() {
    let env = start(two_nodes(), NetworkMode::Loopback).await;
    for (name, code) in [("ok", 0), ("bad", 1)] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": "gw-a", "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "sh", "args": ["-c", format!("exit {code}")]}]}
        }))
        .expect("pod");
        create_pod(&env.client, &pod).await;
    }
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    wait_pod(&env.client, "ok", 20, "Succeeded", |p| phase(p) == "Succeeded").await;
    let bad = wait_pod(&env.client, "bad", 20, "Failed", |p| phase(p) == "Failed").await;
    let cs = &bad.status.and_then(|s| s.container_statuses).expect("statuses")[0];
    assert_eq!(cs.restart_count, 0);
    assert_eq!(cs.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code), Some(1));
    env.agent.stop().await;
}
