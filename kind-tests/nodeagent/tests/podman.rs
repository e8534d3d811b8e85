//! Relay pods from the real s2ds and Stunnel images under podman (netns mode). Built only with
//! `--features podman-tests`, which CI turns on after `kind-tests/build-images.sh` has built
//! the images: here a missing piece (root, podman, the image) is a failure saying what to run,
//! never a skip.
//!
//! ```sh
//! cargo nextest run -p scistream-nodeagent --features podman-tests --test podman
//! ```

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use scistream_nodeagent::podman::{LABEL_AGENT_PID, container_name};
use scistream_nodeagent::{NetworkMode, Topology};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The images the agent runs with podman here.
const PODMAN_IMAGES: &str = "ghcr.io/scistream/*";
/// What to do when something is missing.
const HINT: &str = "run kind-tests/build-images.sh as root first (it installs podman and builds the images)";

/// `podman args…`'s standard output; panics with [`HINT`] when podman cannot run or fails.
async fn podman(args: &[&str]) -> String {
    let out = tokio::process::Command::new("podman")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running podman: {e}; {HINT}"));
    assert!(out.status.success(), "podman {}: {}; {HINT}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The built image `repository` (any tag).
async fn built_image(repository: &str) -> String {
    assert!(nix::unistd::geteuid().is_root(), "the podman runtime needs root; {HINT}");
    let reference = format!("reference={repository}");
    let listed = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", &reference]).await;
    let image = listed.lines().find(|l| !l.contains("<none>")).map(str::to_owned);
    image.unwrap_or_else(|| panic!("no {repository} image here; {HINT}"))
}

async fn s2ds_image() -> String {
    built_image("ghcr.io/scistream/s2ds").await
}

fn config(listen: &str, target: &str, metrics: &str) -> String {
    format!(
        "streamId: t1\nmode: plain\nlisteners: [\"{listen}\"]\ntargets: [\"{target}\"]\nmetricsAddress: {metrics}\ndrainSeconds: 1\n"
    )
}

/// Sends `len` bytes from app-a to `via` and checks they arrive unchanged at `to`.
async fn transfer(env: &Env, to: &tokio::net::TcpListener, via: SocketAddr, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = env.agent.network().connect("app-a", via).await.expect("connect to gw-a");
    let (mut s, _) =
        tokio::time::timeout(Duration::from_secs(10), to.accept()).await.expect("accept in time").expect("accept");
    let send = data.clone();
    let writer = tokio::spawn(async move {
        c.write_all(&send).await.expect("write");
        c.shutdown().await.expect("shutdown");
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "read timed out after {} of {len} bytes", got.len());
    writer.await.expect("writer");
    assert!(got == data, "{} bytes arrive unchanged (got {})", len, got.len());
}

/// Checks the container of pod `name` runs as 65532 with a read-only root, no capabilities
/// and no privilege escalation, on its node's hostname; returns the container name.
async fn check_identity(env: &Env, name: &str, node: &str) -> String {
    let pod = Api::<Pod>::namespaced(env.client.clone(), NS).get(name).await.expect("pod");
    let container = container_name(&pod.metadata.uid.clone().expect("uid"), "relay");
    let inspected = podman(&["inspect", "--format", "{{.State.Pid}} {{.Config.Hostname}}", &container]).await;
    let (pid, hostname) = inspected.split_once(' ').expect("pid and hostname");
    assert_eq!(hostname, node);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status of the container process");
    let field =
        |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.split_whitespace().collect::<Vec<_>>());
    assert_eq!(field("Uid:"), Some(vec!["65532"; 4]), "{name}: runs as 65532");
    assert_eq!(field("Gid:"), Some(vec!["65532"; 4]), "{name}: group 65532");
    assert_eq!(field("CapEff:"), Some(vec!["0000000000000000"]), "{name}: no capabilities");
    assert_eq!(field("NoNewPrivs:"), Some(vec!["1"]), "{name}: no privilege escalation");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mountinfo.lines().map(|l| l.split(' ').collect::<Vec<_>>()).find(|f| f.get(4) == Some(&"/"));
    let options = root.and_then(|f| f.get(5).map(|o| o.to_string())).expect("root mount");
    assert!(options.split(',').any(|o| o == "ro"), "{name}: root mounted read-only ({options})");
    container
}

/// Two gateway nodes whose relays run from images under podman: gw-a's LAN address, gw-b's
/// LAN and WAN addresses, and the application app-b behind gw-b listening on port 7000.
struct Pair {
    env: Env,
    a_lan: String,
    b_lan: String,
    b_wan: String,
    app_b: String,
    sink: tokio::net::TcpListener,
}

impl Pair {
    async fn start() -> Pair {
        let env = start_custom(Topology::two_facilities(), NetworkMode::Netns, |b| b.podman_image(PODMAN_IMAGES)).await;
        let net = env.agent.network();
        let address = |node: &str, net_name: &str| net.address_on(node, net_name).expect("address").to_string();
        let (a_lan, b_lan, b_wan, app_b) =
            (address("gw-a", "a-lan"), address("gw-b", "b-lan"), address("gw-b", "wan"), address("app-b", "b-lan"));
        let sink = net.listen("app-b", format!("{app_b}:7000").parse().expect("addr")).await.expect("listen");
        Pair { env, a_lan, b_lan, b_wan, app_b, sink }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2ds_relays_from_its_image_under_podman() {
    let image = s2ds_image().await;
    let Pair { env, a_lan, b_lan, b_wan, app_b, sink } = Pair::start().await;
    let args = vec!["--config".to_string(), "/etc/s2ds/config/config.yaml".to_string()];
    // gw-a's relay is probed over HTTP from the node, gw-b's with `podman exec`.
    let http = json!({"httpGet": {"host": a_lan, "path": "/readyz", "port": 9100}, "periodSeconds": 1});
    let exec = json!({"exec": {"command": ["/s2ds", "--version"]}, "periodSeconds": 1});
    let sides = [
        ("s2ds-a", "gw-a", config(&format!("{a_lan}:5100"), &format!("{b_wan}:5200"), &format!("{a_lan}:9100")), http),
        ("s2ds-b", "gw-b", config(&format!("{b_wan}:5200"), &format!("{app_b}:7000"), &format!("{b_lan}:9100")), exec),
    ];
    let t0 = Instant::now();
    for (name, node, cfg, probe) in &sides {
        create_config(&env.client, name, cfg, "unused\n").await;
        create_pod(&env.client, &relay_pod(name, node, &image, &args, probe.clone())).await;
    }
    for (name, ..) in &sides {
        wait_pod(&env.client, name, 60, "relay from the image Ready", is_ready).await;
    }
    eprintln!("both relays Ready {:.2}s after their pods were created", t0.elapsed().as_secs_f64());
    // The exec probe says only that the container runs: wait for gw-b's listener too.
    let health: SocketAddr = format!("{b_lan}:9100").parse().expect("addr");
    eventually(20, "gw-b's relay listening", || async {
        env.agent.network().connect("app-b", health).await.ok().map(drop)
    })
    .await;
    transfer(&env, &sink, format!("{a_lan}:5100").parse().expect("entry"), 4 << 20).await;

    let mut containers = Vec::new();
    for (name, node, ..) in &sides {
        containers.push(check_identity(&env, name, node).await);
    }
    let pod = Api::<Pod>::namespaced(env.client.clone(), NS).get("s2ds-a").await.expect("pod");
    let log = env.agent.logs_dir(&pod.metadata.uid.clone().expect("uid")).join("relay.log");
    let text = std::fs::read_to_string(&log).expect("log file");
    // s2ds logs `ready mode=... listeners=...` once its listeners are bound (s2ds-image/src/server.rs).
    assert!(text.contains("s2ds::server: ready"), "the container's output is in {}: {text}", log.display());

    // An image that was never built is never pulled: the container waits, saying what to run.
    let missing = relay_pod("missing", "gw-a", "ghcr.io/scistream/s2ds:never-built", &args, json!(null));
    create_config(&env.client, "missing", "streamId: m\n", "unused\n").await;
    create_pod(&env.client, &missing).await;
    let waiting = |p: &Pod| {
        let st = p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.clone()?;
        Some((st.reason.unwrap_or_default(), st.message.unwrap_or_default()))
    };
    let p = wait_pod(&env.client, "missing", 30, "ErrImageNeverPull", |p| {
        waiting(p).is_some_and(|(r, _)| r == "ErrImageNeverPull")
    })
    .await;
    let (_, message) = waiting(&p).expect("waiting");
    assert!(message.contains("never-built") && message.contains("kind-tests/build-images.sh"), "{message}");

    // Deleting the pods removes their containers.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    for name in ["s2ds-a", "s2ds-b", "missing"] {
        pods.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    for name in ["s2ds-a", "s2ds-b", "missing"] {
        wait_gone(&env.client, name, 30).await;
    }
    let filter = format!("label={LABEL_AGENT_PID}={}", std::process::id());
    let left = podman(&["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"]).await;
    assert_eq!(left, "", "no container is left after the pods are deleted (had {containers:?})");
    env.agent.stop().await;
}

/// One side of a Stunnel pair: its stunnel.conf as the operator renders it (TLS 1.3, this
/// side's certificate, the peer's pinned with `verifyPeer`, a health service on the LAN that
/// forwards nowhere), `accept` forwarding to `connect`.
fn stunnel_conf(client: bool, accept: &str, connect: &str, health: &str) -> String {
    format!(
        "foreground = yes\npid = /run/s2ds/stunnel.pid\nsyslog = no\ndebug = notice\nsslVersionMin = TLSv1.3\n\
         cert = /etc/s2ds/tls/tls.crt\nkey = /etc/s2ds/tls/tls.key\nCAfile = /etc/s2ds/config/peer.crt\n\
         verifyPeer = yes\nclient = {}\n\n[l0]\naccept = {accept}\nconnect = {connect}\n\n\
         [health]\nclient = no\naccept = {health}\nconnect = {health}\ndebug = crit\n",
        if client { "yes" } else { "no" }
    )
}

/// Pod `name` on `node` running the Stunnel image with `conf`, this side's key pair and the
/// peer's certificate, probed on its health service.
async fn stunnel_side(env: &Env, image: &str, side: (&str, &str), conf: &str, own: &(String, String), peer: &str) {
    let (name, node) = side;
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-config")}, "data": {"stunnel.conf": conf, "peer.crt": peer}
    }))
    .expect("cm");
    let post = kube::api::PostParams::default();
    Api::namespaced(env.client.clone(), NS).create(&post, &cm).await.expect("create cm");
    let bytes = |s: &str| k8s_openapi::ByteString(s.as_bytes().to_vec());
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta { name: Some(format!("{name}-tls")), ..Default::default() },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some([("tls.crt".to_owned(), bytes(&own.0)), ("tls.key".to_owned(), bytes(&own.1))].into()),
        ..Default::default()
    };
    Api::namespaced(env.client.clone(), NS).create(&post, &secret).await.expect("create secret");
    let health = conf.rsplit("accept = ").next().and_then(|l| l.lines().next()).expect("health accept");
    let (host, port) = health.rsplit_once(':').expect("host:port");
    let args = vec!["/etc/s2ds/config/stunnel.conf".to_owned()];
    let mut pod = relay_pod(name, node, image, &args, tcp_probe(host, port.parse().expect("port")));
    let items = json!([{"key": "stunnel.conf", "path": "stunnel.conf"}, {"key": "peer.crt", "path": "peer.crt"}]);
    let volumes = pod.spec.as_mut().and_then(|s| s.volumes.as_mut()).expect("volumes");
    volumes[0].config_map.as_mut().expect("config volume").items = Some(serde_json::from_value(items).expect("items"));
    create_pod(&env.client, &pod).await;
}

