//! In-memory object storage: objects as JSON keyed by resource, namespace
//! and name, one monotonic resourceVersion per server, an event log (ring
//! buffer) that watches resume from, and a broadcast of `Arc` events so that
//! a watch fan-out never copies objects per watcher.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::resources::ResKey;
use crate::status::{ApiError, ApiResult};

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, shared by every watcher.
#[derive(Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Resource changed.
    pub key: ResKey,
    /// Namespace of the object ("" if cluster scoped).
    pub namespace: String,
    /// Type of change.
    pub etype: EventType,
    /// The object after the change (last state for deletions).
    pub object: Arc<Value>,
    /// The object before the change, if any.
    pub old: Option<Arc<Value>>,
    encoded: OnceLock<Bytes>,
}

impl Event {
    /// The watch line `{"type":..,"object":..}\n`, encoded once for all watchers.
    pub fn encoded(&self) -> &Bytes {
        self.encoded.get_or_init(|| {
            let mut buf = Vec::with_capacity(256);
            buf.extend_from_slice(b"{\"type\":\"");
            buf.extend_from_slice(self.etype.as_str().as_bytes());
            buf.extend_from_slice(b"\",\"object\":");
            // Serialising a Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut buf, &*self.object);
            buf.extend_from_slice(b"}\n");
            Bytes::from(buf)
        })
    }
}

/// What a mutation closure decided.
#[derive(Debug)]
pub enum Write {
    /// Store this object (create or replace).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Change nothing.
    Keep,
}

/// The backlog of a new watch and its receiver of later events.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// (label key, value) -> objects carrying it.
type LabelIndex = HashMap<(String, String), BTreeSet<(String, String)>>;

type Table = BTreeMap<(String, String), Arc<Value>>;

#[derive(Debug, Default)]
struct Inner {
    rv: u64,
    tables: HashMap<ResKey, Table>,
    uids: HashMap<String, (ResKey, String, String)>,
    labels: HashMap<ResKey, LabelIndex>,
    log: VecDeque<Arc<Event>>,
    /// Events with rv <= this are no longer in the log.
    compacted: u64,
    dirty: bool,
}

/// The object store of one server.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    log_capacity: usize,
}

/// Number of events kept for watches to resume from.
pub const DEFAULT_LOG_CAPACITY: usize = 20_000;

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

impl Inner {
    fn labels_of(obj: &Value) -> impl Iterator<Item = (String, String)> + '_ {
        obj["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
    }

    fn index_labels(&mut self, key: &ResKey, id: &(String, String), obj: &Value) {
        let idx = self.labels.entry(key.clone()).or_default();
        for kv in Self::labels_of(obj) {
            idx.entry(kv).or_default().insert(id.clone());
        }
    }

