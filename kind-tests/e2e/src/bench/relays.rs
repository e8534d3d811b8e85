//! The two relay models side by side (issue 26), Plain streams with one listener each, on
//! loopback, the release binaries:
//! - shared: one `s2ds node` fed over the operator's configuration channel (the Hub of
//!   `scistream-controller`, served in this process over mutual TLS); streams set one at a
//!   time, each timed from the operator's decision to the relay's report that it relays;
//!   memory and descriptors of the one process as streams are added;
//! - per stream: one `s2ds --config` process a stream, each timed from spawn to `/readyz`
//!   200 (a process start; on a real cluster a pod start adds scheduling, sandbox and probes);
//!   memory and descriptors per process.
//!
//! And CPU seconds per GiB relayed through one stream of each.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use scistream_controller::relay_hub::identity::{Authority, fingerprint_pem};
use scistream_controller::relay_hub::{Hub, RelayKey, server};
use scistream_relay_proto::{StreamConfig, StreamState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{quantile, usage};

const MIB: usize = 1 << 20;

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// An echo target (for checking) and a discarding one (for CPU per GiB).
async fn targets() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let discard = TcpListener::bind("127.0.0.1:0").await?;
    let addrs = (echo.local_addr()?, discard.local_addr()?);
    tokio::spawn(async move {
        while let Ok((s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = discard.accept().await {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
            });
        }
    });
    Ok(addrs)
}

fn plain_yaml(id: &str, target: SocketAddr, metrics: bool) -> String {
    let m = if metrics { "metricsAddress: 127.0.0.1:0\n" } else { "" };
    format!("streamId: {id}\nmode: plain\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\ndrainSeconds: 1\n{m}")
}

/// Sends `mib` MiB through `at` and returns the wall time.
async fn push(at: SocketAddr, mib: usize) -> anyhow::Result<Duration> {
    let mut c = TcpStream::connect(at).await?;
    let buf = vec![0x5au8; MIB];
    let t = Instant::now();
    for _ in 0..mib {
        c.write_all(&buf).await?;
    }
    c.shutdown().await?;
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await?;
    Ok(t.elapsed())
}

async fn echoes(at: SocketAddr) -> anyhow::Result<()> {
    let mut c = TcpStream::connect(at).await?;
    c.write_all(b"ping").await?;
    let mut got = [0u8; 4];
    c.read_exact(&mut got).await?;
    anyhow::ensure!(&got == b"ping", "{at} did not echo");
    Ok(())
}

/// CPU seconds of `pid` per GiB pushed through `at`, and the rate.
async fn cpu_per_gib(pid: u32, at: SocketAddr, mib: usize) -> anyhow::Result<(f64, f64)> {
    let before = usage(pid)?.cpu;
    let wall = push(at, mib).await?;
    let cpu = usage(pid)?.cpu.saturating_sub(before);
    let gib = mib as f64 / 1024.0;
    Ok((cpu.as_secs_f64() / gib, mib as f64 * 8.0 * 1.048_576 / 1000.0 / wall.as_secs_f64()))
}

/// Waits (bounded) for the report of `id` that satisfies `done`.
async fn report(
    hub: &Hub,
    relay: &RelayKey,
    id: &str,
    done: impl Fn(&StreamState) -> bool,
) -> anyhow::Result<StreamState> {
    let mut reports = hub.subscribe();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = hub.reported(relay, id).filter(|s| done(s)) {
            return Ok(s);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reports.recv()).await {
            Err(_) => anyhow::bail!("no report of {id} within 30 s"),
            Ok(Ok(r))
                if &r.relay == relay && r.state.stream_id == id && (done(&r.state) || !r.state.error.is_empty()) =>
            {
                return Ok(r.state);
            }
            Ok(_) => {}
        }
    }
}

/// Runs both models and prints the figures.
pub async fn run(s2ds: &Path, streams: usize, processes: usize, mib: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (echo, discard) = targets().await?;
    println!("relay models: Plain streams, 1 listener each, loopback, {}", s2ds.display());
    shared(s2ds, dir.path(), streams, mib, echo, discard).await?;
    per_stream(s2ds, dir.path(), processes, mib, echo, discard).await
}

