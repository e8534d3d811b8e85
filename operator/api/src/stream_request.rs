//! `StreamRequest`: one side (producer or consumer facility) of one SciStream stream.
//!
//! A stream has two `StreamRequest`s with the same `streamId`, one in each facility's
//! cluster. Each asks its facility's operator (the S2CS) to reserve gateway ports and
//! bandwidth, wait for the application controller's Hello, and run the S2DS relays.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    HelloTimeout, Rate, Written,
    endpoint::ENDPOINT_PATTERN,
    rate::{DURATION_PATTERN, RATE_PATTERN},
};

/// Pattern of a stream id: a lowercase UUID.
pub const STREAM_ID_PATTERN: &str = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
/// Most connections (and listeners) one stream may ask for.
pub const MAX_CONNECTIONS: i32 = 256;
/// Longest PEM certificate accepted in `spec.peerCertificate`.
pub const MAX_CERTIFICATE_LENGTH: u32 = 16_384;

/// Specification of one side of a SciStream stream.
// Every `printcolumn(...)` repeats `type_ = ...`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "scistream.io",
    version = "v1alpha1",
    kind = "StreamRequest",
    namespaced,
    status = "StreamRequestStatus",
    derive = "PartialEq",
    shortname = "sr",
    category = "scistream",
    selectable = ".spec.streamId",
    selectable = ".spec.gateway",
    doc = "One side of a SciStream stream: asks this facility's SciStream operator to reserve \
           gateway ports and bandwidth, await the application's Hello, and relay the stream's \
           data between the facility LAN and the WAN. Create it with `kubectl scistream create`, \
           which makes the producer and consumer sides in both facilities, or apply it by hand.",
    printcolumn(
        name = "Stream",
        type_ = "string",
        json_path = ".spec.streamId",
        description = "Stream id shared by both sides"
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".spec.gateway", priority = 1),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Listeners",
        type_ = "string",
        json_path = ".status.listeners",
        description = "Where the other party connects"
    ),
    printcolumn(name = "Conns", type_ = "integer", json_path = ".spec.numConnections", priority = 1),
    printcolumn(name = "Rate", type_ = "string", json_path = ".spec.rate", description = "Rate asked for"),
    printcolumn(
        name = "Granted",
        type_ = "string",
        json_path = ".status.grantedRate",
        description = "Bandwidth held on the Gateway and enforced"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.role == 'Producer' || !has(self.targets)").message("spec.targets is only for role Producer: a Consumer forwards to spec.remoteListeners").field_path(".targets"),
    validation = Rule::new("self.role == 'Consumer' || !has(self.remoteListeners)").message("spec.remoteListeners is only for role Consumer: a Producer forwards to its targets or Hello listeners").field_path(".remoteListeners"),
    validation = Rule::new("self.role == 'Consumer' || has(self.targets) || has(self.helloKeySecretRef)").message("a Producer needs spec.targets (static producer endpoints) or spec.helloKeySecretRef (endpoints arrive with the producer's Hello)"),
    validation = Rule::new("!has(self.dataChannel) || self.dataChannel != 'Plain' || !has(self.peerCertificate)").message("spec.peerCertificate is only used with dataChannel MutualTLS; remove it or set dataChannel: MutualTLS").field_path(".peerCertificate"),
    validation = Rule::new("self.role == 'Producer' || (has(self.dataChannel) && self.dataChannel == 'Plain') || !has(self.remoteListeners) || has(self.peerCertificate)").message("a MutualTLS Consumer needs spec.peerCertificate (the producer side's status.certificate) together with spec.remoteListeners"),
    validation = Rule::new("!has(oldSelf.remoteListeners) || has(self.remoteListeners)").message("spec.remoteListeners cannot be removed once set; release the stream instead"),
    validation = Rule::new("has(self.helloKeySecretRef) == has(oldSelf.helloKeySecretRef)").message("spec.helloKeySecretRef cannot be added or removed after creation; create a new StreamRequest"),
)]
pub struct StreamRequestSpec {
    /// Stream id shared by the producer and consumer sides: a lowercase UUID such as
    /// `2f0f3c4e-8f1d-4d7a-9a43-1c2b3d4e5f60`. The application controllers name the stream
    /// by this id in their Hello. Immutable.
    #[schemars(pattern(STREAM_ID_PATTERN), length(max = 36))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("streamId is immutable; create a new StreamRequest"))]
    pub stream_id: String,

