//! `describe`: the whole story of both sides of a stream, from the request side (phase,
//! conditions, events, bytes) and from the gateway side (the relay pod on each node, its
//! phase, restarts and the ports and listeners it serves). [`report`] and [`render`] are pure
//! functions of the fetched objects ([`SideFacts`]); `super::describe` does the fetching.

use k8s_openapi::{
    api::core::v1::{Event, Pod},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::ResourceExt;
use scistream_api::{
    DataChannel, Gateway, RelayModel, Role, StreamRequest, conditions, keys, stream_request::TransferStatus,
};
use serde::Serialize;

/// Events shown per side (the most recent ones).
pub const MAX_EVENTS: usize = 20;

/// What was fetched about one side.
#[derive(Clone, Debug)]
pub struct SideFacts {
    /// Kubeconfig context of the side's cluster.
    pub context: String,
    /// The side's StreamRequest.
    pub request: StreamRequest,
    /// Its Gateway, or why it could not be read.
    pub gateway: Result<Gateway, String>,
    /// The side's relay pods (in the gateway's pod namespace; with shared relays, the
    /// Gateway's shared relay pods), or why they could not be listed.
    pub pods: Result<Vec<Pod>, String>,
    /// Events about the request and its relay pods.
    pub events: Vec<Event>,
}

/// One side, as `describe` tells it (also its JSON/YAML output).
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SideReport {
    /// Producer or Consumer.
    pub role: Role,
    /// Kubeconfig context.
    pub context: String,
    /// Namespace of the request.
    pub namespace: String,
    /// Name of the request.
    pub name: String,
    /// Stream id.
    pub stream_id: String,
    /// Gateway.
    pub gateway: String,
    /// Namespace of the relay pods (from the Gateway).
    pub pod_namespace: Option<String>,
    /// Phase.
    pub phase: String,
    /// Reason of the Ready condition.
    pub reason: String,
    /// Message of the Ready condition.
    pub message: String,
    /// Parallel connections.
    pub connections: i32,
    /// Rate.
    pub rate: String,
    /// Data channel security.
    pub data_channel: DataChannel,
    /// This side's listeners.
    pub listeners: Vec<String>,
    /// Where this side's relays connect to.
    pub targets: Vec<String>,
    /// Bytes relayed and current throughput.
    pub transfer: Option<TransferStatus>,
    /// How the Gateway runs its relays (None: the Gateway could not be read).
    pub relay_model: Option<RelayModel>,
    /// The relay on each node: the side's own pod, or the node's shared relay.
    pub relays: Vec<RelayReport>,
    /// Why the relays could not be read (permission, missing Gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relays_error: Option<String>,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// Recent events, oldest first.
    pub events: Vec<EventReport>,
}

/// The relay of one gateway node.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RelayReport {
    /// Gateway node.
    pub node: String,
    /// Whether the Gateway counts the node as ready (None: unknown).
    pub node_ready: Option<bool>,
    /// Relay pod (None: the operator has not created it, or it is gone).
    pub pod: Option<String>,
    /// Pod phase (`Missing` without a pod, `Unknown` if pods could not be listed,
    /// `Terminating` while deleted).
    pub phase: String,
    /// Whether the pod is Ready.
    pub ready: bool,
    /// Container restarts.
    pub restarts: i32,
    /// Why a container waits or ended (e.g. CrashLoopBackOff).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Ports reserved on the node for this stream.
    pub ports: Vec<i32>,
    /// Listeners these ports serve.
    pub listeners: Vec<String>,
    /// Whether the node is in the side's reservation (a pod outside it is being drained).
    pub reserved: bool,
}

/// An event.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventReport {
    /// When it last happened (RFC 3339).
    pub time: Option<String>,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// `Kind/name` of the object it is about.
    pub object: String,
    /// Message.
    pub message: String,
    /// How many times it happened.
    pub count: i32,
}

