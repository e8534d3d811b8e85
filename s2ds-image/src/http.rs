//! A tiny HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`.
//!
//! One request per connection (`Connection: close`), request head bounded
//! to 8 KiB and 5 s, so a slow or hostile scraper costs nothing. `/readyz`
//! answers 200 once every configured listener is bound (and not draining)
//! and lists `configured -> bound` addresses, one per line.
//!
//! It reads two handles and nothing else of the server: the metrics
//! registry and [`Readiness`], which the server updates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

use crate::metrics::Metrics;

const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/readyz` reports: whether every configured listener is bound (and
/// the relay not draining), and where each is bound.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    bound: Mutex<Vec<(SocketAddr, SocketAddr)>>,
}

impl Readiness {
    /// Ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// True while every configured listener is bound and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Listener `configured` is bound at `bound`.
    pub fn bound(&self, configured: SocketAddr, bound: SocketAddr) {
        if let Ok(mut b) = self.bound.lock() {
            b.push((configured, bound));
        }
    }

    /// Listener `configured` is gone.
    pub fn unbound(&self, configured: SocketAddr) {
        if let Ok(mut b) = self.bound.lock() {
            b.retain(|(c, _)| *c != configured);
        }
    }

    /// Configured and actually bound address of each listener.
    pub fn listeners(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.bound.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// What the endpoint serves: the metrics exposition and readiness, of one stream
/// ([`Single`]) or of every stream of a shared relay ([`crate::node::NodeRelay`]).
pub trait Status: Send + Sync + 'static {
    /// The OpenMetrics text exposition.
    fn metrics(&self) -> String;
    /// `/readyz` (`stream` is `None`) or `/readyz/STREAM`: ready or not, and the body that
    /// says why; `None` when there is no such stream.
    fn ready(&self, stream: Option<&str>) -> Option<(bool, String)>;
}

/// One stream's relay: its metrics and its readiness.
pub struct Single {
    /// The stream's metrics (the registry of the process).
    pub metrics: Arc<Metrics>,
    /// Its listeners.
    pub readiness: Arc<Readiness>,
}

impl Readiness {
    /// `configured -> bound`, one listener a line.
    pub fn describe(&self) -> String {
        self.listeners().iter().map(|(c, b)| format!("{c} -> {b}\n")).collect()
    }
}

impl Status for Single {
    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn ready(&self, stream: Option<&str>) -> Option<(bool, String)> {
        if stream.is_some_and(|s| s != self.metrics.stream()) {
            return None;
        }
        let ready = self.readiness.is_ready();
        Some((ready, format!("{}\n{}", if ready { "ready" } else { "not ready" }, self.readiness.describe())))
    }
}

/// Serves until `stop` is cancelled.
pub async fn serve(status: Arc<dyn Status>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let status = status.clone();
        let answered = async move {
            if let Err(e) = tokio::time::timeout(IO_TIMEOUT, answer(status.as_ref(), stream)).await {
                debug!(error = %e, "metrics request timed out");
            }
        };
        tokio::spawn(answered.in_current_span());
    }
}

/// Status, content type and body for a request path.
pub fn route(status: &dyn Status, path: &str) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let readyz = |stream| match status.ready(stream) {
        Some((true, body)) => ("200 OK", TEXT, body),
        Some((false, body)) => ("503 Service Unavailable", TEXT, body),
        None => ("404 Not Found", TEXT, format!("no stream {} here\n", stream.unwrap_or_default())),
    };
    match path {
        "/metrics" => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", status.metrics()),
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => readyz(None),
        p => match p.strip_prefix("/readyz/") {
            Some(stream) if !stream.is_empty() => readyz(Some(stream)),
            _ => ("404 Not Found", TEXT, "try /metrics, /healthz, /readyz or /readyz/STREAM\n".into()),
        },
    }
}

async fn answer(status: &dyn Status, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method == "GET" || method == "HEAD" {
        route(status, path)
    } else {
        ("405 Method Not Allowed", "text/plain", "GET only\n".into())
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        resp.push_str(&body);
    }
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}
