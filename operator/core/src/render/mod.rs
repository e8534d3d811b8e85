//! Configuration files for the four S2DS implementations, rendered from a [`NodeRelay`].
//!
//! Each renderer returns the file to mount and the container arguments that start the
//! implementation in the foreground (so stopping the pod stops the relay; SciStream 1.x
//! started HAProxy as a daemon and `release` stopped nothing). Logs go to stderr, never to a
//! pipe nobody reads.
//!
//! Every implementation also serves a health listener of its own, on the node's LAN address
//! and a port held for it like a listener's, that answers probes itself and never forwards:
//! a probe on a data listener would open a connection through the relays to the application
//! every probe period (the kubelet connects to probe, and the applications saw spurious empty
//! connections).

mod haproxy;
mod nginx;
pub mod s2ds;
mod stunnel;

use scistream_api::{Endpoint, Implementation, S2dsSettings};

use crate::relay::NodeRelay;

/// Where the relay finds its files inside the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Directory of the rendered configuration file (a ConfigMap volume).
    pub config_dir: String,
    /// This side's certificate (PEM), from the per-stream key Secret.
    pub cert_file: String,
    /// This side's private key (PKCS#8 PEM), from the per-stream key Secret.
    pub key_file: String,
    /// The peer's pinned certificate (PEM).
    pub peer_cert_file: String,
    /// A writable directory for pid files and sockets (an emptyDir).
    pub run_dir: String,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            config_dir: "/etc/s2ds/config".to_owned(),
            cert_file: "/etc/s2ds/tls/tls.crt".to_owned(),
            key_file: "/etc/s2ds/tls/tls.key".to_owned(),
            peer_cert_file: "/etc/s2ds/config/peer.crt".to_owned(),
            run_dir: "/run/s2ds".to_owned(),
        }
    }
}

/// What a renderer needs besides the relay itself.
#[derive(Clone, Debug)]
pub struct RenderInput<'a> {
    /// Stream id (metrics label, log field).
    pub stream_id: &'a str,
    /// The relay to configure.
    pub relay: &'a NodeRelay,
    /// File locations in the pod.
    pub paths: &'a Paths,
    /// Where the relay serves health (and, for s2ds, metrics); `None` for a reservation made
    /// without a port for it (the relay is then not probed).
    pub metrics: Option<&'a Endpoint>,
    /// Grace period for established connections on SIGTERM.
    pub drain_seconds: u32,
    /// Path of Nginx's stream module, when it is a dynamic module in the image.
    pub nginx_stream_module: Option<&'a str>,
    /// The Gateway's `spec.s2ds` (record layer, kernel TLS); the default when absent.
    pub s2ds: &'a S2dsSettings,
}

/// A rendered configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// File name inside [`Paths::config_dir`].
    pub file_name: &'static str,
    /// File content.
    pub text: String,
    /// Container arguments (the image's entrypoint is the implementation's binary).
    pub args: Vec<String>,
    /// Whether the implementation enforces the stream's rate.
    pub enforces_rate: bool,
    /// How to probe the relay: its health listener, never a data listener.
    pub health: Option<Health>,
    /// A command, run in the container as soon as it starts, that returns once the relay is
    /// ready (the pod's postStart exec hook): the container is not running, and its readiness
    /// not probed, until it returns, so the relay is Ready the moment it is bound instead of a
    /// probe period after a first probe that beat its bind.
    pub ready_command: Option<Vec<String>>,
}

/// A relay's health listener, as its probes reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// HTTP `GET /readyz` (readiness) and `GET /healthz` (liveness) answer 200.
    Http(Endpoint),
    /// A TCP connection is accepted (and goes nowhere).
    Tcp(Endpoint),
}

/// Whether relays of `implementation` need a port of their own on every node they use, for
/// their health listener (and s2ds's metrics). Every implementation does: probes must never
/// go through a data listener. Exhaustive, so a new implementation has to decide.
pub const fn needs_health_port(implementation: Implementation) -> bool {
    match implementation {
        Implementation::S2ds | Implementation::Haproxy | Implementation::Nginx | Implementation::Stunnel => true,
    }
}

/// Renders the configuration of `implementation` for `input`.
pub fn render(implementation: Implementation, input: &RenderInput<'_>) -> Rendered {
    match implementation {
        Implementation::S2ds => s2ds::render(input),
        Implementation::Haproxy => haproxy::render(input),
        Implementation::Nginx => nginx::render(input),
        Implementation::Stunnel => stunnel::render(input),
    }
}

fn config_path(input: &RenderInput<'_>, file_name: &str) -> String {
    format!("{}/{file_name}", input.paths.config_dir)
}

#[cfg(test)]
mod tests;
