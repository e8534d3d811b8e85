//! The running relay: shared state, listener set, reload.
//!
//! Connections read the current [`State`] once, when accepted, so a reload
//! (new targets, rate, certificates) applies to new connections while
//! established ones keep what they started with. The rate limiter is shared
//! and re-rated in place, so a new rate applies to everyone at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::{Error, http, listener, tls};

/// What a new connection needs from the config; swapped on reload.
pub struct State {
    /// The validated config.
    pub config: Config,
    /// Present in `tls-server` mode.
    pub acceptor: Option<Arc<rustls::ServerConfig>>,
    /// Present in `tls-client` mode.
    pub connector: Option<Arc<rustls::ClientConfig>>,
}

impl State {
    /// Builds the TLS side for the mode (reads certificate files).
    pub fn build(config: Config) -> Result<Self, Error> {
        let (mut acceptor, mut connector) = (None, None);
        match (config.mode, &config.tls) {
            (Mode::TlsServer, Some(t)) => acceptor = Some(tls::server_config(t)?),
            (Mode::TlsClient, Some(t)) => connector = Some(tls::client_config(t)?),
            _ => {}
        }
        Ok(Self { config, acceptor, connector })
    }
}

/// Everything the listener and connection tasks share.
pub struct Ctx {
    /// Stream id (log field).
    pub stream_id: String,
    /// Current state.
    pub state: ArcSwap<State>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Aggregate rate limiter.
    pub limiter: Arc<RateLimiter>,
    /// Tracks connection tasks for draining.
    pub tracker: TaskTracker,
    /// Cancelled at the end of the drain period: open connections are dropped.
    pub abort: CancellationToken,
    /// Connections dropped by `abort`.
    pub aborted: AtomicU64,
    /// True while every configured listener is bound and not draining.
    pub ready: AtomicBool,
    /// Configured -> bound address of each listener (for `/readyz` and tests).
    pub bound: std::sync::Mutex<Vec<(SocketAddr, SocketAddr)>>,
}

struct ListenerHandle {
    stop: CancellationToken,
    /// The accept loops: each owns one socket of the listener's group, closed when it returns.
    loops: Vec<tokio::task::JoinHandle<()>>,
}

/// A running relay.
pub struct Server {
    ctx: Arc<Ctx>,
    listeners: Mutex<HashMap<SocketAddr, ListenerHandle>>,
    metrics_stop: CancellationToken,
    metrics_addr: Option<SocketAddr>,
    workers: Vec<Handle>,
}

