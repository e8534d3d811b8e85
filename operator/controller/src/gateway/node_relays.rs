//! A Gateway's shared relays (`spec.s2ds.relayModel: Shared`): one `s2ds node` pod per
//! Ready gateway node, fed every stream of the Gateway on that node over the operator's relay
//! channel. Each has its own client certificate from the channel's authority, in a Secret of
//! the pod namespace beside it, known to the hub (so a relay is sent its own streams only).
//! Pods and Secrets of nodes the Gateway no longer has, or of a Gateway back on per-stream
//! relays, are deleted and their certificates revoked. Each serves `/metrics` (every stream's
//! series, labelled `stream="STREAM.ROLE"`), `/healthz` and `/readyz` on its node's LAN
//! address at the Gateway's [`GatewaySpec::shared_metrics_port`]: probed there, named
//! `metrics` for a PodMonitor, read there for `status.transfer`.

use std::{collections::BTreeMap, net::SocketAddr};

use k8s_openapi::{
    ByteString,
    api::core::v1::{Container, Pod, Secret, SecretVolumeSource, Volume, VolumeMount},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use scistream_api::{Endpoint, Gateway, GatewayNodeStatus, GatewaySpec, RelayModel, keys};

use crate::{
    certs::KeyMaterial,
    children::{self, ANNOTATION_SPEC_HASH, Health, METRICS_PORT_NAME},
    context::Context,
    error::{Error, Result},
    relay_hub::{RelayKey, channel::Channel},
    stream::children::delete,
};

/// `app.kubernetes.io/component` of shared relay pods and their Secrets.
pub const COMPONENT: &str = keys::COMPONENT_SHARED_RELAY;
/// Where a shared relay's identity is mounted.
const IDENTITY_DIR: &str = "/etc/s2ds/identity";
/// Its certificate, key and the operator's certificate it pins, in its Secret.
const CERT: &str = "tls.crt";
const KEY: &str = "tls.key";
const OPERATOR_CERT: &str = "operator.crt";
/// The authority that issued the certificate (a Secret of an older authority is replaced).
const AUTHORITY_CERT: &str = "ca.crt";

/// Name of the shared relay pod (and its Secret) of `gateway` on `node`: a bounded DNS
/// name whatever the two are called.
pub fn name(gateway: &str, node: &str) -> String {
    let short: String = gateway.chars().take(36).collect();
    let short = short.trim_end_matches(['-', '.']);
    format!("s2ds-node-{short}-{:08x}", crate::names::fnv1a(&format!("{gateway}/{node}")))
}

fn labels(gateway: &str, node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::LABEL_GATEWAY.to_owned(), gateway.to_owned()),
        (keys::LABEL_NODE.to_owned(), node.to_owned()),
        (keys::LABEL_MANAGED_BY.to_owned(), keys::MANAGED_BY_OPERATOR.to_owned()),
        (keys::LABEL_COMPONENT.to_owned(), COMPONENT.to_owned()),
    ])
}

fn meta(gateway: &Gateway, node: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name(&gateway.name_any(), node)),
        namespace: Some(gateway.spec.pod_namespace.clone()),
        labels: Some(labels(&gateway.name_any(), node)),
        ..ObjectMeta::default()
    }
}

/// The Secret holding a shared relay's identity.
pub fn identity_secret(gateway: &Gateway, node: &str, issued: &KeyMaterial, channel: &Channel) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: meta(gateway, node),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (CERT.to_owned(), bytes(&issued.certificate_pem)),
            (KEY.to_owned(), bytes(&issued.private_key_pem)),
            (OPERATOR_CERT.to_owned(), bytes(&channel.serving_pem)),
            (AUTHORITY_CERT.to_owned(), bytes(&channel.authority.certificate_pem())),
        ])),
        ..Secret::default()
    }
}

/// Where the shared relay of `gateway` on `node` serves its metrics and health: the node's
/// LAN address at the Gateway's metrics port (none while the node has no LAN address).
pub fn metrics_address(spec: &GatewaySpec, node: &GatewayNodeStatus) -> Option<SocketAddr> {
    let ip = node.lan_address.as_deref()?.parse().ok()?;
    Some(SocketAddr::new(ip, spec.shared_metrics_port()?))
}