/// Both sides, and the notes about a side that could not be found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DescribeReport {
    /// The sides found.
    pub sides: Vec<SideReport>,
    /// What could not be found, and why.
    pub notes: Vec<String>,
}

/// One side's report from what was fetched.
pub fn report(facts: &SideFacts) -> SideReport {
    let sr = &facts.request;
    let status = sr.status.clone().unwrap_or_default();
    let ready = conditions::find(&status.conditions, conditions::types::READY);
    let targets = sr
        .spec
        .targets
        .clone()
        .or_else(|| sr.spec.remote_listeners.clone())
        .unwrap_or_else(|| status.prod_listeners.clone());
    let gateway = facts.gateway.as_ref().ok();
    let (relays, relays_error) = match &facts.pods {
        Ok(pods) => (relays(sr, gateway, Some(pods)), facts.gateway.as_ref().err().cloned()),
        Err(e) => (relays(sr, gateway, None), Some(e.clone())),
    };
    SideReport {
        role: sr.spec.role,
        context: facts.context.clone(),
        namespace: sr.namespace().unwrap_or_default(),
        name: sr.name_any(),
        stream_id: sr.spec.stream_id.clone(),
        gateway: sr.spec.gateway.clone(),
        pod_namespace: facts.gateway.as_ref().ok().map(|g| g.spec.pod_namespace.clone()),
        phase: status.phase.map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}")),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        connections: sr.spec.num_connections,
        rate: sr.spec.rate.text().to_owned(),
        data_channel: sr.spec.data_channel,
        listeners: status.listeners.clone(),
        targets,
        transfer: status.transfer.clone(),
        relay_model: gateway.map(|g| g.spec.relay_model()),
        relays,
        relays_error,
        conditions: status.conditions.clone(),
        events: events(&facts.events),
    }
}

/// The relay rows: one per node of the reservation (with the pod found there, if any), then
/// the side's pods on nodes outside it (being drained; a shared relay elsewhere serves other
/// streams, not this one, and is left out). Listeners are matched to nodes by position: the operator
/// publishes `status.listeners` in allocation order, one per reserved port. `pods` is `None`
/// when they could not be listed (their phase is then `Unknown`, not `Missing`).
pub fn relays(sr: &StreamRequest, gateway: Option<&Gateway>, pods: Option<&[Pod]>) -> Vec<RelayReport> {
    let known = pods.is_some();
    let pods = pods.unwrap_or_default();
    let status = sr.status.clone().unwrap_or_default();
    let total: usize = status.allocations.iter().map(|a| a.ports.len()).sum();
    let by_position = total == status.listeners.len();
    let node_ready =
        |node: &str| gateway.and_then(|g| g.status.as_ref()?.nodes.iter().find(|n| n.name == node).map(|n| n.ready));
    let mut used = vec![false; pods.len()];
    let mut rows = Vec::new();
    let mut offset = 0;
    for a in &status.allocations {
        let listeners =
            if by_position { status.listeners[offset..offset + a.ports.len()].to_vec() } else { Vec::new() };
        offset += a.ports.len();
        let found = pods.iter().enumerate().find(|(i, p)| !used[*i] && pod_node(p) == a.node);
        let mut row = match found {
            Some((i, pod)) => {
                used[i] = true;
                pod_row(pod)
            }
            None => RelayReport {
                node: a.node.clone(),
                node_ready: None,
                pod: None,
                phase: if known { "Missing" } else { "Unknown" }.to_owned(),
                ready: false,
                restarts: 0,
                state: None,
                ports: Vec::new(),
                listeners: Vec::new(),
                reserved: true,
            },
        };
        row.node_ready = node_ready(&a.node);
        row.ports = a.ports.clone();
        row.listeners = listeners;
        row.reserved = true;
        rows.push(row);
    }
    let mut extra: Vec<RelayReport> = pods
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(p, _)| {
            let mut row = pod_row(p);
            row.node_ready = node_ready(&row.node);
            row
        })
        .collect();
    extra.sort_by(|a, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
    if gateway.is_none_or(|g| g.spec.relay_model() == RelayModel::PerStream) {
        rows.extend(extra);
    }
    rows
}

