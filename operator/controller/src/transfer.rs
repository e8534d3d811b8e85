//! Transfer statistics: every interval, the leader reads the bytes relayed by each Ready
//! stream's s2ds relays from their metrics endpoints and records bytes and throughput in
//! `status.transfer` (its own field manager, so reconciles never fight over it). A stream's
//! own relays (per-stream model) are read at the metrics port it holds on each node; shared
//! relays are read once per node and interval, whatever the number of their streams, and
//! each stream takes its own series (`stream="STREAM.ROLE"`). The same loop keeps the
//! streams-by-phase gauge current.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use scistream_api::{Implementation, Phase, Rate, StreamRequest, stream_request::TransferStatus};
use tokio_util::sync::CancellationToken;

use crate::{context::Context, metrics::PhaseLabels};

/// Field manager of `status.transfer`.
pub const FIELD_MANAGER: &str = "scistream-operator-transfer";

/// Bytes relayed from the producer towards the consumer on one s2ds `/metrics` page: the
/// `target_to_client` direction on both sides (producer side: the producer application is
/// the target; consumer side: the peer gateway is), by stream. A shared relay's page has every
/// stream's series and is read once for all of them.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    by_stream: HashMap<String, u64>,
    total: u64,
}

impl Page {
    /// Reads a whole page (malformed lines are skipped, not summed).
    pub fn parse(metrics: &str) -> Self {
        let mut reader = PageReader::default();
        reader.feed(metrics.as_bytes());
        reader.finish()
    }

    /// Counts one line of a page, if it is a byte counter of the producer-to-consumer direction.
    fn add_line(&mut self, line: &str) {
        let Some((labels, value)) = line.strip_prefix("s2ds_bytes_total{").and_then(|l| l.split_once('}')) else {
            return;
        };
        let label =
            |name: &str| labels.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'));
        if label("direction") != Some("target_to_client") {
            return;
        }
        let Some(bytes) = value.trim().split(' ').next().and_then(|v| v.parse::<f64>().ok()) else { return };
        let bytes = bytes as u64;
        self.total += bytes;
        if let Some(stream) = label("stream") {
            *self.by_stream.entry(stream.to_owned()).or_default() += bytes;
        }
    }

    /// `stream`'s bytes (`STREAM.ROLE` on a shared relay), or every series' (`None`: a relay
    /// of one stream).
    pub fn bytes(&self, stream: Option<&str>) -> u64 {
        match stream {
            Some(s) => self.by_stream.get(s).copied().unwrap_or(0),
            None => self.total,
        }
    }
}

/// Reads a page as it arrives, a line at a time. A shared relay's page has series for each of
/// its streams (about 3.5 MB with 2,500 streams); holding it whole, as bytes and again as text,
/// was the largest transient allocation of the operator at 5,000 streams (heaptrack). A line
/// longer than [`PageReader::MAX_LINE`] is skipped whole (no series of s2ds is near it), so a
/// page without line breaks costs no more than that.
#[derive(Debug, Default)]
pub struct PageReader {
    page: Page,
    line: Vec<u8>,
    overlong: bool,
}

impl PageReader {
    /// The longest line kept.
    pub const MAX_LINE: usize = 4096;

    /// Reads the next bytes of the page.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.push(&chunk[..end]);
            self.end_line();
            chunk = &chunk[end + 1..];
        }
        self.push(chunk);
    }

    /// The page read (its last line need not end with a line break).
    pub fn finish(mut self) -> Page {
        self.end_line();
        self.page
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.overlong || self.line.len() + bytes.len() > Self::MAX_LINE {
            self.overlong = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self) {
        if !self.overlong
            && let Ok(line) = std::str::from_utf8(&self.line)
        {
            self.page.add_line(line.trim_end_matches('\r'));
        }
        self.line.clear();
        self.overlong = false;
    }
}

