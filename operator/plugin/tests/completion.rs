//! Completion as kubectl runs it for plugins: the real `kubectl __complete scistream ...`
//! finds `kubectl_complete-scistream` on the PATH (next to `kubectl-scistream`), and gets
//! subcommands, flags, flag values, the kubeconfig's contexts and the cluster's streams.

mod cli;

use std::{path::Path, process::Command};

use cli::{facility, merged_kubeconfig, plugin, text};
use scistream_testkit::USER_NS;

/// A directory holding the two executables under the names kubectl looks for.
fn plugin_path(dir: &Path) -> String {
    for (name, built) in [
        ("kubectl-scistream", env!("CARGO_BIN_EXE_kubectl-scistream")),
        ("kubectl_complete-scistream", env!("CARGO_BIN_EXE_kubectl_complete-scistream")),
    ] {
        std::os::unix::fs::symlink(built, dir.join(name)).unwrap();
    }
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// `kubectl __complete scistream WORDS...`: the candidates (without descriptions) and the directive.
fn complete(path: &str, kubeconfig: &Path, words: &[&str]) -> (Vec<String>, String) {
    let out = Command::new("kubectl")
        .arg("__complete")
        .arg("scistream")
        .args(words)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl is installed (kind-tests/setup.sh)");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<String> = stdout.lines().map(|l| l.split('\t').next().unwrap_or_default().to_owned()).collect();
    let directive = lines.pop().unwrap_or_default();
    (lines, directive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_completes_the_plugin() {
    let (aps, alcf) = (facility("aps").await, facility("alcf").await);
    let dir = tempfile::tempdir().unwrap();
    let kc = merged_kubeconfig(dir.path(), &[aps.cluster.kubeconfig_path(), alcf.cluster.kubeconfig_path()], "aps");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let path = plugin_path(&bin);

    let (subcommands, directive) = complete(&path, &kc, &[""]);
    for sub in ["create", "get", "list", "describe", "release", "hello", "gateways"] {
        assert!(subcommands.contains(&sub.to_owned()), "{sub} in {subcommands:?}");
    }
    assert_eq!(directive, ":4", "no file names after kubectl scistream");
    assert_eq!(complete(&path, &kc, &["cr"]).0, ["create"]);
    assert!(complete(&path, &kc, &["list", "--no"]).0.contains(&"--no-headers".to_owned()));
    assert_eq!(complete(&path, &kc, &["get", "x", "-o", ""]).0, ["table", "wide", "json", "yaml", "name"]);
    assert_eq!(complete(&path, &kc, &["list", "--context", ""]).0, ["aps", "alcf"]);

    // Names of streams and gateways, from the cluster of the context typed.
    let args = [
        "create",
        "run-42",
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
    ];
    let out = plugin(&kc, &args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(complete(&path, &kc, &["describe", "--context", "alcf", "-n", USER_NS, "run"]).0, ["run-42"]);
    assert_eq!(complete(&path, &kc, &["create", "s", "--cons-context", "alcf", "--cons-gateway", ""]).0, ["dtn"]);

    // The same answers from `kubectl-scistream __complete`, for a script of that name.
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-scistream")).args(["__complete", "rel"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "release\tDelete both sides of a stream and wait until they are gone\n:4\n"
    );
    aps.shutdown().await;
    alcf.shutdown().await;
}
