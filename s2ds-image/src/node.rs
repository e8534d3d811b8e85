//! The shared relay: one s2ds process serving every stream of a Gateway on its node.
//!
//! Each stream is its own [`StreamRelay`] (its listeners, TLS state, rate limiter,
//! connections and labelled metrics); the process adds one stream, reloads it or removes it
//! while the others keep relaying: nothing of another stream is touched, not even its
//! accept loops. What the streams share is the worker runtimes, the metrics registry and
//! one HTTP endpoint: `/metrics` for every stream, `/readyz` for the relay itself and
//! `/readyz/STREAM` for one stream.
//!
//! Isolation rules kept here: a stream's config error is that stream's (recorded and
//! reported on `/readyz/STREAM`; a running stream keeps its last good config); no stream can
//! bind a port another stream of the relay listens on (SO_REUSEPORT would otherwise let it
//! share, and take half of, the other's connections); a removed stream's series leave the
//! registry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::Error;
use crate::config::Config;
use crate::drain::DrainReport;
use crate::http::{self, Status};
use crate::listener;
use crate::material::Material;
use crate::metrics::Metrics;
use crate::stream::StreamRelay;

/// What [`NodeRelay::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The stream was new: its listeners are bound and accepting.
    Added,
    /// The stream ran: its new config applies to new connections.
    Reloaded,
}

/// One stream of the relay: running (with the refusal of its last config, if any), or
/// refused from the start.
struct Entry {
    relay: Option<Arc<StreamRelay>>,
    error: Option<String>,
}

struct Inner {
    streams: Mutex<BTreeMap<String, Entry>>,
    /// Adds, reloads and removals take turns (a stream's listeners are checked against the
    /// others' and bound in one step).
    turn: tokio::sync::Mutex<()>,
    /// The registry every stream's view shares.
    root: Metrics,
    workers: Vec<Handle>,
    draining: AtomicBool,
}

impl Inner {
    fn streams(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running shared relay.
pub struct NodeRelay {
    inner: Arc<Inner>,
    metrics_stop: CancellationToken,
    metrics_addr: Option<SocketAddr>,
}

/// Whether two listener addresses would take the same port (the same address, or the same
/// port with either on every address). Port 0 (any free port) takes none.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl NodeRelay {
    /// Binds the metrics address (if any) and starts with no stream. `workers`: see
    /// [`StreamRelay::start`].
    pub async fn start(metrics_address: Option<SocketAddr>, mut workers: Vec<Handle>) -> Result<Self, Error> {
        if workers.is_empty() {
            workers.push(Handle::current());
        }
        let metrics_listener = match metrics_address {
            Some(a) => Some(listener::bind(a).map_err(|source| Error::Bind { addr: a, source })?),
            None => None,
        };
        let inner = Arc::new(Inner {
            streams: Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
            root: Metrics::new(""),
            workers,
            draining: AtomicBool::new(false),
        });
        let metrics_stop = CancellationToken::new();
        let metrics_addr = match metrics_listener {
            Some(l) => {
                let a = l.local_addr().ok();
                tokio::spawn(http::serve(inner.clone(), l, metrics_stop.clone()).in_current_span());
                a
            }
            None => None,
        };
        info!(metrics = ?metrics_addr, "shared relay ready");
        Ok(Self { inner, metrics_stop, metrics_addr })
    }

    /// Where `/metrics` and `/readyz` are actually served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The streams served (running ones and refused ones), by id.
    pub fn streams(&self) -> Vec<String> {
        self.inner.streams().keys().cloned().collect()
    }

    /// A running stream.
    pub fn stream(&self, id: &str) -> Option<Arc<StreamRelay>> {
        self.inner.streams().get(id).and_then(|e| e.relay.clone())
    }

    /// Why the last config sent for a stream was refused, if it was.
    pub fn refusal(&self, id: &str) -> Option<String> {
        self.inner.streams().get(id).and_then(|e| e.error.clone())
    }

    /// Adds the stream `config` describes, or applies it to the running stream of that id
    /// (new connections get it; established ones keep theirs). A refused config changes
    /// nothing that runs, is that stream's alone, and is reported on `/readyz/STREAM`.
    pub async fn apply(&self, config: Config) -> Result<Applied, Error> {
        self.apply_with(config, &Material::Disk).await
    }

    /// [`NodeRelay::apply`], reading the files the config names from `material` (what the
    /// control plane sent with the stream).
    pub async fn apply_with(&self, config: Config, material: &Material) -> Result<Applied, Error> {
        let _turn = self.inner.turn.lock().await;
        let id = config.stream_id.clone();
        let span = info_span!("stream", stream = %id);
        let running = self.stream(&id);
        let outcome = match self.check(&config) {
            Err(e) => Err(e),
            Ok(()) => match &running {
                Some(relay) => relay.reload_with(config, material).instrument(span).await.map(|()| Applied::Reloaded),
                None => {
                    let metrics = self.inner.root.for_stream(&id);
                    span.in_scope(|| StreamRelay::start_with(config, material, self.inner.workers.clone(), metrics))
                        .map(|r| {
                            self.inner.streams().insert(id.clone(), Entry { relay: Some(Arc::new(r)), error: None });
                            Applied::Added
                        })
                }
            },
        };
        match &outcome {
            Ok(applied) => {
                if let Some(e) = self.inner.streams().get_mut(&id) {
                    e.error = None;
                }
                info!(stream = %id, ?applied, "stream applied");
            }
            Err(e) => {
                let why = crate::report(e);
                warn!(stream = %id, error = %why, "stream config refused; other streams unaffected");
                let mut streams = self.inner.streams();
                streams.entry(id.clone()).or_insert(Entry { relay: None, error: None }).error = Some(why);
                if running.is_none() {
                    // Nothing of a refused stream stays in the registry.
                    self.inner.root.for_stream(&id).forget();
                }
            }
        }
        outcome
    }

    /// What a stream of a shared relay may not ask for.
    fn check(&self, config: &Config) -> Result<(), Error> {
        if config.metrics_address.is_some() {
            return Err(Error::OwnMetricsAddress);
        }
        let streams = self.inner.streams();
        for (holder, entry) in streams.iter().filter(|(id, _)| **id != config.stream_id) {
            let Some(relay) = &entry.relay else { continue };
            // Where they are bound (a listener configured on port 0 took a free port).
            for (_, theirs) in relay.readiness().listeners() {
                if let Some(addr) = config.listeners.iter().copied().find(|a| overlaps(*a, theirs)) {
                    return Err(Error::ListenerTaken { addr, holder: holder.clone(), theirs });
                }
            }
        }
        Ok(())
    }

    /// Removes a stream: its listeners are closed (their ports free for another stream), then
    /// its connections drain within `grace`, and the rest are closed. No other stream is
    /// touched. `None` when there was no such stream running.
    pub async fn remove(&self, id: &str, grace: Duration) -> Option<DrainReport> {
        Some(self.detach(id).await?.drain(grace).await)
    }

    /// The first half of [`NodeRelay::remove`]: the stream is gone from the relay and its
    /// listeners are closed when this returns; its connections go on until
    /// [`Detached::drain`].
    pub async fn detach(&self, id: &str) -> Option<Detached> {
        let _turn = self.inner.turn.lock().await;
        let entry = self.inner.streams().remove(id)?;
        let relay = entry.relay?;
        relay.stop_accepting().await;
        Some(Detached { id: id.to_owned(), relay, inner: self.inner.clone() })
    }

    /// Stops every stream: not ready, no listener, then every stream's connections drain
    /// within `grace` (together, not one after the other).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.draining.store(true, Ordering::SeqCst);
        let relays: Vec<Arc<StreamRelay>> = self.inner.streams().values().filter_map(|e| e.relay.clone()).collect();
        let mut drains = tokio::task::JoinSet::new();
        for relay in relays {
            drains.spawn(async move { relay.shutdown(grace).await }.in_current_span());
        }
        while drains.join_next().await.is_some() {}
        self.metrics_stop.cancel();
    }
}

