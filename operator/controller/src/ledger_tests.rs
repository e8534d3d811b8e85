use super::*;
use std::sync::Mutex as StdMutex;

use crate::stream::holding::tests::{gateway, want};
use scistream_api::{NodeAllocation, StreamRequestStatus};

fn gw(name: &str, ports: u16) -> Gateway {
    let (spec, status) = gateway(&["n1"], ports, 10);
    let mut g = Gateway::new(name, spec);
    g.metadata.uid = Some(format!("uid-{name}"));
    g.metadata.resource_version = Some("1".into());
    g.status = Some(status);
    g
}

/// A request on `gateway` whose status records `ports` on n1, reserved at second `at`.
fn recorded(name: &str, gateway: &str, ports: &[i32], at: u32, granted: Option<&str>) -> StreamRequest {
    let mut sr: StreamRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
        "spec": {"streamId": format!("id-{name}"), "role": "Producer", "gateway": gateway, "rate": "1Gbps",
                 "targets": ["192.0.2.9:7000"]}
    }))
    .expect("a valid StreamRequest");
    sr.status = Some(StreamRequestStatus {
        allocations: if ports.is_empty() {
            Vec::new()
        } else {
            vec![NodeAllocation { node: "n1".into(), ports: ports.to_vec(), metrics_port: None }]
        },
        granted_rate: granted.map(str::to_owned),
        reserved_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            format!("2026-12-07T10:00:{at:02}Z").parse().expect("a timestamp"),
        )),
        ..Default::default()
    });
    sr
}

fn held_ports(ledger: &Ledger, gateway: &str) -> Vec<(String, Vec<i32>)> {
    ledger.reservations(gateway).into_iter().map(|r| (r.uid, r.nodes[0].ports.clone())).collect()
}

#[test]
fn a_status_records_the_holding_it_was_given() {
    let sr = recorded("a", "dtn", &[5100, 5101], 0, Some("2.5Gbps"));
    let h = sr.holding().expect("a holding");
    assert_eq!((h.request.as_str(), h.uid.as_str(), h.bandwidth_bps), ("ns/a", "uid-a", 2_500_000_000));
    let unreadable = recorded("b", "dtn", &[5100], 0, Some("fast"));
    assert_eq!(unreadable.holding().map(|h| h.bandwidth_bps), Some(1_000_000_000), "spec.rate stands in");
    let none = recorded("c", "dtn", &[], 0, None);
    assert!(none.holding().is_none(), "no allocations, no holding");
}

