//! The StreamRequest controller: reserve gateway capacity, await Hello, run the relays,
//! report, and on deletion release everything (finalizer).
//!
//! `reconcile` = finalizer(apply | cleanup). `apply` observes (from the caches: the request,
//! its Gateway with the holdings the ledger keeps, its relay pods and ConfigMap, the requests
//! queued before it), plans ([`plan::plan`], pure), acts (the holding changed in the ledger
//! and recorded in the request's status before any relay uses it, then the key Secret,
//! ConfigMap and pods, each idempotent on its own and skipped when already so) and reports
//! (status, events).

mod admission;
pub(crate) mod children;
pub mod holding;
pub mod notes;
pub mod plan;
pub mod report;
pub mod shared;
mod shared_relays;
pub mod targets;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::ObjectRef,
    },
};
use scistream_api::{Gateway, Phase, RelayModel, StreamRequest, keys};
use scistream_core::{allocator::Demand, relay};

use crate::{
    children::Side,
    context::Context,
    error::{Error, Result},
    metrics::ErrorLabels,
    names,
};

use holding::Change;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "streamrequest";

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
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.note_reconciled(sr.uid());
    let action = action?;
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

/// The request as the caches show it, with what it depends on.
async fn observe(ctx: &Context, sr: &Arc<StreamRequest>) -> Result<plan::Observed> {
    let uid = sr.uid().unwrap_or_default();
    let gateway = find_gateway(ctx, &sr.spec.gateway).await?.map(|g| ctx.ledger.view_for(&g, &uid));
    let (mut pods, mut config_map, mut older_waiting) = (Vec::new(), None, Vec::new());
    let mut held_elsewhere = Default::default();
    let mut shared_seen = None;
    if let Some(gw) = gateway.as_deref() {
        held_elsewhere = ctx.ledger.held_elsewhere(&gw.name_any());
        let side = side(sr, gw);
        let status = gw.status.as_ref();
        let nodes = nodes_of(gw, &uid);
        for node in &nodes {
            let key = ObjectRef::new(&names::pod(side.stream_id, side.role, node)).within(side.namespace);
            if let Some(pod) = ctx.stores.pods.get(&key)
                && pod.annotations().get(keys::ANNOTATION_REQUEST) == Some(&side.request)
            {
                pods.push((node.clone(), pod.as_ref().clone()));
            }
        }
        if gw.spec.relay_model() == RelayModel::Shared
            && let Some(channel) = &ctx.channel
        {
            let key = shared::key(side.stream_id, side.role);
            let seen = nodes.into_iter().map(|node| {
                let relay = shared::relay(side.gateway, &node);
                shared::OnRelay {
                    desired: channel.hub.desired_config(&relay, &key).map(|c| c.generation),
                    reported: channel.hub.reported(&relay, &key),
                    connected: channel.hub.connected(&relay),
                    node,
                }
            });
            shared_seen = Some(seen.collect());
        }
        config_map = ctx
            .stores
            .config_maps
            .get(&ObjectRef::new(&names::config_map(side.stream_id, side.role)).within(side.namespace));
        if holding::held(status, &uid).is_none() {
            older_waiting = queued_before(ctx, sr, gw);
        }
    }
    let waiting_for_hello = targets::needs_hello(sr)
        && sr.status.as_ref().is_none_or(|s| s.hello_time.is_none() && s.phase != Some(Phase::Failed));
    let hello_key_problem = if waiting_for_hello { hello_key_problem(ctx, sr).await } else { None };
    Ok(plan::Observed {
        request: sr.clone(),
        gateway,
        pods,
        shared: shared_seen,
        config_map,
        older_waiting,
        hello_key_problem,
        failed: plan::failed(sr),
        namespace_labels: namespace_labels(ctx, sr).await?,
        duplicate_of: duplicate_of(ctx, sr),
        held_before: None,
        held_elsewhere,
        now: Timestamp::now(),
        resync: ctx.config.resync,
    })
}

