//! Two facilities on one machine: one network shared by both (facility LANs and a WAN, in
//! network namespaces as root, on loopback addresses otherwise) and, per facility, an
//! embedded API server with our CRDs installed from `crds/` by real kubectl, a node agent
//! running two gateway nodes' pods as real processes, an operator and a Gateway.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kube::{Api, Client, api::PostParams};
use scistream_api::{Gateway, keys};
use scistream_nodeagent::{NetworkMode, NodeAgent, NodeSpec, Topology, network::Network, topology::lan};
use scistream_testcluster::TestCluster;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Namespace of the relays in each facility.
pub const GATEWAY_NS: &str = "scistream-gateway";
/// Namespace of the users' streams in each facility.
pub const USER_NS: &str = "science";
/// The two facilities: producer first.
pub const FACILITIES: [&str; 2] = ["aps", "alcf"];
/// The producer application's host (on the producer facility's LAN).
pub const PRODUCER_HOST: &str = "app-aps";
/// The consumer application's host (on the consumer facility's LAN).
pub const CONSUMER_HOST: &str = "app-alcf";
/// Bearer token of user `scientist` in both facilities' API servers (a 1.x client's token in
/// the control endpoint's `kubernetes` mode; no rights until a scenario grants them).
pub const SCIENTIST_TOKEN: &str = "scientist-token";

/// Settings of a world.
#[derive(Clone, Debug)]
pub struct Options {
    /// Network namespaces (needs root) rather than loopback addresses.
    pub netns: bool,
    /// The built `s2ds` binary.
    pub s2ds: PathBuf,
    /// Repository root (for `crds/`).
    pub root: PathBuf,
    /// Relay implementation of both gateways (the producer's only, when
    /// `consumer_implementation` is set).
    pub implementation: String,
    /// Relay implementation of the consumer facility's gateway, when it differs.
    pub consumer_implementation: Option<String>,
    /// Each gateway's port range on every node (inclusive).
    pub port_range: (u16, u16),
    /// Bandwidth each gateway declares, e.g. `100Gbps`.
    pub bandwidth: String,
}

impl Options {
    /// Both gateways running `implementation`, 100 ports per node, 100 Gbit/s.
    pub fn new(netns: bool, s2ds: PathBuf, root: PathBuf, implementation: &str) -> Options {
        Options {
            netns,
            s2ds,
            root,
            implementation: implementation.to_owned(),
            consumer_implementation: None,
            port_range: (5100, 5199),
            bandwidth: "100Gbps".to_owned(),
        }
    }

    /// As run by the suite: network namespaces when root, the workspace's built `s2ds`.
    pub fn for_tests(implementation: &str) -> anyhow::Result<Options> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
        Ok(Options::new(nix::unistd::geteuid().is_root(), crate::built_binary("s2ds")?, root, implementation))
    }

    /// The producer's gateway on `producer`, the consumer's on `consumer`.
    pub fn implementations(mut self, producer: &str, consumer: &str) -> Options {
        self.implementation = producer.to_owned();
        self.consumer_implementation = Some(consumer.to_owned());
        self
    }

    /// The implementation of facility `index` (0: producer, 1: consumer).
    pub fn implementation_of(&self, index: usize) -> &str {
        match (index, &self.consumer_implementation) {
            (1, Some(consumer)) => consumer,
            _ => &self.implementation,
        }
    }
}

/// One facility.
pub struct Facility {
    /// Its name (also its kubeconfig context).
    pub name: String,
    /// Its API server.
    pub cluster: TestCluster,
    /// Admin client.
    pub client: Client,
    /// Its node agent.
    pub agent: NodeAgent,
    /// Port of its control endpoint on 127.0.0.1 (TLS, certificate in Secret
    /// default/scistream-control-tls).
    pub control_port: u16,
    operator: (CancellationToken, JoinHandle<anyhow::Result<()>>),
}

/// Both facilities and their network.
pub struct World {
    /// Producer facility, then consumer facility.
    pub facilities: Vec<Facility>,
    /// The shared network.
    pub network: Arc<Network>,
    /// A kubeconfig with one context per facility.
    pub kubeconfig: PathBuf,
    /// Timings of the set-up steps.
    pub timings: Vec<(String, Duration)>,
    scratch: tempfile_dir::Dir,
}

/// The topology: per facility two gateway nodes on its LAN and the WAN, and an application
/// host on its LAN only (it reaches the other facility through the gateways, or not at all).
pub fn topology() -> Topology {
    let mut t = Topology::new().network("wan");
    for f in FACILITIES {
        t = t.facility(f);
        for i in 1..=2 {
            t = t.node(NodeSpec::gateway(&format!("gw-{f}-{i}"), f).label("scistream.io/gateway", "dtn"));
        }
        t = t.app_host(&format!("app-{f}"), &lan(f));
    }
    t
}

