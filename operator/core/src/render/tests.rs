//! Snapshots of every renderer, and the real programs accepting what we render:
//! `haproxy -c`, `nginx -t`, and a stunnel client/server pair relaying bytes through TLS with
//! pinned certificates.

use std::{
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use scistream_api::{Endpoint, Implementation, Rate};

use super::*;
use crate::relay::{NodeRelay, RelayMode, Route};

pub(super) fn ep(s: &str) -> Endpoint {
    s.parse().unwrap()
}

pub(super) fn relay(mode: RelayMode, listens: &[&str], targets: &[&str], rate: u64) -> NodeRelay {
    NodeRelay {
        node: "gw-a".into(),
        mode,
        routes: listens
            .iter()
            .zip(targets)
            .enumerate()
            .map(|(index, (l, t))| Route { index, listen: ep(l), target: ep(t) })
            .collect(),
        rate: Rate::from_bps(rate),
    }
}

pub(super) fn input<'a>(relay: &'a NodeRelay, paths: &'a Paths, metrics: Option<&'a Endpoint>) -> RenderInput<'a> {
    RenderInput {
        stream_id: "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d",
        relay,
        paths,
        metrics,
        drain_seconds: 25,
        nginx_stream_module: Some("/usr/lib/nginx/modules/ngx_stream_module.so"),
        s2ds: &scistream_api::S2dsSettings::DEFAULT,
    }
}

fn sample() -> NodeRelay {
    relay(
        RelayMode::TlsServer,
        &["198.51.100.1:5100", "198.51.100.1:5101"],
        &["10.1.0.1:7000", "[2001:db8::5]:7000"],
        10_000_000_000,
    )
}

#[test]
fn snapshots() {
    let paths = Paths::default();
    let metrics = ep("198.51.100.1:9100");
    let tls = sample();
    let plain = NodeRelay { mode: RelayMode::Plain, ..sample() };
    insta::assert_snapshot!("s2ds", render(Implementation::S2ds, &input(&tls, &paths, Some(&metrics))).text);
    insta::assert_snapshot!("haproxy", render(Implementation::Haproxy, &input(&plain, &paths, Some(&metrics))).text);
    insta::assert_snapshot!("nginx", render(Implementation::Nginx, &input(&plain, &paths, Some(&metrics))).text);
    insta::assert_snapshot!("stunnel", render(Implementation::Stunnel, &input(&tls, &paths, Some(&metrics))).text);
}

#[test]
fn every_implementation_is_probed_on_its_health_port_only() {
    let paths = Paths::default();
    let metrics = ep("198.51.100.1:9100");
    for implementation in
        [Implementation::S2ds, Implementation::Haproxy, Implementation::Nginx, Implementation::Stunnel]
    {
        assert!(needs_health_port(implementation));
        let mode = if implementation == Implementation::Stunnel { RelayMode::TlsClient } else { RelayMode::Plain };
        let r = NodeRelay { mode, ..sample() };
        let health = render(implementation, &input(&r, &paths, Some(&metrics))).health;
        let probed = match &health {
            Some(Health::Http(e) | Health::Tcp(e)) => e,
            None => panic!("{implementation:?} renders no health listener"),
        };
        assert_eq!(probed, &metrics, "{implementation:?}");
        assert!(r.routes.iter().all(|route| &route.listen != probed), "{implementation:?} probes a data listener");
        // Without a port for it, no probe at all rather than one through the data path.
        assert_eq!(render(implementation, &input(&r, &paths, None)).health, None, "{implementation:?}");
    }
}

#[test]
fn s2ds_plain_has_no_tls_and_unlimited_rate_is_absent() {
    let paths = Paths::default();
    let r = relay(RelayMode::Plain, &["127.0.0.1:5100"], &["127.0.0.1:7000"], 0);
    let text = render(Implementation::S2ds, &input(&r, &paths, None)).text;
    assert!(!text.contains("tls:") && !text.contains("rateBitsPerSecond"), "{text}");
}

/// Only s2ds has a command that waits for its own readiness, and only with a health listener
/// to ask; it runs the image's binary with the relay's own config.
#[test]
fn only_s2ds_with_a_health_listener_waits_for_its_readiness_at_start() {
    let paths = Paths::default();
    let metrics = ep("198.51.100.1:9100");
    let r = NodeRelay { mode: RelayMode::Plain, ..sample() };
    let s2ds = render(Implementation::S2ds, &input(&r, &paths, Some(&metrics)));
    let mut expected = vec![s2ds::BINARY.to_owned(), "wait-ready".to_owned()];
    expected.extend(s2ds.args.iter().cloned());
    assert_eq!(s2ds.ready_command, Some(expected));
    assert_eq!(render(Implementation::S2ds, &input(&r, &paths, None)).ready_command, None);
    for implementation in [Implementation::Haproxy, Implementation::Nginx, Implementation::Stunnel] {
        let r = NodeRelay { mode: RelayMode::Plain, ..sample() };
        assert_eq!(
            render(implementation, &input(&r, &paths, Some(&metrics))).ready_command,
            None,
            "{implementation:?}"
        );
    }
    // The image puts its binary where the hook runs it.
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../s2ds-image/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(text.contains(&format!("ENTRYPOINT [\"{}\"]", s2ds::BINARY)), "{}: {text}", dockerfile.display());
}

