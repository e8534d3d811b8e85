//! The agent: builder, node registration and heartbeats, the pod watch that
//! starts and stops pod workers, and a clean stop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::images::{ImageMap, ImageRule};
use crate::launch::Ctx;
use crate::network::{Network, NetworkMode};
use crate::node::{self, NodeAddresses};
use crate::podman::Podman;
use crate::topology::{NodeSpec, Topology};
use crate::worker::{self, Desired};
use crate::{Backoff, Error, Result};

/// Agent settings (the builder's state).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Nodes, networks and hosts.
    pub topology: Topology,
    /// Network mode.
    pub mode: NetworkMode,
    /// Image rules.
    pub images: ImageMap,
    /// Where pod directories go (default: a fresh temporary directory, removed at stop).
    pub state_dir: Option<PathBuf>,
    /// Restart backoff.
    pub backoff: Backoff,
    /// Node status and Lease renewal period.
    pub heartbeat: Duration,
    /// ConfigMap/Secret volume refresh period.
    pub sync_period: Duration,
    /// Only these nodes of the topology are served (default: all).
    pub serve: Option<Vec<String>>,
    /// Mount namespaces and pod users (default: when running as root);
    /// `false` uses the documented path rewrite instead.
    pub privileged: Option<bool>,
    /// Report every container Running and Ready at once, without running anything: the
    /// control-plane benchmark's thousands of relay pods (what it measures is the API traffic
    /// of operator and kubelet, not relays). Pods with a label of [`AgentConfig::always_run`]
    /// still run.
    pub simulated: bool,
    /// Labels (`key`, `value`) of pods that run even when [`AgentConfig::simulated`]: a
    /// Gateway's shared relays (one per node), whose streams are set on and reported through
    /// them.
    pub always_run: Vec<(String, String)>,
    /// Addresses of this machine's loopback the nodes' pods reach at the same address (see
    /// [`crate::services`]): the operator's relay channel, as a Service is reached on a node.
    pub host_services: Vec<std::net::SocketAddr>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            topology: Topology::default(),
            mode: NetworkMode::Loopback,
            images: ImageMap::with_defaults(None),
            state_dir: None,
            backoff: Backoff::default(),
            heartbeat: Duration::from_secs(10),
            sync_period: Duration::from_secs(1),
            serve: None,
            privileged: None,
            simulated: false,
            always_run: Vec::new(),
            host_services: Vec::new(),
        }
    }
}

/// Configures and starts a [`NodeAgent`].
#[derive(Clone)]
pub struct NodeAgentBuilder {
    client: Client,
    config: AgentConfig,
    network: Option<Arc<Network>>,
}

