//! `scistream-operator`: parses the flags and runs the operator.

use clap::Parser;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    scistream_controller::run(scistream_controller::Args::parse()).await
}
