//! Where the producer and consumer applications run: on application hosts of the test
//! network (embedded facilities: a network namespace per host as root, a loopback address
//! otherwise), or on this machine at one address the real clusters' gateway nodes reach
//! (external facilities). The scenarios reach hosts only through this, so they run unchanged
//! in both.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use scistream_nodeagent::network::Network;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The application hosts (wrapped by [`crate::world::Apps`] for the scenarios).
#[derive(Clone, Debug)]
pub enum Hosts {
    /// Hosts of the embedded facilities' network.
    Network(Arc<Network>),
    /// Every application on this machine, at this address.
    Local(Ipv4Addr),
}

impl Hosts {
    /// The address applications on `host` listen on (and connect from).
    pub fn address(&self, host: &str) -> Option<Ipv4Addr> {
        match self {
            Hosts::Network(n) => n.address(host),
            Hosts::Local(a) => Some(*a),
        }
    }

    /// Connects from `host` to `addr`.
    pub async fn connect(&self, host: &str, addr: SocketAddr) -> io::Result<TcpStream> {
        match self {
            Hosts::Network(n) => n.connect(host, addr).await,
            Hosts::Local(_) => TcpStream::connect(addr).await,
        }
    }

    /// Listens on `addr` on `host`.
    pub async fn listen(&self, host: &str, addr: SocketAddr) -> io::Result<TcpListener> {
        match self {
            Hosts::Network(n) => n.listen(host, addr).await,
            Hosts::Local(_) => {
                let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                socket.listen(1024)
            }
        }
    }

    /// The embedded network, if that is where the hosts are.
    pub fn network(&self) -> Option<&Arc<Network>> {
        match self {
            Hosts::Network(n) => Some(n),
            Hosts::Local(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn local_hosts_listen_and_connect_on_the_given_address() {
        let apps = Hosts::Local(Ipv4Addr::LOCALHOST);
        let ip = apps.address("app-aps").unwrap();
        let listener = apps.listen("app-aps", SocketAddr::new(ip.into(), 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.ip(), std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (mut client, accepted) = tokio::join!(apps.connect("app-alcf", addr), listener.accept());
        let (mut server, _) = accepted.unwrap();
        client.as_mut().unwrap().write_all(b"bytes").await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bytes");
        assert!(apps.network().is_none());
    }
}
