//! Read commands: `get`, `list`, `describe`, `gateways`. Collecting (I/O) is separate from
//! joining both sides into rows and displaying them (pure, snapshot-tested).

use std::collections::BTreeMap;

use comfy_table::{Table, presets::NOTHING};
use k8s_openapi::api::core::v1::Event;
use kube::{
    ResourceExt,
    api::{Api, ListParams},
};
use scistream_api::{Gateway, Role, StreamRequest, conditions, keys};
use serde::Serialize;

use crate::{
    cli::{Cli, ContextArgs, ListArgs, Output, StreamRef},
    error::{Error, Result},
    facility::Facility,
};

/// One side of a stream, as displayed.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SideView {
    /// Kubeconfig context.
    pub context: String,
    /// Namespace.
    pub namespace: String,
    /// Gateway.
    pub gateway: String,
    /// Phase.
    pub phase: String,
    /// Reason of the Ready condition.
    pub reason: String,
    /// Message of the Ready condition.
    pub message: String,
    /// Listeners.
    pub listeners: Vec<String>,
    /// Bytes relayed.
    pub bytes: Option<i64>,
    /// Current throughput.
    pub throughput: Option<String>,
}

/// A stream with both sides (a side may be missing or unreachable).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamView {
    /// Name.
    pub name: String,
    /// Stream id.
    pub stream_id: String,
    /// Rate.
    pub rate: String,
    /// Connections.
    pub connections: i32,
    /// Producer side.
    pub producer: Option<SideView>,
    /// Consumer side.
    pub consumer: Option<SideView>,
}

/// A side's view.
pub fn side_view(context: &str, sr: &StreamRequest) -> SideView {
    let status = sr.status.clone().unwrap_or_default();
    let ready = conditions::find(&status.conditions, conditions::types::READY);
    SideView {
        context: context.to_owned(),
        namespace: sr.namespace().unwrap_or_default(),
        gateway: sr.spec.gateway.clone(),
        phase: status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".to_owned()),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        listeners: status.listeners.clone(),
        bytes: status.transfer.as_ref().map(|t| t.bytes),
        throughput: status.transfer.as_ref().and_then(|t| t.throughput.clone()),
    }
}

/// Joins sides found in any facility by stream id.
pub fn join(sides: &[(String, StreamRequest)]) -> Vec<StreamView> {
    let mut by_id: BTreeMap<String, StreamView> = BTreeMap::new();
    for (context, sr) in sides {
        let view = by_id.entry(sr.spec.stream_id.clone()).or_insert_with(|| StreamView {
            name: sr.name_any(),
            stream_id: sr.spec.stream_id.clone(),
            rate: sr.spec.rate.clone(),
            connections: sr.spec.num_connections,
            ..StreamView::default()
        });
        let side = Some(side_view(context, sr));
        match sr.spec.role {
            Role::Producer => view.producer = side,
            Role::Consumer => view.consumer = side,
        }
    }
    by_id.into_values().collect()
}

fn cell(side: &Option<SideView>) -> String {
    side.as_ref().map_or_else(|| "-".to_owned(), |s| format!("{}:{}", s.context, s.phase))
}

/// Renders streams as a table (`wide` adds ids, reasons and bytes).
pub fn table(streams: &[StreamView], wide: bool) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    let mut header = vec!["NAME", "PRODUCER", "CONSUMER", "CONNS", "RATE", "THROUGHPUT", "CONSUMER LISTENERS"];
    if wide {
        header.extend(["STREAM ID", "REASON", "BYTES"]);
    }
    t.set_header(header);
    for s in streams {
        let throughput = s
            .consumer
            .as_ref()
            .or(s.producer.as_ref())
            .and_then(|x| x.throughput.clone())
            .unwrap_or_else(|| "-".to_owned());
        let listeners = s
            .consumer
            .as_ref()
            .map(|c| c.listeners.join(","))
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "-".to_owned());
        let mut row = vec![
            s.name.clone(),
            cell(&s.producer),
            cell(&s.consumer),
            s.connections.to_string(),
            s.rate.clone(),
            throughput,
            listeners,
        ];
        if wide {
            let reason = [&s.producer, &s.consumer]
                .iter()
                .filter_map(|x| x.as_ref())
                .map(|x| x.reason.clone())
                .collect::<Vec<_>>()
                .join("/");
            let bytes = s.producer.as_ref().and_then(|p| p.bytes).map_or_else(|| "-".to_owned(), |b| b.to_string());
            row.extend([s.stream_id.clone(), reason, bytes]);
        }
        t.add_row(row);
    }
    format!("{t}\n")
}

/// Prints `value` in the chosen machine format, or `human` for tables.
pub fn print<T: Serialize>(output: Output, value: &T, human: impl FnOnce() -> String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Output::Yaml => print!("{}", serde_yaml::to_string(value).unwrap_or_default()),
        Output::Table | Output::Wide => print!("{}", human()),
    }
}

