//! `scistream-operator`: parses the flags and runs the operator.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    scistream_controller::run(scistream_controller::Args::parse()).await
}
