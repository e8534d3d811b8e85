//! SciStream 1.x's flow across the two facilities, driven by an unchanged-style 1.x client in
//! Python `grpcio` (not our plugin): `req` on the producer facility's control endpoint and on
//! the consumer's, each application controller's `hello`, `update` exchanging the listeners as
//! `s2uc` does, bytes through the real relays verified at both ends, and `release` on both
//! leaving nothing. The client is user `scientist`, authenticated by the endpoints'
//! `kubernetes` mode (TokenReview, SubjectAccessReview on a RoleBinding).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::ListParams};
use scistream_api::{Phase, StreamRequest, keys};
use scistream_e2e::{
    faults, legacy, stream,
    world::{self, USER_NS, World},
};
use serde_json::{Value, json};

/// The stream's uid, the same in both facilities (as 1.x clients use it).
const UID: &str = "5e0c1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b";
const CONNECTIONS: usize = 3;
const BYTES: u64 = 3 * (8 << 20);
const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_1x_client_flow_across_both_facilities() {
    if world::embedded_only("a user token its API servers issue") {
        return;
    }
    let opts = world::Options::for_tests("S2ds").expect("s2ds is built");
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("control-endpoint-py");
    let python = tokio::task::spawn_blocking(move || legacy::python(&cache)).await.unwrap().expect("grpcio venv");
    let w = World::start(&opts).await.expect("both facilities start");
    let result = scenario(&w, python, &opts.root).await;
    w.shutdown().await;
    if let Err(e) = result {
        panic!("{e:#}");
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

async fn scenario(w: &World, python: PathBuf, root: &std::path::Path) -> anyhow::Result<()> {
    legacy::grant_scientist(w).await?;
    let client = legacy::Client::new(w, python, root).await?;
    // The producer application serves before its controller's Hello names its endpoints.
    let (producer, endpoints) = stream::app_listeners(w, CONNECTIONS).await?;
    // 1.x sends the rate in kb/s: 10 Gbit/s, so that no rate limit slows the transfer.
    let config = json!({"num_conn": CONNECTIONS, "rate": 10_000_000, "prod_listeners": endpoints});
    let seen = client.step("setup", UID, config).await?;

    // What the 1.x client was told.
    let (p, c) = (&seen["producer"], &seen["consumer"]);
    ensure!(p["hello"]["message"] == "Sending Prod listeners...", "{seen:#}");
    ensure!(c["hello"]["message"] == "Sending listeners...", "{seen:#}");
    ensure!(
        strings(&p["prod_listeners"]) == endpoints,
        "the producer's req reply carries its Hello's endpoints: {seen:#}"
    );
    let (prod_listeners, cons_listeners) = (strings(&p["listeners"]), strings(&c["listeners"]));
    ensure!(prod_listeners.len() == CONNECTIONS && cons_listeners.len() == CONNECTIONS, "{seen:#}");
    ensure!(strings(&c["hello"]["listeners"]) == cons_listeners, "consumer Hello and req replies agree: {seen:#}");

    // What it made in each facility: StreamRequests in the users' namespace, wired as told.
    let (prod_name, cons_name) = (format!("legacy-{UID}-prod"), format!("legacy-{UID}-cons"));
    let ready = |sr: &StreamRequest| faults::phase(sr) == Some(Phase::Ready);
    let prod = faults::wait_request(w, 0, &prod_name, LONG, "Ready", ready).await?;
    let cons = faults::wait_request(w, 1, &cons_name, LONG, "Ready", ready).await?;
    ensure!(prod.spec.targets.as_ref() == Some(&endpoints), "update PROD set the targets: {:?}", prod.spec.targets);
    ensure!(
        cons.spec.remote_listeners.as_ref() == Some(&prod_listeners),
        "update CONS set the producer facility's listeners: {:?}",
        cons.spec.remote_listeners
    );
    let listeners = |sr: &StreamRequest| sr.status.as_ref().map(|s| s.listeners.clone()).unwrap_or_default();
    ensure!(listeners(&prod) == prod_listeners && listeners(&cons) == cons_listeners, "replies match the status");

    // The consumer application connects where its controller's Hello said.
    let targets: Vec<std::net::SocketAddr> =
        cons_listeners.iter().map(|l| l.parse().with_context(|| format!("listener {l}"))).collect::<Result<_, _>>()?;
    let moved = stream::transfer(w, producer, &targets, BYTES).await?;
    ensure!(moved.bytes() == BYTES, "verified {} of {BYTES} bytes", moved.bytes());
    eprintln!("1.x flow: {} bytes over {CONNECTIONS} connections verified in {:.2}s", moved.bytes(), moved.seconds);

    let released = client.step("release", UID, json!({})).await?;
    ensure!(released == json!({"producer": "OK", "consumer": "OK"}), "{released}");
    for (i, name) in [(0, &prod_name), (1, &cons_name)] {
        faults::wait_gone(w, i, name, LONG).await?;
    }
    stream::assert_nothing_left(w, UID).await?;
    // The Hello-key Secrets the endpoints made go with their StreamRequests.
    let lp = ListParams::default().labels(&format!("{}={UID}", keys::LABEL_STREAM_ID));
    for f in &w.facilities {
        let secrets: Api<Secret> = Api::namespaced(f.client.clone(), USER_NS);
        let deadline = std::time::Instant::now() + LONG;
        while !secrets.list(&lp).await?.items.is_empty() {
            ensure!(std::time::Instant::now() < deadline, "{}: the Hello-key Secret is left", f.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
