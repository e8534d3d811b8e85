//! The test kit of the operator's, the control endpoint's and the plugin's integration tests,
//! and of the end-to-end suite's operators: one copy of what they all set up.
//!
//! - [`Facility`]: an embedded API server ([`scistream_testcluster`]) with our CRDs, the
//!   gateway and user namespaces, two gateway nodes, a [`StandInKubelet`], and operators
//!   started and stopped in this process; [`FacilityBuilder`] adds users and namespaces.
//! - [`operator_args`]: the operator's flags for tests (used by [`Facility`] and by the
//!   e2e suite's facilities, which run the real node agent instead of the stand-in kubelet).
//! - [`wait_until`] / [`request_until`]: bounded polling waits.
//!
//! Everything but [`operator_args`] and [`spawn_operator`] is for tests: it panics with what
//! went wrong instead of returning errors, since every failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod facility;
mod kubelet;
mod operator;
mod wait;

pub use facility::{Facility, FacilityBuilder, GATEWAY_NS, USER_NS, gateway_spec, holdings_on, open_policy};
pub use kubelet::{StandInKubelet, node};
pub use operator::{OperatorOptions, OperatorTask, operator_args, spawn_operator};
pub use wait::{request_until, wait_until};
