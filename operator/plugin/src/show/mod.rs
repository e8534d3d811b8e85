//! Read commands: `get`, `list`, `describe`, `gateways`. Collecting (I/O) is separate from
//! joining both sides into rows and displaying them (pure, snapshot-tested).

pub mod describe;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
pub mod view;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    ResourceExt,
    api::{Api, ListParams},
};
use scistream_api::{RelayModel, Role, StreamRequest, keys};
pub use view::{SideView, StreamView, gateway_table, join, side_view, table};

use crate::{
    cli::{Cli, ContextArgs, GetArgs, ListArgs, Output, StreamRef},
    error::{Error, Result},
    facility::Facility,
    out::{self, Format},
};

/// Finds a side by name or stream id in one facility.
pub async fn find(f: &Facility, name_or_id: &str) -> Result<StreamRequest> {
    let what = format!("read StreamRequests in {}", f.context);
    if let Some(sr) = f.get_opt(&f.requests(), name_or_id, &what).await? {
        return Ok(sr);
    }
    let lp = ListParams::default().labels(&format!("{}={name_or_id}", keys::LABEL_STREAM_ID));
    let found = f.requests().list(&lp).await.map_err(f.fail(format!("list StreamRequests in {}", f.context)))?;
    found.items.into_iter().next().ok_or_else(|| {
        Error::NotFound(format!(
            "no stream {name_or_id:?} in {}/{}; `kubectl scistream list` shows the streams",
            f.context, f.namespace
        ))
    })
}

/// The other side of `sr`, through the plugin's peer annotations (None if unknown or unreachable).
pub async fn peer(cli: &Cli, sr: &StreamRequest) -> Option<(Facility, StreamRequest)> {
    let context = sr.annotations().get(keys::ANNOTATION_PEER_CONTEXT)?.clone();
    let namespace = sr.annotations().get(keys::ANNOTATION_PEER_NAMESPACE)?.clone();
    let f = Facility::connect(cli.kubeconfig.as_deref(), Some(&context), Some(&namespace)).await.ok()?;
    let other = f.requests().get_opt(&sr.name_any()).await.ok()??;
    (other.spec.stream_id == sr.spec.stream_id).then_some((f, other))
}

/// Both sides of a stream: the one found, and its peer if reachable.
pub async fn both(
    cli: &Cli,
    at: &ContextArgs,
    name: &str,
) -> Result<(Facility, StreamRequest, Option<(Facility, StreamRequest)>)> {
    let f = Facility::connect(cli.kubeconfig.as_deref(), at.context.as_deref(), at.namespace.as_deref()).await?;
    let sr = find(&f, name).await?;
    let other = peer(cli, &sr).await;
    Ok((f, sr, other))
}

/// `--ignore-not-found`: a missing stream is success with nothing printed.
pub fn unless_ignored<T>(result: Result<T>, args: &GetArgs) -> Result<Option<T>> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(Error::NotFound(_)) if args.ignore_not_found => Ok(None),
        Err(e) => Err(e),
    }
}

/// `get`: one stream, both sides joined; one object in JSON or YAML.
pub async fn get(cli: &Cli, args: &GetArgs) -> Result<()> {
    let r = &args.stream;
    let Some((f, sr, other)) = unless_ignored(both(cli, &r.at, &r.name).await, args)? else {
        return Ok(());
    };
    let mut sides = vec![(f.context.clone(), sr)];
    sides.extend(other.map(|(pf, p)| (pf.context, p)));
    let streams = join(&sides);
    let Some(stream) = streams.first() else {
        return Err(Error::NotFound(format!("no stream {:?} in {}/{}", r.name, f.context, f.namespace)));
    };
    let names = [out::request_name(&stream.name)];
    out::document(Format::of(cli), stream, &names, |fmt| {
        table(std::slice::from_ref(stream), fmt.output == Output::Wide, fmt.headers)
    })
}

/// `list`.
pub async fn list(cli: &Cli, args: &ListArgs) -> Result<()> {
    let f =
        Facility::connect(cli.kubeconfig.as_deref(), args.at.context.as_deref(), args.at.namespace.as_deref()).await?;
    let api: Api<StreamRequest> = if args.all_namespaces { Api::all(f.client.clone()) } else { f.requests() };
    let mine =
        api.list(&ListParams::default()).await.map_err(f.fail(format!("list StreamRequests in {}", f.context)))?;
    let mut sides = Vec::new();
    for sr in mine.items {
        if let Some((pf, p)) = peer(cli, &sr).await {
            sides.push((pf.context, p));
        }
        sides.push((f.context.clone(), sr));
    }
    let streams = join(&sides);
    let format = Format::of(cli);
    if streams.is_empty() && !matches!(format.output, Output::Json | Output::Yaml) {
        out::note(&out::no_resources((!args.all_namespaces).then_some(f.namespace.as_str())));
        return Ok(());
    }
    let names: Vec<String> = streams.iter().map(|s| out::request_name(&s.name)).collect();
    out::document(format, &streams, &names, |fmt| table(&streams, fmt.output == Output::Wide, fmt.headers))
}

