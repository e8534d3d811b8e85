//! A stream's holding on its Gateway (ports and bandwidth) as values: a [`Change`] is planned
//! against the cached Gateway and applied, with the same pure function, to the Gateway as
//! stored when it is written (optimistic concurrency). What is written is what the plan
//! meant, or nothing when the Gateway changed under it so that it no longer fits.

use scistream_api::{GatewaySpec, GatewayStatus, Rate, Reservation, StreamRequest};
use scistream_core::allocator::{self, AllocError, Demand, HeldElsewhere};

/// One change to a stream's holding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Take ports and bandwidth for this demand.
    Reserve(Demand),
    /// Move the ports held on these (lost) nodes to usable ones; ports elsewhere are kept.
    Relocate(Vec<String>),
    /// Hold this many bits per second instead.
    Resize(i64),
    /// Give everything back.
    Release,
}

/// Ready gateway nodes, from a Gateway's status.
pub fn usable_nodes(status: Option<&GatewayStatus>) -> Vec<String> {
    status.iter().flat_map(|s| &s.nodes).filter(|n| n.ready).map(|n| n.name.clone()).collect()
}

/// The holding of `uid`, if any.
pub fn held<'a>(status: Option<&'a GatewayStatus>, uid: &str) -> Option<&'a Reservation> {
    status.and_then(|s| s.reservations.iter().find(|r| r.uid == uid))
}

/// What `sr` asks of a Gateway: its connections' ports and bandwidth, and a port per node
/// for its relay pod's health listener where the relays are pods of their own that have one
/// (a shared relay serves one health endpoint for all its streams).
pub fn demand(sr: &StreamRequest, spec: &scistream_api::GatewaySpec) -> Demand {
    use kube::ResourceExt;
    Demand {
        request: format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any()),
        stream_id: sr.spec.stream_id.clone(),
        uid: sr.uid().unwrap_or_default(),
        connections: usize::try_from(sr.spec.num_connections).unwrap_or(1),
        rate: sr.spec.rate.get(),
        metrics_port: scistream_core::render::needs_health_port(spec.implementation)
            && spec.relay_model() == scistream_api::RelayModel::PerStream,
    }
}

fn bps(rate: Rate) -> i64 {
    i64::try_from(rate.bps()).unwrap_or(i64::MAX)
}

/// What `demand` would hold on the Gateway whose holdings are `status`, which holds nothing
/// for it yet; `status` is only read (a reconcile plans against the ledger's view, shared, and
/// with thousands of streams copying it for each admission was most of the planning's work).
pub fn reserve(
    spec: &GatewaySpec,
    elsewhere: &HeldElsewhere,
    status: &GatewayStatus,
    demand: &Demand,
) -> Result<Reservation, AllocError> {
    let nodes = usable_nodes(Some(status));
    allocator::reserve(&capacity(spec, elsewhere, &nodes, &status.reservations), demand)
}

/// What the allocator may hand out on the Gateway of `spec`, on `nodes`, beside `reservations`.
fn capacity<'a>(
    spec: &GatewaySpec,
    elsewhere: &'a HeldElsewhere,
    nodes: &'a [String],
    reservations: &'a [Reservation],
) -> allocator::Capacity<'a> {
    allocator::Capacity {
        port_range: spec.stream_ports(),
        bandwidth: spec.bandwidth.get(),
        nodes,
        reservations,
        elsewhere,
    }
}

