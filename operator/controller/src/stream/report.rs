//! Reporting a side's state: the status the operator owns (applied server-side, so the
//! control endpoint's Hello fields are left alone) and an event on each phase transition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use scistream_api::{Phase, StreamRequest, StreamRequestStatus, conditions, conditions::Reason, keys};
use scistream_core::phase::{Decision, Verdict};

use crate::{
    context::Context,
    error::{Error, Result},
    events::{Event, EventType},
};

/// The status fields the operator owns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Owned {
    /// Phase.
    pub phase: Option<Phase>,
    /// Listeners.
    pub listeners: Vec<String>,
    /// Nodes and ports.
    pub allocations: Vec<scistream_api::NodeAllocation>,
    /// Certificate.
    pub certificate: Option<String>,
    /// The bandwidth held on the Gateway (what the relays enforce).
    pub granted_rate: Option<String>,
}

fn merge(
    conds: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    type_: &str,
    v: &Verdict,
    generation: Option<i64>,
    now: &Time,
) {
    conditions::merge(conds, conditions::new(type_, v.status, v.reason, v.message.clone(), generation, now));
}

/// The whole status after `decision`, from the current one (Hello fields and timestamps are
/// carried over).
pub fn desired(sr: &StreamRequest, decision: &Decision, owned: Owned, now: &Time) -> StreamRequestStatus {
    let current = sr.status.clone().unwrap_or_default();
    let generation = sr.metadata.generation;
    let mut conds = current.conditions.clone();
    merge(&mut conds, conditions::types::RESERVED, &decision.reserved, generation, now);
    merge(&mut conds, conditions::types::HELLO_RECEIVED, &decision.hello, generation, now);
    merge(&mut conds, conditions::types::DATA_PATH_READY, &decision.data_path, generation, now);
    merge(&mut conds, conditions::types::READY, &decision.ready, generation, now);
    let reserved = decision.reserved.status;
    let reserved_time = if reserved {
        current.reserved_time.clone().or_else(|| Some(now.clone()))
    } else {
        current.reserved_time.clone()
    };
    let hello_deadline = reserved_time
        .as_ref()
        .filter(|_| decision.phase == Phase::AwaitingHello)
        .and_then(|t| t.0.checked_add(sr.spec.hello_timeout.duration()).ok())
        .map(Time);
    StreamRequestStatus {
        phase: owned.phase,
        listeners: owned.listeners,
        allocations: owned.allocations,
        certificate: owned.certificate,
        granted_rate: owned.granted_rate,
        reserved_time,
        hello_deadline,
        ready_time: if decision.phase == Phase::Ready {
            current.ready_time.clone().or_else(|| Some(now.clone()))
        } else {
            current.ready_time.clone()
        },
        failed_time: if decision.phase == Phase::Failed {
            current.failed_time.clone().or_else(|| Some(now.clone()))
        } else {
            None
        },
        conditions: conds,
        observed_generation: generation,
        ..current
    }
}

/// The operator's part of the status as an apply patch: everything but the fields the
/// control endpoint owns (`prodListeners`, `helloTime`, `rateEnforcement`) and the transfer
/// poller's `transfer`.
fn apply_body(status: &StreamRequestStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("prodListeners");
        map.remove("helloTime");
        map.remove("rateEnforcement");
        map.remove("transfer");
    }
    serde_json::json!({
        "apiVersion": StreamRequest::api_version(&()),
        "kind": StreamRequest::kind(&()),
        "status": value,
    })
}

/// Writes `status` if it differs from `current` (the status as stored, or as this reconcile
/// last wrote it), and publishes an event when the phase changed. Returns whether anything
/// was written.
pub async fn write(
    ctx: &Context,
    sr: &StreamRequest,
    current: &StreamRequestStatus,
    status: StreamRequestStatus,
    decision: &Decision,
) -> Result<bool> {
    if *current == status {
        return Ok(false);
    }
    let ns = sr.namespace().ok_or(Error::MissingField(".metadata.namespace"))?;
    let api: Api<StreamRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PatchParams::apply(keys::FIELD_MANAGER_OPERATOR).force();
    api.patch_status(&sr.name_any(), &params, &Patch::Apply(apply_body(&status)))
        .await
        .map_err(Error::kube(format!("write the status of StreamRequest {ns}/{}", sr.name_any())))?;
    if current.phase != status.phase {
        let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
        tracing::info!(phase = %phase, reason = %decision.ready.reason, "phase changed");
        let warning = matches!(status.phase, Some(Phase::Failed));
        let reason = if decision.ready.status { "Ready" } else { decision.ready.reason.as_str() };
        let type_ = if warning { EventType::Warning } else { EventType::Normal };
        publish(ctx, sr, type_, reason, &format!("{phase}: {}", decision.ready.message)).await;
    }
    Ok(true)
}

/// Publishes a Warning event (best effort: a failed event never fails a reconcile).
pub async fn warn(ctx: &Context, sr: &StreamRequest, reason: Reason, note: &str) {
    publish(ctx, sr, EventType::Warning, reason.as_str(), note).await;
}

/// Publishes an event about `sr` (the publisher cuts the note to the API's 1 kB). Best effort.
async fn publish(ctx: &Context, sr: &StreamRequest, type_: EventType, reason: &str, note: &str) {
    let event = Event { type_, reason, note, action: "Reconcile" };
    if let Err(e) = ctx.events.publish(event, &sr.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}
