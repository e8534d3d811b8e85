use super::*;
use crate::stream::holding::tests::{gateway as gateway_parts, want};
use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use scistream_api::{GatewayStatus, conditions::types};

const RESYNC: Duration = Duration::from_secs(300);

fn request(spec: serde_json::Value) -> StreamRequest {
    let mut base = serde_json::json!({
        "streamId": "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", "role": "Producer", "gateway": "dtn",
        "targets": ["192.0.2.10:7000"], "dataChannel": "Plain", "rate": "1Gbps", "numConnections": 1
    });
    if let (Some(b), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "metadata": {"name": "me", "namespace": "ns", "uid": "me", "generation": 1,
                     "creationTimestamp": "2026-12-06T08:00:00Z"},
        "spec": base
    }))
    .expect("a valid StreamRequest")
}

/// The demo-like Gateway: 2 nodes of 2 ports, 10 Gbps, HAProxy relays.
fn gateway(held: &[scistream_core::allocator::Demand]) -> Gateway {
    let (spec, mut status) = gateway_parts(&["n1", "n2"], 2, 10);
    for d in held {
        holding::apply(&spec, &Default::default(), &mut status, &d.uid, &Change::Reserve(d.clone())).expect("fits");
    }
    let mut gw = Gateway::new("dtn", spec);
    gw.status = Some(status);
    gw
}

fn ready_pod() -> Pod {
    Pod {
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn observed(sr: StreamRequest, gw: Option<Gateway>) -> Observed {
    Observed {
        failed: super::failed(&sr),
        namespace_labels: None,
        duplicate_of: None,
        request: Arc::new(sr),
        gateway: gw.map(Arc::new),
        pods: Vec::new(),
        shared: None,
        config_map: None,
        older_waiting: Vec::new(),
        hello_key_problem: None,
        held_before: None,
        held_elsewhere: Default::default(),
        now: "2026-12-06T08:00:01Z".parse().expect("a timestamp"),
        resync: RESYNC,
    }
}

/// `me` holding its demand (as its first reconcile would have reserved it), plus status.
fn holding_me(sr: &StreamRequest, others: &[scistream_core::allocator::Demand]) -> Gateway {
    let mut held = others.to_vec();
    let mut spec = gateway(&[]).spec;
    spec.implementation = scistream_api::Implementation::Haproxy;
    held.push(holding::demand(sr, &spec));
    gateway(&held)
}

fn kind(c: &Change) -> &'static str {
    match c {
        Change::Reserve(_) => "reserve",
        Change::Relocate(_) => "relocate",
        Change::Resize(_) => "resize",
        Change::Release => "release",
    }
}

struct Expect {
    phase: Phase,
    reason: Reason,
    changes: &'static [&'static str],
    relays: &'static str,
    events: &'static [Reason],
    next: Duration,
}

fn check(name: &str, o: &Observed, e: &Expect) -> Plan {
    let p = plan(o);
    assert_eq!(p.decision.phase, e.phase, "{name}: phase ({:?})", p.decision.ready);
    assert_eq!(p.decision.ready.reason, e.reason, "{name}: reason ({})", p.decision.ready.message);
    assert_eq!(p.changes.iter().map(kind).collect::<Vec<_>>(), e.changes, "{name}: changes");
    let relays = match &p.relays {
        RelayWork::Wait => "wait",
        RelayWork::Run { .. } => "run",
        RelayWork::Remove => "remove",
    };
    assert_eq!(relays, e.relays, "{name}: relays");
    assert_eq!(p.events.iter().map(|(r, _)| *r).collect::<Vec<_>>(), e.events, "{name}: events");
    assert_eq!(p.next, e.next, "{name}: next");
    p
}

