//! Turning a [`Topology`] into namespaces, addresses and `ip` commands (pure).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::topology::{DOC_PREFIXES, Topology, TopologyError, WAN};

/// A network with its address block and bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNetwork {
    /// Network name.
    pub name: String,
    /// First address of the block.
    pub base: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
    /// Bridge name in the switch namespace.
    pub bridge: String,
}

/// One interface of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Network name.
    pub network: String,
    /// Name inside the member's namespace (`eth<j>`).
    pub name: String,
    /// Name of the peer on the bridge (`v<k>`).
    pub peer: String,
    /// Address.
    pub address: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
}

/// A node or host and its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node or host name.
    pub name: String,
    /// Whether it is a node (else an application host).
    pub is_node: bool,
    /// Network namespace name.
    pub netns: String,
    /// Interfaces, in declaration order.
    pub interfaces: Vec<Interface>,
}

impl Member {
    /// Address on `network`.
    pub fn address_on(&self, network: &str) -> Option<Ipv4Addr> {
        self.interfaces.iter().find(|i| i.network == network).map(|i| i.address)
    }
    /// The first non-WAN address (the LAN / InternalIP).
    pub fn lan_address(&self) -> Option<Ipv4Addr> {
        self.interfaces.iter().find(|i| i.network != WAN).map(|i| i.address)
    }
    /// The WAN address (ExternalIP).
    pub fn wan_address(&self) -> Option<Ipv4Addr> {
        self.address_on(WAN)
    }
    /// The address the node's pods report and bind (LAN, else WAN).
    pub fn primary_address(&self) -> Option<Ipv4Addr> {
        self.lan_address().or_else(|| self.wan_address())
    }
}

/// Everything to build for one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Prefix of every namespace name.
    pub prefix: String,
    /// The switch namespace (holds the bridges).
    pub switch_ns: String,
    /// Networks.
    pub networks: Vec<PlannedNetwork>,
    /// Nodes and hosts.
    pub members: Vec<Member>,
}

fn block(i: usize, count: usize) -> (Ipv4Addr, u8) {
    if count <= DOC_PREFIXES.len() {
        return (DOC_PREFIXES[i], 24);
    }
    // Four /26 per documentation /24: up to 12 networks.
    let base = u32::from(DOC_PREFIXES[i / 4]) + 64 * (i % 4) as u32;
    (Ipv4Addr::from(base), 26)
}

fn parse_cidr(name: &str, cidr: &str) -> Result<(Ipv4Addr, u8), TopologyError> {
    let bad = |p: &str| TopologyError::Addressing { network: name.into(), problem: p.into() };
    let (a, l) = cidr.split_once('/').ok_or_else(|| bad("expected a.b.c.d/len"))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad("bad address"))?;
    let len: u8 = l.parse().map_err(|_| bad("bad prefix length"))?;
    if !(24..=30).contains(&len) {
        return Err(bad("prefix length must be 24..=30"));
    }
    let net = u32::from(addr) & !((1u32 << (32 - len)) - 1);
    if !DOC_PREFIXES.iter().any(|p| u32::from(*p) == net & 0xffff_ff00) {
        return Err(bad("only 198.51.100.0/24, 203.0.113.0/24 and 192.0.2.0/24 may be used"));
    }
    Ok((Ipv4Addr::from(net), len))
}

