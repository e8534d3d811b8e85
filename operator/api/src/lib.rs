//! The `scistream.io/v1alpha1` API, shared by the operator, the kubectl plugin and the tests.
//!
//! - [`Gateway`] (cluster-scoped): a facility's gateway nodes, port range, bandwidth and
//!   relay implementation.
//! - [`StreamRequest`] (namespaced): one side of a stream; the producer and consumer sides
//!   live in their own facilities' clusters and share a `streamId`.
//!
//! Parsers for what people write in these objects ([`rate`], [`endpoint`]) live here too,
//! so admission (schema patterns, CEL) and the code that acts on the objects agree.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod conditions;
pub mod control;
pub mod crdgen;
pub mod endpoint;
pub mod gateway;
pub mod keys;
pub mod policy;
pub mod rate;
pub mod reference;
pub mod stream_request;
pub mod written;

pub use endpoint::{Endpoint, EndpointError, Host};
pub use gateway::{
    Gateway, GatewayNodeStatus, GatewaySpec, GatewayStatus, Implementation, PortRange, RecordLayer, RelayModel,
    Reservation, S2dsSettings,
};
pub use rate::{Rate, RateError};
pub use stream_request::{
    DataChannel, NodeAllocation, Phase, RateEnforcement, Role, SecretKeyRef, StreamRequest, StreamRequestSpec,
    StreamRequestStatus,
};
pub use written::{HelloTimeout, Written};
