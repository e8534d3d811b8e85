//! What `create` prints once both sides are connected: the stream id and, per side, where it
//! is, its listeners, its Hello key and its control endpoint: the one document of
//! `create -o json|yaml`, or the lines an application controller's operator reads.

use serde::Serialize;

/// One side, as `create` reports it.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SideReport {
    /// Kubeconfig context.
    pub context: String,
    /// Namespace.
    pub namespace: String,
    /// This side's listeners.
    pub listeners: Vec<String>,
    /// The Hello key (none for a producer with static targets).
    pub hello_key: Option<String>,
    /// The facility's control endpoint (`host:port`), if known.
    pub control: Option<String>,
}

/// The document of `create`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateReport {
    /// Name of both StreamRequests.
    pub name: String,
    /// The stream id.
    pub stream_id: String,
    /// Producer side.
    pub producer: SideReport,
    /// Consumer side.
    pub consumer: SideReport,
    /// Producer endpoints given with `--prod-targets` (no producer Hello needed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prod_targets: Vec<String>,
}

fn control(side: &SideReport) -> String {
    side.control.clone().unwrap_or_else(|| format!("<the control endpoint of {}>", side.context))
}

/// The report for people.
pub fn render(r: &CreateReport) -> String {
    let id = &r.stream_id;
    let mut out = format!("Stream {} (id {id})\n", r.name);
    match &r.producer.hello_key {
        Some(key) => out.push_str(&format!(
            "  producer application controller: hello --role PROD --stream-id {id} --key {key} --control {} --listeners <host:port,...>\n",
            control(&r.producer)
        )),
        None => out.push_str(&format!("  producer: static targets {}, no Hello needed\n", r.prod_targets.join(","))),
    }
    if let Some(key) = &r.consumer.hello_key {
        out.push_str(&format!(
            "  consumer application controller: hello --role CONS --stream-id {id} --key {key} --control {}\n",
            control(&r.consumer)
        ));
    }
    out.push_str(&format!("  consumer application connects to: {}\n", r.consumer.listeners.join(",")));
    out
}
