//! One stream's relay: its listeners, its TLS state, its rate limiter and its connections.
//!
//! A [`StreamRelay`] is what a stream owns inside an s2ds process, whether the process serves
//! that stream alone ([`crate::server::Server`]) or every stream of a gateway node
//! ([`crate::node::NodeRelay`]). It shares nothing with other streams but the worker
//! runtimes and the metrics registry (through its own labelled view), so one stream's
//! reload, failure or drain never touches another's sockets.
//!
//! Connections read the current [`State`] once, when accepted, so a reload (new targets,
//! rate, certificates) applies to new connections while established ones keep what they
//! started with. The rate limiter is re-rated in place, so a new rate applies to every
//! connection of the stream at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::Error;
use crate::config::{Config, RecordLayer};
use crate::drain::{Connections, DrainReport};
use crate::http::Readiness;
use crate::listener::{self, Shared};
use crate::material::Material;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::state::State;

struct ListenerHandle {
    stop: CancellationToken,
    /// The accept loops: each owns one socket of the listener's group, closed when it returns.
    loops: Vec<tokio::task::JoinHandle<()>>,
}

/// One stream's listeners and connections.
pub struct StreamRelay {
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    listeners: Mutex<HashMap<SocketAddr, ListenerHandle>>,
    workers: Vec<Handle>,
}

impl StreamRelay {
    /// Loads the TLS material, binds every listener, then starts accepting; on any error
    /// nothing stays bound. Series go to `metrics` (a view labelled with the stream). Tasks
    /// run in the caller's span.
    ///
    /// `workers` are the runtimes that carry connections (one single-threaded runtime per
    /// core: a connection and its two directions stay on one thread); each listener gets
    /// one SO_REUSEPORT socket per worker. Empty means the current runtime.
    pub fn start(config: Config, workers: Vec<Handle>, metrics: Metrics) -> Result<Self, Error> {
        Self::start_with(config, &Material::Disk, workers, metrics)
    }

    /// [`StreamRelay::start`], reading the files the config names from `material`.
    pub fn start_with(
        config: Config,
        material: &Material,
        mut workers: Vec<Handle>,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        if workers.is_empty() {
            workers.push(Handle::current());
        }
        let state = State::build_with(config, material)?;
        let mut bound = Vec::new();
        for addr in &state.config.listeners {
            let l = listener::bind_group(*addr, workers.len()).map_err(|source| Error::Bind { addr: *addr, source })?;
            bound.push((*addr, l));
        }
        log_tls_path(&state.config);
        let metrics = Arc::new(metrics);
        let limiter = Arc::new(RateLimiter::new(state.config.rate_bits_per_second, metrics.ratelimit_wait()));
        let shared =
            Arc::new(Shared { state: ArcSwap::from_pointee(state), metrics, limiter, connections: Connections::new() });
        let readiness = Arc::new(Readiness::default());
        let mut handles = HashMap::new();
        for (addr, l) in bound {
            handles.insert(addr, spawn_listener(&shared, &readiness, &workers, addr, l));
        }
        readiness.set_ready(true);
        Ok(Self { shared, readiness, listeners: Mutex::new(handles), workers })
    }

    /// The running config.
    pub fn config(&self) -> Config {
        self.shared.state.load().config.clone()
    }

    /// Whether every listener is bound, and where: what `/readyz` reports.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// This stream's metrics view.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Connections being relayed now.
    pub fn open_connections(&self) -> usize {
        self.shared.connections.len()
    }

    /// Applies a new config without touching established connections. `streamId` and
    /// `mode` need a new relay; a reload that changes them is refused. Listeners that
    /// appear are bound, those that disappear stop accepting (their connections continue).
    pub async fn reload(&self, config: Config) -> Result<(), Error> {
        self.reload_with(config, &Material::Disk).await
    }

    /// [`StreamRelay::reload`], reading the files the config names from `material`.
    pub async fn reload_with(&self, config: Config, material: &Material) -> Result<(), Error> {
        let r = self.try_reload(config, material).await;
        self.shared.metrics.reload(if r.is_ok() { "ok" } else { "error" });
        r
    }

