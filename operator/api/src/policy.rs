//! `Gateway.spec.policy`: what the facility lets streams open in its gateway. A gateway node
//! bridges the facility's private network and the WAN; its policy says which namespaces may
//! use it, whether the data channel may be unencrypted, whether a producer may forward
//! without a Hello, which addresses relays may forward to, and how much one namespace may
//! hold. The operator checks it before it reserves anything and whenever a stream's targets
//! change; the control endpoint checks it on SciStream 1.x `req`, `update` and Hello.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Written, rate::RATE_PATTERN, stream_request::DataChannel};

/// Most CIDRs or DNS suffixes a target policy lists.
pub const MAX_TARGET_RULES: u32 = 64;

/// Who may open what through a Gateway. Every field has a safe default: absent, a Gateway
/// serves every namespace, MutualTLS streams only, producers that send a Hello, and targets
/// anywhere but loopback, link-local (including the cloud metadata address 169.254.169.254)
/// and the gateway nodes themselves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPolicy {
    /// Namespaces whose StreamRequests may use this Gateway, by their labels, e.g.
    /// `matchLabels: {scistream.io/streams: allowed}`. Absent: every namespace. An empty
    /// selector (`{}`) also selects every namespace, as in a NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Data channels streams may use. Default `[MutualTLS]`: the relays authenticate each
    /// other with pinned certificates and encrypt the data. Add `Plain` to allow unencrypted,
    /// unauthenticated TCP across the WAN (trusted networks, SciStream 1.x clients, HAProxy
    /// and Nginx relays).
    #[serde(default = "default_data_channels")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("dataChannels lists a channel twice"))]
    pub data_channels: Vec<DataChannel>,

    /// Whether a Producer may name static `spec.targets`: its relays then forward as soon as
    /// they run, without any application controller's Hello. Default false: a producer's
    /// targets arrive with a Hello authenticated by the stream's key.
    #[serde(default)]
    pub allow_static_targets: bool,

    /// Where relays may forward: the producer's targets (static or from its Hello). Default:
    /// any address but loopback, link-local and the gateway nodes' own addresses.
    #[serde(default)]
    pub targets: TargetPolicy,

    /// Limits on what the StreamRequests of one namespace may hold on this Gateway at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_namespace: Option<NamespaceLimits>,
}

impl Default for GatewayPolicy {
    fn default() -> Self {
        Self {
            namespace_selector: None,
            data_channels: default_data_channels(),
            allow_static_targets: false,
            targets: TargetPolicy::default(),
            per_namespace: None,
        }
    }
}

impl GatewayPolicy {
    /// A policy that allows what streams could do before policies existed: Plain and
    /// MutualTLS, static targets, and loopback, link-local and gateway-node targets (for
    /// tests and demos on one host; never for a facility's gateway).
    pub fn open() -> Self {
        Self {
            data_channels: vec![DataChannel::MutualTLS, DataChannel::Plain],
            allow_static_targets: true,
            targets: TargetPolicy {
                allow: vec![SpecialTarget::Loopback, SpecialTarget::LinkLocal, SpecialTarget::GatewayNodes],
                ..TargetPolicy::default()
            },
            ..Self::default()
        }
    }
}

impl GatewayPolicy {
    /// [`GatewayPolicy::open`] but for the special targets: loopback, link-local and the
    /// gateway nodes are refused.
    pub fn open_but_specials() -> Self {
        Self { targets: TargetPolicy::default(), ..Self::open() }
    }
}

fn default_data_channels() -> Vec<DataChannel> {
    vec![DataChannel::MutualTLS]
}

/// Where relays may forward.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetPolicy {
    /// Address ranges of the facility's LAN that targets given as addresses must be in, e.g.
    /// `10.20.0.0/16`. When `cidrs` and `dnsSuffixes` are both empty, any address is allowed
    /// (but those `allow` does not list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TARGET_RULES), extend("items" = {"type": "string", "format": "cidr", "maxLength": 49}))]
    pub cidrs: Vec<String>,

    /// DNS suffixes of the facility's LAN that targets given as names must end with, e.g.
    /// `.aps.anl.gov` (matched on whole labels: `.anl.gov` allows `dtn1.anl.gov`, not
    /// `dtn1.evil-anl.gov`). A name is resolved where the relay runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TARGET_RULES), extend("items" = {"type": "string", "pattern": DNS_SUFFIX_PATTERN, "maxLength": 253}))]
    pub dns_suffixes: Vec<String>,

    /// Kinds of address refused unless listed here: `Loopback` (127.0.0.0/8, ::1,
    /// `localhost`), `LinkLocal` (169.254.0.0/16 with the metadata address 169.254.169.254,
    /// fe80::/10) and `GatewayNodes` (the WAN and LAN addresses of this Gateway's nodes).
    /// Unspecified and multicast addresses are never allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub allow: Vec<SpecialTarget>,
}

/// Pattern of a DNS suffix: a DNS name, optionally with a leading dot.
pub const DNS_SUFFIX_PATTERN: &str =
    r"^\.?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$";

/// Kinds of target address refused unless a Gateway's policy allows them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecialTarget {
    /// 127.0.0.0/8, ::1 and the name `localhost`: services on the gateway node itself.
    Loopback,
    /// 169.254.0.0/16 (with the cloud metadata address 169.254.169.254) and fe80::/10.
    LinkLocal,
    /// The WAN and LAN addresses of the Gateway's own nodes.
    GatewayNodes,
}

/// What the StreamRequests of one namespace may hold on a Gateway at once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceLimits {
    /// Most StreamRequests of one namespace holding ports here at once. A request beyond it
    /// waits in `Pending` with reason `NamespaceLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_streams: Option<i32>,

    /// Most bandwidth one namespace's streams may hold here at once, e.g. `20Gbps`. A request
    /// beyond it waits in `Pending` with reason `NamespaceLimit`; one whose rate alone exceeds
    /// it fails with `PolicyDenied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(RATE_PATTERN), length(max = 20))]
    #[x_kube(validation = Rule::new(crate::rate::rate_bounds_rule()).message("maxBandwidth must be between 1kbps and 10Tbps, e.g. 20Gbps"))]
    pub max_bandwidth: Option<Written<crate::Rate>>,
}
