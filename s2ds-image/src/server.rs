//! The running relay: its listeners, reload and shutdown.
//!
//! The server owns the handles its parts share and hands each part only
//! what it needs: the accept loops and connections get
//! [`listener::Shared`] (config, metrics, rate limiter, the connection set),
//! the HTTP endpoint gets the metrics and [`Readiness`], the drain goes
//! through [`Connections`]. None of them knows the server.
//!
//! Connections read the current [`State`] once, when accepted, so a reload
//! (new targets, rate, certificates) applies to new connections while
//! established ones keep what they started with. The rate limiter is shared
//! and re-rated in place, so a new rate applies to everyone at once.

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
use crate::http::{self, Readiness};
use crate::listener::{self, Shared};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::state::State;

struct ListenerHandle {
    stop: CancellationToken,
    /// The accept loops: each owns one socket of the listener's group, closed when it returns.
    loops: Vec<tokio::task::JoinHandle<()>>,
}

/// A running relay.
pub struct Server {
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    listeners: Mutex<HashMap<SocketAddr, ListenerHandle>>,
    metrics_stop: CancellationToken,
    metrics_addr: Option<SocketAddr>,
    workers: Vec<Handle>,
}

impl Server {
    /// Loads TLS material, binds every listener and the metrics address,
    /// then starts accepting. On any error nothing stays bound. Tasks run in
    /// the caller's span (the relay's `stream` span).
    ///
    /// `workers` are the runtimes that carry connections (one
    /// single-threaded runtime per core: a connection and its two
    /// directions stay on one thread, with no cross-thread wake-ups); each
    /// listener gets one SO_REUSEPORT socket per worker. Empty means the
    /// current runtime.
    pub async fn start(config: Config, mut workers: Vec<Handle>) -> Result<Self, Error> {
        if workers.is_empty() {
            workers.push(Handle::current());
        }
        let state = State::build(config)?;
        let cfg = &state.config;
        let mut bound = Vec::new();
        for addr in &cfg.listeners {
            let l = listener::bind_group(*addr, workers.len()).map_err(|source| Error::Bind { addr: *addr, source })?;
            bound.push((*addr, l));
        }
        let metrics_listener = match cfg.metrics_address {
            Some(a) => Some(listener::bind(a).map_err(|source| Error::Bind { addr: a, source })?),
            None => None,
        };
        log_tls_path(cfg);
        let metrics = Arc::new(Metrics::new(&cfg.stream_id));
        let limiter = Arc::new(RateLimiter::new(cfg.rate_bits_per_second, metrics.ratelimit_wait()));
        let (mode, targets) = (cfg.mode, cfg.targets.len());
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            metrics: metrics.clone(),
            limiter,
            connections: Connections::new(),
        });
        let readiness = Arc::new(Readiness::default());
        let mut handles = HashMap::new();
        for (addr, l) in bound {
            handles.insert(addr, spawn_listener(&shared, &readiness, &workers, addr, l));
        }
        let metrics_stop = CancellationToken::new();
        let metrics_addr = match metrics_listener {
            Some(l) => {
                let a = l.local_addr().ok();
                let serving = http::serve(metrics, readiness.clone(), l, metrics_stop.clone());
                tokio::spawn(serving.in_current_span());
                a
            }
            None => None,
        };
        readiness.set_ready(true);
        info!(mode = mode.as_str(), listeners = ?readiness.listeners(), targets, metrics = ?metrics_addr, "ready");
        Ok(Self { shared, readiness, listeners: Mutex::new(handles), metrics_stop, metrics_addr, workers })
    }

    /// Where `/metrics` is actually served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Configured and actually bound address of each listener.
    pub fn bound_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.readiness.listeners()
    }

    /// The running config.
    pub fn config(&self) -> Config {
        self.shared.state.load().config.clone()
    }

    /// Applies a new config without touching established connections.
    /// `streamId`, `mode` and `metricsAddress` need a restart; a reload that
    /// changes them is refused. Listeners that appear are bound, those that
    /// disappear stop accepting (their connections continue).
    pub async fn reload(&self, config: Config) -> Result<(), Error> {
        let r = self.try_reload(config).await;
        self.reload_counted(r.is_ok());
        r
    }

    /// Counts a reload attempt (a config that could not even be read is one).
    pub fn reload_counted(&self, ok: bool) {
        self.shared.metrics.reload(if ok { "ok" } else { "error" });
    }

    async fn try_reload(&self, config: Config) -> Result<(), Error> {
        let old = self.shared.state.load_full();
        for (field, changed) in [
            ("streamId", old.config.stream_id != config.stream_id),
            ("mode", old.config.mode != config.mode),
            ("metricsAddress", old.config.metrics_address != config.metrics_address),
        ] {
            if changed {
                return Err(Error::NeedsRestart(field));
            }
        }
        let state = State::build(config)?;
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
            let Some(h) = listeners.remove(&addr) else { continue };
            h.stop.cancel();
            self.readiness.unbound(addr);
            // The reload is done when the removed listener no longer accepts: its sockets are
            // closed as its accept loops return (promptly once stopped; bounded regardless).
            for l in h.loops {
                if tokio::time::timeout(std::time::Duration::from_secs(5), l).await.is_err() {
                    warn!(listener = %addr, "accept loop did not stop within 5s");
                }
            }
        }
        self.shared.limiter.set_rate(state.config.rate_bits_per_second);
        info!(targets = state.config.targets.len(), listeners = listeners.len(),
            rate = ?state.config.rate_bits_per_second, "reloaded");
        self.shared.state.store(Arc::new(state));
        self.readiness.set_ready(ok);
        Ok(())
    }

    /// Stops accepting and drains; see [`crate::drain`].
    pub async fn shutdown(self, grace: std::time::Duration) -> DrainReport {
        self.readiness.set_ready(false);
        for h in self.listeners.lock().await.values() {
            h.stop.cancel();
        }
        let report = self.shared.connections.drain(grace).await;
        self.metrics_stop.cancel();
        report
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
