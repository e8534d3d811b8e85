//! Shared server state and the request context passed to every operation.

use std::sync::Arc;

use serde_json::Value;

use crate::admission::FieldValidation;
use crate::auth::{Authenticator, UserInfo};
use crate::resources::{Registry, ResourceInfo};
use crate::store::Store;

/// Everything one test cluster serves from.
#[derive(Debug)]
pub struct State {
    /// Cluster name (kubeconfig context).
    pub name: String,
    /// Objects.
    pub store: Store,
    /// Served resources.
    pub registry: Registry,
    /// Tokens and users.
    pub auth: Authenticator,
    /// PEM of the cluster CA (published as `kube-root-ca.crt` in every namespace).
    pub ca_pem: String,
    /// Requests answered (served at `/metrics`).
    pub requests: crate::requests::RequestCounts,
}

/// Shared handle on the state.
pub type Shared = Arc<State>;

/// Who is asking and how.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// Authenticated user.
    pub user: UserInfo,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager` (or derived from the User-Agent).
    pub manager: String,
    /// `fieldValidation`.
    pub validation: FieldValidation,
    /// `force` (server-side apply).
    pub force: bool,
}

/// A successful answer: the object, the HTTP code and any warnings.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Response body.
    pub body: Value,
    /// 200 or 201 (or 202 for a delete that waits).
    pub code: u16,
    /// `Warning` headers.
    pub warnings: Vec<String>,
}

impl Reply {
    /// 200 with a body.
    pub fn ok(body: Value) -> Self {
        Reply { body, code: 200, warnings: vec![] }
    }
}

/// RFC 3339 timestamp with seconds, as Kubernetes writes them.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fresh uid.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The 5-character suffix of `generateName`.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// `metadata.namespace` ("" if absent).
pub fn ns_of(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// `metadata.name` ("" if absent).
pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// Sets apiVersion/kind of a stored object to those of the served version.
pub fn as_version(obj: &Value, info: &ResourceInfo) -> Value {
    crate::convert::to_view(info, obj)
}
