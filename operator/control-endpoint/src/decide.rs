//! Pure decisions of the handlers about a StreamRequest's state: which candidate a Hello is
//! for, whether it can take a Hello, and what a blocked `req` should answer.

use std::sync::Arc;

use kube::ResourceExt;
use scistream_api::{Phase, Role, StreamRequest, conditions};

use crate::error::Error;

/// `ns/name` of a StreamRequest, for messages.
pub fn display(sr: &StreamRequest) -> String {
    format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any())
}

/// The candidates of a Hello in the order they are tried: those whose role matches the
/// Hello's first (one cluster may hold both sides of a stream), then the others.
pub fn order_candidates(mut candidates: Vec<Arc<StreamRequest>>, role: Option<Role>) -> Vec<Arc<StreamRequest>> {
    candidates.sort_by_key(|sr| Some(sr.spec.role) != role);
    candidates
}

/// Whether a Hello with `role` may be for `sr`: legacy streams take any role (the s2uc
/// `outbound-request` quirk sends PROD for a consumer), others only their own.
pub fn role_fits(sr: &StreamRequest, role: Option<Role>) -> Result<(), Error> {
    match role {
        Some(r) if r != sr.spec.role && !crate::legacy::is_legacy(sr.annotations()) => {
            Err(Error::InvalidArgument(format!(
                "StreamRequest {} is the {:?} side; its Hello must say role {}",
                display(sr),
                sr.spec.role,
                sr.spec.role.legacy_name()
            )))
        }
        _ => Ok(()),
    }
}

/// Whether `sr` can take a Hello now.
pub fn accepts_hello(sr: &StreamRequest) -> Result<(), Error> {
    if sr.metadata.deletion_timestamp.is_some() {
        return Err(Error::FailedPrecondition(format!("StreamRequest {} is being released", display(sr))));
    }
    match sr.status.as_ref().and_then(|s| s.phase) {
        Some(Phase::Failed) => Err(Error::FailedPrecondition(format!(
            "StreamRequest {} has failed ({}); create the stream again",
            display(sr),
            ready_message(sr).unwrap_or_else(|| "see its conditions".into())
        ))),
        Some(Phase::Releasing) => {
            Err(Error::FailedPrecondition(format!("StreamRequest {} is being released", display(sr))))
        }
        _ => Ok(()),
    }
}

fn condition<'a>(
    sr: &'a StreamRequest,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    sr.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

fn ready_message(sr: &StreamRequest) -> Option<String> {
    condition(sr, conditions::types::READY).map(|c| format!("{}: {}", c.reason, c.message))
}

/// What a `req` blocked on `sr` should do next.
#[derive(Debug, PartialEq)]
pub enum ReqOutcome {
    /// Keep waiting.
    Wait,
    /// Hello arrived and listeners exist: answer.
    Answer {
        /// This side's listeners.
        listeners: Vec<String>,
        /// The Hello's endpoints (producer side).
        prod_listeners: Vec<String>,
    },
    /// Fail; `release` says whether to delete the request (1.x releases on failure).
    Fail {
        /// The error.
        error: String,
        /// gRPC code class.
        kind: FailKind,
    },
}

/// Classes of a failed `req`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FailKind {
    /// No Hello in time.
    Timeout,
    /// No capacity on the gateway.
    Exhausted,
    /// Failed for another reason, or deleted.
    Failed,
}

