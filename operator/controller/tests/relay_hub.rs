//! The operator's configuration channel against real shared relays (the s2ds library's
//! NodeRelay and its channel client) over mutual TLS: each relay runs exactly its own
//! streams, reports each one ready the moment it relays, and a relay cannot speak for
//! another node or call without a certificate the operator issued.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use s2ds::config::{PeerPin, RecordLayer, TlsFiles};
use s2ds::node::NodeRelay;
use scistream_controller::certs::KeyMaterial;
use scistream_controller::relay_hub::identity::{Authority, fingerprint_pem};
use scistream_controller::relay_hub::{Hub, RelayKey, server};
use scistream_relay_proto::StreamConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Operator {
    hub: Arc<Hub>,
    authority: Authority,
    addr: SocketAddr,
    serving_pem: String,
    _stop: tokio_util::sync::DropGuard,
}

async fn operator() -> Operator {
    let op = starting().await;
    op.hub.open();
    op
}

/// An operator serving the channel but not yet open (its streams not all set).
async fn starting() -> Operator {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let authority = Authority::generate().unwrap();
    let serving = authority.issue_server(&["scistream-operator".into()]).unwrap();
    let tls = server::tls_config(&serving, &authority.certificate_pem()).unwrap();
    let hub = Arc::new(Hub::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server::serve(hub.clone(), listener, tls, stop.clone()));
    Operator { hub, authority, addr, serving_pem: serving.certificate_pem, _stop: stop.drop_guard() }
}

fn key(node: &str) -> RelayKey {
    RelayKey { gateway: "dtn".into(), node: node.into() }
}

/// A relay with `identity`, saying it is `claims`, pinning the operator's serving certificate.
async fn relay(
    op: &Operator,
    dir: &Path,
    identity: &KeyMaterial,
    claims: &RelayKey,
) -> (Arc<NodeRelay>, CancellationToken) {
    let (node, options) = relay_options(op, dir, identity, claims).await;
    let stop = CancellationToken::new();
    tokio::spawn(s2ds::control_plane::run(node.clone(), options, stop.clone()));
    (node, stop)
}

async fn relay_options(
    op: &Operator,
    dir: &Path,
    identity: &KeyMaterial,
    claims: &RelayKey,
) -> (Arc<NodeRelay>, s2ds::control_plane::Options) {
    let name = format!("{}-{}", claims.node, fingerprint_pem(&identity.certificate_pem).unwrap()[0]);
    let write = |what: &str, pem: &str| {
        let p = dir.join(format!("{name}-{what}.pem"));
        std::fs::write(&p, pem).unwrap();
        p
    };
    let files = TlsFiles {
        cert_file: write("cert", &identity.certificate_pem),
        key_file: write("key", &identity.private_key_pem),
        peer: PeerPin::CertFile(write("operator", &op.serving_pem)),
        kernel_tls: false,
        record_layer: RecordLayer::Rustls,
    };
    let node = Arc::new(NodeRelay::start(None, vec![]).await.unwrap());
    let options = s2ds::control_plane::Options {
        address: op.addr.to_string(),
        gateway: claims.gateway.clone(),
        node: claims.node.clone(),
        identity: files,
    };
    (node, options)
}

/// Issues `relay` its certificate and tells the hub.
fn issue(op: &Operator, relay: &RelayKey) -> KeyMaterial {
    let m = op.authority.issue_relay(relay).unwrap();
    op.hub.authorize(fingerprint_pem(&m.certificate_pem).unwrap(), relay.clone());
    m
}

fn plain(id: &str, target: SocketAddr) -> StreamConfig {
    StreamConfig {
        stream_id: id.into(),
        generation: "g1".into(),
        config: format!(
            "streamId: {id}\nmode: plain\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\ndrainSeconds: 1\n"
        ),
        ..Default::default()
    }
}

async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn echoes(at: SocketAddr) {
    let mut c = TcpStream::connect(at).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
}