/// The Gateway's nodes and those the request holds ports on (a lost node may still hold
/// them), sorted.
fn nodes_of(gw: &Gateway, uid: &str) -> Vec<String> {
    let status = gw.status.as_ref();
    let mut nodes: Vec<String> = status.iter().flat_map(|s| &s.nodes).map(|n| n.name.clone()).collect();
    nodes.extend(holding::held(status, uid).iter().flat_map(|r| &r.nodes).map(|a| a.node.clone()));
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// The labels of the request's namespace, from the cache or, when the cache has not seen it
/// yet (a namespace made just before the request), from the API server.
async fn namespace_labels(ctx: &Context, sr: &StreamRequest) -> Result<Option<BTreeMap<String, String>>> {
    let Some(ns) = sr.namespace() else { return Ok(None) };
    if let Some(namespace) = ctx.stores.namespaces.get(&ObjectRef::<Namespace>::new(&ns)) {
        return Ok(Some(namespace.labels().clone()));
    }
    let namespace = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&ns)
        .await
        .map_err(Error::kube(format!("read Namespace {ns}")))?;
    Ok(namespace.map(|n| n.labels().clone()))
}

/// The first other live request of this cluster with the same stream id and role, if it came
/// before `sr`: one that reserved before one that did not, then by creation time (whole
/// seconds), namespace and name, so that every reconcile orders them alike.
fn duplicate_of(ctx: &Context, sr: &StreamRequest) -> Option<String> {
    let key = |o: &StreamRequest| {
        let reserved = o.status.as_ref().is_some_and(|s| s.reserved_time.is_some());
        (!reserved, o.creation_timestamp(), o.namespace(), o.name_any())
    };
    let mine = key(sr);
    ctx.stores
        .requests
        .state()
        .into_iter()
        .filter(|o| o.spec.stream_id == sr.spec.stream_id && o.spec.role == sr.spec.role && o.uid() != sr.uid())
        .filter(|o| o.metadata.deletion_timestamp.is_none() && !plan::is_duplicate(o))
        .filter(|o| key(o) < mine)
        .min_by_key(|o| key(o))
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
}

/// Older requests on the same Gateway waiting for ports or bandwidth, oldest first.
fn queued_before(ctx: &Context, sr: &StreamRequest, gateway: &Gateway) -> Vec<Demand> {
    let mine = (sr.creation_timestamp(), sr.name_any());
    let mut older: Vec<Arc<StreamRequest>> = ctx
        .stores
        .requests
        .state()
        .into_iter()
        .filter(|o| o.spec.gateway == sr.spec.gateway && o.uid() != sr.uid() && o.metadata.deletion_timestamp.is_none())
        .filter(|o| plan::waits_for_capacity(o))
        .filter(|o| (o.creation_timestamp(), o.name_any()) < mine)
        .filter(|o| relay::mode(o.spec.role, o.spec.data_channel, gateway.spec.implementation).is_ok())
        .collect();
    older.sort_by_key(|o| (o.creation_timestamp(), o.name_any()));
    older.iter().map(|o| holding::demand(o, &gateway.spec)).collect()
}

/// Makes the planned change of `uid`'s holding in the ledger and returns the Gateway with
/// the holdings after it. A part that no longer fits (another request took the capacity
/// since the plan was made) is not made, and the plan made again says so.
fn change_holding(ctx: &Context, gateway: &Gateway, uid: &str, changes: &[Change]) -> Result<Arc<Gateway>> {
    let applied = ctx.ledger.apply(gateway, uid, changes)?;
    if let Some(e) = &applied.refusal {
        tracing::info!(reason = %e, "the Gateway changed since it was read; planning again");
    }
    if let Some(r) = holding::held(applied.gateway.status.as_ref(), uid) {
        if applied.changed && changes.iter().any(|c| matches!(c, Change::Reserve(_))) {
            let ports: Vec<String> = r.nodes.iter().map(|a| format!("{}:{:?}", a.node, a.ports)).collect();
            tracing::info!(ports = %ports.join(" "), bandwidth_bps = r.bandwidth_bps, "reserved");
        }
    } else if applied.changed && changes.contains(&Change::Release) {
        tracing::info!("released");
    }
    Ok(applied.gateway)
}

