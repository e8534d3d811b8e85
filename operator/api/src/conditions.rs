//! Condition types and reasons, and the pure merge of a new verdict into a condition list.
//!
//! Conditions follow `metav1.Condition`: `lastTransitionTime` changes only when `status`
//! flips, so a person reading `kubectl describe` sees since when something has been true.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The whole object is usable (Gateway) or streaming (StreamRequest).
    pub const READY: &str = "Ready";
    /// Ports and bandwidth are held on the gateway for this stream.
    pub const RESERVED: &str = "Reserved";
    /// The application controller's Hello arrived (or static targets made it unnecessary).
    pub const HELLO_RECEIVED: &str = "HelloReceived";
    /// Every S2DS pod of the stream is ready on every listener.
    pub const DATA_PATH_READY: &str = "DataPathReady";
    /// Listeners of this side moved off a lost gateway node (`True`) until `kubectl scistream
    /// update` told the peer side (`False`, reason `PeerUpdated`). Absent if none ever moved.
    pub const LISTENERS_MOVED: &str = "ListenersMoved";
}

/// Condition reasons (CamelCase, stable: scripts and alerts match on them).
pub mod reasons {
    /// Ports and bandwidth were reserved.
    pub const RESERVED: &str = "Reserved";
    /// Waiting for gateway ports to free up.
    pub const PORTS_EXHAUSTED: &str = "PortsExhausted";
    /// Waiting for gateway bandwidth to free up.
    pub const BANDWIDTH_EXHAUSTED: &str = "BandwidthExhausted";
    /// The named Gateway does not exist.
    pub const GATEWAY_NOT_FOUND: &str = "GatewayNotFound";
    /// The Gateway exists but is not usable.
    pub const GATEWAY_NOT_READY: &str = "GatewayNotReady";
    /// Waiting for the application controller's Hello.
    pub const AWAITING_HELLO: &str = "AwaitingHello";
    /// Hello arrived.
    pub const HELLO_RECEIVED: &str = "HelloReceived";
    /// Static `spec.targets` make Hello unnecessary.
    pub const STATIC_TARGETS: &str = "StaticTargets";
    /// No Hello arrived within `spec.helloTimeout`.
    pub const HELLO_TIMEOUT: &str = "HelloTimeout";
    /// The Hello-key Secret is missing or has no key.
    pub const HELLO_KEY_MISSING: &str = "HelloKeyMissing";
    /// Consumer side waits for `spec.remoteListeners` (and the peer certificate).
    pub const AWAITING_REMOTE_LISTENERS: &str = "AwaitingRemoteListeners";
    /// S2DS pods are starting.
    pub const PODS_STARTING: &str = "PodsStarting";
    /// Every S2DS pod is ready.
    pub const PODS_READY: &str = "PodsReady";
    /// An S2DS pod failed and is being recreated.
    pub const POD_FAILED: &str = "PodFailed";
    /// A gateway node was lost; its listeners moved and the peer side must be updated.
    pub const NODE_LOST: &str = "NodeLost";
    /// `kubectl scistream update` propagated the listeners that moved off a lost node.
    pub const PEER_UPDATED: &str = "PeerUpdated";
    /// The stream is being released.
    pub const RELEASING: &str = "Releasing";
    /// The spec cannot be acted on (explained in the message).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Gateway: ready nodes, addresses and namespace are all in order.
    pub const GATEWAY_READY: &str = "GatewayReady";
    /// Gateway: no node matches `spec.nodeSelector`, or none is Ready.
    pub const NO_READY_NODES: &str = "NoReadyNodes";
    /// Gateway: a node has no WAN or LAN address.
    pub const NO_ADDRESS: &str = "NoAddress";
    /// Gateway: `spec.podNamespace` is missing or does not allow privileged pods.
    pub const NAMESPACE_NOT_PRIVILEGED: &str = "NamespaceNotPrivileged";
}

/// The three values of a condition's `status`.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known yet.
    pub const UNKNOWN: &str = "Unknown";
}

/// Builds a condition; `lastTransitionTime` is `now` until [`merge`] keeps an older one.
pub fn new(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { status::TRUE } else { status::FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Merges `update` into `conditions` (replacing the entry of the same type), keeping the
/// old `lastTransitionTime` when `status` did not flip. Returns whether anything changed,
/// so callers can skip a status write when it did not.
pub fn merge(conditions: &mut Vec<Condition>, mut update: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            if existing.status == update.status {
                update.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == update {
                return false;
            }
            *existing = update;
            true
        }
        None => {
            conditions.push(update);
            true
        }
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status::TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let mut list = vec![new(types::READY, false, reasons::PODS_STARTING, "a", Some(1), &at(10))];
        let changed = merge(&mut list, new(types::READY, false, reasons::POD_FAILED, "b", Some(1), &at(20)));
        assert!(changed);
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].reason, reasons::POD_FAILED);
    }

    #[test]
    fn transition_time_moves_when_status_flips() {
        let mut list = vec![new(types::READY, false, reasons::PODS_STARTING, "a", Some(1), &at(10))];
        merge(&mut list, new(types::READY, true, reasons::PODS_READY, "b", Some(1), &at(20)));
        assert_eq!(list[0].last_transition_time, at(20));
        assert!(is_true(&list, types::READY));
    }

    #[test]
    fn identical_verdict_is_no_change() {
        let mut list = vec![new(types::RESERVED, true, reasons::RESERVED, "m", Some(2), &at(10))];
        let again = new(types::RESERVED, true, reasons::RESERVED, "m", Some(2), &at(99));
        assert!(!merge(&mut list, again));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn new_type_is_appended() {
        let mut list = Vec::new();
        assert!(merge(&mut list, new(types::HELLO_RECEIVED, true, reasons::HELLO_RECEIVED, "", None, &at(1))));
        assert!(find(&list, types::HELLO_RECEIVED).is_some());
        assert!(!is_true(&list, types::READY));
    }
}
