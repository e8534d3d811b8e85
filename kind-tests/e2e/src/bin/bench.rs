//! `scistream-bench`: the control plane's figures (see `docs/performance.md`).
//!
//! ```sh
//! cargo build --release -p scistream-controller -p scistream-e2e -p s2ds -p scistream-plugin
//! target/release/scistream-bench scale --streams 1000
//! target/release/scistream-bench all
//! cargo build -p s2ds -p scistream-e2e && target/debug/scistream-bench legacy-rate
//! ```

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use scistream_e2e::{bench, world};

#[derive(Parser)]
struct Args {
    /// The operator binary (default: next to this program).
    #[arg(long, global = true)]
    operator: Option<PathBuf>,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// N streams against one Gateway: time until all Ready, API requests per stream, the
    /// operator's CPU and memory, an idle period, deleting them all.
    Scale {
        /// Streams.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Seconds of the idle measurement.
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
        /// Relay models measured, one after the other (shared: the nodes' two shared relays
        /// run as real `s2ds node` processes; per stream: relay pods reported Ready, not run).
        #[arg(long, value_enum, default_value = "per-stream")]
        relays: Models,
    },
    /// Create and release streams at a steady rate; check that nothing is left.
    Churn {
        /// Streams created (and released) per second.
        #[arg(long, default_value_t = 100)]
        per_second: usize,
        /// Seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds each stream lives before it is released.
        #[arg(long, default_value_t = 2)]
        lifetime_seconds: u64,
        /// Relay models measured, one after the other.
        #[arg(long, value_enum, default_value = "per-stream")]
        relays: Models,
    },
    /// `kubectl scistream create` to both sides Ready with real relays, one stream at a time.
    Latency {
        /// Streams.
        #[arg(long, default_value_t = 50)]
        streams: usize,
        /// Relay models measured, one world each, one after the other.
        #[arg(long, value_enum, default_value = "both")]
        relays: Models,
    },
    /// SciStream 1.x streams made with the grpcio replay of s2uc, at s2uc's default rate
    /// (10000 kb/s) and with the rate unset: the same transfer through each, timed.
    LegacyRate {
        /// MiB streamed through each.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Where the grpcio virtualenv is (made there if missing; default: the tests' one,
        /// `target/tmp/control-endpoint-py`).
        #[arg(long)]
        python_cache: Option<PathBuf>,
    },
    /// The relay models: a shared s2ds per node fed by the configuration channel (streams
    /// added one at a time) and an s2ds process per stream; latency, memory, descriptors, CPU
    /// per GiB.
    Relays {
        /// Streams added to the shared relay.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Per-stream relay processes started.
        #[arg(long, default_value_t = 50)]
        processes: usize,
        /// MiB relayed for the CPU figure.
        #[arg(long, default_value_t = 4096)]
        mib: usize,
    },
    /// Latency (50), scale 1,000 and 5,000, churn.
    All,
}

/// Which relay models a benchmark measures.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Models {
    /// A relay pod per stream.
    PerStream,
    /// The Gateways' shared relays.
    Shared,
    /// Both, per stream first.
    Both,
}

/// The shared relays' binary for each of `models` (None: a relay pod per stream).
fn shared_relays(models: Models) -> anyhow::Result<Vec<Option<PathBuf>>> {
    let s2ds = || scistream_e2e::built_binary("s2ds");
    Ok(match models {
        Models::PerStream => vec![None],
        Models::Shared => vec![Some(s2ds()?)],
        Models::Both => vec![None, Some(s2ds()?)],
    })
}

/// The worlds of `models`: per-stream relays, shared relays, or both.
fn worlds(models: Models) -> anyhow::Result<Vec<world::Options>> {
    let per_stream = world::Options::for_tests("S2ds")?;
    Ok(match models {
        Models::PerStream => vec![per_stream],
        Models::Shared => vec![per_stream.with_shared_relays()],
        Models::Both => vec![per_stream.clone(), per_stream.with_shared_relays()],
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let operator = match args.operator {
        Some(p) => p,
        None => bench::scale::default_operator()?,
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
    let minute = Duration::from_secs(60);
    match args.what {
        What::Scale { streams, idle_seconds, relays } => {
            for s2ds in shared_relays(relays)? {
                let idle = Duration::from_secs(idle_seconds);
                bench::scale::run(&operator, &root, streams, idle, s2ds.as_deref()).await?;
            }
            Ok(())
        }
        What::Churn { per_second, seconds, lifetime_seconds, relays } => {
            for s2ds in shared_relays(relays)? {
                let lifetime = Duration::from_secs(lifetime_seconds);
                bench::scale::churn(&operator, &root, per_second, seconds, lifetime, s2ds.as_deref()).await?;
            }
            Ok(())
        }
        What::Latency { streams, relays } => {
            for opts in worlds(relays)? {
                bench::latency::run(&opts, streams).await?;
            }
            Ok(())
        }
        What::LegacyRate { mib, python_cache } => {
            let cache = match python_cache {
                Some(c) => c,
                None => tests_python_cache()?,
            };
            bench::legacy::rate(&world::Options::for_tests("S2ds")?, &cache, mib << 20).await
        }
        What::Relays { streams, processes, mib } => {
            bench::relays::run(&scistream_e2e::built_binary("s2ds")?, streams, processes, mib).await
        }
        What::All => {
            for opts in worlds(Models::Both)? {
                bench::latency::run(&opts, 50).await?;
            }
            for s2ds in shared_relays(Models::Both)? {
                bench::scale::run(&operator, &root, 1000, minute, s2ds.as_deref()).await?;
                bench::scale::run(&operator, &root, 5000, minute, s2ds.as_deref()).await?;
                bench::scale::churn(&operator, &root, 100, 60, Duration::from_secs(2), s2ds.as_deref()).await?;
            }
            Ok(())
        }
    }
}

/// The grpcio virtualenv of the tests (`CARGO_TARGET_TMPDIR/control-endpoint-py`): `tmp/` of
/// the target directory this program was built in.
fn tests_python_cache() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target =
        exe.parent().and_then(|profile| profile.parent()).ok_or_else(|| anyhow::anyhow!("no target directory"))?;
    Ok(target.join("tmp/control-endpoint-py"))
}
