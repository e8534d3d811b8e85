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

use std::sync::atomic::AtomicU64;

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

/// The registry and metric families of one s2ds process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    stream: String,
    bytes: Family<BytesLabels, Counter>,
    open: Family<ListenerLabels, Gauge>,
    total: Family<ListenerLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    tls_failures: Family<ListenerLabels, Counter>,
    ratelimit_wait: Family<StreamLabels, Counter<f64, AtomicU64>>,
    duration: Family<ListenerLabels, Histogram>,
    reloads: Family<ReloadLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~4.6 h
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

impl Metrics {
    /// Registers every family for `stream`.
    pub fn new(stream: &str) -> Self {
        let mut registry = Registry::default();
        let bytes = Family::default();
        let open = Family::default();
        let total = Family::default();
        let refused = Family::default();
        let tls_failures = Family::default();
        let ratelimit_wait = Family::default();
        let duration =
            Family::<ListenerLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
        let reloads = Family::default();
        registry.register("s2ds_bytes", "Bytes relayed", bytes.clone());
        registry.register("s2ds_connections_open", "Connections being relayed", open.clone());
        registry.register("s2ds_connections", "Connections accepted", total.clone());
        registry.register("s2ds_connections_refused", "Connections closed before relaying, by reason", refused.clone());
        registry.register(
            "s2ds_tls_handshake_failures",
            "Failed TLS handshakes (including pin mismatches)",
            tls_failures.clone(),
        );
        registry.register(
            "s2ds_ratelimit_wait_seconds",
            "Time relay directions spent waiting for rate-limit tokens",
            ratelimit_wait.clone(),
        );
        registry.register("s2ds_connection_duration_seconds", "Lifetime of relayed connections", duration.clone());
        registry.register("s2ds_reloads", "Config reloads, by result", reloads.clone());
        Self {
            registry,
            stream: stream.to_owned(),
            bytes,
            open,
            total,
            refused,
            tls_failures,
            ratelimit_wait,
            duration,
            reloads,
        }
    }

    /// The counter the rate limiter adds its waiting time to.
    pub fn ratelimit_wait(&self) -> Counter<f64, AtomicU64> {
        self.ratelimit_wait.get_or_create(&StreamLabels { stream: self.stream.clone() }).clone()
    }

    /// Counts a reload attempt (`result` is `ok` or `error`).
    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { stream: self.stream.clone(), result }).inc();
    }

    /// Pre-resolved handles for one listener (no label lookups per byte).
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        let l = ListenerLabels { stream: self.stream.clone(), listener: listener.to_owned() };
        let bytes = |direction| {
            self.bytes
                .get_or_create(&BytesLabels { stream: self.stream.clone(), listener: listener.to_owned(), direction })
                .clone()
        };
        ListenerMetrics {
            to_target: bytes("client_to_target"),
            to_client: bytes("target_to_client"),
            open: self.open.get_or_create(&l).clone(),
            total: self.total.get_or_create(&l).clone(),
            tls_failures: self.tls_failures.get_or_create(&l).clone(),
            duration: self.duration.get_or_create(&l).clone(),
            refused: self.refused.clone(),
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
}
