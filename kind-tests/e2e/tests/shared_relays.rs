//! Gateways on shared relays (`spec.s2ds.relayModel: Shared`): one `s2ds node` pod per gateway
//! node serves every stream, fed by the operator's relay channel. A stream relays with no pod
//! of its own, carries its bytes intact both ways, and on release leaves nothing: no object,
//! no reservation, and its listeners closed on the relays that stay.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use scistream_api::keys;
use scistream_e2e::{stream, world};

const BYTES: u64 = 32 << 20;

/// The shared relay pods of facility `i`.
async fn node_relays(w: &world::World, i: usize) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("{}={}", keys::LABEL_COMPONENT, keys::COMPONENT_SHARED_RELAY));
    Api::<Pod>::namespaced(w.facilities[i].client.clone(), world::GATEWAY_NS).list(&lp).await.unwrap().items
}

/// Facility `i`'s shared relay pods once there are `count` (the Gateway is Ready, its
/// status written, before its reconcile starts the relays), or what there is after 30 s.
async fn node_relays_when(w: &world::World, i: usize, count: usize) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pods = node_relays(w, i).await;
        if pods.len() == count || tokio::time::Instant::now() > deadline {
            return pods;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn through_shared_relays(data_channel: &str) {
    if world::embedded_only("Gateways on shared relays") {
        return;
    }
    let opts = world::Options::for_tests("S2ds").unwrap().with_shared_relays();
    let name = format!("shared-{}", data_channel.to_lowercase());
    let so = stream::StreamOptions::new(&name, BYTES, 4, "20Gbps", data_channel).unwrap();
    let w = world::World::start(&opts).await.expect("both facilities start");
    let result = async {
        for i in 0..2 {
            let pods = node_relays_when(&w, i, 2).await;
            anyhow::ensure!(pods.len() == 2, "facility {i}: one shared relay per gateway node, found {}", pods.len());
        }
        let ready = stream::setup(&w, &so).await?;
        for i in 0..2 {
            let own = stream::relay_pods(&w, i, &ready.created.stream_id).await?;
            anyhow::ensure!(own.is_empty(), "facility {i}: a stream on shared relays has no pod of its own");
        }
        let moved = stream::transfer(&w, ready.producer, &ready.targets, so.bytes).await?;
        stream::release(&w, &so, &ready.created.stream_id).await?;
        // Its listeners closed on the relays, which keep running.
        for target in &ready.targets {
            let refused = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(target)).await;
            anyhow::ensure!(matches!(refused, Ok(Err(_))), "{target} still accepts after release");
        }
        for i in 0..2 {
            anyhow::ensure!(node_relays(&w, i).await.len() == 2, "facility {i}: the shared relays stay");
        }
        Ok::<_, anyhow::Error>(moved.bytes())
    }
    .await;
    let described = if result.is_err() { stream::describe(&w).await } else { String::new() };
    w.shutdown().await;
    assert_eq!(result.unwrap_or_else(|e| panic!("{data_channel} through shared relays: {e:#}\n{described}")), so.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_through_shared_relays() {
    through_shared_relays("MutualTLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_through_shared_relays() {
    through_shared_relays("Plain").await;
}
