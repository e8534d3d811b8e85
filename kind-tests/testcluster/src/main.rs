//! `testcluster`: runs an embedded Kubernetes API server until SIGTERM/SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Embedded Kubernetes API server for tests and the demo.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to write the admin kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Cluster and kubeconfig context name.
    #[arg(long, default_value = "testcluster")]
    name: String,
    /// Keep objects, certificates and the admin token here across restarts.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Static token file: token,user,uid,"group1,group2".
    #[arg(long)]
    tokens: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let mut b = scistream_testcluster::TestCluster::builder().name(&a.name).port(a.port).kubeconfig_path(&a.kubeconfig);
    if let Some(d) = &a.data_dir {
        b = b.data_dir(d);
    }
    if let Some(t) = &a.tokens {
        b = b.token_file(t);
    }
    let cluster = b.start().await.context("starting the test cluster")?;
    println!("ready {}", cluster.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
    }
    cluster.shutdown().await;
    Ok(())
}
