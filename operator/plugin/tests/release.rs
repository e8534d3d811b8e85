//! The plugin's release as kind-tests/release-plugin.sh makes it: an archive with both
//! executables, its SHA-256, and a krew manifest generated from the template with that
//! archive's URL and checksum (the binaries of this build stand in for the static ones).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn check_manifest(m: &Value) {
    assert_eq!(m["apiVersion"], "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "scistream", "kubectl finds the plugin as kubectl-<name>");
    assert_eq!(m["spec"]["version"], format!("v{}", env!("CARGO_PKG_VERSION")));
    for field in ["homepage", "shortDescription", "description"] {
        assert!(m["spec"][field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
    for p in m["spec"]["platforms"].as_array().unwrap() {
        assert_eq!(p["bin"], "kubectl-scistream");
        assert!(p["selector"]["matchLabels"]["os"].is_string());
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
        assert!(p["uri"].as_str().unwrap().starts_with("https://"));
    }
}

#[test]
fn the_krew_template_is_valid() {
    let path = root().join("operator/plugin/krew.yaml");
    check_manifest(&serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap());
}

#[test]
fn the_release_archive_and_its_krew_manifest_agree() {
    let out = tempfile::tempdir().unwrap();
    let binaries = Path::new(env!("CARGO_BIN_EXE_kubectl-scistream")).parent().unwrap();
    let run = Command::new(root().join("kind-tests/release-plugin.sh"))
        .arg("--out")
        .arg(out.path())
        .arg("--binaries")
        .arg(binaries)
        .args(["--base-url", "https://downloads.facility.example/scistream"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let archive = out.path().join("kubectl-scistream-linux-amd64.tar.gz");
    let bytes = std::fs::read(&archive).unwrap();
    let sha = format!("{:x}", Sha256::digest(&bytes));
    let sum = std::fs::read_to_string(out.path().join("kubectl-scistream-linux-amd64.tar.gz.sha256")).unwrap();
    assert_eq!(sum, format!("{sha}  kubectl-scistream-linux-amd64.tar.gz\n"), "sha256sum -c reads it");
    let listed = Command::new("tar").arg("-tvzf").arg(&archive).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for file in ["kubectl-scistream", "kubectl_complete-scistream", "README.md"] {
        assert!(listed.lines().any(|l| l.ends_with(&format!(" {file}"))), "{file} in {listed}");
    }
    assert!(listed.lines().filter(|l| !l.contains("README")).all(|l| l.starts_with("-rwxr-xr-x")), "{listed}");
    let manifest: Value =
        serde_yaml::from_str(&std::fs::read_to_string(out.path().join("scistream.yaml")).unwrap()).unwrap();
    check_manifest(&manifest);
    let platform = &manifest["spec"]["platforms"][0];
    assert_eq!(platform["sha256"], sha.as_str());
    assert_eq!(
        platform["uri"],
        format!(
            "https://downloads.facility.example/scistream/v{}/kubectl-scistream-linux-amd64.tar.gz",
            env!("CARGO_PKG_VERSION")
        )
    );
    let files: Vec<&str> = platform["files"].as_array().unwrap().iter().map(|f| f["from"].as_str().unwrap()).collect();
    for file in &files {
        assert!(listed.contains(file), "krew copies {file}, which the archive must hold");
    }
    // The same input makes the same archive (reproducible release).
    let again = tempfile::tempdir().unwrap();
    let run = Command::new(root().join("kind-tests/release-plugin.sh"))
        .arg("--out")
        .arg(again.path())
        .arg("--binaries")
        .arg(binaries)
        .output()
        .unwrap();
    assert!(run.status.success());
    assert_eq!(std::fs::read(again.path().join("kubectl-scistream-linux-amd64.tar.gz")).unwrap(), bytes);
}