impl NodeAgentBuilder {
    /// The whole configuration at once.
    pub fn config(mut self, config: AgentConfig) -> Self {
        self.config = config;
        self
    }
    /// Nodes, networks and application hosts.
    pub fn topology(mut self, t: Topology) -> Self {
        self.config.topology = t;
        self
    }
    /// Adds a node (to the topology).
    pub fn node(mut self, n: NodeSpec) -> Self {
        self.config.topology.nodes.push(n);
        self
    }
    /// Network mode (default loopback).
    pub fn mode(mut self, m: NetworkMode) -> Self {
        self.config.mode = m;
        self
    }
    /// Maps `image` (pattern with `*`) to `program`; earlier rules win, and
    /// rules added here go before the defaults.
    pub fn image(mut self, image: &str, program: impl Into<PathBuf>) -> Self {
        let at = self
            .config
            .images
            .rules
            .iter()
            .position(|r| r.image == "haproxy:*")
            .unwrap_or(self.config.images.rules.len());
        self.config.images.rules.insert(at, ImageRule::process(image, program));
        self
    }
    /// Maps the s2ds image (`*s2ds*`) to a built `s2ds` binary.
    pub fn s2ds(mut self, program: impl Into<PathBuf>) -> Self {
        self.config.images.prepend(ImageRule::process("*s2ds*", program));
        self
    }
    /// Runs images matching `image` (pattern with `*`, e.g. `ghcr.io/scistream/*`) from the
    /// image itself with podman (`--pull never`: the image must have been built here). The
    /// rule goes first, ahead of every rule so far (`.s2ds()` included).
    pub fn podman_image(mut self, image: &str) -> Self {
        self.config.images.prepend(ImageRule::podman(image));
        self
    }
    /// Replaces all image rules.
    pub fn images(mut self, m: ImageMap) -> Self {
        self.config.images = m;
        self
    }
    /// Pod directories under `dir` (kept at stop).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.state_dir = Some(dir.into());
        self
    }
    /// Restart backoff.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.config.backoff = b;
        self
    }
    /// Heartbeat period.
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.config.heartbeat = d;
        self
    }
    /// Volume refresh period.
    pub fn sync_period(mut self, d: Duration) -> Self {
        self.config.sync_period = d;
        self
    }
    /// Uses an already built network (its topology and mode replace the
    /// builder's), e.g. one network shared by the agents of two clusters.
    /// The agent does not tear it down.
    pub fn network(mut self, n: Arc<Network>) -> Self {
        self.network = Some(n);
        self
    }
    /// Forces the unprivileged path-rewrite mode (`false`) even as root, or
    /// asks for mount namespaces and pod users (`true`, needs root).
    pub fn privileged(mut self, on: bool) -> Self {
        self.config.privileged = Some(on);
        self
    }
    /// Reports containers Running and Ready without running them (see
    /// [`AgentConfig::simulated`]).
    pub fn simulated(mut self, on: bool) -> Self {
        self.config.simulated = on;
        self
    }
    /// Pods labelled `key=value` run even when simulated (see [`AgentConfig::always_run`]).
    pub fn always_run(mut self, key: &str, value: &str) -> Self {
        self.config.always_run.push((key.to_owned(), value.to_owned()));
        self
    }
    /// Pods reach `addr`, an address of this machine's loopback, at the same address from
    /// every node (see [`crate::services`]).
    pub fn host_service(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.host_services.push(addr);
        self
    }

    /// Serves only these nodes of the topology (default: all of them).
    pub fn serve<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.config.serve = Some(nodes.into_iter().map(Into::into).collect());
        self
    }
    /// Builds the network, registers the nodes and starts running pods.
    pub async fn start(self) -> Result<NodeAgent> {
        NodeAgent::start(self.client, self.config, self.network).await
    }
}

/// A running agent. Call [`NodeAgent::stop`]; dropping it only aborts its tasks.
pub struct NodeAgent {
    ctx: Arc<Ctx>,
    config: AgentConfig,
    nodes: Vec<NodeSpec>,
    owns_network: bool,
    id: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    scratch: Option<PathBuf>,
}

fn addresses(net: &Network, n: &NodeSpec) -> NodeAddresses {
    let internal = net.address(&n.name).unwrap_or(std::net::Ipv4Addr::LOCALHOST);
    let external = match net.mode() {
        NetworkMode::Netns => net.plan().member(&n.name).and_then(|m| m.wan_address()).filter(|w| *w != internal),
        NetworkMode::Loopback => None,
    };
    NodeAddresses { internal, external }
}

/// The agent's directories (pods, and the scratch directory to remove at stop) and how it
/// runs podman: its `containers.conf` in the state directory, and the containers of crashed
/// agents removed (only when a rule uses podman: podman may not be installed otherwise).
async fn state(config: &AgentConfig, id: &str) -> Result<(PathBuf, Option<PathBuf>, Podman)> {
    let (state, scratch) = match &config.state_dir {
        Some(d) => (d.clone(), None),
        None => {
            let d = std::env::temp_dir().join(format!("nodeagent-{id}"));
            (d.clone(), Some(d))
        }
    };
    let pods_dir = state.join("pods");
    std::fs::create_dir_all(&pods_dir)
        .map_err(|source| Error::Io { context: format!("creating {}", pods_dir.display()), source })?;
    if !config.images.uses_podman() {
        return Ok((pods_dir, scratch, Podman::default()));
    }
    let podman = Podman::setup(&state)
        .map_err(|source| Error::Io { context: format!("writing containers.conf in {}", state.display()), source })?;
    let swept = podman.sweep_stale().await;
    if swept > 0 {
        tracing::info!(containers = swept, "removed podman containers of agents that are gone");
    }
    Ok((pods_dir, scratch, podman))
}

impl NodeAgent {
    /// A builder using `client`.
    pub fn builder(client: Client) -> NodeAgentBuilder {
        NodeAgentBuilder { client, config: AgentConfig::default(), network: None }
    }

