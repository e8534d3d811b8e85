//! The shared relay's configuration channel against an operator stand-in serving
//! `scistream.relay.v1.RelayConfig` over real mutual TLS: streams arrive, change and leave
//! live, each answered with its own state; a lost channel is dialled again and the snapshot
//! leaves running streams untouched; a restarted relay recovers every stream from the
//! snapshot; the relay talks only to the operator it pins.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use s2ds::config::{PeerPin, RecordLayer, TlsFiles};
use s2ds::control_plane::{self, Options};
use s2ds::node::NodeRelay;
use scistream_relay_proto::relay_config_server::{RelayConfig, RelayConfigServer};
use scistream_relay_proto::{Applied, Hello, RelayReport, RelayUpdate, StreamConfig, StreamState, relay_report};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// One call the relay made: what it said first, and the two directions.
struct Call {
    hello: Hello,
    updates: tokio::sync::mpsc::Sender<Result<RelayUpdate, Status>>,
    reports: Streaming<RelayReport>,
}

impl Call {
    async fn send(&mut self, update: RelayUpdate) -> Applied {
        let version = update.version;
        self.updates.send(Ok(update)).await.unwrap();
        let report =
            tokio::time::timeout(Duration::from_secs(20), self.reports.message()).await.unwrap().unwrap().unwrap();
        match report.report {
            Some(relay_report::Report::Applied(a)) => {
                assert_eq!(a.version, version);
                a
            }
            other => panic!("expected Applied, got {other:?}"),
        }
    }
}

struct Service {
    calls: tokio::sync::mpsc::UnboundedSender<Call>,
}

#[tonic::async_trait]
impl RelayConfig for Service {
    type SyncStream = tokio_stream::wrappers::ReceiverStream<Result<RelayUpdate, Status>>;

