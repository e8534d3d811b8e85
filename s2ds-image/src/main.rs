//! The `s2ds` binary: installs the crypto provider and logging, then runs.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use clap::Parser;

fn main() -> std::process::ExitCode {
    s2ds::tls::install_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match s2ds::cli::run(s2ds::cli::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s2ds: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
