//! SciStream 1.x streams at the rate `s2uc` sends: one world (two facilities, real s2ds relays,
//! network namespaces as root), and per case a stream made with the Python `grpcio` replay of
//! `s2uc inbound-request` and `outbound-request` (5 connections, as s2uc's default), the same
//! transfer through it timed, then `release`. The cases: rate 10000 kb/s (s2uc's default,
//! which a user who changes nothing sends) and rate unset (0). Prints, per case, the time, the
//! throughput, what each side's status says of the rate and what each Gateway reserved.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use scistream_api::Phase;
use serde_json::json;

use crate::{
    faults,
    legacy::{self, Client, S2ucStream, code},
    stream,
    world::{Options, World},
};

/// What one case measured.
struct Measured {
    label: &'static str,
    seconds: f64,
    bytes: u64,
    enforcement: Vec<String>,
    reserved_bps: Vec<i64>,
}

/// Runs both cases in one world, `bytes` each (rounded up to whole connections); prints a table.
pub async fn rate(opts: &Options, python_cache: &Path, bytes: u64) -> anyhow::Result<()> {
    let cache = python_cache.to_owned();
    let python = tokio::task::spawn_blocking(move || legacy::python(&cache)).await??;
    let world = World::start(opts).await?;
    let result = cases(&world, opts, python, bytes).await;
    world.shutdown().await;
    let rows = result?;
    let mode = if opts.netns { "network namespaces" } else { "loopback" };
    println!("SciStream 1.x streams (s2uc replayed with grpcio), 5 connections, Plain, s2ds relays, {mode}:");
    for m in rows {
        println!(
            "  {:<36} {:>6.1} MiB in {:>7.2} s  {:>7.3} Gbit/s   status.rateEnforcement {:?}, reserved {:?} bit/s",
            m.label,
            m.bytes as f64 / (1u64 << 20) as f64,
            m.seconds,
            m.bytes as f64 * 8.0 / m.seconds.max(1e-9) / 1e9,
            m.enforcement,
            m.reserved_bps
        );
    }
    Ok(())
}

async fn cases(world: &World, opts: &Options, python: std::path::PathBuf, bytes: u64) -> anyhow::Result<Vec<Measured>> {
    legacy::grant_scientist(world).await?;
    let client = Client::new(world, python, &opts.root).await?;
    let connections = 5;
    let bytes = bytes.div_ceil(connections as u64) * connections as u64;
    let mut rows = Vec::new();
    for (i, (label, rate)) in
        [("rate 10000 kb/s (s2uc's default)", 10_000), ("rate unset (0)", 0)].into_iter().enumerate()
    {
        let uid = format!("be0c1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a{i:02x}");
        let (producer, endpoints) = stream::app_listeners(world, connections).await?;
        let s = S2ucStream {
            uid: &uid,
            num_conn: connections,
            rate,
            endpoints: &endpoints,
            consumer_at: "consumer",
            wait: 60,
        };
        let (_, consumer) = client.s2uc_stream(&s).await?;
        let names = [format!("legacy-{uid}-prod"), format!("legacy-{uid}-cons")];
        let ready = |sr: &scistream_api::StreamRequest| faults::phase(sr) == Some(Phase::Ready);
        for (f, name) in names.iter().enumerate() {
            faults::wait_request(world, f, name, Duration::from_secs(120), "Ready", ready).await?;
        }
        let targets: Vec<std::net::SocketAddr> =
            consumer.iter().map(|l| l.parse().with_context(|| format!("listener {l}"))).collect::<Result<_, _>>()?;
        let moved = stream::transfer_seeded(world, producer, &targets, bytes, 1 + 10 * i as u64).await?;
        let seconds = moved.seconds;
        if moved.bytes() != bytes {
            bail!("{label}: verified {} of {bytes} bytes", moved.bytes());
        }
        let (mut enforcement, mut reserved_bps) = (Vec::new(), Vec::new());
        for (f, name) in names.iter().enumerate() {
            let sr = legacy::raw_request(world, f, name).await?;
            enforcement.push(sr["status"]["rateEnforcement"].as_str().unwrap_or("(absent)").to_owned());
            let held = crate::stream::holdings(&world.facilities[f].client).await?;
            reserved_bps.extend(held.iter().filter(|r| r.stream_id == uid).map(|r| r.bandwidth_bps));
        }
        let released = client
            .actions(&uid, json!([{"do": "release", "at": "producer"}, {"do": "release", "at": "consumer"}]))
            .await?;
        if !released.iter().all(|r| code(r) == "OK") {
            bail!("{label}: release: {released:?}");
        }
        for (f, name) in names.iter().enumerate() {
            faults::wait_gone(world, f, name, Duration::from_secs(120)).await?;
        }
        rows.push(Measured { label, seconds, bytes, enforcement, reserved_bps });
    }
    Ok(rows)
}
