//! Traffic patterns through one stream between the two embedded facilities (s2ds relays,
//! network namespaces as root, loopback addresses otherwise): striping over both gateway
//! nodes, the reserved rate honoured, a consumer that reconnects, many short-lived
//! connections. Each checks the bytes at both ends and that `release` leaves nothing.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use anyhow::{Context as _, ensure};
use scistream_e2e::{
    stream::{self, StreamOptions},
    workload::{self, Pattern},
    world::{self, CONSUMER_HOST, World},
};
use tokio::io::AsyncReadExt as _;

/// Starts a world with `opts`, runs `scenario` in it, shuts it down, and fails the test on
/// the scenario's error.
macro_rules! in_world {
    ($opts:expr, |$w:ident| $scenario:expr) => {{
        let $w = World::start(&$opts).await.expect("both facilities start");
        let result: anyhow::Result<_> = async { $scenario }.await;
        $w.shutdown().await;
        result.unwrap_or_else(|e| panic!("{e:#}"))
    }};
}

/// The gateway nodes a side's reservation uses.
fn nodes_used(side: &scistream_api::StreamRequest) -> BTreeSet<String> {
    side.status.iter().flat_map(|s| &s.allocations).filter(|a| !a.ports.is_empty()).map(|a| a.node.clone()).collect()
}

scistream_e2e::both_relay_models!(
    /// Six connections on gateways with five ports per node (a relay pod takes one for its
    /// health listener, shared relays one for their metrics): no node can hold the stream,
    /// so both nodes of each facility relay a share of it.
    striping_over_two_gateway_nodes,
    striping_over_two_gateway_nodes_on_shared_relays,
    striping
);

async fn striping(mut opts: world::Options) {
    if world::embedded_only("gateways with five ports per node") {
        return;
    }
    opts.port_range = (5100, 5104);
    let shared = opts.shared_relays();
    let so = StreamOptions::new("striped", 24 << 20, 6, "20Gbps", "MutualTLS").unwrap();
    in_world!(opts, |w| {
        let ready = stream::setup(&w, &so).await?;
        for (facility, side) in ready.sides.iter().enumerate() {
            let nodes = nodes_used(side);
            ensure!(nodes.len() == 2, "facility {facility} should stripe over both nodes, uses {nodes:?}");
            let pods = stream::relay_pods(&w, facility, &ready.created.stream_id).await?;
            let on: BTreeSet<String> = pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
            let expected = if shared { BTreeSet::new() } else { nodes.clone() };
            ensure!(on == expected, "facility {facility}: relay pods on {on:?}, reservation on {nodes:?}");
        }
        let hosts: BTreeSet<_> = ready.targets.iter().map(SocketAddr::ip).collect();
        ensure!(hosts.len() == 2, "the consumer's listeners should be on both nodes: {:?}", ready.targets);
        let moved = stream::transfer(&w, ready.producer, &ready.targets, so.bytes).await?;
        ensure!(moved.received.len() == 6 && moved.bytes() == so.bytes, "moved {:?}", moved.received);
        stream::release(&w, &so, &ready.created.stream_id).await
    });
}

scistream_e2e::both_relay_models!(
    /// A stream reserving 400 Mbit/s through s2ds relays takes at least the time that rate
    /// allows (less 15% for the token bucket's burst and timing); only this upper bound on
    /// throughput is asserted, never a lower one.
    rate_limit_honoured,
    rate_limit_honoured_on_shared_relays,
    rate_limit
);

async fn rate_limit(opts: world::Options) {
    let so = StreamOptions::new("limited", 32 << 20, 4, "400Mbps", "MutualTLS").unwrap();
    let seconds = in_world!(opts, |w| {
        let ready = stream::setup(&w, &so).await?;
        let moved = stream::transfer(&w, ready.producer, &ready.targets, so.bytes).await?;
        stream::release(&w, &so, &ready.created.stream_id).await?;
        Ok(moved.seconds)
    });
    let floor = so.bytes as f64 * 8.0 / 400e6 * 0.85;
    println!("{} bytes at 400Mbps took {seconds:.2}s (at least {floor:.2}s allowed)", so.bytes);
    assert!(seconds >= floor, "{} bytes took {seconds:.3}s, faster than 400 Mbit/s allows ({floor:.3}s)", so.bytes);
}