pub(super) fn temp_paths(dir: &Path) -> Paths {
    Paths {
        config_dir: dir.display().to_string(),
        cert_file: dir.join("tls.crt").display().to_string(),
        key_file: dir.join("tls.key").display().to_string(),
        peer_cert_file: dir.join("peer.crt").display().to_string(),
        run_dir: dir.display().to_string(),
    }
}

pub(super) fn program(name: &str) -> Option<String> {
    ["/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"].iter().map(|d| format!("{d}{name}")).find(|p| Path::new(p).exists())
}

pub(super) fn require(name: &str) -> String {
    program(name).unwrap_or_else(|| panic!("{name} is not installed; run kind-tests/setup.sh"))
}

pub(super) fn write_rendered(dir: &Path, rendered: &Rendered) {
    std::fs::write(dir.join(rendered.file_name), &rendered.text).unwrap();
}

#[test]
fn haproxy_accepts_the_config() {
    let haproxy = require("haproxy");
    let dir = tempfile::tempdir().unwrap();
    let paths = temp_paths(dir.path());
    let r = relay(RelayMode::Plain, &["127.0.0.1:5100", "127.0.0.1:5101"], &["127.0.0.1:7000", "[::1]:7000"], 0);
    let rendered = render(Implementation::Haproxy, &input(&r, &paths, None));
    write_rendered(dir.path(), &rendered);
    let out = Command::new(haproxy).args(["-c", "-f"]).arg(dir.path().join(rendered.file_name)).output().unwrap();
    assert!(
        out.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: a fixed `maxconn 20000` made HAProxy refuse to start ("Cannot raise FD limit
/// to 50017") under an open-files limit of 20000, as on the e2e machines.
#[test]
fn haproxy_starts_under_a_modest_open_files_limit() {
    let haproxy = require("haproxy");
    let dir = tempfile::tempdir().unwrap();
    let paths = temp_paths(dir.path());
    let (listen, target) = (free_port(), free_port());
    let r = relay(RelayMode::Plain, &[&format!("127.0.0.1:{listen}")], &[&format!("127.0.0.1:{target}")], 0);
    let rendered = render(Implementation::Haproxy, &input(&r, &paths, None));
    write_rendered(dir.path(), &rendered);
    let mut child = Reaper::spawn(
        Command::new("sh")
            .args(["-c", "ulimit -n 4096 && exec \"$0\" \"$@\"", &haproxy])
            .args(&rendered.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(listen, &mut child.0);
}

#[test]
fn nginx_accepts_the_config() {
    let nginx = require("nginx");
    let dir = tempfile::tempdir().unwrap();
    let paths = temp_paths(dir.path());
    let r =
        relay(RelayMode::Plain, &["127.0.0.1:5100", "127.0.0.1:5101"], &["127.0.0.1:7000", "[::1]:7000"], 8_000_000);
    let rendered = render(Implementation::Nginx, &input(&r, &paths, None));
    write_rendered(dir.path(), &rendered);
    let out = Command::new(nginx)
        .args(["-t", "-p"])
        .arg(dir.path())
        .args(["-e", "stderr", "-c"])
        .arg(dir.path().join(rendered.file_name))
        .output()
        .unwrap();
    assert!(out.status.success(), "nginx -t: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a relay in a process group of its own and kills the whole group when dropped, so a
/// test (failing or not) leaves no process behind. Regression: killing only the child left
/// Nginx's worker processes running, still listening, once per test run.
pub(super) struct Reaper(pub(super) Child);

impl Reaper {
    pub(super) fn spawn(command: &mut Command) -> Reaper {
        use std::os::unix::process::CommandExt as _;
        Reaper(command.process_group(0).spawn().unwrap())
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(super) fn wait_listening(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("relay exited early: {status}");
        }
        assert!(Instant::now() < deadline, "nothing listens on {port} after 10s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn self_signed(dir: &Path, name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.join("tls.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    cert.pem()
}

mod probes;

#[test]
fn s2ds_tls_carries_the_gateways_record_layer_and_kernel_tls_only_when_set() {
    use scistream_api::{RecordLayer, S2dsSettings};
    let paths = Paths::default();
    let tls = relay(RelayMode::TlsServer, &["127.0.0.1:5100"], &["127.0.0.1:7000"], 0);
    let plain = relay(RelayMode::Plain, &["127.0.0.1:5100"], &["127.0.0.1:7000"], 0);
    let rustls = S2dsSettings { record_layer: RecordLayer::Rustls, ..S2dsSettings::DEFAULT };
    let userspace = S2dsSettings { kernel_tls: Some(false), ..S2dsSettings::DEFAULT };
    let cases: [(&NodeRelay, &S2dsSettings, &[&str], &[&str]); 4] = [
        (&tls, &S2dsSettings::DEFAULT, &["tls:"], &["recordLayer", "kernelTls"]),
        (&tls, &rustls, &["recordLayer: rustls"], &["kernelTls"]),
        (&tls, &userspace, &["kernelTls: false"], &["recordLayer"]),
        (&plain, &rustls, &[], &["tls:", "recordLayer"]),
    ];
    for (relay, s2ds, present, absent) in cases {
        let text = render(Implementation::S2ds, &RenderInput { s2ds, ..input(relay, &paths, None) }).text;
        for p in present {
            assert!(text.contains(p), "{p} in\n{text}");
        }
        for a in absent {
            assert!(!text.contains(a), "no {a} in\n{text}");
        }
    }
}
