//! The operator's side of the shared relays' configuration channel
//! (`scistream.relay.v1.RelayConfig`, `operator/relay-proto/proto/relay.proto`).
//!
//! The [`Hub`] holds, per relay (a Gateway on a node), the streams that relay must run, and
//! the connected relays. A change to one stream goes at once, as one small update, to the one
//! relay that runs it; a relay that (re)connects gets a snapshot. What each relay answers is
//! kept per stream and published, so the stream's reconcile learns that its relay is ready,
//! or why its config was refused. Keys reach only the relay whose streams need them: a relay
//! is known by the certificate the operator issued it ([`identity`]), and is sent nothing but
//! its own streams.
//!
//! No I/O here but channels: [`server`] is the gRPC and TLS side.

pub mod channel;
pub mod identity;
pub mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use scistream_relay_proto::{Applied, Hello, RelayUpdate, StreamConfig, StreamState};
use tokio::sync::{broadcast, mpsc};

/// A shared relay: one Gateway on one node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelayKey {
    /// The Gateway.
    pub gateway: String,
    /// The node.
    pub node: String,
}

impl fmt::Display for RelayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gateway, self.node)
    }
}

/// What a relay said of one of its streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The relay.
    pub relay: RelayKey,
    /// The stream's state there.
    pub state: StreamState,
}

/// Updates waiting for a slow relay before its call is dropped (it reconnects and gets a
/// snapshot): a relay that does not read cannot hold the operator up.
const QUEUE: usize = 256;

/// One connected relay.
struct Call {
    id: u64,
    updates: mpsc::Sender<Result<RelayUpdate, tonic::Status>>,
    version: u64,
}

#[derive(Default)]
struct State {
    desired: BTreeMap<RelayKey, BTreeMap<String, StreamConfig>>,
    calls: BTreeMap<RelayKey, Call>,
    reported: BTreeMap<RelayKey, BTreeMap<String, StreamState>>,
    identities: BTreeMap<[u8; 32], RelayKey>,
    next_call: u64,
}

impl State {
    /// Sends `update` (numbered here) to the relay's call, if it has one; a call whose queue
    /// is full is dropped.
    fn send(&mut self, relay: &RelayKey, mut update: RelayUpdate) {
        let Some(call) = self.calls.get_mut(relay) else { return };
        call.version += 1;
        update.version = call.version;
        if call.updates.try_send(Ok(update)).is_err() {
            tracing::warn!(%relay, "relay not reading its updates; dropping its call (it gets a snapshot when it calls again)");
            self.calls.remove(relay);
        }
    }
}