async fn shared(
    s2ds: &Path,
    dir: &Path,
    streams: usize,
    mib: usize,
    echo: SocketAddr,
    discard: SocketAddr,
) -> anyhow::Result<()> {
    let authority = Authority::generate()?;
    let serving = authority.issue_server(&["scistream-operator".into()])?;
    let hub = Arc::new(Hub::default());
    hub.open();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(server::serve(
        hub.clone(),
        listener,
        server::tls_config(&serving, &authority.certificate_pem())?,
        stop,
    ));
    let relay = RelayKey { gateway: "dtn".into(), node: "bench".into() };
    let id = authority.issue_relay(&relay)?;
    hub.authorize(fingerprint_pem(&id.certificate_pem).context("relay certificate")?, relay.clone());
    let write = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, pem)?;
        Ok(p)
    };
    let child = Command::new(s2ds)
        .args(["node", "--gateway", "dtn", "--node", "bench", "--drain-seconds", "1"])
        .arg("--control-plane")
        .arg(addr.to_string())
        .arg("--cert")
        .arg(write("relay.crt", &id.certificate_pem)?)
        .arg("--key")
        .arg(write("relay.key", &id.private_key_pem)?)
        .arg("--control-plane-cert")
        .arg(write("operator.crt", &serving.certificate_pem)?)
        .env("RUST_LOG", std::env::var("S2DS_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting s2ds node")?;
    let pid = child.id();
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hub.connected(&relay) {
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!("s2ds node ended with {status} before calling");
        }
        anyhow::ensure!(Instant::now() < deadline, "s2ds node did not call within 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (rss0, fds0) = (usage(pid)?.rss, fds(pid));
    println!("shared relay (one s2ds node): {:.1} MiB and {fds0} descriptors with no stream", rss0 as f64 / MIB as f64);
    let mut latencies = Vec::new();
    let mut first = None;
    let started = Instant::now();
    for i in 0..streams {
        let sid = format!("s{i}");
        let t = Instant::now();
        hub.set(
            &relay,
            StreamConfig {
                stream_id: sid.clone(),
                generation: "g1".into(),
                config: plain_yaml(&sid, echo, false),
                ..Default::default()
            },
        );
        let s = report(&hub, &relay, &sid, |s| s.ready).await?;
        if !s.error.is_empty() {
            println!("  stream {i} refused, the limit on this machine: {}", s.error);
            break;
        }
        latencies.push(t.elapsed());
        first.get_or_insert(s.listeners[0].parse::<SocketAddr>()?);
        let n = i + 1;
        if [1, 10, 100, 500, 1000, 2000, 5000, 10000].contains(&n) || n == streams {
            let u = usage(pid)?;
            println!(
                "  {n:>5} streams: RSS {:>7.1} MiB ({:>5.1} KiB a stream), {:>6} descriptors ({:.1} a stream), set→relaying p50 {:.2} ms p99 {:.2} ms",
                u.rss as f64 / MIB as f64,
                u.rss.saturating_sub(rss0) as f64 / 1024.0 / n as f64,
                fds(pid),
                fds(pid).saturating_sub(fds0) as f64 / n as f64,
                quantile(&latencies, 0.5).as_secs_f64() * 1e3,
                quantile(&latencies, 0.99).as_secs_f64() * 1e3,
            );
        }
    }
    println!("  {} streams added one at a time in {:.2} s", latencies.len(), started.elapsed().as_secs_f64());
    if let Some(at) = first {
        echoes(at).await?;
    }
    let sid = "throughput";
    hub.set(
        &relay,
        StreamConfig {
            stream_id: sid.into(),
            generation: "g1".into(),
            config: plain_yaml(sid, discard, false),
            ..Default::default()
        },
    );
    let s = report(&hub, &relay, sid, |s| s.ready).await?;
    let (cpu, gbps) = cpu_per_gib(pid, s.listeners[0].parse()?, mib).await?;
    println!(
        "  CPU per GiB relayed through one stream: {cpu:.3} s ({gbps:.1} Gbit/s, {mib} MiB, with {} other streams)",
        latencies.len()
    );
    let t = Instant::now();
    let ids = hub.desired(&relay);
    for sid in &ids {
        hub.remove(&relay, sid);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while fds(pid) > fds0 + 2 {
        anyhow::ensure!(Instant::now() < deadline, "descriptors not released within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "  all {} removed (listeners closed) in {:.2} s; RSS after {:.1} MiB",
        ids.len(),
        t.elapsed().as_secs_f64(),
        usage(pid)?.rss as f64 / MIB as f64
    );
    Ok(())
}

/// Starts one per-stream relay and waits for its `/readyz`; returns it, its listener and the
/// time from spawn to ready.
async fn start_one(
    s2ds: &Path,
    dir: &Path,
    i: usize,
    target: SocketAddr,
) -> anyhow::Result<(Killed, SocketAddr, Duration)> {
    let path = dir.join(format!("stream-{i}.yaml"));
    std::fs::write(&path, plain_yaml(&format!("p{i}"), target, true))?;
    let t = Instant::now();
    let mut child = Command::new(s2ds)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting s2ds")?;
    let stderr = child.stderr.take().context("stderr")?;
    let child = Killed(child);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let metrics =
                line.split("metrics=Some(").nth(1).and_then(|r| r.split(')').next()?.parse::<SocketAddr>().ok());
            // `listeners=[(127.0.0.1:0, 127.0.0.1:PORT)]`: configured and bound.
            let listener = line
                .split("listeners=[(")
                .nth(1)
                .and_then(|r| r.split(')').next()?.split(", ").nth(1)?.parse::<SocketAddr>().ok());
            if let (Some(m), Some(l)) = (metrics, listener)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send((m, l));
            }
        }
    });
    let (metrics, listener) =
        tokio::time::timeout(Duration::from_secs(20), rx).await.context("s2ds not ready within 20 s")??;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = TcpStream::connect(metrics).await?;
        c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut resp = String::new();
        c.read_to_string(&mut resp).await?;
        if resp.starts_with("HTTP/1.1 200") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "s2ds not ready within 20 s");
    }
    Ok((child, listener, t.elapsed()))
}