async fn apply(sr: &Arc<StreamRequest>, ctx: &Context) -> Result<Action> {
    let mut observed = observe(ctx, sr).await?;
    let mut plan = plan::plan(&observed);
    if !plan.changes.is_empty()
        && let Some(gateway) = observed.gateway.clone()
    {
        let uid = sr.uid().unwrap_or_default();
        let changed = change_holding(ctx, &gateway, &uid, &plan.changes)?;
        observed.held_before = holding::held(gateway.status.as_ref(), &uid).cloned();
        observed.gateway = Some(changed);
        if plan.decision.phase == Phase::Failed {
            observed.failed = Some((plan.decision.ready.reason, plan.decision.ready.message.clone()));
        }
        plan = plan::plan(&observed);
    }
    // The status as stored, or as this reconcile wrote it.
    let mut stored = sr.status.clone().unwrap_or_default();
    let mut certificate = stored.certificate.clone();
    if let Some(gateway) = observed.gateway.as_deref() {
        let side = side(sr, gateway);
        if plan.key_secret && (certificate.is_none() || !observed.relays_present()) {
            certificate = Some(children::ensure_key_secret(ctx, &side).await?);
        }
        match &plan.relays {
            plan::RelayWork::Run { targets, rate } => {
                let (Some(reservation), addresses) = (plan.reservation.as_ref(), plan::addresses(gateway)) else {
                    return Err(Error::MissingField("a reservation for the relays"));
                };
                // The holding is recorded before a relay binds its ports: the ledger a
                // restarted operator rebuilds from the requests' statuses then has it.
                let (desired, _) = plan::status(&observed, &plan, certificate.clone());
                if desired.allocations != stored.allocations || desired.granted_rate != stored.granted_rate {
                    report::write(ctx, sr, &stored, desired.clone(), &plan.decision).await?;
                    stored = desired;
                }
                let set = children::RelaySet {
                    side: &side,
                    gateway,
                    mode: plan.mode,
                    reservation,
                    addresses: &addresses,
                    targets,
                    rate: *rate,
                    peer_certificate: sr.spec.peer_certificate.as_deref(),
                };
                match (&ctx.channel, gateway.spec.relay_model()) {
                    (Some(channel), RelayModel::Shared) => {
                        let cm = observed.config_map.is_some();
                        shared_relays::run(ctx, channel, &set, &observed.pods, cm).await?;
                    }
                    (channel, _) => {
                        if let Some(channel) = channel {
                            shared_relays::remove(channel, &side);
                        }
                        children::ensure_relays(ctx, &set, &observed.pods, observed.config_map.as_deref()).await?;
                    }
                }
            }
            plan::RelayWork::Remove => {
                // The key Secret may exist while the status shows its certificate: once it is
                // deleted the certificate goes from the status too, so it is deleted once.
                let cm = observed.config_map.is_some();
                let shared = ctx.channel.as_ref().map_or(0, |c| shared_relays::remove(c, &side));
                let secret = cm || certificate.is_some() || shared > 0;
                children::remove_known(ctx, &side, &observed.pods, cm, secret).await?;
                certificate = None;
            }
            plan::RelayWork::Wait => {}
        }
    }
    if let Err(e) = &plan.listeners {
        return Err(Error::Plan(e.clone()));
    }
    let (desired, warning) = plan::status(&observed, &plan, certificate);
    for (reason, note) in plan.events.iter().chain(warning.iter()) {
        report::warn(ctx, sr, *reason, note).await;
    }
    report::write(ctx, sr, &stored, desired, &plan.decision).await?;
    Ok(Action::requeue(plan.next))
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

/// Deletion: stop the relays, wait until they are gone, then free the ports and bandwidth.
/// Tolerates an apply that never ran or never finished, and a Gateway that no longer exists.
async fn cleanup(sr: &StreamRequest, ctx: &Context) -> Result<Action> {
    let uid = sr.uid().unwrap_or_default();
    if let Some(channel) = &ctx.channel {
        channel.hub.remove_from_gateway(&sr.spec.gateway, &shared::key(&sr.spec.stream_id, sr.spec.role));
    }
    let stopping = match find_gateway(ctx, &sr.spec.gateway).await? {
        Some(gateway) => children::remove(ctx, &side(sr, &gateway)).await?,
        // The Gateway is gone, and with it the namespace we would look in: search everywhere.
        None => children::remove_everywhere(ctx, sr).await?,
    };
    if stopping > 0 {
        return Err(Error::StillTerminating(stopping));
    }
    if !ctx.ledger.seeded() {
        return Err(crate::ledger::NotSeeded.into());
    }
    if ctx.ledger.release(None, &uid) {
        tracing::info!("released");
    }
    Ok(Action::await_change())
}