/// The streams of every shared relay and the relays connected.
pub struct Hub {
    state: Mutex<State>,
    reports: broadcast::Sender<Report>,
    refused: std::sync::atomic::AtomicU64,
    open: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Hub").field("relays", &state.desired.len()).field("calls", &state.calls.len()).finish()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            reports: broadcast::channel(1024).0,
            refused: Default::default(),
            open: Default::default(),
        }
    }
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Relays may call from now on: every stream the operator knows of is set. Until then a
    /// call is refused (the relay dials again), since the snapshot it would get could lack
    /// streams the relay runs, and a relay stops what its snapshot lacks.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Ends every call and refuses new ones (the operator stops): each relay dials again and
    /// finds the next leader. Without it a graceful shutdown would wait on calls that never end.
    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Release);
        let calls = std::mem::take(&mut self.state().calls);
        if !calls.is_empty() {
            tracing::info!(calls = calls.len(), "ending the relays' calls");
        }
    }

    /// Whether relays may call.
    pub fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The relay that presents a certificate of this SHA-256 is `relay` (its certificate was
    /// issued to it).
    pub fn authorize(&self, fingerprint: [u8; 32], relay: RelayKey) {
        self.state().identities.insert(fingerprint, relay);
    }

    /// Forgets a relay's certificate and drops its call: it can no longer call.
    pub fn revoke(&self, relay: &RelayKey) {
        let mut state = self.state();
        state.identities.retain(|_, r| r != relay);
        state.calls.remove(relay);
    }

    /// Counts a refused relay connection (a handshake without an issued certificate, or a
    /// call for another relay's streams).
    pub fn count_refusal(&self) {
        self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Relay connections refused so far.
    pub fn refusals(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The relay a certificate was issued to.
    pub fn identify(&self, fingerprint: &[u8; 32]) -> Option<RelayKey> {
        self.state().identities.get(fingerprint).cloned()
    }

    /// `relay` must run `stream` as given. Sent at once when it differs from what the relay
    /// was last given; returns whether it did.
    pub fn set(&self, relay: &RelayKey, stream: StreamConfig) -> bool {
        let mut state = self.state();
        let streams = state.desired.entry(relay.clone()).or_default();
        if streams.get(&stream.stream_id) == Some(&stream) {
            return false;
        }
        streams.insert(stream.stream_id.clone(), stream.clone());
        state.send(relay, RelayUpdate { streams: vec![stream], ..RelayUpdate::default() });
        true
    }

    /// `relay` must no longer run `stream_id`. Returns whether it was to.
    pub fn remove(&self, relay: &RelayKey, stream_id: &str) -> bool {
        let mut state = self.state();
        let Some(streams) = state.desired.get_mut(relay) else { return false };
        if streams.remove(stream_id).is_none() {
            return false;
        }
        if streams.is_empty() {
            state.desired.remove(relay);
        }
        if let Some(r) = state.reported.get_mut(relay) {
            r.remove(stream_id);
        }
        state.send(relay, RelayUpdate { removed: vec![stream_id.to_owned()], ..RelayUpdate::default() });
        true
    }

    /// What `relay` is to run as `stream_id`, if it is.
    pub fn desired_config(&self, relay: &RelayKey, stream_id: &str) -> Option<StreamConfig> {
        self.state().desired.get(relay).and_then(|s| s.get(stream_id)).cloned()
    }

    /// Removes `stream_id` from every relay of `gateway`; returns from how many.
    pub fn remove_from_gateway(&self, gateway: &str, stream_id: &str) -> usize {
        self.relays_of(gateway, stream_id).iter().filter(|r| self.remove(r, stream_id)).count()
    }

    /// The relays that are to run `stream_id`.
    pub fn relays_of(&self, gateway: &str, stream_id: &str) -> Vec<RelayKey> {
        self.state()
            .desired
            .iter()
            .filter(|(r, streams)| r.gateway == gateway && streams.contains_key(stream_id))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The streams `relay` must run, by id.
    pub fn desired(&self, relay: &RelayKey) -> Vec<String> {
        self.state().desired.get(relay).map(|s| s.keys().cloned().collect()).unwrap_or_default()
    }

    /// What `relay` last said of `stream_id` (while it is to run it).
    pub fn reported(&self, relay: &RelayKey, stream_id: &str) -> Option<StreamState> {
        self.state().reported.get(relay).and_then(|r| r.get(stream_id)).cloned()
    }

    /// Whether `relay` has a call open.
    pub fn connected(&self, relay: &RelayKey) -> bool {
        self.state().calls.contains_key(relay)
    }

    /// Every state a relay reports from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Report> {
        self.reports.subscribe()
    }

    /// A relay called (its Hello checked against its certificate by the caller): it gets a
    /// snapshot of its streams first. A call it had before is dropped. Returns the call's id
    /// and its updates.
    pub fn connect(
        &self,
        relay: &RelayKey,
        hello: &Hello,
    ) -> (u64, mpsc::Receiver<Result<RelayUpdate, tonic::Status>>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut state = self.state();
        state.next_call += 1;
        let id = state.next_call;
        state.calls.insert(relay.clone(), Call { id, updates: tx, version: 0 });
        let streams = state.desired.get(relay).map(|s| s.values().cloned().collect()).unwrap_or_default();
        tracing::info!(%relay, running = hello.streams.len(), call = id, "relay connected");
        state.send(relay, RelayUpdate { snapshot: true, streams, ..RelayUpdate::default() });
        (id, rx)
    }

    /// What a relay applied on call `call`. States of streams it is no longer to run are
    /// dropped; the rest are kept and published.
    pub fn applied(&self, relay: &RelayKey, call: u64, applied: Applied) {
        let mut published = Vec::new();
        {
            let mut guard = self.state();
            let state = &mut *guard;
            if state.calls.get(relay).map(|c| c.id) != Some(call) {
                return;
            }
            let desired = state.desired.get(relay);
            let reported = state.reported.entry(relay.clone()).or_default();
            for s in applied.streams {
                // A state reported again unchanged (a snapshot's answer) wakes nobody.
                let before = if desired.is_some_and(|d| d.contains_key(&s.stream_id)) {
                    reported.insert(s.stream_id.clone(), s.clone())
                } else {
                    reported.remove(&s.stream_id)
                };
                if before.as_ref() != Some(&s) {
                    published.push(Report { relay: relay.clone(), state: s });
                }
            }
        }
        for report in published {
            let _ = self.reports.send(report);
        }
    }

    /// Call `call` of `relay` ended.
    pub fn disconnect(&self, relay: &RelayKey, call: u64) {
        let mut state = self.state();
        if state.calls.get(relay).map(|c| c.id) == Some(call) {
            state.calls.remove(relay);
            tracing::info!(%relay, call, "relay disconnected");
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
