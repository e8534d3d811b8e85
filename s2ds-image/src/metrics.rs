//! Prometheus metrics and the counting IO wrapper.
//!
//! Bytes are counted at the IO boundary: [`Counted`] wraps a stream and
//! counts what is read from it, so the copy loop carries no counters. The
//! splice path never sees the bytes in userspace; it reports the amount each
//! `splice(2)` moved to the same counter.
//!
//! Names (all with the `stream` label; `listener` is the configured bind
//! address): `s2ds_bytes_total{direction}` (`client_to_target` /
//! `target_to_client`), `s2ds_connections_open`, `s2ds_connections_total`,
//! `s2ds_connections_refused_total{reason}`,
//! `s2ds_tls_handshake_failures_total`, `s2ds_ratelimit_wait_seconds_total`,
//! `s2ds_connection_duration_seconds`, `s2ds_reloads_total{result}`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// An IO stream that counts the bytes read from it.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    read: Counter,
}

impl<S> Counted<S> {
    /// Wraps `inner`, adding every byte read to `read`.
    pub fn new(inner: S, read: Counter) -> Self {
        Self { inner, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            self.read.inc_by((buf.filled().len() - before) as u64);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counted_counts_reads_and_passes_writes() {
        let m = Metrics::new("s1");
        let lm = m.listener("127.0.0.1:1");
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Counted::new(a, lm.to_target.clone());
        b.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        a.read_exact(&mut buf).await.unwrap();
        a.write_all(b"xy").await.unwrap();
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
