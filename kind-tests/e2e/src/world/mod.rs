//! Two facilities on one machine: one network shared by both (facility LANs and a WAN, in
//! network namespaces as root, on loopback addresses otherwise) and, per facility, an API
//! server with our CRDs installed from `crds/` by real kubectl, a node agent running two
//! gateway nodes' pods as real processes, an operator and a Gateway.
//!
//! The API servers are embedded in this process, or (API-server mode, see [`crate::external`])
//! any two the environment names, e.g. `testcluster` processes or a real kube-apiserver: the
//! suite then runs its node agents and operators against them the same way, so every scenario
//! runs. Or, when `SCISTREAM_E2E_KUBECONFIG_PROD` / `_CONS` are set, two clusters with the
//! operator installed and real kubelets: the applications then run on this machine, and
//! scenarios that need to control the operator or the relay processes skip themselves through
//! [`embedded_only`].

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::apps::Hosts;
use kube::Client;
use scistream_nodeagent::{NetworkMode, NodeAgent, NodeSpec, Topology, network::Network, topology::lan};
use scistream_testcluster::TestCluster;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
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
/// Bearer token of user `colleague` in both facilities' API servers (another 1.x user, given
/// the same rights as `scientist` by the scenarios that use it).
pub const COLLEAGUE_TOKEN: &str = "colleague-token";

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
    /// Images matching this pattern run from the image with podman (built here), not as processes.
    pub podman_images: Option<String>,
    /// More flags of every facility's operator, after the suite's own (e.g. the control
    /// endpoint's `--control-auth`).
    pub operator_args: Vec<String>,
    /// Secrets made in every facility's `default` namespace (where the control endpoint reads
    /// its Secrets) before its operator starts: name and string data (e.g. the introspection
    /// mode's client credentials).
    pub control_secrets: Vec<(String, std::collections::BTreeMap<String, String>)>,
    /// Each Gateway's `spec.policy`. Default: open (Plain, static targets, loopback and the
    /// gateway nodes allowed), for a world on one host; a scenario about the policy sets its own.
    pub policy: serde_json::Value,
    /// Each Gateway's `spec.s2ds` (null: absent).
    pub s2ds_settings: serde_json::Value,
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
            podman_images: None,
            operator_args: Vec::new(),
            control_secrets: Vec::new(),
            policy: serde_json::to_value(scistream_api::policy::GatewayPolicy::open()).unwrap_or_default(),
            s2ds_settings: serde_json::Value::Null,
        }
    }

    /// As run by the suite: network namespaces when root, the workspace's built `s2ds`.
    pub fn for_tests(implementation: &str) -> anyhow::Result<Options> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
        Ok(Options::new(nix::unistd::geteuid().is_root(), crate::built_binary("s2ds")?, root, implementation))
    }

    /// Gateways whose relays are shared (`spec.s2ds.relayModel: Shared`): their operators
    /// then serve the relay channel.
    pub fn shared_relays(&self) -> bool {
        self.s2ds_settings.get("relayModel").and_then(|m| m.as_str()) == Some("Shared")
    }

    /// Both Gateways on shared relays, their operators serving the relay channel.
    pub fn with_shared_relays(mut self) -> Options {
        match self.s2ds_settings.as_object_mut() {
            Some(settings) => {
                settings.insert("relayModel".to_owned(), "Shared".into());
            }
            None => self.s2ds_settings = serde_json::json!({"relayModel": "Shared"}),
        }
        self
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
    /// Admin client.
    pub client: Client,
    /// Its control endpoint, `host:port` (TLS).
    pub control: String,
    /// Namespace and name of the Secret with the control endpoint's certificate.
    pub control_secret: (String, String),
    /// What runs in this process (none against real clusters).
    embedded: Option<Embedded>,
}

/// The parts of a facility that this process runs.
pub struct Embedded {
    /// Its API server, when it is embedded too (none in API-server mode).
    pub cluster: Option<TestCluster>,
    /// The facility's own kubeconfig (what its operator and node agent use).
    pub kubeconfig: PathBuf,
    /// Its node agent.
    pub agent: NodeAgent,
    /// Port of its control endpoint on 127.0.0.1.
    pub control_port: u16,
    /// The flags its operator was given beyond the suite's own ([`Options::operator_args`]).
    operator_args: Vec<String>,
    operator: (CancellationToken, JoinHandle<anyhow::Result<()>>),
}

impl Facility {
    /// The embedded parts, or an error saying the scenario needs them.
    pub fn embedded(&self) -> anyhow::Result<&Embedded> {
        let name = &self.name;
        self.embedded.as_ref().with_context(|| format!("{name} is a real cluster: this needs the embedded facility"))
    }

