//! Command line: `s2ds --config PATH` runs, `s2ds check --config PATH`
//! validates (including reading the TLS files) and exits 0 or 1, `s2ds wait-ready --config
//! PATH` returns once the relay serving that config is ready (the relay pod's postStart hook),
//! `s2ds node --gateway G --node N --control-plane ADDR …` runs the shared relay of a Gateway
//! on a node, fed by the operator's configuration channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::config::Config;
use crate::server::Server;
use crate::state::State;

/// SciStream data server: relays TCP between listeners and targets, plain or
/// over mutual TLS with pinned certificates.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Path to the YAML config file (see the README for the format).
    #[arg(long, short, global = true, env = "S2DS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Runtime worker threads (default: one per core).
    #[arg(long, global = true, env = "S2DS_WORKERS")]
    pub workers: Option<usize>,
    /// Sub-command; without one, the relay runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config (and the TLS files it names), then exit 0 or 1.
    Check,
    /// Wait until the relay serving the config answers `/readyz` with 200 (exit 0), or fail
    /// after the timeout naming its last answer (exit 1). The relay pod's postStart hook.
    WaitReady {
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 60)]
        timeout_seconds: u64,
    },
    /// Run the shared relay of a Gateway on this node: every stream comes from the operator's
    /// configuration channel (no `--config`), added and removed live.
    Node(NodeArgs),
}

/// `s2ds node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The Gateway served.
    #[arg(long, env = "S2DS_GATEWAY")]
    pub gateway: String,
    /// This node's name.
    #[arg(long, env = "S2DS_NODE")]
    pub node: String,
    /// The operator's relay-config address (`host:port`, e.g. the operator's Service name).
    #[arg(long, env = "S2DS_CONTROL_PLANE", value_parser = host_port)]
    pub control_plane: String,
    /// This relay's certificate (PEM), which the operator pins.
    #[arg(long, env = "S2DS_CERT")]
    pub cert: PathBuf,
    /// This relay's key (PKCS#8 PEM).
    #[arg(long, env = "S2DS_KEY")]
    pub key: PathBuf,
    /// The operator's certificate (PEM), pinned.
    #[arg(long, env = "S2DS_CONTROL_PLANE_CERT")]
    pub control_plane_cert: PathBuf,
    /// Where `/metrics`, `/readyz` and `/readyz/STREAM` are served.
    #[arg(long, env = "S2DS_METRICS_ADDRESS")]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Grace for every stream's connections at SIGTERM.
    #[arg(long, default_value_t = crate::config::DEFAULT_DRAIN_SECONDS)]
    pub drain_seconds: u64,
}

/// `host:port` with a port number.
fn host_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not host:port (e.g. scistream-relay-channel.scistream-system.svc:8444)")),
    }
}

/// Raises the soft limit on open files to the hard one (as the Go runtime does for every
/// program since 1.19): each listener takes a socket per worker and each connection two, so a
/// shared relay with a thousand streams needs far more than the usual soft 1024. Returns the
/// limit now in force.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Runs the parsed command line.
pub fn run(args: Args) -> anyhow::Result<()> {
    let command = match args.command {
        Some(Command::Node(node)) => return run_node(node, args.workers),
        other => other,
    };
    let path = args.config.context("--config PATH is required")?;
    let config = Config::load(&path).map_err(|e| anyhow::anyhow!(crate::report(&e)))?;
    match command {
        Some(Command::Check) => {
            State::build(config).map_err(|e| anyhow::anyhow!(crate::report(&e)))?;
            println!("{}: ok", path.display());
            return Ok(());
        }
        Some(Command::WaitReady { timeout_seconds }) => {
            let Some(metrics) = config.metrics_address else {
                println!("{}: no metricsAddress, nothing to wait for", path.display());
                return Ok(());
            };
            let address = crate::wait::ask_address(metrics);
            let waited = crate::wait::until_ready(address, Duration::from_secs(timeout_seconds))?;
            println!("{address}: ready after {} ms", waited.as_millis());
            return Ok(());
        }
        Some(Command::Node(_)) | None => {}
    }
    let workers = spawn_workers(worker_count(args.workers))?;
    // Control plane (signals, reload, metrics endpoint) on the main thread.
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    // One span for the stream this process relays: every event carries it.
    let span = info_span!("s2ds", stream = %config.stream_id);
    rt.block_on(serve(path, config, workers).instrument(span))
}

