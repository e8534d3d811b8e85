//! The StreamRequest controller: reserve gateway capacity, await Hello, run the relays,
//! report, and on deletion release everything (finalizer).
//!
//! `reconcile` = finalizer(apply | cleanup). `apply` observes (caches, the Gateway's
//! reservations), asks `scistream_core::phase::decide`, acts (reservation, key Secret,
//! ConfigMap, pods: each idempotent on its own) and reports (status, events).

pub(crate) mod children;
pub mod notes;
pub mod report;
pub mod targets;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::ObjectRef,
    },
};
use scistream_api::{
    Gateway, GatewayStatus, Phase, Rate, Reservation, StreamRequest, conditions,
    conditions::{Reason, reasons},
    keys,
};
use scistream_core::{
    allocator::{self, AllocError, Demand},
    phase::{self, Capacity, Facts},
    relay::{self, NodeAddresses, RelayMode},
};

use crate::{
    children::Side,
    context::Context,
    error::{Error, Result},
    metrics::ErrorLabels,
    reservations::update_gateway_status,
};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "streamrequest";

/// How long after its creation a request's missing Hello-key Secret is not yet reported
/// (the plugin creates it just after the request).
pub const HELLO_KEY_GRACE: Duration = Duration::from_secs(5);

/// Reconciles one StreamRequest.
#[tracing::instrument(skip_all, fields(ns = %sr.namespace().unwrap_or_default(), name = %sr.name_any(), stream = %sr.spec.stream_id))]
pub async fn reconcile(sr: Arc<StreamRequest>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    ctx.caches_ready().await;
    let ns = sr.namespace().ok_or(Error::MissingField(".metadata.namespace"))?;
    let api: Api<StreamRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let action = finalizer(&api, keys::FINALIZER_STREAM_REQUEST, sr.clone(), |event| async {
        match event {
            Finalizer::Apply(sr) => apply(&sr, &ctx).await,
            Finalizer::Cleanup(sr) => cleanup(&sr, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.succeeded(&ObjectRef::from_obj(sr.as_ref()));
    Ok(action)
}

/// Backoff per object on failure; the reason is counted.
pub fn error_policy(sr: Arc<StreamRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempt = ctx.failed(ObjectRef::from_obj(sr.as_ref()));
    let reason = error.reason();
    ctx.metrics.errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason: reason.as_str() }).inc();
    if reason == crate::error::Reason::StillTerminating {
        tracing::debug!(error = %error, "waiting for relay pods to stop");
    } else if reason == crate::error::Reason::NotFound && sr.metadata.deletion_timestamp.is_some() {
        // A stale event for a request whose finalizer another reconcile already removed.
        tracing::debug!(error = %error, "request already gone");
    } else {
        tracing::warn!(error = %error, %reason, attempt, "reconcile failed");
    }
    Action::requeue(error.backoff(attempt.saturating_sub(1)))
}

/// The request's Gateway: from the cache, confirmed against the API on a miss (a cache that
/// lags must never make a live stream look orphaned).
async fn find_gateway(ctx: &Context, name: &str) -> Result<Option<Arc<Gateway>>> {
    if let Some(gw) = ctx.stores.gateways.get(&ObjectRef::new(name)) {
        return Ok(Some(gw));
    }
    let api: Api<Gateway> = Api::all(ctx.client.clone());
    Ok(api.get_opt(name).await.map_err(Error::kube(format!("read Gateway {name}")))?.map(Arc::new))
}

fn side<'a>(sr: &'a StreamRequest, gateway: &'a Gateway) -> Side<'a> {
    Side {
        request: format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any()),
        stream_id: &sr.spec.stream_id,
        role: sr.spec.role,
        gateway: &sr.spec.gateway,
        namespace: &gateway.spec.pod_namespace,
    }
}

/// Ready gateway nodes, from a Gateway's status.
fn usable_nodes(status: Option<&GatewayStatus>) -> Vec<String> {
    status.iter().flat_map(|s| &s.nodes).filter(|n| n.ready).map(|n| n.name.clone()).collect()
}

fn addresses(gateway: &Gateway) -> BTreeMap<String, NodeAddresses> {
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

fn demand(sr: &StreamRequest, rate: Rate, implementation: scistream_api::Implementation) -> Demand {
    Demand {
        request: format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any()),
        stream_id: sr.spec.stream_id.clone(),
        uid: sr.uid().unwrap_or_default(),
        connections: usize::try_from(sr.spec.num_connections).unwrap_or(1),
        rate,
        metrics_port: scistream_core::render::needs_health_port(implementation),
    }
}

fn capacity_reason(e: &AllocError) -> Reason {
    match e {
        AllocError::NoReadyNodes => reasons::GATEWAY_NOT_READY,
        AllocError::PortsExhausted { .. } => reasons::PORTS_EXHAUSTED,
        AllocError::BandwidthExhausted { .. } => reasons::BANDWIDTH_EXHAUSTED,
    }
}

/// An older request waiting for capacity on the same gateway that would fit now goes first.
fn queued_behind(ctx: &Context, sr: &StreamRequest, gateway: &Gateway) -> Option<String> {
    let mine = (sr.creation_timestamp(), sr.name_any());
    let reservations = gateway.status.as_ref().map(|s| s.reservations.clone()).unwrap_or_default();
    let nodes = usable_nodes(gateway.status.as_ref());
    let declared = gateway.spec.bandwidth.get();
    let cap = allocator::Capacity {
        port_range: gateway.spec.port_range,
        bandwidth: declared,
        nodes: &nodes,
        reservations: &reservations,
    };
    ctx.stores
        .requests
        .state()
        .iter()
        .filter(|o| o.spec.gateway == sr.spec.gateway && o.uid() != sr.uid() && o.metadata.deletion_timestamp.is_none())
        .filter(|o| (o.creation_timestamp(), o.name_any()) < mine)
        .filter(|o| o.status.as_ref().is_none_or(|s| matches!(s.phase, None | Some(Phase::Pending))))
        .filter(|o| !reservations.iter().any(|r| Some(&r.uid) == o.uid().as_ref()))
        .filter(|o| relay::mode(o.spec.role, o.spec.data_channel, gateway.spec.implementation).is_ok())
        .find(|o| {
            let rate = o.spec.rate.get();
            allocator::reserve(&cap, &demand(o, rate, gateway.spec.implementation)).is_ok()
        })
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
}

/// Reserves capacity for `sr` on the gateway (idempotent; optimistic concurrency).
async fn reserve(
    ctx: &Context,
    sr: &StreamRequest,
    gateway: &Gateway,
    rate: Rate,
) -> Result<Result<Reservation, AllocError>> {
    let want = demand(sr, rate, gateway.spec.implementation);
    let mut outcome = Err(AllocError::NoReadyNodes);
    update_gateway_status(&ctx.client, &gateway.name_any(), |gw, st| {
        if let Some(existing) = st.reservations.iter().find(|r| r.uid == want.uid) {
            outcome = Ok(existing.clone());
            return false;
        }
        let nodes = usable_nodes(Some(st));
        let declared = gw.spec.bandwidth.get();
        let cap = allocator::Capacity {
            port_range: gw.spec.port_range,
            bandwidth: declared,
            nodes: &nodes,
            reservations: &st.reservations,
        };
        outcome = allocator::reserve(&cap, &want);
        match &outcome {
            Ok(r) => {
                st.reservations.push(r.clone());
                true
            }
            Err(_) => false,
        }
    })
    .await?;
    if let Ok(r) = &outcome {
        let ports: Vec<String> = r.nodes.iter().map(|a| format!("{}:{:?}", a.node, a.ports)).collect();
        tracing::info!(ports = %ports.join(" "), rate = %rate, "reserved");
    }
    Ok(outcome)
}

/// Moves the share of a reservation held on nodes that are no longer usable to usable ones
/// (ports on surviving nodes are kept). Returns the new reservation and the nodes lost.
async fn relocate(ctx: &Context, gateway: &Gateway, current: Reservation) -> Result<(Reservation, Vec<String>)> {
    let usable = usable_nodes(gateway.status.as_ref());
    let lost: Vec<String> =
        current.nodes.iter().filter(|a| !usable.contains(&a.node)).map(|a| a.node.clone()).collect();
    if lost.is_empty() {
        return Ok((current, lost));
    }
    let mut moved = current.clone();
    update_gateway_status(&ctx.client, &gateway.name_any(), |gw, st| {
        let nodes = usable_nodes(Some(st));
        let declared = gw.spec.bandwidth.get();
        let mut reservations = st.reservations.clone();
        for node in &lost {
            let cap = allocator::Capacity {
                port_range: gw.spec.port_range,
                bandwidth: declared,
                nodes: &nodes,
                reservations: &reservations,
            };
            match allocator::relocate(&cap, &current.uid, node) {
                Ok(Some(r)) => {
                    for slot in reservations.iter_mut().filter(|x| x.uid == r.uid) {
                        *slot = r.clone();
                    }
                }
                // Nowhere to go now: keep the holding; the relay on the lost node stays down.
                _ => return false,
            }
        }
        let changed = reservations != st.reservations;
        if let Some(r) = reservations.iter().find(|r| r.uid == current.uid) {
            moved = r.clone();
        }
        st.reservations = reservations;
        changed
    })
    .await?;
    Ok((moved, lost))
}

/// Re-admits a changed `spec.rate`: the reservation's bandwidth follows it when the gateway
/// has room (or when it shrinks). Returns the reservation as held afterwards and whether the
/// change was refused.
async fn resize(ctx: &Context, gateway: &Gateway, current: Reservation, rate: Rate) -> Result<(Reservation, bool)> {
    let wanted = i64::try_from(rate.bps()).unwrap_or(i64::MAX);
    if current.bandwidth_bps == wanted {
        return Ok((current, false));
    }
    let mut refused = false;
    let mut held = current.clone();
    update_gateway_status(&ctx.client, &gateway.name_any(), |gw, st| {
        let declared = i64::try_from(gw.spec.bandwidth.bps()).unwrap_or(i64::MAX);
        let others: i64 = st.reservations.iter().filter(|r| r.uid != current.uid).map(|r| r.bandwidth_bps).sum();
        let Some(slot) = st.reservations.iter_mut().find(|r| r.uid == current.uid) else { return false };
        held = slot.clone();
        if others.saturating_add(wanted) > declared {
            refused = true;
            return false;
        }
        slot.bandwidth_bps = wanted;
        held = slot.clone();
        true
    })
    .await?;
    Ok((held, refused))
}

/// Releases `uid`'s holding on the gateway (no-op if it holds nothing or the gateway is gone).
async fn release(ctx: &Context, gateway: &str, uid: &str) -> Result<()> {
    update_gateway_status(&ctx.client, gateway, |_, st| {
        let before = st.reservations.len();
        st.reservations.retain(|r| r.uid != uid);
        st.reservations.len() != before
    })
    .await?;
    Ok(())
}

fn summary(r: &Reservation, rate: Rate) -> String {
    let parts: Vec<String> =
        r.nodes.iter().map(|a| format!("{} port(s) on {} {:?}", a.ports.len(), a.node, a.ports)).collect();
    format!("reserved {} and {rate}", parts.join(", "))
}

fn now() -> Time {
    Time(Timestamp::now())
}

async fn apply(sr: &StreamRequest, ctx: &Context) -> Result<Action> {
    let status = sr.status.clone().unwrap_or_default();
    let rate = sr.spec.rate.get();
    let hello_timeout = sr.spec.hello_timeout.duration();
    let failed = (status.phase == Some(Phase::Failed)).then(|| {
        let ready = conditions::find(&status.conditions, conditions::types::READY);
        let reason = match ready.map(|c| Reason::parse(&c.reason)) {
            Some(Some(Reason::HelloTimeout)) | None => Reason::HelloTimeout,
            Some(_) => Reason::InvalidSpec,
        };
        (reason, ready.map(|c| c.message.clone()).unwrap_or_default())
    });
    let Some(gateway) = find_gateway(ctx, &sr.spec.gateway).await? else {
        let message =
            format!("Gateway {} does not exist; `kubectl get gateways` lists this cluster's gateways", sr.spec.gateway);
        return finish(
            ctx,
            sr,
            Capacity::Waiting { reason: reasons::GATEWAY_NOT_FOUND, message },
            failed,
            None,
            Default::default(),
        )
        .await;
    };
    let side = side(sr, &gateway);
    let mode = relay::mode(sr.spec.role, sr.spec.data_channel, gateway.spec.implementation);
    let mut reservation = gateway
        .status
        .as_ref()
        .and_then(|s| s.reservations.iter().find(|r| Some(&r.uid) == sr.uid().as_ref()).cloned());
    let capacity = match (&mode, &reservation, &failed) {
        (Err(e), _, _) => Capacity::Invalid { message: format!("{e}") },
        (_, Some(r), _) => Capacity::Reserved { age: age(status.reserved_time.as_ref()), summary: summary(r, rate) },
        (_, None, Some(_)) => Capacity::Waiting { reason: reasons::HELLO_TIMEOUT, message: "released".to_owned() },
        (Ok(_), None, None) => match queued_behind(ctx, sr, &gateway) {
            Some(older) => Capacity::Waiting {
                reason: reasons::PORTS_EXHAUSTED,
                message: format!("queued behind the older request {older}, which fits first"),
            },
            None => match reserve(ctx, sr, &gateway, rate).await? {
                Ok(r) => {
                    let summary = summary(&r, rate);
                    reservation = Some(r);
                    Capacity::Reserved { age: Duration::ZERO, summary }
                }
                Err(e) => Capacity::Waiting {
                    reason: capacity_reason(&e),
                    message: format!("Gateway {}: {e}", gateway.name_any()),
                },
            },
        },
    };
    let mut moved_note = None;
    if failed.is_none()
        && let Some(current) = reservation.clone()
    {
        let (moved, lost) = relocate(ctx, &gateway, current.clone()).await?;
        if moved != current {
            let note = notes::moved_note(sr.spec.role, &lost, &sr.name_any());
            tracing::warn!(lost = %lost.join(","), "relocated listeners of lost gateway nodes");
            report::warn(ctx, sr, reasons::NODE_LOST, &note).await;
            moved_note = Some(note);
            reservation = Some(moved);
        }
    }
    if failed.is_none()
        && let Some(current) = reservation.clone()
    {
        let (held, refused) = resize(ctx, &gateway, current, rate).await?;
        if refused {
            let note = format!(
                "rate {rate} does not fit in Gateway {}'s remaining bandwidth; the stream keeps its reserved {}",
                gateway.name_any(),
                Rate::from_bps(u64::try_from(held.bandwidth_bps).unwrap_or(0))
            );
            report::warn(ctx, sr, reasons::BANDWIDTH_EXHAUSTED, &note).await;
        }
        reservation = Some(held);
    }
    let mode = mode.unwrap_or(RelayMode::Plain);
    let live = failed.is_none() && reservation.is_some();
    let certificate = if live && mode.encrypted() {
        Some(children::ensure_key_secret(ctx, &side).await?)
    } else {
        status.certificate.clone()
    };
    let targets = targets::targets(sr, mode);
    let existing = children::current_pods(ctx, &side).await?;
    let nodes: Vec<String> = reservation.iter().flat_map(|r| &r.nodes).map(|a| a.node.clone()).collect();
    let facts = Facts {
        failed: failed.clone(),
        capacity,
        needs_hello: targets::needs_hello(sr),
        hello_received: status.hello_time.is_some(),
        static_targets: sr.spec.role == scistream_api::Role::Producer && sr.spec.targets.is_some(),
        hello_timeout,
        targets_missing: targets.as_ref().err().cloned(),
        relays: targets::relays(&nodes, &existing),
    };
    let decision = phase::decide(&facts);
    let addresses = addresses(&gateway);
    if decision.release {
        if children::remove(ctx, &side).await? == 0 {
            release(ctx, &gateway.name_any(), &sr.uid().unwrap_or_default()).await?;
        }
        reservation = None;
    } else if decision.run_relays
        && let (Some(r), Ok(t)) = (&reservation, &targets)
    {
        let set = children::RelaySet {
            side: &side,
            gateway: &gateway,
            mode,
            reservation: r,
            addresses: &addresses,
            targets: t,
            rate: targets::relay_rate(r, status.rate_enforcement),
            peer_certificate: sr.spec.peer_certificate.as_deref(),
        };
        children::ensure_relays(ctx, &set, &existing).await?;
    }
    let listeners = match &reservation {
        Some(r) => relay::listeners(sr.spec.role, &r.nodes, &addresses)
            .map_err(Error::Plan)?
            .iter()
            .map(ToString::to_string)
            .collect(),
        None => Vec::new(),
    };
    let key_problem = match decision.phase {
        Phase::AwaitingHello => hello_key_problem(ctx, sr).await,
        _ => None,
    };
    let now = now();
    let acknowledged = sr.annotations().get(keys::ANNOTATION_PEER_UPDATED).map(String::as_str);
    let (generation, note) = (sr.metadata.generation, moved_note.as_deref());
    let owned = report::Owned {
        phase: Some(decision.phase),
        listeners,
        allocations: reservation.map(|r| r.nodes).unwrap_or_default(),
        certificate,
    };
    let mut desired = report::desired(sr, &decision, owned, &now);
    notes::listeners_moved(&mut desired.conditions, note, acknowledged, &desired.listeners, generation, &now);
    // `kubectl scistream create` makes the Secret right after the request: give it a moment.
    let settled = age(sr.metadata.creation_timestamp.as_ref()) >= HELLO_KEY_GRACE;
    if let Some(problem) = key_problem.as_ref().filter(|_| settled) {
        let already = conditions::find(&status.conditions, conditions::types::HELLO_RECEIVED)
            .is_some_and(|c| c.reason == reasons::HELLO_KEY_MISSING);
        if !already {
            report::warn(ctx, sr, reasons::HELLO_KEY_MISSING, problem).await;
        }
        notes::hello_key_missing(&mut desired.conditions, problem, generation, &now);
    }
    report::write(ctx, sr, desired, &decision).await?;
    if key_problem.is_some() {
        // Secrets in users' namespaces are not watched: look again soon for the key.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    Ok(next_check(&decision, &facts, ctx))
}

/// What keeps a Hello from being authenticated (the Hello-key Secret missing or without its
/// key), if anything. A failed read is logged and treated as no problem (the wait goes on as
/// before; the next reconcile looks again).
async fn hello_key_problem(ctx: &Context, sr: &StreamRequest) -> Option<String> {
    let reference = sr.spec.hello_key_secret_ref.as_ref()?;
    let ns = sr.namespace()?;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), &ns);
    match api.get_opt(&reference.name).await {
        Ok(secret) => notes::hello_key_problem(&ns, reference, secret.as_ref()),
        Err(e) => {
            tracing::warn!(error = %e, secret = %reference.name, "could not read the Hello-key Secret");
            None
        }
    }
}

