//! `kubectl-scistream`: parses the command line, runs it, maps errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // kubectl's plugin completion protocol (see `complete`), for a `kubectl_complete-scistream`
    // script that runs `kubectl-scistream __complete "$@"`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__complete") {
        let answer = scistream_plugin::complete::run(&args[1..]).await;
        let _ = scistream_plugin::out::stdout(&answer);
        return ExitCode::SUCCESS;
    }
    match scistream_plugin::run(scistream_plugin::cli::Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(scistream_plugin::error::Error::Closed) => ExitCode::from(scistream_plugin::error::EXIT_CLOSED),
        Err(e) => {
            scistream_plugin::out::note(&format!("error: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