    fn unindex_labels(&mut self, key: &ResKey, id: &(String, String), obj: &Value) {
        let Some(idx) = self.labels.get_mut(key) else {
            return;
        };
        for kv in Self::labels_of(obj) {
            if let Some(set) = idx.get_mut(&kv) {
                set.remove(id);
                if set.is_empty() {
                    idx.remove(&kv);
                }
            }
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new(DEFAULT_LOG_CAPACITY)
    }
}

impl Store {
    /// An empty store keeping `log_capacity` events.
    pub fn new(log_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(16_384);
        Store { inner: RwLock::new(Inner::default()), tx, log_capacity }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest resourceVersion handed out.
    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    /// The oldest resourceVersion a watch can resume from.
    pub fn compacted_rv(&self) -> u64 {
        self.read().compacted
    }

    /// One object.
    pub fn get(&self, key: &ResKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.read().tables.get(key)?.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// Objects of a resource (in one namespace if given), sorted by namespace
    /// and name, from `after` (exclusive), with the resourceVersion of the snapshot.
    pub fn list(&self, key: &ResKey, ns: Option<&str>, after: Option<&(String, String)>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.read();
        let Some(table) = inner.tables.get(key) else {
            return (vec![], inner.rv);
        };
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lower = match (after, ns) {
            (Some(a), _) => Excluded(a.clone()),
            (None, Some(ns)) => Included((ns.to_string(), String::new())),
            (None, None) => Unbounded,
        };
        let items = table
            .range((lower, Unbounded))
            .take_while(|((ons, _), _)| ns.is_none_or(|ns| ons == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Like [`Store::list`], restricted through the label index to objects
    /// carrying `label` (key, value).
    pub fn list_labeled(
        &self,
        key: &ResKey,
        ns: Option<&str>,
        label: (&str, &str),
        after: Option<&(String, String)>,
    ) -> (Vec<Arc<Value>>, u64) {
        let inner = self.read();
        let (Some(table), Some(idx)) = (inner.tables.get(key), inner.labels.get(key)) else {
            return (vec![], inner.rv);
        };
        let Some(ids) = idx.get(&(label.0.to_string(), label.1.to_string())) else {
            return (vec![], inner.rv);
        };
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lower = match (after, ns) {
            (Some(a), _) => Excluded(a.clone()),
            (None, Some(ns)) => Included((ns.to_string(), String::new())),
            (None, None) => Unbounded,
        };
        let items = ids
            .range((lower, Unbounded))
            .take_while(|(ons, _)| ns.is_none_or(|ns| ons == ns))
            .filter_map(|id| table.get(id).cloned())
            .collect();
        (items, inner.rv)
    }

    /// Every object of every resource (for the controllers and persistence).
    pub fn all(&self) -> Vec<(ResKey, Arc<Value>)> {
        let inner = self.read();
        inner.tables.iter().flat_map(|(k, t)| t.values().map(move |v| (k.clone(), v.clone()))).collect()
    }

    /// Where the object with this uid lives.
    pub fn locate_uid(&self, uid: &str) -> Option<(ResKey, String, String)> {
        self.read().uids.get(uid).cloned()
    }

    /// Atomically reads, decides and writes one object. The closure sees the
    /// current object and returns what to do; the store stamps
    /// `metadata.resourceVersion`, records the event and notifies watchers.
    /// Returns the resulting object (the last state for deletions) and the
    /// closure's extra value.
    pub fn mutate<T>(
        &self,
        key: &ResKey,
        ns: &str,
        name: &str,
        f: impl FnOnce(Option<&Arc<Value>>) -> ApiResult<(Write, T)>,
    ) -> ApiResult<(Option<Arc<Value>>, T)> {
        let mut inner = self.write();
        let id = (ns.to_string(), name.to_string());
        let current = inner.tables.get(key).and_then(|t| t.get(&id)).cloned();
        let (write, extra) = f(current.as_ref())?;
        let (etype, stored) = match write {
            Write::Keep => return Ok((current, extra)),
            Write::Put(mut obj) => {
                inner.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                let obj = Arc::new(obj);
                let uid = meta_str(&obj, "uid").to_string();
                if !uid.is_empty() {
                    inner.uids.insert(uid, (key.clone(), ns.to_string(), name.to_string()));
                }
                if let Some(old) = &current {
                    inner.unindex_labels(key, &id, old);
                }
                inner.index_labels(key, &id, &obj);
                inner.tables.entry(key.clone()).or_default().insert(id, obj.clone());
                (if current.is_some() { EventType::Modified } else { EventType::Added }, obj)
            }
            Write::Delete => {
                let Some(cur) = current.clone() else {
                    return Ok((None, extra));
                };
                inner.rv += 1;
                if let Some(t) = inner.tables.get_mut(key) {
                    t.remove(&id);
                }
                inner.uids.remove(meta_str(&cur, "uid"));
                inner.unindex_labels(key, &id, &cur);
                let mut last = (*cur).clone();
                last["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                (EventType::Deleted, Arc::new(last))
            }
        };
        let event = Arc::new(Event {
            rv: inner.rv,
            key: key.clone(),
            namespace: ns.to_string(),
            etype,
            object: stored.clone(),
            old: current,
            encoded: OnceLock::new(),
        });
        inner.log.push_back(event.clone());
        while inner.log.len() > self.log_capacity {
            if let Some(e) = inner.log.pop_front() {
                inner.compacted = e.rv;
            }
        }
        inner.dirty = true;
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(event);
        Ok((Some(stored), extra))
    }

    /// Starts a watch after `since`: the logged events of `key` newer than
    /// `since`, and a receiver for everything after them. 410 if `since` is
    /// older than the log.
    pub fn watch_from(&self, key: &ResKey, since: u64) -> ApiResult<WatchStart> {
        let inner = self.read();
        if since < inner.compacted {
            return Err(ApiError::expired(since, inner.compacted + 1));
        }
        let rx = self.tx.subscribe();
        let start = inner.log.partition_point(|e| e.rv <= since);
        let backlog = inner.log.range(start..).filter(|e| &e.key == key).cloned().collect();
        Ok((backlog, rx))
    }

    /// A receiver of every future event (for controllers).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Takes the "changed since last call" flag (for persistence).
    pub fn take_dirty(&self) -> bool {
        std::mem::take(&mut self.write().dirty)
    }

    /// A snapshot for persistence: `{"resourceVersion": n, "objects": [[group, plural, obj]...]}`.
    pub fn dump(&self) -> Value {
        let inner = self.read();
        let objects: Vec<Value> =
            inner.tables.iter().flat_map(|(k, t)| t.values().map(move |v| json!([k.group, k.plural, &**v]))).collect();
        json!({"resourceVersion": inner.rv, "objects": objects})
    }

    /// Restores a snapshot made by [`Store::dump`] (no events are emitted).
    pub fn load(&self, snapshot: &Value) {
        let mut inner = self.write();
        inner.rv = snapshot["resourceVersion"].as_u64().unwrap_or(0);
        inner.compacted = inner.rv;
        for entry in snapshot["objects"].as_array().into_iter().flatten() {
            let (Some(group), Some(plural)) = (entry[0].as_str(), entry[1].as_str()) else {
                continue;
            };
            let obj = entry[2].clone();
            let key = ResKey { group: group.into(), plural: plural.into() };
            let key_for_index = key.clone();
            let ns = meta_str(&obj, "namespace").to_string();
            let name = meta_str(&obj, "name").to_string();
            let uid = meta_str(&obj, "uid").to_string();
            inner.uids.insert(uid, (key.clone(), ns.clone(), name.clone()));
            inner.tables.entry(key).or_default().insert((ns.clone(), name.clone()), Arc::new(obj.clone()));
            inner.index_labels(&key_for_index, &(ns, name), &obj);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ResKey {
        ResKey { group: String::new(), plural: "configmaps".into() }
    }

    fn put(s: &Store, ns: &str, name: &str) -> Arc<Value> {
        let obj = json!({"metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}")}});
        s.mutate(&key(), ns, name, |_| Ok((Write::Put(obj), ()))).unwrap().0.unwrap()
    }

    #[test]
    fn rv_is_monotonic_and_stamped() {
        let s = Store::default();
        let a = put(&s, "a", "x");
        let b = put(&s, "b", "y");
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(b["metadata"]["resourceVersion"], "2");
        assert_eq!(s.current_rv(), 2);
    }

    #[test]
    fn list_by_namespace_and_continue() {
        let s = Store::default();
        for (ns, n) in [("a", "1"), ("a", "2"), ("b", "1")] {
            put(&s, ns, n);
        }
        assert_eq!(s.list(&key(), Some("a"), None).0.len(), 2);
        assert_eq!(s.list(&key(), None, None).0.len(), 3);
        let after = ("a".to_string(), "1".to_string());
        assert_eq!(s.list(&key(), None, Some(&after)).0.len(), 2);
        assert_eq!(s.list(&key(), Some("a"), Some(&after)).0.len(), 1);
    }

    #[test]
    fn label_index_follows_writes() {
        let s = Store::default();
        let put_l = |name: &str, app: &str| {
            let obj = json!({"metadata": {"name": name, "namespace": "a", "labels": {"app": app}}});
            s.mutate(&key(), "a", name, |_| Ok((Write::Put(obj), ()))).unwrap();
        };
        put_l("x", "web");
        put_l("y", "web");
        put_l("z", "db");
        assert_eq!(s.list_labeled(&key(), Some("a"), ("app", "web"), None).0.len(), 2);
        put_l("y", "db");
        assert_eq!(s.list_labeled(&key(), None, ("app", "web"), None).0.len(), 1);
        s.mutate(&key(), "a", "z", |_| Ok((Write::Delete, ()))).unwrap();
        assert_eq!(s.list_labeled(&key(), None, ("app", "db"), None).0.len(), 1);
        assert!(s.list_labeled(&key(), Some("b"), ("app", "db"), None).0.is_empty());
    }

    #[test]
    fn watch_resumes_and_expires() {
        let s = Store::new(2);
        for n in ["1", "2", "3"] {
            put(&s, "a", n);
        }
        let (backlog, _) = s.watch_from(&key(), 1).unwrap();
        assert_eq!(backlog.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(s.watch_from(&key(), 0).unwrap_err().code, 410);
    }

    #[test]
    fn delete_emits_last_state_with_new_rv() {
        let s = Store::default();
        put(&s, "a", "x");
        let mut rx = s.subscribe();
        let (last, ()) = s.mutate(&key(), "a", "x", |_| Ok((Write::Delete, ()))).unwrap();
        assert_eq!(last.unwrap()["metadata"]["resourceVersion"], "2");
        let e = rx.try_recv().unwrap();
        assert_eq!(e.etype, EventType::Deleted);
        assert!(e.encoded().starts_with(b"{\"type\":\"DELETED\""));
        assert!(s.locate_uid("a-x").is_none());
    }

    #[test]
    fn dump_and_load_round_trip() {
        let s = Store::default();
        put(&s, "a", "x");
        let t = Store::default();
        t.load(&s.dump());
        assert_eq!(t.current_rv(), 1);
        assert!(t.get(&key(), "a", "x").is_some());
    }
}