impl Topology {
    /// Plans namespaces, bridges, veths and addresses with `prefix` on every
    /// namespace name. Addresses: `.1`, `.2`… in the order nodes then hosts
    /// attach to each network.
    pub fn plan(&self, prefix: &str) -> Result<Plan, TopologyError> {
        let mut seen = BTreeSet::new();
        for n in self.networks.iter().map(|n| &n.name).chain(self.nodes.iter().map(|n| &n.name)) {
            if !seen.insert(format!("n:{n}")) {
                return Err(TopologyError::Duplicate(n.clone()));
            }
        }
        for h in self.nodes.iter().map(|n| &n.name).chain(self.hosts.iter().map(|h| &h.name)) {
            if !seen.insert(format!("m:{h}")) {
                return Err(TopologyError::Duplicate(h.clone()));
            }
        }
        if self.networks.len() > 12 {
            return Err(TopologyError::Addressing { network: "*".into(), problem: "at most 12 networks".into() });
        }
        let mut networks = Vec::new();
        for (i, n) in self.networks.iter().enumerate() {
            let (base, len) = match &n.cidr {
                Some(c) => parse_cidr(&n.name, c)?,
                None => block(i, self.networks.len()),
            };
            networks.push(PlannedNetwork { name: n.name.clone(), base, len, bridge: format!("br{i}") });
        }
        let mut used = vec![0u32; networks.len()];
        let mut veth = 0usize;
        let mut members = Vec::new();
        let all = self.nodes.iter().map(|n| (&n.name, &n.networks, true));
        for (name, nets, is_node) in all.chain(self.hosts.iter().map(|h| (&h.name, &h.networks, false))) {
            let mut interfaces = Vec::new();
            for (j, net) in nets.iter().enumerate() {
                let idx = networks
                    .iter()
                    .position(|n| &n.name == net)
                    .ok_or_else(|| TopologyError::UnknownNetwork { member: name.clone(), network: net.clone() })?;
                used[idx] += 1;
                let pn = &networks[idx];
                if used[idx] >= (1u32 << (32 - pn.len)) - 1 {
                    return Err(TopologyError::Addressing { network: net.clone(), problem: "too many members".into() });
                }
                interfaces.push(Interface {
                    network: net.clone(),
                    name: format!("eth{j}"),
                    peer: format!("v{veth}"),
                    address: Ipv4Addr::from(u32::from(pn.base) + used[idx]),
                    len: pn.len,
                });
                veth += 1;
            }
            let kind = if is_node { "n" } else { "h" };
            members.push(Member { name: name.clone(), is_node, netns: format!("{prefix}{kind}-{name}"), interfaces });
        }
        Ok(Plan { prefix: prefix.into(), switch_ns: format!("{prefix}sw"), networks, members })
    }
}

impl Plan {
    /// The member (node or host) named `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Every namespace of the plan (switch first).
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch_ns.clone()).chain(self.members.iter().map(|m| m.netns.clone())).collect()
    }

    /// The `ip` invocations (arguments after `ip`) that build the plan from
    /// nothing, in order.
    pub fn commands(&self) -> Vec<Vec<String>> {
        let sw = self.switch_ns.as_str();
        let mut out: Vec<Vec<String>> = Vec::new();
        let mut cmd = |parts: &[&str]| out.push(parts.iter().map(|s| s.to_string()).collect());
        cmd(&["netns", "add", sw]);
        cmd(&["-n", sw, "link", "set", "lo", "up"]);
        for n in &self.networks {
            cmd(&["-n", sw, "link", "add", &n.bridge, "type", "bridge"]);
            cmd(&["-n", sw, "link", "set", &n.bridge, "up"]);
        }
        for m in &self.members {
            let ns = m.netns.as_str();
            cmd(&["netns", "add", ns]);
            cmd(&["-n", ns, "link", "set", "lo", "up"]);
            for i in &m.interfaces {
                let bridge = self.networks.iter().find(|n| n.name == i.network).map(|n| n.bridge.as_str());
                let bridge = bridge.unwrap_or("br0");
                let cidr = format!("{}/{}", i.address, i.len);
                cmd(&["-n", sw, "link", "add", &i.peer, "type", "veth", "peer", "name", &i.name, "netns", ns]);
                cmd(&["-n", sw, "link", "set", &i.peer, "master", bridge]);
                cmd(&["-n", sw, "link", "set", &i.peer, "up"]);
                cmd(&["-n", ns, "addr", "add", &cidr, "dev", &i.name]);
                cmd(&["-n", ns, "link", "set", &i.name, "up"]);
            }
        }
        out
    }
}

/// Loopback addresses for `count` nodes: `127.<a>.<b>.<i+1>` where `seed`
/// gives `a.b` (never `127.0.0.x`, so the usual localhost stays free).
pub fn loopback_addresses(seed: u16, count: usize) -> Vec<Ipv4Addr> {
    let [a, b] = seed.to_be_bytes();
    let a = a.clamp(1, 254);
    (0..count).map(|i| Ipv4Addr::new(127, a, b, (i % 254) as u8 + 1)).collect()
}

/// Parses `<base>-<pid>-<rand>-` style prefixes: the pid of the agent that
/// owns a namespace named with it, if the name has `base` as its start.
pub fn owner_pid(base: &str, netns: &str) -> Option<u32> {
    let rest = netns.strip_prefix(base)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests;