#[test]
fn plans_of_a_request_from_what_was_observed() {
    let sr = request(serde_json::json!({}));
    let failed = {
        let mut f = sr.clone();
        f.status = Some(StreamRequestStatus {
            phase: Some(Phase::Failed),
            conditions: vec![conditions::new(
                types::READY,
                false,
                reasons::HELLO_TIMEOUT,
                "no Hello",
                Some(1),
                &Time(Timestamp::now()),
            )],
            ..Default::default()
        });
        f
    };
    let cases: Vec<(&str, Observed, Expect)> = vec![
        (
            "a new request on a free Gateway reserves and starts its relays",
            observed(sr.clone(), Some(gateway(&[]))),
            Expect {
                phase: Phase::Provisioning,
                reason: reasons::PODS_STARTING,
                changes: &["reserve"],
                relays: "run",
                events: &[],
                next: Duration::from_secs(10),
            },
        ),
        (
            "no Gateway: wait for it",
            observed(sr.clone(), None),
            Expect {
                phase: Phase::Pending,
                reason: reasons::GATEWAY_NOT_FOUND,
                changes: &[],
                relays: "wait",
                events: &[],
                next: Duration::from_secs(30),
            },
        ),
        (
            "a full Gateway: wait for ports, reserve nothing",
            observed(sr.clone(), Some(gateway(&[want("a", 4, 1)]))),
            Expect {
                phase: Phase::Pending,
                reason: reasons::PORTS_EXHAUSTED,
                changes: &[],
                relays: "wait",
                events: &[],
                next: Duration::from_secs(30),
            },
        ),
        (
            "an older request needs the last ports: let it go first",
            Observed {
                older_waiting: vec![want("old", 2, 1)],
                ..observed(sr.clone(), Some(gateway(&[want("a", 2, 1)])))
            },
            Expect {
                phase: Phase::Pending,
                reason: reasons::PORTS_EXHAUSTED,
                changes: &[],
                relays: "wait",
                events: &[],
                next: Duration::from_secs(2),
            },
        ),
        (
            "an older request that fits beside it does not hold it back",
            Observed { older_waiting: vec![want("old", 1, 1)], ..observed(sr.clone(), Some(gateway(&[]))) },
            Expect {
                phase: Phase::Provisioning,
                reason: reasons::PODS_STARTING,
                changes: &["reserve"],
                relays: "run",
                events: &[],
                next: Duration::from_secs(10),
            },
        ),
        (
            "held and its relay ready: Ready, nothing to change",
            Observed { pods: vec![("n1".into(), ready_pod())], ..observed(sr.clone(), Some(holding_me(&sr, &[]))) },
            Expect {
                phase: Phase::Ready,
                reason: reasons::PODS_READY,
                changes: &[],
                relays: "run",
                events: &[],
                next: RESYNC,
            },
        ),
        (
            "a higher rate that fits is re-admitted",
            observed(request(serde_json::json!({"rate": "3Gbps"})), Some(holding_me(&sr, &[]))),
            Expect {
                phase: Phase::Provisioning,
                reason: reasons::PODS_STARTING,
                changes: &["resize"],
                relays: "run",
                events: &[],
                next: Duration::from_secs(10),
            },
        ),
        (
            "a higher rate that does not fit keeps the holding and says so",
            observed(request(serde_json::json!({"rate": "5Gbps"})), Some(holding_me(&sr, &[want("a", 1, 8)]))),
            Expect {
                phase: Phase::Provisioning,
                reason: reasons::PODS_STARTING,
                changes: &[],
                relays: "run",
                events: &[reasons::BANDWIDTH_EXHAUSTED],
                next: Duration::from_secs(10),
            },
        ),
        (
            "a data channel the Gateway cannot relay",
            observed(
                request(serde_json::json!({"dataChannel": "MutualTLS", "peerCertificate": "x"})),
                Some(gateway(&[])),
            ),
            Expect {
                phase: Phase::Pending,
                reason: reasons::INVALID_SPEC,
                changes: &[],
                relays: "wait",
                events: &[],
                next: Duration::from_secs(30),
            },
        ),
        (
            "failed with relays still running: stop them, keep the ports until they are gone",
            Observed {
                pods: vec![("n1".into(), ready_pod())],
                ..observed(failed.clone(), Some(holding_me(&failed, &[])))
            },
            Expect {
                phase: Phase::Failed,
                reason: reasons::HELLO_TIMEOUT,
                changes: &[],
                relays: "remove",
                events: &[],
                next: Duration::from_secs(2),
            },
        ),
        (
            "failed and its relays gone: release",
            observed(failed.clone(), Some(holding_me(&failed, &[]))),
            Expect {
                phase: Phase::Failed,
                reason: reasons::HELLO_TIMEOUT,
                changes: &["release"],
                relays: "remove",
                events: &[],
                next: RESYNC,
            },
        ),
        (
            "awaiting Hello: look again at the deadline",
            observed(
                request(
                    serde_json::json!({"targets": null, "helloKeySecretRef": {"name": "k"}, "helloTimeout": "60s"}),
                ),
                Some(gateway(&[])),
            ),
            Expect {
                phase: Phase::AwaitingHello,
                reason: reasons::AWAITING_HELLO,
                changes: &["reserve"],
                relays: "wait",
                events: &[],
                next: Duration::from_secs(60),
            },
        ),
    ];
    for (name, o, e) in &cases {
        check(name, o, e);
    }
}

