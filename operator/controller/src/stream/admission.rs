//! What a Gateway admits, before any capacity is looked at: its policy (`spec.policy`),
//! the one limit no wait can lift (a request larger than the Gateway even empty), and what
//! counts as forwarding without a Hello.

use kube::ResourceExt;
use scistream_api::{
    Endpoint, Gateway, Role, StreamRequest,
    conditions::{Reason, reasons},
    keys,
};
use scistream_core::{
    allocator::{AllocError, Demand},
    policy::{Ask, Denial, GatewayRef, Limit, Usage},
};

use super::plan::Observed;

/// Why `demand` could never be held by `gateway`, with every node it has and no other stream:
/// its rate beyond the declared bandwidth, or more ports than its nodes have. `None` while the
/// Gateway has no node (it may get some).
pub(super) fn never_fits(gateway: &Gateway, demand: &Demand) -> Option<(Reason, String)> {
    let nodes: Vec<String> = gateway.status.iter().flat_map(|s| &s.nodes).map(|n| n.name.clone()).collect();
    let spec = &gateway.spec;
    let empty = scistream_core::allocator::Capacity {
        port_range: spec.stream_ports(),
        bandwidth: spec.bandwidth.get(),
        nodes: &nodes,
        reservations: &[],
        // Ports other Gateways hold may be given back: only this Gateway's own limits count.
        elsewhere: &scistream_core::allocator::NOTHING_ELSEWHERE,
    };
    let name = gateway.name_any();
    let message = match scistream_core::allocator::reserve(&empty, demand).err()? {
        AllocError::NoReadyNodes => return None,
        AllocError::BandwidthExhausted { requested, declared, .. } => format!(
            "rate {requested} is more than Gateway {name} declares in all (spec.bandwidth {declared}); ask for at most {declared}"
        ),
        AllocError::PortsExhausted { needed, per_node, .. } => format!(
            "{needed} connections{} need more ports than Gateway {name} has: {} per node (spec.portRange {}-{}{}) on {} node(s); ask for fewer connections",
            if per_node > 0 { " and a health listener on each node used" } else { "" },
            spec.stream_ports().len(),
            spec.port_range.start,
            spec.port_range.end,
            if spec.shared_metrics_port().is_some() { ", less the shared relays' metrics port" } else { "" },
            nodes.len()
        ),
    };
    Some((reasons::EXCEEDS_GATEWAY, message))
}

/// What of the request the Gateway's policy refuses, if anything: its namespace, data
/// channel, static targets, a producer's targets (static or from its Hello), a consumer's
/// remote listeners, or a rate beyond what one namespace may hold.
pub(super) fn refused(o: &Observed, policy: &GatewayRef<'_>) -> Option<Denial> {
    let sr = o.request.as_ref();
    let spec = &sr.spec;
    let namespace = sr.namespace().unwrap_or_default();
    let parsed = |list: &[String]| list.iter().filter_map(|t| t.parse().ok()).collect::<Vec<Endpoint>>();
    let (targets, remote) = match spec.role {
        Role::Producer => {
            let hello = sr.status.as_ref().map(|s| s.prod_listeners.as_slice()).unwrap_or_default();
            (parsed(spec.targets.as_deref().unwrap_or(hello)), Vec::new())
        }
        Role::Consumer => (Vec::new(), parsed(spec.remote_listeners.as_deref().unwrap_or_default())),
    };
    let ask = Ask {
        namespace: &namespace,
        namespace_labels: o.namespace_labels.as_ref(),
        data_channel: spec.data_channel,
        static_targets: forwards_without_hello(sr),
        targets: &targets,
    };
    policy.check(&ask).and_then(|()| remote.iter().try_for_each(|l| policy.check_remote(l))).err().or_else(|| {
        match policy.check_limits(&namespace, Usage::default(), spec.rate.get()) {
            Limit::Never(d) => Some(d),
            Limit::Fits | Limit::Wait(_) => None,
        }
    })
}

/// A producer whose relays would forward to `spec.targets` that no authenticated party sent:
/// no Hello recorded, and not a SciStream 1.x stream (whose `update` is authenticated by its
/// creator's credential).
fn forwards_without_hello(sr: &StreamRequest) -> bool {
    sr.spec.role == Role::Producer
        && sr.spec.targets.is_some()
        && sr.status.as_ref().is_none_or(|s| s.hello_time.is_none())
        && !sr.annotations().contains_key(keys::ANNOTATION_LEGACY_CREDENTIAL)
}

/// Why `gateway` admits nothing now: it is being deleted (the streams it holds keep running
/// until released), or its ports overlap an older Gateway's (Ready condition `False`, reason
/// `Conflict`; streams it already holds keep their ports).
pub(super) fn closed(gateway: &Gateway) -> Option<String> {
    if gateway.metadata.deletion_timestamp.is_some() {
        return Some(format!(
            "Gateway {} is being deleted: it admits no new stream; create this request on another Gateway",
            gateway.name_any()
        ));
    }
    let status = gateway.status.as_ref()?;
    let ready = scistream_api::conditions::find(&status.conditions, scistream_api::conditions::types::READY)?;
    (ready.status == scistream_api::conditions::status::FALSE && ready.reason == reasons::CONFLICT.as_str())
        .then(|| format!("Gateway {} admits no stream: {}", gateway.name_any(), ready.message))
}
