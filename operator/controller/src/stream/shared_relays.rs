//! Running a stream side on its Gateway's shared relays: each node's config is rendered as
//! for a relay pod and set in the hub, which sends it at once to that node's relay with the
//! side's key and pinned peer certificate (held in memory there, never on its disk). The key
//! is read from the side's Secret once; after that the hub's copy is reused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use scistream_api::Implementation;
use scistream_core::{
    relay,
    render::{self, Paths, RenderInput},
};
use zeroize::Zeroizing;

use super::{children::RelaySet, shared};
use crate::{
    children::Side,
    context::Context,
    error::{Error, Result},
    names,
    relay_hub::channel::Channel,
};

/// Sets the side on the relays of the nodes it holds ports on and removes it from the
/// Gateway's other relays. Per-stream pods and a ConfigMap left from the other relay model
/// are removed (the key Secret stays: it keeps the key the relays are sent).
pub async fn run(ctx: &Context, channel: &Channel, set: &RelaySet<'_>, pods: &[(String, Pod)], cm: bool) -> Result<()> {
    let side = set.side;
    let plan = relay::plan(side.role, set.mode, &set.reservation.nodes, set.addresses, set.targets, set.rate)
        .map_err(Error::Plan)?;
    let key = shared::key(side.stream_id, side.role);
    let gateway = side.gateway;
    let paths = Paths::default();
    let files = if set.mode.encrypted() {
        let known = plan.iter().find_map(|r| channel.hub.desired_config(&shared::relay(gateway, &r.node), &key));
        files(ctx, side, &paths, known.as_ref(), set.peer_certificate).await?
    } else {
        BTreeMap::new()
    };
    let s2ds = set.gateway.spec.s2ds.as_ref().unwrap_or(&scistream_api::S2dsSettings::DEFAULT);
    for node_relay in &plan {
        let input = RenderInput {
            stream_id: &key,
            relay: node_relay,
            paths: &paths,
            metrics: None,
            drain_seconds: ctx.config.drain_seconds,
            nginx_stream_module: None,
            s2ds,
        };
        let rendered = render::render(Implementation::S2ds, &input);
        let config = shared::stream_config(&key, rendered.text, files.clone());
        if channel.hub.set(&shared::relay(gateway, &node_relay.node), config) {
            tracing::info!(node = %node_relay.node, "set on the shared relay");
        }
    }
    for relay in channel.hub.relays_of(gateway, &key) {
        if !plan.iter().any(|r| r.node == relay.node) {
            channel.hub.remove(&relay, &key);
        }
    }
    if !pods.is_empty() || cm {
        super::children::remove_known(ctx, side, pods, cm, false).await?;
    }
    Ok(())
}

/// Removes the side from every relay of its Gateway.
pub fn remove(channel: &Channel, side: &Side<'_>) -> usize {
    channel.hub.remove_from_gateway(side.gateway, &shared::key(side.stream_id, side.role))
}

/// The files the side's config names: its certificate and key (from what the hub already
/// holds, or else its Secret) and the pinned peer certificate.
async fn files(
    ctx: &Context,
    side: &Side<'_>,
    paths: &Paths,
    known: Option<&scistream_relay_proto::StreamConfig>,
    peer: Option<&str>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let held =
        known.and_then(|c| Some((c.files.get(&paths.cert_file)?.clone(), c.files.get(&paths.key_file)?.clone())));
    let (cert, key) = match held {
        Some(pair) => pair,
        None => {
            let (cert, key) = read_key_pair(ctx, side).await?;
            (cert.into_bytes(), key.as_bytes().to_vec())
        }
    };
    let mut files = BTreeMap::from([(paths.cert_file.clone(), cert), (paths.key_file.clone(), key)]);
    if let Some(peer) = peer {
        files.insert(paths.peer_cert_file.clone(), peer.as_bytes().to_vec());
    }
    Ok(files)
}

/// The side's certificate and key from its Secret (made by `ensure_key_secret`).
async fn read_key_pair(ctx: &Context, side: &Side<'_>) -> Result<(String, Zeroizing<String>)> {
    let name = names::tls_secret(side.stream_id, side.role);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), side.namespace);
    let secret = api.get(&name).await.map_err(Error::kube(format!("read Secret {name}")))?;
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or(Error::MissingField("the stream's key Secret data tls.crt and tls.key"))
    };
    Ok((field("tls.crt")?, Zeroizing::new(field("tls.key")?)))
}