/// Whether `recorded` already says what a sample of `bytes` would: the same bytes, and no
/// throughput or none (`0bps`, which is no valid `Rate` to parse: rates start at 1kbps). A
/// stream that has relayed nothing and has no record needs none: thousands of streams set up
/// and not yet used cost no write each.
pub fn unchanged(recorded: Option<&TransferStatus>, bytes: u64) -> bool {
    let Some(recorded) = recorded else { return bytes == 0 };
    recorded.bytes == i64::try_from(bytes).unwrap_or(i64::MAX)
        && recorded.throughput.as_deref().is_none_or(|r| r == Rate::from_bps(0).to_string())
}

/// Throughput between two samples (None on the first sample or after a counter reset).
pub fn throughput(previous: Option<(u64, Instant)>, bytes: u64, at: Instant) -> Option<Rate> {
    let (before, then) = previous?;
    let secs = at.checked_duration_since(then)?.as_secs_f64();
    if bytes < before || secs <= 0.0 {
        return None;
    }
    Some(Rate::from_bps(((bytes - before) as f64 * 8.0 / secs) as u64))
}

type Http = HttpClient<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// The relays' pages read in one interval: a shared relay's page is read once for all its
/// streams (and a relay that did not answer is not asked again until the next interval).
struct Pages<'a> {
    http: &'a Http,
    read: HashMap<String, Option<Page>>,
}

impl Pages<'_> {
    async fn get(&mut self, url: String) -> Option<&Page> {
        if !self.read.contains_key(&url) {
            let page = fetch(self.http, &url).await;
            self.read.insert(url.clone(), page);
        }
        self.read.get(&url)?.as_ref()
    }
}

/// Reads the page at `url` as it arrives (none if the relay does not answer in time).
async fn fetch(http: &Http, url: &str) -> Option<Page> {
    let uri: hyper::Uri = url.parse().ok()?;
    let response = tokio::time::timeout(Duration::from_secs(2), http.get(uri)).await.ok()?.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut body = response.into_body();
    let mut reader = PageReader::default();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.ok()?.into_data() {
                reader.feed(&data);
            }
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(2), read).await.ok()??;
    Some(reader.finish())
}

/// Runs until `token` is cancelled.
pub async fn run(ctx: Arc<Context>, interval: Duration, token: CancellationToken) {
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut previous: HashMap<String, (u64, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let requests = ctx.stores.requests.state();
        let mut phases: BTreeMap<String, i64> = BTreeMap::new();
        for sr in &requests {
            let phase = sr.status.as_ref().and_then(|s| s.phase).unwrap_or(Phase::Pending);
            *phases.entry(format!("{phase:?}")).or_default() += 1;
        }
        for phase in ["Pending", "AwaitingHello", "Provisioning", "Ready", "Failed", "Releasing"] {
            ctx.metrics
                .streams
                .get_or_create(&PhaseLabels { phase: phase.to_owned() })
                .set(phases.get(phase).copied().unwrap_or(0));
        }
        let mut pages = Pages { http: &http, read: HashMap::new() };
        for sr in requests.iter().filter(|sr| sr.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)) {
            let Some(bytes) = sample(&ctx, &mut pages, sr).await else { continue };
            // An idle stream costs no write: the figures are recorded when they change.
            if unchanged(sr.status.as_ref().and_then(|s| s.transfer.as_ref()), bytes) {
                previous.insert(sr.uid().unwrap_or_default(), (bytes, Instant::now()));
                continue;
            }
            let uid = sr.uid().unwrap_or_default();
            let now = Instant::now();
            let rate = throughput(previous.get(&uid).copied(), bytes, now);
            previous.insert(uid, (bytes, now));
            record(&ctx, sr, bytes, rate).await;
        }
        let live: std::collections::HashSet<String> = requests.iter().filter_map(|r| r.uid()).collect();
        previous.retain(|uid, _| live.contains(uid));
    }
}

