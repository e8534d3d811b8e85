//! Rate limit, reload, drain and bad configs, through the real binary.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_within_five_percent_over_one_gib() {
    let dir = tempfile::tempdir().unwrap();
    let (target, mut rx) = sink_target(9, 0).await;
    let rate_bits: u64 = 1_000_000_000;
    let yaml = format!(
        "streamId: rl\nmode: plain\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\n\
         metricsAddress: 127.0.0.1:0\nrateBitsPerSecond: {rate_bits}\n"
    );
    let s2ds = S2ds::start(dir.path(), "rl", &yaml).await;
    let addr = s2ds.listeners().await[0];
    let start = Instant::now();
    // 4 x 256 MiB = 1 GiB, sha256-checked.
    transfer_checked(addr, &mut rx, 4, 256 * MIB, 0, 9).await;
    let secs = start.elapsed().as_secs_f64();
    let measured = (1024 * MIB * 8) as f64 / secs;
    let ratio = measured / rate_bits as f64;
    eprintln!("rate limit: {measured:.0} bit/s over {secs:.2} s = {ratio:.3} x limit");
    // The limit is a ceiling, and that is what this checks; how close to it a
    // transfer gets depends on the CPU it is given (on a loaded machine the
    // relays fall short of it: 0.77-0.95 seen), so the floor only shows that
    // the bucket refills (its arithmetic is proptested in `ratelimit`).
    assert!((0.5..=1.05).contains(&ratio), "measured {ratio:.3} x the limit");
    assert!(s2ds.metric("s2ds_ratelimit_wait_seconds_total").await > 1.0);
}

fn plain_yaml(listeners: &[&str], targets: &[String]) -> String {
    format!(
        "streamId: rel\nmode: plain\nlisteners: [{}]\ntargets: [{}]\nmetricsAddress: 127.0.0.1:0\ndrainSeconds: 10\n",
        listeners.join(", "),
        targets.join(", ")
    )
}

