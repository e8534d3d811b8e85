//! The Kubernetes objects of one stream side, built without I/O: the relay pods (one per
//! gateway node), their ConfigMap and the key Secret. All live in the gateway's pod
//! namespace, carry the stream's labels and name their `StreamRequest` in an annotation
//! (owner references cannot cross namespaces), so cleanup and the orphan sweep find them.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{
        Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, ExecAction,
        HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, Pod, PodSecurityContext, PodSpec, Probe,
        ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, TCPSocketAction, Volume,
        VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use scistream_api::{Gateway, Implementation, Role, keys};
use scistream_core::{relay::NodeRelay, render::Rendered};

use crate::{certs::KeyMaterial, names};

/// User and group the relays run as (no shell, no root).
pub const RELAY_UID: i64 = 65532;

/// Identity of one stream side, as every child object needs it.
#[derive(Clone, Debug)]
pub struct Side<'a> {
    /// `namespace/name` of the StreamRequest.
    pub request: String,
    /// Stream id.
    pub stream_id: &'a str,
    /// Role of this side.
    pub role: Role,
    /// Gateway name.
    pub gateway: &'a str,
    /// Namespace of the relays.
    pub namespace: &'a str,
}

impl Side<'_> {
    /// Labels on every child object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (keys::LABEL_STREAM_ID.to_owned(), self.stream_id.to_owned()),
            (keys::LABEL_ROLE.to_owned(), self.role.label_value().to_owned()),
            (keys::LABEL_GATEWAY.to_owned(), self.gateway.to_owned()),
            (keys::LABEL_MANAGED_BY.to_owned(), keys::MANAGED_BY_OPERATOR.to_owned()),
            (keys::LABEL_COMPONENT.to_owned(), keys::COMPONENT_S2DS.to_owned()),
        ])
    }

    /// Label selector matching this side's children.
    pub fn selector(&self) -> String {
        format!(
            "{}={},{}={},{}={}",
            keys::LABEL_STREAM_ID,
            self.stream_id,
            keys::LABEL_ROLE,
            self.role.label_value(),
            keys::LABEL_MANAGED_BY,
            keys::MANAGED_BY_OPERATOR
        )
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels()),
            annotations: Some(BTreeMap::from([(keys::ANNOTATION_REQUEST.to_owned(), self.request.clone())])),
            ..ObjectMeta::default()
        }
    }
}

/// The side's key Secret.
pub fn tls_secret(side: &Side<'_>, km: &KeyMaterial) -> Secret {
    Secret {
        metadata: side.meta(names::tls_secret(side.stream_id, side.role)),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(km.certificate_pem.clone().into_bytes())),
            ("tls.key".to_owned(), ByteString(km.private_key_pem.clone().into_bytes())),
        ])),
        ..Secret::default()
    }
}