/// Waits (bounded) for the relay's report of `id` that satisfies `done`.
async fn reported(
    op: &Operator,
    relay: &RelayKey,
    id: &str,
    done: impl Fn(&scistream_relay_proto::StreamState) -> bool,
) -> scistream_relay_proto::StreamState {
    let mut reports = op.hub.subscribe();
    if let Some(s) = op.hub.reported(relay, id).filter(|s| done(s)) {
        return s;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reports.recv()).await.expect("a report within 20 s") {
            Ok(r) if &r.relay == relay && r.state.stream_id == id && done(&r.state) => return r.state,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                if let Some(s) = op.hub.reported(relay, id).filter(|s| done(s)) {
                    return s;
                }
            }
            Err(e) => panic!("reports ended: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_relay_runs_exactly_its_own_streams_and_reports_them_ready() {
    let dir = tempfile::tempdir().unwrap();
    let op = operator().await;
    let target = echo().await;
    let (a, b) = (key("gw-a"), key("gw-b"));
    op.hub.set(&a, plain("before-a", target));
    let (node_a, _sa) = relay(&op, dir.path(), &issue(&op, &a), &a).await;
    let (node_b, _sb) = relay(&op, dir.path(), &issue(&op, &b), &b).await;
    let s = reported(&op, &a, "before-a", |s| s.ready).await;
    echoes(s.listeners[0].parse().unwrap()).await;

    // Streams set one at a time: each reported ready (relaying) on its own relay only.
    let mut latencies = Vec::new();
    for i in 0..50 {
        let (relay, id) = if i % 2 == 0 { (&a, format!("a{i}")) } else { (&b, format!("b{i}")) };
        let t = Instant::now();
        op.hub.set(relay, plain(&id, target));
        let s = reported(&op, relay, &id, |s| s.ready).await;
        latencies.push(t.elapsed());
        echoes(s.listeners[0].parse().unwrap()).await;
    }
    let mut on_a = node_a.streams();
    on_a.sort();
    assert_eq!(on_a.len(), 26);
    assert!(on_a.iter().all(|s| s.starts_with('a') || s == "before-a"), "{on_a:?}");
    assert!(node_b.streams().iter().all(|s| s.starts_with('b')), "{:?}", node_b.streams());
    op.hub.remove(&a, "a0");
    reported(&op, &a, "a0", |s| s.removed).await;
    assert!(node_a.stream("a0").is_none());
    latencies.sort();
    eprintln!(
        "set -> reported ready over the channel (50 streams, debug build): p50 {:.2} ms, max {:.2} ms",
        latencies[25].as_secs_f64() * 1e3,
        latencies[49].as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cannot_speak_for_another_node_or_call_without_an_issued_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let op = operator().await;
    let target = echo().await;
    let (a, b) = (key("gw-a"), key("gw-b"));
    op.hub.set(&b, plain("secret-of-b", target));
    // gw-a's certificate, claiming to be gw-b: refused, never given b's streams.
    let (thief, stop) = relay(&op, dir.path(), &issue(&op, &a), &b).await;
    wait_for_refusals(&op, 2).await;
    stop.cancel();
    // A certificate the operator never issued (signed by another authority).
    let stranger = Authority::generate().unwrap().issue_relay(&b).unwrap();
    let (outsider, stop2) = relay(&op, dir.path(), &stranger, &b).await;
    wait_for_refusals(&op, op.hub.refusals() + 2).await;
    stop2.cancel();
    // The honest gw-b relay gets its stream.
    let (honest, _s) = relay(&op, dir.path(), &issue(&op, &b), &b).await;
    reported(&op, &b, "secret-of-b", |s| s.ready).await;
    assert_eq!(honest.streams(), vec!["secret-of-b".to_owned()]);
    assert!(thief.streams().is_empty() && outsider.streams().is_empty());
    // Revoked: the call is dropped and a new one refused; what runs keeps running meanwhile.
    op.hub.revoke(&b);
    op.hub.set(&b, plain("after-revocation", target));
    assert!(!op.hub.connected(&b));
    let s = op.hub.reported(&b, "secret-of-b");
    assert!(s.is_some_and(|s| s.ready));
    assert!(honest.stream("after-revocation").is_none());
}

/// Waits (bounded) until the hub has refused `n` relay connections.
async fn wait_for_refusals(op: &Operator, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while op.hub.refusals() < n {
        assert!(Instant::now() < deadline, "only {} refusals, wanted {n}", op.hub.refusals());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A restarted operator has not yet set every stream: a relay calling then would get a
/// snapshot without them and stop them, cutting their connections. It is told to call again
/// (UNAVAILABLE), keeps what it runs, and gets everything once the operator opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_calling_before_the_operator_has_set_its_streams_is_told_to_call_again() {
    let dir = tempfile::tempdir().unwrap();
    let op = starting().await;
    let target = echo().await;
    let a = key("gw-a");
    let identity = issue(&op, &a);
    let (node, options) = relay_options(&op, dir.path(), &identity, &a).await;
    let mut generations = s2ds::control_plane::Generations::new();
    let early = s2ds::control_plane::call(&node, &options, &mut generations).await;
    match early {
        Err(s2ds::control_plane::ChannelError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s}");
            assert!(s.message().contains("call again"), "{s}");
        }
        other => panic!("an early call must be refused as unavailable, got {other:?}"),
    }
    assert!(!op.hub.connected(&a));
    op.hub.set(&a, plain("kept", target));
    op.hub.open();
    let stop = CancellationToken::new();
    tokio::spawn(s2ds::control_plane::run(node.clone(), options, stop.clone()));
    let s = reported(&op, &a, "kept", |s| s.ready).await;
    echoes(s.listeners[0].parse().unwrap()).await;
    stop.cancel();
}