mod tempfile_dir {
    //! A scratch directory removed on drop (kubeconfigs, kubectl caches).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn kubectl(kubeconfig: &Path, cache: &Path, context: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--context", context])
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl World {
    /// Builds both facilities.
    pub async fn start(opts: &Options) -> anyhow::Result<World> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut timings = Vec::new();
        let t = Instant::now();
        let mode = if opts.netns { NetworkMode::Netns } else { NetworkMode::Loopback };
        let network = Arc::new(Network::build(&topology(), mode).await.context("building the test network")?);
        timings.push((format!("network ({mode:?})"), t.elapsed()));
        static WORLDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = WORLDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch =
            tempfile_dir::Dir(std::env::temp_dir().join(format!("scistream-world-{}-{nth}", std::process::id())));
        std::fs::create_dir_all(&scratch.0)?;
        let mut facilities = Vec::new();
        let mut merged = json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []});
        for name in FACILITIES {
            let t = Instant::now();
            let cluster = TestCluster::builder().name(name).user(SCIENTIST_TOKEN, "scientist", &[]).start().await?;
            let client = cluster.client().await?;
            let one: Value = serde_yaml::from_str(&std::fs::read_to_string(cluster.kubeconfig_path())?)?;
            for key in ["clusters", "users", "contexts"] {
                if let (Some(all), Some(items)) = (merged[key].as_array_mut(), one[key].as_array()) {
                    all.extend(items.iter().cloned());
                }
            }
            facilities.push((name, cluster, client));
            timings.push((format!("{name}: API server"), t.elapsed()));
        }
        merged["current-context"] = json!(FACILITIES[0]);
        let kubeconfig = scratch.0.join("kubeconfig");
        std::fs::write(&kubeconfig, serde_yaml::to_string(&merged)?)?;
        let mut built = Vec::new();
        for (index, (name, cluster, client)) in facilities.into_iter().enumerate() {
            let t = Instant::now();
            // As a user would: the CRDs from crds/, the namespaces and the Gateway with kubectl.
            let cache = scratch.0.join(format!("cache-{name}"));
            let crds = opts.root.join("crds");
            let (kc, cache2, crds2, ctx) = (kubeconfig.clone(), cache.clone(), crds.clone(), name.to_owned());
            tokio::task::spawn_blocking(move || {
                kubectl(&kc, &cache2, &ctx, &["apply", "--server-side", "-f", &crds2.display().to_string()])
            })
            .await??;
            wait_served(&client).await?;
            for (ns, level) in [(GATEWAY_NS, "privileged"), (USER_NS, "restricted")] {
                let object = serde_json::from_value(
                    json!({"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": level}}}),
                )?;
                Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                    .create(&PostParams::default(), &object)
                    .await?;
            }
            let agent = start_agent(opts, &network, name, &client).await?;
            let control_port = free_port()?;
            let operator = start_operator(&cluster, name, control_port);
            let mut spec = json!({"nodeSelector": {"scistream.io/gateway": "dtn", "scistream.io/facility": name},
                         "bandwidth": opts.bandwidth, "podNamespace": GATEWAY_NS,
                         "implementation": opts.implementation_of(index),
                         "portRange": {"start": opts.port_range.0, "end": opts.port_range.1}});
            if !opts.netns {
                // On loopback a node has one address: its WAN address is its LAN address.
                spec["addresses"] = json!({"wan": {"annotation": keys::ANNOTATION_LAN_ADDRESS}});
            }
            let gateway: Gateway = serde_json::from_value(json!({
                "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "dtn"}, "spec": spec
            }))?;
            Api::<Gateway>::all(client.clone()).create(&PostParams::default(), &gateway).await?;
            wait_gateway_ready(&client).await?;
            timings.push((format!("{name}: CRDs, node agent, operator, Gateway ready"), t.elapsed()));
            built.push(Facility { name: name.to_owned(), cluster, client, agent, operator, control_port });
        }
        Ok(World { facilities: built, network, kubeconfig, timings, scratch })
    }

    /// Stops everything and removes the network.
    pub async fn shutdown(self) {
        for f in self.facilities {
            f.operator.0.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), f.operator.1).await;
            f.agent.stop().await;
            f.cluster.shutdown().await;
        }
        self.network.teardown().await;
        drop(self.scratch);
    }
}

