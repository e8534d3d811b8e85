//! The real HAProxy, Nginx and Stunnel running what we render: their health listeners answer
//! probes while the data target sees no connection, and data still flows through the data
//! listeners. Regression: the relays were probed on their first data listener, so every
//! probe period the producer application received an empty connection (and failed on it).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use scistream_api::Implementation;

use super::{Reaper, ep, free_port, input, program, relay, require, self_signed, temp_paths, wait_listening};
use crate::{
    relay::RelayMode,
    render::{Health, Rendered, render},
};

/// Probes per health listener: more than enough to show up at the target if forwarded.
const PROBES: usize = 5;

/// The data target (the producer application): echoes every connection and counts them.
struct Target {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Target {
    fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().take(64).flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Target { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Sends `len` bytes through `port` and checks they come back (echoed by the target).
fn roundtrip(port: u16, len: u32) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let reader = {
        let mut conn = conn.try_clone().unwrap();
        let len = payload.len();
        std::thread::spawn(move || {
            let mut got = vec![0u8; len];
            conn.read_exact(&mut got).map(|()| got)
        })
    };
    conn.write_all(&payload).unwrap();
    assert_eq!(reader.join().unwrap().expect("echo through the relay"), payload);
}

/// The kubelet's TCP probe: connect, close. Returns what the listener sent before closing
/// (when `read` is set).
fn tcp_probe(port: u16, read: bool) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("the health listener accepts");
    let mut text = String::new();
    if read {
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conn.read_to_string(&mut text).unwrap();
    }
    text
}

/// The kubelet's HTTP probe; returns the status line.
fn http_probe(port: u16, path: &str) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("the health listener accepts");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text.lines().next().unwrap_or_default().to_owned()
}

/// Renders `implementation` for one route to `target` with a health port, in `dir`.
fn rendered(implementation: Implementation, dir: &Path, mode: RelayMode, target: u16) -> (Rendered, u16, u16) {
    let (listen, health) = (free_port(), free_port());
    let r = relay(mode, &[&format!("127.0.0.1:{listen}")], &[&format!("127.0.0.1:{target}")], 0);
    let health_ep = ep(&format!("127.0.0.1:{health}"));
    let paths = temp_paths(dir);
    let out = render(implementation, &input(&r, &paths, Some(&health_ep)));
    std::fs::write(dir.join(out.file_name), &out.text).unwrap();
    (out, listen, health)
}

fn spawn(program: &str, pre: &[&str], rendered: &Rendered) -> Reaper {
    Reaper::spawn(Command::new(program).args(pre).args(&rendered.args).stdout(Stdio::null()).stderr(Stdio::null()))
}

#[test]
fn haproxy_answers_probes_itself() {
    let haproxy = require("haproxy");
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start();
    let (out, listen, health) = rendered(Implementation::Haproxy, dir.path(), RelayMode::Plain, target.port);
    assert_eq!(out.health, Some(Health::Http(ep(&format!("127.0.0.1:{health}")))));
    let mut child = spawn(&haproxy, &[], &out);
    wait_listening(health, &mut child.0);
    for _ in 0..PROBES {
        assert!(http_probe(health, "/readyz").contains(" 200"), "readiness");
        assert!(http_probe(health, "/healthz").contains(" 200"), "liveness");
        tcp_probe(health, false);
    }
    assert!(http_probe(health, "/anything-else").contains(" 404"));
    roundtrip(listen, 100_000);
    assert_eq!(target.accepted(), 1, "the target saw a connection besides the data's: a probe went through");
}

#[test]
fn nginx_answers_probes_itself() {
    let nginx = require("nginx");
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start();
    let (out, listen, health) = rendered(Implementation::Nginx, dir.path(), RelayMode::Plain, target.port);
    assert_eq!(out.health, Some(Health::Tcp(ep(&format!("127.0.0.1:{health}")))));
    let prefix = dir.path().display().to_string();
    let mut child = spawn(&nginx, &["-p", &prefix], &out);
    wait_listening(health, &mut child.0);
    for _ in 0..PROBES {
        assert_eq!(tcp_probe(health, true), "ok\n");
        tcp_probe(health, false);
    }
    roundtrip(listen, 100_000);
    assert_eq!(target.accepted(), 1, "the target saw a connection besides the data's: a probe went through");
    // Nothing of it outlives the test: its worker processes held both listeners.
    drop(child);
    for port in [health, listen] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "port {port} still served after the relay was reaped");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A stunnel pair relaying bytes through TLS with pinned certificates, both sides probed on
/// their health ports (the consumer side's is the one that used to reach the application:
/// its data listener opens TLS to the producer side, which then connects to the target).
#[test]
fn stunnel_pair_relays_bytes_and_answers_probes_itself() {
    let stunnel =
        program("stunnel4").or_else(|| program("stunnel")).expect("stunnel is not installed; run kind-tests/setup.sh");
    let target = Target::start();
    let (server_dir, client_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server_cert = self_signed(server_dir.path(), "producer-gw");
    let client_cert = self_signed(client_dir.path(), "consumer-gw");
    std::fs::write(server_dir.path().join("peer.crt"), &client_cert).unwrap();
    std::fs::write(client_dir.path().join("peer.crt"), &server_cert).unwrap();
    let (server, wan, server_health) =
        rendered(Implementation::Stunnel, server_dir.path(), RelayMode::TlsServer, target.port);
    let (client, lan, client_health) = rendered(Implementation::Stunnel, client_dir.path(), RelayMode::TlsClient, wan);
    assert_eq!(client.health, Some(Health::Tcp(ep(&format!("127.0.0.1:{client_health}")))));
    let mut server = spawn(&stunnel, &[], &server);
    let mut client = spawn(&stunnel, &[], &client);
    wait_listening(server_health, &mut server.0);
    wait_listening(client_health, &mut client.0);
    for _ in 0..PROBES {
        tcp_probe(server_health, false);
        tcp_probe(client_health, false);
    }
    roundtrip(lan, 100_000);
    assert_eq!(target.accepted(), 1, "the target saw a connection besides the data's: a probe went through");
}

/// The regression itself, shown with the old probe: a TCP connect to the consumer side's
/// data listener does reach the target (so the checks above can fail).
#[test]
fn a_probe_on_a_data_listener_reaches_the_target() {
    let haproxy = require("haproxy");
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start();
    let (out, listen, health) = rendered(Implementation::Haproxy, dir.path(), RelayMode::Plain, target.port);
    let mut child = spawn(&haproxy, &[], &out);
    wait_listening(health, &mut child.0);
    tcp_probe(listen, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while target.accepted() == 0 {
        assert!(std::time::Instant::now() < deadline, "a probe on the data listener never reached the target");
        std::thread::sleep(Duration::from_millis(10));
    }
}
