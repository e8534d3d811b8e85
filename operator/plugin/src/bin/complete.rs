//! `kubectl_complete-scistream`: what kubectl (1.26+) runs to complete `kubectl scistream ...`
//! (see `scistream_plugin::complete`). Install it next to `kubectl-scistream` on the PATH.

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let answer = scistream_plugin::complete::run(&args).await;
    let _ = scistream_plugin::out::stdout(&answer);
    ExitCode::SUCCESS
}