async fn wait_served(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Api::<Gateway>::all(client.clone()).list(&Default::default()).await.is_err() {
        if Instant::now() > deadline {
            bail!("the CRDs were not served within 10s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_gateway_ready(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gw = Api::<Gateway>::all(client.clone()).get("dtn").await?;
        let status = gw.status.unwrap_or_default();
        if status.ready_nodes == 2 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Gateway dtn not ready after 30s: {:?}", status.conditions);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_agent(
    opts: &Options,
    network: &Arc<Network>,
    facility: &str,
    client: &Client,
) -> anyhow::Result<NodeAgent> {
    let mine: Vec<String> = topology()
        .nodes
        .into_iter()
        .filter(|n| n.labels.get("scistream.io/facility").map(String::as_str) == Some(facility))
        .map(|n| n.name)
        .collect();
    Ok(NodeAgent::builder(client.clone()).network(network.clone()).serve(mine).s2ds(&opts.s2ds).start().await?)
}

/// A free port on 127.0.0.1 for a facility's control endpoint.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_operator(
    cluster: &TestCluster,
    name: &str,
    control_port: u16,
) -> (CancellationToken, JoinHandle<anyhow::Result<()>>) {
    let control_addr = format!("127.0.0.1:{control_port}");
    let args = <scistream_controller::Args as clap::Parser>::parse_from([
        "scistream-operator",
        "--kubeconfig",
        &cluster.kubeconfig_path().display().to_string(),
        "--no-leader-election",
        "--metrics-addr",
        "127.0.0.1:0",
        "--namespace",
        "default",
        "--identity",
        &format!("operator-{name}"),
        "--drain-seconds",
        "2",
        "--transfer-interval-seconds",
        "2",
        "--nginx-stream-module",
        "/usr/lib/nginx/modules/ngx_stream_module.so",
        "--control-addr",
        &control_addr,
        "--control-http-addr",
        "off",
        "--control-tls-namespace",
        "default",
        "--control-tls-ip",
        "127.0.0.1",
        // Legacy (1.x `req`) streams in the users' namespace on the facility's Gateway.
        "--control-namespace",
        USER_NS,
        "--control-gateway",
        "dtn",
    ]);
    let token = CancellationToken::new();
    let handle = tokio::spawn(scistream_controller::run_until(args, token.clone()));
    (token, handle)
}

/// Fault injection for the suite's fault scenarios (`faults.rs`): a facility's operator
/// stopped and started again. (Kept apart from the set-up above.)
impl World {
    /// Stops facility `i`'s operator (its controllers and control endpoint) and waits until
    /// it has exited. What it held is in the API, not in its memory.
    pub async fn stop_operator(&mut self, i: usize) -> anyhow::Result<()> {
        let f = self.facilities.get_mut(i).context("no such facility")?;
        let stopped = (CancellationToken::new(), tokio::spawn(async { Ok(()) }));
        let (token, handle) = std::mem::replace(&mut f.operator, stopped);
        token.cancel();
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .with_context(|| format!("{}: the operator did not stop within 30s", f.name))?
            .context("operator task")?
            .with_context(|| format!("{}: the operator failed", f.name))
    }

    /// Starts facility `i`'s operator again (same flags, same control endpoint port) and waits
    /// until its control endpoint accepts connections again.
    pub async fn start_operator(&mut self, i: usize) -> anyhow::Result<()> {
        let f = self.facilities.get_mut(i).context("no such facility")?;
        f.operator = start_operator(&f.cluster, &f.name, f.control_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", f.control_port)).await.is_err() {
            if f.operator.1.is_finished() {
                bail!("{}: the operator exited while starting", f.name);
            }
            if Instant::now() > deadline {
                bail!("{}: the control endpoint did not come back within 30s", f.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// The application hosts, reached through the world (scenarios do not touch the network).
impl World {
    /// The address of `host` (an application host or node of the topology).
    pub fn address(&self, host: &str) -> anyhow::Result<std::net::Ipv4Addr> {
        self.network.address(host).with_context(|| format!("{host} has no address"))
    }

    /// Listens on `addr` from `host`.
    pub async fn listen(&self, host: &str, addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
        self.network.listen(host, addr).await.with_context(|| format!("{host}: listen on {addr}"))
    }

    /// Connects from `host` to `addr`. The future owns what it needs (it can be spawned).
    pub fn connect(
        &self,
        host: &str,
        addr: std::net::SocketAddr,
    ) -> impl Future<Output = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
        let (network, host) = (self.network.clone(), host.to_owned());
        async move { network.connect(&host, addr).await }
    }
}
