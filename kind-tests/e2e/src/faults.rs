//! Steps for the fault scenarios of the suite (`tests/faults.rs`): a stream driven step by
//! step with the kubectl-scistream plugin (so faults can be injected between the steps),
//! verified transfer rounds, checks of the gateways' holdings, and the faults themselves:
//! a relay pod's processes killed, a gateway node lost.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use scistream_api::{NodeAllocation, Phase, StreamRequest, conditions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::stream::{Created, relay_pods};
use crate::{
    stream::{self, StreamOptions},
    workload::{self, Pattern},
    world::{CONSUMER_HOST, GATEWAY_NS, PRODUCER_HOST, USER_NS, World},
};

/// The arguments of `kubectl scistream create` between the two facilities, plus `extra`.
pub fn create_args(opts: &StreamOptions, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
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
        &opts.connections.to_string(),
        "--rate",
        &opts.rate,
        "--data-channel",
        &opts.data_channel,
        "-o",
        "json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Parses `create -o json`.
pub fn parse_created(out: &str) -> anyhow::Result<Created> {
    let v: Value = serde_json::from_str(out).context("create -o json")?;
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned).with_context(|| format!("no {p}"));
    Ok(Created {
        stream_id: s("/streamId")?,
        producer_key: s("/producer/helloKey")?,
        consumer_key: s("/consumer/helloKey")?,
    })
}

/// `kubectl scistream create` (waits until both sides hold their reservations).
pub async fn create(world: &World, opts: &StreamOptions, extra: &[&str]) -> anyhow::Result<Created> {
    let args = create_args(opts, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    parse_created(&stream::plugin(world, opts, &args).await?)
}

/// The producer application's endpoints: one fixed port per connection on its host (fixed so
/// that every round of a scenario serves where the producer's Hello said).
pub fn prod_listeners(world: &World, opts: &StreamOptions) -> anyhow::Result<Vec<SocketAddr>> {
    let app = world.apps().address(PRODUCER_HOST)?;
    Ok((0..opts.connections).map(|i| SocketAddr::new(app, 7000 + i as u16)).collect())
}

/// Both Hellos (producer with its endpoints, then consumer); returns the consumer's listeners.
pub async fn hellos(world: &World, opts: &StreamOptions, c: &Created) -> anyhow::Result<Vec<SocketAddr>> {
    let prod: Vec<String> = prod_listeners(world, opts)?.iter().map(ToString::to_string).collect();
    let told = stream::hellos(world, opts, c, &prod).await?;
    told.iter().map(|l| l.parse().with_context(|| format!("listener {l}"))).collect()
}

/// The StreamRequest `name` in facility `i`.
pub async fn request(world: &World, i: usize, name: &str) -> anyhow::Result<StreamRequest> {
    Ok(Api::<StreamRequest>::namespaced(world.facilities[i].client.clone(), USER_NS).get(name).await?)
}

/// Phase of a request.
pub fn phase(sr: &StreamRequest) -> Option<Phase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

/// The reason of condition `type_`, or "".
pub fn reason(sr: &StreamRequest, type_: &str) -> String {
    sr.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, type_))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn describe(sr: &StreamRequest) -> String {
    let st = sr.status.clone().unwrap_or_default();
    let conds: Vec<String> =
        st.conditions.iter().map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message)).collect();
    format!("{:?} {:?} [{}]", sr.spec.role, st.phase, conds.join("; "))
}