fn pod_node(pod: &Pod) -> String {
    pod.labels()
        .get(keys::LABEL_NODE)
        .cloned()
        .or_else(|| pod.spec.as_ref().and_then(|s| s.node_name.clone()))
        .unwrap_or_default()
}

/// A pod's row (ports from its container ports; the caller replaces them by the reservation's).
fn pod_row(pod: &Pod) -> RelayReport {
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.clone().unwrap_or_default();
    let phase = if pod.metadata.deletion_timestamp.is_some() {
        "Terminating".to_owned()
    } else {
        status.phase.clone().unwrap_or_else(|| "Pending".to_owned())
    };
    let state = containers.iter().find_map(|c| {
        let s = c.state.as_ref()?;
        s.waiting
            .as_ref()
            .and_then(|w| w.reason.clone())
            .or_else(|| s.terminated.as_ref().and_then(|t| t.reason.clone()))
    });
    let ports = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| p.host_port.unwrap_or(p.container_port))
        .collect();
    RelayReport {
        node: pod_node(pod),
        node_ready: None,
        pod: Some(pod.name_any()),
        phase,
        ready: status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True"),
        restarts: containers.iter().map(|c| c.restart_count).sum(),
        state,
        ports,
        listeners: Vec::new(),
        reserved: false,
    }
}

/// When an event last happened, as RFC 3339 text (sorts chronologically).
fn event_time(e: &Event) -> Option<String> {
    let text = |v: serde_json::Result<serde_json::Value>| v.ok().and_then(|v| v.as_str().map(str::to_owned));
    if let Some(t) = &e.last_timestamp {
        return text(serde_json::to_value(t));
    }
    if let Some(t) = e.series.as_ref().and_then(|s| s.last_observed_time.as_ref()) {
        return text(serde_json::to_value(t));
    }
    if let Some(t) = &e.event_time {
        return text(serde_json::to_value(t));
    }
    e.metadata.creation_timestamp.as_ref().and_then(|t| text(serde_json::to_value(t)))
}

/// The most recent [`MAX_EVENTS`] events, oldest first.
pub fn events(list: &[Event]) -> Vec<EventReport> {
    let mut out: Vec<EventReport> = list
        .iter()
        .map(|e| EventReport {
            time: event_time(e),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            object: format!(
                "{}/{}",
                e.involved_object.kind.clone().unwrap_or_default(),
                e.involved_object.name.clone().unwrap_or_default()
            ),
            message: e.message.clone().unwrap_or_default(),
            count: e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1),
        })
        .collect();
    out.sort_by(|a, b| (&a.time, &a.object, &a.reason).cmp(&(&b.time, &b.object, &b.reason)));
    let skip = out.len().saturating_sub(MAX_EVENTS);
    out.split_off(skip)
}

/// Bytes as a person reads them: `1073741824 (1.00 GiB)`.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{bytes} ({value:.2} {unit})")
}

fn or_dash(items: &[String]) -> String {
    if items.is_empty() { "-".to_owned() } else { items.join(", ") }
}

/// A borderless table, indented under a heading, without trailing spaces.
fn indented(header: Vec<&str>, rows: Vec<Vec<String>>) -> String {
    crate::out::table(&header, &rows, true).lines().map(|l| format!("    {l}\n")).collect()
}

