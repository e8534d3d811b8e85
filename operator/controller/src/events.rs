//! Publishes `events.k8s.io/v1` Events about the operator's objects.
//!
//! Kubernetes' own publishers (client-go's `tools/events` broadcaster, and kube-runtime's
//! `Recorder` after it) make an event seen again within a few minutes one object: the second
//! occurrence patches the first with `series: {count, lastObservedTime}` instead of creating
//! another. The key is who reported it, what it is about, its type and reason; the note is not
//! part of it. kube-runtime 5.0 does this by keeping every Event it published for 6 minutes,
//! whole, and scanning all of them on every publish. At 5,000 streams that was 10,000 Events
//! and 23.6 MiB of the operator's heap (heaptrack, `docs/performance.md`), and a scan per
//! publish that grows with the number of streams.
//!
//! [`Publisher`] keeps the same behaviour with less: per event only what a repeat needs (its
//! object's name and namespace, the count, when it was last seen), for at most
//! [`DEFAULT_CAPACITY`] events, the least recently published dropped first; an entry older
//! than [`SERIES_WINDOW`] is a new event. A repeat sends a merge patch of `series` alone, or
//! creates the event again if the first one is gone. What the cache forgets only costs a new
//! Event object where a series would have been.
//!
//! The decision is pure ([`Seen::next`]) and table-tested; [`Publisher::publish`] does the I/O.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lru::LruCache;

/// How long a repeated event still joins the first one's series (client-go's and
/// kube-runtime's 6 minutes).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// How many events are remembered for series: more than the events published in
/// [`SERIES_WINDOW`] by an operator that is not churning thousands of streams.
pub const DEFAULT_CAPACITY: NonZeroUsize = NonZeroUsize::new(2048).expect("non-zero");

/// An event's severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something happened as expected.
    Normal,
    /// Something went wrong, or needs the user.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// What identifies an event for its series (the reporter is the same for every key of one
/// publisher).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    /// The object's uid, or `namespace/name` when it has none.
    regarding: String,
    type_: EventType,
    reason: String,
    action: String,
}

/// What is remembered of a published event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The Event object's name.
    name: String,
    /// How many times it has been seen (1 before any repeat).
    count: i32,
    /// When it was last seen.
    last: Timestamp,
}

/// What publishing an event does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Send {
    /// Create a new Event object.
    Create,
    /// Patch the series of Event `name` to `count`.
    Series {
        /// The Event object first published.
        name: String,
        /// The new count (2 on the first repeat).
        count: i32,
    },
}

impl Seen {
    /// What to send for an event last seen as `seen` (if remembered), at `now`.
    pub fn next(seen: Option<&Seen>, now: Timestamp) -> Send {
        match seen {
            Some(s) if s.last + SERIES_WINDOW > now => {
                Send::Series { name: s.name.clone(), count: s.count.saturating_add(1) }
            }
            _ => Send::Create,
        }
    }
}

/// Publishes events, remembering a bounded number for their series.
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    seen: Mutex<LruCache<Key, Seen>>,
}

/// One event to publish.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// Its severity.
    pub type_: EventType,
    /// A short CamelCase reason.
    pub reason: &'a str,
    /// What happened, for a human; cut to the API's 1 kB.
    pub note: &'a str,
    /// What the reporter was doing.
    pub action: &'a str,
}

impl Publisher {
    /// A publisher reporting as `controller` (the `reportingController`), instance `instance`,
    /// remembering at most `capacity` events.
    pub fn new(client: Client, controller: String, instance: String, capacity: NonZeroUsize) -> Self {
        Self { client, controller, instance, seen: Mutex::new(LruCache::new(capacity)) }
    }

    /// How many events are remembered.
    pub fn remembered(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or_default()
    }

    /// Publishes `ev` about `regarding`, in its namespace (`default` for a cluster-scoped
    /// object).
    pub async fn publish(&self, ev: Event<'_>, regarding: &ObjectReference) -> kube::Result<()> {
        let now = Timestamp::now();
        let key = Key {
            regarding: regarding.uid.clone().unwrap_or_else(|| {
                format!("{}/{}", regarding.namespace.as_deref().unwrap_or(""), regarding.name.as_deref().unwrap_or(""))
            }),
            type_: ev.type_,
            reason: ev.reason.to_owned(),
            action: ev.action.to_owned(),
        };
        let send = {
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Seen::next(seen.get(&key), now)
        };
        let ns = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), ns);
        let seen = match send {
            Send::Create => self.create(&api, ev, regarding, now).await?,
            Send::Series { name, count } => {
                let patch = serde_json::json!({
                    "series": EventSeries { count, last_observed_time: MicroTime(now) },
                });
                match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => Seen { name, count, last: now },
                    // The first Event is gone (deleted, or expired by the API server's event
                    // TTL): this one starts a new series.
                    Err(kube::Error::Api(e)) if e.code == 404 => self.create(&api, ev, regarding, now).await?,
                    Err(e) => return Err(e),
                }
            }
        };
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).put(key, seen);
        Ok(())
    }

    /// Creates the first Event of a series.
    async fn create(
        &self,
        api: &Api<K8sEvent>,
        ev: Event<'_>,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> kube::Result<Seen> {
        let event = self.event(ev, regarding, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &event).await?;
        Ok(Seen { name, count: 1, last: now })
    }

    /// The Event object first published for `ev`.
    fn event(&self, ev: Event<'_>, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(ev.action.to_owned()),
            reason: Some(ev.reason.to_owned()),
            note: Some(ev.note.chars().take(1000).collect()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(ev.type_.as_str().to_owned()),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("in range")
    }

    fn seen(count: i32, last: i64) -> Seen {
        Seen { name: "sr.1a".into(), count, last: at(last) }
    }

    #[test]
    fn a_repeat_within_the_window_joins_the_series() {
        let window = SERIES_WINDOW.as_secs();
        let cases: [(&str, Option<Seen>, i64, Send); 5] = [
            ("never seen", None, 0, Send::Create),
            ("first repeat", Some(seen(1, 0)), 10, Send::Series { name: "sr.1a".into(), count: 2 }),
            ("later repeat", Some(seen(7, 0)), window - 1, Send::Series { name: "sr.1a".into(), count: 8 }),
            ("window over", Some(seen(7, 0)), window, Send::Create),
            ("count saturates", Some(seen(i32::MAX, 0)), 1, Send::Series { name: "sr.1a".into(), count: i32::MAX }),
        ];
        for (what, last, now, want) in cases {
            assert_eq!(Seen::next(last.as_ref(), at(now)), want, "{what}");
        }
    }
}
