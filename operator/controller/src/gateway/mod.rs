//! The Gateway controller: finds the gateway's nodes and their addresses, checks its pod
//! namespace, releases the holdings of StreamRequests that no longer exist, and keeps the
//! status (nodes, ports, bandwidth, Ready) current.

mod in_use;
pub mod node_relays;
pub mod status;
pub mod sweep;

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::{
    api::core::v1::{Namespace, Node},
    jiff::Timestamp,
};
use kube::{Api, ResourceExt, runtime::controller::Action};
use scistream_api::{
    Gateway, GatewayNodeStatus, Reservation, StreamRequest,
    conditions::{self, Reason, reasons},
    keys,
};

use crate::{
    context::Context,
    error::{Error, Result},
    metrics::GatewayLabels,
    reservations::update_gateway_status,
};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "gateway";

fn selects(gateway: &Gateway, node: &Node) -> bool {
    let labels = node.labels();
    gateway.spec.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The label that decides whether a namespace may run privileged (hostNetwork) pods.
const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Why relays cannot run in the Gateway's pod namespace, if they cannot: the operator has no
/// Role there, or the namespace is missing or does not allow hostNetwork pods.
async fn namespace_problem(ctx: &Context, name: &str) -> Result<Option<(Reason, String)>> {
    if let Some(refusal) = ctx.config.gateway_namespaces.refusal(name) {
        return Ok(Some((reasons::NAMESPACE_NOT_PERMITTED, refusal)));
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let ns = api.get_opt(name).await.map_err(Error::kube(format!("read Namespace {name}")))?;
    let problem = match ns {
        None => Some(format!(
            "spec.podNamespace {name} does not exist; create it with the label {POD_SECURITY_ENFORCE}=privileged"
        )),
        Some(ns) => match ns.labels().get(POD_SECURITY_ENFORCE).map(String::as_str) {
            Some("privileged") | None => None,
            Some(level) => Some(format!(
                "namespace {name} enforces the {level} Pod Security level, but relays need hostNetwork; label it {POD_SECURITY_ENFORCE}=privileged"
            )),
        },
    };
    Ok(problem.map(|p| (reasons::NAMESPACE_NOT_PRIVILEGED, p)))
}

/// Uids of holdings whose StreamRequest is gone (checked against the API, not only the
/// cache, so a request the cache has not seen yet keeps its holding).
async fn vanished(ctx: &Context, held: &[Reservation]) -> Result<BTreeSet<String>> {
    let mut gone = BTreeSet::new();
    let live: BTreeSet<String> = ctx.stores.requests.state().iter().filter_map(|r| r.uid()).collect();
    for r in held {
        if live.contains(&r.uid) {
            continue;
        }
        let Some((ns, name)) = r.request.split_once('/') else {
            gone.insert(r.uid.clone());
            continue;
        };
        let api: Api<StreamRequest> = Api::namespaced(ctx.client.clone(), ns);
        let current = api.get_opt(name).await.map_err(Error::kube(format!("read StreamRequest {}", r.request)))?;
        if current.and_then(|c| c.uid()).as_deref() != Some(r.uid.as_str()) {
            gone.insert(r.uid.clone());
        }
    }
    Ok(gone)
}

/// Reconciles one Gateway.
#[tracing::instrument(skip_all, fields(gateway = %gateway.name_any()))]
pub async fn reconcile(gateway: Arc<Gateway>, ctx: Arc<Context>) -> Result<Action> {
    let result = reconcile_gateway(&gateway, &ctx).await;
    ctx.note_reconciled(gateway.uid());
    result
}

async fn reconcile_gateway(gateway: &Arc<Gateway>, ctx: &Arc<Context>) -> Result<Action> {
    let gateway = gateway.clone();
    let ctx = ctx.clone();
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    ctx.caches_ready().await;
    if !ctx.ledger.seeded() {
        return Err(crate::ledger::NotSeeded.into());
    }
    let name = gateway.name_any();
    let mut nodes: Vec<_> = ctx
        .stores
        .nodes
        .state()
        .iter()
        .filter(|n| selects(&gateway, n))
        .map(|n| (n.as_ref().clone(), status::node_status(&gateway.spec, n)))
        .collect();
    nodes.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let problem = namespace_problem(&ctx, &gateway.spec.pod_namespace).await?;
    let namespace_usable = problem.is_none();
    let problem = problem.or_else(|| channel_problem(&ctx, &gateway));
    let all_nodes = ctx.stores.nodes.state();
    let claim = |g: &Gateway| status::Claim {
        name: g.name_any(),
        created: g.metadata.creation_timestamp.as_ref().map(|t| t.0),
        range: g.spec.port_range,
        nodes: all_nodes.iter().filter(|n| selects(g, n)).map(|n| n.name_any()).collect(),
    };
    let others: Vec<status::Claim> =
        ctx.stores.gateways.state().iter().filter(|g| g.name_any() != name).map(|g| claim(g)).collect();
    let conflict = status::conflict(&claim(&gateway), &others);
    let (ready, reason, message) = status::readiness(&gateway.spec, &nodes, problem, conflict);
    let mut held = ctx.ledger.reservations(&name);
    for uid in vanished(&ctx, &held).await? {
        if ctx.ledger.release(Some(&name), &uid) {
            tracing::info!(uid = %uid, "released the holding of a StreamRequest that no longer exists");
        }
        held.retain(|r| r.uid != uid);
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    let generation = gateway.metadata.generation;
    let deleting = gateway.metadata.deletion_timestamp.is_some();
    let stored = update_gateway_status(&ctx.client, &ctx.gateway_writer, &name, Some(&gateway), &held, |_, st| {
        st.nodes = nodes.iter().map(|(_, s)| s.clone()).collect();
        let verdict = match in_use::deleting_note(&name, deleting, &held) {
            Some(note) => conditions::new(conditions::types::READY, false, reasons::IN_USE, note, generation, &now),
            None => conditions::new(conditions::types::READY, ready, reason, message.clone(), generation, &now),
        };
        conditions::merge(&mut st.conditions, verdict);
        st.observed_generation = generation;
        true
    })
    .await?;
    let mut again = false;
    if namespace_usable {
        if ctx.sweeps.due(&name, std::time::Instant::now(), ctx.config.resync)
            && let Err(e) = sweep::sweep(&ctx, &gateway).await
        {
            ctx.sweeps.forget(&name);
            return Err(e);
        }
        let ready: Vec<GatewayNodeStatus> = nodes.iter().filter(|(_, s)| s.ready).map(|(_, s)| s.clone()).collect();
        again = node_relays::reconcile(&ctx, &gateway, &ready).await?;
    }
    if let Some(stored) = &stored {
        let in_use = !held.is_empty();
        let has = stored.finalizers().iter().any(|f| f == keys::FINALIZER_GATEWAY);
        if let Some(change) = in_use::finalizer_change(has, deleting, in_use) {
            let api: Api<Gateway> = Api::all(ctx.client.clone());
            if in_use::apply(&api, stored, change).await? {
                tracing::info!(?change, "the in-use finalizer follows the streams");
            }
        }
    }
    if let Some(status) = stored.and_then(|g| g.status) {
        let labels = GatewayLabels { gateway: name.clone() };
        ctx.metrics.ports_in_use.get_or_create(&labels).set(i64::from(status.ports_in_use));
        ctx.metrics.ports_total.get_or_create(&labels).set(i64::from(status.ports_total));
        ctx.metrics.bandwidth_promised.get_or_create(&labels).set(status.bandwidth_promised_bps);
        let declared = gateway.spec.bandwidth.bps();
        ctx.metrics.bandwidth_declared.get_or_create(&labels).set(i64::try_from(declared).unwrap_or(i64::MAX));
    }
    let next = if again { std::time::Duration::from_secs(2) } else { ctx.config.resync };
    Ok(Action::requeue(next))
}

/// Why the Gateway's shared relays cannot run, if they cannot: the operator does not serve
/// the channel they are fed through.
fn channel_problem(ctx: &Context, gateway: &Gateway) -> Option<(Reason, String)> {
    (gateway.spec.relay_model() == scistream_api::RelayModel::Shared && ctx.channel.is_none()).then(|| {
        (
            reasons::RELAY_CHANNEL_OFF,
            "spec.s2ds.relayModel is Shared, but the operator does not serve the relay channel shared relays are fed through: install the chart with relayChannel.enabled=true (flag --relay-channel-addr), or set relayModel: PerStream".to_owned(),
        )
    })
}