    /// The embedded parts, to change (see [`Facility::embedded`]).
    pub fn embedded_mut(&mut self) -> anyhow::Result<&mut Embedded> {
        let name = self.name.clone();
        self.embedded.as_mut().with_context(|| format!("{name} is a real cluster: this needs the embedded facility"))
    }
}

/// True, after saying so on stderr, when the suite runs against clusters with the operator
/// installed and real kubelets: a scenario that needs `what` of the facilities this process
/// runs then returns early (a skip, not a pass that checked something). Never true in
/// embedded or API-server mode.
pub fn embedded_only(what: &str) -> bool {
    let installed = std::env::var_os(crate::external::PROD_KUBECONFIG).is_some();
    if installed {
        eprintln!(
            "skipped on clusters with the operator installed: this scenario needs {what} of facilities the suite runs itself"
        );
    }
    installed
}

/// Both facilities and their network.
pub struct World {
    /// Producer facility, then consumer facility.
    pub facilities: Vec<Facility>,
    /// The embedded facilities' network (none against real clusters).
    network: Option<Arc<Network>>,
    /// Where the applications run (scenarios reach them through [`World::apps`]).
    hosts: Hosts,
    /// A kubeconfig with one context per facility.
    pub kubeconfig: PathBuf,
    /// Timings of the set-up steps.
    pub timings: Vec<(String, Duration)>,
    /// The bearer token of user `scientist` in both facilities.
    pub scientist_token: String,
    /// The bearer token of user `colleague` in both facilities.
    pub colleague_token: String,
    /// Whether the API servers outlive this world (API-server mode): shutdown then clears what
    /// the world left in them.
    shared_api_servers: bool,
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

mod local;

mod tempfile_dir {
    //! A scratch directory removed on drop (kubeconfigs, kubectl caches).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The application hosts ([`PRODUCER_HOST`], [`CONSUMER_HOST`]) as the scenarios reach them:
/// their address, a listening socket, a connection made from them. The only way tests touch
/// the network, so that another world (real clusters, this machine as both hosts) can serve
/// them too. Cheap to clone into tasks.
#[derive(Clone)]
pub struct Apps(Hosts);

impl Apps {
    /// The address `host` listens on and connects from.
    pub fn address(&self, host: &str) -> std::io::Result<IpAddr> {
        self.0.address(host).map(IpAddr::V4).ok_or_else(|| std::io::Error::other(format!("no application host {host}")))
    }

    /// A listening socket on `host`, on `port` (0: one the system chooses).
    pub async fn listen(&self, host: &str, port: u16) -> std::io::Result<TcpListener> {
        self.0.listen(host, SocketAddr::new(self.address(host)?, port)).await
    }

    /// A connection to `addr` made from `host`.
    pub async fn connect(&self, host: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
        self.0.connect(host, addr).await
    }
}

impl World {
    /// The application hosts, for tasks that outlive a borrow of the world.
    pub fn apps(&self) -> Apps {
        Apps(self.hosts.clone())
    }

    /// A listening socket on application host `host` (see [`Apps::listen`]).
    pub async fn listen(&self, host: &str, port: u16) -> std::io::Result<TcpListener> {
        self.apps().listen(host, port).await
    }

    /// A connection to `addr` from application host `host` (see [`Apps::connect`]).
    pub async fn connect(&self, host: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
        self.apps().connect(host, addr).await
    }

    /// Builds both facilities, or connects to the installed ones the environment names (see
    /// [`crate::external::Target`]).
    pub async fn start(opts: &Options) -> anyhow::Result<World> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        match crate::external::target_from_env()? {
            crate::external::Target::Installed(ext) => World::real_clusters(&ext).await,
            crate::external::Target::Embedded => local::start(opts, None).await,
            crate::external::Target::ApiServers(a) => local::start(opts, Some(&a)).await,
        }
    }

    /// The two real facilities `ext` names: nothing is started; applications run here.
    async fn real_clusters(ext: &crate::external::External) -> anyhow::Result<World> {
        let t = Instant::now();
        let scratch = scratch_dir()?;
        let kubeconfig = scratch.0.join("kubeconfig");
        let clients = crate::external::connect(ext, FACILITIES, &kubeconfig, "dtn", USER_NS).await?;
        let facilities = FACILITIES
            .iter()
            .zip(clients)
            .zip(&ext.controls)
            .map(|((name, client), control)| Facility {
                name: (*name).to_owned(),
                client,
                control: control.clone(),
                control_secret: ext.control_secret.clone(),
                embedded: None,
            })
            .collect();
        let timings = vec![("real clusters: connected, Gateways Ready".to_owned(), t.elapsed())];
        let hosts = Hosts::Local(ext.app_address);
        Ok(World {
            facilities,
            network: None,
            hosts,
            kubeconfig,
            timings,
            scientist_token: SCIENTIST_TOKEN.to_owned(),
            colleague_token: COLLEAGUE_TOKEN.to_owned(),
            shared_api_servers: true,
            scratch,
        })
    }

