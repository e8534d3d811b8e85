//! Binding listeners and the accept loop.
//!
//! The accept loop never stops on an accept error (it logs, backs off
//! briefly on descriptor exhaustion, and continues). Each connection runs in
//! its own task ([`crate::connection`]), tracked for draining, inside a span
//! with `listener` and `peer` (under the relay's `stream` span). What the
//! loops and connections need is [`Shared`]: handles, not the server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn};

use crate::drain::Connections;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::state::State;

/// Listen backlog.
const BACKLOG: i32 = 1024;

/// What the accept loops and their connections share.
pub struct Shared {
    /// The current config; the server swaps it on reload, a connection
    /// reads it once, when accepted.
    pub state: ArcSwap<State>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The stream's rate limiter (re-rated in place on reload).
    pub limiter: Arc<RateLimiter>,
    /// The connection tasks, for the drain.
    pub connections: Connections,
}

/// Binds `addr` exactly (no wildcard unless configured), with SO_REUSEADDR
/// and IPV6_V6ONLY for IPv6 addresses.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Binds `n` sockets to `addr` with SO_REUSEPORT (one per worker thread;
/// the kernel spreads new connections over them). With port 0 the first
/// socket's port is reused for the others. Dropping the result unbinds.
pub fn bind_group(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if at.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(BACKLOG)?;
        let l: std::net::TcpListener = socket.into();
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Accepts on `listener` until `stop` is cancelled. `key` is the configured
/// bind address (it selects the target).
pub async fn accept_loop(
    shared: Arc<Shared>,
    key: SocketAddr,
    listener: std::net::TcpListener,
    stop: CancellationToken,
) {
    let lm = shared.metrics.listener(&key.to_string());
    // Registered here, with the reactor of the worker that runs this loop.
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(listener = %key, error = %e, "cannot register a listener");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                lm.total.inc();
                let span = info_span!("conn", listener = %key, %peer);
                let (shared2, lm2) = (shared.clone(), lm.clone());
                shared.connections.spawn(span, async move {
                    crate::connection::handle(&shared2, key, &lm2, stream).await;
                });
            }
            Err(e) => {
                warn!(listener = %key, error = %e, "accept failed");
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) {
                    // Out of descriptors/memory: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    debug!(listener = %key, "listener closed");
}
