//! From a stream's reservation to the relays that carry it: which node runs which listeners,
//! forwarding to which target, in which mode, at which rate.
//!
//! Listener `i` of the stream (counted over all nodes, in allocation order) forwards to
//! `targets[i mod len(targets)]`. A node's relay gets its listeners with their targets
//! already paired, so a relay never needs the global numbering.

use std::{collections::BTreeMap, net::IpAddr};

use scistream_api::{DataChannel, Endpoint, Host, Implementation, NodeAllocation, Rate, Role};

/// A gateway node's advertised addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddresses {
    /// Facing the WAN (the peer facility).
    pub wan: IpAddr,
    /// Facing the facility LAN (the applications).
    pub lan: IpAddr,
}

/// How a relay treats its two legs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelayMode {
    /// TCP in, TCP out.
    Plain,
    /// Producer side: mutual TLS in (from the peer gateway), TCP out (to the producer app).
    TlsServer,
    /// Consumer side: TCP in (from the consumer app), mutual TLS out (to the peer gateway).
    TlsClient,
}

impl RelayMode {
    /// The name in the s2ds config (`plain`, `tls-server`, `tls-client`).
    pub fn as_str(self) -> &'static str {
        match self {
            RelayMode::Plain => "plain",
            RelayMode::TlsServer => "tls-server",
            RelayMode::TlsClient => "tls-client",
        }
    }

    /// Whether the WAN leg is encrypted.
    pub fn encrypted(self) -> bool {
        self != RelayMode::Plain
    }
}

/// One listener of a relay, with the target it forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Index of the listener within the stream.
    pub index: usize,
    /// Address and port to bind.
    pub listen: Endpoint,
    /// Where accepted connections go.
    pub target: Endpoint,
}

/// The relay one gateway node runs for a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRelay {
    /// Gateway node.
    pub node: String,
    /// Mode of every route.
    pub mode: RelayMode,
    /// Routes, in listener order.
    pub routes: Vec<Route>,
    /// This node's share of the stream's rate (proportional to its listeners).
    pub rate: Rate,
}

/// Why no relay can be planned for a stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The gateway's implementation cannot provide the requested data channel.
    #[error("the gateway uses {implementation:?}, which {why}")]
    Unsupported {
        /// Implementation of the gateway.
        implementation: Implementation,
        /// What it cannot do, and what to do instead.
        why: &'static str,
    },
    /// No targets are known yet.
    #[error("no targets to forward to yet")]
    NoTargets,
    /// A node of the reservation has no known addresses.
    #[error("gateway node {0} has no WAN/LAN address")]
    NoAddress(String),
}

/// The relay mode for a side, or why its gateway cannot serve it.
pub fn mode(role: Role, channel: DataChannel, implementation: Implementation) -> Result<RelayMode, PlanError> {
    match (implementation, channel) {
        (Implementation::Haproxy | Implementation::Nginx, DataChannel::MutualTLS) => Err(PlanError::Unsupported {
            implementation,
            why: "relays plain TCP only; set spec.dataChannel: Plain (data crosses the WAN unencrypted) or use a gateway with implementation S2ds or Stunnel",
        }),
        (Implementation::Stunnel, DataChannel::Plain) => Err(PlanError::Unsupported {
            implementation,
            why: "always encrypts; set spec.dataChannel: MutualTLS or use a gateway with implementation S2ds, Haproxy or Nginx",
        }),
        (_, DataChannel::Plain) => Ok(RelayMode::Plain),
        (_, DataChannel::MutualTLS) => Ok(match role {
            Role::Producer => RelayMode::TlsServer,
            Role::Consumer => RelayMode::TlsClient,
        }),
    }
}

/// The address a side's listeners bind and publish: WAN on the producer side, LAN on the
/// consumer side.
fn listen_ip(role: Role, addresses: NodeAddresses) -> IpAddr {
    match role {
        Role::Producer => addresses.wan,
        Role::Consumer => addresses.lan,
    }
}

/// The listeners to publish in `status.listeners`, in stream order.
pub fn listeners(
    role: Role,
    allocations: &[NodeAllocation],
    addresses: &BTreeMap<String, NodeAddresses>,
) -> Result<Vec<Endpoint>, PlanError> {
    let mut out = Vec::new();
    for a in allocations {
        let addr = addresses.get(&a.node).ok_or_else(|| PlanError::NoAddress(a.node.clone()))?;
        for &port in &a.ports {
            let port = u16::try_from(port).map_err(|_| PlanError::NoAddress(a.node.clone()))?;
            out.push(Endpoint { host: Host::Ip(listen_ip(role, *addr)), port });
        }
    }
    Ok(out)
}