    /// Which side of the stream this facility is. `Producer`: the data source's facility;
    /// its S2DS accepts the peer gateway's connections on the WAN and forwards them to the
    /// producer application. `Consumer`: the analysis facility; its S2DS accepts the
    /// consumer application's connections on the LAN and forwards them to the producer
    /// side's listeners. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("role is immutable; create a new StreamRequest"))]
    pub role: Role,

    /// Name of the cluster-scoped `Gateway` whose nodes carry this stream
    /// (`kubectl get gateways`). Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("gateway is immutable; create a new StreamRequest on the other gateway"))]
    pub gateway: String,

    /// Number of parallel TCP connections (and so of gateway ports and listeners) for the
    /// stream, 1 to 256. Listener `i` forwards to target `i mod len(targets)`. Default 5.
    /// Immutable.
    #[serde(default = "default_num_connections")]
    #[schemars(range(min = 1, max = MAX_CONNECTIONS))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("numConnections is immutable; release the stream and create it again"))]
    pub num_connections: i32,

    /// Bandwidth reserved for the stream on the gateway and enforced by the S2DS relay (unless
    /// `status.rateEnforcement` says `ReservationOnly`), in bits per second with an SI prefix: `10Gbps`, `500Mbps`, `2.5G`, `800k` (1kbps to
    /// 10Tbps). Admission refuses more than the gateway has left undeclared. Default `1Gbps`.
    #[serde(default = "default_rate")]
    #[schemars(pattern(RATE_PATTERN), length(max = 20))]
    #[x_kube(validation = Rule::new(crate::rate::rate_bounds_rule()).message("rate must be between 1kbps and 10Tbps, e.g. 10Gbps"))]
    pub rate: Written<Rate>,

    /// Secret (in this namespace) holding the Hello key: the application controller of this
    /// side must present it as the `authorization` metadata of its Hello. Not needed for a
    /// Producer with static `targets`; a Consumer without it is provisioned without Hello.
    /// Cannot be added or removed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_key_secret_ref: Option<SecretKeyRef>,

    /// Consumer side only: the producer side's `status.listeners` (WAN `host:port` list), set
    /// by `kubectl scistream create` once the producer side reserved them. Listener `i` of this
    /// side forwards to `remoteListeners[i mod len]`. Cannot be removed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_CONNECTIONS), inner(pattern(ENDPOINT_PATTERN), length(max = crate::endpoint::ENDPOINT_MAX_LENGTH)))]
    pub remote_listeners: Option<Vec<String>>,

    /// Producer side only, optional: the producer application's endpoints (`host:port`
    /// inside the facility), for services that do not send Hello, such as an HPC service
    /// reachable at a fixed address. When set, Hello is not awaited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_CONNECTIONS), inner(pattern(ENDPOINT_PATTERN), length(max = crate::endpoint::ENDPOINT_MAX_LENGTH)))]
    pub targets: Option<Vec<String>>,

    /// How the two gateways' relays talk across the WAN. `MutualTLS` (default): TLS 1.3, each
    /// side authenticated by its pinned per-stream certificate (exchanged through
    /// `peerCertificate`; private keys never leave their facility). `Plain`: unencrypted
    /// TCP, for trusted networks and SciStream 1.x streams. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("dataChannel is immutable; create a new StreamRequest"))]
    pub data_channel: DataChannel,

