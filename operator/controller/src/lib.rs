//! The SciStream operator (S2CS): reconciles `Gateway`s (nodes, addresses, capacity) and
//! `StreamRequest`s (reservation, Hello, relays, release) into S2DS relay pods on gateway
//! nodes. Decisions live in `scistream-core`; this crate observes and acts.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod args;
mod cache;
pub mod certs;
pub mod children;
pub mod context;
pub mod error;
pub mod events;
pub mod gateway;
pub mod lease;
pub mod ledger;
pub mod metrics;
pub mod names;
pub mod publish;
pub mod relay_hub;
pub mod reservations;
pub mod run;
pub mod server;
pub mod stream;
pub mod telemetry;
pub mod transfer;
pub mod triggers;

pub use args::Args;
pub use run::{run, run_until};