/// Sum over the stream's relays, or None when a relay cannot be read (no partial sums).
async fn sample(ctx: &Context, pages: &mut Pages<'_>, sr: &StreamRequest) -> Option<u64> {
    let gateway = ctx.stores.gateways.get(&ObjectRef::new(&sr.spec.gateway))?;
    if gateway.spec.implementation != Implementation::S2ds {
        return None;
    }
    let shared = gateway.spec.shared_metrics_port().is_some();
    let key = shared.then(|| crate::stream::shared::key(&sr.spec.stream_id, sr.spec.role));
    let nodes = &gateway.status.as_ref()?.nodes;
    let mut total = 0;
    for allocation in &sr.status.as_ref()?.allocations {
        let node = nodes.iter().find(|n| n.name == allocation.node)?;
        let url = if shared {
            // Where the node's shared relay was told to serve.
            format!("http://{}/metrics", crate::gateway::node_relays::metrics_address(&gateway.spec, node)?)
        } else {
            let (lan, port) = (node.lan_address.as_deref()?, allocation.metrics_port?);
            let host = if lan.contains(':') { format!("[{lan}]") } else { lan.to_owned() };
            format!("http://{host}:{port}/metrics")
        };
        total += pages.get(url).await?.bytes(key.as_deref());
    }
    Some(total)
}