    async fn try_reload(&self, config: Config, material: &Material) -> Result<(), Error> {
        let old = self.shared.state.load_full();
        for (field, changed) in
            [("streamId", old.config.stream_id != config.stream_id), ("mode", old.config.mode != config.mode)]
        {
            if changed {
                return Err(Error::NeedsRestart(field));
            }
        }
        let state = State::build_with(config, material)?;
        let mut listeners = self.listeners.lock().await;
        let mut ok = true;
        for addr in &state.config.listeners {
            if !listeners.contains_key(addr) {
                match listener::bind_group(*addr, self.workers.len()) {
                    Ok(l) => {
                        let h = spawn_listener(&self.shared, &self.readiness, &self.workers, *addr, l);
                        listeners.insert(*addr, h);
                    }
                    Err(e) => {
                        ok = false;
                        warn!(listener = %addr, error = %e, "cannot bind a new listener; not ready");
                    }
                }
            }
        }
        let removed: Vec<SocketAddr> =
            listeners.keys().filter(|addr| !state.config.listeners.contains(addr)).copied().collect();
        for addr in removed {
            if let Some(h) = listeners.remove(&addr) {
                self.readiness.unbound(addr);
                stop_listener(addr, h).await;
            }
        }
        self.shared.limiter.set_rate(state.config.rate_bits_per_second);
        info!(targets = state.config.targets.len(), listeners = listeners.len(),
            rate = ?state.config.rate_bits_per_second, "reloaded");
        self.shared.state.store(Arc::new(state));
        self.readiness.set_ready(ok);
        Ok(())
    }

    /// Stops accepting (every listener closed when this returns, so its ports are free),
    /// then drains this stream's connections; see [`crate::drain`].
    pub async fn shutdown(&self, grace: std::time::Duration) -> DrainReport {
        self.stop_accepting().await;
        self.drain(grace).await
    }

    /// Stops accepting: every listener is closed when this returns, so its ports are free.
    /// Established connections go on.
    pub async fn stop_accepting(&self) {
        self.readiness.set_ready(false);
        let listeners: Vec<_> = self.listeners.lock().await.drain().collect();
        for (addr, h) in listeners {
            self.readiness.unbound(addr);
            stop_listener(addr, h).await;
        }
    }

    /// Lets this stream's connections finish within `grace`, then closes the rest.
    pub async fn drain(&self, grace: std::time::Duration) -> DrainReport {
        self.shared.connections.drain(grace).await
    }
}

/// Stops a listener and waits until its sockets are closed (promptly once stopped; bounded
/// regardless).
async fn stop_listener(addr: SocketAddr, h: ListenerHandle) {
    h.stop.cancel();
    for l in h.loops {
        if tokio::time::timeout(std::time::Duration::from_secs(5), l).await.is_err() {
            warn!(listener = %addr, "accept loop did not stop within 5s");
        }
    }
}

/// Says which record layer carries the TLS data phase, and why.
fn log_tls_path(cfg: &Config) {
    // Probed only when asked for: `kernelTls: false` must not touch the ULP at all.
    match &cfg.tls {
        None => {}
        Some(t) if t.record_layer == RecordLayer::Rustls => {
            info!("rustls's own record layer carries the data phase of TLS connections (tls.recordLayer: rustls)")
        }
        Some(t) if !t.kernel_tls => info!("kernel TLS off (tls.kernelTls: false); TLS is relayed in userspace"),
        Some(_) => match crate::relay::ktls::support() {
            Ok(()) => info!("kernel TLS (tls ULP with key updates) carries the data phase of TLS connections"),
            Err(why) => info!(reason = %why, "kernel TLS not usable here; TLS is relayed in userspace"),
        },
    }
}

fn spawn_listener(
    shared: &Arc<Shared>,
    readiness: &Readiness,
    workers: &[Handle],
    addr: SocketAddr,
    group: Vec<std::net::TcpListener>,
) -> ListenerHandle {
    let local = group.first().and_then(|l| l.local_addr().ok()).unwrap_or(addr);
    readiness.bound(addr, local);
    let stop = CancellationToken::new();
    let loops = group
        .into_iter()
        .zip(workers.iter().cycle())
        .map(|(l, worker)| worker.spawn(listener::accept_loop(shared.clone(), addr, l, stop.clone()).in_current_span()))
        .collect();
    ListenerHandle { stop, loops }
}