impl Server {
    /// Loads TLS material, binds every listener and the metrics address,
    /// then starts accepting. On any error nothing stays bound.
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
        // Probed only when asked for: `kernelTls: false` must not touch the ULP at all.
        match &cfg.tls {
            None => {}
            Some(t) if !t.kernel_tls => info!("Kernel TLS off (tls.kernelTls: false); TLS is relayed in userspace"),
            Some(_) => match crate::relay::ktls::support() {
                Ok(()) => info!("Kernel TLS (tls ULP with key updates) carries the data phase of TLS connections"),
                Err(why) => info!(reason = %why, "Kernel TLS not usable here; TLS is relayed in userspace"),
            },
        }
        let metrics = Metrics::new(&cfg.stream_id);
        let limiter = Arc::new(RateLimiter::new(cfg.rate_bits_per_second, metrics.ratelimit_wait()));
        let ctx = Arc::new(Ctx {
            stream_id: cfg.stream_id.clone(),
            metrics,
            limiter,
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            aborted: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            bound: std::sync::Mutex::new(Vec::new()),
            state: ArcSwap::from_pointee(state),
        });
        let mut handles = HashMap::new();
        for (addr, l) in bound {
            handles.insert(addr, spawn_listener(&ctx, &workers, addr, l));
        }
        let metrics_stop = CancellationToken::new();
        let metrics_addr = match metrics_listener {
            Some(l) => {
                let a = l.local_addr().ok();
                tokio::spawn(http::serve(ctx.clone(), l, metrics_stop.clone()));
                a
            }
            None => None,
        };
        ctx.ready.store(true, Ordering::SeqCst);
        let s = ctx.state.load();
        info!(stream = %ctx.stream_id, mode = s.config.mode.as_str(), listeners = ?ctx.bound_addrs(),
            targets = s.config.targets.len(), metrics = ?metrics_addr, "Ready");
        Ok(Self { ctx, listeners: Mutex::new(handles), metrics_stop, metrics_addr, workers })
    }

    /// Shared context (metrics, state).
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Where `/metrics` is actually served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Configured and actually bound address of each listener.
    pub fn bound_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.ctx.bound_addrs()
    }

    /// Applies a new config without touching established connections.
    /// `streamId`, `mode` and `metricsAddress` need a restart; a reload that
    /// changes them is refused. Listeners that appear are bound, those that
    /// disappear stop accepting (their connections continue).
    pub async fn reload(&self, config: Config) -> Result<(), Error> {
        let r = self.try_reload(config).await;
        self.ctx.metrics.reload(if r.is_ok() { "ok" } else { "error" });
        r
    }

    async fn try_reload(&self, config: Config) -> Result<(), Error> {
        let old = self.ctx.state.load_full();
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
                        listeners.insert(*addr, spawn_listener(&self.ctx, &self.workers, *addr, l));
                    }
                    Err(e) => {
                        ok = false;
                        warn!(listener = %addr, error = %e, "Cannot bind new listener; not ready");
                    }
                }
            }
        }
        let removed: Vec<SocketAddr> =
            listeners.keys().filter(|addr| !state.config.listeners.contains(addr)).copied().collect();
        for addr in removed {
            let Some(h) = listeners.remove(&addr) else { continue };
            h.stop.cancel();
            if let Ok(mut b) = self.ctx.bound.lock() {
                b.retain(|(c, _)| *c != addr);
            }
            // The reload is done when the removed listener no longer accepts: its sockets are
            // closed as its accept loops return (promptly once stopped; bounded regardless).
            for l in h.loops {
                if tokio::time::timeout(std::time::Duration::from_secs(5), l).await.is_err() {
                    warn!(listener = %addr, "Accept loop did not stop within 5s");
                }
            }
        }
        self.ctx.limiter.set_rate(state.config.rate_bits_per_second);
        info!(stream = %self.ctx.stream_id, targets = state.config.targets.len(),
            listeners = listeners.len(), rate = ?state.config.rate_bits_per_second, "Reloaded");
        self.ctx.state.store(Arc::new(state));
        self.ctx.ready.store(ok, Ordering::SeqCst);
        Ok(())
    }

    /// Stops accepting and drains; see [`crate::drain`].
    pub async fn shutdown(self, grace: std::time::Duration) -> crate::drain::DrainReport {
        self.ctx.ready.store(false, Ordering::SeqCst);
        for h in self.listeners.lock().await.values() {
            h.stop.cancel();
        }
        let report = crate::drain::drain(&self.ctx, grace).await;
        self.metrics_stop.cancel();
        report
    }
}

impl Ctx {
    /// Configured and actually bound address of each listener.
    pub fn bound_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.bound.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

fn spawn_listener(
    ctx: &Arc<Ctx>,
    workers: &[Handle],
    addr: SocketAddr,
    group: Vec<std::net::TcpListener>,
) -> ListenerHandle {
    let local = group.first().and_then(|l| l.local_addr().ok()).unwrap_or(addr);
    if let Ok(mut b) = ctx.bound.lock() {
        b.push((addr, local));
    }
    let stop = CancellationToken::new();
    let loops = group
        .into_iter()
        .zip(workers.iter().cycle())
        .map(|(l, worker)| worker.spawn(listener::accept_loop(ctx.clone(), addr, l, stop.clone())))
        .collect();
    ListenerHandle { stop, loops }
}
