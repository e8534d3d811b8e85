//! One network shared by two clusters' agents (one per facility), as the
//! e2e suite runs two facilities on one machine.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use scistream_nodeagent::{Backoff, Network, NetworkMode, NodeAgent, Topology};
use scistream_testcluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_share_one_topology() {
    let mode = if nix::unistd::geteuid().is_root() { NetworkMode::Netns } else { NetworkMode::Loopback };
    let net = Arc::new(Network::build(&Topology::two_facilities(), mode).await.expect("network"));
    let mut envs = Vec::new();
    for (facility, node) in [("a", "gw-a"), ("b", "gw-b")] {
        let cluster = TestCluster::builder().name(format!("facility-{facility}")).start().await.expect("cluster");
        let client = cluster.client().await.expect("client");
        let agent = NodeAgent::builder(client.clone())
            .network(net.clone())
            .serve([node])
            .image("socat", "/usr/bin/socat")
            .backoff(Backoff::fast())
            .heartbeat(Duration::from_millis(500))
            .start()
            .await
            .expect("agent");
        let nodes: Api<Node> = Api::all(client.clone());
        let names: Vec<String> = nodes
            .list(&Default::default())
            .await
            .expect("nodes")
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert_eq!(names, vec![node.to_string()], "each cluster sees only its own gateway");
        let addr = net.address(node).expect("addr").to_string();
        let port = 5300;
        let name = format!("relay-{facility}");
        create_config(&client, &name, &format!("facility {facility}\n"), "C\n").await;
        let args = socat_args(&addr, port, "/etc/s2ds/config/config.yaml");
        create_pod(&client, &relay_pod(&name, node, "socat", &args, tcp_probe(&addr, port))).await;
        wait_pod(&client, &name, 30, "relay Ready", is_ready).await;
        envs.push((cluster, client, agent));
    }
    for (from, node, want) in [("app-a", "gw-a", "facility a\n"), ("app-b", "gw-b", "facility b\n")] {
        let to = std::net::SocketAddr::new(net.address(node).expect("addr").into(), 5300);
        assert_eq!(fetch(net.connect(from, to).await).await.as_deref(), Some(want));
    }
    for (_cluster, client, agent) in envs {
        agent.stop().await;
        let nodes: Api<Node> = Api::all(client);
        for n in nodes.list(&Default::default()).await.expect("nodes").items {
            assert_eq!(node_ready(&n).as_deref(), Some("False"));
        }
    }
    if mode == NetworkMode::Netns {
        let prefix = net.plan().prefix.clone();
        assert!(
            scistream_nodeagent::network::list_netns().await.iter().any(|n| n.starts_with(&prefix)),
            "agents leave a shared network alone"
        );
    }
    net.teardown().await;
}
