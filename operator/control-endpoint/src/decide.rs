//! Pure decisions of the handlers about a StreamRequest's state: which candidate a Hello is
//! for, whether it can take a Hello and what it changes, whether a legacy call may act on a
//! stream, and what a blocked `req` should answer.

use std::sync::Arc;

use kube::ResourceExt;
use scistream_api::{Phase, Role, StreamRequest, conditions};

use crate::{auth::Identity, error::Error, legacy};

/// `ns/name` of a StreamRequest, for messages.
pub fn display(sr: &StreamRequest) -> String {
    format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any())
}

/// The candidates of a Hello in the order they are tried (the first one its credential opens
/// takes it; one cluster may hold both sides of a stream):
/// 1. the request whose legacy `req` waits on the Hello's own connection (`waiting_here`,
///    its name): `s2uc` sends its Hello on the channel of its `req`, with role `PROD` even
///    from `outbound-request`, so the role cannot tell the sides apart;
/// 2. those whose role matches the Hello's;
/// 3. those still waiting for a Hello before those that had one.
pub fn order_candidates(
    mut candidates: Vec<Arc<StreamRequest>>,
    role: Option<Role>,
    waiting_here: Option<&str>,
) -> Vec<Arc<StreamRequest>> {
    candidates.sort_by_key(|sr| {
        let here = waiting_here.is_some_and(|name| name == sr.name_any());
        let had_hello = sr.status.as_ref().is_some_and(|s| s.hello_time.is_some());
        (!here, Some(sr.spec.role) != role, had_hello)
    });
    candidates
}

/// What a producer's Hello changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerHello {
    /// Nothing: it repeats what the stream has (or lists nothing new).
    Unchanged,
    /// Its endpoints go to `status.prodListeners`, which the relays forward to.
    Record,
    /// Its endpoints go to `status.prodListeners` and `spec.targets`: a stream a legacy `req`
    /// created, whose relays forward to the targets its `update` set, follows its latest Hello.
    Retarget,
}

/// What the Hello of a producer application listing `listeners` does to `sr` (the producer
/// side), or why it is refused. The relays forward to `spec.targets` when set, else to
/// `status.prodListeners`; a Hello never leaves status saying one thing while the relays do
/// another.
pub fn producer_hello(sr: &StreamRequest, listeners: &[String]) -> Result<ProducerHello, Error> {
    let recorded = sr.status.as_ref().map(|s| s.prod_listeners.as_slice()).unwrap_or_default();
    if listeners.is_empty() {
        if recorded.is_empty() && sr.spec.targets.is_none() {
            return Err(Error::InvalidArgument(format!(
                "StreamRequest {} is the producer side: its Hello must list the producer application's \
                 endpoints in prod_listeners",
                display(sr)
            )));
        }
        return Ok(ProducerHello::Unchanged);
    }
    match &sr.spec.targets {
        Some(targets) if targets.as_slice() != listeners => {
            if legacy::is_legacy(sr.annotations()) {
                Ok(ProducerHello::Retarget)
            } else {
                Err(Error::FailedPrecondition(format!(
                    "StreamRequest {} forwards to its spec.targets {targets:?}, not to what a Hello lists; to send \
                     the stream to {listeners:?}, change spec.targets (`kubectl edit streamrequest`)",
                    display(sr)
                )))
            }
        }
        _ if recorded == listeners => Ok(ProducerHello::Unchanged),
        _ => Ok(ProducerHello::Record),
    }
}

