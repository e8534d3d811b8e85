//! The operators publish their control endpoints (address and certificate, ConfigMap
//! scistream-control-endpoint); `create` prints complete `hello` commands with no key in
//! them, and those commands, run as printed through kubectl, say Hello: with a kubeconfig
//! context alone, or with the files `--hello-files` wrote.

mod cli;

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use cli::{json_doc, merged_kubeconfig, plugin, text};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use scistream_api::{conditions, keys};
use scistream_testkit::{Facility, GATEWAY_NS, OperatorOptions, USER_NS, wait_until};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A facility whose operator serves its control endpoint on 127.0.0.1 (certificate for
/// 127.0.0.1) and publishes it in scistream-system; the published address.
async fn facility(name: &str) -> (Facility, String) {
    let mut f = Facility::builder(name).namespace(keys::OPERATOR_NAMESPACE, "privileged").start().await;
    let port = free_port();
    let options = OperatorOptions::quick().control_endpoint(SocketAddr::from(([127, 0, 0, 1], port))).args([
        "--control-http-addr",
        "off",
        "--control-tls-ip",
        "127.0.0.1",
    ]);
    f.start_operator_with(options);
    f.apply_gateway(json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "20Gbps",
        "podNamespace": GATEWAY_NS, "portRange": {"start": 5100, "end": 5119}}))
        .await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), keys::OPERATOR_NAMESPACE);
    wait_until(Duration::from_secs(20), || {
        let cms = cms.clone();
        async move { cms.get_opt(keys::CONTROL_ENDPOINT_CONFIGMAP).await.unwrap().is_some() }
    })
    .await;
    let cm = cms.get(keys::CONTROL_ENDPOINT_CONFIGMAP).await.unwrap();
    let data = cm.data.unwrap();
    assert!(data["ca.crt"].starts_with("-----BEGIN CERTIFICATE-----"));
    (f, data["address"].clone())
}

/// A directory where kubectl finds the plugin.
fn plugin_dir(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kubectl-scistream"), bin.join("kubectl-scistream")).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// Runs a printed `kubectl scistream hello ...` line as printed (the producer's endpoints in
/// place of the placeholder), through kubectl.
fn run_printed(line: &str, path: &str, kubeconfig: &Path) -> std::process::Output {
    let line = line.replace("<host:port,...>", "192.0.2.77:9000");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&words[..3], ["kubectl", "scistream", "hello"], "{line}");
    Command::new("kubectl").args(&words[1..]).env("PATH", path).env("KUBECONFIG", kubeconfig).output().unwrap()
}

fn hello_lines(out: &str) -> Vec<String> {
    out.lines().map(str::trim).filter(|l| l.starts_with("kubectl scistream hello")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_hello_commands_work_as_printed() {
    let ((aps, aps_control), (alcf, alcf_control)) = (facility("aps").await, facility("alcf").await);
    assert!(aps_control.starts_with("127.0.0.1:"), "{aps_control}");
    let dir = tempfile::tempdir().unwrap();
    let kc = merged_kubeconfig(dir.path(), &[aps.cluster.kubeconfig_path(), alcf.cluster.kubeconfig_path()], "aps");
    let path = plugin_dir(dir.path());
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "create",
            name,
            "--prod-context",
            "aps",
            "--prod-namespace",
            USER_NS,
            "--prod-gateway",
            "dtn",
            "--cons-context",
            "alcf",
            "--cons-namespace",
            USER_NS,
            "--cons-gateway",
            "dtn",
            "--num-conn",
            "2",
        ];
        args.extend_from_slice(extra);
        plugin(&kc, &args)
    };

    // With a kubeconfig context: endpoint, certificate and key come from the cluster.
    let out = create("run-42", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = hello_lines(&printed);
    assert_eq!(lines.len(), 2, "{printed}");
    assert!(lines[0].starts_with("kubectl scistream hello --context aps -n science --role PROD"), "{printed}");
    assert!(printed.contains(&aps_control) && printed.contains(&alcf_control), "the endpoints: {printed}");
    for (line, f) in lines.iter().zip([&aps, &alcf]) {
        let out = run_printed(line, &path, &kc);
        assert!(out.status.success(), "{line}: {}", text(&out));
        f.wait_request("run-42", 10, |sr| {
            sr.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::types::HELLO_RECEIVED))
        })
        .await;
    }

    // For a host without the kubeconfig: files, the key readable by its owner only.
    let files = dir.path().join("hello");
    std::fs::create_dir(&files).unwrap();
    let out = create("run-43", &["--hello-files", files.to_str().unwrap(), "-o", "json"]);
    let report = json_doc(&out);
    for side in ["producer", "consumer"] {
        let line = report[side]["hello"].as_str().unwrap();
        assert!(line.contains("--key-file") && line.contains("--server-cert"), "{line}");
        let key_file = PathBuf::from(report[side]["keyFile"].as_str().unwrap());
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key_file.display());
        assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), report[side]["helloKey"].as_str().unwrap());
        assert!(!line.contains(report[side]["helloKey"].as_str().unwrap()), "no key on the command line: {line}");
        // No kubeconfig at all where it runs.
        let out = run_printed(line, &path, Path::new("/nonexistent"));
        assert!(out.status.success(), "{line}: {}", text(&out));
    }
    aps.shutdown().await;
    alcf.shutdown().await;
}
