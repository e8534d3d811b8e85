//! `Gateway`: a facility's set of gateway nodes, with the ports and bandwidth SciStream may
//! use on them and the S2DS implementation that relays streams there.
//!
//! Gateway nodes bridge the facility LAN (where instruments and analysis jobs live) and the
//! WAN. The operator runs S2DS pods with `hostNetwork: true` on them, so each stream's
//! listeners are real ports on the nodes' addresses.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ResourceRequirements, Toleration},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Written, rate::RATE_PATTERN};

/// Pattern of a namespace name (DNS-1123 label).
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Most gateway nodes a Gateway's status lists.
pub const MAX_NODES: u32 = 256;

/// Specification of a facility's gateway.
// Every `printcolumn(...)` repeats `type_ = ...`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "scistream.io",
    version = "v1alpha1",
    kind = "Gateway",
    status = "GatewayStatus",
    derive = "PartialEq",
    shortname = "gw",
    category = "scistream",
    doc = "A facility's SciStream gateway: the nodes that bridge the facility LAN and the WAN, \
           the port range and total bandwidth streams may use on them, and the S2DS relay \
           implementation that carries the data. Cluster-scoped; created by facility operators.",
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.readyNodes",
        description = "Ready gateway nodes"
    ),
    printcolumn(
        name = "Ports",
        type_ = "string",
        json_path = ".status.portsSummary",
        description = "Ports in use / total"
    ),
    printcolumn(
        name = "Bandwidth",
        type_ = "string",
        json_path = ".status.bandwidthSummary",
        description = "Bandwidth promised / declared"
    ),
    printcolumn(name = "Streams", type_ = "integer", json_path = ".status.streams", priority = 1),
    printcolumn(name = "Impl", type_ = "string", json_path = ".spec.implementation"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.s2ds) || !has(self.implementation) || self.implementation == 'S2ds'").message("spec.s2ds applies only to implementation S2ds: remove it or set implementation: S2ds"))]
pub struct GatewaySpec {
    /// Labels that select this gateway's nodes, e.g. `scistream.io/gateway: dtn`. Only Ready
    /// nodes that match are used.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations given to S2DS pods, for gateway nodes tainted to keep other work away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub tolerations: Vec<Toleration>,

    /// Where each node's advertised addresses come from. Default: the node annotations
    /// `scistream.io/wan-address` and `scistream.io/lan-address`, else the node's
    /// `ExternalIP` (WAN) and `InternalIP` (LAN) addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<AddressSources>,

    /// Ports S2DS listeners may bind on every gateway node (inclusive range). Open these on
    /// the facility firewall. Default 5100-5200, as in SciStream 1.x.
    #[serde(default)]
    pub port_range: PortRange,

    /// Total bandwidth this gateway may promise to streams at once, in bits per second with
    /// an SI prefix, e.g. `100Gbps`. A StreamRequest whose `rate` does not fit in what is left
    /// waits in phase `Pending` with reason `BandwidthExhausted`.
    #[schemars(pattern(RATE_PATTERN), length(max = 20))]
    #[x_kube(validation = Rule::new(crate::rate::rate_bounds_rule()).message("bandwidth must be between 1kbps and 10Tbps, e.g. 100Gbps"))]
    pub bandwidth: Written<crate::Rate>,

    /// The S2DS relay implementation. `S2ds` (default): the SciStream Rust relay, with
    /// mutual TLS, rate limiting and metrics. `Haproxy`, `Nginx`: plain TCP proxies (data
    /// unencrypted; requires `dataChannel: Plain`). `Stunnel`: TLS 1.3 with the stream's
    /// pinned certificates (requires `dataChannel: MutualTLS`).
    #[serde(default)]
    pub implementation: Implementation,

    /// Container image of the relay; default: the operator's image for the implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Namespace where S2DS pods, their ConfigMaps and key Secrets are created. It must allow
    /// privileged pods (label `pod-security.kubernetes.io/enforce: privileged`), since the
    /// relays use the node's network; keep users' workloads out of it.
    #[schemars(pattern(NAMESPACE_PATTERN), length(min = 1, max = 63))]
    pub pod_namespace: String,

