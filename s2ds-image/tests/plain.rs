//! Plain mode through the real binary: integrity, half-close, failures, fds.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1 << 20;

fn plain(targets: &[String], listeners: usize) -> String {
    let l: Vec<String> = (0..listeners).map(|i| format!("127.0.0.{}:0", i + 1)).collect();
    format!(
        "streamId: plain-test\nmode: plain\nlisteners: [{}]\ntargets: [{}]\nmetricsAddress: 127.0.0.1:0\ndrainSeconds: 5\n",
        l.join(", "),
        targets.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_plain_with_parallel_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (target, mut rx) = sink_target(7, 64 * MIB).await;
    let s2ds = S2ds::start(dir.path(), "s", &plain(&[target.to_string()], 1)).await;
    let addr = s2ds.listeners().await[0];
    // 4 x (192 MiB up + 64 MiB down) = 1 GiB
    transfer_checked(addr, &mut rx, 4, 192 * MIB, 64 * MIB, 7).await;
    let up = s2ds
        .metric("s2ds_bytes_total{stream=\"plain-test\",listener=\"127.0.0.1:0\",direction=\"client_to_target\"}")
        .await;
    assert_eq!(up as u64, 4 * 192 * MIB);
    s2ds.wait_metric("s2ds_connection_duration_seconds_count", 4.0).await;
    assert_eq!(s2ds.metric("s2ds_connections_open").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_propagates_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let s2ds = S2ds::start(dir.path(), "s", &plain(&[target.to_string()], 1)).await;
    let addr = s2ds.listeners().await[0];

    half_close_both_ways(addr, &l).await;
}

async fn refusal(addr: std::net::SocketAddr) -> Result<usize, std::io::ErrorKind> {
    refusal_after(addr, b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_down_is_counted_and_server_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    // A port that nothing listens on: bind then drop.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (alive, mut rx) = sink_target(1, 1000).await;
    let s2ds = S2ds::start(dir.path(), "s", &plain(&[dead.to_string(), alive.to_string()], 2)).await;
    let addrs = s2ds.listeners().await;
    for _ in 0..3 {
        assert_eq!(refusal(addrs[0]).await, Err(std::io::ErrorKind::ConnectionReset));
    }
    s2ds.wait_metric(
        "s2ds_connections_refused_total{stream=\"plain-test\",listener=\"127.0.0.1:0\",reason=\"target-unreachable\"}",
        3.0,
    )
    .await;
    // The other listener still works.
    transfer_checked(addrs[1], &mut rx, 2, 100_000, 1000, 1).await;
    wait_until("the warning", std::time::Duration::from_secs(10), || s2ds.log_contains("target unreachable")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_targets_refuses_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let s2ds = S2ds::start(dir.path(), "s", &plain(&[], 1)).await;
    let addr = s2ds.listeners().await[0];
    assert_eq!(refusal(addr).await, Err(std::io::ErrorKind::ConnectionReset));
    s2ds.wait_metric(
        "s2ds_connections_refused_total{stream=\"plain-test\",listener=\"127.0.0.1:0\",reason=\"no-target\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_short_connections_leak_no_fds() {
    let dir = tempfile::tempdir().unwrap();
    let (target, mut rx) = sink_target(3, 10).await;
    let s2ds = S2ds::start(dir.path(), "s", &plain(&[target.to_string()], 1)).await;
    let addr = s2ds.listeners().await[0];
    // Warm up (runtime threads, lazily opened descriptors).
    transfer_checked(addr, &mut rx, 4, 100, 10, 3).await;
    let before = s2ds.open_fds();
    for batch in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..50u64 {
            tasks.push(tokio::spawn(async move {
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(&(batch * 50 + i).to_le_bytes()).await.unwrap();
                c.shutdown().await.unwrap();
                let mut b = Vec::new();
                c.read_to_end(&mut b).await.unwrap();
                assert_eq!(b.len(), 10);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    for _ in 0..1000 {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    }
    s2ds.wait_metric("s2ds_connection_duration_seconds_count", 1004.0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = s2ds.open_fds();
        if now <= before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "fds: {before} before, {now} after 1000 connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s2ds.metric("s2ds_connections_open").await, 0.0);
}