    async fn sync(&self, request: Request<Streaming<RelayReport>>) -> Result<Response<Self::SyncStream>, Status> {
        let mut reports = request.into_inner();
        let hello = match reports.message().await? {
            Some(RelayReport { report: Some(relay_report::Report::Hello(h)) }) => h,
            other => return Err(Status::invalid_argument(format!("expected Hello first, got {other:?}"))),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = self.calls.send(Call { hello, updates: tx, reports });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// The operator stand-in: pins the relay's certificate; counts failed handshakes.
struct Operator {
    addr: SocketAddr,
    calls: tokio::sync::mpsc::UnboundedReceiver<Call>,
    refused: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Operator {
    async fn start(at: &str, me: &Identity, relay: &Identity) -> Self {
        init();
        let files = TlsFiles {
            cert_file: me.cert.clone(),
            key_file: me.key.clone(),
            peer: PeerPin::CertFile(relay.cert.clone()),
            kernel_tls: false,
            record_layer: RecordLayer::Rustls,
        };
        let mut tls = Arc::unwrap_or_clone(s2ds::tls::server_config(&files).unwrap());
        tls.alpn_protocols = vec![b"h2".to_vec()];
        tls.enable_secret_extraction = false;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(at).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (calls_tx, calls) = tokio::sync::mpsc::unbounded_channel();
        let (refused, stop) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let (conns_tx, conns) = tokio::sync::mpsc::channel(16);
        let (counted, stopped) = (refused.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    () = stopped.cancelled() => return,
                    a = listener.accept() => a.unwrap().0,
                };
                let (acceptor, tx, counted) = (acceptor.clone(), conns_tx.clone(), counted.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                        }
                        Err(_) => {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        let service = RelayConfigServer::new(Service { calls: calls_tx });
        let serving = stop.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::ReceiverStream::new(conns);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, serving.cancelled())
                .await;
        });
        Self { addr, calls, refused, stop }
    }

    async fn next_call(&mut self) -> Call {
        tokio::time::timeout(Duration::from_secs(20), self.calls.recv()).await.expect("the relay calls").unwrap()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A relay fed by the channel; returns it and what stops its channel.
async fn relay(operator: SocketAddr, me: &Identity, pinned: &Identity) -> (Arc<NodeRelay>, CancellationToken) {
    let node = Arc::new(NodeRelay::start(Some("127.0.0.1:0".parse().unwrap()), vec![]).await.unwrap());
    let options = Options {
        address: operator.to_string(),
        gateway: "dtn".into(),
        node: "gw-a".into(),
        identity: TlsFiles {
            cert_file: me.cert.clone(),
            key_file: me.key.clone(),
            peer: PeerPin::CertFile(pinned.cert.clone()),
            kernel_tls: false,
            record_layer: RecordLayer::Rustls,
        },
    };
    let stop = CancellationToken::new();
    tokio::spawn(control_plane::run(node.clone(), options, stop.clone()));
    (node, stop)
}

fn plain(id: &str, generation: &str, target: SocketAddr, extra: &str) -> StreamConfig {
    StreamConfig {
        stream_id: id.into(),
        generation: generation.into(),
        config: format!(
            "streamId: {id}\nmode: plain\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\ndrainSeconds: 1\n{extra}"
        ),
        files: Default::default(),
    }
}

fn update(version: u64, snapshot: bool, streams: Vec<StreamConfig>, removed: &[&str]) -> RelayUpdate {
    RelayUpdate { version, snapshot, streams, removed: removed.iter().map(|s| (*s).to_owned()).collect() }
}

fn find<'a>(applied: &'a Applied, id: &str) -> &'a StreamState {
    applied.streams.iter().find(|s| s.stream_id == id).unwrap_or_else(|| panic!("no state for {id}: {applied:?}"))
}

async fn echo_target() -> SocketAddr {
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

async fn round_trip(c: &mut TcpStream, seed: u64) {
    let (mut r, mut w) = c.split();
    let (sent, got) = tokio::join!(send_open(&mut w, seed, 256 * 1024), recv_exact(&mut r, 256 * 1024));
    assert_eq!(sent, got);
}

fn listener(state: &StreamState) -> SocketAddr {
    state.listeners[0].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_arrive_change_and_leave_live_and_a_new_call_leaves_running_ones_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (op_id, relay_id) = (identity(dir.path(), "operator"), identity(dir.path(), "relay"));
    let mut operator = Operator::start("127.0.0.1:0", &op_id, &relay_id).await;
    let (node, _stop) = relay(operator.addr, &relay_id, &op_id).await;
    let echo = echo_target().await;

    let mut call = operator.next_call().await;
    assert_eq!((call.hello.gateway.as_str(), call.hello.node.as_str()), ("dtn", "gw-a"));
    assert!(call.hello.streams.is_empty(), "a new relay runs nothing");
    let applied = call.send(update(1, true, vec![plain("a", "a1", echo, "")], &[])).await;
    let a = find(&applied, "a");
    assert!(a.ready && a.error.is_empty() && a.generation == "a1", "{a:?}");
    let mut on_a = TcpStream::connect(listener(a)).await.unwrap();
    round_trip(&mut on_a, 1).await;

    // Added: answered once its listener accepts.
    let t = Instant::now();
    let applied = call.send(update(2, false, vec![plain("b", "b1", echo, "")], &[])).await;
    let decided_to_relaying = t.elapsed();
    let b = find(&applied, "b").clone();
    assert!(b.ready, "{b:?}");
    round_trip(&mut TcpStream::connect(listener(&b)).await.unwrap(), 2).await;

    // One update, one refusal: b's new generation is refused (and b keeps relaying at b1),
    // c in the same update starts.
    let applied = call
        .send(update(
            3,
            false,
            vec![plain("b", "b2", echo, "metricsAddress: 127.0.0.1:0\n"), plain("c", "c1", echo, "")],
            &[],
        ))
        .await;
    let (b, c) = (find(&applied, "b"), find(&applied, "c"));
    assert!(b.error.contains("metricsAddress") && b.generation == "b1" && b.ready, "{b:?}");
    assert!(c.ready && c.error.is_empty(), "{c:?}");
    let c_at = listener(c);
    let applied = call.send(update(4, false, vec![], &["c"])).await;
    assert!(find(&applied, "c").removed);
    assert!(TcpStream::connect(c_at).await.is_err(), "c's listener is closed");

    // The operator goes away and comes back: the relay calls again, says what runs, and a
    // snapshot holding a at its generation leaves a's connection alone; b is not in it.
    drop(call);
    let mut call = operator.next_call().await;
    let mut running: Vec<(String, String)> =
        call.hello.streams.iter().map(|s| (s.stream_id.clone(), s.generation.clone())).collect();
    running.sort();
    assert_eq!(running, vec![("a".into(), "a1".into()), ("b".into(), "b1".into())]);
    let applied = call.send(update(1, true, vec![plain("a", "a1", echo, "")], &[])).await;
    assert!(find(&applied, "a").ready && find(&applied, "b").removed, "{applied:?}");
    round_trip(&mut on_a, 3).await;
    assert_eq!(node.streams(), vec!["a".to_owned()]);
    let (_, text) = http_get(node.metrics_addr().unwrap(), "/metrics").await;
    let total = text.lines().find(|l| l.starts_with(r#"s2ds_connections_total{stream="a""#)).unwrap();
    assert!(total.ends_with(" 1"), "a's one connection, never re-made: {total}");
    eprintln!("update sent -> Applied received (stream b relaying): {:.3} ms", decided_to_relaying.as_secs_f64() * 1e3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_recovers_every_stream_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (op_id, relay_id) = (identity(dir.path(), "operator"), identity(dir.path(), "relay"));
    let mut operator = Operator::start("127.0.0.1:0", &op_id, &relay_id).await;
    let echo = echo_target().await;
    let streams = || vec![plain("a", "a1", echo, ""), plain("b", "b1", echo, "")];
    let (first, stop) = relay(operator.addr, &relay_id, &op_id).await;
    let mut call = operator.next_call().await;
    call.send(update(1, true, streams(), &[])).await;
    stop.cancel();
    drop(call);
    first.shutdown(Duration::from_secs(1)).await;

    let (second, _stop) = relay(operator.addr, &relay_id, &op_id).await;
    let mut call = operator.next_call().await;
    assert!(call.hello.streams.is_empty(), "a restarted relay starts empty");
    let applied = call.send(update(1, true, streams(), &[])).await;
    for id in ["a", "b"] {
        let s = find(&applied, id);
        assert!(s.ready, "{s:?}");
        round_trip(&mut TcpStream::connect(listener(s)).await.unwrap(), 4).await;
    }
    assert_eq!(second.streams(), vec!["a".to_owned(), "b".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_and_the_operator_each_talk_only_to_the_one_they_pin() {
    let dir = tempfile::tempdir().unwrap();
    let (op_id, relay_id, intruder) =
        (identity(dir.path(), "operator"), identity(dir.path(), "relay"), identity(dir.path(), "intruder"));
    // An operator the relay does not pin: the relay refuses it and calls again, never applying.
    let mut impostor = Operator::start("127.0.0.1:0", &intruder, &relay_id).await;
    let (node, stop) = relay(impostor.addr, &relay_id, &op_id).await;
    wait_until("the relay to refuse the impostor twice", Duration::from_secs(20), || {
        impostor.refused.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(impostor.calls.try_recv().is_err(), "no call reached an operator the relay does not pin");
    assert!(node.streams().is_empty());
    stop.cancel();
    // A relay the operator does not pin (its own identity, not the one the operator knows).
    let operator = Operator::start("127.0.0.1:0", &op_id, &relay_id).await;
    let (_node, _stop) = relay(operator.addr, &intruder, &op_id).await;
    wait_until("the operator to refuse the unknown relay twice", Duration::from_secs(20), || {
        operator.refused.load(Ordering::SeqCst) >= 2
    })
    .await;
    let mut operator = operator;
    assert!(operator.calls.try_recv().is_err(), "no call from a relay the operator does not pin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2ds_node_runs_the_shared_relay_from_the_command_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (op_id, relay_id) = (identity(dir.path(), "operator"), identity(dir.path(), "relay"));
    let mut operator = Operator::start("127.0.0.1:0", &op_id, &relay_id).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_s2ds"))
        .args([
            "node",
            "--gateway",
            "dtn",
            "--node",
            "gw-a",
            "--metrics-address",
            "127.0.0.1:0",
            "--drain-seconds",
            "1",
        ])
        .arg("--control-plane")
        .arg(operator.addr.to_string())
        .arg("--cert")
        .arg(&relay_id.cert)
        .arg("--key")
        .arg(&relay_id.key)
        .arg("--control-plane-cert")
        .arg(&op_id.cert)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut metrics_at) = tokio::sync::mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[s2ds node] {line}");
            if let Some(a) = line.split("metrics=Some(").nth(1).and_then(|r| r.split(')').next()) {
                let _ = tx.send(a.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let metrics = tokio::time::timeout(Duration::from_secs(20), metrics_at.recv()).await.unwrap().unwrap();
    let mut call = operator.next_call().await;
    assert_eq!(call.hello.node, "gw-a");
    let applied = call.send(update(1, true, vec![plain("a", "a1", echo_target().await, "")], &[])).await;
    round_trip(&mut TcpStream::connect(listener(find(&applied, "a"))).await.unwrap(), 5).await;
    let (code, body) = http_get(metrics, "/readyz/a").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("a: ready"), "{body}");
    assert_eq!(http_get(metrics, "/readyz/nobody").await.0, 404);
    let status = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "s2ds node did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2ds_node_keeps_running_below_the_info_log_level() {
    // Once the wait for SIGTERM sat inside a log macro: below its level it was never awaited,
    // and the relay exited at once, before calling.
    let dir = tempfile::tempdir().unwrap();
    let (op_id, relay_id) = (identity(dir.path(), "operator"), identity(dir.path(), "relay"));
    let mut operator = Operator::start("127.0.0.1:0", &op_id, &relay_id).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_s2ds"))
        .args(["node", "--gateway", "dtn", "--node", "gw-a", "--drain-seconds", "1"])
        .arg("--control-plane")
        .arg(operator.addr.to_string())
        .args([std::ffi::OsStr::new("--cert"), relay_id.cert.as_os_str()])
        .args([std::ffi::OsStr::new("--key"), relay_id.key.as_os_str()])
        .args([std::ffi::OsStr::new("--control-plane-cert"), op_id.cert.as_os_str()])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut call = operator.next_call().await;
    let applied = call.send(update(1, true, vec![plain("a", "a1", echo_target().await, "")], &[])).await;
    round_trip(&mut TcpStream::connect(listener(find(&applied, "a"))).await.unwrap(), 6).await;
    assert!(child.try_wait().unwrap().is_none(), "s2ds node exited on its own");
    let _ = child.kill();
    let _ = child.wait();
}