/// The shared relay pod of `gateway` on `node`: host network, pinned to the node, non-root,
/// read-only root filesystem, no capabilities; `s2ds node` dialling the channel at `address`,
/// serving `/metrics` and probed at `metrics`.
pub fn pod(
    gateway: &Gateway,
    node: &str,
    image: &str,
    address: &str,
    drain_seconds: u32,
    metrics: Option<SocketAddr>,
) -> Pod {
    let file = |f: &str| format!("{IDENTITY_DIR}/{f}");
    let mut args: Vec<String> = [
        "node",
        "--gateway",
        &gateway.name_any(),
        "--node",
        node,
        "--control-plane",
        address,
        "--cert",
        &file(CERT),
        "--key",
        &file(KEY),
        "--control-plane-cert",
        &file(OPERATOR_CERT),
        "--drain-seconds",
        &drain_seconds.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(m) = metrics {
        args.extend(["--metrics-address".to_owned(), m.to_string()]);
    }
    let health = metrics.map(|m| Health::Http(Endpoint::from_socket_addr(m)));
    let (readiness_probe, liveness_probe) = health.as_ref().map(children::probes).unzip();
    let hash = children::spec_hash(&[image, &args.join("\0")]);
    let mut metadata = meta(gateway, node);
    metadata.annotations = Some(BTreeMap::from([(ANNOTATION_SPEC_HASH.to_owned(), hash)]));
    let container = Container {
        name: "relay".to_owned(),
        image: Some(image.to_owned()),
        args: Some(args),
        ports: metrics.map(|m| vec![children::host_port(METRICS_PORT_NAME.to_owned(), m.port())]),
        readiness_probe,
        liveness_probe: liveness_probe.flatten(),
        resources: gateway.spec.resources.clone(),
        security_context: Some(children::locked_down()),
        volume_mounts: Some(vec![VolumeMount {
            name: "identity".to_owned(),
            mount_path: IDENTITY_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let volumes = vec![Volume {
        name: "identity".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name(&gateway.name_any(), node)),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }];
    Pod {
        metadata,
        spec: Some(children::relay_pod_spec(gateway, node, drain_seconds, container, volumes)),
        status: None,
    }
}

/// The certificate in a relay's Secret, when `channel`'s authority issued it.
fn current_certificate<'a>(secret: &'a Secret, channel: &Channel) -> Option<&'a str> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|b| std::str::from_utf8(&b.0).ok());
    let authority = channel.authority.certificate_pem();
    let ours = text(AUTHORITY_CERT) == Some(authority.as_str()) && text(OPERATOR_CERT) == Some(&channel.serving_pem);
    (ours && text(KEY).is_some()).then(|| text(CERT)).flatten()
}

/// Makes the Gateway's shared relays match its Ready `nodes` (none unless it is Shared).
/// Returns whether a pod was replaced and the Gateway must be looked at again soon.
pub async fn reconcile(ctx: &Context, gateway: &Gateway, nodes: &[GatewayNodeStatus]) -> Result<bool> {
    let name = gateway.name_any();
    let ns = &gateway.spec.pod_namespace;
    let selector = crate::names::gateway_selector(COMPONENT, &name);
    let lp = ListParams::default().labels(&selector);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let existing_pods = pods.list(&lp).await.map_err(Error::kube("list shared relay pods"))?.items;
    let existing_secrets = secrets.list(&lp).await.map_err(Error::kube("list shared relay Secrets"))?.items;
    let wanted: &[GatewayNodeStatus] = match (&ctx.channel, gateway.spec.relay_model()) {
        (Some(_), RelayModel::Shared) if gateway.metadata.deletion_timestamp.is_none() => nodes,
        _ => &[],
    };
    let is_wanted = |node: &str| wanted.iter().any(|n| n.name == node);
    let node_of = |labels: &BTreeMap<String, String>| labels.get(keys::LABEL_NODE).cloned().unwrap_or_default();
    let params = PatchParams::apply(keys::FIELD_MANAGER_OPERATOR).force();
    let mut again = false;
    if let Some(channel) = &ctx.channel {
        let image = gateway.spec.image.clone().unwrap_or_else(|| ctx.config.images.s2ds.clone());
        for status in wanted {
            let node = &status.name;
            let relay = RelayKey { gateway: name.clone(), node: node.clone() };
            let kept = existing_secrets.iter().find(|s| node_of(s.labels()) == *node);
            match kept.and_then(|s| current_certificate(s, channel)) {
                Some(cert) => {
                    channel.authorize(cert, &relay);
                }
                None => {
                    let issued = channel.issue_relay(&relay).map_err(|e| match e {
                        crate::relay_hub::identity::IdentityError::Rcgen(r) => Error::Certificate(r),
                        crate::relay_hub::identity::IdentityError::NotACertificate => {
                            Error::MissingField("the relay channel authority's certificate")
                        }
                    })?;
                    let secret = identity_secret(gateway, node, &issued, channel);
                    secrets
                        .patch(&secret.name_any(), &params, &Patch::Apply(&secret))
                        .await
                        .map_err(Error::kube(format!("apply Secret {}", secret.name_any())))?;
                    tracing::info!(%node, "issued the shared relay its certificate");
                }
            }
            let metrics = metrics_address(&gateway.spec, status);
            let desired = pod(gateway, node, &image, &channel.address, ctx.config.drain_seconds, metrics);
            let current = existing_pods.iter().find(|p| node_of(p.labels()) == *node);
            let hash = desired.annotations().get(ANNOTATION_SPEC_HASH);
            match current {
                Some(p) if p.metadata.deletion_timestamp.is_some() => again = true,
                Some(p) if p.annotations().get(ANNOTATION_SPEC_HASH) == hash && !ended(p) => {}
                Some(p) => {
                    tracing::info!(%node, "the shared relay's pod changed; replacing it");
                    delete(&pods, &p.name_any()).await?;
                    again = true;
                }
                None => {
                    pods.patch(&desired.name_any(), &params, &Patch::Apply(&desired))
                        .await
                        .map_err(Error::kube(format!("apply shared relay pod {}", desired.name_any())))?;
                    tracing::info!(%node, "started the shared relay");
                }
            }
        }
    }
    for p in existing_pods.iter().filter(|p| !is_wanted(&node_of(p.labels()))) {
        if p.metadata.deletion_timestamp.is_none() {
            tracing::info!(node = %node_of(p.labels()), "stopping a shared relay no longer wanted");
            delete(&pods, &p.name_any()).await?;
        }
    }
    for s in existing_secrets.iter().filter(|s| !is_wanted(&node_of(s.labels()))) {
        if let Some(channel) = &ctx.channel {
            channel.hub.revoke(&RelayKey { gateway: name.clone(), node: node_of(s.labels()) });
        }
        delete(&secrets, &s.name_any()).await?;
    }
    Ok(again)
}

/// A pod that ended (phase Failed/Succeeded) is replaced.
fn ended(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::RELAY_UID;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn gateway(name: &str) -> Gateway {
        let spec = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "10Gbps",
            "podNamespace": "scistream-gateway", "s2ds": {"relayModel": "Shared"}
        }))
        .unwrap();
        Gateway::new(name, spec)
    }

    #[test]
    fn names_are_bounded_dns_names_distinct_per_gateway_and_node() {
        let long = "g".repeat(200);
        let names = [name("dtn", "gw-1"), name("dtn", "gw-2"), name("dtn-", "gw-1"), name(&long, &long)];
        for n in &names {
            assert!(n.len() <= 63, "{n}");
            assert!(!n.contains("--") || n.starts_with("s2ds-node-"), "{n}");
        }
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(name("dtn", "gw-1"), name("dtn", "gw-1"));
    }

    #[test]
    fn the_pod_runs_s2ds_node_locked_down_on_its_node() {
        let gw = gateway("dtn");
        let node =
            GatewayNodeStatus { name: "gw-1".into(), lan_address: Some("10.0.0.7".into()), ..Default::default() };
        let metrics = metrics_address(&gw.spec, &node);
        assert_eq!(metrics, Some("10.0.0.7:5200".parse().unwrap()), "LAN address, last port of the range");
        let p = pod(&gw, "gw-1", "s2ds:test", "scistream-relay-channel.scistream-system.svc:8444", 20, metrics);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("gw-1"));
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let c = &spec.containers[0];
        let args = c.args.as_ref().unwrap().join(" ");
        assert!(
            args.starts_with("node --gateway dtn --node gw-1 --control-plane scistream-relay-channel.scistream-system.svc:8444 --cert /etc/s2ds/identity/tls.crt"),
            "{args}"
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(spec.security_context.as_ref().unwrap().run_as_user, Some(RELAY_UID));
        assert_eq!(p.labels().get(keys::LABEL_COMPONENT).map(String::as_str), Some(COMPONENT));
        // Metrics on the LAN address, a named host port, probed there and nowhere else.
        assert!(args.ends_with("--metrics-address 10.0.0.7:5200"), "{args}");
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port, port.host_port),
            (Some(METRICS_PORT_NAME), 5200, Some(5200))
        );
        let ready = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!((ready.host.as_deref(), ready.path.as_deref()), (Some("10.0.0.7"), Some("/readyz")));
        assert_eq!(ready.port, IntOrString::Int(5200));
        let live = c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        // Another address, image or LAN address is another pod.
        let hash = |p: &Pod| p.annotations().get(ANNOTATION_SPEC_HASH).cloned();
        let moved = pod(&gw, "gw-1", "s2ds:test", "10.0.0.1:8444", 20, metrics);
        assert_ne!(hash(&p), hash(&moved));
        let relan = pod(&gw, "gw-1", "s2ds:test", "scistream-relay-channel.scistream-system.svc:8444", 20, None);
        assert_ne!(hash(&p), hash(&relan));
        assert!(relan.spec.unwrap().containers[0].readiness_probe.is_none(), "no LAN address: nothing to probe");
        let unnamed = GatewayNodeStatus { lan_address: Some("gw-1.example.org".into()), ..node };
        assert_eq!(metrics_address(&gw.spec, &unnamed), None, "a LAN address is an IP address");
    }
}
