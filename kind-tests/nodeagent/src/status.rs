//! Pod status from the agent's view of its processes (pure), computed the
//! way the kubelet reports it.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Waiting reason before the first start.
pub const REASON_CREATING: &str = "ContainerCreating";
/// Waiting reason while a crashed container waits for its backoff.
pub const REASON_CRASH_LOOP: &str = "CrashLoopBackOff";
/// Waiting reason when the image maps to no program.
pub const REASON_IMAGE: &str = "ErrImagePull";
/// Waiting reason when an image of the podman runtime is not on this machine (the
/// kubelet's reason for a missing image under pull policy `Never`).
pub const REASON_NEVER_PULL: &str = "ErrImageNeverPull";
/// Waiting reason when the process cannot be started.
pub const REASON_START_ERROR: &str = "RunContainerError";

/// What one container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Not running; `reason` says why.
    Waiting {
        /// CamelCase reason.
        reason: String,
        /// Human message.
        message: Option<String>,
    },
    /// Running since `started`.
    Running {
        /// Start time.
        started: SystemTime,
    },
    /// Exited.
    Terminated {
        /// Exit code (128 + signal for a signal).
        exit_code: i32,
        /// Signal number, if killed by one.
        signal: Option<i32>,
        /// `Completed` or `Error`.
        reason: String,
        /// Start time.
        started: SystemTime,
        /// End time.
        finished: SystemTime,
    },
}

impl RunState {
    /// A terminated state for an exit status.
    pub fn exited(exit_code: Option<i32>, signal: Option<i32>, started: SystemTime, finished: SystemTime) -> Self {
        let exit_code = exit_code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        RunState::Terminated { exit_code, signal, reason: reason.into(), started, finished }
    }
    /// A waiting state.
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        RunState::Waiting { reason: reason.into(), message }
    }
}

/// The agent's record of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Container name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Current state.
    pub state: RunState,
    /// Previous termination.
    pub last: Option<RunState>,
    /// Restarts so far.
    pub restarts: i32,
    /// Readiness (probe, or running without a probe).
    pub ready: bool,
}

/// The agent's record of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    /// Node address (hostNetwork pods use it as their IP).
    pub host_ip: String,
    /// When the agent took the pod.
    pub start_time: SystemTime,
    /// `Always`, `OnFailure` or `Never`.
    pub restart_policy: String,
    /// Containers.
    pub containers: Vec<ContainerRecord>,
}

fn time(t: SystemTime) -> Time {
    Time(Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn container_state(s: &RunState) -> ContainerState {
    match s {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
            ..ContainerState::default()
        },
        RunState::Running { started } => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(time(*started)) }),
            ..ContainerState::default()
        },
        RunState::Terminated { exit_code, signal, reason, started, finished } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                signal: *signal,
                reason: Some(reason.clone()),
                started_at: Some(time(*started)),
                finished_at: Some(time(*finished)),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        },
    }
}

/// Phase: `Pending` until a container has started, `Running` while any runs
/// or will be restarted, `Succeeded`/`Failed` once all are terminated for good.
pub fn phase(p: &PodRecord) -> &'static str {
    let started =
        |c: &ContainerRecord| c.restarts > 0 || !matches!(c.state, RunState::Waiting { .. }) || c.last.is_some();
    if !p.containers.iter().any(started) {
        return "Pending";
    }
    let terminated: Vec<i32> = p
        .containers
        .iter()
        .filter_map(|c| match &c.state {
            RunState::Terminated { exit_code, .. } => Some(*exit_code),
            _ => None,
        })
        .collect();
    let done = terminated.len() == p.containers.len();
    match (p.restart_policy.as_str(), done) {
        ("Never", true) if terminated.iter().all(|c| *c == 0) => "Succeeded",
        ("Never", true) => "Failed",
        ("OnFailure", true) if terminated.iter().all(|c| *c == 0) => "Succeeded",
        _ => "Running",
    }
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, at: SystemTime) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: if ok { None } else { reason.map(Into::into) },
        last_transition_time: Some(time(at)),
        ..PodCondition::default()
    }
}

/// The full status to write. `transitions` gives, per condition type, when
/// it last changed (so unchanged conditions keep their time).
pub fn pod_status(p: &PodRecord, transitions: &dyn Fn(&str, bool) -> SystemTime) -> PodStatus {
    let ready = p.containers.iter().all(|c| c.ready && matches!(c.state, RunState::Running { .. }));
    let not_ready = Some("ContainersNotReady");
    let cond = |t: &str, ok: bool, r: Option<&str>| condition(t, ok, r, transitions(t, ok));
    let statuses = p
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: format!("nodeagent://{}", c.image),
            container_id: Some(format!("nodeagent://{}", c.name)),
            state: Some(container_state(&c.state)),
            last_state: Some(c.last.as_ref().map(container_state).unwrap_or_default()),
            restart_count: c.restarts,
            ready: c.ready && matches!(c.state, RunState::Running { .. }),
            started: Some(matches!(c.state, RunState::Running { .. })),
            ..ContainerStatus::default()
        })
        .collect();
    PodStatus {
        phase: Some(phase(p).into()),
        host_ip: Some(p.host_ip.clone()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP { ip: p.host_ip.clone() }]),
        pod_ip: Some(p.host_ip.clone()),
        pod_ips: Some(vec![PodIP { ip: p.host_ip.clone() }]),
        start_time: Some(time(p.start_time)),
        conditions: Some(vec![
            cond("PodReadyToStartContainers", true, None),
            cond("Initialized", true, None),
            cond("Ready", ready, not_ready),
            cond("ContainersReady", ready, not_ready),
            cond("PodScheduled", true, None),
        ]),
        container_statuses: Some(statuses),
        // The API server derives `qosClass` when the pod is created and refuses any other value
        // afterwards; a kubelet computes the same class, so the agent leaves the field alone.
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests;
