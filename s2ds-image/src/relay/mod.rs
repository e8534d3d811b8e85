//! Moving bytes between the accepted connection and the target.
//!
//! Three relays, same guarantees (no loss, no reordering, half-close
//! propagated, bounded memory, rate tokens taken before reading):
//! - [`splice`]: plain TCP to plain TCP through a kernel pipe, zero-copy;
//! - [`tls`] / [`tls_io`]: one side mutual TLS: rustls's unbuffered API for
//!   the handshake, then our record layer ([`record`], [`data`]) sealing and
//!   opening records in place;
//! - [`rustls_io`]: the same over rustls's own record layer (tokio-rustls),
//!   chosen with `tls.recordLayer: rustls`;
//! - [`copy`]: TCP-to-TCP userspace copy with one fixed buffer per
//!   direction, the fallback when splice is not possible.

pub mod check;
pub mod control;
pub mod copy;
pub mod data;
pub mod ktls;
pub mod ktls_io;
pub mod record;
pub mod rustls_io;
pub mod splice;
pub mod tls;
pub mod tls_io;
mod window;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::ratelimit::RateLimiter;

/// What a relay needs besides the two streams.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Per-direction buffer (copy) or pipe (splice) size.
    pub buffer_bytes: usize,
    /// The stream's shared rate limiter.
    pub limiter: Arc<RateLimiter>,
}

/// Byte counters of the two directions.
#[derive(Debug, Clone)]
pub struct DirectionCounters {
    /// Accepted side to target.
    pub to_target: Counter,
    /// Target to accepted side.
    pub to_client: Counter,
}

/// A connected pair of loopback TCP sockets (tests).
#[cfg(test)]
pub(crate) async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    (c, s)
}
