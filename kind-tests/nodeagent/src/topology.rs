//! Test topologies (pure): networks, simulated nodes and application hosts,
//! their addresses, and the `ip` commands that build them.
//!
//! In `netns` mode every node and host is a network namespace; every network
//! is a bridge in one private "switch" namespace, and each attachment is a
//! veth pair (`v<k>` on the bridge, `eth<j>` in the member). Nothing is
//! created in the root namespace, so deleting the agent's namespaces removes
//! every bridge and veth with them, and parallel agents (each with its own
//! name prefix) never collide even though they reuse the same addresses.
//! Addresses come only from the documentation prefixes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Taint;
use serde::{Deserialize, Serialize};

/// Annotation with a node's WAN address (read by the operator).
pub const ANNOTATION_WAN_ADDRESS: &str = "scistream.io/wan-address";
/// Annotation with a node's LAN address (read by the operator).
pub const ANNOTATION_LAN_ADDRESS: &str = "scistream.io/lan-address";
/// Conventional name of the wide-area network.
pub const WAN: &str = "wan";

/// The documentation prefixes (RFC 5737), in allocation order.
pub const DOC_PREFIXES: [Ipv4Addr; 3] =
    [Ipv4Addr::new(198, 51, 100, 0), Ipv4Addr::new(203, 0, 113, 0), Ipv4Addr::new(192, 0, 2, 0)];

/// A simulated node (a Node object plus, in `netns` mode, a namespace).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Networks it is attached to, in interface order.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Node annotations (the address annotations are added).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Node taints.
    #[serde(default)]
    pub taints: Vec<Taint>,
}

impl NodeSpec {
    /// A node named `name` attached to no network.
    pub fn new(name: &str) -> Self {
        NodeSpec { name: name.into(), ..NodeSpec::default() }
    }
    /// A gateway node of `facility`: on `<facility>-lan` and on the WAN.
    pub fn gateway(name: &str, facility: &str) -> Self {
        NodeSpec::new(name).on(&lan(facility)).on(WAN).label("scistream.io/facility", facility)
    }
    /// Attaches to `network`.
    pub fn on(mut self, network: &str) -> Self {
        self.networks.push(network.into());
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }
    /// Adds a taint.
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Taint::default()
        });
        self
    }
}

/// An application host (a namespace, no Node object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSpec {
    /// Host name.
    pub name: String,
    /// Networks it is attached to.
    #[serde(default)]
    pub networks: Vec<String>,
}

/// A network (a bridge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Network name.
    pub name: String,
    /// `a.b.c.d/len` within the documentation prefixes; automatic when absent.
    #[serde(default)]
    pub cidr: Option<String>,
}

/// Name of a facility's LAN.
pub fn lan(facility: &str) -> String {
    format!("{facility}-lan")
}

/// Declared topology: the input of [`Topology::plan`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Networks.
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    /// Nodes.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// Application hosts.
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
}

/// A topology that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// A member names an undeclared network.
    #[error("{member} is attached to network {network:?}, which is not declared; add it with .network({network:?})")]
    UnknownNetwork {
        /// Node or host.
        member: String,
        /// Network name.
        network: String,
    },
    /// Bad or non-documentation CIDR, or too many networks/members.
    #[error("network {network:?}: {problem}")]
    Addressing {
        /// Network name.
        network: String,
        /// What is wrong.
        problem: String,
    },
    /// Two members or networks share a name.
    #[error("name {0:?} is used twice")]
    Duplicate(String),
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Topology::default()
    }
    /// Two facilities `a` and `b`: LANs `a-lan`/`b-lan`, the WAN, gateway
    /// nodes `gw-a`/`gw-b` and application hosts `app-a`/`app-b`.
    pub fn two_facilities() -> Self {
        Topology::new()
            .facility("a")
            .facility("b")
            .network(WAN)
            .node(NodeSpec::gateway("gw-a", "a"))
            .node(NodeSpec::gateway("gw-b", "b"))
            .host(HostSpec { name: "app-a".into(), networks: vec![lan("a")] })
            .host(HostSpec { name: "app-b".into(), networks: vec![lan("b")] })
    }
    /// Declares a facility LAN (`<name>-lan`).
    pub fn facility(self, name: &str) -> Self {
        self.network(&lan(name))
    }
    /// Declares a network with an automatic CIDR.
    pub fn network(mut self, name: &str) -> Self {
        self.networks.push(NetworkSpec { name: name.into(), cidr: None });
        self
    }
    /// Declares a network with a fixed CIDR.
    pub fn network_cidr(mut self, name: &str, cidr: &str) -> Self {
        self.networks.push(NetworkSpec { name: name.into(), cidr: Some(cidr.into()) });
        self
    }
    /// Adds a node.
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.nodes.push(node);
        self
    }
    /// Adds an application host on `networks`.
    pub fn host(mut self, host: HostSpec) -> Self {
        self.hosts.push(host);
        self
    }
    /// Adds an application host on one network.
    pub fn app_host(self, name: &str, network: &str) -> Self {
        self.host(HostSpec { name: name.into(), networks: vec![network.into()] })
    }
    /// Parses a YAML topology file.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
}
