//! One pod's life on its node: volumes, containers, status, deletion.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::{Mutex, Notify, watch};

use crate::container::{self, Shared};
use crate::launch::{Ctx, PodCtx, REASON_CONFIG, grace_of};
use crate::status::{self, ContainerRecord, PodRecord, REASON_CREATING, RunState};

/// What the agent wants from a pod worker.
#[derive(Debug, Clone)]
pub enum Desired {
    /// Keep running (the latest pod object).
    Run(Box<Pod>),
    /// The pod is being deleted with this grace period: stop, then remove it.
    Delete(Duration),
    /// The pod object is gone: stop.
    Gone,
    /// The agent stops: stop the processes, leave the pod object.
    Shutdown,
}

/// The record a pod starts with: containers being created, or (simulated) running and ready,
/// so that a simulated pod takes one status write, as a kubelet's fastest start does.
fn initial_record(pod: &Pod, address: Ipv4Addr, simulated: bool) -> PodRecord {
    let now = SystemTime::now();
    let spec = pod.spec.clone().unwrap_or_default();
    PodRecord {
        host_ip: address.to_string(),
        start_time: now,
        restart_policy: spec.restart_policy.clone().unwrap_or_else(|| "Always".into()),
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerRecord {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: if simulated {
                    RunState::Running { started: now }
                } else {
                    RunState::waiting(REASON_CREATING, None)
                },
                last: None,
                restarts: 0,
                ready: simulated,
            })
            .collect(),
    }
}

/// Writes the pod's status when it differs from the last one written. A refused write is
/// logged at warn with the server's message and retried after a growing delay (a kubelet's
/// status manager retries too), so that a status the server refused is not silently lost.
struct StatusWriter {
    api: Api<Pod>,
    name: String,
    transitions: Mutex<HashMap<String, (bool, SystemTime)>>,
    last: Mutex<Option<serde_json::Value>>,
    /// Consecutive refused writes (drives the retry delay).
    failures: std::sync::atomic::AtomicU32,
}

/// When a refused status write is tried again: 200 ms, doubling, at most 10 s.
fn status_retry_delay(failures: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(10))
}

impl StatusWriter {
    fn new(api: Api<Pod>, name: String) -> Self {
        StatusWriter { api, name, transitions: Mutex::default(), last: Mutex::default(), failures: 0.into() }
    }

    /// Writes the status of `record`; returns when to try again if the server refused it.
    async fn write(&self, record: &PodRecord) -> Option<Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut tr = self.transitions.lock().await;
        let st = status::pod_status(record, &|t, ok| match tr.get(t) {
            Some((was, at)) if *was == ok => *at,
            _ => SystemTime::now(),
        });
        for c in st.conditions.iter().flatten() {
            let ok = c.status == "True";
            if tr.get(&c.type_).map(|(was, _)| *was) != Some(ok) {
                tr.insert(c.type_.clone(), (ok, SystemTime::now()));
            }
        }
        let body = json!({"status": st});
        let mut last = self.last.lock().await;
        if last.as_ref() == Some(&body) {
            return None;
        }
        match self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&body)).await {
            Ok(_) => {
                *last = Some(body);
                self.failures.store(0, Relaxed);
                None
            }
            // The pod is gone: nothing left to report.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => {
                let failures = self.failures.fetch_add(1, Relaxed);
                let retry = status_retry_delay(failures);
                tracing::warn!(pod = %self.name, error = %e, ?retry, "the API server refused the pod status");
                Some(retry)
            }
        }
    }
}

fn pod_ctx(ctx: &Arc<Ctx>, node: String, pod: &Pod) -> Arc<PodCtx> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let uid = pod.uid().unwrap_or_else(|| pod.name_any());
    Arc::new(PodCtx {
        key: format!("{ns}/{}", pod.name_any()),
        namespace: ns,
        dir: ctx.pods_dir.join(&uid),
        uid,
        netns: ctx.network.netns_path(&node),
        address: ctx.network.address(&node).unwrap_or(Ipv4Addr::LOCALHOST),
        node,
        ctx: ctx.clone(),
    })
}

