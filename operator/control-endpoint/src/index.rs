//! An in-memory index of StreamRequests by stream id, fed by a watch, so a Hello finds its
//! stream without a LIST, and waiters (a `req` blocked until Hello, a consumer Hello waiting for
//! listeners) are woken on every change instead of polling the API.
//!
//! [`Index::apply_event`] is pure bookkeeping and unit-tested; [`run`] feeds it from the API.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use scistream_api::StreamRequest;
use tokio::sync::watch;

type Key = (String, String);

#[derive(Default)]
struct State {
    by_id: HashMap<String, BTreeMap<Key, Arc<StreamRequest>>>,
    /// Objects of a re-list in progress (swapped in at `InitDone`).
    pending: Option<HashMap<String, BTreeMap<Key, Arc<StreamRequest>>>>,
    ready: bool,
}

/// StreamRequests by stream id, with a change signal.
#[derive(Clone)]
pub struct Index {
    state: Arc<RwLock<State>>,
    changed: watch::Sender<u64>,
}

impl Default for Index {
    fn default() -> Self {
        Self { state: Arc::default(), changed: watch::channel(0).0 }
    }
}

fn key(sr: &StreamRequest) -> Key {
    (sr.namespace().unwrap_or_default(), sr.name_any())
}

fn insert(map: &mut HashMap<String, BTreeMap<Key, Arc<StreamRequest>>>, sr: StreamRequest) {
    // A stream id may change only by delete and re-create (it is immutable), but a stale entry
    // under another id must not survive, so remove the key everywhere first.
    remove(map, &key(&sr));
    map.entry(sr.spec.stream_id.clone()).or_default().insert(key(&sr), Arc::new(sr));
}

fn remove(map: &mut HashMap<String, BTreeMap<Key, Arc<StreamRequest>>>, k: &Key) {
    map.retain(|_, objects| {
        objects.remove(k);
        !objects.is_empty()
    });
}

impl Index {
    /// Applies one watch event.
    pub fn apply_event(&self, event: watcher::Event<StreamRequest>) {
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            match event {
                watcher::Event::Apply(sr) => insert(&mut state.by_id, sr),
                watcher::Event::Delete(sr) => remove(&mut state.by_id, &key(&sr)),
                watcher::Event::Init => state.pending = Some(HashMap::new()),
                watcher::Event::InitApply(sr) => insert(state.pending.get_or_insert_with(HashMap::new), sr),
                watcher::Event::InitDone => {
                    state.by_id = state.pending.take().unwrap_or_default();
                    state.ready = true;
                }
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Every StreamRequest with `stream_id`, ordered by namespace and name.
    pub fn by_stream_id(&self, stream_id: &str) -> Vec<Arc<StreamRequest>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.by_id.get(stream_id).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// The StreamRequest `namespace/name`, if it has `stream_id`.
    pub fn get(&self, stream_id: &str, namespace: &str, name: &str) -> Option<Arc<StreamRequest>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.by_id.get(stream_id)?.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Whether the first full list has arrived.
    pub fn ready(&self) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).ready
    }

    /// A receiver that changes whenever the index does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until `probe` returns `Some`, re-evaluating it on each change, at most until
    /// `deadline`. Returns `None` when the deadline passed.
    pub async fn wait_for<T>(
        &self,
        deadline: tokio::time::Instant,
        mut probe: impl FnMut(&Index) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(found) = probe(self) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return probe(self),
            }
        }
    }
}

/// Feeds `index` from a watch of all StreamRequests until the stream ends (never, in practice:
/// the watcher retries with backoff).
pub async fn run(client: Client, index: Index) {
    let api: Api<StreamRequest> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => index.apply_event(event),
            Err(e) => tracing::warn!(error = %e, "watch of StreamRequests failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr(ns: &str, name: &str, id: &str) -> StreamRequest {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"streamId": id, "role": "Producer", "gateway": "dtn"}
        }))
        .unwrap()
    }

    #[test]
    fn tracks_applies_deletes_and_relists() {
        let index = Index::default();
        let rx = index.subscribe();
        index.apply_event(watcher::Event::Init);
        index.apply_event(watcher::Event::InitApply(sr("a", "x", "id1")));
        assert!(index.by_stream_id("id1").is_empty(), "not visible before InitDone");
        index.apply_event(watcher::Event::InitDone);
        assert!(index.ready());
        assert_eq!(index.by_stream_id("id1").len(), 1);
        index.apply_event(watcher::Event::Apply(sr("b", "y", "id1")));
        index.apply_event(watcher::Event::Apply(sr("b", "z", "id2")));
        assert_eq!(index.by_stream_id("id1").len(), 2);
        assert!(index.get("id2", "b", "z").is_some());
        index.apply_event(watcher::Event::Delete(sr("a", "x", "id1")));
        assert_eq!(index.by_stream_id("id1").len(), 1);
        // A re-list drops what is gone.
        index.apply_event(watcher::Event::Init);
        index.apply_event(watcher::Event::InitApply(sr("b", "z", "id2")));
        index.apply_event(watcher::Event::InitDone);
        assert!(index.by_stream_id("id1").is_empty());
        assert_eq!(index.by_stream_id("id2").len(), 1);
        assert!(rx.has_changed().unwrap());
    }

    #[tokio::test]
    async fn waiters_wake_on_change_and_give_up_at_the_deadline() {
        let index = Index::default();
        let i2 = index.clone();
        let waiter = tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            i2.wait_for(deadline, |i| i.by_stream_id("s").first().cloned()).await
        });
        index.apply_event(watcher::Event::Apply(sr("n", "m", "s")));
        assert!(waiter.await.unwrap().is_some());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        assert!(index.wait_for(deadline, |i| i.by_stream_id("none").first().cloned()).await.is_none());
    }
}