#[test]
fn listeners_moved_off_a_lost_node_are_told_once_after_the_write() {
    let sr = request(serde_json::json!({}));
    let mut gw = holding_me(&sr, &[]);
    let held = holding::held(gw.status.as_ref(), "me").cloned().expect("held");
    let lost = held.nodes[0].node.clone();
    if let Some(st) = gw.status.as_mut() {
        for n in st.nodes.iter_mut().filter(|n| n.name == lost) {
            n.ready = false;
        }
    }
    let first = observed(sr.clone(), Some(gw.clone()));
    let p = plan(&first);
    let old_listeners = p.listeners.clone().expect("listeners");
    assert_eq!(p.changes, vec![Change::Relocate(vec![lost.clone()])]);
    assert!(p.events.is_empty(), "nothing is said before the move is written");
    // The write as the Gateway stores it, then the plan made again on it.
    let mut stored: GatewayStatus = gw.status.clone().unwrap_or_default();
    holding::apply_all(&gw.spec, &Default::default(), &mut stored, "me", &p.changes);
    gw.status = Some(stored);
    let again = Observed { gateway: Some(Arc::new(gw)), held_before: Some(held.clone()), ..first };
    let p = plan(&again);
    assert!(p.changes.is_empty());
    assert_eq!(p.events.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![reasons::NODE_LOST]);
    let (reason, note) = p.moved_note.clone().expect("a moved note");
    assert_eq!(reason, reasons::NODE_LOST);
    assert!(note.contains(&lost), "{note}");
    let (st, _) = status(&again, &p, None);
    assert!(conditions::is_true(&st.conditions, types::LISTENERS_MOVED));
    assert!(p.listeners.as_ref().is_ok_and(|l| !l.is_empty()));
    // Looked at again while the request's cache still shows the status from before the move
    // (old allocations and listeners) and the Gateway's shows the move: no address changed,
    // nothing is said over the NodeLost note.
    let mut stale = sr;
    stale.status =
        Some(StreamRequestStatus { allocations: held.nodes.clone(), listeners: old_listeners, ..Default::default() });
    let late = Observed { request: Arc::new(stale), held_before: None, ..again };
    let p = plan(&late);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert!(p.events.is_empty() && p.moved_note.is_none(), "{:?} {:?}", p.events, p.moved_note);
}

