//! Rendering the Helm chart in tests: `helm template` with `--set` values, and the rendered
//! objects as JSON values.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The helm binary (installed on first use by kind-tests/helm.sh).
pub fn helm() -> String {
    let out = Command::new(root().join("kind-tests/helm.sh")).output().unwrap();
    assert!(out.status.success(), "kind-tests/helm.sh: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `helm template t charts/scistream-operator -n scistream-system --set V...`.
pub fn template(values: &[&str]) -> std::process::Output {
    template_in("scistream-system", values)
}

/// `helm template t charts/scistream-operator -n NAMESPACE --set V...`.
pub fn template_in(namespace: &str, values: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(helm());
    cmd.current_dir(root()).args(["template", "t", "charts/scistream-operator", "--namespace", namespace]);
    for v in values {
        cmd.args(["--set", v]);
    }
    cmd.output().unwrap()
}

/// The objects rendered with `values` (panics if the chart refuses them).
pub fn objects(values: &[&str]) -> Vec<Value> {
    objects_in("scistream-system", values)
}

/// The objects rendered into release namespace `namespace` with `values`.
pub fn objects_in(namespace: &str, values: &[&str]) -> Vec<Value> {
    let out = template_in(namespace, values);
    assert!(out.status.success(), "{values:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .split("\n---\n")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap_or_default())
        .filter(|d| d.is_object())
        .collect()
}

/// The rendered object of `kind` named `name`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The operator container's arguments.
pub fn operator_args(objects: &[Value]) -> Vec<String> {
    let d = find(objects, "Deployment", "t-scistream-operator");
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// The operator as it parses `args` (panics if it refuses them).
pub fn parse_operator(args: &[String]) -> scistream_controller::Args {
    <scistream_controller::Args as clap::Parser>::try_parse_from(
        std::iter::once("scistream-operator".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("the operator refuses the chart's arguments {args:?}: {e}"))
}
