//! `kubectl-scistream`: parses the command line, runs it, maps errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    match scistream_plugin::run(scistream_plugin::cli::Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(scistream_plugin::error::Error::Closed) => ExitCode::from(scistream_plugin::error::EXIT_CLOSED),
        Err(e) => {
            scistream_plugin::out::note(&format!("error: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