    async fn start(client: Client, mut config: AgentConfig, shared: Option<Arc<Network>>) -> Result<NodeAgent> {
        crate::install_crypto_provider();
        let owns_network = shared.is_none();
        let network = match shared {
            Some(n) => {
                config.topology = n.topology().clone();
                config.mode = n.mode();
                n
            }
            None => Arc::new(Network::build(&config.topology, config.mode).await?),
        };
        let nodes: Vec<NodeSpec> = match &config.serve {
            None => config.topology.nodes.clone(),
            Some(names) => {
                let unknown: Vec<&String> =
                    names.iter().filter(|n| !config.topology.nodes.iter().any(|t| &&t.name == n)).collect();
                if !unknown.is_empty() {
                    if owns_network {
                        network.teardown().await;
                    }
                    return Err(Error::Config(format!(
                        "nodes {unknown:?} are not in the topology; declare them with .node(..)"
                    )));
                }
                config.topology.nodes.iter().filter(|t| names.contains(&t.name)).cloned().collect()
            }
        };
        let id = format!(
            "{}-{}",
            network.plan().prefix.trim_end_matches('-'),
            &uuid::Uuid::new_v4().simple().to_string()[..4]
        );
        let (pods_dir, scratch, podman) = match state(&config, &id).await {
            Ok(s) => s,
            Err(e) => {
                if owns_network {
                    network.teardown().await;
                }
                return Err(e);
            }
        };
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            images: config.images.clone(),
            network: network.clone(),
            pods_dir,
            backoff: config.backoff,
            sync_period: config.sync_period,
            privileged: config.privileged.unwrap_or_else(|| nix::unistd::geteuid().is_root()),
            podman,
            simulated: config.simulated,
            always_run: config.always_run.clone(),
        });
        let mut agent =
            NodeAgent { ctx, config, nodes, owns_network, id, stop: watch::channel(false).0, tasks: vec![], scratch };
        if let Err(e) = agent.register_nodes().await {
            if agent.owns_network {
                network.teardown().await;
            }
            return Err(e);
        }
        let hb = heartbeat(
            client.clone(),
            agent.config.heartbeat,
            agent.nodes.clone(),
            network.clone(),
            agent.stop.subscribe(),
        );
        agent.tasks.push(tokio::spawn(hb));
        agent.tasks.push(tokio::spawn(watch_pods(agent.ctx.clone(), agent.nodes.clone(), agent.stop.subscribe())));
        for addr in &agent.config.host_services {
            for n in &agent.nodes {
                let forward = crate::services::forward(network.clone(), n.name.clone(), *addr, agent.stop.subscribe());
                agent.tasks.push(tokio::spawn(forward));
            }
        }
        tracing::info!(agent = %agent.id, nodes = agent.nodes.len(), mode = ?agent.config.mode, "node agent started");
        Ok(agent)
    }

    async fn register_nodes(&self) -> Result<()> {
        let client = &self.ctx.client;
        for n in &self.nodes {
            let addrs = addresses(&self.ctx.network, n);
            node::register(client, n, addrs, &self.id).await?;
            node::post_status(client, n, addrs, true, Timestamp::now()).await?;
            node::renew_lease(client, &n.name, 40).await?;
        }
        Ok(())
    }

    /// The built network: addresses, `command_on`, `connect`, `listen`.
    pub fn network(&self) -> &Network {
        &self.ctx.network
    }

    /// Unique id of this agent (its network's namespace prefix plus a suffix).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Directory of pod directories.
    pub fn pods_dir(&self) -> &std::path::Path {
        &self.ctx.pods_dir
    }

    /// The directory holding the log files (`<container>.log`) of the pod with `uid`. (A
    /// kubelet does not write where its logs are into the pod object, so neither does the
    /// agent.)
    pub fn logs_dir(&self, uid: &str) -> std::path::PathBuf {
        self.ctx.pods_dir.join(uid).join("logs")
    }

    /// Stops every pod (SIGTERM, grace period, SIGKILL; pod objects stay),
    /// marks the nodes NotReady and removes scratch files, and the
    /// namespaces unless the network was shared in.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        let net = &self.ctx.network;
        for n in &self.nodes {
            if let Err(e) = node::post_status(&self.ctx.client, n, addresses(net, n), false, Timestamp::now()).await {
                tracing::warn!(node = %n.name, error = %e, "marking node NotReady failed");
            }
        }
        if self.owns_network {
            net.teardown().await;
        }
        if let Some(d) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        tracing::info!(agent = %self.id, "node agent stopped");
    }
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent").field("id", &self.id).field("config", &self.config).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeAgentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgentBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn heartbeat(
    client: Client,
    period: Duration,
    nodes: Vec<NodeSpec>,
    net: Arc<Network>,
    mut stop: watch::Receiver<bool>,
) {
    let since = Timestamp::now();
    let lease_secs = (period.as_secs() as i32 * 4).max(4);
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for n in &nodes {
            if let Err(e) = node::renew_lease(&client, &n.name, lease_secs).await {
                tracing::warn!(node = %n.name, error = %e, "lease renewal failed");
            }
            if let Err(e) = node::post_status(&client, n, addresses(&net, n), true, since).await {
                tracing::warn!(node = %n.name, error = %e, "node status failed");
            }
        }
    }
}

