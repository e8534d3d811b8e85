//! What one reconcile of a StreamRequest should do, as a pure function of what it observed:
//! the change to its holding on the Gateway, the phase decision, the relays wanted, the
//! status to report, the events and when to look again. `reconcile` observes (caches),
//! plans, acts (at most one Gateway status write, then the children) and reports; after a
//! Gateway write it plans once more on the Gateway as written, so what it reports is what
//! the Gateway holds.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::ResourceExt;
use scistream_api::{
    Endpoint, Gateway, Phase, Rate, Reservation, Role, StreamRequest, StreamRequestStatus, conditions,
    conditions::{Reason, reasons},
    keys,
};
use scistream_core::{
    allocator::{AllocError, Demand},
    phase::{self, Capacity, Decision, Facts},
    policy::{GatewayRef, Limit, Usage},
    relay::{self, NodeAddresses, PlanError, RelayMode},
};

use super::{
    admission,
    holding::{self, Change},
    notes, report, shared, targets,
};

/// How long after its creation a request's missing Hello-key Secret is not yet reported
/// (the plugin creates it just after the request).
pub const HELLO_KEY_GRACE: Duration = Duration::from_secs(5);

/// What a reconcile saw: the request and, from the caches, its Gateway, its relay pods and
/// ConfigMap, and the older requests waiting for capacity on the same Gateway.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The request.
    pub request: Arc<StreamRequest>,
    /// Its Gateway, if it exists.
    pub gateway: Option<Arc<Gateway>>,
    /// This side's relay pods, by node.
    pub pods: Vec<(String, Pod)>,
    /// What this side's shared relays show of it, by node, when its Gateway's relays are
    /// shared (`None`: a relay pod per stream).
    pub shared: Option<Vec<shared::OnRelay>>,
    /// This side's ConfigMap, if it exists.
    pub config_map: Option<Arc<ConfigMap>>,
    /// Older requests on the same Gateway waiting for ports or bandwidth, oldest first.
    pub older_waiting: Vec<Demand>,
    /// What keeps a Hello from being authenticated, if anything.
    pub hello_key_problem: Option<String>,
    /// Set when the request failed: it stays failed, with this reason and message.
    pub failed: Option<(Reason, String)>,
    /// The labels of the request's namespace, when the namespace cache has it.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// An older live request of this cluster with the same stream id and role
    /// (`namespace/name`): this one is then a duplicate.
    pub duplicate_of: Option<String>,
    /// The holding before this reconcile changed it (set when planning again after a write).
    pub held_before: Option<Reservation>,
    /// Ports of the Gateway's nodes held through other Gateways (never taken here).
    pub held_elsewhere: scistream_core::allocator::HeldElsewhere,
    /// When.
    pub now: Timestamp,
    /// How long a settled request goes unobserved (the drift safety net).
    pub resync: Duration,
}

impl Observed {
    /// Whether a relay of this side still runs (or is to): its pods, or its streams on shared
    /// relays.
    pub fn relays_present(&self) -> bool {
        !self.pods.is_empty() || self.shared.as_deref().is_some_and(shared::present)
    }
}

/// What the relays of this side should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayWork {
    /// Nothing to run (yet) and nothing to remove.
    Wait,
    /// Run the relays forwarding to `targets` at `rate` (what the Gateway promised).
    Run {
        /// Where to forward.
        targets: Vec<Endpoint>,
        /// Rate to enforce.
        rate: Rate,
    },
    /// Stop the relays and remove the side's objects.
    Remove,
}

/// What to do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The change to this request's holding on its Gateway (one status write).
    pub changes: Vec<Change>,
    /// The relay mode (Plain when the spec asks for an impossible one: nothing runs then).
    pub mode: RelayMode,
    /// The holding after `changes`, as far as the cached Gateway tells.
    pub reservation: Option<Reservation>,
    /// The phase decision and what it was made from.
    pub facts: Facts,
    /// See [`Facts`].
    pub decision: Decision,
    /// The relays.
    pub relays: RelayWork,
    /// Whether the side's key Secret must exist (encrypted relays are about to run).
    pub key_secret: bool,
    /// Listeners to report, or why they cannot be named.
    pub listeners: Result<Vec<String>, PlanError>,
    /// Warning events (reason, note).
    pub events: Vec<(Reason, String)>,
    /// Set when listeners moved in this reconcile: off lost nodes (`NodeLost`), or with a
    /// node's new address (`AddressChanged`).
    pub moved_note: Option<(Reason, String)>,
    /// When to look again.
    pub next: Duration,
}