/// Polls facility `i`'s request `name` until `cond` holds.
pub async fn wait_request(
    world: &World,
    i: usize,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&StreamRequest) -> bool,
) -> anyhow::Result<StreamRequest> {
    let deadline = Instant::now() + timeout;
    let api = Api::<StreamRequest>::namespaced(world.facilities[i].client.clone(), USER_NS);
    loop {
        let sr = api.get_opt(name).await?;
        if let Some(sr) = &sr
            && cond(sr)
        {
            return Ok(sr.clone());
        }
        if Instant::now() > deadline {
            let last = sr.as_ref().map_or_else(|| "not found".to_owned(), describe);
            bail!("{}: {name} not {what} after {}s: {last}", world.facilities[i].name, timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until facility `i`'s request `name` no longer exists.
pub async fn wait_gone(world: &World, i: usize, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let api = Api::<StreamRequest>::namespaced(world.facilities[i].client.clone(), USER_NS);
    let deadline = Instant::now() + timeout;
    while api.get_opt(name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("{}: {name} still exists after {}s", world.facilities[i].name, timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until both sides are in `phase`.
pub async fn wait_both(world: &World, name: &str, want: Phase, timeout: Duration) -> anyhow::Result<()> {
    for i in 0..world.facilities.len() {
        wait_request(world, i, name, timeout, &format!("{want:?}"), |sr| phase(sr) == Some(want)).await?;
    }
    Ok(())
}

/// Each side's nodes and ports.
pub async fn allocations(world: &World, name: &str) -> anyhow::Result<Vec<Vec<NodeAllocation>>> {
    let mut out = Vec::new();
    for i in 0..world.facilities.len() {
        out.push(request(world, i, name).await?.status.map(|s| s.allocations).unwrap_or_default());
    }
    Ok(out)
}

/// The relay pods serving side `i` of stream `stream_id`: its own, or when it has none (its
/// Gateway's relays are shared), the shared relays of the nodes it holds ports on.
pub async fn serving_relays(world: &World, i: usize, stream_id: &str) -> anyhow::Result<Vec<Pod>> {
    let own = relay_pods(world, i, stream_id).await?;
    if !own.is_empty() {
        return Ok(own);
    }
    let f = &world.facilities[i];
    let requests = Api::<StreamRequest>::namespaced(f.client.clone(), crate::world::USER_NS);
    let listed = requests.list(&ListParams::default()).await?.items;
    let nodes: Vec<String> = listed
        .iter()
        .filter(|r| r.spec.stream_id == stream_id)
        .flat_map(|r| r.status.iter().flat_map(|s| &s.allocations))
        .map(|a| a.node.clone())
        .collect();
    let lp = ListParams::default().labels("app.kubernetes.io/component=s2ds-node");
    let shared = Api::<Pod>::namespaced(f.client.clone(), GATEWAY_NS).list(&lp).await?.items;
    Ok(shared
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| nodes.contains(n)))
        .collect())
}

/// Checks every gateway: no port of a node recorded by two requests (their statuses are the
/// record of who holds what; the Gateway's totals follow them while an operator runs, and
/// [`crate::stream::assert_all_clean`] checks those). Returns the number of holdings per
/// facility.
pub async fn check_holdings(world: &World) -> anyhow::Result<Vec<usize>> {
    let mut counts = Vec::new();
    for f in &world.facilities {
        let reservations = crate::stream::holdings(&f.client).await?;
        if let Err(e) = scistream_core::allocator::check(&reservations, None) {
            bail!("{}: {e}: {reservations:?}", f.name);
        }
        counts.push(reservations.len());
    }
    Ok(counts)
}

/// One round of the applications: the producer serves a distinct pattern on each of
/// `targets.len()` connections, the consumer reads each to the end through the relays, and
/// both ends' SHA-256 must agree. Returns the bytes verified.
pub async fn round(
    world: &World,
    opts: &StreamOptions,
    targets: &[SocketAddr],
    bytes_per_connection: u64,
) -> anyhow::Result<u64> {
    let mut listeners = Vec::new();
    for addr in prod_listeners(world, opts)? {
        listeners.push(world.listen(PRODUCER_HOST, addr.port()).await.with_context(|| format!("listen on {addr}"))?);
    }
    let n = targets.len();
    // Aborted when this round ends early (an error, or a caller's timeout), freeing the ports.
    let mut producer =
        AbortOnDrop(tokio::spawn(workload::produce(listeners, n, bytes_per_connection, 1, Duration::from_secs(60))));
    let (apps, all) = (world.apps(), targets.to_vec());
    let received = workload::consume(n, move |i| {
        let (apps, addr) = (apps.clone(), all[i]);
        async move { apps.connect(CONSUMER_HOST, addr).await }
    })
    .await
    .context("consumer application")?;
    if let Some(short) = received.iter().find(|t| t.bytes != bytes_per_connection) {
        bail!("a consumer connection ended after {} of {bytes_per_connection} bytes", short.bytes);
    }
    let sent = (&mut producer.0).await?.context("producer application")?;
    if sent != received {
        bail!("data differs between the ends: sent {sent:?}, received {received:?}");
    }
    Ok(received.iter().map(|t| t.bytes).sum())
}

/// A task aborted when dropped.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Rounds until one verifies (the data path may still be settling after a fault, e.g. a
/// relay reloading its targets), at most `attempts` of at most `timeout` each. Returns the
/// bytes and how many rounds it took.
pub async fn round_until_verified(
    world: &World,
    opts: &StreamOptions,
    targets: &[SocketAddr],
    bytes_per_connection: u64,
    attempts: usize,
    timeout: Duration,
) -> anyhow::Result<(u64, usize)> {
    let mut last = None;
    for attempt in 1..=attempts {
        match tokio::time::timeout(timeout, round(world, opts, targets, bytes_per_connection)).await {
            Ok(Ok(bytes)) => return Ok((bytes, attempt)),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(anyhow::anyhow!("round {attempt} did not finish within {}s", timeout.as_secs())),
        }
        tracing::warn!(attempt, error = ?last, "round not verified");
        tokio::time::sleep(Duration::from_millis(500)).await; // pacing between attempts, not synchronisation
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no round ran"))).context(format!("{attempts} rounds, none verified"))
}

/// Starts the plugin in the background (it borrows nothing from the world, which may be
/// changed meanwhile, e.g. an operator restarted).
pub fn spawn_plugin(
    world: &World,
    opts: &StreamOptions,
    args: &[String],
) -> tokio::task::JoinHandle<anyhow::Result<String>> {
    let mut cmd = tokio::process::Command::new(&opts.plugin);
    cmd.arg("--kubeconfig").arg(&world.kubeconfig).args(args).kill_on_drop(true);
    let line = args.join(" ");
    tokio::spawn(async move {
        let out = cmd.output().await.context("running kubectl-scistream")?;
        if !out.status.success() {
            bail!("kubectl scistream {line}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

/// `kubectl scistream release` from the producer's context, then checks nothing is left.
pub async fn release(world: &World, opts: &StreamOptions, stream_id: &str) -> anyhow::Result<()> {
    stream::plugin(world, opts, &["release", &opts.name, "--context", "aps", "-n", USER_NS, "--timeout", "90s"])
        .await?;
    stream::assert_nothing_left(world, stream_id).await
}

/// Restarts of a pod's containers so far.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()).map(|c| c.restart_count).sum()
}

/// Whether a pod is Ready.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The container logs of a pod run by facility `i`'s node agent (for diagnostics).
pub fn pod_logs(world: &World, i: usize, pod: &Pod) -> String {
    let Ok(embedded) = world.facilities[i].embedded() else {
        return "(the pod runs in a real cluster: kubectl logs)".to_owned();
    };
    let dir = embedded.agent.logs_dir(&pod.uid().unwrap_or_default());
    let mut out = String::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.push_str(&format!("--- {}\n{text}", entry.path().display()));
    }
    out
}

/// Processes whose standard output goes into `dir` (the node agent appends each container's
/// output to a log file in its pod's directory).
fn processes_logging_into(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|p| p.starts_with(dir)))
        .collect()
}

/// Kills (SIGKILL) every process of pod `pod` on facility `i`'s node agent, as a crash
/// would. Returns how many were killed.
pub fn kill_pod_processes(world: &World, i: usize, pod: &Pod) -> anyhow::Result<usize> {
    let uid = pod.uid().context("pod without uid")?;
    let dir = world.facilities[i].embedded()?.agent.pods_dir().join(uid);
    let pids = processes_logging_into(&dir);
    for pid in &pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL)
            .with_context(|| format!("kill {pid}"))?;
    }
    Ok(pids.len())
}

/// Loses gateway node `node` of facility `i` as the API sees a node that stopped
/// answering: the node lifecycle controller's `unreachable` taints and a Ready condition
/// of `Unknown`, and every relay process on it killed. (The node agent still serves the node,
/// so pods the operator deletes there are finalised as a returning kubelet would.)
pub async fn lose_node(world: &World, i: usize, node: &str) -> anyhow::Result<usize> {
    let nodes: Api<Node> = Api::all(world.facilities[i].client.clone());
    let taints = json!({"spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}});
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(&taints)).await?;
    let unknown = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                                                  "message": "Kubelet stopped posting node status."}]}});
    nodes.patch_status(node, &PatchParams::default(), &Patch::Merge(&unknown)).await?;
    let pods =
        Api::<Pod>::namespaced(world.facilities[i].client.clone(), GATEWAY_NS).list(&ListParams::default()).await?;
    let mut killed = 0;
    for pod in pods.items.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)) {
        killed += kill_pod_processes(world, i, pod)?;
    }
    Ok(killed)
}

