//! One relayed connection: the target connected, the TLS handshake, the
//! relay, and how the sockets close.
//!
//! A connection that cannot be relayed (no target, target down, TLS
//! failure) is closed with a reset and counted; nothing else is affected.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::config::Mode;
use crate::endpoint::Endpoint;
use crate::listener::Shared;
use crate::metrics::{ListenerMetrics, reason};
use crate::relay::tls::{TlsState, tls_error};
use crate::relay::{DirectionCounters, RelayOptions, splice, tls_io};
use crate::tls;

/// Time allowed for a TCP connect to a target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets TCP_NODELAY and keepalive (20 s idle, 5 s interval, 4 probes), and
/// makes closing the socket reset the connection (see [`reset_on_close`]).
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let ka =
        TcpKeepalive::new().with_time(Duration::from_secs(20)).with_interval(Duration::from_secs(5)).with_retries(4);
    SockRef::from(stream).set_tcp_keepalive(&ka)?;
    reset_on_close(stream, true)
}

/// With `on`, closing `stream` sends a reset (SO_LINGER 0) instead of a FIN.
///
/// Every relayed socket is set so from the start and lifted only when both
/// directions ended with a real end of data (their FINs already forwarded by
/// `shutdown`, which linger does not touch). So whatever else ends a
/// connection (an error, the drain deadline dropping it, SIGKILL of the whole
/// process, whose sockets the kernel closes) reaches the application as
/// ECONNRESET: a FIN from us would read as a complete stream. Lifting it
/// before a clean close matters: with linger 0 the kernel would discard data
/// still in the send buffer.
pub fn reset_on_close(stream: &TcpStream, on: bool) -> io::Result<()> {
    SockRef::from(stream).set_linger(on.then_some(Duration::ZERO))
}

/// Marks a connection open for its lifetime (gauge + duration histogram).
struct OpenGuard<'a> {
    lm: &'a ListenerMetrics,
    start: Instant,
}

impl<'a> OpenGuard<'a> {
    fn new(lm: &'a ListenerMetrics) -> Self {
        lm.open.inc();
        Self { lm, start: Instant::now() }
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.lm.open.dec();
        self.lm.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Relays the accepted connection `inbound` of listener `key`.
pub async fn handle(shared: &Shared, key: SocketAddr, lm: &ListenerMetrics, inbound: TcpStream) {
    let state = shared.state.load_full();
    if let Err(e) = tune(&inbound) {
        debug!(error = %e, "cannot set socket options on the accepted connection");
    }
    let Some(target) = state.config.target_for(key).cloned() else {
        lm.refused(reason::NO_TARGET);
        debug!("refused: no target configured");
        return;
    };
    let opts = RelayOptions { buffer_bytes: state.config.buffer_bytes, limiter: shared.limiter.clone() };
    let counters = DirectionCounters { to_target: lm.to_target.clone(), to_client: lm.to_client.clone() };
    let (result, outbound) = match (state.config.mode, &state.acceptor, &state.connector) {
        (Mode::Plain, _, _) => {
            let Some(out) = connect(&target, lm).await else {
                return;
            };
            let _open = OpenGuard::new(lm);
            (splice::bidirectional(&inbound, &out, &opts, &counters).await, out)
        }
        (Mode::TlsServer, Some(config), _) => {
            let conn = match UnbufferedServerConnection::new(config.clone()) {
                Ok(c) => c,
                Err(e) => return handshake_failed(lm, &tls_error(e)),
            };
            let mut st = TlsState::new(conn, opts.buffer_bytes);
            st.kernel_tls = kernel_tls(&state.config);
            if !handshake(lm, tls_io::handshake(&mut st, &inbound, &counters.to_target)).await {
                return;
            }
            let Some(out) = connect(&target, lm).await else {
                return;
            };
            let _open = OpenGuard::new(lm);
            (tls_io::relay(st, &inbound, &out, &opts.limiter, &counters.to_target, &counters.to_client).await, out)
        }
        (Mode::TlsClient, _, Some(config)) => {
            let Some(out) = connect(&target, lm).await else {
                return;
            };
            let conn = match UnbufferedClientConnection::new(config.clone(), target.server_name()) {
                Ok(c) => c,
                Err(e) => return handshake_failed(lm, &tls_error(e)),
            };
            let mut st = TlsState::new(conn, opts.buffer_bytes);
            st.kernel_tls = kernel_tls(&state.config);
            if !handshake(lm, tls_io::handshake(&mut st, &out, &counters.to_client)).await {
                return;
            }
            let _open = OpenGuard::new(lm);
            let r = tls_io::relay(st, &out, &inbound, &opts.limiter, &counters.to_client, &counters.to_target).await;
            (r.map(|(down, up)| (up, down)), out)
        }
        _ => {
            // Unreachable by construction (Server builds the TLS side per mode).
            warn!("TLS mode without a TLS configuration; refusing");
            lm.refused(reason::TLS_HANDSHAKE);
            return;
        }
    };
    match result {
        Ok((up, down)) => {
            // Both directions ended with a real end of data: close normally.
            for s in [&inbound, &outbound] {
                if let Err(e) = reset_on_close(s, false) {
                    debug!(error = %e, "cannot clear SO_LINGER; the close will be a reset");
                }
            }
            debug!(up, down, "closed");
        }
        Err(e) => debug!(error = %e, "closed with an error; both connections reset"),
    }
}

/// Whether connections should be handed to kernel TLS: asked for by the
/// config and supported here (see [`crate::relay::ktls::support`]).
fn kernel_tls(config: &crate::config::Config) -> bool {
    config.tls.as_ref().is_some_and(|t| t.kernel_tls) && crate::relay::ktls::support().is_ok()
}

/// Runs a handshake with the time limit; false (counted and logged) if it failed.
async fn handshake(lm: &ListenerMetrics, fut: impl Future<Output = io::Result<()>>) -> bool {
    let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, fut).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
    match r {
        Ok(()) => true,
        Err(e) => {
            handshake_failed(lm, &e);
            false
        }
    }
}

fn handshake_failed(lm: &ListenerMetrics, e: &io::Error) {
    lm.tls_failures.inc();
    if tls::is_pin_mismatch(e) {
        lm.refused(reason::PEER_CERT_MISMATCH);
        warn!(error = %e, "TLS peer refused: its certificate does not match the pin");
    } else {
        lm.refused(reason::TLS_HANDSHAKE);
        debug!(error = %e, "TLS handshake failed");
    }
}

/// Connects to `target` (every resolved address in turn), or counts the
/// refusal and returns `None`.
async fn connect(target: &Endpoint, lm: &ListenerMetrics) -> Option<TcpStream> {
    let attempt = async {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for addr in target.resolve().await? {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let r =
        tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
    match r {
        Ok(s) => {
            if let Err(e) = tune(&s) {
                debug!(error = %e, "cannot set socket options on the target connection");
            }
            Some(s)
        }
        Err(e) => {
            lm.refused(reason::TARGET_UNREACHABLE);
            warn!(%target, error = %e, "target unreachable; closing this connection only");
            None
        }
    }
}