    /// Resources of each S2DS container. Default: requests of 100m CPU and 64Mi memory, a
    /// limit of 256Mi memory and none on CPU (a throttled relay cannot stream at line rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// PriorityClass of the relay pods, e.g. one the facility made so that streams are not
    /// preempted by batch work on shared gateway nodes. Default: none (the cluster's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,

    /// What streams may open through this gateway: which namespaces, data channels and
    /// targets, whether producers may forward without a Hello, and per-namespace limits.
    /// Absent: every namespace, MutualTLS only, Hello required, targets anywhere but
    /// loopback, link-local and the gateway nodes. A request the policy refuses fails with
    /// reason `PolicyDenied` naming the rule, and nothing is reserved for it; a stream the
    /// policy stops allowing is released the same way.
    #[serde(default)]
    pub policy: crate::policy::GatewayPolicy,

    /// Settings of the `S2ds` relays (implementation `S2ds` only): which TLS record layer
    /// carries MutualTLS data, and whether it may be handed to kernel TLS. Absent: s2ds's own
    /// record layer, with kernel TLS where the node's kernel offers it. A change applies to
    /// the relays' new connections (they reload; established connections keep theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s2ds: Option<S2dsSettings>,
}

/// How the `S2ds` relays of a Gateway carry MutualTLS data.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.recordLayer) && self.recordLayer == 'Rustls' && has(self.kernelTls) && self.kernelTls)").message("kernelTls: true needs recordLayer S2ds (kernel TLS replaces s2ds's record layer, not rustls's): drop one of them"))]
pub struct S2dsSettings {
    /// The TLS record layer of the data phase. `S2ds` (default): s2ds's own, with no
    /// userspace copy and kernel TLS where the kernel offers it; the least CPU per GiB.
    /// `Rustls`: rustls's own record layer (tokio-rustls) after the same handshake, the
    /// conservative choice, at the cost of copies (docs/performance.md shows both).
    #[serde(default)]
    pub record_layer: RecordLayer,

    /// With `recordLayer: S2ds`: hand the data phase to kernel TLS where the node's kernel
    /// offers it (the `tls` module, with TLS 1.3 key updates: Linux 6.14 or later), probed
    /// by each relay when it starts. Default true; false keeps every connection in userspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_tls: Option<bool>,

    /// How the relays of this Gateway run. `PerStream` (default): a relay pod per stream
    /// and node, started when the stream's relays are planned (seconds on a real cluster;
    /// a kubelet runs at most about a hundred pods a node). `Shared`: one long-lived
    /// `s2ds node` pod per gateway node serves every stream of this Gateway there; the
    /// operator sends it each stream (listeners, targets, keys) over a mutually
    /// authenticated channel, and a stream relays within milliseconds of the decision, with
    /// thousands a node (docs/performance.md). Needs the operator's relay channel (the
    /// chart's `relayChannel`). The shared relays serve `/metrics` on each node's LAN address
    /// at the last port of `portRange`, which streams are then not given. A change moves
    /// every stream of the Gateway to the other model: their relays restart and open
    /// connections are cut.
    #[serde(default, skip_serializing_if = "is_per_stream")]
    pub relay_model: RelayModel,
}

impl S2dsSettings {
    /// What an absent `spec.s2ds` means.
    pub const DEFAULT: S2dsSettings =
        S2dsSettings { record_layer: RecordLayer::S2ds, kernel_tls: None, relay_model: RelayModel::PerStream };
}

fn is_per_stream(model: &RelayModel) -> bool {
    *model == RelayModel::PerStream
}

/// How a Gateway's `S2ds` relays run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RelayModel {
    /// A relay pod per stream and gateway node.
    #[default]
    PerStream,
    /// One `s2ds node` pod per gateway node, fed every stream over the operator's channel.
    Shared,
}

impl GatewaySpec {
    /// How this Gateway's relays run (`PerStream` for every implementation but `S2ds`).
    pub fn relay_model(&self) -> RelayModel {
        match (&self.implementation, &self.s2ds) {
            (Implementation::S2ds, Some(s)) => s.relay_model,
            _ => RelayModel::PerStream,
        }
    }