/// Whether a legacy `update` or `release` from `caller` (`None`: the `none` auth mode) sending
/// `credential` may act on `sr`: only streams a legacy `req` created, and in the authenticated
/// modes only by the user who created them (streams created in the `none` mode, which name no
/// user, by the same credential). RBAC is checked on top of this.
pub fn may_change(sr: &StreamRequest, caller: Option<&Identity>, credential: &str) -> Result<(), Error> {
    let annotations = sr.annotations();
    if !legacy::is_legacy(annotations) {
        return Err(Error::PermissionDenied(format!(
            "StreamRequest {} (stream {}) was not created through the SciStream 1.x interface, so 1.x update and \
             release do not act on it; use `kubectl scistream release {}` or kubectl",
            display(sr),
            sr.spec.stream_id,
            sr.spec.stream_id
        )));
    }
    let Some(caller) = caller else { return Ok(()) };
    let allowed = match annotations.get(legacy::ANNOTATION_CREATOR) {
        Some(creator) => creator == &caller.user,
        None => annotations
            .get(legacy::ANNOTATION_CREDENTIAL)
            .is_some_and(|d| crate::auth::hello_accepted(credential, None, Some(d))),
    };
    if allowed {
        return Ok(());
    }
    let creator = annotations.get(legacy::ANNOTATION_CREATOR).map_or_else(String::new, |c| format!(" by user {c:?}"));
    Err(Error::PermissionDenied(format!(
        "StreamRequest {} was created{creator} through the SciStream 1.x interface; only its creator may update or \
         release it there (an administrator can `kubectl delete streamrequest -n {} {}`)",
        display(sr),
        sr.namespace().unwrap_or_default(),
        sr.name_any()
    )))
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
    /// Refused by the Gateway's policy.
    Denied,
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
        let reason = |r| condition(sr, conditions::types::READY).is_some_and(|c| c.reason == r);
        let timeout = reason(conditions::reasons::HELLO_TIMEOUT);
        let kind = if timeout {
            FailKind::Timeout
        } else if reason(conditions::reasons::POLICY_DENIED) {
            FailKind::Denied
        } else if reason(conditions::reasons::EXCEEDS_GATEWAY) {
            FailKind::Exhausted
        } else {
            FailKind::Failed
        };
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
        && (c.reason == conditions::reasons::PORTS_EXHAUSTED
            || c.reason == conditions::reasons::BANDWIDTH_EXHAUSTED
            || c.reason == conditions::reasons::NAMESPACE_LIMIT)
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

    fn with(mut sr: StreamRequest, f: impl FnOnce(&mut StreamRequest)) -> StreamRequest {
        f(&mut sr);
        sr
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn cond(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason, "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn candidates_of_the_hello_role_come_first() {
        let c = vec![Arc::new(sr("Producer", false, json!({}))), Arc::new(sr("Consumer", false, json!({})))];
        let o = order_candidates(c.clone(), Some(Role::Consumer), None);
        assert_eq!(o[0].spec.role, Role::Consumer);
        let o = order_candidates(c, Some(Role::Producer), None);
        assert_eq!(o[0].spec.role, Role::Producer);
    }

    #[test]
    fn a_legacy_hello_goes_to_the_req_waiting_on_its_connection_whatever_its_role() {
        // Both sides of a legacy stream on one endpoint: the producer had its Hello, the
        // consumer's req waits; s2uc outbound-request's Hello says PROD.
        let hello = json!({"helloTime": "2026-01-01T00:00:00Z"});
        let c = vec![Arc::new(sr("Producer", true, hello)), Arc::new(sr("Consumer", true, json!({})))];
        let o = order_candidates(c.clone(), Some(Role::Producer), Some("Consumer"));
        assert_eq!(o[0].spec.role, Role::Consumer);
        // A Hello on another connection (appctrl) goes by its role.
        let o = order_candidates(c.clone(), Some(Role::Producer), None);
        assert_eq!(o[0].spec.role, Role::Producer);
        // Without a role, a request still waiting for its Hello comes first.
        let o = order_candidates(c, None, None);
        assert_eq!(o[0].spec.role, Role::Consumer);
    }

    #[test]
    fn a_producer_hello_records_retargets_a_legacy_stream_or_is_refused() {
        let one = strings(&["192.0.2.5:7000"]);
        let two = strings(&["192.0.2.6:7000"]);
        let fresh = sr("Producer", false, json!({}));
        assert_eq!(producer_hello(&fresh, &one).unwrap(), ProducerHello::Record);
        assert_eq!(producer_hello(&fresh, &[]).unwrap_err().code(), tonic::Code::InvalidArgument);
        let recorded = sr("Producer", false, json!({"prodListeners": one}));
        assert_eq!(producer_hello(&recorded, &one).unwrap(), ProducerHello::Unchanged);
        assert_eq!(producer_hello(&recorded, &[]).unwrap(), ProducerHello::Unchanged, "nothing listed");
        assert_eq!(producer_hello(&recorded, &two).unwrap(), ProducerHello::Record, "the relays follow the Hello");
        // After a legacy update set spec.targets, a second Hello moves the targets too.
        let updated = with(sr("Producer", true, json!({"prodListeners": one})), |s| s.spec.targets = Some(one.clone()));
        assert_eq!(producer_hello(&updated, &one).unwrap(), ProducerHello::Unchanged);
        assert_eq!(producer_hello(&updated, &two).unwrap(), ProducerHello::Retarget);
        // Static targets of a stream made otherwise are not a Hello's to change.
        let fixed = with(sr("Producer", false, json!({})), |s| s.spec.targets = Some(one.clone()));
        assert_eq!(producer_hello(&fixed, &one).unwrap(), ProducerHello::Record);
        let e = producer_hello(&fixed, &two).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("spec.targets"), "{e}");
    }

    #[test]
    fn legacy_calls_act_only_on_legacy_streams_of_their_creator() {
        let alice = Identity { user: "alice".into(), groups: vec![], uid: None };
        let bob = Identity { user: "bob".into(), groups: vec![], uid: None };
        let plugin_made = sr("Producer", false, json!({}));
        for caller in [None, Some(&alice)] {
            let e = may_change(&plugin_made, caller, "t").unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            assert!(e.to_string().contains("kubectl scistream release s"), "{e}");
        }
        let by_alice = with(sr("Producer", true, json!({})), |s| {
            s.annotations_mut().insert(legacy::ANNOTATION_CREATOR.into(), "alice".into());
        });
        assert!(may_change(&by_alice, Some(&alice), "a-new-token").is_ok(), "tokens change, users do not");
        let e = may_change(&by_alice, Some(&bob), "t").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("by user \"alice\""), "{e}");
        assert!(may_change(&by_alice, None, "t").is_ok(), "mode none: anyone, as in 1.x");
        // Made in mode none (no user recorded): the creating credential.
        let anonymous = with(sr("Producer", false, json!({})), |s| {
            s.annotations_mut().insert(legacy::ANNOTATION_CREDENTIAL.into(), legacy::credential_digest("tok"));
        });
        assert!(may_change(&anonymous, Some(&alice), "tok").is_ok());
        assert!(may_change(&anonymous, Some(&alice), "other").is_err());
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
        let denied =
            sr("Producer", true, json!({"phase": "Failed", "conditions": [cond("Ready", "False", "PolicyDenied")]}));
        assert!(matches!(req_outcome(Some(&denied)), ReqOutcome::Fail { kind: FailKind::Denied, .. }));
        let too_big =
            sr("Producer", true, json!({"phase": "Failed", "conditions": [cond("Ready", "False", "ExceedsGateway")]}));
        assert!(matches!(req_outcome(Some(&too_big)), ReqOutcome::Fail { kind: FailKind::Exhausted, .. }));
        let limited = sr(
            "Producer",
            true,
            json!({"phase": "Pending", "conditions": [cond("Reserved", "False", "NamespaceLimit")]}),
        );
        assert!(matches!(req_outcome(Some(&limited)), ReqOutcome::Fail { kind: FailKind::Exhausted, .. }));
    }
}
