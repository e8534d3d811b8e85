//! The shared relay's configuration channel, `scistream.relay.v1.RelayConfig`: its `.proto`
//! (`proto/relay.proto`, which says how the channel is used) and the code tonic generates
//! from it. The s2ds relay (feature `client`) dials the operator, which implements
//! [`relay_config_server::RelayConfig`] (feature `server`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("scistream.relay.v1");
