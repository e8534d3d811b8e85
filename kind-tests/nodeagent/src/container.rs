//! One container's life: start, probe, restart with backoff, stop.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use tokio::sync::{Mutex, Notify, watch};

use crate::events::{self, reason};
use crate::hooks;
use crate::launch::{PodCtx, grace_of};
use crate::probe::{self, ProbeTarget, Tracker};
use crate::process::Stopped;
use crate::runtime::{self, Prepared, Running};
use crate::status::{PodRecord, REASON_CRASH_LOOP, RunState};

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

/// One container's supervisor.
struct Runner {
    pc: Arc<PodCtx>,
    pod: Pod,
    c: Container,
    idx: usize,
    shared: Arc<Shared>,
    stop: watch::Receiver<Option<Duration>>,
    /// Consecutive failures (drives the backoff).
    failures: u32,
}

/// What ended a run.
enum Ended {
    /// The process exited (or was killed after a failed liveness probe or postStart hook).
    Exited(Option<std::process::ExitStatus>),
    /// A stop arrived; the process is gone.
    Stopped,
}

impl Runner {
    async fn event(&self, warning: bool, reason: &str, msg: String) {
        events::record(&self.pc.ctx.client, &self.pod, &self.pc.node, warning, reason, msg).await;
    }

    /// Records a failure to start, waits the backoff; `false` means stop.
    async fn start_failed(&mut self, reason: &str, msg: String) -> bool {
        self.shared.update(self.idx, |r| r.state = RunState::waiting(reason, Some(msg.clone()))).await;
        self.event(true, reason::FAILED, msg).await;
        let delay = self.pc.ctx.backoff.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        !pause(delay, &mut self.stop).await
    }

    /// Starts the container; `Err(keep_going)` when it could not be started.
    async fn start(&mut self) -> Result<(Running, Prepared), bool> {
        let prepared = match self.pc.launch(&self.pod, &self.c).await {
            Ok(p) => p,
            Err((reason, msg)) => return Err(self.start_failed(reason, msg).await),
        };
        match runtime::start(&prepared, &self.pc.ctx.podman).await {
            Ok(running) => Ok((running, prepared)),
            Err((reason, msg)) => Err(self.start_failed(reason, msg).await),
        }
    }

    /// Stops the container for a stop that arrived, recording how it ended.
    async fn stopped(&mut self, child: &mut Running, started: SystemTime) {
        let grace = self.stop.borrow().unwrap_or_default();
        self.event(false, reason::KILLING, format!("Stopping container {}", self.c.name)).await;
        let (how, st) = child.terminate(grace).await;
        tracing::info!(pod = %self.pc.key, container = %self.c.name, ?how, "container stopped");
        let (code, sig) = match (how, st) {
            (Stopped::Gracefully, Some(s)) => exit_parts(&s),
            _ => (None, Some(9)),
        };
        let end = RunState::exited(code, sig, started, SystemTime::now());
        self.shared
            .update(self.idx, |r| {
                r.ready = false;
                r.state = end;
            })
            .await;
    }

    /// Runs the postStart `handler` while the container stays reported as being created (see
    /// [`hooks`]); a failed hook records `FailedPostStartHook` and kills the container. `Err`
    /// says what ended the run: the hook failed or the container exited while it ran
    /// (`Exited`), or a stop arrived (`Stopped`).
    async fn post_start(
        &mut self,
        handler: &LifecycleHandler,
        child: &mut Running,
        started: SystemTime,
    ) -> Result<(), Ended> {
        let (target, exec) = reach(&self.pc, &self.pod, &self.c);
        let result = tokio::select! {
            r = hooks::run(handler, &self.c, &target, &exec) => r,
            st = child.wait() => return Err(Ended::Exited(st)),
            _ = self.stop.changed() => {
                self.stopped(child, started).await;
                return Err(Ended::Stopped);
            }
        };
        if let Err(e) = result {
            tracing::warn!(pod = %self.pc.key, container = %self.c.name, error = %e, "postStart hook failed");
            self.event(true, hooks::REASON_FAILED, hooks::MESSAGE_FAILED.to_owned()).await;
            return Err(Ended::Exited(child.terminate(grace_of(&self.pod)).await.1));
        }
        Ok(())
    }

    /// Waits for the container to exit, a stop, or a failed liveness verdict.
    async fn supervise(&mut self, child: &mut Running, started: SystemTime) -> Ended {
        let liveness_failed = Arc::new(Notify::new());
        let status_computed = Arc::new(Notify::new());
        let probes = probe_loop(
            self.pc.clone(),
            self.pod.clone(),
            self.c.clone(),
            self.idx,
            self.shared.clone(),
            Signals { liveness_failed: liveness_failed.clone(), status_computed: status_computed.clone() },
        );
        let _probes = AbortOnDrop(tokio::spawn(probes));
        // The status reporting this container running (and not ready) was just computed: as
        // the kubelet's prober manager does then (UpdatePodStatus), probe readiness at once.
        status_computed.notify_one();
        tokio::select! {
            st = child.wait() => Ended::Exited(st),
            _ = self.stop.changed() => {
                self.stopped(child, started).await;
                Ended::Stopped
            }
            _ = liveness_failed.notified() => {
                let msg = format!("Container {} failed liveness probe, will be restarted", self.c.name);
                self.event(false, reason::KILLING, msg).await;
                Ended::Exited(child.terminate(grace_of(&self.pod)).await.1)
            }
        }
    }