/// Without a Gateway there is nothing to reserve on; report and wait for it to appear.
async fn finish(
    ctx: &Context,
    sr: &StreamRequest,
    capacity: Capacity,
    failed: Option<(Reason, String)>,
    certificate: Option<String>,
    relays: phase::Relays,
) -> Result<Action> {
    let facts = Facts {
        failed,
        capacity,
        needs_hello: targets::needs_hello(sr),
        hello_received: false,
        static_targets: false,
        hello_timeout: sr.spec.hello_timeout.duration(),
        targets_missing: None,
        relays,
    };
    let decision = phase::decide(&facts);
    let owned = report::Owned { phase: Some(decision.phase), certificate, ..Default::default() };
    report::write(ctx, sr, report::desired(sr, &decision, owned, &now()), &decision).await?;
    Ok(Action::requeue(ctx.config.resync))
}

fn age(since: Option<&Time>) -> Duration {
    since.map_or(Duration::ZERO, |t| {
        let secs = Timestamp::now().as_second().saturating_sub(t.0.as_second());
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    })
}

/// When to look again: at the Hello deadline while waiting for Hello, soon while relays
/// start, else the drift safety net (watches on the Gateway and pods wake us earlier).
fn next_check(decision: &phase::Decision, facts: &Facts, ctx: &Context) -> Action {
    match decision.phase {
        Phase::AwaitingHello => {
            let elapsed = match &facts.capacity {
                Capacity::Reserved { age, .. } => *age,
                _ => Duration::ZERO,
            };
            Action::requeue(facts.hello_timeout.saturating_sub(elapsed).max(Duration::from_millis(500)))
        }
        // Pending: waiting for ports or bandwidth, or for an older request to go first. Look
        // again soon: the Gateway watch that wakes us can run ahead of the Gateway cache read
        // here, and a wake-up that still sees the old holdings is the last one (found by
        // kind-tests/e2e/tests/concurrency.rs: streams queued behind one reserved long ago).
        Phase::Provisioning | Phase::Pending => Action::requeue(Duration::from_secs(5)),
        _ => Action::requeue(ctx.config.resync),
    }
}

/// Deletion: stop the relays, wait until they are gone, then free the ports and bandwidth.
/// Tolerates an apply that never ran or never finished, and a Gateway that no longer exists.
async fn cleanup(sr: &StreamRequest, ctx: &Context) -> Result<Action> {
    let uid = sr.uid().unwrap_or_default();
    let stopping = match find_gateway(ctx, &sr.spec.gateway).await? {
        Some(gateway) => children::remove(ctx, &side(sr, &gateway)).await?,
        // The Gateway is gone, and with it the namespace we would look in: search everywhere.
        None => children::remove_everywhere(ctx, sr).await?,
    };
    if stopping > 0 {
        return Err(Error::StillTerminating(stopping));
    }
    release(ctx, &sr.spec.gateway, &uid).await?;
    tracing::info!("released");
    Ok(Action::await_change())
}