scistream_e2e::both_relay_models!(
    /// The consumer application reads 1 MiB of a connection, drops it, and connects again
    /// through the same listener. The producer application serves every connection the same
    /// 64 MiB payload: the dropped connection is cut short at the producer (the relays carry
    /// the drop upstream), the new one arrives whole and verified.
    consumer_reconnects,
    consumer_reconnects_on_shared_relays,
    reconnects
);

async fn reconnects(opts: world::Options) {
    const BYTES: u64 = 64 << 20;
    const SEED: u64 = 42;
    let so = StreamOptions::new("reconnect", BYTES, 1, "20Gbps", "MutualTLS").unwrap();
    in_world!(opts, |w| {
        let ready = stream::setup(&w, &so).await?;
        let producer = tokio::spawn(workload::serve(ready.producer, 2, BYTES, SEED, Duration::from_secs(120)));
        let target = ready.targets[0];
        let mut first = w.connect(CONSUMER_HOST, target).await.context("first connection")?;
        let mut part = vec![0u8; 1 << 20];
        first.read_exact(&mut part).await.context("reading the first MiB")?;
        let mut want = vec![0u8; part.len()];
        Pattern::new(SEED).fill(&mut want);
        ensure!(part == want, "the first MiB of the dropped connection is not the payload's");
        drop(first);
        let again = w.connect(CONSUMER_HOST, target).await.context("reconnecting")?;
        let received = workload::receive(again).await.context("reading the new connection")?;
        let expected = workload::expected(BYTES, SEED);
        ensure!(received == expected, "the new connection carried {received:?}, expected {expected:?}");
        let served = producer.await??;
        ensure!(served.len() == 2, "the producer saw {} connections", served.len());
        ensure!(served[0].is_err(), "the dropped connection was not cut short at the producer: {:?}", served[0]);
        ensure!(served[1] == Ok(expected), "the producer's second connection: {:?}", served[1]);
        stream::release(&w, &so, &ready.created.stream_id).await
    });
}

scistream_e2e::both_relay_models!(
    /// 200 connections, at most 16 at a time, alternating over the stream's two listeners,
    /// each carrying 128 KiB verified at both ends.
    many_short_lived_connections,
    many_short_lived_connections_on_shared_relays,
    short_lived
);

async fn short_lived(opts: world::Options) {
    const COUNT: usize = 200;
    const BYTES: u64 = 128 << 10;
    const SEED: u64 = 7;
    let so = StreamOptions::new("short-lived", BYTES * COUNT as u64, 2, "20Gbps", "MutualTLS").unwrap();
    in_world!(opts, |w| {
        let ready = stream::setup(&w, &so).await?;
        let producer = tokio::spawn(workload::serve(ready.producer, COUNT, BYTES, SEED, Duration::from_secs(300)));
        let targets = ready.targets.clone();
        let received = workload::fetch_many(COUNT, 16, |i| w.connect(CONSUMER_HOST, targets[i % targets.len()]))
            .await
            .context("consumer application")?;
        let expected = workload::expected(BYTES, SEED);
        let bad = received.iter().filter(|t| **t != expected).count();
        ensure!(
            received.len() == COUNT && bad == 0,
            "{bad} of {} connections differ from {expected:?}",
            received.len()
        );
        let served = producer.await??;
        let cut: Vec<_> = served.iter().filter(|s| **s != Ok(expected.clone())).collect();
        ensure!(served.len() == COUNT && cut.is_empty(), "producer: {} served, not whole: {cut:?}", served.len());
        stream::release(&w, &so, &ready.created.stream_id).await
    });
}