async fn roundtrip(c: &mut TcpStream, t: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    t.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
    t.write_all(msg).await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_established_connections_and_applies_new_targets() {
    let dir = tempfile::tempdir().unwrap();
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap().to_string(), b.local_addr().unwrap().to_string());
    let s2ds = S2ds::start(dir.path(), "r", &plain_yaml(&["127.0.0.1:0"], std::slice::from_ref(&a_addr))).await;
    let l0 = s2ds.listeners().await[0];
    let mut c1 = TcpStream::connect(l0).await.unwrap();
    let (mut t1, _) = a.accept().await.unwrap();
    roundtrip(&mut c1, &mut t1, b"before reload").await;

    // 1. File change: new target, one more listener.
    std::fs::write(&s2ds.config, plain_yaml(&["127.0.0.1:0", "127.0.0.2:0"], std::slice::from_ref(&b_addr))).unwrap();
    s2ds.wait_metric("s2ds_reloads_total{stream=\"rel\",result=\"ok\"}", 1.0).await;
    roundtrip(&mut c1, &mut t1, b"established connection survives").await;
    let ls = s2ds.listeners().await;
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0], l0, "unchanged listener keeps its socket");
    for l in &ls {
        let mut c = TcpStream::connect(l).await.unwrap();
        let (mut t, _) = tokio::time::timeout(Duration::from_secs(10), b.accept()).await.unwrap().unwrap();
        roundtrip(&mut c, &mut t, b"new connections go to the new target").await;
    }

    // 2. SIGHUP after an edit: remove the first listener, back to target A.
    std::fs::write(&s2ds.config, plain_yaml(&["127.0.0.2:0"], &[a_addr])).unwrap();
    s2ds.signal(1);
    s2ds.wait_metric("s2ds_reloads_total{stream=\"rel\",result=\"ok\"}", 2.0).await;
    let ls2 = s2ds.listeners().await;
    assert_eq!(ls2, vec![ls[1]]);
    assert!(TcpStream::connect(l0).await.is_err(), "removed listener must be closed");
    let mut c = TcpStream::connect(ls[1]).await.unwrap();
    let (mut t, _) = tokio::time::timeout(Duration::from_secs(10), a.accept()).await.unwrap().unwrap();
    roundtrip(&mut c, &mut t, b"to A again").await;
    roundtrip(&mut c1, &mut t1, b"still alive after listener removal").await;

    // 3. A bad edit is refused and the running config stays.
    std::fs::write(&s2ds.config, "streamId: rel\nmode: plain\nlisteners: [nope]\n").unwrap();
    s2ds.wait_metric("s2ds_reloads_total{stream=\"rel\",result=\"error\"}", 1.0).await;
    roundtrip(&mut c, &mut t, b"unchanged").await;
    assert_eq!(s2ds.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let t_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = t_l.local_addr().unwrap().to_string();
    let mut s2ds = S2ds::start(dir.path(), "d", &plain_yaml(&["127.0.0.1:0"], &[target])).await;
    let l0 = s2ds.listeners().await[0];
    let mut c = TcpStream::connect(l0).await.unwrap();
    let (mut t, _) = t_l.accept().await.unwrap();
    roundtrip(&mut c, &mut t, b"hello").await;
    // Probe connections below may be relayed just before the listener
    // closes: the target closes those at once so they cannot hold the drain.
    tokio::spawn(async move { while t_l.accept().await.is_ok() {} });

    s2ds.signal(15);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(l0).await.is_ok() {
        assert!(Instant::now() < deadline, "listener still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The established connection keeps working during the drain.
    roundtrip(&mut c, &mut t, b"during drain").await;
    c.shutdown().await.unwrap();
    t.shutdown().await.unwrap();
    let started = Instant::now();
    assert_eq!(s2ds.wait_exit(Duration::from_secs(9)).await, 0);
    assert!(started.elapsed() < Duration::from_secs(5), "exit should follow the last close");
    wait_until("the drain report", Duration::from_secs(10), || s2ds.log_contains("aborted=0")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_aborts_stuck_connections() {
    let dir = tempfile::tempdir().unwrap();
    let t_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let yaml = plain_yaml(&["127.0.0.1:0"], &[t_l.local_addr().unwrap().to_string()])
        .replace("drainSeconds: 10", "drainSeconds: 1");
    let mut s2ds = S2ds::start(dir.path(), "d", &yaml).await;
    let mut c = TcpStream::connect(s2ds.listeners().await[0]).await.unwrap();
    let (mut t, _) = t_l.accept().await.unwrap();
    roundtrip(&mut c, &mut t, b"idle forever").await;
    s2ds.signal(15);
    assert_eq!(s2ds.wait_exit(Duration::from_secs(10)).await, 0);
    wait_until("the drain report", Duration::from_secs(10), || s2ds.log_contains("aborted=1")).await;
    // An aborted connection is cut, and both ends must see it so.
    for end in [&mut c, &mut t] {
        let r = end.read_to_end(&mut Vec::new()).await.map_err(|e| e.kind());
        assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset), "a connection cut by the drain deadline");
    }
}

fn run(args: &[&str], config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_s2ds")).args(args).arg("--config").arg(&p).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_non_zero_naming_the_field() {
    let bad = "streamId: s\nmode: plain\nlisteners: [127.0.0.1:0, 127.0.0.2:0, 1.2.3.4]\n";
    for args in [&[][..], &["check"][..]] {
        let (code, _, err) = run(args, bad);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(r#"listeners[2]: "1.2.3.4" is not host:port"#), "{err}");
    }
    let (code, _, err) = run(&[], "streamId: s\nmode: tls-server\nlisteners: [127.0.0.1:0]\n");
    assert_eq!(code, 1);
    assert!(err.contains("tls: is required when mode is tls-server"), "{err}");
    let (code, _, err) = run(&["check"], "streamId: s\nmode: plain\nlistener: []\n");
    assert_eq!(code, 1);
    assert!(err.contains("listener"), "{err}");
    let (code, out, _) = run(&["check"], "streamId: s\nmode: plain\nlisteners: [127.0.0.1:0]\n");
    assert_eq!(code, 0);
    assert!(out.contains("ok"));
}

#[test]
fn missing_tls_files_and_busy_ports_fail_before_serving() {
    let (code, _, err) = run(
        &[],
        "streamId: s\nmode: tls-client\nlisteners: [127.0.0.1:0]\ntls: {certFile: /nonexistent/c, keyFile: /k, peerFingerprintSha256: '00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00'}\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("tls.certFile") && err.contains("/nonexistent/c"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let (code, _, err) = run(&[], &format!("streamId: s\nmode: plain\nlisteners: [127.0.0.3:0, '{busy_addr}']\n"));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot bind {busy_addr}")), "{err}");
}

/// `s2ds wait-ready` (the relay pod's postStart hook) returns once the relay serving the same
/// config answers `/readyz`, started at the same moment as the relay; with no relay it fails
/// after its timeout naming the address and the last error.
#[test]
fn wait_ready_returns_once_the_relay_is_bound() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yaml =
        format!("streamId: w\nmode: plain\nlisteners: [127.0.0.1:0, 127.0.0.2:0]\nmetricsAddress: '{metrics}'\n");
    let (code, _, err) = run(&["wait-ready", "--timeout-seconds", "0"], &yaml);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("the relay at {metrics} was not ready")) && err.contains("connect"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let bin = env!("CARGO_BIN_EXE_s2ds");
    let mut relay = Command::new(bin).arg("--config").arg(&config).stderr(std::process::Stdio::null()).spawn().unwrap();
    let waited = Command::new(bin).args(["wait-ready", "--timeout-seconds", "30", "--config"]).arg(&config).output();
    let ready = std::net::TcpStream::connect(metrics).is_ok();
    let _ = relay.kill();
    let _ = relay.wait();
    let waited = waited.unwrap();
    let out = String::from_utf8_lossy(&waited.stdout);
    assert!(waited.status.success(), "{out} {}", String::from_utf8_lossy(&waited.stderr));
    assert!(out.contains("ready after"), "{out}");
    assert!(ready, "wait-ready returned before the relay's health listener was bound");
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_until_a_signal_at_every_log_level() {
    // Once the wait for SIGTERM sat inside a log macro: below its level it was never awaited,
    // and the relay exited at once.
    for level in ["warn", "off"] {
        let dir = tempfile::tempdir().unwrap();
        let t_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (listen, metrics) = (free_port(), free_port());
        let config = dir.path().join("c.yaml");
        std::fs::write(
            &config,
            format!(
                "streamId: quiet\nmode: plain\nlisteners: ['127.0.0.1:{listen}']\ntargets: ['{}']\n\
                 metricsAddress: 127.0.0.1:{metrics}\ndrainSeconds: 1\n",
                t_l.local_addr().unwrap()
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_s2ds"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", level)
            .spawn()
            .unwrap();
        let at = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(child.try_wait().unwrap().is_none(), "s2ds exited on its own at RUST_LOG={level}");
            if TcpStream::connect(at(metrics)).await.is_ok() && http_get(at(metrics), "/readyz").await.0 == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "s2ds not ready at RUST_LOG={level}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut c = TcpStream::connect(at(listen)).await.unwrap();
        let (mut t, _) = t_l.accept().await.unwrap();
        roundtrip(&mut c, &mut t, b"still here").await;
        assert!(child.try_wait().unwrap().is_none(), "s2ds exited on its own at RUST_LOG={level}");
        drop((c, t));
        let status = std::process::Command::new("kill").arg(child.id().to_string()).status().unwrap();
        assert!(status.success());
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}
