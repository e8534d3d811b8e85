//! A node agent that plays kubelet for simulated gateway nodes (issue #6).
//!
//! It registers Node objects (and keeps their Ready condition and Lease
//! fresh), runs every pod bound to them as local processes (images map to
//! installed programs) or, for images built here, from the image with podman,
//! materialises ConfigMap/Secret/emptyDir volumes at
//! their mount paths, runs postStart hooks, probes, restarts with backoff and reports pod status
//! and Events as a kubelet does. Nodes get their own addresses: a network
//! namespace each on bridged test networks (`netns`, root), or a `127.a.b.c`
//! address each (`loopback`). See `kind-tests/README.md`.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), scistream_nodeagent::Error> {
//! use scistream_nodeagent::{NodeAgent, NetworkMode, Topology};
//! let agent = NodeAgent::builder(client)
//!     .topology(Topology::two_facilities())
//!     .mode(NetworkMode::Netns)
//!     .image("socat", "/usr/bin/socat")
//!     .start()
//!     .await?;
//! let gw = agent.network().address("gw-a");
//! let out = agent.network().command_on("app-a", "true").status().await;
//! # let _ = (gw, out);
//! agent.stop().await;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod agent;
pub mod backoff;
pub mod cli;
pub mod container;
pub mod env;
pub mod events;
pub mod hooks;
pub mod images;
pub mod launch;
pub mod network;
pub mod node;
pub mod plan;
pub mod podman;
pub mod probe;
pub mod process;
pub mod runtime;
pub mod scheduler;
pub mod services;
pub mod status;
mod sys;
pub mod topology;
pub mod volumes;
pub mod worker;

pub use agent::{AgentConfig, NodeAgent, NodeAgentBuilder};
pub use backoff::Backoff;
pub use images::{ImageMap, ImageRule, Runtime};
pub use network::{Network, NetworkMode};
pub use topology::{HostSpec, NodeSpec, Topology};

/// Field manager and event source of the agent.
pub const MANAGER: &str = "scistream-nodeagent";

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system or process trouble.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A command (`ip …`) failed.
    #[error("{command} failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard error.
        stderr: String,
    },
    /// The topology cannot be built.
    #[error("invalid topology")]
    Topology(#[from] topology::TopologyError),
    /// An API call failed.
    #[error("{context}")]
    Kube {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// Something needs root.
    #[error("{0} needs root; run as root or use the loopback network mode")]
    NotRoot(&'static str),
    /// Bad configuration (mapping or topology file, arguments).
    #[error("configuration: {0}")]
    Config(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A static, CamelCase reason for events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Io { .. } => "Io",
            Error::Command { .. } => "Command",
            Error::Topology(_) => "Topology",
            Error::Kube { .. } => "Kube",
            Error::NotRoot(_) => "NotRoot",
            Error::Config(_) => "Config",
        }
    }

    pub(crate) fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube { context, source: Box::new(source) }
    }
}

/// Installs the rustls crypto provider kube needs (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