async fn record(ctx: &Context, sr: &StreamRequest, bytes: u64, rate: Option<Rate>) {
    let Some(ns) = sr.namespace() else { return };
    let api: Api<StreamRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let mut transfer = serde_json::json!({
        "bytes": i64::try_from(bytes).unwrap_or(i64::MAX),
        "sampledTime": Time(Timestamp::now()),
    });
    if let Some(rate) = rate {
        transfer["throughput"] = serde_json::Value::String(rate.to_string());
    }
    let body = serde_json::json!({"apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest", "status": {"transfer": transfer}});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(e) = api.patch_status(&sr.name_any(), &params, &Patch::Apply(&body)).await {
        tracing::debug!(error = %e, stream = %sr.spec.stream_id, "could not record transfer statistics");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_producer_to_consumer_direction_only() {
        let page = "# HELP s2ds_bytes_total bytes\n\
            s2ds_bytes_total{stream=\"s\",listener=\"0\",direction=\"target_to_client\"} 1000\n\
            s2ds_bytes_total{stream=\"s\",listener=\"1\",direction=\"target_to_client\"} 24\n\
            s2ds_bytes_total{stream=\"s\",listener=\"0\",direction=\"client_to_target\"} 7\n\
            s2ds_connections_open{stream=\"s\",listener=\"0\"} 1\n";
        let page = Page::parse(page);
        assert_eq!(page.bytes(None), 1024);
        assert_eq!(page.bytes(Some("s")), 1024);
        assert_eq!(Page::parse("").bytes(None), 0);
    }

    #[test]
    fn a_shared_relay_page_gives_each_stream_its_own_series() {
        let page = "# TYPE s2ds_bytes_total counter\n\
            s2ds_bytes_total{stream=\"a.producer\",listener=\"0\",direction=\"target_to_client\"} 1000\n\
            s2ds_bytes_total{stream=\"a.producer\",listener=\"1\",direction=\"target_to_client\"} 24\n\
            s2ds_bytes_total{stream=\"a.consumer\",listener=\"0\",direction=\"target_to_client\"} 1e3\n\
            s2ds_bytes_total{stream=\"ab.producer\",listener=\"0\",direction=\"target_to_client\"} 5\n\
            s2ds_bytes_total{stream=\"a.producer\",listener=\"0\",direction=\"client_to_target\"} 7\n\
            s2ds_bytes_total_created{stream=\"a.producer\",listener=\"0\",direction=\"target_to_client\"} 1.7e9\n\
            s2ds_bytes_total{stream=\"a.producer\",listener=\"2\",direction=\"target_to_client\"} 3 1733550000000\n";
        let page = Page::parse(page);
        assert_eq!(page.bytes(Some("a.producer")), 1027, "its series only, a timestamp ignored");
        assert_eq!(page.bytes(Some("a.consumer")), 1000, "the other side of the stream");
        assert_eq!(page.bytes(Some("ab.producer")), 5, "a name that extends another's");
        assert_eq!(page.bytes(Some("b.producer")), 0);
        assert_eq!(page.bytes(None), 2032, "every series of the page");
        // Malformed lines are skipped, not summed.
        assert_eq!(Page::parse("s2ds_bytes_total{direction=\"target_to_client\" 5\n").bytes(None), 0);
    }

    #[test]
    fn a_page_read_in_pieces_counts_as_the_whole() {
        let page = "# TYPE s2ds_bytes_total counter\r\n\
            s2ds_bytes_total{stream=\"a.producer\",listener=\"0\",direction=\"target_to_client\"} 1000\r\n\
            s2ds_bytes_total{stream=\"b.producer\",listener=\"0\",direction=\"target_to_client\"} 24\n\
            s2ds_bytes_total{stream=\"b.producer\",listener=\"1\",direction=\"target_to_client\"} 3";
        let whole = Page::parse(page);
        assert_eq!((whole.bytes(Some("a.producer")), whole.bytes(Some("b.producer"))), (1000, 27));
        for size in 1..=page.len() {
            let mut reader = PageReader::default();
            page.as_bytes().chunks(size).for_each(|c| reader.feed(c));
            assert_eq!(reader.finish(), whole, "pieces of {size} bytes");
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_read() {
        let series = |stream: &str, n: u64| {
            format!("s2ds_bytes_total{{stream=\"{stream}\",listener=\"0\",direction=\"target_to_client\"}} {n}\n")
        };
        let padded =
            format!("s2ds_bytes_total{{stream=\"x\",pad=\"{}\",direction=\"target_to_client\"}} 9\n", "p".repeat(5000));
        let mut reader = PageReader::default();
        for piece in [series("a", 1), padded, series("b", 2), "z".repeat(10 * PageReader::MAX_LINE)] {
            piece.as_bytes().chunks(1000).for_each(|c| reader.feed(c));
        }
        assert!(reader.line.capacity() <= 2 * PageReader::MAX_LINE, "bounded: {}", reader.line.capacity());
        let page = reader.finish();
        assert_eq!((page.bytes(Some("a")), page.bytes(Some("x")), page.bytes(Some("b"))), (1, 0, 2));
        assert_eq!(page.bytes(None), 3);
    }

    #[test]
    fn an_idle_stream_is_not_written_again() {
        let recorded = |bytes: i64, throughput: Option<&str>| TransferStatus {
            bytes,
            throughput: throughput.map(str::to_owned),
            sampled_time: None,
        };
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        // What the poller writes for a stream whose bytes did not move.
        let idle = throughput(Some((5, t0)), 5, t1).map(|r| r.to_string());
        assert_eq!(idle.as_deref(), Some("0bps"));
        for (status, bytes, same) in [
            (None, 0, true),
            (None, 1, false),
            (Some(recorded(0, None)), 0, true),
            (Some(recorded(5, idle.as_deref())), 5, true),
            (Some(recorded(5, idle.as_deref())), 6, false),
            (Some(recorded(5, Some("1.2Gbps"))), 5, false),
            (Some(recorded(5, Some("800bps"))), 5, false),
        ] {
            assert_eq!(unchanged(status.as_ref(), bytes), same, "{status:?} then {bytes}");
        }
    }

    #[test]
    fn throughput_needs_two_increasing_samples() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(throughput(None, 10, t1), None);
        assert_eq!(throughput(Some((0, t0)), 250_000_000, t1), Some(Rate::from_bps(1_000_000_000)));
        assert_eq!(throughput(Some((500, t0)), 100, t1), None, "counter reset (relay restarted)");
    }
}
