//! One stream end to end, as a user runs it: `kubectl scistream create` between the two
//! facilities, the producer application and its Hello, the consumer's Hello, data through
//! the relays verified at both ends, and `kubectl scistream release` leaving nothing behind.
//!
//! The steps are public so that scenarios compose them: [`create`], [`app_listeners`],
//! [`hellos`], [`wait_ready`] (together: [`setup`]), [`transfer`], [`release`]. [`run`] is
//! all of them in order, with a wrong-key Hello checked on the way and every step timed.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kube::{Api, api::ListParams};
use scistream_api::{Gateway, Phase, StreamRequest, keys};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::{
    workload::{self, Transfer},
    world::{CONSUMER_HOST, FACILITIES, GATEWAY_NS, PRODUCER_HOST, USER_NS, World},
};

/// What to stream.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Stream name.
    pub name: String,
    /// Total bytes.
    pub bytes: u64,
    /// Parallel connections.
    pub connections: usize,
    /// Rate to reserve, e.g. `20Gbps`.
    pub rate: String,
    /// `MutualTLS` or `Plain`.
    pub data_channel: String,
    /// The kubectl-scistream binary.
    pub plugin: PathBuf,
}

impl StreamOptions {
    /// A stream `name` of `bytes` over `connections` connections at `rate` on `data_channel`,
    /// created with the workspace's built `kubectl-scistream`.
    pub fn new(
        name: &str,
        bytes: u64,
        connections: usize,
        rate: &str,
        data_channel: &str,
    ) -> anyhow::Result<StreamOptions> {
        Ok(StreamOptions {
            name: name.to_owned(),
            bytes,
            connections,
            rate: rate.to_owned(),
            data_channel: data_channel.to_owned(),
            plugin: crate::built_binary("kubectl-scistream")?,
        })
    }
}

/// What happened.
#[derive(Debug, Default)]
pub struct Report {
    /// Protocol steps and how long each took.
    pub steps: Vec<(String, Duration)>,
    /// Bytes verified.
    pub bytes: u64,
    /// Seconds the data took.
    pub transfer_seconds: f64,
    /// Connections.
    pub connections: usize,
}

impl Report {
    /// Gbit/s of the verified transfer.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.transfer_seconds.max(1e-9) / 1e9
    }
}

/// What `kubectl scistream create` printed.
#[derive(Clone, Debug)]
pub struct Created {
    /// The stream id shared by both StreamRequests.
    pub stream_id: String,
    /// The producer facility's Hello key.
    pub producer_key: String,
    /// The consumer facility's Hello key.
    pub consumer_key: String,
}

/// A stream whose relays are ready in both facilities.
pub struct Ready {
    /// What `create` printed.
    pub created: Created,
    /// The producer application's listening sockets on its host (bound before its Hello).
    pub producer: Vec<TcpListener>,
    /// Their addresses, as the producer's Hello gave them.
    pub producer_addresses: Vec<String>,
    /// The consumer facility's listeners, where the consumer application connects.
    pub targets: Vec<SocketAddr>,
    /// Both StreamRequests once Ready: producer, consumer.
    pub sides: Vec<StreamRequest>,
}

/// A verified transfer.
#[derive(Debug)]
pub struct Transferred {
    /// What the producer sent, per connection (sorted).
    pub sent: Vec<Transfer>,
    /// What the consumer received, per connection (sorted; equal to `sent`).
    pub received: Vec<Transfer>,
    /// From the consumer's first connection to the last byte received.
    pub seconds: f64,
}

impl Transferred {
    /// Bytes verified.
    pub fn bytes(&self) -> u64 {
        self.received.iter().map(|t| t.bytes).sum()
    }
}

