//! Prometheus metrics.
//!
//! Bytes are counted by the relays where they move: each `splice(2)` or
//! write of the plain relays, each record decrypted and each read of
//! plaintext in the TLS relay.
//!
//! Names (all with the `stream` label; `listener` is the configured bind
//! address): `s2ds_bytes_total{direction}` (`client_to_target` /
//! `target_to_client`), `s2ds_connections_open`, `s2ds_connections_total`,
//! `s2ds_connections_refused_total{reason}`,
//! `s2ds_tls_handshake_failures_total`, `s2ds_ratelimit_wait_seconds_total`,
//! `s2ds_connection_duration_seconds`, `s2ds_reloads_total{result}`.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a connection was refused (the `reason` label).
pub mod reason {
    /// The config has no targets.
    pub const NO_TARGET: &str = "no-target";
    /// Connecting to the target failed (refused, unreachable, timeout, DNS).
    pub const TARGET_UNREACHABLE: &str = "target-unreachable";
    /// The TLS handshake failed for another reason than the pin.
    pub const TLS_HANDSHAKE: &str = "tls-handshake";
    /// The peer presented a certificate that does not match the pin.
    pub const PEER_CERT_MISMATCH: &str = "peer-cert-mismatch";
    /// Every reason.
    pub const ALL: [&str; 4] = [NO_TARGET, TARGET_UNREACHABLE, TLS_HANDSHAKE, PEER_CERT_MISMATCH];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    stream: String,
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    stream: String,
    listener: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    stream: String,
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    stream: String,
    result: &'static str,
}

/// The metric families, shared by every stream of one registry (clones are the same families).
#[derive(Debug, Clone)]
struct Families {
    bytes: Family<BytesLabels, Counter>,
    open: Family<ListenerLabels, Gauge>,
    total: Family<ListenerLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    tls_failures: Family<ListenerLabels, Counter>,
    ratelimit_wait: Family<StreamLabels, Counter<f64, AtomicU64>>,
    duration: Family<ListenerLabels, Histogram>,
    reloads: Family<ReloadLabels, Counter>,
}

/// One stream's view of the registry of its s2ds process: every series it creates carries its
/// `stream` label. A shared relay ([`crate::node`]) gives each stream its own view of one
/// registry ([`Metrics::for_stream`]) and drops a removed stream's series
/// ([`Metrics::forget`]).
#[derive(Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    families: Families,
    stream: String,
    /// Listeners this stream created series for, so that [`Metrics::forget`] finds them.
    listeners: Mutex<BTreeSet<String>>,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~4.6 h
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

const DIRECTIONS: [&str; 2] = ["client_to_target", "target_to_client"];
const RESULTS: [&str; 2] = ["ok", "error"];

