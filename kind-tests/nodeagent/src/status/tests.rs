use std::time::{Duration, SystemTime};

use super::*;

fn record(state: RunState, restarts: i32, ready: bool, policy: &str) -> PodRecord {
    PodRecord {
        host_ip: "198.51.100.1".into(),
        start_time: SystemTime::UNIX_EPOCH,
        restart_policy: policy.into(),
        containers: vec![ContainerRecord {
            name: "relay".into(),
            image: "s2ds".into(),
            state,
            last: None,
            restarts,
            ready,
        }],
    }
}

fn status(p: &PodRecord) -> PodStatus {
    pod_status(p, &|_, _| SystemTime::UNIX_EPOCH)
}

fn cond(s: &PodStatus, t: &str) -> String {
    s.conditions.iter().flatten().find(|c| c.type_ == t).map(|c| c.status.clone()).unwrap_or_default()
}

#[test]
fn creating_is_pending_and_not_ready() {
    let s = status(&record(RunState::waiting(REASON_CREATING, None), 0, false, "Always"));
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(cond(&s, "Ready"), "False");
    assert_eq!(s.pod_ip.as_deref(), Some("198.51.100.1"));
}

#[test]
fn running_ready_follows_probe() {
    let run = RunState::Running { started: SystemTime::now() };
    let s = status(&record(run.clone(), 0, true, "Always"));
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Ready"), "True");
    let cs = &s.container_statuses.as_ref().expect("statuses")[0];
    assert!(cs.ready && cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    assert_eq!(cond(&status(&record(run, 0, false, "Always")), "Ready"), "False");
}

#[test]
fn crash_loop_is_running_phase_with_restarts_and_last_exit() {
    let t0 = SystemTime::UNIX_EPOCH;
    let mut p = record(RunState::waiting(REASON_CRASH_LOOP, Some("back-off".into())), 3, false, "Always");
    p.containers[0].last = Some(RunState::exited(Some(3), None, t0, t0 + Duration::from_secs(1)));
    let s = status(&p);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let cs = &s.container_statuses.as_ref().expect("statuses")[0];
    assert_eq!(cs.restart_count, 3);
    let w = cs.state.as_ref().and_then(|s| s.waiting.as_ref()).expect("waiting");
    assert_eq!(w.reason.as_deref(), Some(REASON_CRASH_LOOP));
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).expect("terminated");
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
}

#[test]
fn terminal_phases() {
    let t0 = SystemTime::UNIX_EPOCH;
    let ok = RunState::exited(Some(0), None, t0, t0);
    let bad = RunState::exited(None, Some(9), t0, t0);
    assert_eq!(phase(&record(ok.clone(), 0, false, "Never")), "Succeeded");
    assert_eq!(phase(&record(bad.clone(), 0, false, "Never")), "Failed");
    assert_eq!(phase(&record(ok, 0, false, "OnFailure")), "Succeeded");
    assert_eq!(phase(&record(bad.clone(), 0, false, "Always")), "Running");
    match bad {
        RunState::Terminated { exit_code, signal, .. } => assert_eq!((exit_code, signal), (137, Some(9))),
        other => panic!("{other:?}"),
    }
}