/// The relays for a stream: one per node of its reservation.
pub fn plan(
    role: Role,
    mode: RelayMode,
    allocations: &[NodeAllocation],
    addresses: &BTreeMap<String, NodeAddresses>,
    targets: &[Endpoint],
    rate: Rate,
) -> Result<Vec<NodeRelay>, PlanError> {
    if targets.is_empty() {
        return Err(PlanError::NoTargets);
    }
    let all = listeners(role, allocations, addresses)?;
    let total = all.len().max(1) as u64;
    let mut index = 0;
    let mut relays = Vec::new();
    for a in allocations {
        let mut routes = Vec::new();
        for _ in &a.ports {
            routes.push(Route { index, listen: all[index].clone(), target: targets[index % targets.len()].clone() });
            index += 1;
        }
        let share = Rate::from_bps(rate.bps().saturating_mul(routes.len() as u64) / total);
        relays.push(NodeRelay { node: a.node.clone(), mode, routes, rate: share });
    }
    Ok(relays)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> BTreeMap<String, NodeAddresses> {
        let mut m = BTreeMap::new();
        m.insert(
            "gw-a".to_owned(),
            NodeAddresses { wan: "198.51.100.1".parse().unwrap(), lan: "192.0.2.1".parse().unwrap() },
        );
        m.insert(
            "gw-b".to_owned(),
            NodeAddresses { wan: "198.51.100.2".parse().unwrap(), lan: "192.0.2.2".parse().unwrap() },
        );
        m
    }

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    #[test]
    fn round_robin_over_targets_across_nodes() {
        let allocations = vec![
            NodeAllocation { node: "gw-a".into(), ports: vec![5100, 5101], metrics_port: None },
            NodeAllocation { node: "gw-b".into(), ports: vec![5100, 5101, 5102], metrics_port: None },
        ];
        let targets = [ep("10.1.0.1:7000"), ep("10.1.0.2:7000")];
        let relays =
            plan(Role::Producer, RelayMode::TlsServer, &allocations, &addrs(), &targets, Rate::from_bps(5_000))
                .unwrap();
        assert_eq!(relays.len(), 2);
        let b = &relays[1];
        assert_eq!(b.routes.iter().map(|r| r.index).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(b.routes[0].target, targets[0]);
        assert_eq!(b.routes[1].target, targets[1]);
        assert_eq!(b.routes[0].listen, ep("198.51.100.2:5100"));
        assert_eq!((relays[0].rate.bps(), b.rate.bps()), (2_000, 3_000));
    }

    #[test]
    fn consumer_listens_on_the_lan() {
        let allocations = vec![NodeAllocation { node: "gw-a".into(), ports: vec![5105], metrics_port: None }];
        assert_eq!(listeners(Role::Consumer, &allocations, &addrs()).unwrap(), vec![ep("192.0.2.1:5105")]);
    }

    #[test]
    fn modes_and_unsupported_combinations() {
        use DataChannel::*;
        use Implementation::*;
        assert_eq!(mode(Role::Producer, MutualTLS, S2ds), Ok(RelayMode::TlsServer));
        assert_eq!(mode(Role::Consumer, MutualTLS, Stunnel), Ok(RelayMode::TlsClient));
        assert_eq!(mode(Role::Consumer, Plain, Nginx), Ok(RelayMode::Plain));
        let err = mode(Role::Producer, MutualTLS, Haproxy).unwrap_err().to_string();
        assert!(err.contains("set spec.dataChannel: Plain"), "{err}");
        assert!(mode(Role::Producer, Plain, Stunnel).is_err());
    }

    #[test]
    fn unknown_node_address_and_no_targets_are_errors() {
        let allocations = vec![NodeAllocation { node: "gw-z".into(), ports: vec![5100], metrics_port: None }];
        assert_eq!(listeners(Role::Producer, &allocations, &addrs()), Err(PlanError::NoAddress("gw-z".into())));
        assert_eq!(
            plan(Role::Producer, RelayMode::Plain, &allocations, &addrs(), &[], Rate::default()),
            Err(PlanError::NoTargets)
        );
    }
}