/// Decides a blocked `req` from the current state of its StreamRequest (`None`: deleted).
pub fn req_outcome(sr: Option<&StreamRequest>) -> ReqOutcome {
    let Some(sr) = sr else {
        return ReqOutcome::Fail {
            error: "the request was released while waiting for Hello".into(),
            kind: FailKind::Failed,
        };
    };
    let status = sr.status.clone().unwrap_or_default();
    if status.phase == Some(Phase::Failed) {
        let timeout =
            condition(sr, conditions::types::READY).is_some_and(|c| c.reason == conditions::reasons::HELLO_TIMEOUT);
        let kind = if timeout { FailKind::Timeout } else { FailKind::Failed };
        let error = if timeout {
            format!(
                "Hello not received within the timeout period ({}); the request was released",
                sr.spec.hello_timeout
            )
        } else {
            format!("the request failed: {}", ready_message(sr).unwrap_or_else(|| "see its conditions".into()))
        };
        return ReqOutcome::Fail { error, kind };
    }
    if let Some(c) = condition(sr, conditions::types::RESERVED)
        && c.status == conditions::status::FALSE
        && (c.reason == conditions::reasons::PORTS_EXHAUSTED || c.reason == conditions::reasons::BANDWIDTH_EXHAUSTED)
    {
        return ReqOutcome::Fail {
            error: format!("no capacity on the gateway: {}", c.message),
            kind: FailKind::Exhausted,
        };
    }
    if status.hello_time.is_some() && !status.listeners.is_empty() {
        return ReqOutcome::Answer { listeners: status.listeners, prod_listeners: status.prod_listeners };
    }
    ReqOutcome::Wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sr(role: &str, legacy: bool, status: serde_json::Value) -> StreamRequest {
        let annotations = if legacy { json!({crate::legacy::ANNOTATION_CREDENTIAL: "x"}) } else { json!({}) };
        serde_json::from_value(json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
            "metadata": {"name": role, "namespace": "ns", "annotations": annotations},
            "spec": {"streamId": "s", "role": role, "gateway": "dtn"},
            "status": status,
        }))
        .unwrap()
    }

    fn cond(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason, "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn candidates_of_the_hello_role_come_first() {
        let c = vec![Arc::new(sr("Producer", false, json!({}))), Arc::new(sr("Consumer", false, json!({})))];
        let o = order_candidates(c.clone(), Some(Role::Consumer));
        assert_eq!(o[0].spec.role, Role::Consumer);
        let o = order_candidates(c, Some(Role::Producer));
        assert_eq!(o[0].spec.role, Role::Producer);
    }

    #[test]
    fn role_is_checked_only_for_non_legacy_streams() {
        assert!(role_fits(&sr("Consumer", true, json!({})), Some(Role::Producer)).is_ok());
        let e = role_fits(&sr("Consumer", false, json!({})), Some(Role::Producer)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(role_fits(&sr("Consumer", false, json!({})), None).is_ok());
    }

    #[test]
    fn failed_or_releasing_streams_take_no_hello() {
        assert!(accepts_hello(&sr("Producer", false, json!({"phase": "AwaitingHello"}))).is_ok());
        for phase in ["Failed", "Releasing"] {
            let e = accepts_hello(&sr("Producer", false, json!({"phase": phase}))).unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        }
    }

    #[test]
    fn req_outcomes() {
        assert_eq!(req_outcome(Some(&sr("Producer", true, json!({"phase": "AwaitingHello"})))), ReqOutcome::Wait);
        let ready = sr(
            "Producer",
            true,
            json!({"phase": "Provisioning", "helloTime": "2026-01-01T00:00:00Z",
            "listeners": ["198.51.100.1:5100"], "prodListeners": ["192.0.2.9:7000"]}),
        );
        assert_eq!(
            req_outcome(Some(&ready)),
            ReqOutcome::Answer {
                listeners: vec!["198.51.100.1:5100".into()],
                prod_listeners: vec!["192.0.2.9:7000".into()]
            }
        );
        let timeout =
            sr("Producer", true, json!({"phase": "Failed", "conditions": [cond("Ready", "False", "HelloTimeout")]}));
        assert!(matches!(req_outcome(Some(&timeout)), ReqOutcome::Fail { kind: FailKind::Timeout, .. }));
        let full = sr(
            "Producer",
            true,
            json!({"phase": "Pending", "conditions": [cond("Reserved", "False", "PortsExhausted")]}),
        );
        assert!(matches!(req_outcome(Some(&full)), ReqOutcome::Fail { kind: FailKind::Exhausted, .. }));
        assert!(matches!(req_outcome(None), ReqOutcome::Fail { kind: FailKind::Failed, .. }));
    }
}
