//! Thousands of streams against one Gateway: an embedded API server that counts requests, a
//! node agent reporting relay pods Ready without running them, and the operator as its own
//! process (its CPU time and peak memory read from `/proc`). Producer requests with static
//! targets, Plain, one connection: the smallest stream, so what is measured is the control
//! plane. With shared relays (`--relays shared`) the Gateway's two shared relays are real
//! `s2ds node` processes: every stream is set on them over the relay channel, binds its
//! listener there and is Ready when the relay reports it so.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use scistream_api::{Gateway, Phase, StreamRequest, keys};
use scistream_nodeagent::{NetworkMode, NodeAgent, NodeSpec, Topology};
use scistream_testcluster::TestCluster;
use serde_json::json;

use super::{ProcessUsage, counter, is_write, quantile, requests_between, usage};

const NS: &str = "science";
const GATEWAY_NS: &str = "scistream-gateway";
/// User-Agent products, as the API server counts them.
const OPERATOR: &str = "scistream-operator";
const AGENT: &str = "nodeagent";

/// When each stream got where.
#[derive(Clone, Copy, Debug, Default)]
struct Times {
    created: Option<Instant>,
    reserved: Option<Instant>,
    ready: Option<Instant>,
}

/// One facility for the benchmark.
pub struct Facility {
    cluster: TestCluster,
    client: Client,
    agent: Option<NodeAgent>,
    operator: tokio::process::Child,
    operator_pid: u32,
    metrics: std::net::SocketAddr,
    times: Arc<Mutex<HashMap<String, Times>>>,
    watch: tokio::task::JoinHandle<()>,
    /// Shared relays: where each serves `/readyz` (which counts its streams).
    shared: bool,
}

