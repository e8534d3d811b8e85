//! SciStream's domain logic, free of I/O: what to reserve, where to relay, and how each
//! relay implementation is configured. The operator observes the cluster, asks this crate
//! what to do, and acts; so every decision here is unit-tested without an API server.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod allocator;
pub mod phase;
pub mod policy;
pub mod relay;
pub mod render;