    /// The other side's data-channel certificate (PEM, the peer `StreamRequest`'s
    /// `status.certificate`), pinned by this side's relay: only a peer presenting exactly
    /// this certificate is accepted. Set by `kubectl scistream create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CERTIFICATE_LENGTH))]
    #[x_kube(validation = Rule::new("self.startsWith('-----BEGIN CERTIFICATE-----')").message("peerCertificate must be a PEM certificate starting with -----BEGIN CERTIFICATE-----"))]
    pub peer_certificate: Option<String>,

    /// How long to wait for the application controller's Hello after the reservation, as a
    /// duration such as `180s`, `3m` or `1h30m` (1s to 24h). When it expires the request
    /// fails with reason `HelloTimeout` and its ports and bandwidth are released.
    /// Default `180s`, as in SciStream 1.x.
    #[serde(default = "default_hello_timeout")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))").message("helloTimeout must be between 1s and 24h"))]
    pub hello_timeout: Written<HelloTimeout>,
}

fn default_num_connections() -> i32 {
    5
}

fn default_rate() -> Written<Rate> {
    Rate::from_bps(1_000_000_000).into()
}

fn default_hello_timeout() -> Written<HelloTimeout> {
    HelloTimeout::DEFAULT.into()
}

/// Side of a stream.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The facility where the data is produced (instrument, simulation).
    Producer,
    /// The facility where the data is consumed (analysis cluster).
    Consumer,
}

impl Role {
    /// Lowercase form used in labels (`producer`, `consumer`).
    pub fn label_value(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }

    /// The SciStream 1.x wire name (`PROD`, `CONS`).
    pub fn legacy_name(self) -> &'static str {
        match self {
            Role::Producer => "PROD",
            Role::Consumer => "CONS",
        }
    }

    /// Parses a SciStream 1.x role (`PROD` or `CONS`).
    pub fn from_legacy(name: &str) -> Option<Role> {
        match name {
            crate::control::ROLE_PROD => Some(Role::Producer),
            crate::control::ROLE_CONS => Some(Role::Consumer),
            _ => None,
        }
    }
}

/// Data-channel protection between the two gateways.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DataChannel {
    /// TLS 1.3 with per-stream certificates pinned on both sides.
    #[default]
    MutualTLS,
    /// Unencrypted TCP (trusted networks, SciStream 1.x streams).
    Plain,
}

/// Reference to one key of a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret whose value is the Hello key. Default `key`.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    crate::keys::DEFAULT_HELLO_KEY.to_owned()
}

/// Lifecycle phase of a `StreamRequest`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Waiting for gateway capacity (ports or bandwidth); see the `Reserved` condition.
    #[default]
    Pending,
    /// Ports and bandwidth held; waiting for the application controller's Hello.
    AwaitingHello,
    /// Targets known; S2DS relays are starting (or, on the consumer side, waiting for
    /// `spec.remoteListeners`).
    Provisioning,
    /// Every S2DS relay is ready on every listener.
    Ready,
    /// Gave up (e.g. `HelloTimeout`); resources are released. See the conditions.
    Failed,
    /// Being deleted: relays stopping, ports and bandwidth being freed.
    Releasing,
}

/// Whether the relays limit the stream to its `spec.rate` (absent: `Enforced`).
/// `ReservationOnly`: the rate is counted against the Gateway's bandwidth but not enforced, as
/// in SciStream 1.x; the control endpoint sets it on the streams SciStream 1.x clients create
/// unless the facility runs it with `--control-legacy-rate enforced`. (Of the relay
/// implementations, S2ds and Nginx enforce a rate; Haproxy and Stunnel cannot.)
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RateEnforcement {
    /// The relays limit the stream to its reserved rate.
    #[default]
    Enforced,
    /// The rate is reserved on the Gateway (counted against its bandwidth) but the relays do
    /// not limit the stream.
    ReservationOnly,
}

/// Ports held on one gateway node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeAllocation {
    /// Gateway node name.
    pub node: String,
    /// Ports held on that node, in listener order.
    #[schemars(length(max = MAX_CONNECTIONS))]
    pub ports: Vec<i32>,
    /// Port of the relay's health listener on that node (and of its metrics, for S2ds), held
    /// like a listener port so no other stream binds it. Relays are probed there only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<i32>,
}

