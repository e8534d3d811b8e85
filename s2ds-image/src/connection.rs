//! One relayed connection: the target connected, the TLS handshake, the
//! relay (ours, or rustls's record layer with `tls.recordLayer: rustls`),
//! and how the sockets close.
//!
//! A connection that cannot be relayed (no target, target down, TLS
//! failure) is closed with a reset and counted; nothing else is affected.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::config::{Mode, RecordLayer};
use crate::endpoint::Endpoint;
use crate::listener::Shared;
use crate::metrics::{ListenerMetrics, reason};
use crate::relay::tls::{TlsState, tls_error};
use crate::relay::{DirectionCounters, RelayOptions, rustls_io, splice, tls_io};
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
    let c = Conn {
        lm,
        opts: RelayOptions { buffer_bytes: state.config.buffer_bytes, limiter: shared.limiter.clone() },
        counters: DirectionCounters { to_target: lm.to_target.clone(), to_client: lm.to_client.clone() },
        kernel_tls: kernel_tls(&state.config),
        record_layer: state.config.tls.as_ref().map_or(RecordLayer::S2ds, |t| t.record_layer),
    };
    match (state.config.mode, &state.acceptor, &state.connector) {
        (Mode::Plain, _, _) => {
            let Some(out) = connect(&target, lm).await else {
                return;
            };
            let _open = OpenGuard::new(lm);
            finish(splice::bidirectional(&inbound, &out, &c.opts, &c.counters).await, &inbound, &out);
        }
        (Mode::TlsServer, Some(config), _) => c.tls_server(config, inbound, &target).await,
        (Mode::TlsClient, _, Some(config)) => c.tls_client(config, inbound, &target).await,
        _ => {
            // Unreachable by construction (Server builds the TLS side per mode).
            warn!("TLS mode without a TLS configuration; refusing");
            lm.refused(reason::TLS_HANDSHAKE);
        }
    }
}

/// How a relay ended: after both directions ended with a real end of data,
/// the sockets close normally; after anything else they reset.
fn finish(result: io::Result<(u64, u64)>, a: &TcpStream, b: &TcpStream) {
    match result {
        Ok((up, down)) => {
            for s in [a, b] {
                if let Err(e) = reset_on_close(s, false) {
                    debug!(error = %e, "cannot clear SO_LINGER; the close will be a reset");
                }
            }
            debug!(up, down, "closed");
        }
        Err(e) => debug!(error = %e, "closed with an error; both connections reset"),
    }
}

/// What one TLS connection's work needs.
struct Conn<'a> {
    lm: &'a ListenerMetrics,
    opts: RelayOptions,
    counters: DirectionCounters,
    kernel_tls: bool,
    record_layer: RecordLayer,
}

impl Conn<'_> {
    /// Producer side: TLS from the peer gateway on `inbound`, then the target.
    async fn tls_server(&self, config: &Arc<rustls::ServerConfig>, inbound: TcpStream, target: &Endpoint) {
        let (lm, opts, counters) = (self.lm, &self.opts, &self.counters);
        if self.record_layer == RecordLayer::Rustls {
            let accepted = tokio_rustls::TlsAcceptor::from(config.clone()).accept(inbound);
            let Some(mut tls) = self.handshake(async { accepted.await.map(tokio_rustls::TlsStream::from) }).await
            else {
                return;
            };
            let Some(out) = connect(target, lm).await else {
                return;
            };
            let _open = OpenGuard::new(lm);
            let r = rustls_io::relay(&mut tls, &out, opts, &counters.to_target, &counters.to_client).await;
            return finish(r, tls.get_ref().0, &out);
        }
        let conn = match UnbufferedServerConnection::new(config.clone()) {
            Ok(c) => c,
            Err(e) => return handshake_failed(lm, &tls_error(e)),
        };
        let mut st = TlsState::new(conn, opts.buffer_bytes);
        st.kernel_tls = self.kernel_tls;
        if self.handshake(tls_io::handshake(&mut st, &inbound, &counters.to_target)).await.is_none() {
            return;
        }
        let Some(out) = connect(target, lm).await else {
            return;
        };
        let _open = OpenGuard::new(lm);
        let r = tls_io::relay(st, &inbound, &out, &opts.limiter, &counters.to_target, &counters.to_client).await;
        finish(r, &inbound, &out);
    }

    /// Consumer side: the target first, TLS to it, then the relay.
    async fn tls_client(&self, config: &Arc<rustls::ClientConfig>, inbound: TcpStream, target: &Endpoint) {
        let (lm, opts, counters) = (self.lm, &self.opts, &self.counters);
        let Some(out) = connect(target, lm).await else {
            return;
        };
        if self.record_layer == RecordLayer::Rustls {
            let connected = tokio_rustls::TlsConnector::from(config.clone()).connect(target.server_name(), out);
            let Some(mut tls) = self.handshake(async { connected.await.map(tokio_rustls::TlsStream::from) }).await
            else {
                return;
            };
            let _open = OpenGuard::new(lm);
            let r = rustls_io::relay(&mut tls, &inbound, opts, &counters.to_client, &counters.to_target).await;
            return finish(r.map(|(down, up)| (up, down)), &inbound, tls.get_ref().0);
        }
        let conn = match UnbufferedClientConnection::new(config.clone(), target.server_name()) {
            Ok(c) => c,
            Err(e) => return handshake_failed(lm, &tls_error(e)),
        };
        let mut st = TlsState::new(conn, opts.buffer_bytes);
        st.kernel_tls = self.kernel_tls;
        if self.handshake(tls_io::handshake(&mut st, &out, &counters.to_client)).await.is_none() {
            return;
        }
        let _open = OpenGuard::new(lm);
        let r = tls_io::relay(st, &out, &inbound, &opts.limiter, &counters.to_client, &counters.to_target).await;
        finish(r.map(|(down, up)| (up, down)), &inbound, &out);
    }

    /// Runs a handshake with the time limit; a failure is counted and
    /// logged, and is `None`.
    async fn handshake<T>(&self, fut: impl Future<Output = io::Result<T>>) -> Option<T> {
        let r =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, fut).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
        r.map_err(|e| handshake_failed(self.lm, &e)).ok()
    }
}

/// Whether connections should be handed to kernel TLS: asked for by the
/// config (never with rustls's record layer) and supported here (see
/// [`crate::relay::ktls::support`]).
fn kernel_tls(config: &crate::config::Config) -> bool {
    config.tls.as_ref().is_some_and(|t| t.kernel_tls && t.record_layer == RecordLayer::S2ds)
        && crate::relay::ktls::support().is_ok()
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
