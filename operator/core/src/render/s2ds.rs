//! The `s2ds` relay's YAML configuration (format documented in `s2ds-image/README.md`).

use scistream_api::RecordLayer;
use serde::Serialize;

use super::{RenderInput, Rendered, config_path};
use crate::relay::RelayMode;

/// Where the s2ds image has its binary, the image's entrypoint (`s2ds-image/Dockerfile`): the
/// relay pod's postStart hook runs `s2ds wait-ready` from there.
pub const BINARY: &str = "/s2ds";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Config<'a> {
    stream_id: &'a str,
    mode: &'static str,
    listeners: Vec<String>,
    targets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_bits_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_address: Option<String>,
    drain_seconds: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tls<'a> {
    cert_file: &'a str,
    key_file: &'a str,
    peer_cert_file: &'a str,
    /// Written only when not s2ds's own default, so the usual file stays as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    record_layer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_tls: Option<bool>,
}

pub(super) fn render(input: &RenderInput<'_>) -> Rendered {
    const FILE: &str = "config.yaml";
    let relay = input.relay;
    let config = Config {
        stream_id: input.stream_id,
        mode: relay.mode.as_str(),
        listeners: relay.routes.iter().map(|r| r.listen.to_string()).collect(),
        // One target per listener, already paired: listener i -> targets[i mod len] = targets[i].
        targets: relay.routes.iter().map(|r| r.target.to_string()).collect(),
        rate_bits_per_second: (relay.rate.bps() > 0).then_some(relay.rate.bps()),
        tls: (relay.mode != RelayMode::Plain).then_some(Tls {
            cert_file: &input.paths.cert_file,
            key_file: &input.paths.key_file,
            peer_cert_file: &input.paths.peer_cert_file,
            record_layer: match input.s2ds.record_layer {
                RecordLayer::S2ds => None,
                RecordLayer::Rustls => Some("rustls"),
            },
            kernel_tls: input.s2ds.kernel_tls,
        }),
        metrics_address: input.metrics.map(ToString::to_string),
        drain_seconds: input.drain_seconds,
    };
    let yaml = serde_yaml::to_string(&config).unwrap_or_default();
    Rendered {
        file_name: FILE,
        text: format!("# s2ds configuration for stream {}, rendered by scistream-operator\n{yaml}", input.stream_id),
        args: vec!["--config".to_owned(), config_path(input, FILE)],
        enforces_rate: true,
        health: input.metrics.cloned().map(super::Health::Http),
        ready_command: input
            .metrics
            .map(|_| [BINARY, "wait-ready", "--config", &config_path(input, FILE)].map(str::to_owned).to_vec()),
    }
}