/// Runs the plugin with the world's kubeconfig (asynchronously: the operators share this
/// process's runtime).
pub async fn plugin(world: &World, opts: &StreamOptions, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(&opts.plugin)
        .arg("--kubeconfig")
        .arg(&world.kubeconfig)
        .args(args)
        .output()
        .await
        .context("running kubectl-scistream")?;
    if !out.status.success() {
        bail!("kubectl scistream {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl scistream doctor NAME -o json` from the consumer facility's context: its checks
/// (whatever its exit code: a facility check may fail where the suite runs no Lease).
pub async fn doctor(world: &World, opts: &StreamOptions) -> anyhow::Result<Vec<Value>> {
    let out = tokio::process::Command::new(&opts.plugin)
        .arg("--kubeconfig")
        .arg(&world.kubeconfig)
        .args(["doctor", &opts.name, "--context", FACILITIES[1], "-n", USER_NS, "-o", "json"])
        .output()
        .await
        .context("running kubectl-scistream doctor")?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("doctor -o json: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(report["checks"].as_array().cloned().unwrap_or_default())
}

/// `kubectl scistream create`: both StreamRequests, their reservations and connection map.
pub async fn create(world: &World, opts: &StreamOptions) -> anyhow::Result<Created> {
    let conns = opts.connections.to_string();
    let [prod, cons] = FACILITIES;
    #[rustfmt::skip]
    let args = [
        "create", &opts.name,
        "--prod-context", prod, "--prod-namespace", USER_NS, "--prod-gateway", "dtn",
        "--cons-context", cons, "--cons-namespace", USER_NS, "--cons-gateway", "dtn",
        "--num-conn", &conns, "--rate", &opts.rate, "--data-channel", &opts.data_channel,
        "--timeout", "120s", "-o", "json",
    ];
    let out = plugin(world, opts, &args).await?;
    let created: Value = serde_json::from_str(&out).context("create -o json")?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let stream_id = text(&created["streamId"]);
    if stream_id.is_empty() {
        bail!("create printed no streamId: {out}");
    }
    Ok(Created {
        stream_id,
        producer_key: text(&created["producer"]["helloKey"]),
        consumer_key: text(&created["consumer"]["helloKey"]),
    })
}

/// The producer application's listening sockets: `count` ports (chosen by the system, so
/// concurrent streams never collide) on its host in the producer facility's LAN.
pub async fn app_listeners(world: &World, count: usize) -> anyhow::Result<(Vec<TcpListener>, Vec<String>)> {
    let mut listeners = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..count {
        let listener = world.listen(PRODUCER_HOST, 0).await.context("listening on the producer's host")?;
        addresses.push(listener.local_addr()?.to_string());
        listeners.push(listener);
    }
    Ok((listeners, addresses))
}

/// An application controller's Hello, as a user runs it: `kubectl scistream hello` to the
/// facility's control endpoint over gRPC/TLS, trusting the certificate the endpoint generated
/// (as a 1.x client's `--server_cert`), the Hello key `create` printed passed through the
/// environment. Returns the reply's listeners.
pub async fn hello(
    world: &World,
    opts: &StreamOptions,
    facility: usize,
    stream_id: &str,
    key: &str,
    role: &str,
    prod_listeners: &[String],
) -> anyhow::Result<Vec<String>> {
    static HELLOS: AtomicUsize = AtomicUsize::new(0);
    let f = &world.facilities[facility];
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(f.client.clone(), &f.control_secret.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let pem = loop {
        let secret = secrets.get_opt(&f.control_secret.1).await?;
        if let Some(crt) = secret.and_then(|s| s.data).and_then(|d| d.get("tls.crt").cloned()) {
            break crt.0;
        }
        if Instant::now() > deadline {
            bail!("{}: the control endpoint published no certificate", f.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One file per Hello: concurrent Hellos must not remove each other's.
    let nth = HELLOS.fetch_add(1, Ordering::Relaxed);
    let cert = std::env::temp_dir().join(format!("scistream-{}-{}-{nth}-server.crt", std::process::id(), f.name));
    std::fs::write(&cert, pem)?;
    let control = f.control.clone();
    let mut cmd = tokio::process::Command::new(&opts.plugin);
    cmd.args(["hello", "--role", role, "--stream-id", stream_id, "--control", &control, "-o", "json", "--server-cert"])
        .arg(&cert)
        .env("SCISTREAM_HELLO_KEY", key);
    if !prod_listeners.is_empty() {
        cmd.arg("--listeners").arg(prod_listeners.join(","));
    }
    let out = cmd.output().await.context("running kubectl scistream hello");
    let _ = std::fs::remove_file(&cert);
    let out = out?;
    if !out.status.success() {
        bail!("{role} Hello to {}: {}", f.name, String::from_utf8_lossy(&out.stderr));
    }
    let reply: Value = serde_json::from_slice(&out.stdout).context("hello -o json")?;
    Ok(reply["listeners"].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(str::to_owned)).collect())
}

/// A producer Hello with a wrong key is refused as unauthenticated and changes nothing.
pub async fn assert_wrong_key_refused(
    world: &World,
    opts: &StreamOptions,
    created: &Created,
    prod_listeners: &[String],
) -> anyhow::Result<()> {
    match hello(world, opts, 0, &created.stream_id, "not-the-key", "PROD", prod_listeners).await {
        Err(e) if e.to_string().contains("Unauthenticated") => {}
        other => bail!("a Hello with a wrong key must be refused as Unauthenticated, got {other:?}"),
    }
    let untouched =
        Api::<StreamRequest>::namespaced(world.facilities[0].client.clone(), USER_NS).get(&opts.name).await?;
    if untouched.status.as_ref().is_some_and(|s| s.hello_time.is_some() || !s.prod_listeners.is_empty()) {
        bail!("a refused Hello changed the producer's StreamRequest");
    }
    Ok(())
}

/// Both application controllers' Hellos (producer first, with its listeners). Returns the
/// listeners the consumer's Hello reply gave.
pub async fn hellos(
    world: &World,
    opts: &StreamOptions,
    created: &Created,
    prod_listeners: &[String],
) -> anyhow::Result<Vec<String>> {
    hello(world, opts, 0, &created.stream_id, &created.producer_key, "PROD", prod_listeners).await?;
    hello(world, opts, 1, &created.stream_id, &created.consumer_key, "CONS", &[]).await
}

/// Waits until both StreamRequests `name` are Ready; returns them (producer, consumer).
pub async fn wait_ready(world: &World, name: &str, timeout: Duration) -> anyhow::Result<Vec<StreamRequest>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut sides = Vec::new();
        for f in &world.facilities {
            sides.push(Api::<StreamRequest>::namespaced(f.client.clone(), USER_NS).get(name).await?);
        }
        if sides.iter().all(|s| s.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)) {
            return Ok(sides);
        }
        if Instant::now() > deadline {
            let why: Vec<String> = sides
                .iter()
                .map(|s| {
                    let st = s.status.clone().unwrap_or_default();
                    let c = scistream_api::conditions::find(&st.conditions, "Ready")
                        .map(|c| format!("{}: {}", c.reason, c.message));
                    format!("{:?} {:?} {}", s.spec.role, st.phase, c.unwrap_or_default())
                })
                .collect();
            bail!("{name} not Ready after {}s: {}", timeout.as_secs(), why.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until both sides' `status.transfer` records exactly `bytes` relayed from producer to
/// consumer (the operator reads the relays' counters every interval: its own relays' for a
/// stream on per-stream relays, its series of the nodes' pages on shared relays).
pub async fn wait_transfer_recorded(world: &World, name: &str, bytes: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut recorded = Vec::new();
        for f in &world.facilities {
            let sr = Api::<StreamRequest>::namespaced(f.client.clone(), USER_NS).get(name).await?;
            recorded.push(sr.status.and_then(|s| s.transfer).map(|t| t.bytes));
        }
        if recorded.iter().all(|r| *r == i64::try_from(bytes).ok()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: status.transfer.bytes of the two sides {recorded:?} after {}s, expected {bytes}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The consumer's listeners as addresses, checking that its Hello reply told the same as its
/// StreamRequest publishes.
pub fn consumer_targets(sides: &[StreamRequest], told: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let published: Vec<String> =
        sides.get(1).and_then(|s| s.status.as_ref()).map(|s| s.listeners.clone()).unwrap_or_default();
    if told != published {
        bail!("the consumer's Hello reply {told:?} differs from its StreamRequest's listeners {published:?}");
    }
    told.iter().map(|l| l.parse().with_context(|| format!("consumer listener {l:?}"))).collect()
}

/// Create, the producer application's sockets, both Hellos, relays ready: a stream ready to
/// carry data.
pub async fn setup(world: &World, opts: &StreamOptions) -> anyhow::Result<Ready> {
    let created = create(world, opts).await?;
    let (producer, producer_addresses) = app_listeners(world, opts.connections).await?;
    let told = hellos(world, opts, &created, &producer_addresses).await?;
    let sides = wait_ready(world, &opts.name, Duration::from_secs(120)).await?;
    let targets = consumer_targets(&sides, &told)?;
    Ok(Ready { created, producer, producer_addresses, targets, sides })
}

/// Streams `bytes` from the producer application (serving on `producer`) to the consumer
/// application (one connection per target, from its host in the consumer facility), each
/// connection its own pattern, and checks that both ends hashed the same data.
pub async fn transfer(
    world: &World,
    producer: Vec<TcpListener>,
    targets: &[SocketAddr],
    bytes: u64,
) -> anyhow::Result<Transferred> {
    transfer_seeded(world, producer, targets, bytes, 1).await
}

/// [`transfer`] with the connections' patterns starting at `first_seed` (streams running at
/// once then carry different data, so one's bytes cannot pass for another's).
pub async fn transfer_seeded(
    world: &World,
    producer: Vec<TcpListener>,
    targets: &[SocketAddr],
    bytes: u64,
    first_seed: u64,
) -> anyhow::Result<Transferred> {
    transfer_from(world, CONSUMER_HOST, producer, targets, bytes, first_seed).await
}

/// [`transfer_seeded`] with the consumer application on application host `consumer_host`
/// (the producer's host when both sides of a stream are in its facility).
pub async fn transfer_from(
    world: &World,
    consumer_host: &'static str,
    producer: Vec<TcpListener>,
    targets: &[SocketAddr],
    bytes: u64,
    first_seed: u64,
) -> anyhow::Result<Transferred> {
    let per_connection = bytes / targets.len().max(1) as u64;
    let deadline = Duration::from_secs(300);
    let producer = tokio::spawn(workload::produce(producer, targets.len(), per_connection, first_seed, deadline));
    let started = Instant::now();
    let (apps, targets) = (world.apps(), targets.to_vec());
    let received = workload::consume(targets.len(), move |i| {
        let (apps, addr) = (apps.clone(), targets[i]);
        async move { apps.connect(consumer_host, addr).await }
    })
    .await
    .context("consumer application");
    let received = match received {
        Ok(r) => r,
        Err(e) => {
            producer.abort();
            return Err(e);
        }
    };
    let sent: Vec<Transfer> = producer.await?.context("producer application")?;
    let seconds = started.elapsed().as_secs_f64();
    if sent != received {
        bail!("data differs between the ends: sent {sent:?}, received {received:?}");
    }
    Ok(Transferred { sent, received, seconds })
}

/// `kubectl scistream release` from the producer's facility, then checks that nothing of
/// the stream is left in either.
pub async fn release(world: &World, opts: &StreamOptions, stream_id: &str) -> anyhow::Result<()> {
    plugin(world, opts, &["release", &opts.name, "--context", FACILITIES[0], "-n", USER_NS, "--timeout", "120s"])
        .await?;
    assert_nothing_left(world, stream_id).await
}

/// The relay pods of stream `stream_id` in facility `facility` (0: producer, 1: consumer).
pub async fn relay_pods(
    world: &World,
    facility: usize,
    stream_id: &str,
) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Pod>> {
    let f = world.facilities.get(facility).context("no such facility")?;
    let lp = ListParams::default().labels(&format!("{}={stream_id}", keys::LABEL_STREAM_ID));
    Ok(Api::<k8s_openapi::api::core::v1::Pod>::namespaced(f.client.clone(), GATEWAY_NS).list(&lp).await?.items)
}

/// The container images of the relays serving a stream in `facility` (its own pods, or the
/// shared relays of its nodes), sorted, duplicates removed.
pub async fn relay_images(world: &World, facility: usize, stream_id: &str) -> anyhow::Result<Vec<String>> {
    let mut images: Vec<String> = crate::faults::serving_relays(world, facility, stream_id)
        .await?
        .into_iter()
        .filter_map(|p| p.spec)
        .flat_map(|s| s.containers)
        .filter_map(|c| c.image)
        .collect();
    images.sort();
    images.dedup();
    Ok(images)
}

/// The relay configurations (ConfigMap texts) of stream `stream_id` in facility `i`.
pub async fn relay_configs(world: &World, i: usize, stream_id: &str) -> anyhow::Result<Vec<String>> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let f = world.facilities.get(i).context("no such facility")?;
    let lp = kube::api::ListParams::default().labels(&format!("{}={stream_id}", scistream_api::keys::LABEL_STREAM_ID));
    let cms = Api::<ConfigMap>::namespaced(f.client.clone(), crate::world::GATEWAY_NS).list(&lp).await?;
    Ok(cms.items.into_iter().flat_map(|cm| cm.data.unwrap_or_default().into_values()).collect())
}

/// Checks that nothing of the stream is left in either facility: no StreamRequest, no relay
/// pod, ConfigMap or Secret labelled with its id, no reservation (so no port or bandwidth
/// held) on either Gateway.
pub async fn assert_nothing_left(world: &World, stream_id: &str) -> anyhow::Result<()> {
    leftovers(world, &format!("{}={stream_id}", keys::LABEL_STREAM_ID), Some(stream_id), true).await
}

/// As [`assert_nothing_left`], but the StreamRequests may still exist: a request that has
/// `Failed` (a terminal phase, kept for the user to read) holds nothing.
pub async fn assert_released(world: &World, stream_id: &str) -> anyhow::Result<()> {
    leftovers(world, &format!("{}={stream_id}", keys::LABEL_STREAM_ID), Some(stream_id), false).await
}

/// Checks that the facilities hold nothing of any stream (after every stream of a scenario is
/// released): as [`assert_nothing_left`] for every stream, and the Gateways' counters all at
/// zero (ports in use on every node, bandwidth promised, streams).
pub async fn assert_all_clean(world: &World) -> anyhow::Result<()> {
    // The Gateways write their totals shortly after the last release (a burst of releases is
    // one write): give them a few seconds.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match leftovers(world, keys::LABEL_STREAM_ID, None, true).await {
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "not clean yet");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            outcome => return outcome,
        }
    }
}

/// The holdings on Gateway `dtn` of `client`'s cluster ([`scistream_testkit::holdings_on`]).
pub async fn holdings(client: &kube::Client) -> anyhow::Result<Vec<scistream_api::Reservation>> {
    Ok(scistream_testkit::holdings_on(client, "dtn").await?)
}

async fn leftovers(world: &World, selector: &str, stream_id: Option<&str>, requests_too: bool) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
    let lp = ListParams::default().labels(selector);
    for f in &world.facilities {
        let pods = Api::<Pod>::namespaced(f.client.clone(), GATEWAY_NS).list(&lp).await?;
        let cms = Api::<ConfigMap>::namespaced(f.client.clone(), GATEWAY_NS).list(&lp).await?;
        let secrets = Api::<Secret>::namespaced(f.client.clone(), GATEWAY_NS).list(&lp).await?;
        let requests = Api::<StreamRequest>::namespaced(f.client.clone(), USER_NS).list(&ListParams::default()).await?;
        let requests = match requests_too {
            true => requests.items.iter().filter(|r| stream_id.is_none_or(|id| r.spec.stream_id == id)).count(),
            false => 0,
        };
        let status = Api::<Gateway>::all(f.client.clone()).get("dtn").await?.status.unwrap_or_default();
        let held = holdings(&f.client).await?;
        let held = held.iter().filter(|r| stream_id.is_none_or(|id| r.stream_id == id)).count();
        if !pods.items.is_empty() || !cms.items.is_empty() || !secrets.items.is_empty() || held + requests != 0 {
            bail!(
                "{}: left behind: {} StreamRequests, {} pods, {} ConfigMaps, {} Secrets, {} reservations",
                f.name,
                requests,
                pods.items.len(),
                cms.items.len(),
                secrets.items.len(),
                held
            );
        }
        let busy: Vec<String> = status
            .nodes
            .iter()
            .filter(|n| n.ports_in_use != 0)
            .map(|n| format!("{}: {}", n.name, n.ports_in_use))
            .collect();
        if stream_id.is_none()
            && (status.ports_in_use != 0
                || !busy.is_empty()
                || status.bandwidth_promised_bps != 0
                || status.streams != 0)
        {
            bail!(
                "{}: the Gateway still counts {} ports in use ({busy:?}), {} bit/s promised, {} streams",
                f.name,
                status.ports_in_use,
                status.bandwidth_promised_bps,
                status.streams
            );
        }
    }
    Ok(())
}

/// What both facilities hold, for failure messages: every StreamRequest with its phase and
/// conditions, every Gateway reservation.
pub async fn describe(world: &World) -> String {
    let mut out = String::new();
    for f in &world.facilities {
        let requests = Api::<StreamRequest>::namespaced(f.client.clone(), USER_NS).list(&ListParams::default()).await;
        for r in requests.map(|l| l.items).unwrap_or_default() {
            let st = r.status.clone().unwrap_or_default();
            let conditions: Vec<String> =
                st.conditions.iter().map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message)).collect();
            out.push_str(&format!(
                "\n{}: {} {:?}: {}",
                f.name,
                r.metadata.name.unwrap_or_default(),
                st.phase,
                conditions.join("; ")
            ));
        }
        let gw = Api::<Gateway>::all(f.client.clone()).get("dtn").await.ok().and_then(|g| g.status).unwrap_or_default();
        let held = holdings(&f.client).await.unwrap_or_default();
        let held: Vec<&str> = held.iter().map(|r| r.request.as_str()).collect();
        out.push_str(&format!("\n{}: holdings {held:?}, Gateway counts {} ports in use", f.name, gw.ports_in_use));
    }
    out
}

/// Runs one stream through both facilities.
pub async fn run(world: &World, opts: &StreamOptions) -> anyhow::Result<Report> {
    let mut report = Report { connections: opts.connections, ..Report::default() };
    let mut step = Instant::now();
    let mark = |report: &mut Report, what: &str, step: &mut Instant| {
        report.steps.push((what.to_owned(), step.elapsed()));
        *step = Instant::now();
    };
    let created = create(world, opts).await?;
    mark(&mut report, "create: both requests, reservations, connection map", &mut step);

    // The producer application on its facility's LAN, one port per connection.
    let (producer, prod_listeners) = app_listeners(world, opts.connections).await?;
    assert_wrong_key_refused(world, opts, &created, &prod_listeners).await?;
    let told = hellos(world, opts, &created, &prod_listeners).await?;
    mark(&mut report, "Hello from both application controllers", &mut step);
    let sides = wait_ready(world, &opts.name, Duration::from_secs(60)).await?;
    mark(&mut report, "relays ready in both facilities", &mut step);

    // The consumer application on the other facility's LAN, where its Hello said.
    let targets = consumer_targets(&sides, &told)?;
    let moved = transfer(world, producer, &targets, opts.bytes).await?;
    report.transfer_seconds = moved.seconds;
    report.bytes = moved.bytes();
    mark(&mut report, "data streamed and verified (SHA-256 at both ends)", &mut step);

    release(world, opts, &created.stream_id).await?;
    mark(&mut report, "release: both facilities clean", &mut step);
    Ok(report)
}
