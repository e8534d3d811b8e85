//! Readiness and liveness probes: TCP connect, HTTP GET and exec, run from
//! inside the node's network namespace (the kubelet probes from the node).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::network::socket_in;

/// Where probes connect from and to by default.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// Namespace to probe from (`None`: this one).
    pub netns: Option<PathBuf>,
    /// Address used when the probe names no host (the pod's IP).
    pub pod_ip: IpAddr,
}

/// Probe timing with Kubernetes defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Delay before the first probe.
    pub initial_delay: Duration,
    /// Interval between probes.
    pub period: Duration,
    /// Timeout of one probe.
    pub timeout: Duration,
    /// Consecutive successes to pass.
    pub success_threshold: u32,
    /// Consecutive failures to fail.
    pub failure_threshold: u32,
}

/// Timing of `p` (defaults: 0 s delay, 10 s period, 1 s timeout, 1 success, 3 failures).
pub fn timing(p: &Probe) -> Timing {
    let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_millis(100)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_millis(100)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

/// Consecutive-result counting (pure): the verdict flips only after the
/// thresholds are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    /// Current verdict.
    pub ok: bool,
    successes: u32,
    failures: u32,
}

impl Tracker {
    /// Starts with verdict `ok` (readiness starts false, liveness true).
    pub fn new(ok: bool) -> Self {
        Tracker { ok, successes: 0, failures: 0 }
    }
    /// Records one result; returns the verdict.
    pub fn record(&mut self, success: bool, t: &Timing) -> bool {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= t.success_threshold {
                self.ok = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= t.failure_threshold {
                self.ok = false;
            }
        }
        self.ok
    }
}

fn port(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(i) => u16::try_from(*i).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

fn host(h: Option<&String>, target: &ProbeTarget) -> IpAddr {
    h.and_then(|h| h.parse().ok()).unwrap_or(target.pod_ip)
}

/// Runs `probe` once. `exec` runs an exec probe's command (exit 0 = success).
pub async fn run(
    probe: &Probe,
    c: &Container,
    target: &ProbeTarget,
    exec: &(dyn Fn(&[String]) -> tokio::process::Command + Sync),
) -> Result<(), String> {
    let t = timing(probe);
    let work = async {
        if let Some(tcp) = &probe.tcp_socket {
            let p = port(&tcp.port, c).ok_or("bad port")?;
            let addr = SocketAddr::new(host(tcp.host.as_ref(), target), p);
            let s = socket_in(target.netns.clone(), addr).await.map_err(|e| e.to_string())?;
            tokio::net::TcpSocket::from_std_stream(s.into())
                .connect(addr)
                .await
                .map_err(|e| format!("dial tcp {addr}: {e}"))?;
            Ok(())
        } else if let Some(http) = &probe.http_get {
            let p = port(&http.port, c).ok_or("bad port")?;
            let addr = SocketAddr::new(host(http.host.as_ref(), target), p);
            http_get(addr, http.path.as_deref().unwrap_or("/"), target).await
        } else if let Some(e) = &probe.exec {
            let cmd = e.command.clone().unwrap_or_default();
            let status = exec(&cmd).kill_on_drop(true).status().await.map_err(|e| e.to_string())?;
            if status.success() { Ok(()) } else { Err(format!("command exited with {status}")) }
        } else {
            Ok(())
        }
    };
    match tokio::time::timeout(t.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {:?}", t.timeout)),
    }
}

async fn http_get(addr: SocketAddr, path: &str, target: &ProbeTarget) -> Result<(), String> {
    let s = socket_in(target.netns.clone(), addr).await.map_err(|e| e.to_string())?;
    let mut stream = tokio::net::TcpSocket::from_std_stream(s.into())
        .connect(addr)
        .await
        .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    while n < buf.len() {
        let r = stream.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
        if r == 0 || buf[..n + r].contains(&b'\n') {
            n += r;
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("malformed HTTP response")?;
    if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {code}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_flips_on_thresholds() {
        let t = timing(&Probe { failure_threshold: Some(2), success_threshold: Some(1), ..Probe::default() });
        let mut tr = Tracker::new(false);
        assert!(tr.record(true, &t));
        assert!(tr.record(false, &t), "one failure is tolerated");
        assert!(!tr.record(false, &t));
        assert!(tr.record(true, &t));
    }

    #[test]
    fn defaults() {
        let t = timing(&Probe::default());
        assert_eq!((t.period, t.timeout, t.failure_threshold), (Duration::from_secs(10), Duration::from_secs(1), 3));
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_loopback() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((mut s, _)) = l.accept().await else { return };
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let code = if String::from_utf8_lossy(&b).contains("/bad") { 500 } else { 200 };
                let _ = s.write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let target = ProbeTarget { netns: None, pod_ip: "127.0.0.1".parse().expect("ip") };
        let c = Container::default();
        let exec = |_: &[String]| tokio::process::Command::new("true");
        let http = |path: &str| Probe {
            http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(port)),
                ..Default::default()
            }),
            ..Probe::default()
        };
        assert_eq!(run(&http("/ok"), &c, &target, &exec).await, Ok(()));
        assert!(run(&http("/bad"), &c, &target, &exec).await.expect_err("500").contains("500"));
        let tcp = Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                host: Some("127.0.0.1".into()),
                port: IntOrString::Int(i32::from(port)),
            }),
            ..Probe::default()
        };
        assert_eq!(run(&tcp, &c, &target, &exec).await, Ok(()));
    }
}