fn age(since: Option<&Time>, now: Timestamp) -> Duration {
    since.map_or(Duration::ZERO, |t| {
        let secs = now.as_second().saturating_sub(t.0.as_second());
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    })
}

/// Node addresses from a Gateway's status.
pub fn addresses(gateway: &Gateway) -> BTreeMap<String, NodeAddresses> {
    gateway
        .status
        .iter()
        .flat_map(|s| &s.nodes)
        .filter_map(|n| {
            let wan = n.wan_address.as_ref()?.parse().ok()?;
            let lan = n.lan_address.as_ref()?.parse().ok()?;
            Some((n.name.clone(), NodeAddresses { wan, lan }))
        })
        .collect()
}

fn capacity_reason(e: &AllocError) -> Reason {
    match e {
        AllocError::NoReadyNodes => reasons::GATEWAY_NOT_READY,
        AllocError::PortsExhausted { .. } => reasons::PORTS_EXHAUSTED,
        AllocError::BandwidthExhausted { .. } => reasons::BANDWIDTH_EXHAUSTED,
    }
}

fn summary(r: &Reservation, rate: Rate) -> String {
    let parts: Vec<String> =
        r.nodes.iter().map(|a| format!("{} port(s) on {} {:?}", a.ports.len(), a.node, a.ports)).collect();
    format!("reserved {} and {rate}", parts.join(", "))
}

fn held_rate(r: &Reservation) -> Rate {
    Rate::from_bps(u64::try_from(r.bandwidth_bps).unwrap_or(0))
}

/// Whether a request waits for ports or bandwidth (its Reserved condition says so).
pub fn waits_for_capacity(sr: &StreamRequest) -> bool {
    let Some(status) = sr.status.as_ref() else { return false };
    matches!(status.phase, None | Some(Phase::Pending))
        && conditions::find(&status.conditions, conditions::types::RESERVED).is_some_and(|c| {
            c.status == "False"
                && (c.reason == reasons::PORTS_EXHAUSTED
                    || c.reason == reasons::BANDWIDTH_EXHAUSTED
                    || c.reason == reasons::NAMESPACE_LIMIT)
        })
}

/// Whether a request failed as the duplicate of another (it then hides no later one).
pub fn is_duplicate(sr: &StreamRequest) -> bool {
    failed(sr).is_some_and(|(r, _)| r == reasons::DUPLICATE_STREAM_ID)
}

/// A Failed request stays failed, with the reason it failed for.
pub fn failed(sr: &StreamRequest) -> Option<(Reason, String)> {
    let status = sr.status.as_ref()?;
    (status.phase == Some(Phase::Failed)).then(|| {
        let ready = conditions::find(&status.conditions, conditions::types::READY);
        let reason = match ready.map(|c| Reason::parse(&c.reason)) {
            Some(Some(Reason::HelloTimeout)) | None => Reason::HelloTimeout,
            Some(Some(r @ (Reason::PolicyDenied | Reason::DuplicateStreamId | Reason::ExceedsGateway))) => r,
            Some(_) => Reason::InvalidSpec,
        };
        (reason, ready.map(|c| c.message.clone()).unwrap_or_default())
    })
}