/// A stream taken out of the relay whose connections have yet to drain.
pub struct Detached {
    id: String,
    relay: Arc<StreamRelay>,
    inner: Arc<Inner>,
}

impl Detached {
    /// Lets the stream's connections finish within `grace`, closes the rest, and drops its
    /// series (unless a stream of the same id was added meanwhile).
    pub async fn drain(self, grace: Duration) -> DrainReport {
        let report = self.relay.drain(grace).instrument(info_span!("stream", stream = %self.id)).await;
        let _turn = self.inner.turn.lock().await;
        if !self.inner.streams().contains_key(&self.id) {
            self.relay.metrics().forget();
        }
        info!(stream = %self.id, drained = report.open_at_start, aborted = report.aborted, "stream removed");
        report
    }
}

impl Status for Inner {
    fn metrics(&self) -> String {
        self.root.encode()
    }

    fn ready(&self, stream: Option<&str>) -> Option<(bool, String)> {
        let streams = self.streams();
        let line = |id: &str, e: &Entry| match (&e.relay, &e.error) {
            (Some(r), None) if r.readiness().is_ready() => format!("{id}: ready\n{}", r.readiness().describe()),
            (Some(r), None) => format!("{id}: not ready\n{}", r.readiness().describe()),
            (Some(r), Some(why)) => {
                format!(
                    "{id}: ready with its previous config; the last one was refused: {why}\n{}",
                    r.readiness().describe()
                )
            }
            (None, Some(why)) => format!("{id}: refused: {why}\n"),
            (None, None) => format!("{id}: not started\n"),
        };
        match stream {
            None => {
                let ready = !self.draining.load(Ordering::SeqCst);
                let mut body = format!("{} ({} streams)\n", if ready { "ready" } else { "draining" }, streams.len());
                for (id, e) in streams.iter() {
                    body.push_str(&line(id, e));
                }
                Some((ready, body))
            }
            Some(id) => {
                let e = streams.get(id)?;
                let ready =
                    e.relay.as_ref().is_some_and(|r| r.readiness().is_ready()) && !self.draining.load(Ordering::SeqCst);
                Some((ready, line(id, e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_overlap_on_the_same_port_of_the_same_or_every_address() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:5000"), a("127.0.0.1:5000")));
        assert!(overlaps(a("0.0.0.0:5000"), a("127.0.0.1:5000")));
        assert!(overlaps(a("127.0.0.1:5000"), a("0.0.0.0:5000")));
        assert!(overlaps(a("[::]:5000"), a("127.0.0.1:5000")));
        assert!(!overlaps(a("127.0.0.1:5000"), a("127.0.0.2:5000")));
        assert!(!overlaps(a("0.0.0.0:5000"), a("0.0.0.0:5001")));
        assert!(!overlaps(a("127.0.0.1:0"), a("127.0.0.1:0")), "port 0 is any free port");
    }
}