    /// Records an exit and waits the backoff; `false` means do not restart.
    async fn exited(&mut self, exit: Option<std::process::ExitStatus>, started: SystemTime, ran: Duration) -> bool {
        let (code, sig) = exit.map(|s| exit_parts(&s)).unwrap_or((None, Some(9)));
        let term = RunState::exited(code, sig, started, SystemTime::now());
        let success = matches!(term, RunState::Terminated { exit_code: 0, .. });
        if !success {
            self.event(
                true,
                reason::FAILED,
                format!("Container {} exited: code {code:?}, signal {sig:?}", self.c.name),
            )
            .await;
        }
        let policy = self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
        if !(policy == "Always" || (policy == "OnFailure" && !success)) {
            self.shared
                .update(self.idx, |r| {
                    r.ready = false;
                    r.state = term;
                })
                .await;
            return false;
        }
        self.failures = self.pc.ctx.backoff.next_count(self.failures, ran);
        let delay = self.pc.ctx.backoff.delay(self.failures.saturating_sub(1));
        let msg = format!("back-off {delay:?} restarting failed container={} pod={}", self.c.name, self.pc.key);
        self.shared
            .update(self.idx, |r| {
                r.ready = false;
                r.last = Some(term);
                r.restarts += 1;
                r.state = RunState::waiting(REASON_CRASH_LOOP, Some(msg));
            })
            .await;
        self.event(true, reason::BACK_OFF, format!("Back-off restarting failed container {}", self.c.name)).await;
        !pause(delay, &mut self.stop).await
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs container `idx` of `pod` until a stop arrives (`Some(grace)`) or,
/// with restartPolicy Never/OnFailure, until it is done.
pub async fn run(pc: Arc<PodCtx>, pod: Pod, idx: usize, shared: Arc<Shared>, stop: watch::Receiver<Option<Duration>>) {
    let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.get(idx)).cloned() else { return };
    let mut r = Runner { pc, pod, c, idx, shared, stop, failures: 0 };
    loop {
        let (mut child, prepared) = match r.start().await {
            Ok(started) => started,
            Err(true) => continue,
            Err(false) => return,
        };
        let (started, t0) = (SystemTime::now(), Instant::now());
        // Started is recorded when the runtime started it, before the postStart hook (kubelet).
        r.event(false, reason::STARTED, format!("Started container {} ({})", r.c.name, prepared.describe())).await;
        let hook = match hooks::post_start(&r.c).cloned() {
            Some(handler) => r.post_start(&handler, &mut child, started).await,
            None => Ok(()),
        };
        let ended = match hook {
            Err(ended) => ended,
            Ok(()) => {
                let ready_without_probe = r.c.readiness_probe.is_none();
                r.shared
                    .update(r.idx, |rec| {
                        rec.state = RunState::Running { started };
                        rec.ready = ready_without_probe;
                    })
                    .await;
                r.supervise(&mut child, started).await
            }
        };
        match ended {
            Ended::Stopped => return,
            Ended::Exited(st) => {
                if !r.exited(st, started, t0.elapsed()).await {
                    return;
                }
            }
        }
    }
}

fn exit_parts(s: &std::process::ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (s.code(), s.signal())
}

/// What the probe loop tells its container and hears from it.
struct Signals {
    /// Notified once when liveness fails.
    liveness_failed: Arc<Notify>,
    /// Notified when the container's status was computed while it runs and is not ready:
    /// readiness is probed at once (the kubelet's prober manager triggers the readiness
    /// worker's manual run from UpdatePodStatus in that case), then on its ticker.
    status_computed: Arc<Notify>,
}

/// Where a container's probes and hooks connect (from the node's namespace, to the pod's
/// address unless they name a host), and how their commands run in the container.
fn reach(
    pc: &Arc<PodCtx>,
    pod: &Pod,
    c: &Container,
) -> (ProbeTarget, impl Fn(&[String]) -> tokio::process::Command + Sync + use<>) {
    let target = ProbeTarget { netns: pc.netns.clone(), pod_ip: pc.address.into() };
    let (pc, pod, c) = (pc.clone(), pod.clone(), c.clone());
    (target, move |cmd: &[String]| pc.exec_command(&pod, &c, cmd))
}

/// Probes one running container until aborted: readiness sets `ready`,
/// a failed liveness verdict notifies `liveness_failed` once.
async fn probe_loop(pc: Arc<PodCtx>, pod: Pod, c: Container, idx: usize, shared: Arc<Shared>, signals: Signals) {
    let Signals { liveness_failed, status_computed } = signals;
    let started = Instant::now();
    let (target, exec) = reach(&pc, &pod, &c);
    let readiness = c.readiness_probe.clone().map(|p| (probe::timing(&p), p, Tracker::new(false), Instant::now()));
    let liveness = c.liveness_probe.clone().map(|p| (probe::timing(&p), p, Tracker::new(true), Instant::now()));
    let mut probes: Vec<_> =
        readiness.into_iter().map(|r| (true, r)).chain(liveness.into_iter().map(|l| (false, l))).collect();
    if probes.is_empty() {
        return;
    }
    for (is_readiness, (t, _, _, next)) in probes.iter_mut() {
        // Readiness waits for its first tick or for the status computed at start.
        *next = started + if *is_readiness { t.initial_delay.max(t.period) } else { t.initial_delay };
    }
    loop {
        let Some(wake) = probes.iter().map(|(_, p)| p.3).min() else { return };
        let triggered = tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => false,
            () = status_computed.notified() => true,
        };
        for (is_readiness, (t, p, tracker, next)) in probes.iter_mut() {
            let manual = triggered && *is_readiness && !tracker.ok && started.elapsed() >= t.initial_delay;
            if *next > Instant::now() && !manual {
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
