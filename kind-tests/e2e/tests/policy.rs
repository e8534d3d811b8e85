//! A Gateway that protects its facility: the producer facility's Gateway serves only labelled
//! namespaces, MutualTLS streams, and targets on the producer application's host. A request
//! from a namespace without the label, a Plain request and a Hello naming a target outside the
//! allowed range are each refused with the rule named and nothing allocated; the stream the
//! policy allows carries verified bytes, and is released leaving nothing.

use std::net::IpAddr;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use scistream_api::Gateway;
use scistream_e2e::{
    stream,
    world::{self, PRODUCER_HOST, USER_NS},
};
use serde_json::json;

const BYTES: u64 = 8 << 20;
const LABEL: &str = "scistream.io/streams";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_refuses_what_the_facility_did_not_allow() {
    if world::embedded_only("a Gateway policy of the test's own") {
        return;
    }
    let opts = world::Options::for_tests("S2ds").unwrap();
    let w = world::World::start(&opts).await.expect("both facilities start");
    let result = scenario(&w).await;
    w.shutdown().await;
    result.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn scenario(w: &world::World) -> anyhow::Result<()> {
    let aps = &w.facilities[0];
    let gateways: Api<Gateway> = Api::all(aps.client.clone());
    let app = w.apps().address(PRODUCER_HOST)?;
    let host = match app {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    };
    // On loopback the application host shares its address range with the gateway nodes.
    let allow = if app.is_loopback() { json!(["Loopback", "GatewayNodes"]) } else { json!([]) };
    let policy = json!({"spec": {"policy": {
        "namespaceSelector": {"matchLabels": {LABEL: "allowed"}},
        "dataChannels": ["MutualTLS"],
        "targets": {"cidrs": [host], "allow": allow},
    }}});
    gateways.patch("dtn", &PatchParams::default(), &Patch::Merge(&policy)).await.context("set the policy")?;

    // A namespace the Gateway does not serve.
    let so = stream::StreamOptions::new("unlabelled", BYTES, 2, "1Gbps", "MutualTLS")?;
    refused(w, &so, "namespace science: its labels do not match the namespaceSelector").await?;
    let labelled = json!({"metadata": {"labels": {LABEL: "allowed"}}});
    Api::<Namespace>::all(aps.client.clone())
        .patch(USER_NS, &PatchParams::default(), &Patch::Merge(&labelled))
        .await
        .context("label the user namespace")?;

    // Plain, where the Gateway allows MutualTLS only.
    let so = stream::StreamOptions::new("plain", BYTES, 2, "1Gbps", "Plain")?;
    refused(w, &so, "dataChannel Plain: it allows MutualTLS (spec.policy.dataChannels)").await?;

    // Allowed: but a Hello naming a target outside the allowed range is refused and writes
    // nothing; the Hello with the application's own endpoints is taken.
    let so = stream::StreamOptions::new("allowed", BYTES, 2, "1Gbps", "MutualTLS")?;
    let created = stream::create(w, &so).await?;
    let (producer, addresses) = stream::app_listeners(w, so.connections).await?;
    let outside = vec!["203.0.113.250:7000".to_owned()];
    match stream::hello(w, &so, 0, &created.stream_id, &created.producer_key, "PROD", &outside).await {
        Err(e) if e.to_string().contains("not in targets.cidrs") => {}
        other => bail!("a Hello to a target outside targets.cidrs must be refused naming the rule, got {other:?}"),
    }
    let sr = Api::<scistream_api::StreamRequest>::namespaced(aps.client.clone(), USER_NS).get("allowed").await?;
    ensure!(
        sr.status.as_ref().is_some_and(|s| s.hello_time.is_none() && s.prod_listeners.is_empty()),
        "a refused Hello changed the producer's StreamRequest"
    );
    let told = stream::hello(w, &so, 0, &created.stream_id, &created.producer_key, "PROD", &addresses).await;
    told.context("the Hello with the application's endpoints")?;
    let told = stream::hello(w, &so, 1, &created.stream_id, &created.consumer_key, "CONS", &[]).await?;
    let sides = stream::wait_ready(w, &so.name, std::time::Duration::from_secs(120)).await?;
    let targets = stream::consumer_targets(&sides, &told)?;
    let moved = stream::transfer(w, producer, &targets, BYTES).await?;
    ensure!(moved.bytes() == BYTES, "{} of {BYTES} bytes verified", moved.bytes());
    stream::release(w, &so, &created.stream_id).await?;
    stream::assert_all_clean(w).await
}

/// `kubectl scistream create` fails naming the rule, and the producer's Gateway holds nothing.
async fn refused(w: &world::World, so: &stream::StreamOptions, rule: &str) -> anyhow::Result<()> {
    match stream::create(w, so).await {
        Err(e) if e.to_string().contains(rule) && e.to_string().contains("Gateway dtn's policy refuses") => {}
        other => bail!("{}: expected a refusal naming {rule:?}, got {other:?}", so.name),
    }
    let held = stream::holdings(&w.facilities[0].client).await?;
    ensure!(held.is_empty(), "{}: {held:?} held for a refused request", so.name);
    let gw = Api::<Gateway>::all(w.facilities[0].client.clone()).get("dtn").await?.status.unwrap_or_default();
    ensure!(gw.streams == 0 && gw.ports_in_use == 0, "{}: the Gateway counts streams for a refused request", so.name);
    Ok(())
}