#[test]
fn seeding_takes_holdings_oldest_first_and_leaves_out_a_port_held_twice() {
    struct Case {
        name: &'static str,
        requests: Vec<StreamRequest>,
        expected: Vec<(&'static str, Vec<i32>)>,
    }
    let cases = [
        Case {
            name: "distinct ports",
            requests: vec![recorded("a", "dtn", &[5100], 1, None), recorded("b", "dtn", &[5101], 2, None)],
            expected: vec![("uid-a", vec![5100]), ("uid-b", vec![5101])],
        },
        Case {
            name: "the later of two claims of a port is left out, whatever the listing order",
            requests: vec![recorded("late", "dtn", &[5100, 5102], 5, None), recorded("early", "dtn", &[5100], 1, None)],
            expected: vec![("uid-early", vec![5100])],
        },
        Case {
            name: "one node port has one owner across Gateways",
            requests: vec![recorded("a", "dtn", &[5100], 1, None), recorded("b", "other", &[5100], 2, None)],
            expected: vec![("uid-a", vec![5100])],
        },
    ];
    for case in cases {
        let ledger = Ledger::default();
        let taken = ledger.seed(case.requests.iter());
        let mut all = held_ports(&ledger, "dtn");
        all.extend(held_ports(&ledger, "other"));
        let expected: Vec<(String, Vec<i32>)> = case.expected.into_iter().map(|(u, p)| (u.to_owned(), p)).collect();
        assert_eq!(all, expected, "{}", case.name);
        assert_eq!(taken, expected.len(), "{}", case.name);
        assert_eq!(ledger.seed(case.requests.iter()), 0, "{}: seeded once", case.name);
    }
}

#[test]
fn nothing_is_decided_before_the_ledger_is_seeded() {
    let ledger = Ledger::default();
    let dtn = gw("dtn", 10);
    assert_eq!(ledger.apply(&dtn, "me", &[Change::Reserve(want("me", 1, 1))]).err(), Some(NotSeeded));
    ledger.seed(std::iter::empty());
    assert!(ledger.apply(&dtn, "me", &[Change::Reserve(want("me", 1, 1))]).is_ok_and(|a| a.changed));
}

#[test]
fn changes_are_told_with_whether_capacity_was_given_back() {
    let ledger = Ledger::default();
    let heard = Arc::new(StdMutex::new(Vec::new()));
    let sink = heard.clone();
    ledger.on_change(move |n| sink.lock().expect("not poisoned").push((n.gateway, n.freed)));
    let existing = recorded("old", "other", &[5100], 0, None);
    ledger.seed([&existing]);
    let dtn = gw("dtn", 10);
    // A port the other Gateway holds on the same node is never handed out here.
    let a = ledger.apply(&dtn, "me", &[Change::Reserve(want("me", 2, 1))]).expect("seeded");
    let mine = holding::held(a.gateway.status.as_ref(), "me").expect("held").nodes[0].ports.clone();
    assert_eq!(mine, vec![5101, 5102]);
    let again = ledger.apply(&dtn, "me", &[Change::Reserve(want("me", 2, 1))]).expect("seeded");
    assert!(!again.changed, "reserving twice is one holding");
    assert_eq!(a.gateway, again.gateway, "no change, the same view");
    let bigger = ledger.apply(&dtn, "me", &[Change::Resize(3_000_000_000)]).expect("seeded");
    assert!(bigger.changed);
    let smaller = ledger.apply(&dtn, "me", &[Change::Resize(500_000_000)]).expect("seeded");
    assert!(smaller.changed);
    assert!(ledger.release(None, "me"));
    assert!(!ledger.release(None, "me"), "released once");
    let heard = heard.lock().expect("not poisoned").clone();
    let expected: Vec<(String, bool)> =
        [("other", false), ("dtn", false), ("dtn", false), ("dtn", true), ("dtn", true)]
            .into_iter()
            .map(|(g, f)| (g.to_owned(), f))
            .collect();
    assert_eq!(heard, expected);
}

#[test]
fn a_change_that_no_longer_fits_is_refused_and_changes_nothing() {
    let ledger = Ledger::default();
    ledger.seed(std::iter::empty());
    let dtn = gw("dtn", 2);
    assert!(ledger.apply(&dtn, "a", &[Change::Reserve(want("a", 2, 1))]).is_ok_and(|a| a.changed));
    let b = ledger.apply(&dtn, "b", &[Change::Reserve(want("b", 1, 1))]).expect("seeded");
    assert!(!b.changed && b.refusal.is_some());
    assert_eq!(held_ports(&ledger, "dtn"), vec![("a".to_owned(), vec![5100, 5101])]);
}

#[test]
fn a_full_view_is_made_again_when_the_gateway_or_its_holdings_change() {
    let ledger = Ledger::default();
    ledger.seed(std::iter::empty());
    let mut dtn = gw("dtn", 10);
    let first = ledger.view_for(&dtn, "nobody");
    assert!(Arc::ptr_eq(&first, &ledger.view_for(&dtn, "nobody")));
    dtn.metadata.resource_version = Some("2".into());
    let newer = ledger.view_for(&dtn, "nobody");
    assert!(!Arc::ptr_eq(&first, &newer), "a newer Gateway");
    ledger.apply(&dtn, "a", &[Change::Reserve(want("a", 1, 1))]).expect("seeded");
    let held = ledger.view_for(&dtn, "nobody");
    assert_eq!(held.status.as_ref().map(|s| s.reservations.len()), Some(1));
    assert!(dtn.status.as_ref().is_some_and(|s| s.reservations.is_empty()), "the cached Gateway is untouched");
}

#[test]
fn a_held_stream_plans_with_its_own_holding_and_a_refused_change_with_every_holding() {
    let ledger = Ledger::default();
    ledger.seed(std::iter::empty());
    let dtn = gw("dtn", 10);
    let count = |g: &Gateway| g.status.as_ref().map(|s| s.reservations.len());
    ledger.apply(&dtn, "a", &[Change::Reserve(want("a", 2, 1))]).expect("seeded");
    let b = ledger.apply(&dtn, "b", &[Change::Reserve(want("b", 1, 1))]).expect("seeded");
    assert_eq!(count(&b.gateway), Some(1), "b holds: its plan after the change reads its own holding");
    let own = ledger.view_for(&dtn, "a");
    assert_eq!(own.status.as_ref().map(|s| s.reservations[0].uid.as_str()), Some("a"));
    assert_eq!(count(&own), Some(1));
    assert_eq!(count(&ledger.view_for(&dtn, "c")), Some(2), "a request waiting for capacity sees every holding");
    // A new rate the Gateway cannot give: refused under the lock, and the plan made again
    // reads every holding to say why.
    let refused = ledger.apply(&own, "a", &[Change::Resize(20_000_000_000)]).expect("seeded");
    assert!(!refused.changed && refused.refusal.is_some());
    assert_eq!(count(&refused.gateway), Some(2));
    let resized = ledger.apply(&own, "a", &[Change::Resize(2_000_000_000)]).expect("seeded");
    assert!(resized.changed && resized.refusal.is_none());
    assert_eq!(resized.gateway.status.as_ref().map(|s| s.reservations[0].bandwidth_bps), Some(2_000_000_000));
    assert_eq!(ledger.reservations("dtn").len(), 2, "planning from a light view dropped no holding");
    assert!(dtn.status.as_ref().is_some_and(|s| s.reservations.is_empty()), "the cached Gateway is untouched");
}
