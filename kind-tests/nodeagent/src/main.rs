//! `nodeagent`: plays kubelet for simulated gateway nodes (see `kind-tests/README.md`).

use anyhow::Context;
use clap::Parser;
use scistream_nodeagent::cli::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    run(args).await.context("nodeagent failed")
}