/// The pod's containers: started once its volumes are ready.
struct Containers {
    pc: Arc<PodCtx>,
    pod: Pod,
    shared: Arc<Shared>,
    stop_rx: watch::Receiver<Option<Duration>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Containers {
    /// Refreshes volumes; starts the containers after the first success.
    async fn sync(&mut self, latest: &Pod) {
        match self.pc.sync_volumes(latest).await {
            Ok(_) if self.tasks.is_empty() => {
                let n = self.pod.spec.as_ref().map_or(0, |s| s.containers.len());
                for idx in 0..n {
                    let run = container::run(
                        self.pc.clone(),
                        self.pod.clone(),
                        idx,
                        self.shared.clone(),
                        self.stop_rx.clone(),
                    );
                    self.tasks.push(tokio::spawn(run));
                }
            }
            Ok(_) => {}
            Err(msg) if self.tasks.is_empty() => {
                for c in self.shared.record.lock().await.containers.iter_mut() {
                    c.state = RunState::waiting(REASON_CONFIG, Some(msg.clone()));
                }
                self.shared.changed.notify_one();
            }
            Err(msg) => tracing::warn!(pod = %self.pc.key, error = %msg, "refreshing volumes failed"),
        }
    }
}

/// Runs `pod` on `node` until the agent says otherwise through `rx`.
pub async fn run(ctx: Arc<Ctx>, node: String, pod: Pod, mut rx: watch::Receiver<Desired>) {
    let pc = pod_ctx(&ctx, node, &pod);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pc.namespace);
    let _ = std::fs::create_dir_all(pc.dir.join("logs"));
    let simulated = ctx.simulates(&pod);
    let record = initial_record(&pod, pc.address, simulated);
    let shared = Arc::new(Shared { record: Mutex::new(record), changed: Notify::new() });
    let writer = StatusWriter::new(api.clone(), pod.name_any());
    // A refused status write is retried at this instant (far in the future when none is due).
    let idle = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    let due = |retry: Option<Duration>| retry.map_or_else(idle, |d| tokio::time::Instant::now() + d);
    let mut retry_at = due(writer.write(&*shared.record.lock().await).await);
    let (stop_tx, stop_rx) = watch::channel(None::<Duration>);
    let mut containers =
        Containers { pc: pc.clone(), pod: pod.clone(), shared: shared.clone(), stop_rx, tasks: vec![] };
    let mut latest = pod;
    let mut tick = tokio::time::interval(ctx.sync_period);
    let outcome = loop {
        tokio::select! {
            r = rx.changed() => {
                let d = if r.is_err() { Desired::Shutdown } else { rx.borrow_and_update().clone() };
                match d {
                    Desired::Run(p) => latest = *p,
                    other => break other,
                }
            }
            _ = tick.tick(), if !simulated => containers.sync(&latest).await,
            _ = shared.changed.notified() => retry_at = due(writer.write(&*shared.record.lock().await).await),
            _ = tokio::time::sleep_until(retry_at) => retry_at = due(writer.write(&*shared.record.lock().await).await),
        }
    };
    let grace = match &outcome {
        Desired::Delete(g) => *g,
        _ => grace_of(&latest),
    };
    tracing::info!(pod = %pc.key, ?outcome, ?grace, "stopping pod");
    let _ = stop_tx.send(Some(grace));
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(10);
    for t in containers.tasks {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    if let Desired::Delete(_) = outcome {
        writer.write(&*shared.record.lock().await).await;
        release(&api, &latest, &pc.key).await;
    }
    let _ = std::fs::remove_dir_all(&pc.dir);
}

/// Deletes the pod object for good (`gracePeriodSeconds=0`, uid precondition).
async fn release(api: &Api<Pod>, pod: &Pod, key: &str) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => tracing::info!(pod = %key, "pod removed"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(pod = %key, error = %e, "removing pod failed"),
    }
}
