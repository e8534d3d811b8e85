//! Creating, updating and removing the objects of one stream side: key Secret, ConfigMap and
//! one relay pod per gateway node. Every write is a server-side apply or a delete, each
//! idempotent on its own, so a reconcile interrupted anywhere is finished by the next one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use scistream_api::{Endpoint, Gateway, Host, Implementation, Rate, Reservation, keys};
use scistream_core::{
    relay::{self, NodeAddresses, RelayMode},
    render::{self, Paths, RenderInput},
};

use crate::{
    certs,
    children::{self, ANNOTATION_SPEC_HASH, RelayPod, Side},
    context::{Context, GatewayNamespaces},
    error::{Error, Result},
    names,
};

fn apply_params() -> PatchParams {
    PatchParams::apply(keys::FIELD_MANAGER_OPERATOR).force()
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Returns this side's certificate, creating the key Secret on first use. The private key
/// is written to the Secret only and never read back.
pub async fn ensure_key_secret(ctx: &Context, side: &Side<'_>) -> Result<String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), side.namespace);
    let name = names::tls_secret(side.stream_id, side.role);
    let read_cert =
        |s: &Secret| s.data.as_ref().and_then(|d| d.get("tls.crt")).and_then(|b| String::from_utf8(b.0.clone()).ok());
    if let Some(existing) = api.get_opt(&name).await.map_err(Error::kube(format!("read Secret {name}")))?
        && let Some(cert) = read_cert(&existing)
    {
        return Ok(cert);
    }
    let km = certs::generate(side.stream_id, side.role.label_value()).map_err(Error::Certificate)?;
    match api.create(&PostParams::default(), &children::tls_secret(side, &km)).await {
        Ok(_) => Ok(km.certificate_pem),
        // Another reconcile made it first: use theirs.
        Err(e) if is_status(&e, 409) => {
            let s = api.get(&name).await.map_err(Error::kube(format!("read Secret {name}")))?;
            read_cert(&s).ok_or(Error::MissingField("Secret data tls.crt"))
        }
        Err(e) => Err(Error::kube(format!("create Secret {name}"))(e)),
    }
}

/// Everything needed to run a side's relays.
pub struct RelaySet<'a> {
    /// The side.
    pub side: &'a Side<'a>,
    /// Its gateway.
    pub gateway: &'a Gateway,
    /// Relay mode.
    pub mode: RelayMode,
    /// Ports held.
    pub reservation: &'a Reservation,
    /// Node addresses.
    pub addresses: &'a BTreeMap<String, NodeAddresses>,
    /// Targets.
    pub targets: &'a [Endpoint],
    /// Stream rate.
    pub rate: Rate,
    /// Peer certificate to pin.
    pub peer_certificate: Option<&'a str>,
}

fn metrics_endpoint(set: &RelaySet<'_>, node: &str) -> Option<Endpoint> {
    let port = set.reservation.nodes.iter().find(|a| a.node == node)?.metrics_port?;
    let lan = set.addresses.get(node)?.lan;
    Some(Endpoint { host: Host::Ip(lan), port: u16::try_from(port).ok()? })
}

/// Pods of this side that exist now, by node.
pub async fn current_pods(ctx: &Context, side: &Side<'_>) -> Result<Vec<(String, Pod)>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), side.namespace);
    let pods =
        api.list(&ListParams::default().labels(&side.selector())).await.map_err(Error::kube("list relay pods"))?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.annotations().get(keys::ANNOTATION_REQUEST) == Some(&side.request))
        .filter_map(|p| p.labels().get(keys::LABEL_NODE).cloned().map(|n| (n, p)))
        .collect())
}

/// Makes the side's ConfigMap and relay pods match the plan. A pod whose behaviour must
/// change is deleted and recreated by a later reconcile (pods are mostly immutable); an s2ds
/// relay whose targets changed keeps running and reloads its ConfigMap instead.
pub async fn ensure_relays(
    ctx: &Context,
    set: &RelaySet<'_>,
    existing: &[(String, Pod)],
    cached: Option<&ConfigMap>,
) -> Result<()> {
    let plan = relay::plan(set.side.role, set.mode, &set.reservation.nodes, set.addresses, set.targets, set.rate)
        .map_err(Error::Plan)?;
    let implementation = set.gateway.spec.implementation;
    let paths = Paths::default();
    let mut rendered = Vec::new();
    let metrics: Vec<Option<Endpoint>> = plan.iter().map(|r| metrics_endpoint(set, &r.node)).collect();
    for (node_relay, metrics) in plan.iter().zip(&metrics) {
        let input = RenderInput {
            stream_id: set.side.stream_id,
            relay: node_relay,
            paths: &paths,
            metrics: metrics.as_ref(),
            drain_seconds: ctx.config.drain_seconds,
            nginx_stream_module: ctx.config.nginx_stream_module.as_deref(),
            s2ds: set.gateway.spec.s2ds.as_ref().unwrap_or(&scistream_api::S2dsSettings::DEFAULT),
        };
        rendered.push((node_relay.node.clone(), render::render(implementation, &input)));
    }
    let cm = children::config_map(set.side, &rendered, set.peer_certificate);
    if !same_config_map(cached, &cm) {
        let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), set.side.namespace);
        cm_api
            .patch(&cm.name_any(), &apply_params(), &Patch::Apply(&cm))
            .await
            .map_err(Error::kube(format!("apply ConfigMap {}", cm.name_any())))?;
    }

    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), set.side.namespace);
    let image = set
        .gateway
        .spec
        .image
        .clone()
        .unwrap_or_else(|| children::default_image(&ctx.config.images, implementation).to_owned());
    for (node_relay, (_, r)) in plan.iter().zip(&rendered) {
        // s2ds reloads targets from its ConfigMap; the others must restart to see them.
        let spec_hash = if implementation == Implementation::S2ds {
            let listens: Vec<String> = node_relay.routes.iter().map(|r| r.listen.to_string()).collect();
            children::spec_hash(&[image.as_str(), &r.args.join("\0"), &listens.join(","), set.mode.as_str()])
        } else {
            children::spec_hash(&[image.as_str(), &r.args.join("\0"), &r.text])
        };
        let desired = children::relay_pod(&RelayPod {
            side: set.side,
            relay: node_relay,
            rendered: r,
            image: &image,
            gateway: set.gateway,
            health: r.health.clone(),
            drain_seconds: ctx.config.drain_seconds,
            tls: set.mode.encrypted(),
            spec_hash: spec_hash.clone(),
        });
        let name = desired.name_any();
        match existing.iter().find(|(n, _)| *n == node_relay.node).map(|(_, p)| p) {
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {} // stopping; recreated afterwards
            Some(pod) if pod.annotations().get(ANNOTATION_SPEC_HASH) == Some(&spec_hash) && !failed_for_good(pod) => {}
            Some(_) => {
                tracing::info!(pod = %name, "relay configuration changed; restarting its pod");
                delete(&pod_api, &name).await?;
            }
            None => {
                pod_api
                    .patch(&name, &apply_params(), &Patch::Apply(&desired))
                    .await
                    .map_err(Error::kube(format!("apply relay pod {name}")))?;
            }
        }
    }
    for (node, pod) in existing {
        if !plan.iter().any(|r| &r.node == node) && pod.metadata.deletion_timestamp.is_none() {
            delete(&pod_api, &pod.name_any()).await?;
        }
    }
    Ok(())
}