/// `s2ds node`: workers, the control-plane runtime, the shared relay.
fn run_node(node: NodeArgs, workers: Option<usize>) -> anyhow::Result<()> {
    let workers = spawn_workers(worker_count(workers))?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let span = info_span!("s2ds", gateway = %node.gateway, node = %node.node);
    rt.block_on(serve_node(node, workers).instrument(span))
}

/// `--workers`, or one per core.
fn worker_count(asked: Option<usize>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    asked.unwrap_or(cores).max(1)
}

/// The shared relay: the configuration channel feeds it until SIGTERM or SIGINT, then every
/// stream drains.
async fn serve_node(args: NodeArgs, workers: Vec<tokio::runtime::Handle>) -> anyhow::Result<()> {
    let open_files = raise_open_files();
    info!(open_files, "open-file limit");
    let stopped = stop_signal()?;
    let identity = crate::config::TlsFiles {
        cert_file: args.cert,
        key_file: args.key,
        peer: crate::config::PeerPin::CertFile(args.control_plane_cert),
        kernel_tls: false,
        record_layer: crate::config::RecordLayer::Rustls,
    };
    // A missing or broken identity is a start-up error, not a retry loop.
    crate::tls::client_config(&identity).map_err(|e| anyhow::anyhow!(crate::report(&e)))?;
    let node = Arc::new(
        crate::node::NodeRelay::start(args.metrics_address, workers)
            .await
            .map_err(|e| anyhow::anyhow!(crate::report(&e)))?,
    );
    let options =
        crate::control_plane::Options { address: args.control_plane, gateway: args.gateway, node: args.node, identity };
    let stop = CancellationToken::new();
    let channel = tokio::spawn(crate::control_plane::run(node.clone(), options, stop.clone()).in_current_span());
    // Awaited outside the macro: a disabled level would skip its fields, and the wait.
    let signal = stopped.await;
    info!(signal, "shutting down");
    stop.cancel();
    let _ = channel.await;
    node.shutdown(Duration::from_secs(args.drain_seconds)).await;
    Ok(())
}

/// Resolves with the name of the first SIGTERM or SIGINT (both handled from this call on).
fn stop_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Starts `n` threads, each driving a single-threaded runtime that carries
/// connections. They run until the process exits.
fn spawn_workers(n: usize) -> anyhow::Result<Vec<tokio::runtime::Handle>> {
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a worker runtime")?;
        handles.push(rt.handle().clone());
        std::thread::Builder::new()
            .name(format!("s2ds-worker-{i}"))
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .context("cannot start a worker thread")?;
    }
    Ok(handles)
}

async fn serve(path: PathBuf, config: Config, workers: Vec<tokio::runtime::Handle>) -> anyhow::Result<()> {
    raise_open_files();
    let grace = Duration::from_secs(config.drain_seconds);
    let stopped = stop_signal()?;
    let server = Arc::new(Server::start(config, workers).await.map_err(|e| anyhow::anyhow!(crate::report(&e)))?);
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(crate::reload::watch(server.clone(), path, stop.clone()).in_current_span());
    // Awaited outside the macro: a disabled level would skip its fields, and the wait.
    let signal = stopped.await;
    info!(signal, "shutting down");
    stop.cancel();
    let _ = watcher.await;
    let server =
        Arc::try_unwrap(server).map_err(|_| anyhow::anyhow!("internal error: server still shared at shutdown"))?;
    server.shutdown(grace).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let low = hard.min(512);
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        assert_eq!(super::raise_open_files(), hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
