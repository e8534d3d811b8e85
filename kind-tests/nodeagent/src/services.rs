//! Host services: addresses on this machine's loopback that the nodes' pods reach at the same
//! address, as pods with `hostNetwork` reach a Service through kube-proxy on a real node. On
//! loopback the nodes share this namespace and nothing is needed; in network namespaces a
//! forwarder listens at the address inside each node's namespace (whose loopback is its own)
//! and carries each connection to the address here.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::network::{Network, NetworkMode};

/// Forwards `addr` inside `member`'s namespace to `addr` here until `stop`.
pub async fn forward(network: Arc<Network>, member: String, addr: SocketAddr, mut stop: watch::Receiver<bool>) {
    if network.mode() != NetworkMode::Netns {
        return;
    }
    let listener = match network.listen(&member, addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(node = %member, %addr, error = %e, "cannot offer the host service on the node");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        let Ok((mut inside, _)) = accepted else { continue };
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(mut here) => {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut here).await;
                }
                Err(e) => tracing::debug!(%addr, error = %e, "host service unreachable"),
            }
        });
    }
}
