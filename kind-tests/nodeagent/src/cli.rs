//! The `nodeagent` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{Backoff, Error, ImageMap, NetworkMode, NodeAgent, NodeSpec, Result, Topology};

/// Plays kubelet for simulated nodes: registers them, runs their pods as local processes.
#[derive(Debug, Parser)]
#[command(name = "nodeagent", version)]
pub struct Args {
    /// Kubeconfig of the API server (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// Topology YAML (networks, nodes, hosts); see kind-tests/README.md.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Extra nodes with no network (loopback mode), by name.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// Network mode.
    #[arg(long, value_enum, default_value = "loopback")]
    pub mode: NetworkMode,
    /// Image mapping YAML (`- {image: "haproxy:*", program: /usr/sbin/haproxy}`), tried before the defaults.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Run images matching this pattern (e.g. `ghcr.io/scistream/*`) from the image itself
    /// with podman (`--pull never`); repeatable; tried before every other rule.
    #[arg(long = "podman-image")]
    pub podman_images: Vec<String>,
    /// The built s2ds binary (for images matching `*s2ds*`).
    #[arg(long)]
    pub s2ds: Option<PathBuf>,
    /// Directory for pod volumes and logs (default: a temporary directory removed at exit).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Node heartbeat period in seconds.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
    /// Use short restart backoffs (200 ms to 2 s) instead of the kubelet's (10 s to 5 min).
    #[arg(long)]
    pub fast_backoff: bool,
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { context: format!("reading {}", path.display()), source })
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(args: Args) -> Result<()> {
    crate::install_crypto_provider();
    let opts = KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
    let cfg = match &args.kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p).map_err(|e| Error::Config(format!("kubeconfig {}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| Error::Config(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Config(e.to_string()))?,
    };
    let client = kube::Client::try_from(cfg).map_err(Error::kube("building a client"))?;
    let mut topology = match &args.topology {
        Some(p) => {
            Topology::from_yaml(&read(p)?).map_err(|e| Error::Config(format!("topology {}: {e}", p.display())))?
        }
        None => Topology::new(),
    };
    topology.nodes.extend(args.nodes.iter().map(|n| NodeSpec::new(n)));
    let mut images = ImageMap::with_defaults(args.s2ds.as_deref());
    if let Some(p) = &args.images {
        let extra =
            ImageMap::from_yaml(&read(p)?).map_err(|e| Error::Config(format!("images {}: {e}", p.display())))?;
        for r in extra.rules.into_iter().rev() {
            images.prepend(r);
        }
    }
    let mut b = NodeAgent::builder(client)
        .topology(topology)
        .mode(args.mode)
        .images(images)
        .heartbeat(Duration::from_secs(args.heartbeat_seconds.max(1)))
        .backoff(if args.fast_backoff { Backoff::fast() } else { Backoff::default() });
    for pattern in args.podman_images.iter().rev() {
        b = b.podman_image(pattern);
    }
    if let Some(d) = &args.state_dir {
        b = b.state_dir(d);
    }
    let agent = b.start().await?;
    for n in &agent_nodes(&args, &agent) {
        println!("node {n}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| Error::Io { context: "installing SIGTERM handler".into(), source })?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    agent.stop().await;
    Ok(())
}

fn agent_nodes(_args: &Args, agent: &NodeAgent) -> Vec<String> {
    agent
        .network()
        .plan()
        .members
        .iter()
        .filter(|m| m.is_node)
        .map(|m| format!("{} {}", m.name, agent.network().address(&m.name).map(|a| a.to_string()).unwrap_or_default()))
        .collect()
}