/// Plans one reconcile.
pub fn plan(o: &Observed) -> Plan {
    let sr = o.request.as_ref();
    let status = sr.status.clone().unwrap_or_default();
    let rate = sr.spec.rate.get();
    // One stream id per role per cluster: Hellos, relays and `kubectl scistream describe` find
    // a side by its stream id and role.
    let failed = o.failed.clone().or_else(|| {
        let first = o.duplicate_of.as_ref()?;
        let message = format!(
            "stream id {} is already used by the {:?} side {first} in this cluster; give this stream a new id (`kubectl scistream create` picks one)",
            sr.spec.stream_id, sr.spec.role
        );
        Some((reasons::DUPLICATE_STREAM_ID, message))
    });
    let uid = sr.uid().unwrap_or_default();
    let mut changes = Vec::new();
    let mut events = Vec::new();
    let mut moved_note = None;
    let mut yielded = false;
    let mut rate_refused = None;
    let Some(gateway) = o.gateway.as_deref() else {
        let message =
            format!("Gateway {} does not exist; `kubectl get gateways` lists this cluster's gateways", sr.spec.gateway);
        let capacity = Capacity::Waiting { reason: reasons::GATEWAY_NOT_FOUND, message };
        return finish(o, failed, capacity, None, RelayMode::Plain, changes, events, None, false);
    };
    let gw_status = gateway.status.as_ref();
    let mode = relay::mode(sr.spec.role, sr.spec.data_channel, gateway.spec.implementation);
    let mut reservation = holding::held(gw_status, &uid).cloned();
    // The Gateway's policy: a request it refuses fails before anything is reserved for it, and
    // a stream it stops allowing (its Hello's targets, a tightened policy) is released.
    let node_addresses = scistream_core::policy::node_addresses(gateway);
    let policy = GatewayRef { name: &sr.spec.gateway, policy: &gateway.spec.policy, node_addresses: &node_addresses };
    let failed = failed.or_else(|| admission::refused(o, &policy).map(|d| (reasons::POLICY_DENIED, d.message)));
    // A request the Gateway could not hold even empty fails now rather than wait for ever.
    let failed = failed.or_else(|| {
        let waiting = reservation.is_none() && mode.is_ok();
        waiting.then(|| admission::never_fits(gateway, &holding::demand(sr, &gateway.spec))).flatten()
    });
    let reserved_age = age(status.reserved_time.as_ref(), o.now);
    let capacity = match (&mode, &reservation, &failed) {
        (Err(e), _, _) => Capacity::Invalid { message: format!("{e}") },
        (_, Some(r), _) => Capacity::Reserved { age: reserved_age, summary: summary(r, held_rate(r)) },
        (_, None, Some(_)) => Capacity::Waiting { reason: reasons::HELLO_TIMEOUT, message: "released".to_owned() },
        (Ok(_), None, None) => {
            let me = holding::demand(sr, &gateway.spec);
            let nothing = scistream_api::GatewayStatus::default();
            let current = gw_status.unwrap_or(&nothing);
            let namespace = sr.namespace().unwrap_or_default();
            let held = Usage::of(&namespace, &current.reservations);
            if let Some(message) = admission::closed(gateway) {
                Capacity::Waiting { reason: reasons::GATEWAY_NOT_READY, message }
            } else if let Limit::Wait(message) = policy.check_limits(&namespace, held, rate) {
                Capacity::Waiting { reason: reasons::NAMESPACE_LIMIT, message }
            } else if let Some(older) =
                holding::yields_to(&gateway.spec, &o.held_elsewhere, current, &me, &o.older_waiting)
            {
                yielded = true;
                Capacity::Waiting {
                    reason: reasons::PORTS_EXHAUSTED,
                    message: format!(
                        "queued behind the older request {}, which needs the same capacity",
                        older.request
                    ),
                }
            } else {
                match holding::reserve(&gateway.spec, &o.held_elsewhere, current, &me) {
                    Ok(r) => {
                        let summary = summary(&r, held_rate(&r));
                        reservation = Some(r);
                        changes.push(Change::Reserve(me));
                        Capacity::Reserved { age: Duration::ZERO, summary }
                    }
                    Err(e) => Capacity::Waiting {
                        reason: capacity_reason(&e),
                        message: format!("Gateway {}: {e}", gateway.name_any()),
                    },
                }
            }
        }
    };
    if failed.is_none()
        && let Some(current) = reservation.clone()
    {
        let usable = holding::usable_nodes(gw_status);
        let lost: Vec<String> =
            current.nodes.iter().filter(|a| !usable.contains(&a.node)).map(|a| a.node.clone()).collect();
        let mut after = gw_status.cloned().unwrap_or_default();
        if !lost.is_empty()
            && holding::apply(&gateway.spec, &o.held_elsewhere, &mut after, &uid, &Change::Relocate(lost.clone()))
                .is_ok()
        {
            changes.push(Change::Relocate(lost));
            reservation = holding::held(Some(&after), &uid).cloned();
        }
        // Re-admit a changed spec.rate: the holding follows it when the Gateway has room.
        let wanted = i64::try_from(rate.bps()).unwrap_or(i64::MAX);
        if let Some(r) = reservation.as_ref().filter(|r| r.bandwidth_bps != wanted) {
            match holding::apply(&gateway.spec, &o.held_elsewhere, &mut after, &uid, &Change::Resize(wanted)) {
                Ok(_) => {
                    changes.push(Change::Resize(wanted));
                    reservation = holding::held(Some(&after), &uid).cloned();
                }
                Err(e) => {
                    let note = format!(
                        "spec.rate {rate} is refused, the stream keeps the {} it holds: Gateway {} {e}",
                        held_rate(r),
                        gateway.name_any()
                    );
                    // Said once per change of the spec, not on every look.
                    if status.observed_generation != sr.metadata.generation {
                        events.push((reasons::BANDWIDTH_EXHAUSTED, note.clone()));
                    }
                    rate_refused = Some(note);
                }
            }
        }
    }
    // Planning again after a write: listeners that moved are told about once.
    if let (Some(before), Some(now)) = (&o.held_before, &reservation) {
        let lost: Vec<String> = before
            .nodes
            .iter()
            .filter(|a| !now.nodes.iter().any(|b| b.node == a.node))
            .map(|a| a.node.clone())
            .collect();
        if !lost.is_empty() {
            let note = notes::moved_note(sr.spec.role, &lost, &sr.name_any());
            events.push((reasons::NODE_LOST, note.clone()));
            moved_note = Some((reasons::NODE_LOST, note));
        }
    }
    let mode_ok = mode.as_ref().ok().copied();
    let capacity = match (&capacity, &reservation) {
        (Capacity::Reserved { age, .. }, Some(r)) => {
            let held = summary(r, held_rate(r));
            let summary = match &rate_refused {
                Some(note) => format!("{held}; {note}"),
                None => held,
            };
            Capacity::Reserved { age: *age, summary }
        }
        _ => capacity,
    };
    let mut p = finish(
        o,
        failed,
        capacity,
        reservation,
        mode_ok.unwrap_or(RelayMode::Plain),
        changes,
        events,
        moved_note,
        mode_ok.is_some(),
    );
    if yielded {
        p.next = Duration::from_secs(2);
    }
    p
}

