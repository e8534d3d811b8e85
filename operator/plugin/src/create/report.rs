//! What `create` prints once both sides are connected: the stream id and, per side, where it
//! is, its listeners, its control endpoint and the complete `hello` command its application
//! controller runs: the one document of `create -o json|yaml`, or lines for people. Keys are
//! never part of a command: `hello` reads them from the stream's Secret (with a kubeconfig
//! context) or from a file (`--hello-files`).

use std::path::PathBuf;

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
    /// The Hello key (none for a producer with static targets); in JSON/YAML for scripts,
    /// never in the table.
    pub hello_key: Option<String>,
    /// The facility's control endpoint (`host:port`), as its operator publishes it (or
    /// `--prod-control`/`--cons-control`), if known.
    pub control: Option<String>,
    /// Files for a host without access to the cluster (`--hello-files`): the endpoint's
    /// certificate and the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cert_file: Option<PathBuf>,
    /// See `server_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The application controller's command (`None` when no Hello is needed).
    pub hello: Option<String>,
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

/// Where the placeholder for the producer application's endpoints goes.
pub const LISTENERS_PLACEHOLDER: &str = "<host:port,...>";

/// The `hello` command of a side: with its files when written (for any host that reaches
/// the endpoint), else through its kubeconfig context (the endpoint, certificate and key
/// found in the cluster). `explicit_control` is a `--prod-control`/`--cons-control` override.
pub fn hello_command(side: &SideReport, role: &str, stream_id: &str, explicit_control: Option<&str>) -> String {
    let mut words = vec!["kubectl scistream hello".to_owned()];
    match (&side.server_cert_file, &side.key_file, &side.control) {
        (Some(cert), Some(key), Some(control)) => {
            words.push(format!("--control {control}"));
            words.push(format!("--server-cert {}", cert.display()));
            words.push(format!("--key-file {}", key.display()));
        }
        _ => {
            words.push(format!("--context {} -n {}", side.context, side.namespace));
            if let Some(c) = explicit_control {
                words.push(format!("--control {c}"));
            }
        }
    }
    words.push(format!("--role {role} --stream-id {stream_id}"));
    if role == scistream_api::control::ROLE_PROD {
        words.push(format!("--listeners {LISTENERS_PLACEHOLDER}"));
    }
    words.join(" ")
}

/// The report for people.
pub fn render(r: &CreateReport) -> String {
    let mut out = format!("Stream {} (id {})\n", r.name, r.stream_id);
    let mut side = |label: &str, s: &SideReport| {
        let at = s.control.as_deref().map(|c| format!(" (control endpoint {c})")).unwrap_or_default();
        match &s.hello {
            Some(cmd) => out.push_str(&format!("  {label} application controller{at}:\n    {cmd}\n")),
            None if label == "producer" => {
                out.push_str(&format!("  producer: static targets {}, no Hello needed\n", r.prod_targets.join(",")));
            }
            None => {}
        }
    };
    side("producer", &r.producer);
    side("consumer", &r.consumer);
    out.push_str(&format!("  consumer application connects to: {}\n", r.consumer.listeners.join(",")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(files: bool) -> SideReport {
        SideReport {
            context: "aps".into(),
            namespace: "science".into(),
            listeners: vec!["198.51.100.1:5100".into()],
            hello_key: Some("SECRET-KEY".into()),
            control: Some("192.0.2.1:31500".into()),
            server_cert_file: files.then(|| "/h/run-aps-control.crt".into()),
            key_file: files.then(|| "/h/run-aps-hello.key".into()),
            hello: None,
        }
    }

    #[test]
    fn hello_commands_never_carry_the_key() {
        let id = "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d";
        assert_eq!(
            hello_command(&side(false), "PROD", id, None),
            format!(
                "kubectl scistream hello --context aps -n science --role PROD --stream-id {id} --listeners <host:port,...>"
            )
        );
        assert_eq!(
            hello_command(&side(true), "CONS", id, None),
            format!(
                "kubectl scistream hello --control 192.0.2.1:31500 --server-cert /h/run-aps-control.crt --key-file /h/run-aps-hello.key --role CONS --stream-id {id}"
            )
        );
        let mut s = side(false);
        s.hello = Some(hello_command(&s, "CONS", id, Some("10.0.0.1:5000")));
        let r = CreateReport {
            name: "run".into(),
            stream_id: id.into(),
            producer: s.clone(),
            consumer: s,
            prod_targets: vec![],
        };
        let text = render(&r);
        assert!(!text.contains("SECRET-KEY"), "{text}");
        assert!(
            text.contains("--control 10.0.0.1:5000") && text.contains("(control endpoint 192.0.2.1:31500)"),
            "{text}"
        );
    }
}
