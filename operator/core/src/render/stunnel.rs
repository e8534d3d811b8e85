//! Stunnel with TLS 1.3 and the stream's pinned certificates (`verifyPeer`): the producer
//! side accepts TLS from the peer gateway, the consumer side originates it.
//!
//! Unlike SciStream 1.x (a pre-shared key derived from the uid, `ciphers = eNULL`), the peer
//! is authenticated by its per-stream certificate and the data is encrypted.
//!
//! Stunnel has no health listener of its own. The `health` service is a TLS server on the
//! health port: stunnel in server mode finishes the TLS handshake before it connects onwards,
//! and a TCP probe connects and closes without a handshake, so nothing is ever connected.
//! Even a client that did finish it (only the peer gateway holds a certificate it accepts)
//! would be connected back to the health port itself, whose handshake then fails: nothing
//! leaves the relay. Its handshake failures are not logged (`debug = crit`).

use std::fmt::Write;

use super::{RenderInput, Rendered, config_path};
use crate::relay::RelayMode;

pub(super) fn render(input: &RenderInput<'_>) -> Rendered {
    const FILE: &str = "stunnel.conf";
    let client = input.relay.mode == RelayMode::TlsClient;
    let mut text = format!(
        "; Stunnel configuration for stream {stream}, rendered by scistream-operator.\n\
         foreground = yes\n\
         pid = {run}/stunnel.pid\n\
         syslog = no\n\
         debug = notice\n\
         sslVersionMin = TLSv1.3\n\
         cert = {cert}\n\
         key = {key}\n\
         CAfile = {peer}\n\
         verifyPeer = yes\n\
         client = {client}\n",
        stream = input.stream_id,
        run = input.paths.run_dir,
        cert = input.paths.cert_file,
        key = input.paths.key_file,
        peer = input.paths.peer_cert_file,
        client = if client { "yes" } else { "no" },
    );
    for route in &input.relay.routes {
        let _ = write!(
            text,
            "\n[l{index}]\naccept = {listen}\nconnect = {target}\n",
            index = route.index,
            listen = route.listen,
            target = route.target,
        );
    }
    if let Some(health) = input.metrics {
        let _ = write!(text, "\n[health]\nclient = no\naccept = {health}\nconnect = {health}\ndebug = crit\n");
    }
    Rendered {
        file_name: FILE,
        text,
        args: vec![config_path(input, FILE)],
        enforces_rate: false,
        health: input.metrics.cloned().map(super::Health::Tcp),
        ready_command: None,
    }
}
