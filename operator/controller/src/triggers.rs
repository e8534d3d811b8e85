//! Which changes wake which reconciles (pure). A StreamRequest reconciles when something it
//! acts on changed: its spec, its deletion, its finalizers or annotations, or the Hello the
//! control endpoint recorded; not for the operator's own status writes nor the transfer
//! statistics. A Gateway change wakes every request on it when its spec or nodes changed,
//! and none when only its totals did: capacity given back wakes the requests waiting for it
//! from the ledger, where it is given back ([`crate::ledger::Notice`]). Nodes wake the
//! Gateways when what a Gateway reads of them changed, not on heartbeats.

use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use scistream_api::{Gateway, StreamRequest};

fn hash_of(value: &impl serde::Serialize) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(value).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The StreamRequest fields a reconcile acts on (see the module documentation).
pub fn request_predicate(sr: &StreamRequest) -> Option<u64> {
    let status = sr.status.as_ref();
    Some(hash_of(&(
        sr.uid(),
        sr.metadata.generation,
        sr.metadata.deletion_timestamp.is_some(),
        sr.finalizers(),
        sr.annotations(),
        status.and_then(|s| s.hello_time.as_ref()),
        status.map(|s| &s.prod_listeners),
    )))
}

/// The Node fields a Gateway reads: labels, annotations, taints, readiness and addresses.
pub fn node_predicate(node: &Node) -> Option<u64> {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    Some(hash_of(&(
        node.uid(),
        node.labels(),
        node.annotations(),
        node.spec.as_ref().and_then(|s| s.taints.as_ref()),
        node.spec.as_ref().and_then(|s| s.unschedulable),
        ready,
        status.and_then(|s| s.addresses.as_ref()),
    )))
}

/// The Gateway fields its own reconcile acts on: spec, deletion, and whether streams hold it
/// (its in-use finalizer), with how many while it is being deleted (its `InUse` message).
/// (The ledger wakes it too, on each change of its holdings.)
pub fn gateway_predicate(gw: &Gateway) -> Option<u64> {
    let held = gw.status.as_ref().map_or(0, |s| s.streams);
    let deleting = gw.metadata.deletion_timestamp.is_some();
    let counted = if deleting { held } else { i32::from(held > 0) };
    Some(hash_of(&(gw.uid(), gw.metadata.generation, deleting, counted)))
}

/// What of a Gateway matters to the requests on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayShape {
    layout: u64,
}

impl GatewayShape {
    /// The shape of `gw`.
    pub fn of(gw: &Gateway) -> Self {
        let status = gw.status.as_ref();
        let nodes: Vec<_> =
            status.iter().flat_map(|s| &s.nodes).map(|n| (&n.name, n.ready, &n.wan_address, &n.lan_address)).collect();
        // Its Ready verdict too: a Gateway that stops conflicting admits its waiting requests.
        let ready = status
            .and_then(|s| scistream_api::conditions::find(&s.conditions, scistream_api::conditions::types::READY))
            .map(|c| (&c.status, &c.reason));
        Self { layout: hash_of(&(gw.uid(), &gw.spec, nodes, ready)) }
    }
}

/// Which requests on a Gateway to wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Every request on it.
    All,
    /// The requests waiting for ports or bandwidth.
    Waiting,
    /// None.
    Nobody,
}

/// Whom a Gateway's change from `before` to `after` concerns (`None`: not seen / deleted).
pub fn wake(before: Option<&GatewayShape>, after: Option<&GatewayShape>) -> Wake {
    match (before, after) {
        (Some(b), Some(a)) if b.layout == a.layout => Wake::Nobody,
        _ => Wake::All,
    }
}

#[cfg(test)]
#[path = "triggers_tests.rs"]
mod tests;
