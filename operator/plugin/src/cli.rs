//! Command-line interface of `kubectl scistream`. Every `///` below is the `--help` text.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use scistream_api::{HelloTimeout, Rate, Written};

/// Set up and operate SciStream streams between two facilities' Kubernetes clusters.
///
/// A stream has a producer side (where the data is made) and a consumer side (where it is
/// analysed), each a StreamRequest in its facility's cluster. `create` makes both, waits for
/// their gateway reservations, exchanges listeners and certificates, and tells you what the
/// application controllers need for their Hello.
#[derive(Debug, Parser)]
#[command(name = "kubectl-scistream", bin_name = "kubectl scistream", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Path of the kubeconfig (default: the files listed in $KUBECONFIG, merged as kubectl
    /// merges them, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format: one document on standard output (progress and hints go to standard error).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Print tables without their header line.
    #[arg(long, global = true)]
    pub no_headers: bool,
    /// How long to wait for each step, e.g. 180s or 5m.
    #[arg(long, global = true, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  # A stream from the beamline facility (context aps) to the HPC facility (context alcf)
  kubectl scistream create run-42 --prod-context aps --prod-gateway dtn \\
      --cons-context alcf --cons-gateway dtn --num-conn 8 --rate 10Gbps --wait
  # Both sides of every stream, with throughput
  kubectl scistream list --context aps
  kubectl scistream describe run-42 --context aps
  kubectl scistream release run-42 --context aps
  # Gateway capacity and health
  kubectl scistream gateways --context alcf";

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// A table with more columns.
    Wide,
    /// JSON for scripts (exactly one document).
    Json,
    /// YAML for scripts (exactly one document).
    Yaml,
    /// `kind.group/name` of each object, one per line.
    Name,
}

/// `--timeout`: a duration as the API writes them, more than zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match scistream_api::rate::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than 0s".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// `-n`/`--namespace`: a DNS-1123 label, as Kubernetes names namespaces.
fn parse_namespace(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"))
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a stream: both StreamRequests, Hello keys, the connection map.
    Create(Box<CreateArgs>),
    /// Show one stream (both sides).
    Get(GetArgs),
    /// List streams of one or two facilities, joined by stream id.
    List(ListArgs),
    /// Everything about one stream: conditions, events, relays, ports, bytes.
    Describe(StreamRef),
    /// Delete both sides of a stream and wait until they are gone.
    Release(GetArgs),
    /// Re-run the connection map (after a gateway failover moved the producer's listeners).
    Update(StreamRef),
    /// Say Hello as an application controller (the SciStream gRPC interface), print the reply.
    Hello(HelloArgs),
    /// Capacity and health of a facility's gateways.
    Gateways(ContextArgs),
    /// Check a facility (and a stream across both facilities): a checklist with the fix for
    /// each failure; exit code 4 when a check fails.
    Doctor(DoctorArgs),
    /// Print a completion script for `kubectl-scistream` itself: `source <(kubectl-scistream completion bash)`.
    ///
    /// `kubectl scistream <TAB>` is completed by kubectl 1.26+ through `kubectl_complete-scistream`
    /// on the PATH (in the release archive; or a script running `kubectl-scistream __complete "$@"`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// One facility's cluster and namespace.
#[derive(Debug, Clone, Args)]
pub struct ContextArgs {
    /// Kubeconfig context of the facility (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, value_parser = parse_namespace)]
    pub namespace: Option<String>,
}

/// A stream by name (or stream id), found through one of its sides.
#[derive(Debug, Clone, Args)]
pub struct StreamRef {
    /// Name of the StreamRequests, or the stream id.
    pub name: String,
    /// Where to find one side.
    #[command(flatten)]
    pub at: ContextArgs,
}

/// `get` and `release` arguments.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The stream.
    #[command(flatten)]
    pub stream: StreamRef,
    /// A stream that does not exist is not an error (nothing is printed, exit code 0).
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// `doctor` arguments.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// A stream (name or id) to check in both facilities, besides the facility itself.
    pub name: Option<String>,
    /// The facility (and the stream's namespace).
    #[command(flatten)]
    pub at: ContextArgs,
    /// Namespace of the facilities' operators.
    #[arg(long, default_value = scistream_api::keys::OPERATOR_NAMESPACE, value_parser = parse_namespace)]
    pub operator_namespace: String,
    /// Skip the WAN listener probes of a MutualTLS stream. By default each producer listener
    /// the consumer side dials gets a TLS handshake from this host (no certificate of ours:
    /// the relay refuses it and connects nowhere) checking it presents the pinned certificate.
    #[arg(long)]
    pub no_probe: bool,
}