impl Metrics {
    /// Registers every family in a new registry, for `stream`.
    pub fn new(stream: &str) -> Self {
        let mut registry = Registry::default();
        let families = Families {
            bytes: Family::default(),
            open: Family::default(),
            total: Family::default(),
            refused: Family::default(),
            tls_failures: Family::default(),
            ratelimit_wait: Family::default(),
            duration: Family::<ListenerLabels, Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            ),
            reloads: Family::default(),
        };
        let f = families.clone();
        registry.register("s2ds_bytes", "Bytes relayed", f.bytes);
        registry.register("s2ds_connections_open", "Connections being relayed", f.open);
        registry.register("s2ds_connections", "Connections accepted", f.total);
        registry.register("s2ds_connections_refused", "Connections closed before relaying, by reason", f.refused);
        registry.register(
            "s2ds_tls_handshake_failures",
            "Failed TLS handshakes (including pin mismatches)",
            f.tls_failures,
        );
        registry.register(
            "s2ds_ratelimit_wait_seconds",
            "Time relay directions spent waiting for rate-limit tokens",
            f.ratelimit_wait,
        );
        registry.register("s2ds_connection_duration_seconds", "Lifetime of relayed connections", f.duration);
        registry.register("s2ds_reloads", "Config reloads, by result", f.reloads);
        Self { registry: Arc::new(registry), families, stream: stream.to_owned(), listeners: Mutex::default() }
    }

    /// The same registry and families, for another stream.
    pub fn for_stream(&self, stream: &str) -> Self {
        Self {
            registry: self.registry.clone(),
            families: self.families.clone(),
            stream: stream.to_owned(),
            listeners: Mutex::default(),
        }
    }

    /// The stream this view labels its series with.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Removes every series of this stream from the registry (a shared relay's stream is
    /// gone: its figures must not stay exported, nor grow the registry with every stream
    /// that ever ran).
    pub fn forget(&self) {
        let f = &self.families;
        let stream = || self.stream.clone();
        let listeners = std::mem::take(&mut *self.listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for listener in listeners {
            let l = ListenerLabels { stream: stream(), listener: listener.clone() };
            f.open.remove(&l);
            f.total.remove(&l);
            f.tls_failures.remove(&l);
            f.duration.remove(&l);
            for direction in DIRECTIONS {
                f.bytes.remove(&BytesLabels { stream: stream(), listener: listener.clone(), direction });
            }
            for reason in reason::ALL {
                f.refused.remove(&RefusedLabels { stream: stream(), listener: listener.clone(), reason });
            }
        }
        f.ratelimit_wait.remove(&StreamLabels { stream: stream() });
        for result in RESULTS {
            f.reloads.remove(&ReloadLabels { stream: stream(), result });
        }
    }

    /// The counter the rate limiter adds its waiting time to.
    pub fn ratelimit_wait(&self) -> Counter<f64, AtomicU64> {
        self.families.ratelimit_wait.get_or_create(&StreamLabels { stream: self.stream.clone() }).clone()
    }

    /// Counts a reload attempt (`result` is `ok` or `error`).
    pub fn reload(&self, result: &'static str) {
        self.families.reloads.get_or_create(&ReloadLabels { stream: self.stream.clone(), result }).inc();
    }

    /// Pre-resolved handles for one listener (no label lookups per byte).
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        self.listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(listener.to_owned());
        let f = &self.families;
        let l = ListenerLabels { stream: self.stream.clone(), listener: listener.to_owned() };
        let bytes = |direction| {
            f.bytes
                .get_or_create(&BytesLabels { stream: self.stream.clone(), listener: listener.to_owned(), direction })
                .clone()
        };
        ListenerMetrics {
            to_target: bytes(DIRECTIONS[0]),
            to_client: bytes(DIRECTIONS[1]),
            open: f.open.get_or_create(&l).clone(),
            total: f.total.get_or_create(&l).clone(),
            tls_failures: f.tls_failures.get_or_create(&l).clone(),
            duration: f.duration.get_or_create(&l).clone(),
            refused: f.refused.clone(),
            labels: l,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Metric handles of one listener.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    /// Bytes read from the accepted side (and written to the target).
    pub to_target: Counter,
    /// Bytes read from the target (and written to the accepted side).
    pub to_client: Counter,
    /// Open connections.
    pub open: Gauge,
    /// Accepted connections.
    pub total: Counter,
    /// Failed TLS handshakes.
    pub tls_failures: Counter,
    /// Connection lifetimes.
    pub duration: Histogram,
    refused: Family<RefusedLabels, Counter>,
    labels: ListenerLabels,
}

impl ListenerMetrics {
    /// Counts a refused connection.
    pub fn refused(&self, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels {
                stream: self.labels.stream.clone(),
                listener: self.labels.listener.clone(),
                reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_counters_are_encoded_with_their_labels() {
        let m = Metrics::new("s1");
        let lm = m.listener("127.0.0.1:1");
        lm.to_target.inc_by(5);
        assert_eq!(lm.to_target.get(), 5);
        lm.refused(reason::NO_TARGET);
        let text = m.encode();
        assert!(
            text.contains(r#"s2ds_bytes_total{stream="s1",listener="127.0.0.1:1",direction="client_to_target"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"s2ds_connections_refused_total{stream="s1",listener="127.0.0.1:1",reason="no-target"} 1"#)
        );
    }

    #[test]
    fn streams_share_one_registry_and_a_forgotten_stream_leaves_it() {
        let s1 = Metrics::new("s1");
        let s2 = s1.for_stream("s2");
        s1.listener("127.0.0.1:1").to_target.inc_by(5);
        let l2 = s2.listener("127.0.0.1:2");
        l2.to_target.inc_by(7);
        l2.refused(reason::TARGET_UNREACHABLE);
        s2.reload("ok");
        let _ = s2.ratelimit_wait();
        let text = s1.encode();
        assert_eq!(text, s2.encode(), "one exposition for every stream");
        assert_eq!(text.matches("# TYPE s2ds_bytes counter").count(), 1, "each family once: {text}");
        assert!(
            text.contains(r#"s2ds_bytes_total{stream="s2",listener="127.0.0.1:2",direction="client_to_target"} 7"#)
        );
        s2.forget();
        let text = s1.encode();
        assert!(!text.contains(r#"stream="s2""#), "no series of the forgotten stream: {text}");
        assert!(
            text.contains(r#"s2ds_bytes_total{stream="s1",listener="127.0.0.1:1",direction="client_to_target"} 5"#)
        );
    }
}
