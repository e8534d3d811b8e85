//! Interop of our TLS 1.3 record layer with OpenSSL 3 and Stunnel, in both
//! directions, with pinned certificates on both sides:
//!
//! - `openssl s_client` -> s2ds tls-server, and s2ds tls-client ->
//!   `openssl s_server`: lines both ways with key updates asked for from
//!   the OpenSSL side between them (`K`: update_requested, which s2ds must
//!   answer with its own; `k`: not requested), then close_notify both ways.
//! - Stunnel client -> s2ds tls-server, and s2ds tls-client -> Stunnel
//!   server: 64 MiB each way, SHA-256 checked, and half-close.
//!
//! Needs Debian's `openssl` and `stunnel4` (`kind-tests/setup.sh` installs
//! them). Every wait is bounded; nothing leaves 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;
const WAIT: Duration = Duration::from_secs(20);
/// What OpenSSL's `-msg` prints for a KeyUpdate it received.
const OUR_KEY_UPDATE: &str = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate";

/// A certificate and key made by `openssl req` (P-256, self-signed), as a
/// facility might make them.
struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

fn openssl_identity(dir: &Path, name: &str) -> Pem {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}.s2ds.test"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("`openssl` runs (apt-get install openssl; kind-tests/setup.sh does)");
    assert!(st.success(), "openssl req failed");
    Pem { cert, key }
}

fn s2ds_yaml(mode: &str, me: &Pem, peer: &Pem, target: SocketAddr) -> String {
    format!(
        "streamId: interop\nmode: {mode}\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\n\
         metricsAddress: 127.0.0.1:0\ndrainSeconds: 5\ntls:\n  certFile: {}\n  keyFile: {}\n  peerCertFile: {}\n",
        me.cert.display(),
        me.key.display(),
        peer.cert.display()
    )
}

/// A child process whose stdout and stderr are collected as they come.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command, name: &'static str) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e} (kind-tests/setup.sh installs it)"));
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    out.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        Self { stdin: child.stdin.take(), child, out }
    }

    fn count(&self, needle: &str) -> usize {
        self.out.lock().unwrap().matches(needle).count()
    }

    /// Waits until `needle` appears `n` times in its output.
    async fn wait_for(&self, needle: &str, n: usize) {
        let out = self.out.clone();
        wait_until(&format!("{n} x {needle:?}"), WAIT, || out.lock().unwrap().matches(needle).count() >= n).await;
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..2000 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the process did not exit: {}", self.out.lock().unwrap());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of data (never starting with a letter OpenSSL reads as a command).
fn line(tag: usize, len: usize) -> String {
    let body: String = (0..len).map(|i| char::from(b'a' + ((i * 7 + tag) % 26) as u8)).collect();
    format!("{tag}-{body}")
}

/// Reads from `s` until `want` has arrived whole.
async fn read_line_of(s: &mut TcpStream, want: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("data in time").unwrap();
        assert!(n > 0, "EOF before {want:?}; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

/// An unused loopback port for a process that binds its own.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_client_to_s2ds_with_key_updates_from_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (openssl_identity(dir.path(), "s2ds"), openssl_identity(dir.path(), "openssl"));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay =
        S2ds::start(dir.path(), "server", &s2ds_yaml("tls-server", &ours, &theirs, l.local_addr().unwrap())).await;
    let at = relay.listeners().await[0];
    let mut client = Proc::spawn(
        Command::new("openssl")
            .args(["s_client", "-connect", &at.to_string(), "-tls1_3", "-verify_return_error", "-msg"])
            .arg("-cert")
            .arg(&theirs.cert)
            .arg("-key")
            .arg(&theirs.key)
            .arg("-CAfile")
            .arg(&ours.cert),
        "s_client",
    );
    let (mut target, _) = tokio::time::timeout(WAIT, l.accept()).await.expect("relayed after the handshake").unwrap();
    for round in 0..6 {
        let up = line(round, 3000 + round * 1000);
        client.type_line(&up);
        read_line_of(&mut target, &up).await;
        // update_requested, then not requested: s2ds follows OpenSSL's keys and answers with its own.
        let before = client.count("KEYUPDATE");
        client.type_line(if round % 2 == 0 { "K" } else { "k" });
        client.wait_for("KEYUPDATE", before + 1).await;
        let down = line(100 + round, 2000);
        target.write_all(format!("{down}\n").as_bytes()).await.unwrap();
        client.wait_for(&down, 1).await;
    }
    // Three update_requested, each answered by a KeyUpdate of ours (OpenSSL
    // itself does not insist on the answer).
    client.wait_for(OUR_KEY_UPDATE, 3).await;
    // close_notify from OpenSSL ends the upload; ours ends the download.
    client.close_stdin();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, target.read_to_end(&mut rest)).await.expect("EOF in time").unwrap();
    target.shutdown().await.unwrap();
    assert!(client.wait_exit().await.success(), "s_client failed");
    assert_eq!(relay.metric("s2ds_tls_handshake_failures_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2ds_to_openssl_server_with_key_updates_from_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (openssl_identity(dir.path(), "s2ds"), openssl_identity(dir.path(), "openssl"));
    let port = free_port();
    // s_server reports a key update with printf: line-buffered, so that the
    // report arrives when it happens (the test waits for it before typing on).
    let mut server = Proc::spawn(
        Command::new("stdbuf")
            .args(["-oL", "openssl", "s_server", "-accept", &format!("127.0.0.1:{port}"), "-tls1_3", "-naccept", "1"])
            .args(["-Verify", "1", "-verify_return_error", "-msg"])
            .arg("-cert")
            .arg(&theirs.cert)
            .arg("-key")
            .arg(&theirs.key)
            .arg("-CAfile")
            .arg(&ours.cert),
        "s_server",
    );
    server.wait_for("ACCEPT", 1).await;
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let relay = S2ds::start(dir.path(), "client", &s2ds_yaml("tls-client", &ours, &theirs, target)).await;
    let mut app = TcpStream::connect(relay.listeners().await[0]).await.unwrap();
    for round in 0..6 {
        let up = line(round, 2500 + round * 900);
        app.write_all(format!("{up}\n").as_bytes()).await.unwrap();
        server.wait_for(&up, 1).await;
        let before = server.count("SSL_do_handshake -> 1");
        server.type_line(if round % 2 == 0 { "K" } else { "k" });
        server.wait_for("SSL_do_handshake -> 1", before + 1).await;
        let down = line(200 + round, 1800);
        server.type_line(&down);
        read_line_of(&mut app, &down).await;
    }
    server.wait_for(OUR_KEY_UPDATE, 3).await;
    // The application's EOF becomes close_notify; OpenSSL then closes too.
    app.shutdown().await.unwrap();
    server.wait_for("DONE", 1).await;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, app.read_to_end(&mut rest)).await.expect("EOF in time").unwrap();
    assert!(server.wait_exit().await.success(), "s_server failed");
    assert_eq!(relay.metric("s2ds_tls_handshake_failures_total").await, 0.0);
}

fn stunnel_conf(
    dir: &Path,
    name: &str,
    client: bool,
    accept: u16,
    connect: SocketAddr,
    me: &Pem,
    peer: &Pem,
) -> PathBuf {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\nsyslog = no\ndebug = notice\nsslVersionMin = TLSv1.3\n\
             cert = {}\nkey = {}\nCAfile = {}\nverifyPeer = yes\nclient = {}\n\
             [relay]\naccept = 127.0.0.1:{accept}\nconnect = {connect}\n",
            me.cert.display(),
            me.key.display(),
            peer.cert.display(),
            if client { "yes" } else { "no" },
        ),
    )
    .unwrap();
    conf
}

