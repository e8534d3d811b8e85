//! Helpers for the integration tests: certificates, the real `s2ds` binary,
//! traffic generators with SHA-256 checks, and bounded waiting.
#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Polls `cond` every 10 ms until it holds or `within` elapses.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A self-signed identity written to `dir/<name>.{crt,key}`.
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub fingerprint: String,
}

pub fn identity(dir: &Path, name: &str) -> Identity {
    let c = rcgen::generate_simple_self_signed(vec![format!("{name}.s2ds.test")]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let fp = digest::digest(&digest::SHA256, c.cert.der());
    let fingerprint = fp.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    Identity { cert, key, fingerprint }
}

/// A relay's record layer for the TLS data phase (`tls.recordLayer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Ours (the default).
    Ours,
    /// rustls's own, through tokio-rustls.
    Rustls,
}

/// Both record layers, for tests that hold for each.
pub const LAYERS: [Layer; 2] = [Layer::Ours, Layer::Rustls];

impl Layer {
    /// The line selecting this layer, to put under `tls:` in a relay's config.
    pub fn tls_line(self) -> &'static str {
        match self {
            Layer::Ours => "  recordLayer: s2ds\n",
            Layer::Rustls => "  recordLayer: rustls\n",
        }
    }
}

/// A test for each record layer: `$name::ours` and `$name::rustls` run
/// `$name(Layer::Ours)` and `$name(Layer::Rustls)`.
#[allow(unused_macros)]
macro_rules! for_each_layer {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ours() {
                super::$name(Layer::Ours).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rustls() {
                super::$name(Layer::Rustls).await;
            }
        }
    )*};
}

/// A running `s2ds` process, killed on drop.
pub struct S2ds {
    pub child: Child,
    pub config: PathBuf,
    pub metrics: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl S2ds {
    /// Writes `yaml` to `dir/<name>.yaml` and starts the binary; waits
    /// until `/readyz` answers 200.
    pub async fn start(dir: &Path, name: &str, yaml: &str) -> Self {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_s2ds"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[s2ds {pid}] {line}");
                log2.lock().unwrap().push(line);
            }
        });
        let metrics = {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let found = log.lock().unwrap().iter().find_map(|l| {
                    let rest = l.split("metrics=Some(").nth(1)?;
                    rest.split(')').next()?.parse::<SocketAddr>().ok()
                });
                if let Some(a) = found {
                    break a;
                }
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("s2ds exited early with {st}: {:?}", log.lock().unwrap());
                }
                assert!(Instant::now() < deadline, "s2ds not ready: {:?}", log.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let s = Self { child, config, metrics, log };
        let (code, _) = s.get("/readyz").await;
        assert_eq!(code, 200);
        s
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path).await
    }

    /// Bound address of each listener, in config order, from `/readyz`.
    pub async fn listeners(&self) -> Vec<SocketAddr> {
        let (_, body) = self.get("/readyz").await;
        body.lines().skip(1).filter_map(|l| l.split(" -> ").nth(1)?.parse().ok()).collect()
    }

    /// The value of a metric line starting with `prefix` (summed over matches).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    pub async fn wait_metric(&self, prefix: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.metric(prefix).await;
            if v >= at_least {
                return;
            }
            assert!(Instant::now() < deadline, "{prefix} stayed at {v} < {at_least}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        // kill(1) keeps the tests free of unsafe libc calls.
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "s2ds did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).unwrap().count()
    }
}

impl Drop for S2ds {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let code = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

// === traffic ===

const BLOCK: usize = 1 << 20;
const CHUNK: usize = 128 * 1024;

/// Deterministic, non-repeating test data: chunk `i` is a window of a
/// pseudo-random block with `i` written in its first 8 bytes.
pub struct Gen {
    block: Arc<Vec<u8>>,
    i: u64,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let block = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Self { block: Arc::new(block), i: 0 }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let off = (self.i as usize * 7919 * 61) % (BLOCK - buf.len());
        buf.copy_from_slice(&self.block[off..off + buf.len()]);
        let n = buf.len().min(8);
        buf[..n].copy_from_slice(&self.i.to_le_bytes()[..n]);
        self.i += 1;
    }
}

pub fn hex(d: digest::Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `len` generated bytes, then shuts down the write half; returns the SHA-256.
pub async fn send<W: AsyncWriteExt + Unpin>(w: &mut W, seed: u64, len: u64) -> String {
    let sha = send_open(w, seed, len).await;
    w.shutdown().await.unwrap();
    sha
}

/// As [`send`], but leaves the write half open.
pub async fn send_open<W: AsyncWriteExt + Unpin>(w: &mut W, seed: u64, len: u64) -> String {
    let mut g = Gen::new(seed);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap();
        g.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    w.flush().await.unwrap();
    hex(ctx.finish())
}

/// Reads to EOF; returns (bytes, SHA-256).
pub async fn recv<R: AsyncReadExt + Unpin>(r: &mut R) -> (u64, String) {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return (total, hex(ctx.finish()));
        }
        ctx.update(&buf[..n]);
        total += n as u64;
    }
}

