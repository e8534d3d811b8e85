//! Rows of `get`/`list` and `gateways`: both sides of a stream joined by stream id, and
//! their tables. Pure functions of the fetched objects (snapshot-tested in `tests.rs`).

use std::collections::BTreeMap;

use kube::ResourceExt;
use scistream_api::{Gateway, Role, StreamRequest, conditions};
use serde::Serialize;

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

/// The rate asked for, with what the Gateway holds when that differs (a change that did not fit).
fn rate(sr: &StreamRequest) -> String {
    let asked = sr.spec.rate.text().to_owned();
    let granted = sr.status.as_ref().and_then(|s| s.granted_rate.as_deref());
    match granted.and_then(|g| g.parse::<scistream_api::Rate>().ok().map(|r| (g, r))) {
        Some((g, r)) if r != sr.spec.rate.get() => format!("{g} (asked {asked})"),
        _ => asked,
    }
}

/// Joins sides found in any facility by stream id; sorted by name (then id), as kubectl sorts.
pub fn join(sides: &[(String, StreamRequest)]) -> Vec<StreamView> {
    let mut by_id: BTreeMap<String, StreamView> = BTreeMap::new();
    for (context, sr) in sides {
        let view = by_id.entry(sr.spec.stream_id.clone()).or_insert_with(|| StreamView {
            name: sr.name_any(),
            stream_id: sr.spec.stream_id.clone(),
            rate: rate(sr),
            connections: sr.spec.num_connections,
            ..StreamView::default()
        });
        let side = Some(side_view(context, sr));
        match sr.spec.role {
            Role::Producer => view.producer = side,
            Role::Consumer => view.consumer = side,
        }
    }
    let mut streams: Vec<StreamView> = by_id.into_values().collect();
    streams.sort_by(|a, b| (&a.name, &a.stream_id).cmp(&(&b.name, &b.stream_id)));
    streams
}

fn cell(side: &Option<SideView>) -> String {
    side.as_ref().map_or_else(|| "-".to_owned(), |s| format!("{}:{}", s.context, s.phase))
}

/// Renders streams as a table (`wide` adds ids, reasons and bytes), with its header line
/// unless `headers` is false.
pub fn table(streams: &[StreamView], wide: bool, headers: bool) -> String {
    let mut header = vec!["NAME", "PRODUCER", "CONSUMER", "CONNS", "RATE", "THROUGHPUT", "CONSUMER LISTENERS"];
    if wide {
        header.extend(["STREAM ID", "REASON", "BYTES"]);
    }
    let mut rows = Vec::new();
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
        rows.push(row);
    }
    crate::out::table(&header, &rows, headers)
}

/// Renders gateways as a table, with its header line unless `headers` is false.
pub fn gateway_table(gateways: &[Gateway], headers: bool) -> String {
    let header = ["NAME", "READY", "NODES", "PORTS", "BANDWIDTH", "STREAMS", "IMPL", "REASON"];
    let mut rows = Vec::new();
    for g in gateways {
        let s = g.status.clone().unwrap_or_default();
        let ready = conditions::find(&s.conditions, conditions::types::READY);
        rows.push(vec![
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
    crate::out::table(&header, &rows, headers)
}