/// A self-signed certificate and its key (PEM), as the operator makes a stream's.
fn key_pair(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params").self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stunnel_pair_relays_from_its_image_under_podman() {
    let image = built_image("ghcr.io/scistream/stunnel").await;
    let Pair { env, a_lan, b_lan, b_wan, app_b, sink } = Pair::start().await;
    let (a, b) = (key_pair("producer.t2.scistream.io"), key_pair("consumer.t2.scistream.io"));
    // gw-a originates TLS to gw-b's WAN listener; gw-b ends it and forwards to the application.
    let a_conf = stunnel_conf(true, &format!("{a_lan}:5100"), &format!("{b_wan}:5200"), &format!("{a_lan}:9100"));
    let b_conf = stunnel_conf(false, &format!("{b_wan}:5200"), &format!("{app_b}:7000"), &format!("{b_lan}:9100"));
    stunnel_side(&env, &image, ("stunnel-a", "gw-a"), &a_conf, &a, &b.0).await;
    stunnel_side(&env, &image, ("stunnel-b", "gw-b"), &b_conf, &b, &a.0).await;
    for name in ["stunnel-a", "stunnel-b"] {
        wait_pod(&env.client, name, 60, "Stunnel from the image Ready", is_ready).await;
    }
    transfer(&env, &sink, format!("{a_lan}:5100").parse().expect("entry"), 4 << 20).await;
    for (name, node) in [("stunnel-a", "gw-a"), ("stunnel-b", "gw-b")] {
        check_identity(&env, name, node).await;
    }
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    for name in ["stunnel-a", "stunnel-b"] {
        pods.delete(name, &DeleteParams::default()).await.expect("delete");
    }
}
