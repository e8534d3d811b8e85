//! In-use Gateways are not deleted out from under their streams (issue 21): deleting a
//! Gateway that streams hold keeps it (finalizer `gateways.scistream.io/in-use`), says which
//! streams keep it, admits no new stream, leaves the streams and their relays running until
//! they are released, and then lets it go; a Gateway nobody uses goes at once. And a gateway
//! node's new address moves the listeners on it only through `ListenersMoved`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use scistream_api::{Gateway, Phase, StreamRequest, conditions, keys};
use scistream_testkit::{Facility, GATEWAY_NS, USER_NS, gateway_spec, wait_until};
use serde_json::json;

fn request(id: &str) -> serde_json::Value {
    json!({"streamId": id, "role": "Producer", "gateway": "dtn", "numConnections": 1, "rate": "1Gbps",
           "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]})
}

fn is_ready(sr: &StreamRequest) -> bool {
    sr.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
}

fn ready_condition(g: &Gateway) -> Option<(String, String, String)> {
    let c = conditions::find(&g.status.as_ref()?.conditions, conditions::types::READY)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

const A: &str = "aaaaaaaa-2a4f-4e8b-9c0d-1e2f3a4b5c6d";
const B: &str = "bbbbbbbb-2a4f-4e8b-9c0d-1e2f3a4b5c6d";
const C: &str = "cccccccc-2a4f-4e8b-9c0d-1e2f3a4b5c6d";

#[tokio::test]
async fn a_gateway_in_use_outlives_its_deletion_until_its_streams_are_released() {
    let mut f = Facility::start("inuse").await;
    f.start_operator(false);
    let gateways: Api<Gateway> = Api::all(f.client.clone());
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(20, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    assert!(f.gateway().await.finalizers().is_empty(), "no stream, no finalizer");

    f.create_request("a", request(A)).await;
    f.create_request("b", request(B)).await;
    f.wait_request("a", 20, is_ready).await;
    f.wait_request("b", 20, is_ready).await;
    f.wait_gateway(20, |g| g.finalizers().iter().any(|x| x == keys::FINALIZER_GATEWAY)).await;
    let relays_before = f.pods().list(&Default::default()).await.unwrap().items.len();

    // Deleted while in use: kept, Ready False/InUse naming both streams.
    gateways.delete("dtn", &Default::default()).await.unwrap();
    let g = f.wait_gateway(20, |g| ready_condition(g).is_some_and(|(_, r, _)| r == "InUse")).await;
    assert!(g.metadata.deletion_timestamp.is_some());
    let (status, _, message) = ready_condition(&g).unwrap();
    assert_eq!(status, "False");
    let both = format!("2 stream(s) hold ports on it: {USER_NS}/a, {USER_NS}/b;");
    assert!(message.contains(&both), "{message}");

    // A new request waits; the held streams stay Ready with their relays.
    f.create_request("c", request(C)).await;
    let c = f
        .wait_request("c", 20, |sr| {
            sr.status.as_ref().is_some_and(|s| {
                conditions::find(&s.conditions, conditions::types::READY).is_some_and(|c| c.reason == "GatewayNotReady")
            })
        })
        .await;
    let waiting = conditions::find(&c.status.unwrap_or_default().conditions, conditions::types::READY).unwrap().clone();
    assert!(waiting.message.contains("being deleted"), "{waiting:?}");
    assert!(is_ready(&f.requests().get("a").await.unwrap()) && is_ready(&f.requests().get("b").await.unwrap()));
    assert_eq!(f.pods().list(&Default::default()).await.unwrap().items.len(), relays_before, "relays keep running");

    // Released one by one: the message follows, and the last release lets the Gateway go.
    f.requests().delete("a", &Default::default()).await.unwrap();
    f.wait_gone("a", 30).await;
    let g = f.wait_gateway(20, |g| ready_condition(g).is_some_and(|(_, _, m)| m.contains("1 stream(s)"))).await;
    assert!(ready_condition(&g).unwrap().2.contains(&format!("{USER_NS}/b;")));
    f.requests().delete("b", &Default::default()).await.unwrap();
    f.wait_gone("b", 30).await;
    wait_until(Duration::from_secs(20), async || gateways.get_opt("dtn").await.unwrap().is_none()).await;
    let c = f
        .wait_request("c", 20, |sr| {
            sr.status.as_ref().is_some_and(|s| {
                conditions::find(&s.conditions, conditions::types::READY).is_some_and(|c| c.reason == "GatewayNotFound")
            })
        })
        .await;
    assert!(c.status.unwrap_or_default().allocations.is_empty(), "nothing was ever held for c");
    f.requests().delete("c", &Default::default()).await.unwrap();
    f.wait_gone("c", 30).await;

    // A Gateway nobody uses goes at once.
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(20, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    gateways.delete("dtn", &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(5), async || gateways.get_opt("dtn").await.unwrap().is_none()).await;
    f.shutdown().await;
}

#[tokio::test]
async fn a_nodes_new_address_moves_its_listeners_through_listeners_moved() {
    let mut f = Facility::start("readdress").await;
    f.start_operator(false);
    f.apply_gateway(gateway_spec(5119)).await;
    f.wait_gateway(20, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f.create_request("a", request(A)).await;
    let sr = f.wait_request("a", 20, is_ready).await;
    let st = sr.status.unwrap_or_default();
    let node = st.allocations[0].node.clone();
    let before = st.listeners.clone();
    let nodes: Api<Node> = Api::all(f.client.clone());
    let old = nodes.get(&node).await.unwrap().annotations()[keys::ANNOTATION_WAN_ADDRESS].clone();
    let new = "203.0.113.77";
    assert_ne!(old, new);
    let patch = json!({"metadata": {"annotations": {keys::ANNOTATION_WAN_ADDRESS: new}}});
    nodes.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();

    let moved = f
        .wait_request("a", 20, |sr| {
            sr.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::types::LISTENERS_MOVED))
        })
        .await;
    let st = moved.status.unwrap_or_default();
    let c = conditions::find(&st.conditions, conditions::types::LISTENERS_MOVED).unwrap();
    assert_eq!(c.reason, "AddressChanged");
    assert!(st.listeners.iter().all(|l| l.starts_with(new)), "{:?}", st.listeners);
    assert!(c.message.contains(&before.join(",")) && c.message.contains(&st.listeners.join(",")), "{}", c.message);
    assert!(c.message.contains("kubectl scistream update a"), "{}", c.message);
    // The relay binds the new address.
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), GATEWAY_NS);
    wait_until(Duration::from_secs(20), async || {
        let lp = kube::api::ListParams::default().labels(&format!("{}={A}", keys::LABEL_STREAM_ID));
        let cm = cms.list(&lp).await.unwrap().items;
        cm.iter().flat_map(|c| c.data.iter().flatten()).any(|(_, v)| v.contains(new))
    })
    .await;
    // A Warning event says so, once.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(f.client.clone(), USER_NS);
    wait_until(Duration::from_secs(10), async || {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("AddressChanged"))
    })
    .await;
    f.requests().delete("a", &Default::default()).await.unwrap();
    f.assert_released("a", A).await;
    f.shutdown().await;
}
