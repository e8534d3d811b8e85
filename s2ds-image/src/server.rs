//! A relay serving one stream: its [`StreamRelay`] and the metrics endpoint.
//!
//! The server owns the handles its parts share and hands each part only what it needs: the
//! stream relay owns the listeners and connections, the HTTP endpoint gets the metrics and
//! the [`Readiness`] (through [`http::Single`]), the drain goes through the stream relay.
//! None of them knows the server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info};

use crate::Error;
use crate::config::Config;
use crate::drain::DrainReport;
use crate::http;
use crate::listener;
use crate::metrics::Metrics;
use crate::stream::StreamRelay;

/// A running relay.
pub struct Server {
    relay: StreamRelay,
    metrics_stop: CancellationToken,
    metrics_addr: Option<SocketAddr>,
}

impl Server {
    /// Loads TLS material, binds every listener and the metrics address, then starts
    /// accepting. On any error nothing stays bound. Tasks run in the caller's span (the
    /// relay's `stream` span). `workers`: see [`StreamRelay::start`].
    pub async fn start(config: Config, workers: Vec<Handle>) -> Result<Self, Error> {
        let metrics_listener = match config.metrics_address {
            Some(a) => Some(listener::bind(a).map_err(|source| Error::Bind { addr: a, source })?),
            None => None,
        };
        let (mode, targets) = (config.mode, config.targets.len());
        let relay = StreamRelay::start(config.clone(), workers, Metrics::new(&config.stream_id))?;
        let metrics_stop = CancellationToken::new();
        let metrics_addr = match metrics_listener {
            Some(l) => {
                let a = l.local_addr().ok();
                let single = http::Single { metrics: relay.metrics().clone(), readiness: relay.readiness().clone() };
                let serving = http::serve(Arc::new(single), l, metrics_stop.clone());
                tokio::spawn(serving.in_current_span());
                a
            }
            None => None,
        };
        info!(mode = mode.as_str(), listeners = ?relay.readiness().listeners(), targets, metrics = ?metrics_addr, "ready");
        Ok(Self { relay, metrics_stop, metrics_addr })
    }

    /// Where `/metrics` is actually served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Configured and actually bound address of each listener.
    pub fn bound_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.relay.readiness().listeners()
    }

    /// The running config.
    pub fn config(&self) -> Config {
        self.relay.config()
    }

    /// Applies a new config without touching established connections. `streamId`, `mode`
    /// and `metricsAddress` need a restart; a reload that changes them is refused. Listeners
    /// that appear are bound, those that disappear stop accepting (their connections
    /// continue).
    pub async fn reload(&self, config: Config) -> Result<(), Error> {
        if self.relay.config().metrics_address != config.metrics_address {
            self.reload_counted(false);
            return Err(Error::NeedsRestart("metricsAddress"));
        }
        self.relay.reload(config).await
    }

    /// Counts a reload attempt (a config that could not even be read is one).
    pub fn reload_counted(&self, ok: bool) {
        self.relay.metrics().reload(if ok { "ok" } else { "error" });
    }

    /// Stops accepting and drains; see [`crate::drain`].
    pub async fn shutdown(self, grace: std::time::Duration) -> DrainReport {
        let report = self.relay.shutdown(grace).await;
        self.metrics_stop.cancel();
        report
    }
}
