//! The plugin between two facilities (two embedded API servers, each with an operator and
//! a stand-in kubelet), driven through the real `kubectl-scistream` binary and a kubeconfig
//! with one context per facility.

mod cli;

use std::{path::Path, process::Command};

use cli::{facility, hello, plugin, text};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use scistream_api::StreamRequest;
use scistream_testkit::{Facility, USER_NS, wait_until};
use serde_json::{Value, json};

fn merged_kubeconfig(dir: &Path, facilities: &[&Facility]) -> std::path::PathBuf {
    let files: Vec<&Path> = facilities.iter().map(|f| f.cluster.kubeconfig_path()).collect();
    cli::merged_kubeconfig(dir, &files, facilities[0].cluster.name())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_release_across_two_facilities() {
    let (aps, alcf) = (facility("aps").await, facility("alcf").await);
    let dir = tempfile::tempdir().unwrap();
    let kc = merged_kubeconfig(dir.path(), &[&aps, &alcf]);
    let ns = USER_NS;
    let create = tokio::task::spawn_blocking({
        let kc = kc.clone();
        move || {
            plugin(
                &kc,
                &[
                    "create",
                    "run-42",
                    "--prod-context",
                    "aps",
                    "--prod-namespace",
                    ns,
                    "--prod-gateway",
                    "dtn",
                    "--cons-context",
                    "alcf",
                    "--cons-namespace",
                    ns,
                    "--cons-gateway",
                    "dtn",
                    "--num-conn",
                    "3",
                    "--rate",
                    "5Gbps",
                    "--wait",
                    "--timeout",
                    "60s",
                    "-o",
                    "json",
                ],
            )
        }
    });
    // Play both application controllers once the plugin has made the requests and exchanged
    // listeners and certificates.
    alcf.wait_request("run-42", 30, |sr| sr.spec.remote_listeners.is_some() && sr.spec.peer_certificate.is_some())
        .await;
    // The producer pins the consumer's certificate (set before the consumer's listeners).
    let p = aps.wait_request("run-42", 5, |sr| sr.spec.peer_certificate.is_some()).await;
    hello(&aps, "run-42", &["192.0.2.77:9000"]).await;
    hello(&alcf, "run-42", &[]).await;
    let out = create.await.unwrap();
    let report = cli::json_doc(&out);
    assert_eq!(report["consumer"]["listeners"].as_array().unwrap().len(), 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Ready: the consumer application connects to 192.0.2."), "{stderr}");
    let c = alcf.requests().get("run-42").await.unwrap();
    assert_eq!(c.spec.remote_listeners.unwrap(), p.status.unwrap().listeners);
    // create --wait watched each StreamRequest instead of polling it: the preflight's read, one
    // read per wait (three waits a side), then a watch when the read was not yet what it waits for.
    for f in [&aps, &alcf] {
        let (gets, watches) = plugin_reads(f).await;
        assert!(watches >= 1 && gets <= 4, "{}: {gets} GETs and {watches} WATCHes of StreamRequests", f.cluster.name());
    }

    // get joins both sides through the peer annotations.
    let out = plugin(&kc, &["get", "run-42", "--context", "alcf", "-n", ns, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let stream: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stream["producer"]["phase"], "Ready");
    assert_eq!(stream["consumer"]["phase"], "Ready");
    let out = plugin(&kc, &["list", "--context", "aps", "-n", ns]);
    assert!(text(&out).contains("aps:Ready") && text(&out).contains("alcf:Ready"), "{}", text(&out));
    let out = plugin(&kc, &["gateways", "--context", "aps"]);
    assert!(text(&out).contains("3/") || text(&out).contains("4/"), "{}", text(&out));

    describe_tells_the_whole_story(&kc, &aps, &alcf).await;

    let out = plugin(&kc, &["release", "run-42", "--context", "aps", "-n", ns, "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out));
    let stream_id = report["streamId"].as_str().unwrap().to_owned();
    aps.assert_nothing_left(&stream_id).await;
    alcf.assert_nothing_left(&stream_id).await;
    for f in [&aps, &alcf] {
        let left: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(f.client.clone(), ns);
        let hello_secret = left.get_opt("run-42-hello").await.unwrap();
        assert!(hello_secret.is_none_or(|s| s.metadata.deletion_timestamp.is_some()), "Hello key left");
    }
    aps.shutdown().await;
    alcf.shutdown().await;
}

/// The plugin's GETs and WATCHes of StreamRequests, as the API server counted them.
async fn plugin_reads(f: &Facility) -> (u64, u64) {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = f.client.request_text(request).await.unwrap();
    let count = |verb: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.contains("client=\"kubectl-scistream\"")
                    && l.contains("resource=\"streamrequests\"")
                    && l.contains("subresource=\"\"")
                    && l.contains(&format!("verb=\"{verb}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    (count("GET"), count("WATCH"))
}

/// `describe` from either side: both sides' conditions and events, and from the gateway side
/// the relay pod of each node with its phase, restarts, ports and listeners, and the bytes.
async fn describe_tells_the_whole_story(kc: &Path, aps: &Facility, alcf: &Facility) {
    let ns = USER_NS;
    // The stand-in kubelet runs no relays, so there is nothing for the operator's sampler to
    // read: record bytes as it would (its field manager), for describe to show.
    let transfer = json!({"apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "status": {"transfer": {"bytes": 987_654_321i64, "throughput": "3.2Gbps"}}});
    alcf.requests()
        .patch_status("run-42", &PatchParams::apply("scistream-operator-transfer"), &Patch::Apply(&transfer))
        .await
        .unwrap();
    let out = plugin(kc, &["describe", "run-42", "--context", "alcf", "-n", ns, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sides = report["sides"].as_array().unwrap();
    assert_eq!(sides.len(), 2, "{report:#}");
    assert_eq!((sides[0]["role"].as_str(), sides[0]["context"].as_str()), (Some("Producer"), Some("aps")));
    assert_eq!((sides[1]["role"].as_str(), sides[1]["context"].as_str()), (Some("Consumer"), Some("alcf")));
    assert_eq!(sides[1]["transfer"]["bytes"], 987_654_321i64);
    for (side, f) in sides.iter().zip([aps, alcf]) {
        let sr = f.requests().get("run-42").await.unwrap();
        let status = sr.status.unwrap();
        let relays = side["relays"].as_array().unwrap();
        assert_eq!(relays.len(), status.allocations.len(), "one relay per reserved node: {side:#}");
        let mut listeners = Vec::new();
        for (relay, allocation) in relays.iter().zip(&status.allocations) {
            assert_eq!(relay["node"], allocation.node.as_str());
            assert_eq!(relay["ports"], json!(allocation.ports));
            assert_eq!((relay["phase"].as_str(), relay["ready"].as_bool()), (Some("Running"), Some(true)), "{relay:#}");
            assert_eq!(relay["restarts"], 0);
            let pod = f.pods().get(relay["pod"].as_str().unwrap()).await.unwrap();
            assert_eq!(
                pod.spec.unwrap().node_name.as_deref(),
                Some(allocation.node.as_str()),
                "the pod is on its node"
            );
            listeners.extend(relay["listeners"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()));
        }
        assert_eq!(listeners, status.listeners, "each listener is served by the relay of its node");
        let conditions: Vec<&str> =
            side["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert!(conditions.contains(&"Ready") && conditions.contains(&"Reserved"), "{conditions:?}");
        let events = side["events"].as_array().unwrap();
        assert!(events.iter().any(|e| e["object"] == "StreamRequest/run-42"), "the operator's events: {side:#}");
    }
    // The same story for people, found through the producer side.
    let out = plugin(kc, &["describe", "run-42", "--context", "aps", "-n", ns]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Producer side: aps/science/run-42",
        "Consumer side: alcf/science/run-42",
        "Relays:",
        "gw-a",
        "Running",
        "Conditions:",
        "Events:",
        "987654321 (941.90 MiB), now 3.2Gbps",
    ] {
        assert!(said.contains(needle), "{needle:?} in:\n{said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_is_created() {
    let (aps, alcf) = (facility("aps").await, facility("alcf").await);
    let dir = tempfile::tempdir().unwrap();
    let kc = merged_kubeconfig(dir.path(), &[&aps, &alcf]);
    let ns = USER_NS;
    let base = [
        "create",
        "s",
        "--prod-context",
        "aps",
        "--prod-namespace",
        ns,
        "--cons-context",
        "alcf",
        "--cons-namespace",
        ns,
    ];
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--prod-gateway", "dtn", "--cons-gateway", "nope"], 5, "Gateway nope does not exist in alcf"),
        (vec!["--prod-gateway", "dtn", "--cons-gateway", "dtn", "--num-conn", "60"], 3, "free ports"),
        (
            vec!["--prod-gateway", "dtn", "--cons-gateway", "dtn", "--rate", "30Gbps"],
            3,
            "left; the stream asks for 30Gbps",
        ),
        (vec!["--prod-gateway", "dtn", "--cons-gateway", "dtn", "--rate", "fast"], 2, "--rate"),
        (vec!["--prod-gateway", "dtn", "--cons-gateway", "dtn", "--prod-targets", "no-port"], 2, "--prod-targets[0]"),
    ];
    for (extra, code, message) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let out = plugin(&kc, &args);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {}", text(&out));
        assert!(text(&out).contains(message), "{extra:?}: {}", text(&out));
    }
    let out =
        plugin(&kc, &["create", "s", "--prod-context", "elsewhere", "--prod-gateway", "dtn", "--cons-gateway", "dtn"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("\"elsewhere\" is not in the kubeconfig"), "{}", text(&out));
    // The name is taken on the consumer side: refused, and nothing made on the producer side.
    let taken: StreamRequest = serde_json::from_value(json!({"apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "metadata": {"name": "s"}, "spec": {"streamId": "00000000-0000-4000-8000-000000000001", "role": "Consumer", "gateway": "dtn"}}))
    .unwrap();
    alcf.requests().create(&Default::default(), &taken).await.unwrap();
    let args: Vec<&str> = base.iter().copied().chain(["--prod-gateway", "dtn", "--cons-gateway", "dtn"]).collect();
    let out = plugin(&kc, &args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("already exists in alcf"), "{}", text(&out));
    assert!(aps.requests().list(&Default::default()).await.unwrap().items.is_empty());
    aps.shutdown().await;
    alcf.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_rolls_back_both_facilities() {
    let (aps, alcf) = (facility("aps").await, facility("alcf").await);
    let dir = tempfile::tempdir().unwrap();
    let kc = merged_kubeconfig(dir.path(), &[&aps, &alcf]);
    let ns = USER_NS;
    // Nobody says Hello: with --wait and a short timeout the plugin gives up and rolls back.
    let out = tokio::task::spawn_blocking(move || {
        plugin(
            &kc,
            &[
                "create",
                "late",
                "--prod-context",
                "aps",
                "--prod-namespace",
                ns,
                "--prod-gateway",
                "dtn",
                "--cons-context",
                "alcf",
                "--cons-namespace",
                ns,
                "--cons-gateway",
                "dtn",
                "--wait",
                "--timeout",
                "3s",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("timed out") && text(&out).contains("rolled back"), "{}", text(&out));
    for f in [&aps, &alcf] {
        wait_until(std::time::Duration::from_secs(20), || {
            let api = f.requests();
            async move { api.list(&Default::default()).await.unwrap().items.is_empty() }
        })
        .await;
        assert!(f.wait_totals_match_holdings(20).await.is_empty());
    }
    aps.shutdown().await;
    alcf.shutdown().await;
}

#[test]
fn completions_and_help_generate() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-scistream")).args(["completion", shell]).output().unwrap();
        assert!(out.status.success() && out.stdout.len() > 500, "{shell}");
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_kubectl-scistream")).arg("--help").env_remove("KUBECONFIG").output().unwrap();
    insta::assert_snapshot!("help", String::from_utf8_lossy(&out.stdout));
}