/// `gateways`.
pub async fn gateways(cli: &Cli, at: &ContextArgs) -> Result<()> {
    let f = Facility::connect(cli.kubeconfig.as_deref(), at.context.as_deref(), at.namespace.as_deref()).await?;
    let list =
        f.gateways().list(&ListParams::default()).await.map_err(f.fail(format!("list Gateways in {}", f.context)))?;
    let format = Format::of(cli);
    if list.items.is_empty() && !matches!(format.output, Output::Json | Output::Yaml) {
        out::note(&out::no_resources(None));
        return Ok(());
    }
    let names: Vec<String> = list.items.iter().map(|g| out::gateway_name(&g.name_any())).collect();
    out::document(format, &list.items, &names, |fmt| gateway_table(&list.items, fmt.headers))
}

/// Everything `describe` shows about one side, fetched: its Gateway, relay pods and events.
/// A part that cannot be read (permission) is reported in its place, not an error.
pub async fn facts(f: &Facility, request: StreamRequest) -> describe::SideFacts {
    let gateway = f
        .gateways()
        .get(&request.spec.gateway)
        .await
        .map_err(|e| format!("cannot read Gateway {} in {}: {e}", request.spec.gateway, f.context));
    let pods = match &gateway {
        Err(e) => Err(e.clone()),
        Ok(g) => {
            let selector = match g.spec.relay_model() {
                RelayModel::PerStream => format!(
                    "{}={},{}={}",
                    keys::LABEL_STREAM_ID,
                    request.spec.stream_id,
                    keys::LABEL_ROLE,
                    request.spec.role.label_value()
                ),
                RelayModel::Shared => format!(
                    "{}={},{}={}",
                    keys::LABEL_COMPONENT,
                    keys::COMPONENT_SHARED_RELAY,
                    keys::LABEL_GATEWAY,
                    g.name_any()
                ),
            };
            Api::<Pod>::namespaced(f.client.clone(), &g.spec.pod_namespace)
                .list(&ListParams::default().labels(&selector))
                .await
                .map(|l| l.items)
                .map(|pods| {
                    // Shared relays: those of the nodes the side holds ports on.
                    let nodes: Vec<&str> =
                        request.status.iter().flat_map(|s| &s.allocations).map(|a| a.node.as_str()).collect();
                    let on_its_nodes =
                        |p: &Pod| p.labels().get(keys::LABEL_NODE).is_some_and(|n| nodes.contains(&n.as_str()));
                    pods.into_iter()
                        .filter(|p| g.spec.relay_model() == RelayModel::PerStream || on_its_nodes(p))
                        .collect::<Vec<Pod>>()
                })
                .map_err(|e| format!("cannot list relay pods in {}/{}: {e}", f.context, g.spec.pod_namespace))
        }
    };
    let mut events = events_about(f, &f.namespace, &request.name_any()).await;
    for pod in pods.iter().flatten() {
        events.extend(events_about(f, &pod.namespace().unwrap_or_default(), &pod.name_any()).await);
    }
    describe::SideFacts { context: f.context.clone(), request, gateway, pods, events }
}

/// Events about the object `name` in `namespace` (none if they cannot be read).
async fn events_about(f: &Facility, namespace: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(f.client.clone(), namespace);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    api.list(&lp).await.map(|l| l.items).unwrap_or_default()
}

/// `describe`: both sides' story (see [`describe`]).
pub async fn describe(cli: &Cli, r: &StreamRef) -> Result<()> {
    let (f, sr, other) = both(cli, &r.at, &r.name).await?;
    let mut notes = Vec::new();
    if other.is_none() {
        notes.push(match (sr.annotations().get(keys::ANNOTATION_PEER_CONTEXT), sr.annotations().get(keys::ANNOTATION_PEER_NAMESPACE)) {
            (Some(c), Some(n)) => format!("the other side ({c}/{n}/{}) was not found or its cluster is unreachable", sr.name_any()),
            _ => "the other side is unknown: this request has no peer annotations (not made by `kubectl scistream create`)".to_owned(),
        });
    }
    let mut sides = vec![facts(&f, sr).await];
    if let Some((pf, p)) = other {
        sides.push(facts(&pf, p).await);
    }
    sides.sort_by_key(|s| s.request.spec.role != Role::Producer);
    let report = describe::DescribeReport { sides: sides.iter().map(describe::report).collect(), notes };
    let names = [out::request_name(&r.name)];
    out::document(Format::of(cli), &report, &names, |_| describe::render(&report))
}
