//! Names shared by every component: API group, labels, annotations, finalizers and
//! server-side-apply field managers.
//!
//! String literals for these never appear anywhere else: a typo in a label key is a
//! leaked pod, so every component imports them from here.

/// API group of both kinds.
pub const GROUP: &str = "scistream.io";
/// Served and stored API version.
pub const VERSION: &str = "v1alpha1";

/// Label on every object the operator creates for a stream: the stream id (a UUID).
pub const LABEL_STREAM_ID: &str = "scistream.io/stream-id";
/// Label on S2DS objects: `producer` or `consumer`.
pub const LABEL_ROLE: &str = "scistream.io/role";
/// Label on S2DS objects: the `Gateway` they belong to.
pub const LABEL_GATEWAY: &str = "scistream.io/gateway";
/// Label on S2DS pods: the gateway node they are pinned to.
pub const LABEL_NODE: &str = "scistream.io/node";
/// Standard label naming the tool that manages an object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on objects the operator creates.
pub const MANAGED_BY_OPERATOR: &str = "scistream-operator";
/// Standard label naming the component of an object.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`LABEL_COMPONENT`] on S2DS pods, ConfigMaps and Secrets.
pub const COMPONENT_S2DS: &str = "s2ds";
/// Value of [`LABEL_COMPONENT`] on a Gateway's shared relay pods (`spec.s2ds.relayModel:
/// Shared`, one per gateway node, labelled with [`LABEL_GATEWAY`] and [`LABEL_NODE`]) and their
/// identity Secrets.
pub const COMPONENT_SHARED_RELAY: &str = "s2ds-node";

/// Annotation on S2DS objects naming the owning `StreamRequest` as `namespace/name`.
///
/// S2DS objects live in the gateway's namespace, not the request's, so owner
/// references cannot be used across the boundary; this annotation (with the
/// stream-id label) is how cleanup finds them.
pub const ANNOTATION_REQUEST: &str = "scistream.io/request";
/// Node annotation: the address a gateway node advertises on the WAN.
pub const ANNOTATION_WAN_ADDRESS: &str = "scistream.io/wan-address";
/// Node annotation: the address a gateway node advertises on the facility LAN.
pub const ANNOTATION_LAN_ADDRESS: &str = "scistream.io/lan-address";

/// Annotation on a `StreamRequest` made by the plugin: the kubeconfig context of the other
/// side's cluster.
pub const ANNOTATION_PEER_CONTEXT: &str = "scistream.io/peer-context";
/// Annotation on a `StreamRequest` made by the plugin: the namespace of the other side.
pub const ANNOTATION_PEER_NAMESPACE: &str = "scistream.io/peer-namespace";
/// Annotation on a `StreamRequest` written by `kubectl scistream update`: this side's
/// `status.listeners` (comma-separated) as the connection map was re-run with them. The
/// operator clears its `ListenersMoved` condition once they equal the current listeners.
pub const ANNOTATION_PEER_UPDATED: &str = "scistream.io/peer-updated-listeners";

/// Finalizer on `StreamRequest`: ports, bandwidth and S2DS pods are released first.
pub const FINALIZER_STREAM_REQUEST: &str = "streamrequests.scistream.io/cleanup";

/// Finalizer on a `Gateway` while streams hold ports on it: deleting it then waits until they
/// are released (the operator adds it with the first stream and removes it with the last).
pub const FINALIZER_GATEWAY: &str = "gateways.scistream.io/in-use";

/// Field manager of the operator's server-side applies.
pub const FIELD_MANAGER_OPERATOR: &str = "scistream-operator";
/// Field manager of the kubectl plugin's server-side applies.
pub const FIELD_MANAGER_PLUGIN: &str = "kubectl-scistream";
/// Field manager (and managed-by label value) of the control endpoint's writes.
pub const FIELD_MANAGER_CONTROL_ENDPOINT: &str = "scistream-control-endpoint";
/// Field manager of the status a legacy `req` writes when it creates a StreamRequest
/// (`rateEnforcement`): apart from [`FIELD_MANAGER_CONTROL_ENDPOINT`], whose applies (a Hello
/// that may come first) must not drop it, nor it theirs.
pub const FIELD_MANAGER_CONTROL_ENDPOINT_REQ: &str = "scistream-control-endpoint-req";
/// Annotation on a StreamRequest created by a legacy `req`: the SHA-256 (hex) of the
/// credential that created it, so the 1.x client's Hello carrying the same token is accepted.
pub const ANNOTATION_LEGACY_CREDENTIAL: &str = "scistream.io/legacy-credential-sha256";
/// Annotation on a StreamRequest created by a legacy `req` in the `kubernetes` or
/// `introspection` auth mode: the Kubernetes user who created it. Legacy `update` and `release`
/// act on it for that user only (and only as RBAC allows them).
pub const ANNOTATION_LEGACY_CREATOR: &str = "scistream.io/legacy-creator";
/// Field manager of writes made by the S2DS relay.
pub const FIELD_MANAGER_S2DS: &str = "s2ds";

/// Default key inside a Hello-key Secret.
pub const DEFAULT_HELLO_KEY: &str = "key";

/// ConfigMap (in the operator's namespace) where the operator publishes its control
/// endpoint for users: key [`CONTROL_ADDRESS_KEY`] (`host:port` to dial) and
/// [`CONTROL_CA_KEY`] (PEM certificate to trust). The chart lets every authenticated user
/// read it; `kubectl scistream` reads it to fill in `hello`.
pub const CONTROL_ENDPOINT_CONFIGMAP: &str = "scistream-control-endpoint";
/// Key of [`CONTROL_ENDPOINT_CONFIGMAP`]: the address application controllers dial.
pub const CONTROL_ADDRESS_KEY: &str = "address";
/// Key of [`CONTROL_ENDPOINT_CONFIGMAP`]: the certificate (PEM) that authenticates the endpoint.
pub const CONTROL_CA_KEY: &str = "ca.crt";
/// Default namespace of the operator (the chart's documented release namespace).
pub const OPERATOR_NAMESPACE: &str = "scistream-system";
