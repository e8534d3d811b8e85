//! The SciStream 1.x control interface, `scistream.Control` (`req`, `update`, `release`,
//! `hello`), as its `.proto` (`proto/scistream.proto`, wire-compatible with the 1.x clients
//! `s2uc` and `appctrl`; see `shared/PROTOCOL.md`) and the code tonic generates from it.
//!
//! A crate of its own so that each side links only what it needs: the control endpoint
//! (feature `server`) implements [`control_server::Control`]; the kubectl plugin (feature
//! `client`) calls it with [`control_client::ControlClient`] without linking the endpoint's
//! server, authentication or HTTP stack. The messages are always there. Tests in other
//! languages generate their stubs from [`PROTO_FILE`].

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("scistream");

/// Path of the `.proto` in the source tree (for tests that generate stubs in other languages,
/// e.g. Python `grpcio-tools`).
pub const PROTO_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/scistream.proto");