    /// Where a `Shared` Gateway's relays serve `/metrics`, `/healthz` and `/readyz` on each
    /// node's LAN address: the last port of `portRange` (so it is held by this Gateway as
    /// every port of its range is, and never given to a stream). `None` for per-stream relays
    /// (each has its own, held with its stream's ports) and for a range of one port.
    pub fn shared_metrics_port(&self) -> Option<u16> {
        if self.relay_model() != RelayModel::Shared || self.port_range.len() < 2 {
            return None;
        }
        u16::try_from(self.port_range.end).ok()
    }

    /// The ports streams' listeners (and per-stream relays' health listeners) are given:
    /// `portRange`, less the shared relays' metrics port.
    pub fn stream_ports(&self) -> PortRange {
        match self.shared_metrics_port() {
            Some(_) => PortRange { start: self.port_range.start, end: self.port_range.end - 1 },
            None => self.port_range,
        }
    }
}

/// The TLS record layer of an `S2ds` relay's data phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RecordLayer {
    /// s2ds's own record layer (handed to kernel TLS where the kernel offers it).
    #[default]
    S2ds,
    /// rustls's own record layer, through tokio-rustls.
    Rustls,
}

/// Where node addresses come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AddressSources {
    /// WAN address: node annotation, then node address type. Default
    /// `scistream.io/wan-address`, then `ExternalIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan: Option<AddressSource>,
    /// LAN address: node annotation, then node address type. Default
    /// `scistream.io/lan-address`, then `InternalIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan: Option<AddressSource>,
}

/// One way to find a node's address.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AddressSource {
    /// Node annotation holding the address (an IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub annotation: Option<String>,
    /// `status.addresses` type to use when the annotation is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address_type: Option<NodeAddressType>,
}

/// Node address types usable as gateway addresses.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAddressType {
    /// The node's external (WAN-routable) address.
    ExternalIP,
    /// The node's internal (LAN) address.
    InternalIP,
}

/// An inclusive port range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.start <= self.end").message("portRange.start must not exceed portRange.end"))]
pub struct PortRange {
    /// First port, 1024 to 65535.
    #[schemars(range(min = 1024, max = 65535))]
    pub start: i32,
    /// Last port (inclusive), 1024 to 65535.
    #[schemars(range(min = 1024, max = 65535))]
    pub end: i32,
}

impl Default for PortRange {
    fn default() -> Self {
        Self { start: 5100, end: 5200 }
    }
}

impl PortRange {
    /// Number of ports in the range (0 if it is inverted).
    pub fn len(&self) -> usize {
        usize::try_from(self.end - self.start + 1).unwrap_or(0)
    }

    /// Whether the range holds no port.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// S2DS relay implementations.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Implementation {
    /// The SciStream Rust relay (`s2ds`): splice zero-copy, mutual TLS, rate limit, metrics.
    #[default]
    S2ds,
    /// HAProxy in TCP mode (plain data channel).
    Haproxy,
    /// Nginx stream module (plain data channel).
    Nginx,
    /// Stunnel (TLS 1.3 with the stream's pinned certificates).
    Stunnel,
}

/// One gateway node as the operator sees it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayNodeStatus {
    /// Node name.
    pub name: String,
    /// Whether the node is Ready and has both addresses.
    pub ready: bool,
    /// Address advertised on the WAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan_address: Option<String>,
    /// Address advertised on the facility LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_address: Option<String>,
    /// Ports of the range held by streams on this node.
    pub ports_in_use: i32,
}

/// Ports and bandwidth held by one stream on this gateway: the durable record the operator
/// allocates from. Written with optimistic concurrency, so two operator replicas never hand
/// out the same port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The holding `StreamRequest`, as `namespace/name`.
    pub request: String,
    /// Its stream id.
    pub stream_id: String,
    /// Its uid, so a re-created request of the same name does not inherit the holding.
    pub uid: String,
    /// Bandwidth promised, in bits per second.
    pub bandwidth_bps: i64,
    /// Ports held, per node.
    #[schemars(length(max = 256))]
    pub nodes: Vec<crate::stream_request::NodeAllocation>,
}

