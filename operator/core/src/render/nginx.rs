//! Nginx stream module, one `server` per route, per-connection rate from the stream's share,
//! and a `server` on the health port that answers `ok` itself (`ngx_stream_return_module`).

use std::fmt::Write;

use super::{RenderInput, Rendered, config_path};

pub(super) fn render(input: &RenderInput<'_>) -> Rendered {
    const FILE: &str = "nginx.conf";
    let relay = input.relay;
    let load = input.nginx_stream_module.map(|m| format!("load_module {m};\n")).unwrap_or_default();
    let mut text = format!(
        "# Nginx configuration for stream {}, rendered by scistream-operator.\n\
         # Plain TCP data channel: traffic between the gateways is not encrypted.\n\
         {load}daemon off;\n\
         worker_processes auto;\n\
         pid {}/nginx.pid;\n\
         error_log stderr notice;\n\
         worker_shutdown_timeout {}s;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         stream {{\n",
        input.stream_id, input.paths.run_dir, input.drain_seconds
    );
    // Nginx limits each connection; give each its equal share of the node's rate (bytes/s).
    let per_connection = (relay.rate.bytes_per_second() / relay.routes.len().max(1) as u64).max(1);
    for route in &relay.routes {
        let _ = write!(
            text,
            "    server {{\n        listen {listen};\n        proxy_pass {target};\n        proxy_buffer_size 256k;\n        proxy_connect_timeout 10s;\n        proxy_timeout 1h;\n",
            listen = route.listen,
            target = route.target,
        );
        if relay.rate.bps() > 0 {
            let _ = write!(
                text,
                "        proxy_upload_rate {per_connection};\n        proxy_download_rate {per_connection};\n"
            );
        }
        text.push_str("    }\n");
    }
    if let Some(health) = input.metrics {
        let _ = write!(text, "    server {{\n        listen {health};\n        return \"ok\\n\";\n    }}\n");
    }
    text.push_str("}\n");
    Rendered {
        file_name: FILE,
        text,
        args: vec!["-c".to_owned(), config_path(input, FILE), "-e".to_owned(), "stderr".to_owned()],
        enforces_rate: true,
        health: input.metrics.cloned().map(super::Health::Tcp),
        ready_command: None,
    }
}