#[allow(clippy::too_many_arguments)]
fn finish(
    o: &Observed,
    failed: Option<(Reason, String)>,
    capacity: Capacity,
    reservation: Option<Reservation>,
    mode: RelayMode,
    mut changes: Vec<Change>,
    mut events: Vec<(Reason, String)>,
    mut moved_note: Option<(Reason, String)>,
    mode_valid: bool,
) -> Plan {
    let sr = o.request.as_ref();
    let status = sr.status.clone().unwrap_or_default();
    let targets = targets::targets(sr, mode);
    let nodes: Vec<String> = reservation.iter().flat_map(|r| &r.nodes).map(|a| a.node.clone()).collect();
    let facts = Facts {
        failed,
        capacity,
        needs_hello: targets::needs_hello(sr),
        hello_received: status.hello_time.is_some(),
        static_targets: sr.spec.role == Role::Producer && sr.spec.targets.is_some(),
        hello_timeout: sr.spec.hello_timeout.duration(),
        targets_missing: targets.as_ref().err().cloned(),
        relays: match &o.shared {
            Some(seen) => shared::relays(&nodes, seen),
            None => targets::relays(&nodes, &o.pods),
        },
    };
    let decision = phase::decide(&facts);
    let addresses = o.gateway.as_deref().map(addresses).unwrap_or_default();
    let live = facts.failed.is_none() && reservation.is_some() && mode_valid;
    let (relays, reservation) = if decision.release {
        // Ports and bandwidth go back once the relays are gone.
        let uid = sr.uid().unwrap_or_default();
        if !o.relays_present() && holding::held(o.gateway.as_deref().and_then(|g| g.status.as_ref()), &uid).is_some() {
            changes.push(Change::Release);
        }
        (RelayWork::Remove, None)
    } else if decision.run_relays
        && let (Some(r), Ok(t)) = (&reservation, &targets)
    {
        // Relays enforce what the gateway promised, not what was asked for (nothing when the
        // rate is a reservation only, as on SciStream 1.x streams).
        let enforcement = sr.status.as_ref().and_then(|s| s.rate_enforcement);
        (RelayWork::Run { targets: t.clone(), rate: targets::relay_rate(r, enforcement) }, reservation)
    } else {
        (RelayWork::Wait, reservation)
    };
    let listeners = match &reservation {
        Some(r) => {
            relay::listeners(sr.spec.role, &r.nodes, &addresses).map(|l| l.iter().map(ToString::to_string).collect())
        }
        None => Ok(Vec::new()),
    };
    // The same holding under other listeners: a held node's address changed (say so once).
    // The same holding as the status records it: a status older than a relocation (the
    // Gateway's cache ahead of the request's) is no address change.
    if let Ok(now) = &listeners
        && moved_note.is_none()
        && changes.is_empty()
        && o.held_before.is_none()
        && !now.is_empty()
        && !status.listeners.is_empty()
        && status.listeners != *now
        && reservation.as_ref().is_some_and(|r| r.nodes == status.allocations)
    {
        let note = notes::address_note(sr.spec.role, &status.listeners, now, &sr.name_any());
        events.push((reasons::ADDRESS_CHANGED, note.clone()));
        moved_note = Some((reasons::ADDRESS_CHANGED, note));
    }
    let removing = matches!(relays, RelayWork::Remove);
    let next = next_check(&decision, &facts, o, removing);
    Plan {
        changes,
        mode,
        reservation,
        key_secret: live && mode.encrypted() && !removing,
        facts,
        decision,
        relays,
        listeners,
        events,
        moved_note,
        next,
    }
}

