//! WATCH streams: resume from a resourceVersion (410 if too old), synthetic
//! ADDED events for "start from now" watches, `sendInitialEvents` with the
//! `k8s.io/initial-events-end` bookmark, periodic bookmarks, selector
//! transitions (an object leaving the selection is DELETED), timeouts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::read::parse_rv;
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::Shared;
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, EventType};
use crate::table::{self, IncludeObject};

/// WATCH options.
#[derive(Debug, Clone)]
pub struct WatchOpts {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion` ("" or "0" = start from the current state).
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: bool,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// Table output for each event.
    pub table: Option<IncludeObject>,
    /// Period of bookmarks.
    pub bookmark_every: Duration,
}

struct Watcher {
    info: Arc<ResourceInfo>,
    ns: Option<String>,
    o: WatchOpts,
}

impl Watcher {
    fn selected(&self, obj: &Value) -> bool {
        self.o.labels.matches(obj) && self.o.fields.matches(obj)
    }

    fn line(&self, etype: &str, obj: &Value) -> Bytes {
        let object = match self.o.table {
            Some(inc) => table::table(&self.info, &[Arc::new(obj.clone())], 0, None, inc),
            None => crate::state::as_version(obj, &self.info),
        };
        let mut v = serde_json::to_vec(&json!({"type": etype, "object": object})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    /// The line to send for a store event, if this watcher sees it.
    fn render(&self, e: &Event) -> Option<Bytes> {
        if e.key != self.info.key() || self.ns.as_deref().is_some_and(|ns| ns != e.namespace) {
            return None;
        }
        let now = self.selected(&e.object);
        let before = e.old.as_ref().is_some_and(|o| self.selected(o));
        let etype = match (e.etype, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            (EventType::Deleted, _, true) => EventType::Deleted,
            _ => return None,
        };
        let same_version = e.object["apiVersion"].as_str() == Some(&self.info.api_version());
        if etype == e.etype && self.o.table.is_none() && same_version {
            return Some(e.encoded().clone());
        }
        Some(self.line(etype.as_str(), &e.object))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta});
        let mut v = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn error_line(e: &ApiError) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Starts a watch; returns the channel of lines to stream. Errors detected
/// before streaming (bad resourceVersion, 410) are returned directly.
pub fn start(
    state: Shared,
    info: Arc<ResourceInfo>,
    ns: Option<String>,
    o: WatchOpts,
) -> ApiResult<mpsc::Receiver<Bytes>> {
    let rv = o.resource_version.as_deref().filter(|s| !s.is_empty() && *s != "0").map(parse_rv).transpose()?;
    if o.send_initial_events && !o.bookmarks {
        return Err(ApiError::invalid(
            &info,
            "",
            vec![crate::status::Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true".into(),
                field: "allowWatchBookmarks".into(),
            }],
        ));
    }
    let w = Watcher { info, ns, o };
    let mut initial = vec![];
    let since = match rv {
        Some(rv) if !w.o.send_initial_events => rv,
        _ => {
            let (items, snapshot_rv) = state.store.list(&w.info.key(), w.ns.as_deref(), None);
            initial = items.into_iter().filter(|i| w.selected(i)).collect();
            snapshot_rv
        }
    };
    let (tx, out) = mpsc::channel(256);
    // As the real watch cache does, a too old version is an ERROR event
    // in a 200 response, not an HTTP error.
    let (backlog, rx) = match state.store.watch_from(&w.info.key(), since) {
        Ok(x) => x,
        Err(e) if e.code == 410 => {
            let _ = tx.try_send(error_line(&e));
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    tokio::spawn(run(w, initial, since, backlog, rx, tx));
    Ok(out)
}

async fn run(
    w: Watcher,
    initial: Vec<Arc<Value>>,
    since: u64,
    backlog: Vec<Arc<Event>>,
    mut rx: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Bytes>,
) {
    for obj in &initial {
        if tx.send(w.line("ADDED", obj)).await.is_err() {
            return;
        }
    }
    if w.o.send_initial_events && tx.send(w.bookmark(since, true)).await.is_err() {
        return;
    }
    let mut last = since;
    for e in backlog {
        last = last.max(e.rv);
        if let Some(line) = w.render(&e)
            && tx.send(line).await.is_err()
        {
            return;
        }
    }
    let deadline = tokio::time::sleep(w.o.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(w.o.bookmark_every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = ticker.tick(), if w.o.bookmarks && w.o.table.is_none() => {
                if tx.send(w.bookmark(last, false)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            msg = rx.recv() => match msg {
                Ok(e) => {
                    if e.rv <= last {
                        continue;
                    }
                    last = e.rv;
                    if let Some(line) = w.render(&e)
                        && tx.send(line).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.send(error_line(&ApiError::expired(last, last + 1))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
