//! One stream end to end, as a user runs it: `kubectl scistream create` between the two
//! facilities, the producer application and its Hello, the consumer's Hello, data through
//! the relays verified at both ends, and `kubectl scistream release` leaving nothing behind.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kube::{Api, api::ListParams};
use scistream_api::{Gateway, Phase, StreamRequest, keys};
use serde_json::Value;

use crate::{
    workload::{self, Transfer},
    world::{GATEWAY_NS, USER_NS, World},
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

fn plugin(world: &World, opts: &StreamOptions, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(&opts.plugin)
        .arg("--kubeconfig")
        .arg(&world.kubeconfig)
        .args(args)
        .output()
        .context("running kubectl-scistream")?;
    if !out.status.success() {
        bail!("kubectl scistream {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
    let f = &world.facilities[facility];
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(f.client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pem = loop {
        let secret = secrets.get_opt("scistream-control-tls").await?;
        if let Some(crt) = secret.and_then(|s| s.data).and_then(|d| d.get("tls.crt").cloned()) {
            break crt.0;
        }
        if Instant::now() > deadline {
            bail!("{}: the control endpoint published no certificate", f.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cert = std::env::temp_dir().join(format!("scistream-{}-{}-server.crt", std::process::id(), f.name));
    std::fs::write(&cert, pem)?;
    let control = format!("127.0.0.1:{}", f.control_port);
    let mut cmd = tokio::process::Command::new(&opts.plugin);
    cmd.args(["hello", "--role", role, "--stream-id", stream_id, "--control", &control, "-o", "json", "--server-cert"])
        .arg(&cert)
        .env("SCISTREAM_HELLO_KEY", key);
    if !prod_listeners.is_empty() {
        cmd.arg("--listeners").arg(prod_listeners.join(","));
    }
    let out = cmd.output().await.context("running kubectl scistream hello")?;
    let _ = std::fs::remove_file(&cert);
    if !out.status.success() {
        bail!("{role} Hello to {}: {}", f.name, String::from_utf8_lossy(&out.stderr));
    }
    let reply: Value = serde_json::from_slice(&out.stdout).context("hello -o json")?;
    Ok(reply["listeners"].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(str::to_owned)).collect())
}

async fn wait_ready(world: &World, name: &str, timeout: Duration) -> anyhow::Result<Vec<StreamRequest>> {
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
            bail!("not Ready after {}s: {}", timeout.as_secs(), why.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that nothing of the stream is left in either facility.
pub async fn assert_nothing_left(world: &World, stream_id: &str) -> anyhow::Result<()> {
    let lp = ListParams::default().labels(&format!("{}={stream_id}", keys::LABEL_STREAM_ID));
    for f in &world.facilities {
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(f.client.clone(), GATEWAY_NS).list(&lp).await?;
        let cms =
            Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(f.client.clone(), GATEWAY_NS).list(&lp).await?;
        let secrets =
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(f.client.clone(), GATEWAY_NS).list(&lp).await?;
        let gw = Api::<Gateway>::all(f.client.clone()).get("dtn").await?;
        let held = gw.status.map(|s| s.reservations.len()).unwrap_or(0);
        if !pods.items.is_empty() || !cms.items.is_empty() || !secrets.items.is_empty() || held != 0 {
            bail!(
                "{}: left behind: {} pods, {} ConfigMaps, {} Secrets, {} reservations",
                f.name,
                pods.items.len(),
                cms.items.len(),
                secrets.items.len(),
                held
            );
        }
    }
    Ok(())
}

/// Runs one stream through both facilities.
pub async fn run(world: &World, opts: &StreamOptions) -> anyhow::Result<Report> {
    let mut report = Report { connections: opts.connections, ..Report::default() };
    let mut step = Instant::now();
    let mark = |report: &mut Report, what: &str, step: &mut Instant| {
        report.steps.push((what.to_owned(), step.elapsed()));
        *step = Instant::now();
    };
    let conns = opts.connections.to_string();
    let created = plugin(
        world,
        opts,
        &[
            "create",
            &opts.name,
            "--prod-context",
            "aps",
            "--prod-namespace",
            USER_NS,
            "--prod-gateway",
            "dtn",
            "--cons-context",
            "alcf",
            "--cons-namespace",
            USER_NS,
            "--cons-gateway",
            "dtn",
            "--num-conn",
            &conns,
            "--rate",
            &opts.rate,
            "--data-channel",
            &opts.data_channel,
            "--timeout",
            "60s",
            "-o",
            "json",
        ],
    )?;
    let created: Value = serde_json::from_str(&created).context("create -o json")?;
    let stream_id = created["streamId"].as_str().unwrap_or_default().to_owned();
    mark(&mut report, "create: both requests, reservations, connection map", &mut step);

    // The producer application on its facility's LAN, one port per connection.
    let app = world.network.address("app-aps").context("app-aps has no address")?;
    let mut listeners = Vec::new();
    let mut prod_listeners = Vec::new();
    for i in 0..opts.connections {
        let addr = SocketAddr::new(app.into(), 7000 + i as u16);
        listeners.push(world.network.listen("app-aps", addr).await.with_context(|| format!("listen on {addr}"))?);
        prod_listeners.push(addr.to_string());
    }
    let per_connection = opts.bytes / opts.connections as u64;
    let producer =
        tokio::spawn(workload::produce(listeners, opts.connections, per_connection, Duration::from_secs(300)));
    let key = |side: &str| created[side]["helloKey"].as_str().unwrap_or_default().to_owned();
    // A wrong key is refused as unauthenticated and changes nothing.
    match hello(world, opts, 0, &stream_id, "not-the-key", "PROD", &prod_listeners).await {
        Err(e) if e.to_string().contains("Unauthenticated") => {}
        other => bail!("a Hello with a wrong key must be refused as Unauthenticated, got {other:?}"),
    }
    let untouched =
        Api::<StreamRequest>::namespaced(world.facilities[0].client.clone(), USER_NS).get(&opts.name).await?;
    if untouched.status.as_ref().is_some_and(|s| s.hello_time.is_some() || !s.prod_listeners.is_empty()) {
        bail!("a refused Hello changed the producer's StreamRequest");
    }
    hello(world, opts, 0, &stream_id, &key("producer"), "PROD", &prod_listeners).await?;
    let told = hello(world, opts, 1, &stream_id, &key("consumer"), "CONS", &[]).await?;
    mark(&mut report, "Hello from both application controllers", &mut step);
    let sides = wait_ready(world, &opts.name, Duration::from_secs(60)).await?;
    mark(&mut report, "relays ready in both facilities", &mut step);

    // The consumer application on the other facility's LAN, where its Hello said.
    let published: Vec<String> = sides[1].status.as_ref().map(|s| s.listeners.clone()).unwrap_or_default();
    if told != published {
        bail!("the consumer's Hello reply {told:?} differs from its StreamRequest's listeners {published:?}");
    }
    let targets: Vec<SocketAddr> = told.iter().filter_map(|l| l.parse().ok()).collect();
    let started = Instant::now();
    let network = world.network.clone();
    let received = workload::consume(targets.len(), move |i| {
        let (network, addr) = (network.clone(), targets[i]);
        async move { network.connect("app-alcf", addr).await }
    })
    .await
    .context("consumer application")?;
    let sent: Vec<Transfer> = producer.await??;
    report.transfer_seconds = started.elapsed().as_secs_f64();
    if sent != received {
        bail!("data differs between the ends: sent {sent:?}, received {received:?}");
    }
    report.bytes = received.iter().map(|t| t.bytes).sum();
    mark(&mut report, "data streamed and verified (SHA-256 at both ends)", &mut step);

    plugin(world, opts, &["release", &opts.name, "--context", "aps", "-n", USER_NS, "--timeout", "60s"])?;
    assert_nothing_left(world, &stream_id).await?;
    mark(&mut report, "release: both facilities clean", &mut step);
    Ok(report)
}
