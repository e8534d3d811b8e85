//! `status.transfer`: every interval the operator reads the byte counters of each Ready
//! stream's s2ds relays and records them on the stream's StreamRequest, in both relay models
//! (its own relays' metrics ports, or its series, `stream="STREAM.ROLE"`, of the pages of the
//! shared relays of its nodes). Two streams at once, of different sizes: each side records
//! exactly its own stream's bytes, not the other's, nor their sum.
//!
//! The facilities run on loopback addresses: the operator reads the relays at the nodes' LAN
//! addresses, which a control plane reaches on a real cluster; on this machine the network
//! namespaces of worlds running in parallel reuse the same address blocks, so the operator
//! (in the root namespace) reaches nodes only on loopback.

use std::time::Duration;

use anyhow::Context as _;
use futures::future::try_join_all;
use scistream_e2e::{
    stream::{self, StreamOptions},
    world::{self, World},
};

scistream_e2e::both_relay_models!(
    each_stream_records_its_own_bytes,
    each_stream_records_its_own_bytes_on_shared_relays,
    scenario
);

async fn scenario(mut opts: world::Options) {
    opts.netns = false;
    let streams = [
        StreamOptions::new("counted-small", 3 << 20, 1, "5Gbps", "MutualTLS").unwrap(),
        StreamOptions::new("counted-large", 5 << 20, 2, "5Gbps", "Plain").unwrap(),
    ];
    let w = World::start(&opts).await.expect("both facilities start");
    let result = async {
        let ready = try_join_all(
            streams
                .iter()
                .map(|so| async { stream::setup(&w, so).await.with_context(|| format!("setting up {}", so.name)) }),
        )
        .await?;
        let ids: Vec<String> = ready.iter().map(|r| r.created.stream_id.clone()).collect();
        let moved = try_join_all(ready.into_iter().zip(&streams).enumerate().map(|(i, (r, so))| {
            let w = &w;
            async move { stream::transfer_seeded(w, r.producer, &r.targets, so.bytes, 10 * i as u64 + 1).await }
        }))
        .await?;
        for (m, so) in moved.iter().zip(&streams) {
            anyhow::ensure!(m.bytes() == so.bytes, "{}: moved {} of {} bytes", so.name, m.bytes(), so.bytes);
        }
        try_join_all(
            streams.iter().map(|so| stream::wait_transfer_recorded(&w, &so.name, so.bytes, Duration::from_secs(30))),
        )
        .await?;
        try_join_all(streams.iter().zip(&ids).map(|(so, id)| stream::release(&w, so, id))).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let described = if result.is_err() { stream::describe(&w).await } else { String::new() };
    w.shutdown().await;
    result.unwrap_or_else(|e| panic!("{e:#}\n{described}"));
}
