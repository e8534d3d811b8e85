//! HAProxy in TCP mode with forced splice, one `listen` section per route, and an HTTP
//! `frontend` on the health port that answers `/readyz` and `/healthz` itself.
//!
//! No `maxconn`: HAProxy then derives it from the open-files limit it runs under. A fixed
//! value makes it demand about 2.5 descriptors per connection at start-up and refuse to
//! start where the limit is lower (20000 needs 50017; many hosts and runtimes allow less).

use std::fmt::Write;

use super::{RenderInput, Rendered, config_path};

pub(super) fn render(input: &RenderInput<'_>) -> Rendered {
    const FILE: &str = "haproxy.cfg";
    let mut text = format!(
        "# HAProxy configuration for stream {}, rendered by scistream-operator.\n\
         # Plain TCP data channel: traffic between the gateways is not encrypted.\n\
         global\n    \
             log stderr format short local0 notice\n    \
             pidfile {}/haproxy.pid\n    \
             hard-stop-after {}s\n\n\
         defaults\n    \
             mode tcp\n    \
             log global\n    \
             option splice-request\n    \
             option splice-response\n    \
             timeout connect 10s\n    \
             timeout client 1h\n    \
             timeout server 1h\n",
        input.stream_id, input.paths.run_dir, input.drain_seconds
    );
    for route in &input.relay.routes {
        let _ = write!(
            text,
            "\nlisten l{index}\n    bind {listen}\n    server t{index} {target}\n",
            index = route.index,
            listen = route.listen,
            target = route.target,
        );
    }
    if let Some(health) = input.metrics {
        // No backend: the probe is answered here and never reaches a target.
        let _ = write!(
            text,
            "\nfrontend health\n    mode http\n    bind {health}\n    timeout client 10s\n    \
             http-request return status 200 content-type text/plain string ok if {{ path /readyz /healthz }}\n    \
             http-request deny deny_status 404\n"
        );
    }
    Rendered {
        file_name: FILE,
        text,
        // -db: stay in the foreground, so the pod's lifetime is the relay's.
        args: vec!["-db".to_owned(), "-f".to_owned(), config_path(input, FILE)],
        enforces_rate: false,
        health: input.metrics.cloned().map(super::Health::Http),
        ready_command: None,
    }
}
