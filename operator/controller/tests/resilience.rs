//! The operator's invariants under restarts, races and failures: holdings survive restarts,
//! racing operators never hand out a port twice, one leader acts at a time, a lost relay pod
//! comes back on the same ports, a lost gateway node's share moves.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use scistream_api::{NodeAllocation, Phase, StreamRequest};
use scistream_core::allocator;
use scistream_testkit::{Facility, GATEWAY_NS, OperatorOptions, USER_NS, gateway_spec, wait_until};
use serde_json::json;

fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn spec(n: u32, conns: u32) -> serde_json::Value {
    json!({"streamId": id(n), "role": "Producer", "gateway": "dtn", "numConnections": conns, "rate": "1Gbps",
           "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]})
}

fn phase(sr: &StreamRequest) -> Option<Phase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

fn allocations(sr: &StreamRequest) -> Vec<NodeAllocation> {
    sr.status.as_ref().map(|s| s.allocations.clone()).unwrap_or_default()
}

async fn assert_holdings_match_live_streams(f: &Facility) {
    let reservations = f.wait_totals_match_holdings(30).await;
    allocator::check(&reservations, None).expect("no port held twice");
    let live = f.requests().list(&Default::default()).await.unwrap().items;
    let mut live_uids: Vec<String> =
        live.iter().filter(|r| r.metadata.deletion_timestamp.is_none()).filter_map(|r| r.uid()).collect();
    let mut held: Vec<String> = reservations.iter().map(|r| r.uid.clone()).collect();
    live_uids.sort();
    held.sort();
    assert_eq!(held, live_uids, "holdings must equal the live streams exactly");
}

#[tokio::test]
async fn holdings_survive_an_operator_restart_and_deletions_while_it_was_down() {
    let mut f = Facility::start("restart").await;
    f.start_operator(false);
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    let mut before = BTreeMap::new();
    for n in 1..=3 {
        f.create_request(&format!("s{n}"), spec(n, 3)).await;
        let sr = f.wait_request(&format!("s{n}"), 20, |sr| phase(sr) == Some(Phase::Ready)).await;
        before.insert(n, allocations(&sr));
    }
    f.stop_operator().await;
    // While no operator runs: one request is deleted (its finalizer holds it) and one created.
    f.requests().delete("s2", &DeleteParams::default()).await.unwrap();
    f.create_request("s4", spec(4, 3)).await;
    f.start_operator(false);
    f.assert_released("s2", &id(2)).await;
    f.wait_request("s4", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    for n in [1, 3] {
        let sr = f.wait_request(&format!("s{n}"), 20, |sr| phase(sr) == Some(Phase::Ready)).await;
        assert_eq!(allocations(&sr), before[&n], "s{n} must keep its ports across the restart");
    }
    assert_holdings_match_live_streams(&f).await;
    f.shutdown().await;
}

#[tokio::test]
async fn racing_operators_never_double_allocate() {
    let mut f = Facility::start("race").await;
    // Two operators without leader election: only optimistic concurrency on the Gateway's
    // reservations stands between them and a double allocation.
    f.start_operator(false);
    f.start_operator(false);
    f.apply_gateway(gateway_spec(5111)).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    // 2 nodes x 12 ports; 8 streams of 2 connections + 1 metrics port = 24 ports: all fit exactly.
    for n in 1..=8 {
        f.create_request(&format!("r{n}"), spec(n, 2)).await;
    }
    for n in 1..=8 {
        f.wait_request(&format!("r{n}"), 30, |sr| phase(sr) == Some(Phase::Ready)).await;
    }
    assert_holdings_match_live_streams(&f).await;
    let gw = f.gateway().await;
    assert_eq!(gw.status.unwrap().ports_in_use, 24);
    f.shutdown().await;
}

#[tokio::test]
async fn one_leader_acts_and_a_standby_takes_over() {
    let mut f = Facility::start("leader").await;
    f.start_operator(true);
    f.start_operator(true);
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(20, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    let leases: Api<Lease> = Api::namespaced(f.client.clone(), "default");
    let holder =
        || async { leases.get("scistream-operator").await.ok().and_then(|l| l.spec).and_then(|s| s.holder_identity) };
    let first = holder().await.expect("a leader");
    // Stop the leader (the most recently started operator, if it leads; else stop both in turn).
    if first == "operator-1" {
        f.stop_operator().await;
    } else {
        // operator-0 leads: stopping operator-1 (the standby) first proves nothing; instead
        // stop everything and restart a single standby that must take over after expiry.
        f.stop_operator().await;
        f.stop_operator().await;
        f.start_operator(true);
    }
    f.create_request("after", spec(1, 2)).await;
    // The survivor takes the lease once it expires (15 s) and then serves the new request.
    f.wait_request("after", 40, |sr| phase(sr) == Some(Phase::Ready)).await;
    let second = holder().await.expect("a leader");
    assert_ne!(first, second, "leadership moved");
    f.shutdown().await;
}

#[tokio::test]
async fn a_deleted_relay_pod_comes_back_on_the_same_ports() {
    let mut f = Facility::start("podloss").await;
    f.start_operator(false);
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f.create_request("p", spec(1, 3)).await;
    let sr = f.wait_request("p", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let listeners = sr.status.clone().unwrap().listeners;
    let pods = f.pods().list(&Default::default()).await.unwrap().items;
    assert_eq!(pods.len(), 1);
    let old_uid = pods[0].uid();
    f.pods().delete(&pods[0].name_any(), &DeleteParams::default()).await.unwrap();
    wait_until(Duration::from_secs(20), || {
        let api = f.pods();
        let old_uid = old_uid.clone();
        async move { api.list(&Default::default()).await.unwrap().items.iter().any(|p| p.uid() != old_uid) }
    })
    .await;
    let sr = f.wait_request("p", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    assert_eq!(sr.status.unwrap().listeners, listeners);
    f.shutdown().await;
}

#[tokio::test]
async fn a_lost_gateway_node_moves_its_listeners() {
    let mut f = Facility::start("nodeloss").await;
    f.start_operator(false);
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f.create_request("n", spec(1, 3)).await;
    let sr = f.wait_request("n", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let lost = allocations(&sr)[0].node.clone();
    let nodes: Api<Node> = Api::all(f.client.clone());
    let not_ready =
        json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletStopped"}]}});
    nodes.patch_status(&lost, &PatchParams::default(), &Patch::Merge(&not_ready)).await.unwrap();
    let sr = f
        .wait_request("n", 30, |sr| phase(sr) == Some(Phase::Ready) && allocations(sr).iter().all(|a| a.node != lost))
        .await;
    let listeners = sr.status.unwrap().listeners;
    assert_eq!(listeners.len(), 3);
    assert!(
        listeners.iter().all(|l| !l.starts_with(if lost == "gw-a" { "198.51.100.1:" } else { "198.51.100.2:" })),
        "{listeners:?}"
    );
    assert_holdings_match_live_streams(&f).await;
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(f.client.clone(), USER_NS);
    let reasons: Vec<String> =
        events.list(&Default::default()).await.unwrap().items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(reasons.iter().any(|r| r == "NodeLost"), "{reasons:?}");
    // Not only an event: a condition says the peer must be updated, until it is.
    let moved = |sr: &StreamRequest| {
        sr.status.as_ref().and_then(|s| scistream_api::conditions::find(&s.conditions, "ListenersMoved")).cloned()
    };
    let c = moved(&f.requests().get("n").await.unwrap()).expect("a ListenersMoved condition");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "NodeLost"));
    assert!(c.message.contains(&lost) && c.message.contains("kubectl scistream update n"), "{}", c.message);
    // What `kubectl scistream update` leaves once it has re-run the connection map.
    let stamp =
        json!({"metadata": {"annotations": {scistream_api::keys::ANNOTATION_PEER_UPDATED: listeners.join(",")}}});
    f.requests().patch("n", &PatchParams::default(), &Patch::Merge(&stamp)).await.unwrap();
    let sr =
        f.wait_request("n", 20, |sr| moved(sr).is_some_and(|c| c.status == "False" && c.reason == "PeerUpdated")).await;
    assert_eq!(phase(&sr), Some(Phase::Ready));
    f.shutdown().await;
}

/// Regression: relay objects left without a StreamRequest (here made by hand, as a crash
/// or a forced finalizer removal would leave them) are swept by the Gateway controller, more
/// of them than one page of the sweep's LIST holds, in one sweep (the next is a resync away).
#[tokio::test]
async fn orphaned_relay_objects_are_swept() {
    let mut f = Facility::start("sweep").await;
    f.apply_gateway(gateway_spec(5119)).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(f.client.clone(), GATEWAY_NS);
    let orphans = scistream_controller::gateway::sweep::PAGE as usize + 10;
    for i in 0..orphans {
        let orphan: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("s2ds-orphan-{i}"), "namespace": GATEWAY_NS,
                "labels": {"app.kubernetes.io/managed-by": "scistream-operator", "app.kubernetes.io/component": "s2ds",
                           "scistream.io/gateway": "dtn", "scistream.io/stream-id": id(9)},
                "annotations": {"scistream.io/request": "science/gone"}}
        }))
        .unwrap();
        cms.create(&Default::default(), &orphan).await.unwrap();
    }
    f.start_operator_with(OperatorOptions::quick().resync_seconds(600));
    wait_until(Duration::from_secs(30), || {
        let cms = cms.clone();
        let ours = kube::api::ListParams::default().labels("scistream.io/gateway=dtn");
        async move { cms.list(&ours).await.unwrap().items.is_empty() }
    })
    .await;
    f.shutdown().await;
}

/// Regression: cleanup must not depend on the Gateway (or a cache of it): deleting a request
/// whose Gateway was deleted first still removes its relay pod. (The in-use finalizer keeps
/// such a Gateway; here an administrator removed it by hand.)
#[tokio::test]
async fn release_works_after_the_gateway_is_gone() {
    let mut f = Facility::start("nogw").await;
    f.start_operator(false);
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f.create_request("g", spec(1, 2)).await;
    f.wait_request("g", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let gateways = Api::<scistream_api::Gateway>::all(f.client.clone());
    f.wait_gateway(20, |g| g.metadata.finalizers.as_ref().is_some_and(|x| !x.is_empty())).await;
    gateways.delete("dtn", &DeleteParams::default()).await.unwrap();
    let forced = serde_json::json!({"metadata": {"finalizers": null}});
    gateways.patch("dtn", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&forced)).await.unwrap();
    assert!(gateways.get_opt("dtn").await.unwrap().is_none(), "gone");
    f.requests().delete("g", &DeleteParams::default()).await.unwrap();
    wait_until(Duration::from_secs(30), || {
        let (api, pods) = (f.requests(), f.pods());
        async move {
            api.get_opt("g").await.unwrap().is_none() && pods.list(&Default::default()).await.unwrap().items.is_empty()
        }
    })
    .await;
    f.shutdown().await;
}