/// Observed state of a gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Gateway nodes matching `spec.nodeSelector`, ready or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NODES))]
    pub nodes: Vec<GatewayNodeStatus>,
    /// Number of usable (Ready, addressed) gateway nodes.
    #[serde(default)]
    pub ready_nodes: i32,
    /// Ports held by streams, over all nodes.
    #[serde(default)]
    pub ports_in_use: i32,
    /// Ports on usable nodes (range size times ready nodes).
    #[serde(default)]
    pub ports_total: i32,
    /// `used/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports_summary: Option<String>,
    /// Bandwidth promised to streams, in bits per second.
    #[serde(default)]
    pub bandwidth_promised_bps: i64,
    /// `promised/declared`, for `kubectl get`, e.g. `20Gbps/100Gbps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_summary: Option<String>,
    /// Number of streams holding resources here.
    #[serde(default)]
    pub streams: i32,
    /// Holdings, one per stream: not part of the API (the schema has no such field, so the API
    /// server would prune it, and the operator never sends it). Each stream's holding is
    /// recorded in its own StreamRequest's status (`allocations`, `grantedRate`); the operator
    /// keeps them all in memory (its ledger, rebuilt from the StreamRequests at start) and fills
    /// this field of the Gateways it plans with, so one object does not grow with the streams.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(skip)]
    pub reservations: Vec<Reservation>,
    /// `Ready`, with a reason saying what to fix when the gateway is unusable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl GatewayStatus {
    /// A copy without the holdings (which may be thousands).
    pub fn without_reservations(&self) -> Self {
        let GatewayStatus {
            nodes,
            ready_nodes,
            ports_in_use,
            ports_total,
            ports_summary,
            bandwidth_promised_bps,
            bandwidth_summary,
            streams,
            reservations: _,
            conditions,
            observed_generation,
        } = self;
        GatewayStatus {
            nodes: nodes.clone(),
            ready_nodes: *ready_nodes,
            ports_in_use: *ports_in_use,
            ports_total: *ports_total,
            ports_summary: ports_summary.clone(),
            bandwidth_promised_bps: *bandwidth_promised_bps,
            bandwidth_summary: bandwidth_summary.clone(),
            streams: *streams,
            reservations: Vec::new(),
            conditions: conditions.clone(),
            observed_generation: *observed_generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(implementation: Implementation, model: Option<RelayModel>, range: (i32, i32)) -> GatewaySpec {
        let mut spec: GatewaySpec = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"gw": "true"}, "bandwidth": "10Gbps", "podNamespace": "gw",
            "portRange": {"start": range.0, "end": range.1}
        }))
        .unwrap();
        spec.implementation = implementation;
        spec.s2ds = model.map(|relay_model| S2dsSettings { relay_model, ..S2dsSettings::DEFAULT });
        spec
    }

    #[test]
    fn shared_relays_keep_the_last_port_of_the_range_for_their_metrics() {
        let shared = spec(Implementation::S2ds, Some(RelayModel::Shared), (5100, 5200));
        assert_eq!(shared.shared_metrics_port(), Some(5200));
        assert_eq!(shared.stream_ports(), PortRange { start: 5100, end: 5199 });
        for other in [
            spec(Implementation::S2ds, None, (5100, 5200)),
            spec(Implementation::S2ds, Some(RelayModel::PerStream), (5100, 5200)),
            // Never a shared relay: the setting applies to S2ds only.
            spec(Implementation::Haproxy, Some(RelayModel::Shared), (5100, 5200)),
            // One port: nothing left for streams if the relays took it (the Gateway says so).
            spec(Implementation::S2ds, Some(RelayModel::Shared), (5100, 5100)),
        ] {
            assert_eq!(other.shared_metrics_port(), None, "{other:?}");
            assert_eq!(other.stream_ports(), other.port_range);
        }
    }
}
