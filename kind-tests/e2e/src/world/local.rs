//! Facilities this process runs: per facility an API server (embedded, or one the environment
//! names), our CRDs from `crds/` applied by real kubectl, the namespaces, a node agent for its
//! two gateway nodes, an operator with its control endpoint, and the Gateway.
//!
//! API servers that outlive a world are shared by the scenarios run one after the other
//! (`kind-tests/external-check.sh`): each world first clears what an earlier one may have left
//! (a scenario that panicked), and clears what it made when it shuts down.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use scistream_api::{Gateway, StreamRequest, keys};
use scistream_nodeagent::{NetworkMode, NodeAgent, network::Network};
use scistream_testcluster::TestCluster;
use scistream_testkit::{OperatorOptions, OperatorTask, operator_args, spawn_operator};
use serde_json::json;

use super::{
    COLLEAGUE_TOKEN, Embedded, FACILITIES, Facility, GATEWAY_NS, Options, SCIENTIST_TOKEN, USER_NS, World, scratch_dir,
    topology,
};
use crate::{apps::Hosts, external::ApiServers};

/// One facility's API server before the rest is set up.
struct Server {
    name: &'static str,
    cluster: Option<TestCluster>,
    kubeconfig: PathBuf,
    client: Client,
}

/// Builds both facilities on embedded API servers, or on `api_servers`.
pub(super) async fn start(opts: &Options, api_servers: Option<&ApiServers>) -> anyhow::Result<World> {
    let mut timings = Vec::new();
    let t = Instant::now();
    let mode = if opts.netns { NetworkMode::Netns } else { NetworkMode::Loopback };
    let network = Arc::new(Network::build(&topology(), mode).await.context("building the test network")?);
    timings.push((format!("network ({mode:?})"), t.elapsed()));
    let scratch = scratch_dir()?;
    let mut servers = Vec::new();
    for (i, name) in FACILITIES.into_iter().enumerate() {
        let t = Instant::now();
        let server = match api_servers {
            None => {
                let cluster = TestCluster::builder()
                    .name(name)
                    .user(SCIENTIST_TOKEN, "scientist", &[])
                    .user(COLLEAGUE_TOKEN, "colleague", &[])
                    .start()
                    .await?;
                let (kubeconfig, client) = (cluster.kubeconfig_path().to_owned(), cluster.client().await?);
                Server { name, cluster: Some(cluster), kubeconfig, client }
            }
            Some(a) => {
                let kubeconfig = a.kubeconfigs[i].clone();
                let client = client_for(&kubeconfig).await.with_context(|| format!("{name}: the API server"))?;
                clear(&client).await.with_context(|| format!("{name}: clearing what an earlier run left"))?;
                Server { name, cluster: None, kubeconfig, client }
            }
        };
        timings.push((format!("{name}: API server"), t.elapsed()));
        servers.push(server);
    }
    let mut read = Vec::new();
    for s in &servers {
        let text =
            std::fs::read_to_string(&s.kubeconfig).with_context(|| format!("reading {}", s.kubeconfig.display()))?;
        read.push((s.name, serde_yaml::from_str(&text)?));
    }
    let kubeconfig = scratch.0.join("kubeconfig");
    std::fs::write(&kubeconfig, serde_yaml::to_string(&crate::external::merge_kubeconfigs(&read)?)?)?;
    let mut built = Vec::new();
    for (index, server) in servers.into_iter().enumerate() {
        let t = Instant::now();
        let name = server.name;
        built.push(facility(opts, &network, &kubeconfig, &scratch.0, index, server).await?);
        timings.push((format!("{name}: CRDs, node agent, operator, Gateway ready"), t.elapsed()));
    }
    let hosts = Hosts::Network(network.clone());
    Ok(World {
        facilities: built,
        network: Some(network),
        hosts,
        kubeconfig,
        timings,
        scientist_token: api_servers.map_or_else(|| SCIENTIST_TOKEN.to_owned(), |a| a.scientist_token.clone()),
        colleague_token: api_servers.map_or_else(|| COLLEAGUE_TOKEN.to_owned(), |a| a.colleague_token.clone()),
        shared_api_servers: api_servers.is_some(),
        scratch,
    })
}

/// A client of the current context of `kubeconfig`.
async fn client_for(kubeconfig: &Path) -> anyhow::Result<Client> {
    let config = Kubeconfig::read_from(kubeconfig)?;
    let c = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(c)?)
}