/// Brings a lost node back (its taints removed).
pub async fn restore_node(world: &World, i: usize, node: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(world.facilities[i].client.clone());
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"taints": null}}))).await?;
    Ok(())
}

/// How one application connection ended.
#[derive(Debug)]
pub struct Cut {
    /// Bytes the consumer read.
    pub bytes: u64,
    /// Whether the connection ended (EOF or error) rather than hanging until the deadline.
    pub ended: bool,
    /// The error, if it ended with one.
    pub error: Option<String>,
    /// Whether the producer's connection ended too (its writes failed or finished) rather
    /// than hanging.
    pub producer_ended: bool,
    /// The error the producer's writes failed with, if they did.
    pub producer_error: Option<String>,
}

impl Cut {
    /// Whether both applications saw the cut as a reset (`ECONNRESET`, or `EPIPE` for a
    /// writer whose peer had reset), never as a clean end of the data.
    pub fn reset_at_both(&self) -> bool {
        let reset = |e: &Option<String>| {
            e.as_deref().is_some_and(|e| e.contains("reset") || e.contains("Broken pipe") || e.contains("broken pipe"))
        };
        self.ended && reset(&self.error) && self.producer_ended && reset(&self.producer_error)
    }
}

/// A transfer interrupted by `fault`: one connection through the relays that the producer
/// feeds without end (at most `limit` bytes); once the consumer has read `before` bytes,
/// `fault` runs; then the consumer reads on until the connection ends or `timeout` passes.
pub async fn interrupted<F, Fut>(
    world: &World,
    opts: &StreamOptions,
    target: SocketAddr,
    before: u64,
    limit: u64,
    timeout: Duration,
    fault: F,
) -> anyhow::Result<Cut>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut listeners = Vec::new();
    for addr in prod_listeners(world, opts)? {
        listeners.push(world.listen(PRODUCER_HOST, addr.port()).await.with_context(|| format!("listen on {addr}"))?);
    }
    let mut producer = AbortOnDrop(tokio::spawn(async move {
        let accepts = listeners.iter().map(|l| Box::pin(l.accept())).collect::<Vec<_>>();
        let (accepted, _, _) = futures::future::select_all(accepts).await;
        let (mut conn, _) = accepted?;
        let mut pattern = Pattern::new(1);
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        while sent < limit {
            pattern.fill(&mut buf);
            conn.write_all(&buf).await?;
            sent += buf.len() as u64;
        }
        let _ = conn.shutdown().await;
        Ok::<u64, std::io::Error>(sent)
    }));
    let result = async {
        let mut conn = world.connect(CONSUMER_HOST, target).await.context("connect to the consumer relay")?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut bytes = 0u64;
        while bytes < before {
            let n = tokio::time::timeout(timeout, conn.read(&mut buf)).await.context("no data before the fault")??;
            if n == 0 {
                bail!("the connection ended after {bytes} bytes, before the fault");
            }
            bytes += n as u64;
        }
        fault().await.context("injecting the fault")?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, conn.read(&mut buf)).await {
                Err(_) => {
                    return Ok(Cut { bytes, ended: false, error: None, producer_ended: false, producer_error: None });
                }
                Ok(Ok(0)) => {
                    return Ok(Cut { bytes, ended: true, error: None, producer_ended: false, producer_error: None });
                }
                Ok(Ok(n)) => bytes += n as u64,
                Ok(Err(e)) => {
                    let error = Some(e.to_string());
                    return Ok(Cut { bytes, ended: true, error, producer_ended: false, producer_error: None });
                }
            }
        }
    }
    .await;
    let mut result = result;
    let producer = tokio::time::timeout(timeout, &mut producer.0).await;
    if let Ok(cut) = result.as_mut() {
        cut.producer_ended = producer.is_ok();
        cut.producer_error = match producer {
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(e)) => Some(format!("the producer task failed: {e}")),
            _ => None,
        };
    }
    result
}