/// How a connection the relay refuses ends for the application, after it
/// wrote `payload` (a write error is part of the refusal): a reset, which may
/// already answer the connect when the relay's RST arrives before tokio checks
/// the socket's error (seen in CI on a loaded machine), or `Ok(bytes)` at EOF.
pub async fn refusal_after(addr: SocketAddr, payload: &[u8]) -> Result<usize, std::io::ErrorKind> {
    let mut c = TcpStream::connect(addr).await.map_err(|e| e.kind())?;
    let _ = c.write_all(payload).await;
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.map_err(|e| e.kind())
}

/// Hash of what [`send`] produces, computed without sending.
pub fn expected(seed: u64, len: u64) -> String {
    let mut g = Gen::new(seed);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap();
        g.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        left -= n as u64;
    }
    hex(ctx.finish())
}

/// Result of one connection seen by the target: what it received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub bytes: u64,
    pub sha: String,
}

/// A target that, per connection, reads everything (hashing it) while
/// sending `reply_len` generated bytes (seed = first 8 bytes received
/// are not known in advance, so the reply seed is fixed per target).
pub async fn sink_target(reply_seed: u64, reply_len: u64) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let reader = tokio::spawn(async move { recv(&mut r).await });
                send(&mut w, reply_seed, reply_len).await;
                let (bytes, sha) = reader.await.unwrap();
                let _ = tx.send(Seen { bytes, sha });
            });
        }
    });
    (addr, rx)
}

/// Runs `conns` parallel connections to `addr`, each sending `up` bytes
/// (seed = index) and receiving `down` bytes from a [`sink_target`] with
/// `reply_seed`; checks every hash in both directions.
pub async fn transfer_checked(
    addr: SocketAddr,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
    conns: u64,
    up: u64,
    down: u64,
    reply_seed: u64,
) {
    let want_down = expected(reply_seed, down);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let want_down = want_down.clone();
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            let (mut r, mut w) = s.into_split();
            let reader = tokio::spawn(async move { recv(&mut r).await });
            let sent = send(&mut w, 1000 + i, up).await;
            let (n, sha) = reader.await.unwrap();
            assert_eq!((n, sha), (down, want_down), "target->client stream {i}");
            sent
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.push(t.await.unwrap());
    }
    let mut seen = Vec::new();
    for _ in 0..conns {
        let s = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
        assert_eq!(s.bytes, up);
        seen.push(s.sha);
    }
    sent.sort();
    seen.sort();
    assert_eq!(sent, seen, "client->target hashes");
}

pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Half-close through the relay at `addr` in front of `l`, both ways: the
/// client closes first and the target still answers; the target closes
/// first and the client still sends.
pub async fn half_close_both_ways(addr: SocketAddr, l: &tokio::net::TcpListener) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let (mut t, _) = l.accept().await.unwrap();
    close_first_then_answer(&mut c, &mut t, b"request", b"answer after client EOF").await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let (mut t, _) = l.accept().await.unwrap();
    close_first_then_answer(&mut t, &mut c, b"banner", b"upload after target EOF").await;
}

/// `first` sends `said` and shuts down its write half; `second` receives it
/// whole, then still sends `answer`, which `first` receives whole.
async fn close_first_then_answer(first: &mut TcpStream, second: &mut TcpStream, said: &[u8], answer: &[u8]) {
    first.write_all(said).await.unwrap();
    first.shutdown().await.unwrap();
    let mut got = Vec::new();
    second.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, said);
    second.write_all(answer).await.unwrap();
    second.shutdown().await.unwrap();
    let mut back = Vec::new();
    first.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, answer);
}

/// Reads exactly `len` bytes; returns their SHA-256.
pub async fn recv_exact<R: AsyncReadExt + Unpin>(r: &mut R, len: u64) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap();
        r.read_exact(&mut buf[..n]).await.unwrap();
        ctx.update(&buf[..n]);
        left -= n as u64;
    }
    hex(ctx.finish())
}

/// A target for peers without TLS half-close (Stunnel ends a TLS connection whole when
/// either side ends): per connection it reads exactly `up` bytes, answers `reply_len` bytes
/// of `reply_seed`, then waits for the client's end.
pub async fn exchange_target(
    up: u64,
    reply_seed: u64,
    reply_len: u64,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let sha = recv_exact(&mut s, up).await;
                send_open(&mut s, reply_seed, reply_len).await;
                let (extra, _) = recv(&mut s).await;
                let _ = tx.send(Seen { bytes: up + extra, sha });
            });
        }
    });
    (addr, rx)
}

/// One connection to `addr` in front of an [`exchange_target`]: sends `up` bytes, reads the
/// `down` bytes of the answer, and only then ends; checks both hashes.
pub async fn exchange_checked(
    addr: SocketAddr,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
    up: u64,
    down: u64,
    reply_seed: u64,
) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let sent = send_open(&mut s, 1000, up).await;
    assert_eq!(recv_exact(&mut s, down).await, expected(reply_seed, down), "target->client");
    s.shutdown().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
    assert_eq!((seen.bytes, seen.sha), (up, sent), "client->target");
}