/// Everything else of facility `index` on its API server, as a user and an operator would set
/// it up: the CRDs and namespaces with kubectl and the API, node agent, operator, Gateway.
async fn facility(
    opts: &Options,
    network: &Arc<Network>,
    kubeconfig: &Path,
    scratch: &Path,
    index: usize,
    server: Server,
) -> anyhow::Result<Facility> {
    let Server { name, cluster, kubeconfig: own_kubeconfig, client } = server;
    let cache = scratch.join(format!("cache-{name}"));
    let crds = opts.root.join("crds");
    let (kc, ctx) = (kubeconfig.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        kubectl(&kc, &cache, &ctx, &["apply", "--server-side", "--force-conflicts", "-f", &crds.display().to_string()])
    })
    .await??;
    wait_served(&client).await?;
    for (ns, level) in [(GATEWAY_NS, "privileged"), (USER_NS, "restricted")] {
        let object = serde_json::from_value(
            json!({"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": level}}}),
        )?;
        match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(s)) if s.code == 409 => {} // an API server shared with earlier worlds
            other => {
                other.with_context(|| format!("{name}: creating namespace {ns}"))?;
            }
        }
    }
    // The channel of the Gateway's shared relays, on this machine's loopback; the node agent
    // carries it into the nodes as kube-proxy carries a Service.
    let channel = opts.shared_relays().then(free_port).transpose()?.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let agent = start_agent(opts, network, name, &client, channel).await?;
    for (secret, data) in &opts.control_secrets {
        let object: Secret = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "stringData": data}),
        )?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        secrets
            .patch(secret, &PatchParams::apply("scistream-e2e").force(), &Patch::Apply(&object))
            .await
            .with_context(|| format!("{name}: Secret default/{secret}"))?;
    }
    let control_port = free_port()?;
    let mut operator_args = opts.operator_args.clone();
    if let Some(channel) = channel {
        operator_args.extend(["--relay-channel-addr".to_owned(), channel.to_string()]);
        operator_args.extend(["--relay-channel-advertise".to_owned(), channel.to_string()]);
    }
    let mut operator = start_operator(&own_kubeconfig, name, control_port, &operator_args)?;
    let mut spec = json!({"nodeSelector": {"scistream.io/gateway": "dtn", "scistream.io/facility": name},
                 "bandwidth": opts.bandwidth, "podNamespace": GATEWAY_NS,
                 "implementation": opts.implementation_of(index), "policy": opts.policy,
                 "portRange": {"start": opts.port_range.0, "end": opts.port_range.1}});
    // spec.s2ds is for S2ds Gateways only (the API refuses it on the others).
    if opts.implementation_of(index) == "S2ds" && !opts.s2ds_settings.is_null() {
        spec["s2ds"] = opts.s2ds_settings.clone();
    }
    if !opts.netns {
        // On loopback a node has one address: its WAN address is its LAN address.
        spec["addresses"] = json!({"wan": {"annotation": keys::ANNOTATION_LAN_ADDRESS}});
    }
    let gateway: Gateway = serde_json::from_value(json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "dtn"}, "spec": spec
    }))?;
    Api::<Gateway>::all(client.clone()).create(&PostParams::default(), &gateway).await?;
    wait_gateway_ready(&client, &mut operator).await.with_context(|| format!("{name}: starting"))?;
    Ok(Facility {
        name: name.to_owned(),
        client,
        control: format!("127.0.0.1:{control_port}"),
        control_secret: ("default".to_owned(), "scistream-control-tls".to_owned()),
        embedded: Some(Embedded { cluster, kubeconfig: own_kubeconfig, agent, operator, control_port, operator_args }),
    })
}

