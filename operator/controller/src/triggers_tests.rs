use super::*;
use k8s_openapi::{
    api::core::v1::{NodeCondition, NodeStatus},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use scistream_api::{GatewayStatus, StreamRequestStatus, gateway::GatewayNodeStatus};

fn request() -> StreamRequest {
    let mut sr: StreamRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {"streamId": "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", "role": "Producer", "gateway": "dtn",
                 "targets": ["192.0.2.10:7000"]}
    }))
    .expect("a valid StreamRequest");
    sr.status = Some(StreamRequestStatus::default());
    sr
}

#[test]
fn a_request_wakes_for_what_it_acts_on_only() {
    type Edit = fn(&mut StreamRequest);
    let cases: [(&str, Edit, bool); 9] = [
        ("spec (generation)", |s| s.metadata.generation = Some(2), true),
        ("deletion", |s| s.metadata.deletion_timestamp = Some(Time(Timestamp::now())), true),
        ("finalizer", |s| s.metadata.finalizers = Some(vec!["scistream.io/release".into()]), true),
        (
            "annotation",
            |s| {
                s.annotations_mut().insert("scistream.io/peer-updated".into(), "x".into());
            },
            true,
        ),
        ("Hello", |s| s.status.get_or_insert_default().hello_time = Some(Time(Timestamp::now())), true),
        ("Hello listeners", |s| s.status.get_or_insert_default().prod_listeners = vec!["192.0.2.1:1".into()], true),
        ("the operator's phase", |s| s.status.get_or_insert_default().phase = Some(scistream_api::Phase::Ready), false),
        (
            "the operator's listeners",
            |s| s.status.get_or_insert_default().listeners = vec!["198.51.100.1:5100".into()],
            false,
        ),
        ("transfer statistics", |s| s.metadata.resource_version = Some("99".into()), false),
    ];
    let base = request();
    for (what, edit, wakes) in cases {
        let mut changed = base.clone();
        edit(&mut changed);
        assert_eq!(request_predicate(&base) != request_predicate(&changed), wakes, "{what}");
    }
}

fn node() -> Node {
    let mut n = Node::default();
    n.metadata.name = Some("n1".into());
    n.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]),
        ..Default::default()
    });
    n
}

#[test]
fn a_node_heartbeat_wakes_no_gateway() {
    let base = node();
    let mut heartbeat = base.clone();
    if let Some(c) = heartbeat.status.as_mut().and_then(|s| s.conditions.as_mut()).and_then(|c| c.first_mut()) {
        c.last_heartbeat_time = Some(Time(Timestamp::now()));
    }
    heartbeat.metadata.resource_version = Some("7".into());
    assert_eq!(node_predicate(&base), node_predicate(&heartbeat));
    let mut not_ready = base.clone();
    if let Some(c) = not_ready.status.as_mut().and_then(|s| s.conditions.as_mut()).and_then(|c| c.first_mut()) {
        c.status = "False".into();
    }
    assert_ne!(node_predicate(&base), node_predicate(&not_ready));
    let mut relabelled = base.clone();
    relabelled.labels_mut().insert("gw".into(), "true".into());
    assert_ne!(node_predicate(&base), node_predicate(&relabelled));
}

fn gateway(held: &[(usize, i64)], ready: bool) -> Gateway {
    let mut gw: Gateway = serde_json::from_value(serde_json::json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway",
        "metadata": {"name": "dtn", "uid": "g1", "generation": 1},
        "spec": {"nodeSelector": {"gw": "true"}, "bandwidth": "10Gbps", "podNamespace": "gw"}
    }))
    .expect("a valid Gateway");
    gw.status = Some(GatewayStatus {
        nodes: vec![GatewayNodeStatus { name: "n1".into(), ready, ..Default::default() }],
        // Totals only: the holdings are in the requests' statuses and the operator's ledger.
        streams: i32::try_from(held.len()).unwrap_or(i32::MAX),
        ports_in_use: held.iter().map(|(ports, _)| i32::try_from(*ports).unwrap_or(i32::MAX)).sum(),
        bandwidth_promised_bps: held.iter().map(|(_, bps)| bps).sum(),
        ..Default::default()
    });
    gw
}

#[test]
fn a_gateway_wakes_whom_its_change_concerns() {
    let shape = |held: &[(usize, i64)], ready: bool| GatewayShape::of(&gateway(held, ready));
    let one = shape(&[(1, 10)], true);
    let two = shape(&[(1, 10), (1, 10)], true);
    let mut respecced = gateway(&[(1, 10)], true);
    respecced.spec.port_range.end = respecced.spec.port_range.end.saturating_add(1);
    let cases = [
        ("first seen", None, Some(&one), Wake::All),
        ("deleted", Some(&one), None, Wake::All),
        ("a request took capacity", Some(&one), Some(&two), Wake::Nobody),
        // The ledger wakes the waiting requests when capacity is given back, at once; the
        // Gateway's totals follow later and wake nobody again.
        ("a request gave capacity back", Some(&two), Some(&one), Wake::Nobody),
        ("status rewritten, nothing changed", Some(&one), Some(&one), Wake::Nobody),
    ];
    for (what, before, after, expected) in cases {
        assert_eq!(wake(before, after), expected, "{what}");
    }
    assert_eq!(wake(Some(&one), Some(&shape(&[(1, 10)], false))), Wake::All, "a node no longer ready");
    assert_eq!(wake(Some(&one), Some(&GatewayShape::of(&respecced))), Wake::All, "spec changed");
}

#[test]
fn a_gateway_reconciles_when_its_first_stream_comes_or_its_last_goes() {
    let p = |gw: &Gateway| gateway_predicate(gw);
    let (empty, one, two) = (gateway(&[], true), gateway(&[(1, 1)], true), gateway(&[(1, 1), (1, 1)], true));
    assert_ne!(p(&empty), p(&one), "the first stream: its finalizer is added");
    assert_eq!(p(&one), p(&two), "more streams change nothing of its own");
    let deleting = |mut gw: Gateway| {
        gw.metadata.deletion_timestamp = Some(Time("2026-12-06T08:00:00Z".parse().expect("a timestamp")));
        gw
    };
    assert_ne!(p(&one), p(&deleting(one.clone())));
    assert_ne!(p(&deleting(one)), p(&deleting(two)), "while deleted, each release updates its InUse message");
}
