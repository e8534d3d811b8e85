//! What a Gateway's status says, computed from its spec, its nodes and its reservations.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::{
    api::core::v1::{Node, Taint, Toleration},
    jiff::Timestamp,
};
use scistream_api::{
    GatewaySpec, GatewayStatus, PortRange, Reservation,
    conditions::{Reason, reasons},
    gateway::{AddressSource, GatewayNodeStatus, NodeAddressType},
    keys,
};
use scistream_core::allocator;

/// Whether `toleration` tolerates `taint` (the kube-scheduler's rule).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = match toleration.key.as_deref() {
        None | Some("") => toleration.operator.as_deref() == Some("Exists"),
        Some(k) => k == taint.key,
    };
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect_ok && key_ok && value_ok
}

fn address(
    node: &Node,
    source: Option<&AddressSource>,
    default_annotation: &str,
    default_type: NodeAddressType,
) -> Option<IpAddr> {
    let annotation = source.and_then(|s| s.annotation.as_deref()).unwrap_or(default_annotation);
    if let Some(value) = node.metadata.annotations.as_ref().and_then(|a| a.get(annotation)) {
        return value.trim().parse().ok();
    }
    let wanted = match source.and_then(|s| s.node_address_type).unwrap_or(default_type) {
        NodeAddressType::ExternalIP => "ExternalIP",
        NodeAddressType::InternalIP => "InternalIP",
    };
    node.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == wanted).and_then(|a| a.address.parse().ok())
}

/// A gateway node's status entry (without its port count).
pub fn node_status(spec: &GatewaySpec, node: &Node) -> GatewayNodeStatus {
    let name = node.metadata.name.clone().unwrap_or_default();
    let sources = spec.addresses.as_ref();
    let wan =
        address(node, sources.and_then(|s| s.wan.as_ref()), keys::ANNOTATION_WAN_ADDRESS, NodeAddressType::ExternalIP);
    let lan =
        address(node, sources.and_then(|s| s.lan.as_ref()), keys::ANNOTATION_LAN_ADDRESS, NodeAddressType::InternalIP);
    let node_ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let schedulable = !node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let tolerated = node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_none_or(|taints| {
        taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .all(|t| spec.tolerations.iter().any(|tol| tolerates(tol, t)))
    });
    GatewayNodeStatus {
        name,
        ready: node_ready && schedulable && tolerated && wan.is_some() && lan.is_some(),
        wan_address: wan.map(|a| a.to_string()),
        lan_address: lan.map(|a| a.to_string()),
        ports_in_use: 0,
    }
}

/// Why a node matching the selector is not usable, for the Ready condition's message.
fn unusable_reason(status: &GatewayNodeStatus) -> (Reason, String) {
    let name = &status.name;
    if status.wan_address.is_none() || status.lan_address.is_none() {
        let missing = if status.wan_address.is_none() { "WAN" } else { "LAN" };
        return (
            reasons::NO_ADDRESS,
            format!(
                "node {name} has no {missing} address: annotate it with {} / {} or give it an {} address",
                keys::ANNOTATION_WAN_ADDRESS,
                keys::ANNOTATION_LAN_ADDRESS,
                if missing == "WAN" { "ExternalIP" } else { "InternalIP" }
            ),
        );
    }
    (
        reasons::NO_READY_NODES,
        format!("node {name} is not Ready, is cordoned, or has a taint the gateway does not tolerate"),
    )
}

/// A Gateway's claim on node ports, for the one-owner rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The Gateway's name.
    pub name: String,
    /// When it was created: of two Gateways claiming a node port, the older owns it (ties by
    /// name).
    pub created: Option<Timestamp>,
    /// Its port range.
    pub range: PortRange,
    /// The nodes its selector matches.
    pub nodes: BTreeSet<String>,
}

impl Claim {
    fn seniority(&self) -> (Option<Timestamp>, &str) {
        (self.created, self.name.as_str())
    }
}

