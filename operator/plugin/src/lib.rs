//! `kubectl scistream`, SciStream's user client (S2UC) as a kubectl plugin: it drives both
//! facilities' clusters through two kubeconfig contexts to create, inspect and release
//! streams. Progress goes to stderr, data to stdout; exit codes are in [`error`].
//!
//! Tests: unit and snapshot tests (`--help`, the `objects` the plugin creates, the tables and
//! `describe` rendered from fixed objects in `show/fixtures.rs`), and against two embedded
//! clusters `tests/two_facilities.rs` and `tests/credentials.rs` (exec and OIDC logins). After
//! an intended change of output, regenerate the snapshots with
//! `INSTA_UPDATE=always cargo nextest run -p scistream-plugin` (or `cargo insta review`) and
//! read the diff of `src/**/snapshots` and `tests/snapshots` before committing; CI never
//! writes snapshots (insta fails on a difference when `CI` is set).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod complete;
pub mod control;
pub mod create;
pub mod doctor;
pub mod error;
pub mod explain;
pub mod facility;
pub mod hello;
pub mod objects;
pub mod out;
pub mod progress;
pub mod reach;
pub mod release;
pub mod show;

use clap::CommandFactory;

/// Runs a parsed command line.
pub async fn run(cli: cli::Cli) -> error::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match &cli.command {
        cli::Command::Create(args) => create::run(&cli, args).await,
        cli::Command::Get(r) => show::get(&cli, r).await,
        cli::Command::List(args) => show::list(&cli, args).await,
        cli::Command::Describe(r) => show::describe(&cli, r).await,
        cli::Command::Release(r) => release::release(&cli, r).await,
        cli::Command::Update(r) => release::update(&cli, r).await,
        cli::Command::Gateways(at) => show::gateways(&cli, at).await,
        cli::Command::Doctor(args) => doctor::run(&cli, args).await,
        cli::Command::Hello(_) if cli.output == cli::Output::Name => {
            Err(error::Error::Usage("hello makes no object: -o name does not apply; use -o json".to_owned()))
        }
        cli::Command::Hello(args) => hello::run(&cli, args).await,
        cli::Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cli::Cli::command(), "kubectl-scistream", &mut script);
            out::stdout(&String::from_utf8_lossy(&script))
        }
    }
}
