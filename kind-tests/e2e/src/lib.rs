//! SciStream end to end: two facilities on one machine (embedded API servers, operators,
//! node agents running real relays), a stream created as a user would, data streamed and
//! verified at both ends.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod apps;
pub mod bench;
pub mod external;
pub mod faults;
pub mod introspection;
pub mod legacy;
pub mod stream;
pub mod workload;
pub mod world;

use std::path::PathBuf;

/// A binary of the workspace (`s2ds`, `kubectl-scistream`) next to the running program, or
/// one directory up (test binaries live in `target/<profile>/deps`).
pub fn built_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|d| d.join(name)).collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "{name} is not built (looked for {candidates:?}); run `cargo build -p s2ds -p scistream-plugin`"
        )
    })
}

/// Two tests of one scenario (`async fn(world::Options)`): `$per_stream` with a relay pod per
/// stream, `$shared` with the Gateways' shared relays (`spec.s2ds.relayModel: Shared`), both
/// from [`world::Options::for_tests`]`("S2ds")`. Attributes (doc comments) go on both.
#[macro_export]
macro_rules! both_relay_models {
    ($(#[$meta:meta])* $per_stream:ident, $shared:ident, $scenario:path) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $per_stream() {
            $scenario($crate::world::Options::for_tests("S2ds").expect("s2ds is built")).await
        }

        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $shared() {
            $scenario($crate::world::Options::for_tests("S2ds").expect("s2ds is built").with_shared_relays()).await
        }
    };
}
