//! The `testcluster` binary: `ready <url>`, kubeconfig, SIGTERM, and
//! `--data-dir` persistence across a restart.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::Kubectl;

fn start(kubeconfig: &Path, data: &Path, tokens: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_testcluster"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--name")
        .arg("facility-a")
        .arg("--data-dir")
        .arg(data)
        .arg("--tokens")
        .arg(tokens)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn testcluster");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read ready line");
    let url =
        line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_string();
    (child, url)
}

fn admin_token(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with("token:")).unwrap();
    line.trim_start().trim_start_matches("token:").trim().to_string()
}

fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn binary_serves_persists_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (kc, data, tokens) = (dir.path().join("kubeconfig"), dir.path().join("data"), dir.path().join("tokens.csv"));
    std::fs::write(&tokens, "tok-carol,carol,u3,\"ops,dev\"\n").unwrap();
    let (mut child, url) = start(&kc, &data, &tokens);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(text.contains("current-context: facility-a") && text.contains(&url), "{text}");
    let k = Kubectl::with_kubeconfig(&kc);
    k.ok(&["create", "configmap", "kept", "--from-literal=a=1"]);
    k.ok_stdin(&["apply", "-f", "-"], Some(&common::widget_crd_yaml()));
    k.ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=5s"]);
    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {replicas: 7}\n";
    k.ok_stdin(&["apply", "-f", "-"], Some(w));
    stop(&mut child);

    let (mut child, _) = start(&kc, &data, &tokens);
    let k = Kubectl::with_kubeconfig(&kc);
    assert_eq!(k.ok(&["get", "configmap", "kept", "-o", "jsonpath={.data.a}"]), "1");
    assert_eq!(k.ok(&["get", "widget", "w", "-o", "jsonpath={.spec.replicas}"]), "7");
    let who = k.run(&["auth", "can-i", "list", "pods", "--as=carol", "--as-group=ops"], None);
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), "no");
    let carol = dir.path().join("carol.kubeconfig");
    std::fs::write(&carol, std::fs::read_to_string(&kc).unwrap().replace(&admin_token(&kc), "tok-carol")).unwrap();
    let denied = Kubectl::with_kubeconfig(&carol).fail(&["get", "pods"], None);
    assert!(denied.contains("User \"carol\" cannot list resource \"pods\""), "{denied}");
    stop(&mut child);
}
