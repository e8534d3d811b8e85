use super::*;

fn base() -> Facts {
    Facts {
        failed: None,
        capacity: Capacity::Reserved { age: Duration::from_secs(10), summary: "5 ports on gw-a".into() },
        needs_hello: true,
        hello_received: false,
        static_targets: false,
        hello_timeout: Duration::from_secs(180),
        targets_missing: None,
        relays: Relays { wanted: 1, ready: 0, failing: vec![] },
    }
}

#[test]
fn waits_for_capacity_with_the_reason() {
    let f = Facts {
        capacity: Capacity::Waiting {
            reason: reasons::PORTS_EXHAUSTED,
            message: "needs 5 ports, 3 free on gw-a".into(),
        },
        ..base()
    };
    let d = decide(&f);
    assert_eq!(d.phase, Phase::Pending);
    assert_eq!(d.reserved.reason, reasons::PORTS_EXHAUSTED);
    assert!(d.ready.message.contains("3 free on gw-a"));
    assert!(!d.run_relays && !d.release);
}

#[test]
fn invalid_combination_is_pending_with_invalid_spec() {
    let d = decide(&Facts { capacity: Capacity::Invalid { message: "set spec.dataChannel: Plain".into() }, ..base() });
    assert_eq!((d.phase, d.ready.reason), (Phase::Pending, reasons::INVALID_SPEC));
}

#[test]
fn awaits_hello_then_times_out_and_releases() {
    let d = decide(&base());
    assert_eq!(d.phase, Phase::AwaitingHello);
    assert!(d.ready.message.contains("within spec.helloTimeout 180s of the reservation: status.helloDeadline"));
    // The message does not count down: waiting longer writes no new text.
    let later =
        Facts { capacity: Capacity::Reserved { age: Duration::from_secs(100), summary: String::new() }, ..base() };
    assert_eq!(decide(&later).ready, d.ready);
    assert!(!d.run_relays);
    let late =
        Facts { capacity: Capacity::Reserved { age: Duration::from_secs(180), summary: String::new() }, ..base() };
    let d = decide(&late);
    assert_eq!(d.phase, Phase::Failed);
    assert_eq!(d.ready.reason, reasons::HELLO_TIMEOUT);
    assert!(d.release && !d.run_relays);
}

#[test]
fn static_targets_skip_hello() {
    let d = decide(&Facts { static_targets: true, needs_hello: false, ..base() });
    assert_eq!(d.phase, Phase::Provisioning);
    assert_eq!(d.hello.reason, reasons::STATIC_TARGETS);
    assert!(d.run_relays);
}

#[test]
fn consumer_waits_for_remote_listeners_after_hello() {
    let f = Facts { hello_received: true, targets_missing: Some("waiting for spec.remoteListeners".into()), ..base() };
    let d = decide(&f);
    assert_eq!((d.phase, d.data_path.reason), (Phase::Provisioning, reasons::AWAITING_REMOTE_LISTENERS));
    assert!(!d.run_relays);
}

#[test]
fn ready_when_every_relay_is_ready() {
    let f = Facts { hello_received: true, relays: Relays { wanted: 2, ready: 2, failing: vec![] }, ..base() };
    let d = decide(&f);
    assert_eq!(d.phase, Phase::Ready);
    assert!(d.ready.status && d.data_path.status && d.run_relays);
}

#[test]
fn failing_relay_is_named() {
    let f = Facts {
        hello_received: true,
        relays: Relays { wanted: 2, ready: 1, failing: vec![("gw-b".into(), "CrashLoopBackOff".into())] },
        ..base()
    };
    let d = decide(&f);
    assert_eq!((d.phase, d.data_path.reason), (Phase::Provisioning, reasons::POD_FAILED));
    assert!(d.data_path.message.contains("gw-b"));
}

#[test]
fn failed_is_terminal_even_if_hello_arrives_late() {
    let f = Facts { failed: Some((reasons::HELLO_TIMEOUT, "late".into())), hello_received: true, ..base() };
    let d = decide(&f);
    assert_eq!(d.phase, Phase::Failed);
    assert!(d.release && !d.run_relays);
}

#[test]
fn hello_timeout_does_not_apply_once_hello_arrived() {
    let f = Facts {
        hello_received: true,
        capacity: Capacity::Reserved { age: Duration::from_secs(10_000), summary: String::new() },
        ..base()
    };
    assert_ne!(decide(&f).phase, Phase::Failed);
}
