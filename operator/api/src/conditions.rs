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

/// A condition reason (CamelCase, stable: scripts and alerts match on them). Conditions store
/// it as text; compare a stored reason with `condition.reason == Reason::X`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Ports and bandwidth were reserved.
    Reserved,
    /// Waiting for gateway ports to free up.
    PortsExhausted,
    /// Waiting for gateway bandwidth to free up.
    BandwidthExhausted,
    /// The named Gateway does not exist.
    GatewayNotFound,
    /// The Gateway exists but is not usable.
    GatewayNotReady,
    /// Waiting for the application controller's Hello.
    AwaitingHello,
    /// Hello arrived.
    HelloReceived,
    /// Static `spec.targets` make Hello unnecessary.
    StaticTargets,
    /// No Hello arrived within `spec.helloTimeout`.
    HelloTimeout,
    /// The Hello-key Secret is missing or has no key.
    HelloKeyMissing,
    /// Consumer side waits for `spec.remoteListeners` (and the peer certificate).
    AwaitingRemoteListeners,
    /// S2DS pods are starting.
    PodsStarting,
    /// Every S2DS pod is ready.
    PodsReady,
    /// An S2DS pod failed and is being recreated.
    PodFailed,
    /// A gateway node was lost; its listeners moved and the peer side must be updated.
    NodeLost,
    /// The address of a gateway node holding this side's listeners changed: they moved with it.
    AddressChanged,
    /// `kubectl scistream update` propagated the listeners that moved off a lost node.
    PeerUpdated,
    /// The stream is being released.
    Releasing,
    /// The spec cannot be acted on (explained in the message).
    InvalidSpec,
    /// Gateway: ready nodes, addresses and namespace are all in order.
    GatewayReady,
    /// Gateway: no node matches `spec.nodeSelector`, or none is Ready.
    NoReadyNodes,
    /// Gateway: a node has no WAN or LAN address.
    NoAddress,
    /// Gateway: `spec.podNamespace` is missing or does not allow privileged pods.
    NamespaceNotPrivileged,
    /// Gateway: the operator may not write relay pods in `spec.podNamespace` (not one of the
    /// gateway namespaces the chart gave it a Role in).
    NamespaceNotPermitted,
    /// The Gateway's `spec.policy` does not allow the request (the message names the rule).
    PolicyDenied,
    /// Waiting for the namespace's streams on the Gateway to free up its per-namespace limit.
    NamespaceLimit,
    /// Another StreamRequest of this cluster has the same stream id and role.
    DuplicateStreamId,
    /// The request asks more than its Gateway could hold even empty (bandwidth or ports).
    ExceedsGateway,
    /// (Gateway) Its nodes and port range overlap an older Gateway's: the older one owns them.
    Conflict,
    /// (Gateway) Deleted while streams hold ports on it.
    InUse,
    /// (Gateway) `spec.s2ds.relayModel: Shared`, but the operator does not serve the relay
    /// channel its shared relays are fed through.
    RelayChannelOff,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 31] = [
        Reason::Reserved,
        Reason::PortsExhausted,
        Reason::BandwidthExhausted,
        Reason::GatewayNotFound,
        Reason::GatewayNotReady,
        Reason::AwaitingHello,
        Reason::HelloReceived,
        Reason::StaticTargets,
        Reason::HelloTimeout,
        Reason::HelloKeyMissing,
        Reason::AwaitingRemoteListeners,
        Reason::PodsStarting,
        Reason::PodsReady,
        Reason::PodFailed,
        Reason::NodeLost,
        Reason::AddressChanged,
        Reason::PeerUpdated,
        Reason::Releasing,
        Reason::InvalidSpec,
        Reason::GatewayReady,
        Reason::NoReadyNodes,
        Reason::NoAddress,
        Reason::NamespaceNotPrivileged,
        Reason::NamespaceNotPermitted,
        Reason::PolicyDenied,
        Reason::NamespaceLimit,
        Reason::DuplicateStreamId,
        Reason::ExceedsGateway,
        Reason::Conflict,
        Reason::InUse,
        Reason::RelayChannelOff,
    ];

    /// The text conditions and events carry.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Reserved => "Reserved",
            Reason::PortsExhausted => "PortsExhausted",
            Reason::BandwidthExhausted => "BandwidthExhausted",
            Reason::GatewayNotFound => "GatewayNotFound",
            Reason::GatewayNotReady => "GatewayNotReady",
            Reason::AwaitingHello => "AwaitingHello",
            Reason::HelloReceived => "HelloReceived",
            Reason::StaticTargets => "StaticTargets",
            Reason::HelloTimeout => "HelloTimeout",
            Reason::HelloKeyMissing => "HelloKeyMissing",
            Reason::AwaitingRemoteListeners => "AwaitingRemoteListeners",
            Reason::PodsStarting => "PodsStarting",
            Reason::PodsReady => "PodsReady",
            Reason::PodFailed => "PodFailed",
            Reason::NodeLost => "NodeLost",
            Reason::AddressChanged => "AddressChanged",
            Reason::PeerUpdated => "PeerUpdated",
            Reason::Releasing => "Releasing",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::GatewayReady => "GatewayReady",
            Reason::NoReadyNodes => "NoReadyNodes",
            Reason::NoAddress => "NoAddress",
            Reason::NamespaceNotPrivileged => "NamespaceNotPrivileged",
            Reason::NamespaceNotPermitted => "NamespaceNotPermitted",
            Reason::PolicyDenied => "PolicyDenied",
            Reason::NamespaceLimit => "NamespaceLimit",
            Reason::DuplicateStreamId => "DuplicateStreamId",
            Reason::ExceedsGateway => "ExceedsGateway",
            Reason::Conflict => "Conflict",
            Reason::InUse => "InUse",
            Reason::RelayChannelOff => "RelayChannelOff",
        }
    }

    /// The reason a condition's text names, if it is one of ours.
    pub fn parse(text: &str) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for str {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, other: &Reason) -> bool {
        *self == other.as_str()
    }
}

