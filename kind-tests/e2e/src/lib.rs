//! SciStream end to end: two facilities on one machine (embedded API servers, operators,
//! node agents running real relays), a stream created as a user would, data streamed and
//! verified at both ends.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod apps;
pub mod external;
pub mod stream;
pub mod workload;
pub mod world;