async fn client_as(cluster: &TestCluster, agent: &'static str) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path())?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(agent)));
    Ok(Client::try_from(config)?)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Facility {
    /// The API server, CRDs, namespaces, two simulated gateway nodes, the operator (`operator`
    /// binary, its own process) and a Gateway with ports 10000-60000 on each node; on shared
    /// relays run from `shared_s2ds` when given.
    pub async fn start(operator: &Path, root: &Path, shared_s2ds: Option<&Path>) -> anyhow::Result<Facility> {
        let cluster = TestCluster::builder().name("bench").watch_cache_size(1 << 20).start().await?;
        let client = client_as(&cluster, "scistream-bench").await?;
        for file in ["gateways.scistream.io.yaml", "streamrequests.scistream.io.yaml"] {
            let text = std::fs::read_to_string(root.join("crds").join(file))?;
            let crd = serde_yaml::from_str(&text)?;
            Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(
                client.clone(),
            )
            .create(&PostParams::default(), &crd)
            .await?;
        }
        for ns in [NS, GATEWAY_NS] {
            let object: Namespace = serde_json::from_value(json!({"metadata": {"name": ns,
                "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}))?;
            Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &object).await?;
        }
        let mut topology = Topology::new();
        for node in ["gw-a", "gw-b"] {
            topology = topology.node(NodeSpec::new(node).label("scistream.io/gateway", "dtn"));
        }
        let mut agent = NodeAgent::builder(client_as(&cluster, AGENT).await?)
            .topology(topology)
            .mode(NetworkMode::Loopback)
            .simulated(true)
            .always_run(keys::LABEL_COMPONENT, keys::COMPONENT_SHARED_RELAY);
        if let Some(s2ds) = shared_s2ds {
            agent = agent.s2ds(s2ds);
        }
        let agent = agent.start().await?;
        let port = free_port()?;
        let mut command = tokio::process::Command::new(operator);
        command
            .args(["--kubeconfig"])
            .arg(cluster.kubeconfig_path())
            .args(["--no-leader-election", "--no-control-endpoint", "--namespace", "default", "--identity", "bench"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--transfer-interval-seconds", "2"])
            // Its log on this program's stderr: warnings, or SCISTREAM_BENCH_OPERATOR_LOG.
            .env("RUST_LOG", std::env::var("SCISTREAM_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        if shared_s2ds.is_some() {
            // The nodes are loopback addresses of this machine: the relays dial the channel there.
            let channel = format!("127.0.0.1:{}", free_port()?);
            command.args(["--relay-channel-addr", &channel, "--relay-channel-advertise", &channel]);
        }
        let child = command.spawn().with_context(|| format!("starting {}", operator.display()))?;
        let operator_pid = child.id().context("the operator exited at once")?;
        let times = Arc::new(Mutex::new(HashMap::new()));
        let watch = tokio::spawn(track(Api::namespaced(client.clone(), NS), times.clone()));
        let f = Facility {
            cluster,
            client,
            agent: Some(agent),
            operator: child,
            operator_pid,
            metrics: format!("127.0.0.1:{port}").parse()?,
            times,
            watch,
            shared: shared_s2ds.is_some(),
        };
        let mut spec = json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "10T", "podNamespace": GATEWAY_NS,
                 "implementation": "S2ds", "portRange": {"start": 10000, "end": 60000},
                 "policy": scistream_api::policy::GatewayPolicy::open(),
                 "addresses": {"wan": {"annotation": keys::ANNOTATION_LAN_ADDRESS}}});
        if f.shared {
            spec["s2ds"] = json!({"relayModel": "Shared"});
        }
        let gateway: Gateway = serde_json::from_value(json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "dtn"}, "spec": spec
        }))?;
        Api::<Gateway>::all(f.client.clone()).create(&PostParams::default(), &gateway).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let gw = Api::<Gateway>::all(f.client.clone()).get("dtn").await?;
            if gw.status.as_ref().is_some_and(|s| s.ready_nodes == 2) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the Gateway was not Ready within 60 s (is the operator {} running?)", operator.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(f)
    }

    /// The operator's CPU time and memory so far.
    pub fn operator_usage(&self) -> anyhow::Result<ProcessUsage> {
        usage(self.operator_pid)
    }

    /// StreamRequest reconciles the operator started so far.
    pub async fn reconciles(&self) -> anyhow::Result<f64> {
        let page = http_get(self.metrics, "/metrics").await?;
        Ok(counter(&page, "scistream_reconciles_total{controller=\"streamrequest\"}"))
    }

    fn requests(&self) -> Api<StreamRequest> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Creates `n` streams named `{prefix}-{i}`, `parallel` requests in flight.
    pub async fn create(&self, prefix: &str, n: usize, parallel: usize) -> anyhow::Result<()> {
        let api = self.requests();
        futures::stream::iter(0..n)
            .map(|i| {
                let (api, times, name) = (api.clone(), self.times.clone(), format!("{prefix}-{i}"));
                async move {
                    let sr = stream_request(&name, i)?;
                    api.create(&PostParams::default(), &sr).await?;
                    let mut t = times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    t.entry(name).or_default().created = Some(Instant::now());
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(parallel)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Waits until `n` streams are Ready (at most `limit`); returns when the last one was.
    pub async fn wait_ready(&self, n: usize, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let (ready, last) = {
                let t = self.times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let ready: Vec<Instant> = t.values().filter_map(|t| t.ready).collect();
                (ready.len(), ready.into_iter().max())
            };
            if ready >= n {
                return last.context("no stream Ready");
            }
            if Instant::now() > deadline {
                bail!("{ready} of {n} streams Ready after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// create→reserved and create→Ready of every stream seen so far.
    fn latencies(&self) -> (Vec<Duration>, Vec<Duration>) {
        let t = self.times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = |at: Option<Instant>, c: &Times| Some(at?.saturating_duration_since(c.created?));
        (
            t.values().filter_map(|c| since(c.reserved, c)).collect(),
            t.values().filter_map(|c| since(c.ready, c)).collect(),
        )
    }

    /// Deletes every stream and waits until none is left; returns how long it took.
    pub async fn delete_all(&self, limit: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        self.requests().delete_collection(&DeleteParams::default(), &ListParams::default()).await?;
        self.wait_empty(limit).await?;
        Ok(start.elapsed())
    }

    async fn wait_empty(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let left = self.requests().list(&ListParams::default().limit(1)).await?;
            if left.items.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("StreamRequests still listed {limit:?} after their deletion");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What is left behind: relay pods, ConfigMaps, Secrets, streams the Gateway counts as
    /// holding, and StreamRequests.
    pub async fn leftovers(&self) -> anyhow::Result<[usize; 5]> {
        let lp = ListParams::default().labels(keys::LABEL_STREAM_ID);
        let pods = Api::<Pod>::namespaced(self.client.clone(), GATEWAY_NS).list(&lp).await?.items.len();
        let cms = Api::<ConfigMap>::namespaced(self.client.clone(), GATEWAY_NS).list(&lp).await?.items.len();
        let secrets = Api::<Secret>::namespaced(self.client.clone(), GATEWAY_NS).list(&lp).await?.items.len();
        let live = self.requests().list(&ListParams::default()).await?.items.len();
        // The Gateway's count follows the holdings (eventually): up to 30 s for it to agree.
        let streams =
            |g: Option<&Gateway>| g.and_then(|g| g.status.as_ref()).and_then(|s| usize::try_from(s.streams).ok());
        let gateways = Api::<Gateway>::all(self.client.clone());
        let agreed = kube::runtime::wait::await_condition(gateways.clone(), "dtn", move |g: Option<&Gateway>| {
            streams(g).unwrap_or(0) == live
        });
        let held = match tokio::time::timeout(Duration::from_secs(30), agreed).await {
            Ok(Ok(g)) => streams(g.as_ref()),
            _ => streams(gateways.get_opt("dtn").await?.as_ref()),
        };
        Ok([pods, cms, secrets, held.unwrap_or(0), live])
    }

    /// The streams each shared relay serves, from its `/readyz` (`ready (N streams)`); empty
    /// with relays per stream.
    pub async fn shared_relay_streams(&self) -> anyhow::Result<Vec<usize>> {
        if !self.shared {
            return Ok(Vec::new());
        }
        let gw = Api::<Gateway>::all(self.client.clone()).get("dtn").await?;
        let mut counts = Vec::new();
        for node in gw.status.iter().flat_map(|s| &s.nodes) {
            let relay = scistream_controller::gateway::node_relays::metrics_address(&gw.spec, node)
                .with_context(|| format!("{}'s shared relay has no metrics address", node.name))?;
            let page = http_get(relay, "/readyz").await?;
            let count = page
                .split_once("\r\n\r\n")
                .and_then(|(_, body)| body.split_once('(')?.1.split_once(" streams)")?.0.parse().ok())
                .with_context(|| format!("{}'s shared relay answered {page:?}", node.name))?;
            counts.push(count);
        }
        Ok(counts)
    }

    /// Stops the operator and the node agent.
    pub async fn stop(mut self) {
        let _ = self.operator.start_kill();
        let _ = self.operator.wait().await;
        self.watch.abort();
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        self.cluster.shutdown().await;
    }
}

fn stream_request(name: &str, i: usize) -> anyhow::Result<StreamRequest> {
    let id = format!("00000000-0000-4000-8000-{i:012}");
    Ok(serde_json::from_value(json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest", "metadata": {"name": name},
        "spec": {"streamId": id, "role": "Producer", "gateway": "dtn", "numConnections": 1, "rate": "1Mbps",
                 "dataChannel": "Plain", "targets": ["192.0.2.10:7000"]}
    }))?)
}

/// Records when each request was first seen reserved and Ready.
async fn track(api: Api<StreamRequest>, times: Arc<Mutex<HashMap<String, Times>>>) {
    let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
    while let Some(event) = events.next().await {
        let Ok(sr) = event else { continue };
        let now = Instant::now();
        let status = sr.status.clone().unwrap_or_default();
        let mut t = times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = t.entry(sr.name_any()).or_default();
        if !status.allocations.is_empty() && entry.reserved.is_none() {
            entry.reserved = Some(now);
        }
        if status.phase == Some(Phase::Ready) && entry.ready.is_none() {
            entry.ready = Some(now);
        }
    }
}

/// The figures of one scale run (on shared relays run from `shared_s2ds`, when given).
pub async fn run(
    operator: &Path,
    root: &Path,
    n: usize,
    idle: Duration,
    shared_s2ds: Option<&Path>,
) -> anyhow::Result<()> {
    let f = Facility::start(operator, root, shared_s2ds).await?;
    let before = f.cluster.state().requests.snapshot();
    let (usage0, reconciles0) = (f.operator_usage()?, f.reconciles().await?);
    let start = Instant::now();
    f.create("s", n, 32).await?;
    let created = start.elapsed();
    let last = f.wait_ready(n, Duration::from_secs(900)).await?;
    let all_ready = last.saturating_duration_since(start);
    let after = f.cluster.state().requests.snapshot();
    let (usage1, reconciles1) = (f.operator_usage()?, f.reconciles().await?);
    let (reserved, ready) = f.latencies();
    let model = if f.shared { "shared relays, one s2ds process per node" } else { "a relay pod per stream" };
    println!("{n} streams (Producer, static targets, Plain, 1 connection) against one Gateway, {model}:");
    if f.shared {
        println!("  streams on the shared relays: {:?}", f.shared_relay_streams().await?);
    }
    println!("  created in {:.1} s; all Ready after {:.1} s", created.as_secs_f64(), all_ready.as_secs_f64());
    println!(
        "  create→reserved p50 {:.2} s, p90 {:.2} s; create→Ready p50 {:.2} s, p99 {:.2} s",
        quantile(&reserved, 0.5).as_secs_f64(),
        quantile(&reserved, 0.9).as_secs_f64(),
        quantile(&ready, 0.5).as_secs_f64(),
        quantile(&ready, 0.99).as_secs_f64()
    );
    print_requests(&before, &after, n);
    println!(
        "  StreamRequest reconciles per stream {:.1}; operator CPU {:.1} s, peak RSS {:.0} MiB",
        (reconciles1 - reconciles0) / n as f64,
        usage1.cpu.saturating_sub(usage0.cpu).as_secs_f64(),
        usage1.peak_rss as f64 / f64::from(1 << 20)
    );
    // The Gateway's totals follow the holdings (eventually): the idle period starts once they
    // count every stream, so that it measures an operator with nothing left to do.
    let counted = |g: Option<&Gateway>| {
        g.and_then(|g| g.status.as_ref()).is_some_and(|s| usize::try_from(s.streams).is_ok_and(|c| c == n))
    };
    let settle = tokio::time::timeout(
        Duration::from_secs(60),
        kube::runtime::wait::await_condition(Api::<Gateway>::all(f.client.clone()), "dtn", counted),
    );
    let gateway = match settle.await {
        Ok(Ok(Some(g))) => g,
        _ => bail!("the Gateway's totals did not count the {n} streams within 60 s of all being Ready"),
    };
    println!("  Gateway totals count every stream {:.1} s after the last Ready", last.elapsed().as_secs_f64());
    let bytes = serde_json::to_vec(&gateway)?.len();
    println!(
        "  Gateway dtn with {n} streams: {:.0} KiB of JSON ({:.0} bytes a stream; etcd refuses a request over 1.5 MiB by default); API server (this process) peak RSS {:.0} MiB",
        bytes as f64 / 1024.0,
        bytes as f64 / n as f64,
        usage(std::process::id())?.peak_rss as f64 / f64::from(1 << 20)
    );
    let idle_before = f.cluster.state().requests.snapshot();
    let (u0, r0) = (f.operator_usage()?, f.reconciles().await?);
    tokio::time::sleep(idle).await;
    let idle_after = f.cluster.state().requests.snapshot();
    let (u1, r1) = (f.operator_usage()?, f.reconciles().await?);
    let idle_writes: Vec<((String, String), u64)> = requests_between(&idle_before, &idle_after, OPERATOR)
        .into_iter()
        .filter(|((verb, _), _)| is_write(verb))
        .collect();
    let writes: u64 = idle_writes.iter().map(|(_, n)| n).sum();
    let per_minute = 60.0 / idle.as_secs_f64();
    let detail: Vec<String> =
        idle_writes.iter().map(|((v, r), c)| format!("{v} {r} {:.0}", *c as f64 * per_minute)).collect();
    println!(
        "  idle with {n} Ready: {:.0} operator writes/min ({}), {:.0} reconciles/min, {:.1}% of a core",
        writes as f64 * per_minute,
        detail.join(", "),
        (r1 - r0) * per_minute,
        100.0 * u1.cpu.saturating_sub(u0.cpu).as_secs_f64() / idle.as_secs_f64()
    );
    let deleted = f.delete_all(Duration::from_secs(600)).await?;
    let [pods, cms, secrets, held, live] = f.leftovers().await?;
    println!(
        "  deleted all in {:.1} s; left: {pods} pods, {cms} ConfigMaps, {secrets} Secrets, {held} reservations, {live} requests{}",
        deleted.as_secs_f64(),
        on_relays(&f).await?
    );
    f.stop().await;
    Ok(())
}

/// Writes per stream by verb and resource, for the operator and the node agent.
fn print_requests(
    before: &[(scistream_testcluster::requests::RequestKey, u64)],
    after: &[(scistream_testcluster::requests::RequestKey, u64)],
    n: usize,
) {
    for client in [OPERATOR, AGENT] {
        let by = requests_between(before, after, client);
        let writes: u64 = by.iter().filter(|((v, _), _)| is_write(v)).map(|(_, c)| c).sum();
        let reads: u64 = by.iter().filter(|((v, _), _)| !is_write(v)).map(|(_, c)| c).sum();
        let detail: Vec<String> = by
            .iter()
            .filter(|((v, _), _)| is_write(v))
            .map(|((v, r), c)| format!("{v} {r} {:.2}", *c as f64 / n as f64))
            .collect();
        println!(
            "  {client}: {:.2} writes and {:.2} reads per stream ({})",
            writes as f64 / n as f64,
            reads as f64 / n as f64,
            detail.join(", ")
        );
    }
}

/// Creates `per_second` streams a second for `seconds`, deleting each `lifetime` after its
/// creation; then checks that holdings equal live streams and that nothing is left.
pub async fn churn(
    operator: &Path,
    root: &Path,
    per_second: usize,
    seconds: u64,
    lifetime: Duration,
    shared_s2ds: Option<&Path>,
) -> anyhow::Result<()> {
    let f = Facility::start(operator, root, shared_s2ds).await?;
    let api = f.requests();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_second.max(1) as u64));
    let mut pending: std::collections::VecDeque<(Instant, String)> = Default::default();
    let (mut created, mut deleted, mut i) = (0usize, 0usize, 0usize);
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let name = format!("c-{i}");
        api.create(&PostParams::default(), &stream_request(&name, i)?).await?;
        pending.push_back((Instant::now(), name));
        (created, i) = (created + 1, i + 1);
        while pending.front().is_some_and(|(at, _)| at.elapsed() >= lifetime) {
            if let Some((_, old)) = pending.pop_front() {
                api.delete(&old, &DeleteParams::default()).await?;
                deleted += 1;
            }
        }
    }
    let live_now = pending.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let [_, _, _, held, live] = f.leftovers().await?;
    let model = if f.shared { "shared relays" } else { "a relay pod per stream" };
    println!(
        "churn ({model}): {created} created and {deleted} deleted in {:.0} s ({per_second}/s, each living {:?}); 5 s later {held} reservations for {live} live requests ({live_now} expected)",
        start.elapsed().as_secs_f64(),
        lifetime
    );
    let drained = f.delete_all(Duration::from_secs(600)).await?;
    let [pods, cms, secrets, held, live] = f.leftovers().await?;
    println!(
        "  after deleting the rest ({:.1} s): {pods} pods, {cms} ConfigMaps, {secrets} Secrets, {held} reservations, {live} requests left{}",
        drained.as_secs_f64(),
        on_relays(&f).await?
    );
    f.stop().await;
    Ok(())
}

/// The whole answer (status line, headers, body) to `GET path` at `addr` (HTTP/1.0: the
/// server closes when done).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut page = String::new();
    s.read_to_string(&mut page).await?;
    Ok(page)
}

/// What the shared relays still serve once every stream is deleted (the operator takes a
/// stream off its relays before it lets its StreamRequest go: none should be left).
async fn on_relays(f: &Facility) -> anyhow::Result<String> {
    if !f.shared {
        return Ok(String::new());
    }
    Ok(format!(", streams on the shared relays {:?}", f.shared_relay_streams().await?))
}

/// The operator binary next to this program (`target/<profile>/scistream-operator`).
pub fn default_operator() -> anyhow::Result<PathBuf> {
    crate::built_binary("scistream-operator")
}