/// Whether the cached ConfigMap already holds what we would apply (then nothing is written);
/// the cache keeps the digest of a ConfigMap's data ([`crate::cache::trim_config_map`]).
fn same_config_map(cached: Option<&ConfigMap>, desired: &ConfigMap) -> bool {
    let Some(cached) = cached else { return false };
    let contains = |have: &BTreeMap<String, String>, want: &BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    cached.data == crate::cache::digested(desired.data.as_ref())
        && contains(cached.labels(), desired.labels())
        && contains(cached.annotations(), desired.annotations())
}

/// A pod that ended (phase Failed/Succeeded) is replaced rather than waited on.
fn failed_for_good(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded"))
}

pub(crate) async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {name}"))(e)),
    }
}

/// Deletes the side's relay pods, ConfigMap and key Secret. Returns how many pods still
/// exist (stopping within their grace period); ports must not be released before they are gone.
pub async fn remove(ctx: &Context, side: &Side<'_>) -> Result<usize> {
    let existing = current_pods(ctx, side).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), side.namespace);
    for (_, pod) in &existing {
        if pod.metadata.deletion_timestamp.is_none() {
            delete(&pods, &pod.name_any()).await?;
        }
    }
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), side.namespace);
    delete(&cms, &names::config_map(side.stream_id, side.role)).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), side.namespace);
    delete(&secrets, &names::tls_secret(side.stream_id, side.role)).await?;
    Ok(current_pods(ctx, side).await?.len())
}

/// Deletes the side's relay pods (those not already stopping), its key Secret when it may
/// exist (`secret`) and its ConfigMap when it is still there (`config_map`).
pub async fn remove_known(
    ctx: &Context,
    side: &Side<'_>,
    pods: &[(String, Pod)],
    config_map: bool,
    secret: bool,
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), side.namespace);
    for (_, pod) in pods.iter().filter(|(_, p)| p.metadata.deletion_timestamp.is_none()) {
        delete(&api, &pod.name_any()).await?;
    }
    if secret {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), side.namespace);
        delete(&secrets, &names::tls_secret(side.stream_id, side.role)).await?;
    }
    if config_map {
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), side.namespace);
        delete(&cms, &names::config_map(side.stream_id, side.role)).await?;
    }
    Ok(())
}

/// Deletes a request's relay objects in every namespace (its Gateway, which named the
/// namespace, is gone). Returns how many pods still exist.
pub async fn remove_everywhere(ctx: &Context, sr: &scistream_api::StreamRequest) -> Result<usize> {
    let request = format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any());
    let selector =
        format!("{}={},{}={}", keys::LABEL_STREAM_ID, sr.spec.stream_id, keys::LABEL_ROLE, sr.spec.role.label_value());
    let lp = ListParams::default().labels(&selector);
    let mut remaining = 0;
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    for pod in pods.list(&lp).await.map_err(Error::kube("list relay pods"))?.items {
        if pod.annotations().get(keys::ANNOTATION_REQUEST) != Some(&request) {
            continue;
        }
        remaining += 1;
        if pod.metadata.deletion_timestamp.is_none() {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
            delete(&api, &pod.name_any()).await?;
        }
    }
    let cms: Api<ConfigMap> = Api::all(ctx.client.clone());
    for cm in cms.list(&lp).await.map_err(Error::kube("list relay ConfigMaps"))?.items {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &cm.namespace().unwrap_or_default());
        delete(&api, &cm.name_any()).await?;
    }
    // Secrets hold keys: the operator lists them only where it may write them.
    let secret_apis: Vec<Api<Secret>> = match &ctx.config.gateway_namespaces {
        GatewayNamespaces::Any => vec![Api::all(ctx.client.clone())],
        GatewayNamespaces::Only(set) => set.iter().map(|ns| Api::namespaced(ctx.client.clone(), ns)).collect(),
    };
    for secrets in secret_apis {
        for secret in secrets.list(&lp).await.map_err(Error::kube("list relay Secrets"))?.items {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret.namespace().unwrap_or_default());
            delete(&api, &secret.name_any()).await?;
        }
    }
    Ok(remaining)
}