struct Running {
    tx: watch::Sender<Desired>,
    task: JoinHandle<()>,
}

fn deletion_grace(p: &Pod) -> Option<Duration> {
    p.metadata.deletion_timestamp.as_ref()?;
    let s = p
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| p.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Some(Duration::from_secs(s.max(0) as u64))
}

/// Watches all pods and keeps one worker per pod bound to our nodes.
async fn watch_pods(ctx: Arc<Ctx>, specs: Vec<NodeSpec>, mut stop: watch::Receiver<bool>) {
    let nodes: Vec<String> = specs.iter().map(|n| n.name.clone()).collect();
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut seen_in_init: Option<Vec<String>> = None;
    let mut stopping: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = stop.changed() => break,
        };
        let Some(ev) = ev else { break };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        match ev {
            watcher::Event::Init => seen_in_init = Some(vec![]),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                if let Some(seen) = seen_in_init.as_mut() {
                    seen.push(p.uid().unwrap_or_default());
                }
                if let Some(node) = crate::scheduler::choose(&p, &specs) {
                    let (client, node) = (ctx.client.clone(), node.name.clone());
                    tokio::spawn(async move {
                        if let Err(e) = crate::scheduler::bind(&client, &p, &node).await {
                            tracing::warn!(pod = %p.name_any(), node, error = %e, "binding pod failed");
                        }
                    });
                    continue;
                }
                apply(&ctx, &nodes, &mut running, p);
            }
            watcher::Event::Delete(p) => {
                if let Some(r) = running.remove(&p.uid().unwrap_or_default()) {
                    let _ = r.tx.send(Desired::Gone);
                    stopping.push(r.task);
                }
            }
            watcher::Event::InitDone => {
                let seen = seen_in_init.take().unwrap_or_default();
                let gone: Vec<String> = running.keys().filter(|k| !seen.contains(k)).cloned().collect();
                for k in gone {
                    if let Some(r) = running.remove(&k) {
                        let _ = r.tx.send(Desired::Gone);
                        stopping.push(r.task);
                    }
                }
            }
        }
        running.retain(|_, r| !r.task.is_finished());
        stopping.retain(|t| !t.is_finished());
    }
    for r in running.values() {
        let _ = r.tx.send(Desired::Shutdown);
    }
    for t in running.into_values().map(|r| r.task).chain(stopping) {
        let _ = t.await;
    }
}

fn apply(ctx: &Arc<Ctx>, nodes: &[String], running: &mut HashMap<String, Running>, p: Pod) {
    let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| nodes.contains(n)) else { return };
    let uid = p.uid().unwrap_or_default();
    let desired = match deletion_grace(&p) {
        Some(g) => Desired::Delete(g),
        None => Desired::Run(Box::new(p.clone())),
    };
    if let Some(r) = running.get(&uid) {
        let _ = r.tx.send(desired);
        return;
    }
    if let Desired::Delete(_) = desired {
        // Never ran here (e.g. deleted while the agent was down): just release it.
        let client = ctx.client.clone();
        tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, &p.namespace().unwrap_or_default());
            let dp = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
            let _ = api.delete(&p.name_any(), &dp).await;
        });
        return;
    }
    let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return;
    }
    let (tx, rx) = watch::channel(desired);
    let task = tokio::spawn(worker::run(ctx.clone(), node, p, rx));
    running.insert(uid, Running { tx, task });
}
