//! Port and bandwidth allocation on a gateway.
//!
//! The durable record of who holds what is the list of [`Reservation`]s in the Gateway's
//! status, written with optimistic concurrency; this module only decides. Given the list and
//! the gateway's usable nodes it computes a new reservation, a release, or the relocation of
//! a lost node's share, and checks the invariants the operator must keep:
//! - a port on a node is held by at most one stream;
//! - every held port is inside the gateway's port range;
//! - the bandwidth promised never exceeds the bandwidth declared.
//!
//! Placement: all of a stream's connections go to the least loaded node that can hold them
//! (one relay pod); when no node can, they are striped over the nodes with the most free
//! ports. Within a node the lowest free ports are used.

use std::collections::{BTreeMap, BTreeSet};

use scistream_api::{NodeAllocation, PortRange, Rate, Reservation};

/// What a stream asks of a gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    /// The requesting `StreamRequest` as `namespace/name`.
    pub request: String,
    /// Its stream id.
    pub stream_id: String,
    /// Its uid.
    pub uid: String,
    /// Number of ports (connections).
    pub connections: usize,
    /// Bandwidth to promise.
    pub rate: Rate,
    /// Whether each node used also needs a port for the relay's health listener (and s2ds's
    /// metrics): see [`crate::render::needs_health_port`].
    pub metrics_port: bool,
}

/// Ports of each node held through other Gateways on it: a node port has one owner across
/// all Gateways, so these are never handed out here.
pub type HeldElsewhere = BTreeMap<String, BTreeSet<i32>>;

/// Nothing held elsewhere.
pub static NOTHING_ELSEWHERE: HeldElsewhere = BTreeMap::new();

/// A gateway's capacity as the allocator sees it.
#[derive(Clone, Debug)]
pub struct Capacity<'a> {
    /// Ports usable on every node.
    pub port_range: PortRange,
    /// Bandwidth the gateway declares.
    pub bandwidth: Rate,
    /// Usable (Ready, addressed) nodes.
    pub nodes: &'a [String],
    /// Current holdings.
    pub reservations: &'a [Reservation],
    /// Ports of these nodes held through other Gateways.
    pub elsewhere: &'a HeldElsewhere,
}

/// Why a demand cannot be met now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// No usable node.
    #[error("the gateway has no ready gateway node with WAN and LAN addresses")]
    NoReadyNodes,
    /// Not enough free ports over all usable nodes.
    #[error("needs {needed} ports{}, {}", if *per_node > 0 { " plus 1 per node used for the relay's health listener" } else { "" }, describe_free(free))]
    PortsExhausted {
        /// Ports asked for.
        needed: usize,
        /// Extra ports needed on every node used.
        per_node: usize,
        /// Free ports per usable node.
        free: Vec<(String, usize)>,
    },
    /// Not enough undeclared bandwidth.
    #[error("needs {requested}, but {promised} of the gateway's {declared} is already promised ({available} left)")]
    BandwidthExhausted {
        /// Rate asked for.
        requested: Rate,
        /// Already promised.
        promised: Rate,
        /// Declared by the gateway.
        declared: Rate,
        /// Left.
        available: Rate,
    },
}

fn describe_free(free: &[(String, usize)]) -> String {
    if free.is_empty() {
        return "no node is usable".to_owned();
    }
    free.iter().map(|(n, f)| format!("{f} free on {n}")).collect::<Vec<_>>().join(", ")
}

/// Invariant violations found in a stored reservation list.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// Two reservations hold the same port on the same node.
    #[error("port {port} on {node} is held by both {first} and {second}")]
    DoubleHeld {
        /// Node.
        node: String,
        /// Port.
        port: i32,
        /// First holder.
        first: String,
        /// Second holder.
        second: String,
    },
    /// A reservation holds a port outside the gateway's range.
    #[error("{holder} holds port {port} on {node}, outside the range {start}-{end}")]
    OutOfRange {
        /// Node.
        node: String,
        /// Port.
        port: i32,
        /// Holder.
        holder: String,
        /// Range start.
        start: i32,
        /// Range end.
        end: i32,
    },
}

/// Ports held per node.
pub fn used_ports(reservations: &[Reservation]) -> BTreeMap<&str, BTreeSet<i32>> {
    let mut used: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for r in reservations {
        for a in &r.nodes {
            used.entry(a.node.as_str()).or_default().extend(a.ports.iter().chain(&a.metrics_port).copied());
        }
    }
    used
}

/// Bandwidth promised by all reservations.
pub fn promised(reservations: &[Reservation]) -> Rate {
    let bps: u64 = reservations.iter().map(|r| u64::try_from(r.bandwidth_bps).unwrap_or(0)).sum();
    Rate::from_bps(bps)
}

