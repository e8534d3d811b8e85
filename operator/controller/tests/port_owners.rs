//! One owner per node port across Gateways (issue 21): a Gateway whose nodes and port range
//! overlap an older Gateway's is not Ready (reason `Conflict`, naming the older one and the
//! ports), admits nothing until it moves, and becomes Ready when it does; and the allocator
//! never hands out a port another Gateway holds on the same node, even when a range changed
//! under streams that hold ports.

use std::time::Duration;

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use scistream_api::{Gateway, Phase, StreamRequest, conditions};
use scistream_testkit::{Facility, GATEWAY_NS, open_policy, wait_until};
use serde_json::json;

fn ready(g: &Gateway) -> Option<(String, String, String)> {
    let c = conditions::find(&g.status.as_ref()?.conditions, conditions::types::READY)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn apply(f: &Facility, name: &str, range: (i32, i32)) {
    let gw: Gateway = serde_json::from_value(json!({"apiVersion": "scistream.io/v1alpha1", "kind": "Gateway",
        "metadata": {"name": name}, "spec": {"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "10Gbps",
        "podNamespace": GATEWAY_NS, "portRange": {"start": range.0, "end": range.1}, "policy": open_policy()}}))
    .unwrap();
    let api: Api<Gateway> = Api::all(f.client.clone());
    api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&gw)).await.unwrap();
}

/// Waits until Gateway `name`'s Ready condition has `status` and `reason`; returns its message.
async fn wait_ready(f: &Facility, name: &str, status: &str, reason: &str) -> String {
    let api: Api<Gateway> = Api::all(f.client.clone());
    let mut last = None;
    let reached = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let got = ready(&api.get(name).await.unwrap());
            if got.as_ref().is_some_and(|(s, r, _)| s == status && r == reason) {
                return got.map(|(_, _, m)| m).unwrap_or_default();
            }
            last = got;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    reached.unwrap_or_else(|_| panic!("Gateway {name} never {status}/{reason}; last {last:?}"))
}

fn request(gateway: &str, id: &str) -> serde_json::Value {
    json!({"streamId": id, "role": "Producer", "gateway": gateway, "numConnections": 1, "rate": "1Gbps",
           "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]})
}

fn is_ready(sr: &StreamRequest) -> bool {
    sr.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
}

/// (node, ports and health port) held by each stream on Gateway `name`, as its request
/// records them.
async fn held(f: &Facility, name: &str) -> Vec<(String, Vec<i32>)> {
    let reservations = f.holdings_on(name).await;
    reservations
        .into_iter()
        .flat_map(|r| r.nodes)
        .map(|a| (a.node, a.ports.iter().chain(&a.metrics_port).copied().collect()))
        .collect()
}

#[tokio::test]
async fn a_node_port_has_one_owner_across_gateways() {
    let mut f = Facility::start("prod").await;
    f.start_operator(false);
    apply(&f, "dtn", (5100, 5119)).await;
    wait_ready(&f, "dtn", "True", "GatewayReady").await;

    // A newer Gateway on the same nodes whose range overlaps: refused, naming the owner.
    apply(&f, "dtn-2", (5110, 5130)).await;
    let message = wait_ready(&f, "dtn-2", "False", "Conflict").await;
    assert!(message.contains("overlaps Gateway dtn's 5100-5119 (ports 5110-5119)"), "{message}");
    f.create_request("x", request("dtn-2", "11111111-2a4f-4e8b-9c0d-1e2f3a4b5c6d")).await;
    let x = f.wait_request("x", 20, |sr| sr.status.as_ref().is_some_and(|s| s.phase.is_some())).await;
    assert_ne!(x.status.and_then(|s| s.phase), Some(Phase::Ready), "nothing is admitted on a conflicting Gateway");
    assert!(held(&f, "dtn-2").await.is_empty());

    // Moved to a range of its own: Ready, and its streams are admitted (one per node).
    apply(&f, "dtn-2", (5120, 5130)).await;
    wait_ready(&f, "dtn-2", "True", "GatewayReady").await;
    f.wait_request("x", 20, is_ready).await;
    f.create_request("y", request("dtn-2", "22222222-2a4f-4e8b-9c0d-1e2f3a4b5c6d")).await;
    f.wait_request("y", 20, is_ready).await;
    let theirs = held(&f, "dtn-2").await;
    assert_eq!(theirs.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), [vec![5120, 5121], vec![5120, 5121]]);

    // The older Gateway's range moves over them: it keeps serving, the newer one is refused
    // again, and the older one never hands out the ports the newer one's streams still hold.
    apply(&f, "dtn", (5120, 5125)).await;
    let message = wait_ready(&f, "dtn-2", "False", "Conflict").await;
    assert!(message.contains("overlaps Gateway dtn's 5120-5125"), "{message}");
    wait_ready(&f, "dtn", "True", "GatewayReady").await;
    f.create_request("z", request("dtn", "33333333-2a4f-4e8b-9c0d-1e2f3a4b5c6d")).await;
    f.wait_request("z", 20, is_ready).await;
    let ours = held(&f, "dtn").await;
    assert_eq!(ours.len(), 1, "{ours:?}");
    for (node, ports) in &ours {
        let clash: Vec<&i32> =
            theirs.iter().filter(|(n, _)| n == node).flat_map(|(_, p)| p).filter(|p| ports.contains(p)).collect();
        assert!(clash.is_empty(), "dtn handed out {clash:?} on {node}, held through dtn-2; dtn holds {ports:?}");
        assert_eq!(ports, &[5122, 5123], "the lowest ports free of both Gateways");
    }
    // Streams already admitted on the refused Gateway keep their ports.
    wait_until(Duration::from_secs(5), || async { held(&f, "dtn-2").await == theirs }).await;
}
