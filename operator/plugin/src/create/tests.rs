use super::*;
use clap::Parser;
use scistream_api::Gateway;

fn args(extra: &[&str]) -> CreateArgs {
    let mut argv = vec!["kubectl-scistream", "create", "s", "--prod-gateway", "a", "--cons-gateway", "b"];
    argv.extend_from_slice(extra);
    match Cli::parse_from(argv).command {
        crate::cli::Command::Create(c) => *c,
        _ => unreachable!(),
    }
}

fn gateway(implementation: &str, ports_total: i32, in_use: i32, promised: i64) -> Gateway {
    serde_json::from_value(json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "gw"},
        "spec": {"nodeSelector": {"a": "b"}, "bandwidth": "10Gbps", "podNamespace": "ns", "implementation": implementation},
        "status": {"portsTotal": ports_total, "portsInUse": in_use, "bandwidthPromisedBps": promised,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "GatewayReady", "message": "",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap()
}

#[test]
fn bad_arguments_are_refused_before_any_cluster_is_touched() {
    assert!(check_arguments(&args(&[])).is_ok());
    // Typed flags are refused by the parser, naming the flag and what a rate looks like.
    for (flag, bad, says) in [
        ("--rate", "fast", "is not a rate"),
        ("--hello-timeout", "25h", "between 1s and 24h"),
        ("--num-conn", "0", "not in 1..=256"),
    ] {
        let argv = ["kubectl-scistream", "create", "s", "--prod-gateway", "a", "--cons-gateway", "b", flag, bad];
        let e = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains(flag) && e.contains(says), "{e}");
    }
    assert!(
        check_arguments(&args(&["--prod-targets", "10.0.0.1"])).unwrap_err().to_string().contains("--prod-targets[0]")
    );
}

#[test]
fn gateway_capacity_is_counted_as_the_operator_counts_it() {
    let a = args(&["--num-conn", "5", "--rate", "4Gbps"]);
    assert_eq!(gateway_problem(&gateway("S2ds", 10, 4, 0), &a, "aps"), None);
    let short = gateway_problem(&gateway("S2ds", 10, 5, 0), &a, "aps").unwrap();
    assert!(short.contains("5 free ports") && short.contains("plus 1"), "{short}");
    let bw = gateway_problem(&gateway("S2ds", 100, 0, 7_000_000_000), &a, "aps").unwrap();
    assert!(bw.contains("3Gbps of 10Gbps left"), "{bw}");
    let tls = gateway_problem(&gateway("Haproxy", 100, 0, 0), &a, "aps").unwrap();
    assert!(tls.contains("--data-channel Plain"), "{tls}");
}
