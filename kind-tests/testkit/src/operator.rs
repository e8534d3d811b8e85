//! The operator as tests run it: its flags built in one place, and the operator run in this
//! process (`scistream_controller::run_until`) until its token is cancelled.

use std::{net::SocketAddr, path::Path};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What differs between the operators tests run; [`operator_args`] fixes the rest.
///
/// The default is the operator's own defaults for the intervals, no leader election and no
/// control endpoint.
#[derive(Clone, Debug, Default)]
pub struct OperatorOptions {
    leader_election: bool,
    control_addr: Option<SocketAddr>,
    resync_seconds: Option<u64>,
    drain_seconds: Option<u32>,
    transfer_interval_seconds: Option<u64>,
    extra: Vec<String>,
}

impl OperatorOptions {
    /// Short intervals, so that drift checks, relay drains and transfer samples happen within
    /// a test's waits: resync every 10 s (the operator's minimum), drain 1 s, transfer 1 s.
    pub fn quick() -> Self {
        Self::default().resync_seconds(10).drain_seconds(1).transfer_interval_seconds(1)
    }

    /// Competes for the leader Lease (in `default`) when `on`; otherwise acts at once.
    pub fn leader_election(mut self, on: bool) -> Self {
        self.leader_election = on;
        self
    }

    /// Serves the control endpoint's gRPC on `addr` (without this: no control endpoint).
    pub fn control_endpoint(mut self, addr: SocketAddr) -> Self {
        self.control_addr = Some(addr);
        self
    }

    /// Seconds between drift checks of healthy objects.
    pub fn resync_seconds(mut self, seconds: u64) -> Self {
        self.resync_seconds = Some(seconds);
        self
    }

    /// Seconds relays drain established connections when stopped.
    pub fn drain_seconds(mut self, seconds: u32) -> Self {
        self.drain_seconds = Some(seconds);
        self
    }

    /// Seconds between readings of the relays' byte counters.
    pub fn transfer_interval_seconds(mut self, seconds: u64) -> Self {
        self.transfer_interval_seconds = Some(seconds);
        self
    }

    /// More flags, given after the others (e.g. the control endpoint's TLS and placement).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }
}

/// The operator's flags for a test: the API server of `kubeconfig`, replica `identity`, its
/// metrics on an ephemeral port of 127.0.0.1 (several operators share one process), its
/// Lease in `default`, and `options`.
///
/// # Errors
/// The flags do not parse (an extra flag the operator does not know, or a bad value).
pub fn operator_args(
    kubeconfig: &Path,
    identity: &str,
    options: &OperatorOptions,
) -> Result<scistream_controller::Args, clap::Error> {
    let mut line: Vec<String> = vec![
        "scistream-operator".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--namespace".into(),
        "default".into(),
        "--identity".into(),
        identity.into(),
    ];
    if !options.leader_election {
        line.push("--no-leader-election".into());
    }
    match &options.control_addr {
        Some(addr) => line.extend(["--control-addr".into(), addr.to_string()]),
        None => line.push("--no-control-endpoint".into()),
    }
    let intervals = [
        ("--resync-seconds", options.resync_seconds),
        ("--drain-seconds", options.drain_seconds.map(u64::from)),
        ("--transfer-interval-seconds", options.transfer_interval_seconds),
    ];
    for (flag, value) in intervals {
        if let Some(value) = value {
            line.extend([flag.to_owned(), value.to_string()]);
        }
    }
    line.extend(options.extra.iter().cloned());
    <scistream_controller::Args as clap::Parser>::try_parse_from(line)
}

/// An operator running in this process: cancel the token to stop it; the task ends with the
/// operator's result.
pub type OperatorTask = (CancellationToken, JoinHandle<anyhow::Result<()>>);

/// Starts an operator with `args` on the current tokio runtime.
pub fn spawn_operator(args: scistream_controller::Args) -> OperatorTask {
    let token = CancellationToken::new();
    let handle = tokio::spawn(scistream_controller::run_until(args, token.clone()));
    (token, handle)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_defaults_leave_the_intervals_to_the_operator() {
        let args = operator_args(Path::new("/k"), "op", &OperatorOptions::default()).unwrap();
        assert_eq!(args.identity, "op");
        assert_eq!(args.namespace, "default");
        assert!(args.no_leader_election);
        assert!(args.no_control_endpoint);
        let operator = <scistream_controller::Args as clap::Parser>::parse_from(["scistream-operator"]);
        assert_eq!(
            (args.resync_seconds, args.drain_seconds, args.transfer_interval_seconds),
            (operator.resync_seconds, operator.drain_seconds, operator.transfer_interval_seconds)
        );
    }

    #[test]
    fn options_become_flags() {
        let options = OperatorOptions::quick()
            .leader_election(true)
            .control_endpoint("127.0.0.1:5000".parse().unwrap())
            .args(["--nginx-stream-module", "/m.so"]);
        let args = operator_args(Path::new("/k"), "op", &options).unwrap();
        assert!(!args.no_leader_election);
        assert!(!args.no_control_endpoint);
        assert_eq!((args.resync_seconds, args.drain_seconds, args.transfer_interval_seconds), (10, 1, 1));
        assert_eq!(args.nginx_stream_module.as_deref(), Some("/m.so"));
        assert_eq!(args.kubeconfig.as_deref(), Some(Path::new("/k")));
        assert_eq!(args.control.control_addr.to_string(), "127.0.0.1:5000");
    }

    #[test]
    fn an_unknown_flag_is_an_error() {
        assert!(operator_args(Path::new("/k"), "op", &OperatorOptions::default().args(["--no-such-flag"])).is_err());
    }
}