/// Finds a side by name or stream id in one facility.
pub async fn find(f: &Facility, name_or_id: &str) -> Result<StreamRequest> {
    if let Some(sr) =
        f.requests().get_opt(name_or_id).await.map_err(Error::kube(format!("read StreamRequests in {}", f.context)))?
    {
        return Ok(sr);
    }
    let lp = ListParams::default().labels(&format!("{}={name_or_id}", keys::LABEL_STREAM_ID));
    let found = f.requests().list(&lp).await.map_err(Error::kube(format!("list StreamRequests in {}", f.context)))?;
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

/// `get`.
pub async fn get(cli: &Cli, r: &StreamRef) -> Result<()> {
    let (f, sr, other) = both(cli, &r.at, &r.name).await?;
    let mut sides = vec![(f.context.clone(), sr)];
    sides.extend(other.map(|(pf, p)| (pf.context, p)));
    let streams = join(&sides);
    print(cli.output, &streams, || table(&streams, cli.output == Output::Wide));
    Ok(())
}

/// `list`.
pub async fn list(cli: &Cli, args: &ListArgs) -> Result<()> {
    let f =
        Facility::connect(cli.kubeconfig.as_deref(), args.at.context.as_deref(), args.at.namespace.as_deref()).await?;
    let api: Api<StreamRequest> = if args.all_namespaces { Api::all(f.client.clone()) } else { f.requests() };
    let mine =
        api.list(&ListParams::default()).await.map_err(Error::kube(format!("list StreamRequests in {}", f.context)))?;
    let mut sides = Vec::new();
    for sr in mine.items {
        if let Some((pf, p)) = peer(cli, &sr).await {
            sides.push((pf.context, p));
        }
        sides.push((f.context.clone(), sr));
    }
    let streams = join(&sides);
    print(cli.output, &streams, || table(&streams, cli.output == Output::Wide));
    Ok(())
}

/// `gateways`.
pub async fn gateways(cli: &Cli, at: &ContextArgs) -> Result<()> {
    let f = Facility::connect(cli.kubeconfig.as_deref(), at.context.as_deref(), at.namespace.as_deref()).await?;
    let list = f
        .gateways()
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(format!("list Gateways in {}", f.context)))?;
    print(cli.output, &list.items, || gateway_table(&list.items));
    Ok(())
}

/// Renders gateways as a table.
pub fn gateway_table(gateways: &[Gateway]) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(vec!["NAME", "READY", "NODES", "PORTS", "BANDWIDTH", "STREAMS", "IMPL", "REASON"]);
    for g in gateways {
        let s = g.status.clone().unwrap_or_default();
        let ready = conditions::find(&s.conditions, conditions::types::READY);
        t.add_row(vec![
            g.name_any(),
            ready.map_or_else(|| "Unknown".to_owned(), |c| c.status.clone()),
            s.ready_nodes.to_string(),
            s.ports_summary.clone().unwrap_or_else(|| "-".to_owned()),
            s.bandwidth_summary.clone().unwrap_or_else(|| "-".to_owned()),
            s.streams.to_string(),
            format!("{:?}", g.spec.implementation),
            ready.map(|c| c.reason.clone()).unwrap_or_default(),
        ]);
    }
    format!("{t}\n")
}

/// `describe`: both sides' conditions and recent events.
pub async fn describe(cli: &Cli, r: &StreamRef) -> Result<()> {
    let (f, sr, other) = both(cli, &r.at, &r.name).await?;
    let mut sides = vec![(f.clone(), sr)];
    sides.extend(other);
    if matches!(cli.output, Output::Json | Output::Yaml) {
        let objects: Vec<&StreamRequest> = sides.iter().map(|(_, s)| s).collect();
        print(cli.output, &objects, String::new);
        return Ok(());
    }
    for (f, sr) in &sides {
        let v = side_view(&f.context, sr);
        println!("{:?} side: {}/{}/{} (gateway {})", sr.spec.role, v.context, v.namespace, sr.name_any(), v.gateway);
        println!("  stream id:   {}", sr.spec.stream_id);
        println!("  phase:       {} ({}: {})", v.phase, v.reason, v.message);
        println!("  connections: {} at {} over {:?}", sr.spec.num_connections, sr.spec.rate, sr.spec.data_channel);
        println!("  listeners:   {}", if v.listeners.is_empty() { "-".to_owned() } else { v.listeners.join(",") });
        for a in sr.status.iter().flat_map(|s| &s.allocations) {
            println!(
                "  node {}:   ports {:?}{}",
                a.node,
                a.ports,
                a.metrics_port.map(|m| format!(", health {m}")).unwrap_or_default()
            );
        }
        if let Some(b) = v.bytes {
            println!("  transferred: {b} bytes{}", v.throughput.map(|t| format!(", now {t}")).unwrap_or_default());
        }
        println!("  conditions:");
        for c in sr.status.iter().flat_map(|s| &s.conditions) {
            println!("    {:<15} {:<5} {:<22} {}", c.type_, c.status, c.reason, c.message);
        }
        let events: Api<Event> = Api::namespaced(f.client.clone(), &f.namespace);
        let lp = ListParams::default().fields(&format!("involvedObject.name={}", sr.name_any()));
        if let Ok(list) = events.list(&lp).await {
            println!("  events:");
            for e in list.items.iter().rev().take(10) {
                println!(
                    "    {:<8} {:<22} {}",
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
