//! Debian relay programs under the agent, with the operator's argument shapes.

mod common;

use common::*;
use scistream_nodeagent::{NetworkMode, NodeSpec, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_relays_as_non_root_with_its_config_from_a_config_map() {
    if !std::path::Path::new("/usr/sbin/haproxy").exists() {
        eprintln!("skipped: no /usr/sbin/haproxy (kind-tests/setup.sh installs it)");
        return;
    }
    let env = start(Topology::new().node(NodeSpec::new("gw-a")), NetworkMode::Loopback).await;
    let addr = env.agent.network().address("gw-a").expect("address").to_string();
    let (front, back) = (port(24000), port(24600));
    let backend = tokio::net::TcpListener::bind((addr.as_str(), back)).await.expect("backend");
    let cfg = format!(
        "global\n  maxconn 64\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend f\n  bind {addr}:{front}\n  default_backend b\nbackend b\n  server s {addr}:{back}\n"
    );
    create_config(&env.client, "hap", &cfg, "C\n").await;
    let args: Vec<String> = ["-db", "-f", "/etc/s2ds/config/config.yaml"].iter().map(|s| s.to_string()).collect();
    create_pod(&env.client, &relay_pod("hap", "gw-a", "haproxy:3.0", &args, tcp_probe(&addr, front))).await;
    wait_pod(&env.client, "hap", 30, "haproxy Ready", is_ready).await;
    let mut c = tokio::net::TcpStream::connect((addr.as_str(), front)).await.expect("connect");
    c.write_all(b"ping").await.expect("write");
    c.shutdown().await.expect("shutdown");
    // The readiness probe's connections reach the backend too: skip empty ones.
    let got = eventually(10, "relayed bytes at the backend", || async {
        let (mut s, _) = tokio::time::timeout(std::time::Duration::from_secs(2), backend.accept()).await.ok()?.ok()?;
        let mut buf = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_end(&mut buf)).await.ok()?.ok()?;
        (!buf.is_empty()).then_some(buf)
    })
    .await;
    assert_eq!(got, b"ping");
    env.agent.stop().await;
}