/// Why `me` may not serve: an older Gateway whose nodes and port range overlap its own (the
/// oldest, if several), named with what they share. A node port has one owner.
pub fn conflict(me: &Claim, others: &[Claim]) -> Option<String> {
    let overlaps =
        |o: &&Claim| o.range.start <= me.range.end && me.range.start <= o.range.end && !o.nodes.is_disjoint(&me.nodes);
    let owner = others
        .iter()
        .filter(|o| o.name != me.name && o.seniority() < me.seniority())
        .filter(overlaps)
        .min_by(|a, b| a.seniority().cmp(&b.seniority()))?;
    let shared: Vec<&str> = me.nodes.intersection(&owner.nodes).map(String::as_str).collect();
    let (lo, hi) = (me.range.start.max(owner.range.start), me.range.end.min(owner.range.end));
    let on = match shared.as_slice() {
        [one] => format!("node {one}"),
        many => format!("nodes {}", many.join(", ")),
    };
    Some(format!(
        "spec.portRange {}-{} overlaps Gateway {}'s {}-{} (ports {lo}-{hi}) on {on}; the older Gateway owns those \
         ports: give this Gateway a port range of its own, or other nodes",
        me.range.start, me.range.end, owner.name, owner.range.start, owner.range.end
    ))
}

/// The Ready verdict of a gateway.
pub fn readiness(
    spec: &GatewaySpec,
    nodes: &[(Node, GatewayNodeStatus)],
    namespace_problem: Option<(Reason, String)>,
    conflict: Option<String>,
) -> (bool, Reason, String) {
    if let Some((reason, problem)) = namespace_problem {
        return (false, reason, problem);
    }
    if spec.port_range.is_empty() {
        return (false, reasons::INVALID_SPEC, "spec.portRange is empty".to_owned());
    }
    let shared = spec.relay_model() == scistream_api::RelayModel::Shared;
    // Besides a connection's port: a per-stream relay's health listener, or the shared
    // relays' metrics port.
    let besides = scistream_core::render::needs_health_port(spec.implementation) || shared;
    let smallest = 1 + usize::from(besides);
    if spec.port_range.len() < smallest {
        let what = if shared { "the shared relays' metrics port" } else { "its relay's health listener" };
        return (
            false,
            reasons::INVALID_SPEC,
            format!(
                "spec.portRange {}-{} holds {} port per node, and a stream needs at least {smallest} on a node (1 connection and {what}): no stream could ever use this gateway; widen the range",
                spec.port_range.start,
                spec.port_range.end,
                spec.port_range.len()
            ),
        );
    }
    if let Some(conflict) = conflict {
        return (false, reasons::CONFLICT, conflict);
    }
    let ready = nodes.iter().filter(|(_, s)| s.ready).count();
    if nodes.is_empty() {
        let selector: Vec<String> = spec.node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return (
            false,
            reasons::NO_READY_NODES,
            format!("no node matches spec.nodeSelector {}; label the gateway nodes", selector.join(",")),
        );
    }
    if ready == 0 {
        let (reason, message) = unusable_reason(&nodes[0].1);
        return (false, reason, message);
    }
    (true, reasons::GATEWAY_READY, format!("{ready} of {} gateway nodes ready", nodes.len()))
}

/// Fills the counters and summaries of `status` from its nodes and the Gateway's holdings.
pub fn summarize(spec: &GatewaySpec, held: &[Reservation], status: &mut GatewayStatus) {
    let used = allocator::used_ports(held);
    let counts: BTreeMap<String, usize> = used.iter().map(|(n, p)| ((*n).to_owned(), p.len())).collect();
    for node in &mut status.nodes {
        node.ports_in_use = counts.get(&node.name).copied().unwrap_or(0) as i32;
    }
    let ready = status.nodes.iter().filter(|n| n.ready).count();
    status.ready_nodes = ready as i32;
    status.ports_in_use = counts.values().sum::<usize>() as i32;
    status.ports_total = (spec.stream_ports().len() * ready) as i32;
    status.ports_summary = Some(format!("{}/{}", status.ports_in_use, status.ports_total));
    let promised = allocator::promised(held);
    status.bandwidth_promised_bps = i64::try_from(promised.bps()).unwrap_or(i64::MAX);
    let declared = spec.bandwidth.to_string();
    status.bandwidth_summary = Some(format!("{promised}/{declared}"));
    status.streams = held.len() as i32;
}

#[cfg(test)]
mod tests;