/// Removes what the suite makes in a facility's API server: StreamRequests (finalizers
/// stripped: no operator runs to honour them), Gateways, relay pods, their ConfigMaps and
/// Secrets, Hello-key Secrets; waits until the API no longer lists them. Namespaces, nodes,
/// CRDs and the control endpoint's certificate stay for the next world.
pub(super) async fn clear(client: &Client) -> anyhow::Result<()> {
    let unfinalize = json!({"metadata": {"finalizers": null}});
    let requests: Api<StreamRequest> = Api::all(client.clone());
    for sr in listed(&requests).await? {
        let api: Api<StreamRequest> = Api::namespaced(client.clone(), &sr.namespace().unwrap_or_default());
        gone(api.patch(&sr.name_any(), &PatchParams::default(), &Patch::Merge(&unfinalize)).await.map(|_| ()))?;
        gone(api.delete(&sr.name_any(), &DeleteParams::default()).await.map(|_| ()))?;
    }
    let gateways: Api<Gateway> = Api::all(client.clone());
    for gw in listed(&gateways).await? {
        gone(gateways.patch(&gw.name_any(), &PatchParams::default(), &Patch::Merge(&unfinalize)).await.map(|_| ()))?;
        gone(gateways.delete(&gw.name_any(), &DeleteParams::default()).await.map(|_| ()))?;
    }
    // No kubelet runs any more: pods go at once.
    let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    let pods: Api<Pod> = Api::namespaced(client.clone(), GATEWAY_NS);
    gone(pods.delete_collection(&now, &ListParams::default()).await.map(|_| ()))?;
    let ours = ListParams::default().labels(keys::LABEL_STREAM_ID);
    for ns in [GATEWAY_NS, USER_NS] {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        gone(secrets.delete_collection(&DeleteParams::default(), &ours).await.map(|_| ()))?;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        gone(cms.delete_collection(&DeleteParams::default(), &ours).await.map(|_| ()))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = listed(&requests).await?.len() + listed(&gateways).await?.len() + listed(&pods).await?.len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} StreamRequests, Gateways or relay pods are still listed 30s after their deletion");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every object `api` lists; none when the API server does not serve the type yet (our CRDs
/// are not installed on a new API server).
async fn listed<K>(api: &Api<K>) -> anyhow::Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

/// A deletion or patch whose object is already gone (or whose namespace does not exist yet)
/// is done.
fn gone(r: Result<(), kube::Error>) -> anyhow::Result<()> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => Ok(other?),
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

/// Waits until the Gateway has both nodes Ready; an operator that stopped meanwhile (a flag
/// refused, a port another process took first) is reported with its error at once, not as a
/// Gateway never reconciled.
async fn wait_gateway_ready(client: &Client, operator: &mut OperatorTask) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gw = Api::<Gateway>::all(client.clone()).get("dtn").await?;
        let status = gw.status.unwrap_or_default();
        if status.ready_nodes == 2 {
            return Ok(());
        }
        if operator.1.is_finished() {
            let outcome = match (&mut operator.1).await {
                Ok(Ok(())) => "it returned".to_owned(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("its task failed: {e}"),
            };
            bail!("the operator stopped before Gateway dtn was Ready: {outcome}");
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
    host_service: Option<SocketAddr>,
) -> anyhow::Result<NodeAgent> {
    let mine: Vec<String> = topology()
        .nodes
        .into_iter()
        .filter(|n| n.labels.get("scistream.io/facility").map(String::as_str) == Some(facility))
        .map(|n| n.name)
        .collect();
    let mut agent = NodeAgent::builder(client.clone()).network(network.clone()).serve(mine).s2ds(&opts.s2ds);
    if let Some(addr) = host_service {
        agent = agent.host_service(addr);
    }
    let agent = match &opts.podman_images {
        Some(pattern) => agent.podman_image(pattern),
        None => agent,
    };
    Ok(agent.start().await?)
}

/// Where [`free_port`] looks: below Linux's default ephemeral range (32768-60999), which
/// sockets bound to port 0 and outgoing connections take their ports from.
const CHOSEN_PORTS: std::ops::Range<u16> = 20000..32768;

/// A free port on 127.0.0.1 for a facility's control endpoint or relay channel, chosen at
/// random outside the ephemeral range: a restarted operator binds it again, and a port of
/// that range was given, while the operator was down, to another test's socket bound to port
/// 0 (seen in CI: `operator_restarted_in_every_phase` found its control port taken).
fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let span = u64::from(CHOSEN_PORTS.end - CHOSEN_PORTS.start);
    for attempt in 0..1000u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        let port = CHOSEN_PORTS.start + u16::try_from(h.finish() % span)?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 in {CHOSEN_PORTS:?} after 1000 tries")
}

/// Starts facility `name`'s operator in this process, with its control endpoint on
/// `127.0.0.1:control_port` and `extra` flags after the suite's own.
pub(super) fn start_operator(
    kubeconfig: &Path,
    name: &str,
    control_port: u16,
    extra: &[String],
) -> anyhow::Result<OperatorTask> {
    let options = OperatorOptions::default()
        .control_endpoint(SocketAddr::from(([127, 0, 0, 1], control_port)))
        .drain_seconds(2)
        .transfer_interval_seconds(2)
        .args([
            "--nginx-stream-module",
            "/usr/lib/nginx/modules/ngx_stream_module.so",
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
        ])
        .args(extra.iter().map(String::as_str));
    let args = operator_args(kubeconfig, &format!("operator-{name}"), &options)
        .with_context(|| format!("{name}: the operator's flags"))?;
    Ok(spawn_operator(args))
}
