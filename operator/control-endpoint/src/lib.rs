//! The S2CS control endpoint: the SciStream 1.x gRPC interface (`scistream.Control`: `req`,
//! `update`, `release`, `hello`), wire-compatible with unchanged 1.x `s2uc` and `appctrl`
//! clients, plus the same Hello as JSON over HTTP (`POST /v1/hello`).
//!
//! # Wiring it into the operator
//!
//! ```ignore
//! #[derive(clap::Parser)]
//! struct Args {
//!     // ...
//!     #[command(flatten)]
//!     control: scistream_control_endpoint::Args,
//! }
//! let config = args.control.config()?;                       // EndpointConfig
//! let metrics = scistream_control_endpoint::Metrics::new(&mut registry);
//! let bound = scistream_control_endpoint::bind(client.clone(), config, metrics).await?;
//! tokio::spawn(bound.run(token.clone()));                     // or: serve(client, config, token)
//! ```
//!
//! Every replica serves (state lives in the API). The endpoint keeps its own watch of all
//! StreamRequests (an index by stream id: a Hello never LISTs) and needs the RBAC rules in
//! `charts/scistream-operator/files/`: cluster-wide (`operator-clusterrole-rules.yaml`), in
//! its own namespace (`operator-role-rules.yaml`: its certificate) and in the legacy
//! namespace (`operator-legacy-role-rules.yaml`: legacy `req`'s StreamRequests and keys).
//!
//! # What each call does
//!
//! - `hello`: finds the StreamRequest by `spec.streamId` (with both sides in one cluster, the
//!   one whose legacy `req` waits on the Hello's own connection first: `s2uc` says `PROD` even
//!   from `outbound-request`), checks the `authorization` metadata against the Hello key
//!   (Secret `spec.helloKeySecretRef`) in constant time, or, for a stream a legacy `req`
//!   created, against the SHA-256 of the creating credential (annotation
//!   [`legacy::ANNOTATION_CREDENTIAL`]); records `status.helloTime` (and `prodListeners` on the
//!   producer side; on a legacy stream whose `update` set `spec.targets`, those too, so the
//!   relays follow) by server-side apply as field manager `scistream-control-endpoint`. A
//!   consumer's Hello answers with `status.listeners`, waiting for them within a deadline.
//! - `req`: creates a StreamRequest in the configured namespace and gateway (its
//!   `status.rateEnforcement` set by the endpoint's `--control-legacy-rate`: by default the
//!   1.x rate is reserved, not enforced), after authenticating the token (`kubernetes`:
//!   TokenReview; `introspection`: RFC 7662 with scope and audience; `none`: nothing) and a
//!   SubjectAccessReview; blocks until its Hello.
//! - `update`/`release`: patch/delete only StreamRequests a legacy `req` created, and in the
//!   authenticated modes only for their creator (annotation [`legacy::ANNOTATION_CREATOR`]),
//!   with a SubjectAccessReview on the StreamRequest by name.
//!
//! Failed authentications are counted per address and credential, and per address
//! ([`auth::limiter`]), so one misconfigured client does not lock out its neighbours.
//!
//! Errors are precise gRPC codes ([`error::Error::code`]); an unknown stream is `NOT_FOUND`,
//! never `UNAUTHENTICATED` (`appctrl` retries every other code). A message over
//! [`EndpointConfig::max_message_bytes`] is refused with `RESOURCE_EXHAUSTED` ([`limit`]).
//!
//! # Layout
//!
//! Pure logic, unit-tested: [`legacy`] (1.x messages to StreamRequests), [`decide`] (which
//! side a Hello is for and what it changes, which streams a legacy call may touch, what a
//! blocked `req` answers), [`auth`] (credentials, the Hello-key check, the failure limits),
//! [`error`] (codes and HTTP statuses), [`index`] (the stream-id index),
//! [`handler::waiting`] (the `req`s in progress, by connection). The protocol in [`handler`]
//! is generic over [`streams::Streams`] and [`auth::Access`]; [`streams::KubeStreams`],
//! [`grpc`], [`http`], [`tls`] and [`server`] do the I/O. The `.proto` and its generated code
//! are the `scistream-control-proto` crate ([`proto`]).
//!
//! # Tests and fuzzing
//!
//! `cargo nextest run -p scistream-control-endpoint` runs the unit tests and the integration
//! tests (embedded API server, real operator, TLS on 127.0.0.1), including a Python `grpcio`
//! client with stubs generated from `operator/control-proto/proto/scistream.proto` (a virtualenv is made under the
//! cargo target directory; needs `python3-venv` and PyPI once). Fuzzing needs nightly:
//! `operator/control-endpoint/fuzz/run.sh [seconds]` (AddressSanitizer), or its bounded CI mode
//! `run.sh --ci [seconds]` (no sanitizer, development profile, 20 s per target, builds under
//! `$CARGO_TARGET_DIR/fuzz`: about 7 min cold and 45 s warm on the 2-core CI machine); both
//! skip cleanly without nightly or cargo-fuzz. Or
//! `cd operator/control-endpoint && cargo +nightly fuzz run --fuzz-dir fuzz decode_requests`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
pub mod config;
pub mod decide;
pub mod error;
pub mod grpc;
pub mod handler;
pub mod http;
pub mod index;
pub mod legacy;
pub mod limit;
pub mod metrics;
pub mod server;
pub mod streams;
pub mod tls;

/// The messages and service of `scistream.Control` (the `scistream-control-proto` crate).
pub use scistream_control_proto as proto;

pub use config::{Args, AuthConfig, EndpointConfig};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use server::{Bound, bind};

/// Serves the control endpoint with `client` until `shutdown` is cancelled (metrics are kept
/// but not registered anywhere; use [`bind`] with [`Metrics::new`] to export them).
pub async fn serve(
    client: kube::Client,
    config: EndpointConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    bind(client, config, Metrics::default()).await?.run(shutdown).await
}