    /// The variables that run the suite against this world's facilities as if they were real
    /// clusters (`crate::external`), as shell `export` lines. Only for embedded facilities on
    /// loopback addresses: there the gateway nodes reach this machine's 127.0.0.1, where the
    /// suite's applications then run (in network namespaces they cannot).
    pub fn as_external_env(&self) -> anyhow::Result<String> {
        use crate::external::*;
        let network = self.network.as_ref().context("these facilities are real clusters already")?;
        if network.mode() != NetworkMode::Loopback {
            bail!("only facilities on loopback addresses can be used as external clusters (run with --loopback)");
        }
        let mut vars = Vec::new();
        for (f, (kubeconfig, control)) in
            self.facilities.iter().zip([(PROD_KUBECONFIG, PROD_CONTROL), (CONS_KUBECONFIG, CONS_CONTROL)])
        {
            let e = f.embedded.as_ref().context("an embedded facility without its parts")?;
            vars.push((kubeconfig, e.kubeconfig.display().to_string()));
            vars.push((control, f.control.clone()));
        }
        let (ns, name) = &self.facilities[0].control_secret;
        vars.push((CONTROL_SECRET, format!("{ns}/{name}")));
        vars.push((APP_ADDRESS, "127.0.0.1".to_owned()));
        Ok(vars.iter().map(|(k, v)| format!("export {k}={v}\n")).collect())
    }

    /// Whether the facilities are real clusters.
    pub fn is_external(&self) -> bool {
        self.network.is_none()
    }

    /// Stops everything this process runs and removes the network (against installed
    /// clusters: nothing to stop). API servers that outlive the world are cleared of what it
    /// left (requests, relays, the Gateway), so that the next world starts from nothing.
    pub async fn shutdown(self) {
        for f in self.facilities {
            let Some(e) = f.embedded else { continue };
            e.operator.0.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), e.operator.1).await;
            e.agent.stop().await;
            match e.cluster {
                Some(cluster) => cluster.shutdown().await,
                None if self.shared_api_servers => {
                    if let Err(err) = local::clear(&f.client).await {
                        eprintln!("{}: clearing what this world left failed: {err:#}", f.name);
                    }
                }
                None => {}
            }
        }
        if let Some(network) = self.network {
            network.teardown().await;
        }
        drop(self.scratch);
    }
}

/// A scratch directory of its own for each world of this process.
fn scratch_dir() -> anyhow::Result<tempfile_dir::Dir> {
    static WORLDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nth = WORLDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile_dir::Dir(std::env::temp_dir().join(format!("scistream-world-{}-{nth}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    Ok(dir)
}

/// Fault injection for the suite's fault scenarios (`faults.rs`): a facility's operator
/// stopped and started again. (Kept apart from the set-up above.)
impl World {
    /// Stops facility `i`'s operator (its controllers and control endpoint) and waits until
    /// it has exited. What it held is in the API, not in its memory.
    pub async fn stop_operator(&mut self, i: usize) -> anyhow::Result<()> {
        let f = self.facilities.get_mut(i).context("no such facility")?;
        let name = f.name.clone();
        let f = f.embedded_mut()?;
        let stopped = (CancellationToken::new(), tokio::spawn(async { Ok(()) }));
        let (token, handle) = std::mem::replace(&mut f.operator, stopped);
        token.cancel();
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .with_context(|| format!("{name}: the operator did not stop within 30s"))?
            .context("operator task")?
            .with_context(|| format!("{name}: the operator failed"))
    }

    /// Starts facility `i`'s operator again (same flags, same control endpoint port) and waits
    /// until its control endpoint accepts connections again.
    pub async fn start_operator(&mut self, i: usize) -> anyhow::Result<()> {
        let f = self.facilities.get_mut(i).context("no such facility")?;
        let name = f.name.clone();
        let f = f.embedded_mut()?;
        f.operator = local::start_operator(&f.kubeconfig, &name, f.control_port, &f.operator_args)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", f.control_port)).await.is_err() {
            if f.operator.1.is_finished() {
                bail!("{name}: the operator exited while starting");
            }
            if Instant::now() > deadline {
                bail!("{name}: the control endpoint did not come back within 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}
