//! The plugin behaves like kubectl: kubeconfig files merged from $KUBECONFIG; exactly one
//! document on stdout for every `-o json|yaml` (progress and hints on stderr), `get NAME` one
//! object, `-o name`, `--no-headers`, "No resources found", `--ignore-not-found`; bad flag
//! values refused; Ctrl-C during `create --wait` rolls back; a closed stdout ends it quietly;
//! an unreachable cluster and missing CRDs said in plain words with the address.

mod cli;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use cli::{facility, hello, json_doc, merged_kubeconfig, plugin, plugin_env, text, yaml_doc};
use scistream_testkit::{USER_NS, wait_until};
use serde_json::Value;

const NS: &str = USER_NS;

fn create_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "create",
        name,
        "--prod-context",
        "aps",
        "--prod-namespace",
        NS,
        "--prod-gateway",
        "dtn",
        "--cons-context",
        "alcf",
        "--cons-namespace",
        NS,
        "--cons-gateway",
        "dtn",
        "--num-conn",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_one_document() {
    let (aps, alcf) = (facility("aps").await, facility("alcf").await);
    let dir = tempfile::tempdir().unwrap();
    let kc = merged_kubeconfig(dir.path(), &[aps.cluster.kubeconfig_path(), alcf.cluster.kubeconfig_path()], "aps");

    // $KUBECONFIG with two files, merged as kubectl merges them.
    let both = format!("{}:{}", aps.cluster.kubeconfig_path().display(), alcf.cluster.kubeconfig_path().display());
    let gws = json_doc(&plugin_env(&both, &["gateways", "--context", "alcf", "-o", "json"]));
    assert_eq!(gws[0]["metadata"]["name"], "dtn");
    let out = plugin_env(&both, &["gateways", "--context", "alcf", "-o", "name"]);
    assert_eq!(stdout(&out), "gateway.scistream.io/dtn\n", "{}", text(&out));

    // Nothing yet: kubectl's words on stderr for a table, an empty list for scripts.
    let out = plugin(&kc, &["list", "--context", "aps", "-n", NS]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "", "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No resources found in science namespace."),
        "{}",
        text(&out)
    );
    assert_eq!(json_doc(&plugin(&kc, &["list", "--context", "aps", "-n", NS, "-o", "json"])), Value::Array(vec![]));

    // create without --wait: one document, whatever the format.
    let created = json_doc(&plugin(&kc, &create_args("one", &["-o", "json"])));
    assert_eq!(created["name"], "one");
    assert!(created["streamId"].as_str().is_some_and(|s| s.len() == 36), "{created:#}");
    let created = yaml_doc(&plugin(&kc, &create_args("two", &["-o", "yaml"])));
    assert_eq!(created["name"], "two");
    let out = plugin(&kc, &create_args("three", &["-o", "name"]));
    assert_eq!(stdout(&out), "streamrequest.scistream.io/three\n", "{}", text(&out));

    // create --wait: still one document; the progress and the "Ready" line go to stderr.
    let create = tokio::task::spawn_blocking({
        let kc = kc.clone();
        move || plugin(&kc, &create_args("run-42", &["--wait", "--timeout", "60s", "-o", "json"]))
    });
    alcf.wait_request("run-42", 30, |sr| sr.spec.remote_listeners.is_some() && sr.spec.peer_certificate.is_some())
        .await;
    aps.wait_request("run-42", 5, |sr| sr.spec.peer_certificate.is_some()).await;
    hello(&aps, "run-42", &["192.0.2.77:9000"]).await;
    hello(&alcf, "run-42", &[]).await;
    let out = create.await.unwrap();
    let created = json_doc(&out);
    assert_eq!(created["consumer"]["listeners"].as_array().map(Vec::len), Some(2), "{created:#}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Ready"), "{}", text(&out));

    // get NAME: one object, not a list.
    let got = json_doc(&plugin(&kc, &["get", "run-42", "--context", "alcf", "-n", NS, "-o", "json"]));
    assert!(got.is_object(), "{got:#}");
    assert_eq!((got["name"].as_str(), got["producer"]["phase"].as_str()), (Some("run-42"), Some("Ready")));
    assert!(yaml_doc(&plugin(&kc, &["get", "run-42", "--context", "aps", "-n", NS, "-o", "yaml"])).is_object());
    let out = plugin(&kc, &["get", "run-42", "--context", "aps", "-n", NS, "-o", "name"]);
    assert_eq!(stdout(&out), "streamrequest.scistream.io/run-42\n", "{}", text(&out));

    // list: tables as kubectl prints them, with or without headers; names; one document.
    let out = plugin(&kc, &["list", "--context", "aps", "-n", NS]);
    let table = stdout(&out);
    assert!(table.starts_with("NAME "), "no leading space: {table:?}");
    assert!(table.lines().all(|l| l == l.trim_end()), "no trailing spaces: {table:?}");
    assert_eq!(table.lines().count(), 5, "{table}");
    let out = plugin(&kc, &["list", "--context", "aps", "-n", NS, "--no-headers"]);
    let rows = stdout(&out);
    assert_eq!(rows.lines().count(), 4, "{rows}");
    assert!(rows.starts_with("one ") && !rows.contains("NAME"), "{rows}");
    let listed = json_doc(&plugin(&kc, &["list", "--context", "aps", "-n", NS, "-o", "json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(4));
    assert_eq!(
        yaml_doc(&plugin(&kc, &["list", "--context", "aps", "-n", NS, "-o", "yaml"])).as_array().map(Vec::len),
        Some(4)
    );
    let out = plugin(&kc, &["list", "--context", "aps", "-n", NS, "-o", "name"]);
    assert_eq!(
        stdout(&out),
        "streamrequest.scistream.io/one\nstreamrequest.scistream.io/run-42\nstreamrequest.scistream.io/three\nstreamrequest.scistream.io/two\n",
        "{}",
        text(&out)
    );
    let out = plugin(&kc, &["gateways", "--context", "aps", "--no-headers"]);
    assert!(stdout(&out).starts_with("dtn "), "{}", text(&out));

    // describe, update, release: one document each.
    let described = json_doc(&plugin(&kc, &["describe", "run-42", "--context", "aps", "-n", NS, "-o", "json"]));
    assert_eq!(described["sides"].as_array().map(Vec::len), Some(2));
    let updated = json_doc(&plugin(&kc, &["update", "run-42", "--context", "aps", "-n", NS, "-o", "json"]));
    assert_eq!(updated["name"], "run-42");
    assert_eq!(updated["consumerForwardsTo"].as_array().map(Vec::len), Some(2), "{updated:#}");
    let released =
        json_doc(&plugin(&kc, &["release", "run-42", "--context", "aps", "-n", NS, "--timeout", "60s", "-o", "json"]));
    assert_eq!(released["name"], "run-42");
    assert_eq!(released["released"].as_array().map(Vec::len), Some(2), "{released:#}");
    let out = plugin(&kc, &["release", "two", "--context", "aps", "-n", NS, "--timeout", "60s", "-o", "name"]);
    assert_eq!(stdout(&out), "streamrequest.scistream.io/two\n", "{}", text(&out));

    // Not found, and --ignore-not-found.
    for verb in ["get", "release"] {
        let out = plugin(&kc, &[verb, "run-42", "--context", "aps", "-n", NS]);
        assert_eq!(out.status.code(), Some(5), "{verb}: {}", text(&out));
        let out = plugin(&kc, &[verb, "run-42", "--context", "aps", "-n", NS, "--ignore-not-found", "-o", "json"]);
        assert!(out.status.success() && out.stdout.is_empty(), "{verb}: {}", text(&out));
    }
    aps.shutdown().await;
    alcf.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_create_wait_rolls_back_both_sides() {
    let (aps, alcf) = (facility("aps").await, facility("alcf").await);
    let dir = tempfile::tempdir().unwrap();
    let kc = merged_kubeconfig(dir.path(), &[aps.cluster.kubeconfig_path(), alcf.cluster.kubeconfig_path()], "aps");
    let child = Command::new(env!("CARGO_BIN_EXE_kubectl-scistream"))
        .arg("--kubeconfig")
        .arg(&kc)
        .args(create_args("ctrl-c", &["--wait", "--timeout", "120s"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both sides made and connected: the plugin now waits for the Hellos.
    alcf.wait_request("ctrl-c", 30, |sr| sr.spec.remote_listeners.is_some()).await;
    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("interrupted") && said.contains("rolled back StreamRequest"), "{said}");
    for f in [&aps, &alcf] {
        wait_until(Duration::from_secs(20), || {
            let api = f.requests();
            async move { api.list(&Default::default()).await.unwrap().items.is_empty() }
        })
        .await;
    }
    aps.shutdown().await;
    alcf.shutdown().await;
}

#[test]
fn bad_flag_values_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["list", "--timeout", "10 gigs"], "--timeout"),
        (&["get", "x", "--timeout", "0s"], "--timeout"),
        (&["list", "-o", "tabel"], "--output"),
        (&["list", "-n", "Not_A_Namespace"], "--namespace"),
        (&["create", "s", "--prod-gateway", "a", "--cons-gateway", "b", "--num-conn", "0"], "--num-conn"),
        (&["create", "s", "--prod-gateway", "a", "--cons-gateway", "b", "--num-conn", "300"], "--num-conn"),
    ];
    for (args, flag) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-scistream"))
            .args(*args)
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(flag), "{args:?} names {flag}: {}", text(&out));
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    for args in [&["completion", "bash"][..], &["--help"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-scistream"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the plugin writes (as `| head -0` would).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!said.contains("panicked"), "{args:?}: {said}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_and_missing_crds_are_said_in_plain_words() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("unreachable");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: gone\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:{port}\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\n"
        ),
    )
    .unwrap();
    for args in [&["list"][..], &["gateways"][..], &["get", "x"][..]] {
        let out = plugin(&kc, args);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {said}");
        assert!(said.contains(&format!("https://127.0.0.1:{port}")), "{args:?} names the address: {said}");
        assert!(said.contains("connection refused"), "{args:?}: {said}");
        assert!(!said.contains("ServiceError"), "{args:?}: {said}");
    }

    // A cluster without the CRDs.
    let bare = scistream_testcluster::TestCluster::builder().name("bare").start().await.unwrap();
    let kc = bare.kubeconfig_path().to_owned();
    let url = bare.url().to_owned();
    let cases: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["gateways"],
        vec!["get", "x"],
        vec!["create", "s", "--prod-gateway", "dtn", "--cons-gateway", "dtn"],
    ];
    for args in cases {
        let out = tokio::task::spawn_blocking({
            let kc = kc.clone();
            let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
            move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                plugin(&kc, &args)
            }
        })
        .await
        .unwrap();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {said}");
        assert!(said.contains("CRDs") && said.contains("not installed") && said.contains(&url), "{args:?}: {said}");
        assert!(!said.contains("Status {"), "{args:?}: {said}");
    }
    bare.shutdown().await;
}
