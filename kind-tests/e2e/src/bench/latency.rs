//! Setup latency with real relays: `kubectl scistream create` between the two embedded
//! facilities (network namespaces as root), both application controllers' Hellos sent as soon
//! as `create` returns with the listeners, and both sides Ready; then `release`. One stream at
//! a time, `n` times; p50 and p99 of each step and of the whole.

use std::time::{Duration, Instant};

use scistream_api::Phase;

use super::quantile;
use crate::{
    faults,
    stream::StreamOptions,
    world::{Options, World},
};

/// Runs `n` streams one after the other in one world; prints the figures.
pub async fn run(opts: &Options, n: usize) -> anyhow::Result<()> {
    let world = World::start(opts).await?;
    let result = streams(&world, n).await;
    world.shutdown().await;
    let steps = result?;
    println!(
        "setup latency over {n} streams (MutualTLS, 1 connection, s2ds relays {}, {}):",
        if opts.shared_relays() { "shared per node" } else { "per stream" },
        if opts.netns { "network namespaces" } else { "loopback" }
    );
    for (what, values) in &steps {
        println!(
            "  {what:<45} p50 {:>6.3} s  p99 {:>6.3} s",
            quantile(values, 0.5).as_secs_f64(),
            quantile(values, 0.99).as_secs_f64()
        );
    }
    Ok(())
}

async fn streams(world: &World, n: usize) -> anyhow::Result<Vec<(&'static str, Vec<Duration>)>> {
    let (mut create, mut hello, mut ready, mut total) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let so = StreamOptions::new(&format!("lat-{i}"), 0, 1, "1Gbps", "MutualTLS")?;
        let t0 = Instant::now();
        // Returns once both sides hold their reservations and listeners.
        let created = faults::create(world, &so, &["--timeout", "60s"]).await?;
        let t1 = Instant::now();
        faults::hellos(world, &so, &created).await?;
        let t2 = Instant::now();
        faults::wait_both(world, &so.name, Phase::Ready, Duration::from_secs(60)).await?;
        let t3 = Instant::now();
        create.push(t1 - t0);
        hello.push(t2 - t1);
        ready.push(t3 - t2);
        total.push(t3 - t0);
        faults::release(world, &so, &created.stream_id).await?;
    }
    Ok(vec![
        ("create (both sides reserved, listeners known)", create),
        ("both Hellos (kubectl scistream hello)", hello),
        ("after the Hellos until both sides Ready", ready),
        ("create → both sides Ready", total),
    ])
}