async fn per_stream(
    s2ds: &Path,
    dir: &Path,
    n: usize,
    mib: usize,
    echo: SocketAddr,
    discard: SocketAddr,
) -> anyhow::Result<()> {
    let mut relays = Vec::new();
    let mut starts = Vec::new();
    for i in 0..n {
        let (child, listener, took) = start_one(s2ds, dir, i, echo).await?;
        starts.push(took);
        relays.push((child, listener));
    }
    for (_, at) in &relays {
        echoes(*at).await?;
    }
    let rss: u64 = relays.iter().map(|(c, _)| usage(c.0.id()).map(|u| u.rss).unwrap_or(0)).sum();
    let fd: usize = relays.iter().map(|(c, _)| fds(c.0.id())).sum();
    println!(
        "per-stream relays ({n} s2ds processes): spawn→ready p50 {:.1} ms p99 {:.1} ms; RSS {:.1} MiB a stream; {:.1} descriptors a stream",
        quantile(&starts, 0.5).as_secs_f64() * 1e3,
        quantile(&starts, 0.99).as_secs_f64() * 1e3,
        rss as f64 / MIB as f64 / n.max(1) as f64,
        fd as f64 / n.max(1) as f64,
    );
    drop(relays);
    let (child, at, _) = start_one(s2ds, dir, n, discard).await?;
    let (cpu, gbps) = cpu_per_gib(child.0.id(), at, mib).await?;
    println!("  CPU per GiB relayed through one stream: {cpu:.3} s ({gbps:.1} Gbit/s, {mib} MiB)");
    Ok(())
}