#[test]
fn a_missing_hello_key_is_reported_once_after_the_grace_period() {
    let sr = request(serde_json::json!({"targets": null, "helloKeySecretRef": {"name": "k"}}));
    let mut o = observed(sr, Some(gateway(&[])));
    o.hello_key_problem = Some("Secret ns/k does not exist".into());
    let p = plan(&o);
    assert_eq!(p.decision.phase, Phase::AwaitingHello, "{:?}", p.decision.ready);
    assert_eq!(p.next, Duration::from_secs(2), "Secrets are not watched: look again soon");
    let (_, warning) = status(&o, &p, None);
    assert!(warning.is_none(), "within the grace period nothing is said");
    o.now = "2026-12-06T08:00:30Z".parse().expect("a timestamp");
    let (st, warning) = status(&o, &p, None);
    assert_eq!(warning.map(|(r, _)| r), Some(reasons::HELLO_KEY_MISSING));
    let mut reported = (*o.request).clone();
    reported.status = Some(st);
    o.request = Arc::new(reported);
    let (_, warning) = status(&o, &plan(&o), None);
    assert!(warning.is_none(), "said once");
}

#[test]
fn the_hello_deadline_fails_and_releases_and_planning_again_keeps_it_failed() {
    let mut sr =
        request(serde_json::json!({"targets": null, "helloKeySecretRef": {"name": "k"}, "helloTimeout": "2s"}));
    sr.status = Some(StreamRequestStatus {
        reserved_time: Some(Time("2026-12-06T07:59:00Z".parse().expect("a timestamp"))),
        ..Default::default()
    });
    let gw = holding_me(&sr, &[]);
    let o = observed(sr, Some(gw.clone()));
    let p = plan(&o);
    assert_eq!(p.decision.phase, Phase::Failed);
    assert_eq!(p.decision.ready.reason, reasons::HELLO_TIMEOUT);
    assert_eq!(p.changes, vec![Change::Release]);
    // The release as stored, and the plan made again on it: still failed, nothing reserved.
    let mut stored: GatewayStatus = gw.status.clone().unwrap_or_default();
    holding::apply_all(&gw.spec, &Default::default(), &mut stored, "me", &p.changes);
    let mut released = gw;
    released.status = Some(stored);
    let again = Observed {
        gateway: Some(Arc::new(released)),
        failed: Some((p.decision.ready.reason, p.decision.ready.message.clone())),
        ..o
    };
    let p = plan(&again);
    assert_eq!(p.decision.phase, Phase::Failed);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert!(p.reservation.is_none());
}

#[path = "plan_policy_tests.rs"]
mod policy;

#[test]
fn a_stream_awaiting_its_hello_says_until_when_and_then_forgets_it() {
    let sr = request(serde_json::json!({"targets": null, "helloKeySecretRef": {"name": "k"}}));
    let o = observed(sr, Some(gateway(&[])));
    let p = plan(&o);
    assert_eq!(p.decision.phase, Phase::AwaitingHello);
    let (st, _) = status(&o, &p, None);
    let at = |t: &str| Some(Time(t.parse().expect("a timestamp")));
    assert_eq!(st.reserved_time, at("2026-12-06T08:00:01Z"));
    assert_eq!(st.hello_deadline, at("2026-12-06T08:03:01Z"), "reservedTime + helloTimeout 180s");
    let mut helloed = (*o.request).clone();
    helloed.status = Some(StreamRequestStatus { hello_time: at("2026-12-06T08:00:05Z"), ..st });
    let o = Observed { request: Arc::new(helloed), ..o };
    let (st, _) = status(&o, &plan(&o), None);
    assert_eq!(st.hello_deadline, None, "no deadline once the Hello arrived");
}