/// Bytes moved by the stream's relays.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TransferStatus {
    /// Bytes relayed in the producer-to-consumer direction since the relays started.
    pub bytes: i64,
    /// Throughput over the last sampling interval, e.g. `9.4Gbps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<String>,
    /// When the relays' counters were last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_time: Option<Time>,
}

/// Observed state of one side of a stream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StreamRequestStatus {
    /// Where the stream is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// This side's S2DS listeners (`host:port`). Producer side: WAN addresses the consumer
    /// side's relays connect to (copy them into the consumer's `spec.remoteListeners`).
    /// Consumer side: LAN addresses the consumer application connects to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONNECTIONS))]
    pub listeners: Vec<String>,

    /// Producer side: the producer application's endpoints, recorded from its Hello by the
    /// control endpoint; the relays forward to them. (With static `spec.targets` no Hello is
    /// needed and this stays empty. On a stream a SciStream 1.x client created, whose `update`
    /// set `spec.targets`, a later Hello sets both.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONNECTIONS))]
    pub prod_listeners: Vec<String>,

    /// Gateway nodes and ports held for this stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONNECTIONS))]
    pub allocations: Vec<NodeAllocation>,

    /// This side's data-channel certificate (PEM, public part only), to be copied into the
    /// other side's `spec.peerCertificate`. The private key stays in a Secret in the
    /// gateway namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,

    /// Whether the relays limit the stream to its `spec.rate`. `ReservationOnly`: the rate is
    /// counted against the Gateway's bandwidth but the relays do not limit the stream, as
    /// SciStream 1.x never did; the control endpoint sets it on the streams SciStream 1.x
    /// clients create (whose `rate` is the clients' default of 10000 kb/s unless the user chose
    /// one) unless the facility runs it with `--control-legacy-rate enforced`. Absent or
    /// `Enforced`: the relays limit the stream to its reserved rate (the S2ds and Nginx
    /// implementations do; Haproxy and Stunnel cannot limit a rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_enforcement: Option<RateEnforcement>,

    /// Bytes and throughput read from the relays' metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferStatus>,

    /// The bandwidth the Gateway holds for the stream, which its relays enforce: `spec.rate`,
    /// or what it held before while a changed `spec.rate` does not fit (the `Reserved`
    /// condition says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_rate: Option<String>,
    /// When ports and bandwidth were reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_time: Option<Time>,
    /// When the Hello arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_time: Option<Time>,
    /// While the stream awaits its Hello: when it fails if none has arrived
    /// (`reservedTime` + `spec.helloTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_deadline: Option<Time>,
    /// When the stream first became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_time: Option<Time>,
    /// When the stream failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_time: Option<Time>,

    /// `Reserved`, `HelloReceived`, `DataPathReady` and `Ready`, each with a reason a person
    /// can act on; `ListenersMoved` once a lost gateway node or a new node address moved this side's listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl StreamRequest {
    /// The holding this request's status records on its Gateway (`allocations` and
    /// `grantedRate`), if it holds ports: the durable record the operator's ledger is rebuilt
    /// from. A granted rate that does not parse counts as `spec.rate`.
    pub fn holding(&self) -> Option<crate::Reservation> {
        use kube::ResourceExt;
        let status = self.status.as_ref().filter(|s| !s.allocations.is_empty())?;
        let rate = status.granted_rate.as_deref().and_then(|r| r.parse::<Rate>().ok()).unwrap_or(self.spec.rate.get());
        Some(crate::Reservation {
            request: format!("{}/{}", self.namespace().unwrap_or_default(), self.name_any()),
            stream_id: self.spec.stream_id.clone(),
            uid: self.uid().unwrap_or_default(),
            bandwidth_bps: i64::try_from(rate.bps()).unwrap_or(i64::MAX),
            nodes: status.allocations.clone(),
        })
    }
}
