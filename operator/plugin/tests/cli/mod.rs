//! Running the real `kubectl-scistream` binary from the plugin's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube::api::{Patch, PatchParams};
use scistream_testkit::{Facility, GATEWAY_NS};
use serde_json::{Value, json};

/// Runs the plugin with `--kubeconfig kubeconfig` and `args`.
pub fn plugin(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-scistream"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("cannot run kubectl-scistream")
}

/// Runs the plugin with `args` only (no `--kubeconfig`), $KUBECONFIG set to `kubeconfig`.
pub fn plugin_env(kubeconfig: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-scistream"))
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("cannot run kubectl-scistream")
}

/// Standard output then standard error, as text.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The whole standard output parsed as exactly one JSON document (the command succeeded).
pub fn json_doc(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", text(out)))
}

/// The whole standard output parsed as exactly one YAML document (the command succeeded).
pub fn yaml_doc(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_yaml::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one YAML document ({e}):\n{}", text(out)))
}

/// One kubeconfig with the contexts, clusters and users of every given kubeconfig file.
pub fn merged_kubeconfig(dir: &Path, files: &[&Path], current: &str) -> PathBuf {
    let mut merged = json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []});
    for file in files {
        let one: Value = serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for key in ["clusters", "users", "contexts"] {
            for item in one[key].as_array().unwrap() {
                merged[key].as_array_mut().unwrap().push(item.clone());
            }
        }
    }
    merged["current-context"] = json!(current);
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&merged).unwrap()).unwrap();
    path
}

/// A facility with an operator and Gateway `dtn` (20 ports per node) whose two nodes are ready.
pub async fn facility(name: &str) -> Facility {
    let mut f = Facility::start(name).await;
    f.start_operator(false);
    f.apply_gateway(json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "20Gbps",
        "podNamespace": GATEWAY_NS, "portRange": {"start": 5100, "end": 5119}}))
        .await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f
}

/// What the control endpoint records when the application controller says Hello.
pub async fn hello(f: &Facility, name: &str, prod_listeners: &[&str]) {
    let mut status = json!({"helloTime": "2026-01-01T00:00:00Z"});
    if !prod_listeners.is_empty() {
        status["prodListeners"] = json!(prod_listeners);
    }
    let body = json!({"apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest", "status": status});
    f.requests()
        .patch_status(name, &PatchParams::apply("scistream-control-endpoint"), &Patch::Apply(&body))
        .await
        .unwrap();
}