/// Checks that no port is held twice on a node (and, when `range` is given, that all are in it).
pub fn check(reservations: &[Reservation], range: Option<PortRange>) -> Result<(), Conflict> {
    let mut holders: BTreeMap<(&str, i32), &str> = BTreeMap::new();
    for r in reservations {
        for a in &r.nodes {
            for &port in a.ports.iter().chain(&a.metrics_port) {
                if let Some(range) = range
                    && !(range.start..=range.end).contains(&port)
                {
                    return Err(Conflict::OutOfRange {
                        node: a.node.clone(),
                        port,
                        holder: r.request.clone(),
                        start: range.start,
                        end: range.end,
                    });
                }
                if let Some(first) = holders.insert((a.node.as_str(), port), r.request.as_str()) {
                    return Err(Conflict::DoubleHeld {
                        node: a.node.clone(),
                        port,
                        first: first.to_owned(),
                        second: r.request.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

fn free_ports(cap: &Capacity<'_>, used: &BTreeMap<&str, BTreeSet<i32>>, node: &str) -> Vec<i32> {
    let (held, elsewhere) = (used.get(node), cap.elsewhere.get(node));
    (cap.port_range.start..=cap.port_range.end)
        .filter(|p| held.is_none_or(|h| !h.contains(p)) && elsewhere.is_none_or(|h| !h.contains(p)))
        .collect()
}

/// Takes `take` data ports (and the metrics port, when asked) from a node's free ports.
fn take(node: &str, free: &[i32], take: usize, per_node: usize) -> NodeAllocation {
    NodeAllocation {
        node: node.to_owned(),
        ports: free[..take].to_vec(),
        metrics_port: (per_node > 0).then(|| free[take]),
    }
}

/// Chooses `count` ports on the usable nodes (least loaded node that fits, else striped),
/// plus `per_node` extra ports (0 or 1) on every node used.
fn place(
    cap: &Capacity<'_>,
    count: usize,
    per_node: usize,
    exclude: Option<&str>,
) -> Result<Vec<NodeAllocation>, AllocError> {
    let used = used_ports(cap.reservations);
    let mut candidates: Vec<(&String, Vec<i32>, usize)> = cap
        .nodes
        .iter()
        .filter(|n| Some(n.as_str()) != exclude)
        .map(|n| (n, free_ports(cap, &used, n), used.get(n.as_str()).map_or(0, BTreeSet::len)))
        .collect();
    if candidates.is_empty() {
        return Err(AllocError::NoReadyNodes);
    }
    // Least loaded first; ties by name, so the choice is deterministic.
    candidates.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(b.0)));
    if let Some((node, free, _)) = candidates.iter().find(|(_, free, _)| free.len() >= count + per_node) {
        return Ok(vec![take(node, free, count, per_node)]);
    }
    let usable = |free: &Vec<i32>| free.len().saturating_sub(per_node);
    let total: usize = candidates.iter().map(|c| usable(&c.1)).sum();
    if total < count {
        return Err(AllocError::PortsExhausted {
            needed: count,
            per_node,
            free: candidates.iter().map(|c| (c.0.clone(), c.1.len())).collect(),
        });
    }
    // Stripe: nodes with the most free ports first.
    candidates.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(b.0)));
    let mut remaining = count;
    let mut out = Vec::new();
    for (node, free, _) in candidates {
        let n = remaining.min(usable(&free));
        if n > 0 {
            out.push(take(node, &free, n, per_node));
            remaining -= n;
        }
    }
    Ok(out)
}

/// The reservation for `demand`: the existing one when the request already holds one
/// (idempotent), else a new one placed on the gateway.
pub fn reserve(cap: &Capacity<'_>, demand: &Demand) -> Result<Reservation, AllocError> {
    if let Some(existing) = cap.reservations.iter().find(|r| r.uid == demand.uid) {
        return Ok(existing.clone());
    }
    let promised = promised(cap.reservations);
    let available = cap.bandwidth.saturating_sub(promised);
    if demand.rate > available {
        return Err(AllocError::BandwidthExhausted {
            requested: demand.rate,
            promised,
            declared: cap.bandwidth,
            available,
        });
    }
    let nodes = place(cap, demand.connections, usize::from(demand.metrics_port), None)?;
    Ok(Reservation {
        request: demand.request.clone(),
        stream_id: demand.stream_id.clone(),
        uid: demand.uid.clone(),
        bandwidth_bps: i64::try_from(demand.rate.bps()).unwrap_or(i64::MAX),
        nodes,
    })
}

/// The reservation list with `uid`'s holding removed (unchanged if it holds nothing).
pub fn release(reservations: &[Reservation], uid: &str) -> Vec<Reservation> {
    reservations.iter().filter(|r| r.uid != uid).cloned().collect()
}

/// Moves the share of `uid`'s reservation held on `lost_node` to other usable nodes, keeping
/// the ports on surviving nodes (so their listeners do not change). Returns the new
/// reservation; the caller replaces the old one.
pub fn relocate(cap: &Capacity<'_>, uid: &str, lost_node: &str) -> Result<Option<Reservation>, AllocError> {
    let Some(current) = cap.reservations.iter().find(|r| r.uid == uid) else {
        return Ok(None);
    };
    let lost: usize = current.nodes.iter().filter(|a| a.node == lost_node).map(|a| a.ports.len()).sum();
    if lost == 0 {
        return Ok(Some(current.clone()));
    }
    let mut kept = current.clone();
    kept.nodes.retain(|a| a.node != lost_node);
    let others: Vec<Reservation> =
        cap.reservations.iter().filter(|r| r.uid != uid).cloned().chain([kept.clone()]).collect();
    let view = Capacity { reservations: &others, ..cap.clone() };
    let per_node = usize::from(current.nodes.iter().any(|a| a.metrics_port.is_some()));
    let moved = place(&view, lost, per_node, Some(lost_node))?;
    for m in moved {
        match kept.nodes.iter_mut().find(|a| a.node == m.node) {
            // The node already runs this stream's relay: reuse its metrics port, free the new one.
            Some(existing) => existing.ports.extend(m.ports),
            None => kept.nodes.push(m),
        }
    }
    Ok(Some(kept))
}

#[cfg(test)]
mod tests;