fn render_side(s: &SideReport) -> String {
    let mut out = format!("{:?} side: {}/{}/{}\n", s.role, s.context, s.namespace, s.name);
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<13}{value}\n"));
    line("Stream id:", s.stream_id.clone());
    let shared = s.relay_model == Some(RelayModel::Shared);
    let kind = if shared { "shared relays" } else { "relays" };
    let relays_in = s.pod_namespace.as_ref().map(|ns| format!(" ({kind} in namespace {ns})")).unwrap_or_default();
    line("Gateway:", format!("{}{relays_in}", s.gateway));
    let why = if s.reason.is_empty() { String::new() } else { format!(" ({}: {})", s.reason, s.message) };
    line("Phase:", format!("{}{why}", s.phase));
    line("Connections:", format!("{} at {}, data channel {:?}", s.connections, s.rate, s.data_channel));
    line("Listeners:", or_dash(&s.listeners));
    line("Targets:", or_dash(&s.targets));
    let transferred = match &s.transfer {
        None => "-".to_owned(),
        Some(t) => {
            let now = t.throughput.as_ref().map(|x| format!(", now {x}")).unwrap_or_default();
            let at = t
                .sampled_time
                .as_ref()
                .and_then(|x| serde_json::to_value(x).ok())
                .and_then(|v| v.as_str().map(|s| format!(", sampled {s}")))
                .unwrap_or_default();
            format!("{}{now}{at}", human_bytes(t.bytes))
        }
    };
    line("Transferred:", transferred);
    out.push_str(if shared {
        "  Relays (each node's shared relay, serving every stream of the Gateway there; this stream's state on it is in Conditions):\n"
    } else {
        "  Relays:\n"
    });
    if let Some(e) = &s.relays_error {
        out.push_str(&format!("    cannot show: {e}\n"));
    }
    if s.relays.is_empty() {
        out.push_str("    none (no reservation yet)\n");
    } else {
        let rows = s
            .relays
            .iter()
            .map(|r| {
                let ports: Vec<String> = r.ports.iter().map(i32::to_string).collect();
                vec![
                    r.node.clone(),
                    r.node_ready.map_or("?", |x| if x { "Ready" } else { "NotReady" }).to_owned(),
                    r.pod.clone().unwrap_or_else(|| "-".to_owned()),
                    match &r.state {
                        Some(st) => format!("{} ({st})", r.phase),
                        None => r.phase.clone(),
                    },
                    if r.ready { "true" } else { "false" }.to_owned(),
                    r.restarts.to_string(),
                    if r.reserved {
                        or_dash(&ports).replace(' ', "")
                    } else {
                        format!("{} (draining)", ports.join(","))
                    },
                    or_dash(&r.listeners).replace(' ', ""),
                ]
            })
            .collect();
        out.push_str(&indented(
            vec!["NODE", "NODE STATUS", "POD", "PHASE", "READY", "RESTARTS", "PORTS", "LISTENERS"],
            rows,
        ));
    }
    out.push_str("  Conditions:\n");
    if s.conditions.is_empty() {
        out.push_str("    none\n");
    } else {
        let rows = s
            .conditions
            .iter()
            .map(|c| {
                let since = serde_json::to_value(&c.last_transition_time)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                vec![c.type_.clone(), c.status.clone(), c.reason.clone(), since, c.message.clone()]
            })
            .collect();
        out.push_str(&indented(vec!["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], rows));
    }
    out.push_str("  Events:\n");
    if s.events.is_empty() {
        out.push_str("    none\n");
    } else {
        let rows = s
            .events
            .iter()
            .map(|e| {
                let count = if e.count > 1 { format!(" (x{})", e.count) } else { String::new() };
                vec![
                    e.time.clone().unwrap_or_else(|| "-".to_owned()),
                    e.type_.clone(),
                    e.reason.clone(),
                    e.object.clone(),
                    format!("{}{count}", e.message),
                ]
            })
            .collect();
        out.push_str(&indented(vec!["TIME", "TYPE", "REASON", "OBJECT", "MESSAGE"], rows));
    }
    out
}

/// The text of `describe`: each side, then what could not be found.
pub fn render(r: &DescribeReport) -> String {
    let mut parts: Vec<String> = r.sides.iter().map(render_side).collect();
    if !r.notes.is_empty() {
        parts.push(r.notes.iter().map(|n| format!("Note: {n}\n")).collect());
    }
    parts.join("\n")
}
