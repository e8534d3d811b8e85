//! S2DS, the SciStream data server: relays TCP between listeners and
//! targets on a gateway node, plain (zero-copy `splice(2)`) or over mutual
//! TLS 1.3 with pinned peer certificates, with an aggregate rate limit,
//! Prometheus metrics, hot reload and graceful drain.
//!
//! Layout: [`config`] and [`endpoint`] (pure parsing/validation),
//! [`ratelimit`] (token bucket), [`tls`] (pinning), [`relay`] (splice,
//! copy, TLS), [`state`] (what a new connection reads), [`listener`]
//! (binding, accept loop), [`connection`] (one relayed connection),
//! [`drain`] (the connection set), [`http`] (metrics and readiness),
//! [`stream`] (one stream's listeners, state, limiter and connections),
//! [`server`] (one stream and its metrics endpoint: the per-stream relay),
//! [`node`] (every stream of a gateway node in one process: the shared
//! relay), [`reload`] (SIGHUP / file watch), [`wait`] (the postStart hook's
//! readiness wait), [`cli`]. Imports point one way: `server` and `node` use
//! `stream`, which uses `listener`, `http` and `drain`, which know nothing of
//! them.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod config;
pub mod connection;
pub mod control_plane;
pub mod drain;
pub mod endpoint;
pub mod http;
pub mod listener;
pub mod material;
pub mod metrics;
pub mod node;
pub mod ratelimit;
pub mod relay;
pub mod reload;
pub mod server;
pub mod state;
pub mod stream;
pub mod tls;
pub mod wait;

use std::net::SocketAddr;

/// Errors of the relay library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// TLS material is unreadable or inconsistent.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listener (or the metrics address) could not be bound.
    #[error("cannot bind {addr}; is another process using it, or is the address not on this node?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A reload tried to change a field that needs a restart.
    #[error("{0} changed; restart s2ds to apply it")]
    NeedsRestart(&'static str),
    /// A stream of a shared relay named its own metrics address.
    #[error(
        "metricsAddress: a stream of a shared relay is served on the relay's own metrics address (as /readyz/STREAM); leave it unset"
    )]
    OwnMetricsAddress,
    /// A stream of a shared relay asked for a listener another stream of it holds.
    #[error(
        "listeners: {addr} overlaps stream {holder}'s listener {theirs} on this relay; each stream needs ports of its own"
    )]
    ListenerTaken {
        /// The listener asked for.
        addr: SocketAddr,
        /// The stream holding it.
        holder: String,
        /// The holder's listener it overlaps.
        theirs: SocketAddr,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats an error with its chain of causes: `a: b: c`.
pub fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