/// The side's ConfigMap: one rendered configuration per node, and the peer's certificate.
pub fn config_map(side: &Side<'_>, rendered: &[(String, Rendered)], peer_certificate: Option<&str>) -> ConfigMap {
    let mut data: BTreeMap<String, String> =
        rendered.iter().map(|(node, r)| (names::config_key(node), r.text.clone())).collect();
    if let Some(cert) = peer_certificate {
        data.insert(names::PEER_CERT_KEY.to_owned(), cert.to_owned());
    }
    ConfigMap {
        metadata: side.meta(names::config_map(side.stream_id, side.role)),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Where a relay pod's probes go: the relay's health listener, never a data listener (a
/// probe there opens a connection through the relays to the application).
pub use scistream_core::render::Health;

/// Everything that shapes one relay pod.
#[derive(Clone, Debug)]
pub struct RelayPod<'a> {
    /// The stream side.
    pub side: &'a Side<'a>,
    /// The relay on this node.
    pub relay: &'a NodeRelay,
    /// Its rendered configuration.
    pub rendered: &'a Rendered,
    /// Container image.
    pub image: &'a str,
    /// The gateway (tolerations, resources).
    pub gateway: &'a Gateway,
    /// Probes; none when the relay has no health listener (the pod is ready once running).
    pub health: Option<Health>,
    /// Seconds the relay drains established connections on SIGTERM.
    pub drain_seconds: u32,
    /// Whether the TLS Secret is mounted.
    pub tls: bool,
    /// Hash of everything the pod's behaviour depends on; a change means a new pod.
    pub spec_hash: String,
}

/// Name of a relay container's port that serves `/metrics` (its HTTP health listener), for the
/// chart's PodMonitor.
pub const METRICS_PORT_NAME: &str = "metrics";

/// Annotation with the hash of the pod's configuration.
pub const ANNOTATION_SPEC_HASH: &str = "scistream.io/spec-hash";

/// The hash of what a relay pod's behaviour depends on: 64-bit FNV-1a over the parts as a
/// JSON array of strings, an encoding that no compiler or library version changes (unlike
/// `Debug` output), so an operator upgrade restarts no relay whose configuration is the same.
pub fn spec_hash(parts: &[&str]) -> String {
    let encoded = serde_json::to_string(parts).unwrap_or_default();
    let hash =
        encoded.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{hash:016x}")
}

/// A port of a relay container, bound on the node (host network: the host port is the
/// container port, declared so a scheduler and a PodMonitor see it).
pub fn host_port(name: String, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name),
        container_port: i32::from(number),
        host_port: Some(i32::from(number)),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// A relay's readiness probe (`/readyz`, or a TCP connect) and, for an HTTP health
/// listener, its liveness probe (`/healthz`, patient: a busy relay is not restarted).
pub fn probes(health: &Health) -> (Probe, Option<Probe>) {
    let liveness = matches!(health, Health::Http(_)).then(|| Probe {
        failure_threshold: Some(5),
        period_seconds: Some(10),
        ..probe(health, "/healthz")
    });
    (probe(health, "/readyz"), liveness)
}

fn probe(health: &Health, path: &str) -> Probe {
    let (http_get, tcp_socket) = match health {
        Health::Http(ep) => (
            Some(HTTPGetAction {
                host: ep.socket_addr().map(|a| a.ip().to_string()),
                path: Some(path.to_owned()),
                port: IntOrString::Int(i32::from(ep.port)),
                ..HTTPGetAction::default()
            }),
            None,
        ),
        Health::Tcp(ep) => (
            None,
            Some(TCPSocketAction {
                host: ep.socket_addr().map(|a| a.ip().to_string()),
                port: IntOrString::Int(i32::from(ep.port)),
            }),
        ),
    };
    Probe { http_get, tcp_socket, period_seconds: Some(2), failure_threshold: Some(3), ..Probe::default() }
}

/// Memory a relay container may use when its Gateway sets no `spec.resources`: an s2ds relay
/// holds about 6 MiB (docs/performance.md), HAProxy, Nginx and Stunnel a few more; the limit
/// keeps a runaway relay from taking the gateway node's memory. No CPU limit: a throttled
/// relay would not stream at line rate.
pub const DEFAULT_MEMORY_LIMIT: &str = "256Mi";

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("64Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity(DEFAULT_MEMORY_LIMIT.to_owned()))])),
        ..ResourceRequirements::default()
    }
}

fn volumes(p: &RelayPod<'_>) -> (Vec<Volume>, Vec<VolumeMount>) {
    let side = p.side;
    let mut items = vec![KeyToPath {
        key: names::config_key(&p.relay.node),
        path: p.rendered.file_name.to_owned(),
        ..KeyToPath::default()
    }];
    if p.tls {
        items.push(KeyToPath {
            key: names::PEER_CERT_KEY.to_owned(),
            path: "peer.crt".to_owned(),
            ..KeyToPath::default()
        });
    }
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(side.stream_id, side.role),
                items: Some(items),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume { name: "run".to_owned(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
    ];
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(name != "run"),
        ..VolumeMount::default()
    };
    let mut mounts = vec![mount("config", "/etc/s2ds/config"), mount("run", "/run/s2ds")];
    if p.tls {
        volumes.push(Volume {
            name: "tls".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::tls_secret(side.stream_id, side.role)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("tls", "/etc/s2ds/tls"));
    }
    (volumes, mounts)
}

/// The relay pod for one node: host network, pinned to the node, non-root, read-only root
/// filesystem, no capabilities.
pub fn relay_pod(p: &RelayPod<'_>) -> Pod {
    let side = p.side;
    let mut meta = side.meta(names::pod(side.stream_id, side.role, &p.relay.node));
    meta.labels.get_or_insert_with(BTreeMap::new).insert(keys::LABEL_NODE.to_owned(), p.relay.node.clone());
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(ANNOTATION_SPEC_HASH.to_owned(), p.spec_hash.clone());
    let (volumes, volume_mounts) = volumes(p);
    let mut ports: Vec<ContainerPort> =
        p.relay.routes.iter().map(|r| host_port(format!("l{}", r.index), r.listen.port)).collect();
    // An HTTP health listener also serves /metrics: named, for a PodMonitor to find it.
    if let Some(Health::Http(ep)) = &p.health {
        ports.push(host_port(METRICS_PORT_NAME.to_owned(), ep.port));
    }
    let (readiness_probe, liveness_probe) = p.health.as_ref().map(probes).unzip();
    let container = Container {
        name: "relay".to_owned(),
        image: Some(p.image.to_owned()),
        args: Some(p.rendered.args.clone()),
        ports: Some(ports),
        readiness_probe,
        liveness_probe: liveness_probe.flatten(),
        lifecycle: p.rendered.ready_command.clone().map(|command| Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction { command: Some(command) }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(p.gateway.spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(locked_down()),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };
    Pod {
        metadata: meta,
        spec: Some(relay_pod_spec(p.gateway, &p.relay.node, p.drain_seconds, container, volumes)),
        status: None,
    }
}

/// The spec every relay pod shares, per stream or shared: host network, pinned to `node`,
/// non-root, `RuntimeDefault` seccomp, no service account token, the Gateway's tolerations
/// and priority class, `drain_seconds` of grace (and 5 more to exit).
pub fn relay_pod_spec(
    gateway: &Gateway,
    node: &str,
    drain_seconds: u32,
    container: Container,
    volumes: Vec<Volume>,
) -> PodSpec {
    PodSpec {
        node_name: Some(node.to_owned()),
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".to_owned()),
        priority_class_name: gateway.spec.priority_class_name.clone(),
        restart_policy: Some("Always".to_owned()),
        termination_grace_period_seconds: Some(i64::from(drain_seconds) + 5),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        tolerations: Some(gateway.spec.tolerations.clone()).filter(|t| !t.is_empty()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RELAY_UID),
            run_as_group: Some(RELAY_UID),
            // Secret files are root-owned; fsGroup makes them group-readable by the relay.
            fs_group: Some(RELAY_UID),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// A relay container's security context: no privilege escalation, read-only root
/// filesystem, every capability dropped.
pub fn locked_down() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
        ..SecurityContext::default()
    }
}

/// Default image for an implementation when the Gateway names none.
pub fn default_image(images: &crate::context::Images, implementation: Implementation) -> &str {
    match implementation {
        Implementation::S2ds => &images.s2ds,
        Implementation::Haproxy => &images.haproxy,
        Implementation::Nginx => &images.nginx,
        Implementation::Stunnel => &images.stunnel,
    }
}

#[cfg(test)]
mod tests;