fn stunnel() -> &'static str {
    if Command::new("stunnel4").arg("-version").output().is_ok() { "stunnel4" } else { "stunnel" }
}

/// Starts Stunnel on `conf` and waits until it says it is configured (a
/// probe connection would be relayed, and reach the target).
async fn start_stunnel(conf: &Path) -> Proc {
    let p = Proc::spawn(Command::new(stunnel()).arg(conf), "stunnel");
    p.wait_for("Configuration successful", 1).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stunnel_client_to_s2ds() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (openssl_identity(dir.path(), "s2ds"), openssl_identity(dir.path(), "stunnel"));
    // Stunnel has no TLS half-close: the directions are exchanged in turn (see exchange_target).
    let (target, mut rx) = exchange_target(64 * MIB, 21, 64 * MIB).await;
    let relay = S2ds::start(dir.path(), "server", &s2ds_yaml("tls-server", &ours, &theirs, target)).await;
    let port = free_port();
    let conf = stunnel_conf(dir.path(), "c", true, port, relay.listeners().await[0], &theirs, &ours);
    let _stunnel = start_stunnel(&conf).await;
    let at: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    exchange_checked(at, &mut rx, 64 * MIB, 64 * MIB, 21).await;
    assert_eq!(relay.metric("s2ds_tls_handshake_failures_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2ds_to_stunnel_server() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (openssl_identity(dir.path(), "s2ds"), openssl_identity(dir.path(), "stunnel"));
    // Stunnel has no TLS half-close: the directions are exchanged in turn (see exchange_target).
    let (target, mut rx) = exchange_target(64 * MIB, 22, 64 * MIB).await;
    let port = free_port();
    let conf = stunnel_conf(dir.path(), "s", false, port, target, &theirs, &ours);
    let _stunnel = start_stunnel(&conf).await;
    let at: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let relay = S2ds::start(dir.path(), "client", &s2ds_yaml("tls-client", &ours, &theirs, at)).await;
    exchange_checked(relay.listeners().await[0], &mut rx, 64 * MIB, 64 * MIB, 22).await;
    assert_eq!(relay.metric("s2ds_tls_handshake_failures_total").await, 0.0);
}