#[test]
fn a_refused_rate_change_reports_what_is_held_with_the_real_figures_once() {
    let sr = request(serde_json::json!({}));
    let gw = holding_me(&sr, &[want("a", 1, 8)]);
    let raised = request(serde_json::json!({"rate": "5Gbps"}));
    let o = observed(raised, Some(gw));
    let p = plan(&o);
    assert_eq!(p.events.len(), 1, "the first look at the change says so");
    let (st, _) = status(&o, &p, None);
    assert_eq!(st.granted_rate.as_deref(), Some("1Gbps"), "granted: what the Gateway holds");
    let reserved = conditions::find(&st.conditions, types::RESERVED).expect("Reserved");
    assert!(reserved.status == "True" && reserved.message.contains("and 1Gbps"), "{}", reserved.message);
    assert!(
        reserved.message.contains(
            "spec.rate 5Gbps is refused, the stream keeps the 1Gbps it holds: Gateway dtn needs 5Gbps, but 9Gbps of the gateway's 10Gbps is already promised (2Gbps left)"
        ),
        "{}",
        reserved.message
    );
    // Looked at again with this spec already observed: no new event.
    let mut seen = (*o.request).clone();
    seen.status = Some(st);
    let o = Observed { request: Arc::new(seen), ..o };
    assert!(plan(&o).events.is_empty(), "an event once per change, not per look");
}

#[test]
fn a_held_nodes_new_address_moves_the_listeners_and_says_so_once() {
    let sr = request(serde_json::json!({}));
    let gw = holding_me(&sr, &[]);
    let p = plan(&observed(sr.clone(), Some(gw.clone())));
    let now = p.listeners.clone().expect("listeners");
    assert!(p.moved_note.is_none() && p.events.is_empty(), "a first look moves nothing");
    // The status still shows the listeners of the node's former address.
    let mut before = sr.clone();
    let old: Vec<String> = now.iter().map(|l| l.replacen(|c: char| c.is_ascii_digit(), "9", 1)).collect();
    assert_ne!(old, now);
    let holding = holding::held(gw.status.as_ref(), "me").cloned().expect("held");
    before.status = Some(scistream_api::StreamRequestStatus {
        listeners: old.clone(),
        allocations: holding.nodes.clone(),
        ..Default::default()
    });
    let o = observed(before, Some(gw.clone()));
    let p = plan(&o);
    assert!(p.changes.is_empty(), "the holding stays: {:?}", p.changes);
    assert_eq!(p.events.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![reasons::ADDRESS_CHANGED]);
    let (reason, note) = p.moved_note.clone().expect("a moved note");
    assert_eq!(reason, reasons::ADDRESS_CHANGED);
    assert!(note.contains(&old.join(",")) && note.contains(&now.join(",")), "{note}");
    let (st, _) = status(&o, &p, None);
    let c = conditions::find(&st.conditions, types::LISTENERS_MOVED).expect("ListenersMoved");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "AddressChanged"));
    assert_eq!(st.listeners, now);
    // Once reported, the next look says nothing more and keeps the condition.
    let mut after = sr;
    after.status = Some(st);
    let o = observed(after, Some(gw));
    let p = plan(&o);
    assert!(p.events.is_empty() && p.moved_note.is_none());
    let (st, _) = status(&o, &p, None);
    assert!(conditions::is_true(&st.conditions, types::LISTENERS_MOVED), "until the peer side is updated");
}

#[test]
fn a_gateway_being_deleted_admits_no_new_stream_and_keeps_the_ones_it_holds() {
    let deleting = |mut gw: Gateway| {
        gw.metadata.deletion_timestamp = Some(Time("2026-12-06T08:00:00Z".parse().expect("a timestamp")));
        gw
    };
    let sr = request(serde_json::json!({}));
    let p = plan(&observed(sr.clone(), Some(deleting(gateway(&[])))));
    assert_eq!((p.decision.phase, p.decision.ready.reason), (Phase::Pending, reasons::GATEWAY_NOT_READY));
    assert!(p.decision.ready.message.contains("being deleted"), "{}", p.decision.ready.message);
    assert!(p.changes.is_empty(), "nothing reserved: {:?}", p.changes);
    // The stream it already holds keeps its ports and its relays.
    let p = plan(&observed(sr.clone(), Some(deleting(holding_me(&sr, &[])))));
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert!(p.reservation.is_some() && matches!(p.relays, RelayWork::Run { .. }), "{:?}", p.relays);
}