/// Applies `change` for `uid` to `status`. `Ok(true)` when the status changed, `Ok(false)`
/// when it already was so, `Err` with the reason when the change does not fit (then
/// `status` is left as it was).
/// Ports in `elsewhere` (held through other Gateways) are never taken.
pub fn apply(
    spec: &GatewaySpec,
    elsewhere: &HeldElsewhere,
    status: &mut GatewayStatus,
    uid: &str,
    change: &Change,
) -> Result<bool, AllocError> {
    match change {
        Change::Reserve(demand) => {
            if status.reservations.iter().any(|r| r.uid == demand.uid) {
                return Ok(false);
            }
            let r = reserve(spec, elsewhere, status, demand)?;
            status.reservations.push(r);
            Ok(true)
        }
        Change::Relocate(lost) => {
            let nodes = usable_nodes(Some(status));
            let mut reservations = status.reservations.clone();
            for node in lost {
                match allocator::relocate(&capacity(spec, elsewhere, &nodes, &reservations), uid, node)? {
                    Some(r) => {
                        for slot in reservations.iter_mut().filter(|x| x.uid == r.uid) {
                            *slot = r.clone();
                        }
                    }
                    None => return Ok(false),
                }
            }
            let changed = reservations != status.reservations;
            status.reservations = reservations;
            Ok(changed)
        }
        Change::Resize(wanted) => {
            let declared = bps(spec.bandwidth.get());
            let others: i64 = status.reservations.iter().filter(|r| r.uid != uid).map(|r| r.bandwidth_bps).sum();
            let Some(slot) = status.reservations.iter_mut().find(|r| r.uid == uid) else { return Ok(false) };
            if slot.bandwidth_bps == *wanted {
                return Ok(false);
            }
            if *wanted > slot.bandwidth_bps && others.saturating_add(*wanted) > declared {
                let promised = Rate::from_bps(u64::try_from(others.saturating_add(slot.bandwidth_bps)).unwrap_or(0));
                let declared_rate = spec.bandwidth.get();
                return Err(AllocError::BandwidthExhausted {
                    requested: Rate::from_bps(u64::try_from(*wanted).unwrap_or(0)),
                    promised,
                    declared: declared_rate,
                    available: declared_rate.saturating_sub(Rate::from_bps(u64::try_from(others.max(0)).unwrap_or(0))),
                });
            }
            slot.bandwidth_bps = *wanted;
            Ok(true)
        }
        Change::Release => {
            let before = status.reservations.len();
            status.reservations.retain(|r| r.uid != uid);
            Ok(status.reservations.len() != before)
        }
    }
}

/// Applies every change in order; stops at the first that does not fit (the ones before it
/// stay applied). Returns whether anything changed and the first refusal.
pub fn apply_all(
    spec: &GatewaySpec,
    elsewhere: &HeldElsewhere,
    status: &mut GatewayStatus,
    uid: &str,
    changes: &[Change],
) -> (bool, Option<AllocError>) {
    let mut changed = false;
    for change in changes {
        match apply(spec, elsewhere, status, uid, change) {
            Ok(c) => changed |= c,
            Err(e) => return (changed, Some(e)),
        }
    }
    (changed, None)
}

/// The older request `me` must let go first, if any: one that fits the Gateway now and
/// would no longer fit once `me` holds its share. Requests that do not compete with `me`
/// for the same ports or bandwidth never hold it back. `older` is oldest first.
pub fn yields_to<'a>(
    spec: &GatewaySpec,
    elsewhere: &HeldElsewhere,
    status: &GatewayStatus,
    me: &Demand,
    older: &'a [Demand],
) -> Option<&'a Demand> {
    if older.is_empty() {
        return None;
    }
    let mut without = status.clone();
    let mut with = status.clone();
    if apply(spec, elsewhere, &mut with, &me.uid, &Change::Reserve(me.clone())).is_err() {
        return None; // `me` does not fit anyway: it waits on its own account
    }
    for o in older {
        let alone = apply(spec, elsewhere, &mut without, &o.uid, &Change::Reserve(o.clone()));
        let beside_me = apply(spec, elsewhere, &mut with, &o.uid, &Change::Reserve(o.clone()));
        if alone.is_ok() && beside_me.is_err() {
            return Some(o);
        }
    }
    None
}

#[cfg(test)]
#[path = "holding_tests.rs"]
pub(crate) mod tests;