/// The reasons under their old constant names.
pub mod reasons {
    use super::Reason;

    /// Ports and bandwidth were reserved.
    pub const RESERVED: Reason = Reason::Reserved;
    /// Waiting for gateway ports to free up.
    pub const PORTS_EXHAUSTED: Reason = Reason::PortsExhausted;
    /// Waiting for gateway bandwidth to free up.
    pub const BANDWIDTH_EXHAUSTED: Reason = Reason::BandwidthExhausted;
    /// The named Gateway does not exist.
    pub const GATEWAY_NOT_FOUND: Reason = Reason::GatewayNotFound;
    /// The Gateway exists but is not usable.
    pub const GATEWAY_NOT_READY: Reason = Reason::GatewayNotReady;
    /// Waiting for the application controller's Hello.
    pub const AWAITING_HELLO: Reason = Reason::AwaitingHello;
    /// Hello arrived.
    pub const HELLO_RECEIVED: Reason = Reason::HelloReceived;
    /// Static `spec.targets` make Hello unnecessary.
    pub const STATIC_TARGETS: Reason = Reason::StaticTargets;
    /// No Hello arrived within `spec.helloTimeout`.
    pub const HELLO_TIMEOUT: Reason = Reason::HelloTimeout;
    /// The Hello-key Secret is missing or has no key.
    pub const HELLO_KEY_MISSING: Reason = Reason::HelloKeyMissing;
    /// Consumer side waits for `spec.remoteListeners` (and the peer certificate).
    pub const AWAITING_REMOTE_LISTENERS: Reason = Reason::AwaitingRemoteListeners;
    /// S2DS pods are starting.
    pub const PODS_STARTING: Reason = Reason::PodsStarting;
    /// Every S2DS pod is ready.
    pub const PODS_READY: Reason = Reason::PodsReady;
    /// An S2DS pod failed and is being recreated.
    pub const POD_FAILED: Reason = Reason::PodFailed;
    /// A gateway node was lost; its listeners moved and the peer side must be updated.
    pub const NODE_LOST: Reason = Reason::NodeLost;
    /// A gateway node's address changed; the listeners on it moved and the peer side must be updated.
    pub const ADDRESS_CHANGED: Reason = Reason::AddressChanged;
    /// `kubectl scistream update` propagated the listeners that moved off a lost node.
    pub const PEER_UPDATED: Reason = Reason::PeerUpdated;
    /// The stream is being released.
    pub const RELEASING: Reason = Reason::Releasing;
    /// The spec cannot be acted on (explained in the message).
    pub const INVALID_SPEC: Reason = Reason::InvalidSpec;
    /// Gateway: ready nodes, addresses and namespace are all in order.
    pub const GATEWAY_READY: Reason = Reason::GatewayReady;
    /// Gateway: no node matches `spec.nodeSelector`, or none is Ready.
    pub const NO_READY_NODES: Reason = Reason::NoReadyNodes;
    /// Gateway: a node has no WAN or LAN address.
    pub const NO_ADDRESS: Reason = Reason::NoAddress;
    /// Gateway: `spec.podNamespace` is missing or does not allow privileged pods.
    pub const NAMESPACE_NOT_PRIVILEGED: Reason = Reason::NamespaceNotPrivileged;
    /// Gateway: the operator may not write relay pods in `spec.podNamespace`.
    pub const NAMESPACE_NOT_PERMITTED: Reason = Reason::NamespaceNotPermitted;
    /// The Gateway's `spec.policy` does not allow the request (the message names the rule).
    pub const POLICY_DENIED: Reason = Reason::PolicyDenied;
    /// Waiting for the namespace's streams on the Gateway to free up its per-namespace limit.
    pub const NAMESPACE_LIMIT: Reason = Reason::NamespaceLimit;
    /// Another StreamRequest of this cluster has the same stream id and role.
    pub const DUPLICATE_STREAM_ID: Reason = Reason::DuplicateStreamId;
    /// The request asks more than its Gateway could hold even empty (bandwidth or ports).
    pub const EXCEEDS_GATEWAY: Reason = Reason::ExceedsGateway;
    /// (Gateway) Its nodes and port range overlap an older Gateway's.
    pub const CONFLICT: Reason = Reason::Conflict;
    /// (Gateway) Deleted while streams hold ports on it: it admits no new stream and goes
    /// once they are released.
    pub const IN_USE: Reason = Reason::InUse;
    /// See [`Reason::RelayChannelOff`].
    pub const RELAY_CHANNEL_OFF: Reason = Reason::RelayChannelOff;
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
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { status::TRUE } else { status::FALSE }.to_owned(),
        reason: reason.as_str().to_owned(),
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
