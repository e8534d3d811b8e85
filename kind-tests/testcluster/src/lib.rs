//! An embedded Kubernetes API server for tests and the demo (issue #4).
//!
//! Real `kubectl` and kube-rs talk to it over TLS with bearer tokens. It
//! keeps objects as JSON in memory (optionally snapshotted to a data dir)
//! and implements the API semantics our operator and plugin rely on: CRUD,
//! LIST/WATCH with resourceVersions, status subresources, finalizers,
//! garbage collection, namespaces, patches including server-side apply,
//! RBAC, CRDs, discovery, OpenAPI and Table output. See
//! `kind-tests/README.md` for what is deliberately left out.
//!
//! ```no_run
//! # async fn demo() -> Result<(), scistream_testcluster::Error> {
//! let cluster = scistream_testcluster::TestCluster::builder().name("facility-a").start().await?;
//! let client = cluster.client().await?;
//! # let _ = client;
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admission;
pub mod auth;
pub mod builtin_rules;
pub mod cel_cost;
pub mod controllers;
pub mod convert;
pub mod crd_admit;
pub mod defaults;
pub mod delete;
pub mod discovery;
pub mod fields;
pub mod formats;
pub mod http;
pub mod jsonpath;
pub mod managed;
pub mod openapi;
pub mod ops;
pub mod patch;
pub mod persist;
pub mod pods;
pub mod protobuf;
pub mod read;
pub mod requests;
pub mod resources;
pub mod reviews;
pub mod route;
pub mod selectors;
pub mod server;
pub mod state;
pub mod status;
pub mod store;
pub mod structural;
pub mod table;
pub mod table_extra;
pub mod tls;
pub mod validation;
pub mod watch;

mod cluster;

pub use auth::UserInfo;
pub use cluster::{TestCluster, TestClusterBuilder};

/// Errors starting or stopping a test cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system trouble.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or TLS configuration failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The data dir snapshot is not valid JSON.
    #[error("snapshot {path} is corrupt")]
    Snapshot {
        /// Snapshot file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The token file is malformed.
    #[error("token file {path}")]
    TokenFile {
        /// Token file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: auth::TokenFileError,
    },
    /// Building a kube client for the cluster failed.
    #[error("building a kube client")]
    Client(#[source] Box<kube::Error>),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A static, CamelCase reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Io { .. } => "Io",
            Error::Tls(_) => "Tls",
            Error::Snapshot { .. } => "Snapshot",
            Error::TokenFile { .. } => "TokenFile",
            Error::Client(_) => "Client",
        }
    }
}