/// When to look again. Watches wake a request earlier: its own changes (spec, Hello,
/// deletion), its relay pods, and its Gateway gaining capacity or changing nodes.
fn next_check(decision: &Decision, facts: &Facts, o: &Observed, removing: bool) -> Duration {
    if removing && o.relays_present() {
        return Duration::from_secs(2);
    }
    if o.hello_key_problem.is_some() && decision.phase == Phase::AwaitingHello {
        // Secrets in users' namespaces are not watched: look again soon for the key.
        return Duration::from_secs(2);
    }
    match decision.phase {
        Phase::AwaitingHello => {
            let elapsed = match &facts.capacity {
                Capacity::Reserved { age, .. } => *age,
                _ => Duration::ZERO,
            };
            facts.hello_timeout.saturating_sub(elapsed).max(Duration::from_millis(500))
        }
        Phase::Pending => Duration::from_secs(30),
        Phase::Provisioning => Duration::from_secs(10),
        _ => o.resync,
    }
}

/// The status to report (`certificate` is the side's, once its key Secret exists) and the
/// Warning to publish about a missing Hello key the first time it is seen.
pub fn status(o: &Observed, p: &Plan, certificate: Option<String>) -> (StreamRequestStatus, Option<(Reason, String)>) {
    let sr = o.request.as_ref();
    let now = Time(o.now);
    let owned = report::Owned {
        phase: Some(p.decision.phase),
        listeners: p.listeners.clone().unwrap_or_default(),
        allocations: p.reservation.clone().map(|r| r.nodes).unwrap_or_default(),
        certificate,
        granted_rate: p.reservation.as_ref().map(|r| held_rate(r).to_string()),
    };
    let mut desired = report::desired(sr, &p.decision, owned, &now);
    let generation = sr.metadata.generation;
    let acknowledged = sr.annotations().get(keys::ANNOTATION_PEER_UPDATED).map(String::as_str);
    notes::listeners_moved(
        &mut desired.conditions,
        p.moved_note.as_ref().map(|(r, n)| (*r, n.as_str())),
        acknowledged,
        &desired.listeners,
        generation,
        &now,
    );
    let mut warning = None;
    let settled = age(sr.metadata.creation_timestamp.as_ref(), o.now) >= HELLO_KEY_GRACE;
    if p.decision.phase == Phase::AwaitingHello
        && let Some(problem) = o.hello_key_problem.as_ref().filter(|_| settled)
    {
        let current = sr.status.clone().unwrap_or_default();
        let already = conditions::find(&current.conditions, conditions::types::HELLO_RECEIVED)
            .is_some_and(|c| c.reason == reasons::HELLO_KEY_MISSING);
        if !already {
            warning = Some((reasons::HELLO_KEY_MISSING, problem.clone()));
        }
        notes::hello_key_missing(&mut desired.conditions, problem, generation, &now);
    }
    (desired, warning)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
