//! The operator restarted in each phase before Ready (Ready and deletion are in
//! resilience.rs): Pending, AwaitingHello, Provisioning. After each, the request goes on
//! from where it was, keeps the ports it held, no port is held twice and the gateway's
//! holdings are exactly what the live requests report holding.

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use scistream_api::{NodeAllocation, Phase, StreamRequest, conditions};
use scistream_core::allocator;
use scistream_testkit::{Facility, USER_NS, gateway_spec};
use serde_json::json;

fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn static_spec(n: u32, rate: &str) -> serde_json::Value {
    json!({"streamId": id(n), "role": "Producer", "gateway": "dtn", "numConnections": 2, "rate": rate,
           "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]})
}

fn phase(sr: &StreamRequest) -> Option<Phase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

fn allocations(sr: &StreamRequest) -> Vec<NodeAllocation> {
    sr.status.as_ref().map(|s| s.allocations.clone()).unwrap_or_default()
}

fn reason(sr: &StreamRequest, type_: &str) -> String {
    sr.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, type_))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

async fn assert_holdings_match_live_streams(f: &Facility) {
    // The Gateway counts exactly what the requests record, no port twice.
    let reservations = f.wait_totals_match_holdings(30).await;
    allocator::check(&reservations, None).expect("no port held twice");
    // A live request reporting allocations holds exactly those; one waiting (Pending) holds none.
    let live = f.requests().list(&Default::default()).await.unwrap().items;
    let mut holding: Vec<(String, Vec<NodeAllocation>)> = live
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none() && !allocations(r).is_empty())
        .filter_map(|r| Some((r.uid()?, allocations(r))))
        .collect();
    let mut held: Vec<(String, Vec<NodeAllocation>)> =
        reservations.iter().map(|r| (r.uid.clone(), r.nodes.clone())).collect();
    holding.sort_by(|a, b| a.0.cmp(&b.0));
    held.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(held, holding, "the gateway's holdings must be exactly what the live requests report");
}

async fn facility(name: &str) -> Facility {
    let mut f = Facility::start(name).await;
    f.start_operator(false);
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f
}

/// Pending for bandwidth across a restart: the older stream holding it is deleted while the
/// operator is down; after the restart the older one is released and the waiting one served.
#[tokio::test]
async fn restart_while_pending() {
    let mut f = facility("r-pending").await;
    f.create_request("hog", static_spec(1, "100Gbps")).await;
    f.wait_request("hog", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    f.create_request("waiting", static_spec(2, "20Gbps")).await;
    f.wait_request("waiting", 20, |sr| {
        phase(sr) == Some(Phase::Pending) && reason(sr, "Reserved") == "BandwidthExhausted"
    })
    .await;
    f.stop_operator().await;
    assert_holdings_match_live_streams(&f).await;
    f.requests().delete("hog", &DeleteParams::default()).await.unwrap();
    f.start_operator(false);
    let sr = f.wait_request("waiting", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    assert!(!allocations(&sr).is_empty());
    f.assert_released("hog", &id(1)).await;
    assert_holdings_match_live_streams(&f).await;
    f.requests().delete("waiting", &DeleteParams::default()).await.unwrap();
    f.assert_released("waiting", &id(2)).await;
    f.shutdown().await;
}

/// AwaitingHello across a restart: the same ports, still awaiting Hello, no relay started;
/// the Hello recorded afterwards starts them on those ports.
#[tokio::test]
async fn restart_while_awaiting_hello() {
    let mut f = facility("r-hello").await;
    let key: Secret =
        serde_json::from_value(json!({"metadata": {"name": "beam-key"}, "stringData": {"key": "k"}})).unwrap();
    Api::<Secret>::namespaced(f.client.clone(), USER_NS).create(&PostParams::default(), &key).await.unwrap();
    f.create_request(
        "beam",
        json!({"streamId": id(3), "role": "Producer", "gateway": "dtn", "dataChannel": "Plain", "numConnections": 3,
               "helloKeySecretRef": {"name": "beam-key"}, "helloTimeout": "120s"}),
    )
    .await;
    let before = f.wait_request("beam", 20, |sr| phase(sr) == Some(Phase::AwaitingHello)).await;
    f.stop_operator().await;
    assert_holdings_match_live_streams(&f).await;
    f.start_operator(false);
    // A second request reconciled after the restart proves the new operator is at work.
    f.create_request("probe", static_spec(4, "1Gbps")).await;
    f.wait_request("probe", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let after = f.requests().get("beam").await.unwrap();
    assert_eq!(phase(&after), Some(Phase::AwaitingHello));
    assert_eq!(allocations(&after), allocations(&before), "ports kept across the restart");
    let selector = format!("scistream.io/stream-id={}", id(3));
    assert!(f.pods().list(&kube::api::ListParams::default().labels(&selector)).await.unwrap().items.is_empty());
    let hello = json!({"apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "status": {"helloTime": "2026-01-01T00:00:00Z", "prodListeners": ["192.0.2.60:9000"]}});
    f.requests()
        .patch_status("beam", &PatchParams::apply("scistream-control-endpoint"), &Patch::Apply(&hello))
        .await
        .unwrap();
    let ready = f.wait_request("beam", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    assert_eq!(allocations(&ready), allocations(&before));
    assert_holdings_match_live_streams(&f).await;
    for (name, n) in [("beam", 3), ("probe", 4)] {
        f.requests().delete(name, &DeleteParams::default()).await.unwrap();
        f.assert_released(name, &id(n)).await;
    }
    f.shutdown().await;
}

/// Provisioning across a restart (the relay pods are up but not ready): the same pod is
/// kept (not a second one), the same ports, and Ready once the pod is.
#[tokio::test]
async fn restart_while_provisioning() {
    let mut f = facility("r-prov").await;
    f.kubelet.set_broken(&["gw-a", "gw-b"]);
    f.create_request("slow", static_spec(5, "1Gbps")).await;
    let before = f.wait_request("slow", 20, |sr| phase(sr) == Some(Phase::Provisioning)).await;
    let pods = f.pods().list(&Default::default()).await.unwrap().items;
    assert_eq!(pods.len(), 1, "one relay pod");
    f.stop_operator().await;
    assert_holdings_match_live_streams(&f).await;
    f.start_operator(false);
    f.create_request("probe", static_spec(6, "1Gbps")).await;
    f.wait_request("probe", 20, |sr| phase(sr) == Some(Phase::Provisioning)).await;
    let during = f.requests().get("slow").await.unwrap();
    assert_eq!(phase(&during), Some(Phase::Provisioning));
    assert_eq!(allocations(&during), allocations(&before), "ports kept across the restart");
    // The kubelet's relays become ready (a touch makes the stand-in kubelet look again).
    f.kubelet.set_broken(&[]);
    for pod in f.pods().list(&Default::default()).await.unwrap().items {
        let touch = json!({"metadata": {"annotations": {"test/touch": "1"}}});
        f.pods().patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    }
    let ready = f.wait_request("slow", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    assert_eq!(allocations(&ready), allocations(&before));
    let selector = format!("scistream.io/stream-id={}", id(5));
    let now = f.pods().list(&kube::api::ListParams::default().labels(&selector)).await.unwrap().items;
    assert_eq!(now.iter().map(|p| p.uid()).collect::<Vec<_>>(), vec![pods[0].uid()], "the same relay pod");
    assert_holdings_match_live_streams(&f).await;
    for (name, n) in [("slow", 5), ("probe", 6)] {
        f.requests().delete(name, &DeleteParams::default()).await.unwrap();
        f.assert_released(name, &id(n)).await;
    }
    f.shutdown().await;
}