/// `list` arguments.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Facility to list (its peers are found through annotations).
    #[command(flatten)]
    pub at: ContextArgs,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `create` arguments.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Name of the stream (the StreamRequest in both facilities).
    pub name: String,
    /// Kubeconfig context of the producer facility.
    #[arg(long)]
    pub prod_context: Option<String>,
    /// Namespace on the producer side.
    #[arg(long, value_parser = parse_namespace)]
    pub prod_namespace: Option<String>,
    /// Gateway of the producer facility.
    #[arg(long)]
    pub prod_gateway: String,
    /// Kubeconfig context of the consumer facility.
    #[arg(long)]
    pub cons_context: Option<String>,
    /// Namespace on the consumer side.
    #[arg(long, value_parser = parse_namespace)]
    pub cons_namespace: Option<String>,
    /// Gateway of the consumer facility.
    #[arg(long)]
    pub cons_gateway: String,
    /// Parallel connections (1-256).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub num_conn: i32,
    /// Bandwidth to reserve and enforce, e.g. 10Gbps, 500Mbps, 2.5G.
    #[arg(long, default_value = "1Gbps", value_parser = Written::<Rate>::parse)]
    pub rate: Written<Rate>,
    /// Producer application endpoints (host:port,...); when given, no producer Hello is needed.
    #[arg(long, value_delimiter = ',')]
    pub prod_targets: Vec<String>,
    /// Data channel between the gateways.
    #[arg(long, value_enum, default_value_t = Channel::MutualTls)]
    pub data_channel: Channel,
    /// How long the operators wait for each Hello, e.g. 180s.
    #[arg(long, default_value = "180s", value_parser = Written::<HelloTimeout>::parse)]
    pub hello_timeout: Written<HelloTimeout>,
    /// Control endpoint of the producer facility (host:port), shown to its application
    /// controller (default: as its operator publishes it).
    #[arg(long)]
    pub prod_control: Option<String>,
    /// Control endpoint of the consumer facility (host:port) (default: as published).
    #[arg(long)]
    pub cons_control: Option<String>,
    /// Namespace of both facilities' operators, where they publish their control endpoints.
    #[arg(long, default_value = scistream_api::keys::OPERATOR_NAMESPACE, value_parser = parse_namespace)]
    pub operator_namespace: String,
    /// Write, for each side, the control endpoint's certificate and the Hello key (mode 0600)
    /// into this directory, and print `hello` commands that use them: for application hosts
    /// without access to the cluster.
    #[arg(long)]
    pub hello_files: Option<PathBuf>,
    /// Wait for both Hellos and the data path, then print where the consumer connects.
    #[arg(long)]
    pub wait: bool,
    /// Leave what was created in place when a step fails (default: roll back).
    #[arg(long)]
    pub keep_on_failure: bool,
}

/// `hello` arguments: what an application controller sends.
///
/// With a kubeconfig context of the facility, `--stream-id` and `--role` are enough: the
/// control endpoint and its certificate are read from what the operator publishes, the key
/// from the stream's Secret. On a host without access to the cluster, give `--control`,
/// `--server-cert` and `--key-file` (`create --hello-files DIR` writes the files).
#[derive(Debug, Clone, Args)]
pub struct HelloArgs {
    /// Side of the application: PROD (producer) or CONS (consumer).
    #[arg(long, value_parser = [scistream_api::control::ROLE_PROD, scistream_api::control::ROLE_CONS])]
    pub role: String,
    /// The stream id `create` printed.
    #[arg(long)]
    pub stream_id: String,
    /// File holding this side's Hello key (else $SCISTREAM_HELLO_KEY, else the stream's
    /// Secret through --context). Keys are never given on the command line.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The facility's control endpoint, host:port (default: as its operator publishes it).
    #[arg(long)]
    pub control: Option<String>,
    /// Producer only: the producer application's endpoints (host:port,...).
    #[arg(long, value_delimiter = ',')]
    pub listeners: Vec<String>,
    /// PEM certificate to trust for the control endpoint, as SciStream 1.x's --server_cert
    /// (default: as the operator publishes it).
    #[arg(long)]
    pub server_cert: Option<PathBuf>,
    /// How long connecting to the control endpoint may take (TCP, then TLS), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,
    /// The facility's cluster and the stream's namespace (to find what is not given).
    #[command(flatten)]
    pub at: ContextArgs,
    /// Namespace of the facility's operator, where it publishes its control endpoint.
    #[arg(long, default_value = scistream_api::keys::OPERATOR_NAMESPACE, value_parser = parse_namespace)]
    pub operator_namespace: String,
}

/// Data-channel choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Channel {
    /// TLS 1.3 with per-stream pinned certificates.
    #[value(name = "MutualTLS")]
    MutualTls,
    /// Unencrypted TCP (trusted networks only).
    #[value(name = "Plain")]
    Plain,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_parses_lists_and_defaults() {
        let cli = Cli::try_parse_from([
            "kubectl-scistream",
            "create",
            "s",
            "--prod-gateway",
            "a",
            "--cons-gateway",
            "b",
            "--prod-targets",
            "10.0.0.1:7000,10.0.0.2:7000",
        ])
        .unwrap();
        let Command::Create(c) = cli.command else { panic!("not create") };
        let c = *c;
        assert_eq!(c.prod_targets.len(), 2);
        assert_eq!((c.num_conn, c.rate.text(), c.data_channel), (5, "1Gbps", Channel::MutualTls));
    }
}
