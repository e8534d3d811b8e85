//! One container's life: start, probe, restart with backoff, stop.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::{Mutex, Notify, watch};

use crate::events::{self, reason};
use crate::probe::{self, ProbeTarget, Tracker};
use crate::process::{self, Launch, Stopped};
use crate::status::{PodRecord, REASON_CRASH_LOOP, REASON_IMAGE, REASON_START_ERROR, RunState};
use crate::worker::PodCtx;

/// State shared by a pod's tasks: its record and a signal that it changed.
#[derive(Debug)]
pub struct Shared {
    /// The record status is computed from.
    pub record: Mutex<PodRecord>,
    /// Notified after each change of `record`.
    pub changed: Notify,
}

impl Shared {
    async fn update(&self, idx: usize, f: impl FnOnce(&mut crate::status::ContainerRecord)) {
        if let Some(c) = self.record.lock().await.containers.get_mut(idx) {
            f(c);
        }
        self.changed.notify_one();
    }
}

/// Sleeps `d` unless a stop arrives first; returns whether to stop.
async fn pause(d: Duration, stop: &mut watch::Receiver<Option<Duration>>) -> bool {
    if stop.borrow().is_some() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => stop.borrow().is_some(),
        _ = stop.changed() => true,
    }
}

/// Runs container `idx` of `pod` until a stop arrives (`Some(grace)`) or,
/// with restartPolicy Never/OnFailure, until it is done.
pub async fn run(pc: Arc<PodCtx>, pod: Pod, idx: usize, shared: Arc<Shared>, mut stop: watch::Receiver<Option<Duration>>) {
    let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.get(idx)).cloned() else { return };
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
    let mut failures = 0u32;
    loop {
        let launch = match pc.launch(&pod, &c).await {
            Ok(l) => l,
            Err((reason, msg)) => {
                shared.update(idx, |r| r.state = RunState::waiting(reason, Some(msg.clone()))).await;
                events::record(&pc.ctx.client, &pod, &pc.node, true, reason::FAILED, msg).await;
                if pause(pc.ctx.backoff.delay(failures), &mut stop).await {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        let started = SystemTime::now();
        let t0 = Instant::now();
        let mut child = match process::spawn(&launch) {
            Ok(ch) => ch,
            Err(e) => {
                let msg = format!("starting {}: {e}", launch.program.display());
                shared.update(idx, |r| r.state = RunState::waiting(REASON_START_ERROR, Some(msg.clone()))).await;
                events::record(&pc.ctx.client, &pod, &pc.node, true, reason::FAILED, msg).await;
                if pause(pc.ctx.backoff.delay(failures), &mut stop).await {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        let has_readiness = c.readiness_probe.is_some();
        shared
            .update(idx, |r| {
                r.state = RunState::Running { started };
                r.ready = !has_readiness;
            })
            .await;
        let msg = format!("Started container {} ({})", c.name, launch.program.display());
        events::record(&pc.ctx.client, &pod, &pc.node, false, reason::STARTED, msg).await;
        let liveness_failed = Arc::new(Notify::new());
        let probes = tokio::spawn(probe_loop(pc.clone(), pod.clone(), c.clone(), idx, shared.clone(), liveness_failed.clone()));
        let exit = tokio::select! {
            st = child.wait() => st.ok(),
            _ = stop.changed() => {
                let grace = stop.borrow().unwrap_or_default();
                let msg = format!("Stopping container {}", c.name);
                events::record(&pc.ctx.client, &pod, &pc.node, false, reason::KILLING, msg).await;
                let (how, st) = process::terminate(&mut child, grace).await;
                probes.abort();
                tracing::info!(pod = %pc.key, container = %c.name, ?how, "container stopped");
                let st = st.map(|s| exit_parts(&s)).unwrap_or((Some(137), Some(9)));
                let killed = if how == Stopped::Killed { (None, Some(9)) } else { st };
                shared.update(idx, |r| { r.ready = false; r.state = RunState::exited(killed.0, killed.1, started, SystemTime::now()); }).await;
                return;
            }
            _ = liveness_failed.notified() => {
                let msg = format!("Container {} failed liveness probe, will be restarted", c.name);
                events::record(&pc.ctx.client, &pod, &pc.node, false, reason::KILLING, msg).await;
                process::terminate(&mut child, grace_of(&pod)).await.1
            }
        };
        probes.abort();
        let (code, sig) = exit.map(|s| exit_parts(&s)).unwrap_or((None, Some(9)));
        let term = RunState::exited(code, sig, started, SystemTime::now());
        let success = matches!(term, RunState::Terminated { exit_code: 0, .. });
        if !success {
            let msg = format!("Container {} exited: {:?}/{:?}", c.name, code, sig);
            events::record(&pc.ctx.client, &pod, &pc.node, true, reason::FAILED, msg).await;
        }
        let restart = policy == "Always" || (policy == "OnFailure" && !success);
        if !restart {
            shared.update(idx, |r| { r.ready = false; r.state = term; }).await;
            return;
        }
        failures = pc.ctx.backoff.next_count(failures, t0.elapsed());
        let delay = pc.ctx.backoff.delay(failures.saturating_sub(1));
        shared
            .update(idx, |r| {
                r.ready = false;
                r.last = Some(term);
                r.restarts += 1;
                let msg = format!("back-off {delay:?} restarting failed container={} pod={}", c.name, pc.key);
                r.state = RunState::waiting(REASON_CRASH_LOOP, Some(msg));
            })
            .await;
        let msg = format!("Back-off restarting failed container {}", c.name);
        events::record(&pc.ctx.client, &pod, &pc.node, true, reason::BACK_OFF, msg).await;
        if pause(delay, &mut stop).await {
            return;
        }
    }
}

fn exit_parts(s: &std::process::ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (s.code(), s.signal())
}

/// The pod's termination grace period (default 30 s).
pub fn grace_of(pod: &Pod) -> Duration {
    let s = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    Duration::from_secs(s.max(0) as u64)
}

/// Probes one running container until aborted: readiness sets `ready`,
/// a failed liveness verdict notifies `liveness_failed` once.
async fn probe_loop(pc: Arc<PodCtx>, pod: Pod, c: Container, idx: usize, shared: Arc<Shared>, liveness_failed: Arc<Notify>) {
    let target = ProbeTarget { netns: pc.netns.clone(), pod_ip: pc.address.into() };
    let exec_pc = pc.clone();
    let (exec_pod, exec_c) = (pod.clone(), c.clone());
    let exec = move |cmd: &[String]| exec_pc.exec_command(&exec_pod, &exec_c, cmd);
    let readiness = c.readiness_probe.clone().map(|p| (probe::timing(&p), p, Tracker::new(false), Instant::now()));
    let liveness = c.liveness_probe.clone().map(|p| (probe::timing(&p), p, Tracker::new(true), Instant::now()));
    let mut probes: Vec<_> = readiness.into_iter().map(|r| (true, r)).chain(liveness.into_iter().map(|l| (false, l))).collect();
    if probes.is_empty() {
        return;
    }
    for (_, (t, _, _, next)) in probes.iter_mut() {
        *next = Instant::now() + t.initial_delay;
    }
    loop {
        let Some(wake) = probes.iter().map(|(_, p)| p.3).min() else { return };
        tokio::time::sleep_until(wake.into()).await;
        for (is_readiness, (t, p, tracker, next)) in probes.iter_mut() {
            if *next > Instant::now() {
                continue;
            }
            *next = Instant::now() + t.period;
            let result = probe::run(p, &c, &target, &exec).await;
            let before = tracker.ok;
            let ok = tracker.record(result.is_ok(), t);
            if let Err(e) = &result {
                let kind = if *is_readiness { "Readiness" } else { "Liveness" };
                tracing::debug!(pod = %pc.key, container = %c.name, kind, error = %e, "probe failed");
                if before && !ok {
                    let msg = format!("{kind} probe failed: {e}");
                    events::record(&pc.ctx.client, &pod, &pc.node, true, reason::UNHEALTHY, msg).await;
                }
            }
            if *is_readiness && before != ok {
                shared.update(idx, |r| r.ready = ok).await;
            } else if !*is_readiness && !ok {
                liveness_failed.notify_one();
                return;
            }
        }
    }
}

/// Maps a launch failure to its waiting reason.
pub fn image_error(image: &str) -> (&'static str, String) {
    (REASON_IMAGE, format!("image {image:?} maps to no local program; add an image rule (--images file or .image())"))
}

/// Builds the [`Launch`] type's user field: (uid, gid, groups) from the pod's
/// and container's security contexts; `None` when nothing asks for a user.
pub fn user_of(pod: &Pod, c: &Container) -> Option<(u32, u32, Vec<u32>)> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let uid = csc.and_then(|s| s.run_as_user).or_else(|| psc.and_then(|s| s.run_as_user));
    let gid = csc.and_then(|s| s.run_as_group).or_else(|| psc.and_then(|s| s.run_as_group));
    let fs_group = psc.and_then(|s| s.fs_group);
    let supplemental = psc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default();
    let uid = uid? as u32;
    let gid = gid.map_or(0, |g| g as u32);
    let mut groups: Vec<u32> = fs_group.into_iter().chain(supplemental).map(|g| g as u32).collect();
    groups.sort_unstable();
    groups.dedup();
    Some((uid, gid, groups))
}

/// A prepared launch, or the waiting reason and message that prevent it.
pub type LaunchResult = Result<Launch, (&'static str, String)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_from_pod_and_container_security_contexts() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532, "supplementalGroups": [4, 65532]},
                     "containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 1000}}]}
        }))
        .expect("pod");
        let cs = &pod.spec.as_ref().expect("spec").containers;
        assert_eq!(user_of(&pod, &cs[0]), Some((65532, 65532, vec![4, 65532])));
        assert_eq!(user_of(&pod, &cs[1]), Some((1000, 65532, vec![4, 65532])));
        let bare: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "a"}]}})).expect("pod");
        assert_eq!(user_of(&bare, &bare.spec.as_ref().expect("spec").containers[0]), None);
        assert_eq!(grace_of(&pod), Duration::from_secs(30));
    }
}
