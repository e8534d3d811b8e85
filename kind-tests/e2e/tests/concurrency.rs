//! Ten streams at once between the two embedded facilities (s2ds relays, network namespaces
//! as root, loopback addresses otherwise): ten `kubectl scistream create` runs in parallel,
//! ten producer and consumer applications, every stream's bytes verified at both ends, all
//! released in parallel, and nothing left: no StreamRequest, pod, Secret or ConfigMap, no
//! port or bandwidth held in either Gateway's status.

use std::collections::BTreeSet;

use anyhow::{Context as _, ensure};
use futures::future::try_join_all;
use scistream_e2e::{
    stream::{self, StreamOptions},
    world::{self, World},
};

const STREAMS: usize = 10;
/// Bytes per stream.
const BYTES: u64 = 8 << 20;

scistream_e2e::both_relay_models!(ten_concurrent_streams, ten_concurrent_streams_on_shared_relays, concurrent);

async fn concurrent(opts: world::Options) {
    let w = World::start(&opts).await.expect("both facilities start");
    let mut result = scenario(&w).await;
    if let Err(e) = result {
        result = Err(e.context(format!("state of both facilities:{}", stream::describe(&w).await)));
    }
    w.shutdown().await;
    result.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn scenario(w: &World) -> anyhow::Result<()> {
    // 1 to 3 connections each, 5 Gbit/s each: 50 of the gateways' 100 Gbit/s.
    let streams = (0..STREAMS)
        .map(|i| StreamOptions::new(&format!("concurrent-{i}"), BYTES, i % 3 + 1, "5Gbps", "MutualTLS"))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Every setup runs to its end (no cancelling the others at the first failure).
    let ready = futures::future::join_all(
        streams
            .iter()
            .map(|so| async move { stream::setup(w, so).await.with_context(|| format!("setting up {}", so.name)) }),
    )
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    let ids: BTreeSet<&str> = ready.iter().map(|r| r.created.stream_id.as_str()).collect();
    ensure!(ids.len() == STREAMS, "stream ids are not distinct: {ids:?}");
    let listeners: BTreeSet<_> = ready.iter().flat_map(|r| r.targets.iter().copied()).collect();
    let wanted: usize = streams.iter().map(|s| s.connections).sum();
    ensure!(listeners.len() == wanted, "streams share consumer listeners: {} distinct of {wanted}", listeners.len());
    assert_no_port_held_twice(w).await?;

    let ids: Vec<String> = ready.iter().map(|r| r.created.stream_id.clone()).collect();
    // Each stream its own patterns (seeds 100 i + 1...), so bytes crossing streams would show.
    let moved = try_join_all(ready.into_iter().zip(&streams).enumerate().map(|(i, (r, so))| async move {
        let seed = 100 * i as u64 + 1;
        stream::transfer_seeded(w, r.producer, &r.targets, so.bytes, seed)
            .await
            .with_context(|| format!("streaming {}", so.name))
    }))
    .await?;
    for (m, so) in moved.iter().zip(&streams) {
        let expected = so.bytes / so.connections as u64 * so.connections as u64;
        ensure!(
            m.received.len() == so.connections && m.bytes() == expected,
            "{}: {} connections carried {} bytes, expected {} and {expected}",
            so.name,
            m.received.len(),
            m.bytes(),
            so.connections
        );
    }
    let digests: BTreeSet<&str> = moved.iter().flat_map(|m| &m.received).map(|t| t.sha256.as_str()).collect();
    ensure!(digests.len() == wanted, "connections of different streams carried the same data");

    try_join_all(streams.iter().zip(&ids).map(|(so, id)| async move {
        stream::release(w, so, id).await.with_context(|| format!("releasing {}", so.name))
    }))
    .await?;
    stream::assert_all_clean(w).await
}

/// The requests on every Gateway record each port of a node at most once, and all ten streams
/// hold ports.
async fn assert_no_port_held_twice(w: &World) -> anyhow::Result<()> {
    for f in &w.facilities {
        let reservations = stream::holdings(&f.client).await?;
        ensure!(reservations.len() == STREAMS, "{}: {} reservations, expected {STREAMS}", f.name, reservations.len());
        let mut held = BTreeSet::new();
        for a in reservations.iter().flat_map(|r| &r.nodes) {
            for port in a.ports.iter().chain(&a.metrics_port) {
                ensure!(held.insert((a.node.clone(), *port)), "{}: port {port} on {} held twice", f.name, a.node);
            }
        }
    }
    Ok(())
}
