//! `testcluster-bench`: throughput of the embedded API server through a
//! real kube client over TLS. Not a timed test: it prints figures.
//!
//! ```text
//! cargo run --release -p scistream-testcluster --bin testcluster-bench
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;

const OBJECTS: usize = 10_000;
const CONCURRENCY: usize = 64;
const WATCHERS: usize = 10;
const WATCH_EVENTS: usize = 1_000;

fn cm(prefix: &str, i: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}-{i}")),
            labels: Some([("bench".to_string(), prefix.to_string())].into()),
            ..Default::default()
        },
        data: Some([("key".to_string(), "x".repeat(64))].into()),
        ..Default::default()
    }
}

async fn create_many(api: &Api<ConfigMap>, prefix: &str, n: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let obj = cm(prefix, i);
            async move { api.create(&PostParams::default(), &obj).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .context("creating objects")?;
    Ok(start.elapsed())
}

async fn watch_fan_out(api: &Api<ConfigMap>) -> anyhow::Result<Duration> {
    let rv = api.list(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default();
    let mut watchers = vec![];
    for _ in 0..WATCHERS {
        let stream = api.watch(&WatchParams::default().labels("bench=watch").timeout(120), &rv).await?;
        watchers.push(tokio::spawn(async move {
            let mut s = stream.boxed();
            let mut seen = 0;
            while seen < WATCH_EVENTS {
                match s.try_next().await {
                    Ok(Some(WatchEvent::Added(_))) => seen += 1,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            (seen, Instant::now())
        }));
    }
    let start = Instant::now();
    create_many(api, "watch", WATCH_EVENTS).await?;
    let mut last = start;
    for w in watchers {
        let (seen, at) = w.await?;
        anyhow::ensure!(seen == WATCH_EVENTS, "a watcher saw {seen} of {WATCH_EVENTS} events");
        last = last.max(at);
    }
    Ok(last - start)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cluster = scistream_testcluster::TestCluster::builder().name("bench").start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await?);

    let took = create_many(&api, "obj", OBJECTS).await?;
    println!(
        "create: {OBJECTS} ConfigMaps, {CONCURRENCY} in flight: {:.2} s = {:.0} creates/s",
        took.as_secs_f64(),
        OBJECTS as f64 / took.as_secs_f64()
    );

    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let list = api.list(&ListParams::default().labels("bench=obj")).await?;
        anyhow::ensure!(list.items.len() == OBJECTS, "listed {} objects", list.items.len());
        best = best.min(start.elapsed());
    }
    println!(
        "list: {OBJECTS} objects in one LIST (decoded by kube-rs): best of 5 = {:.1} ms",
        best.as_secs_f64() * 1e3
    );
    let start = Instant::now();
    let sel = api.list(&ListParams::default().labels("bench=none")).await?;
    println!(
        "list with a label selector matching 0 of {OBJECTS}: {:.1} ms ({} items)",
        start.elapsed().as_secs_f64() * 1e3,
        sel.items.len()
    );

    let took = watch_fan_out(&api).await?;
    println!(
        "watch fan-out: {WATCH_EVENTS} events to {WATCHERS} watchers: all delivered {:.2} s after the first create ({:.0} deliveries/s)",
        took.as_secs_f64(),
        (WATCH_EVENTS * WATCHERS) as f64 / took.as_secs_f64()
    );
    cluster.shutdown().await;
    Ok(())
}
