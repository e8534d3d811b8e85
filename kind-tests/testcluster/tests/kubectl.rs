//! Conformance driven by the real kubectl (/usr/bin/kubectl).

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: gw-a
  containers:
  - name: c
    image: nginx:1
    ports: [{containerPort: 80}]
"#;

const WIDGET: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1}
spec: {replicas: 2, color: blue}
"#;

#[test]
fn create_get_describe_delete() {
    let f = Fixture::new(false);
    let k = &f.k;
    k.ok(&["create", "namespace", "team"]);
    k.ok(&["-n", "team", "create", "configmap", "cfg", "--from-literal=a=1"]);
    k.ok(&["-n", "team", "create", "secret", "generic", "sec", "--from-literal=p=s3cret"]);
    k.ok(&["-n", "team", "create", "serviceaccount", "bot"]);
    k.ok(&["-n", "team", "create", "service", "clusterip", "svc", "--tcp=80:8080"]);
    let svc = k.ok(&[
        "-n",
        "team",
        "get",
        "svc",
        "svc",
        "-o",
        "jsonpath={.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector.app}",
    ]);
    assert_eq!(svc, "80 8080 svc");
    k.ok(&["-n", "team", "run", "runner", "--image=busybox"]);
    let table = k.ok(&["-n", "team", "get", "cm,secret"]);
    assert!(table.contains("DATA") && table.contains("cfg") && table.contains("Opaque"), "{table}");
    let yaml = k.ok(&["-n", "team", "get", "cm", "cfg", "-o", "yaml"]);
    assert!(yaml.contains("a: \"1\"") && yaml.contains("resourceVersion:"), "{yaml}");
    let json: serde_json::Value =
        serde_json::from_str(&k.ok(&["-n", "team", "get", "secret", "sec", "-o", "json"])).unwrap();
    assert_eq!(json["data"]["p"], "czNjcmV0");
    assert_eq!(k.ok(&["-n", "team", "get", "cm", "cfg", "-o", "jsonpath={.data.a}"]), "1");
    let uid = k.ok(&["-n", "team", "get", "cm", "cfg", "-o", "jsonpath={.metadata.uid}"]);
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: cfg.1, namespace: team}}\neventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: tests\nreportingInstance: tests-1\naction: Check\nreason: Checked\nnote: looked at it\ntype: Normal\nregarding: {{apiVersion: v1, kind: ConfigMap, name: cfg, namespace: team, uid: {uid}}}\n"
    );
    k.ok_stdin(&["apply", "-f", "-"], Some(&event));
    let described = k.ok(&["-n", "team", "describe", "cm", "cfg"]);
    assert!(described.contains("Checked") && described.contains("looked at it"), "{described}");
    assert!(described.contains("Name:         cfg"), "{described}");
    let ns = k.ok(&["get", "ns"]);
    assert!(ns.contains("team") && ns.contains("Active"), "{ns}");
    let future = k.fail(&["get", "--raw", "/api/v1/namespaces/team/configmaps?resourceVersion=999999"], None);
    assert!(future.contains("Too large resource version: 999999"), "{future}");
    let missing = k.fail(&["-n", "team", "get", "cm", "nope"], None);
    assert!(missing.contains("Error from server (NotFound): configmaps \"nope\" not found"), "{missing}");
    let dup = k.fail(&["-n", "team", "create", "configmap", "cfg"], None);
    assert!(dup.contains("configmaps \"cfg\" already exists"), "{dup}");
    k.ok(&["-n", "team", "delete", "cm", "cfg"]);
    k.ok(&["delete", "namespace", "team", "--timeout=10s"]);
    k.fail(&["get", "ns", "team"], None);
}

#[test]
fn api_resources_and_explain() {
    let f = Fixture::new(true);
    let res = f.k.ok(&["api-resources"]);
    for line in ["widgets", "wd", "example.com/v1", "pods", "customresourcedefinitions"] {
        assert!(res.contains(line), "{line} missing from\n{res}");
    }
    let ns_only = f.k.ok(&["api-resources", "--namespaced=false", "-o", "name"]);
    assert!(ns_only.contains("namespaces") && !ns_only.contains("configmaps"), "{ns_only}");
    let explain = f.k.ok(&["explain", "pods.spec.containers.image"]);
    assert!(explain.contains("FIELD: image <string>"), "{explain}");
    let explain = f.k.ok(&["explain", "widgets.spec"]);
    assert!(explain.contains("replicas") && explain.contains("<integer>"), "{explain}");
}

#[test]
fn apply_client_side_and_server_side() {
    let f = Fixture::new(true);
    let k = &f.k;
    assert!(k.ok_stdin(&["apply", "-f", "-"], Some(POD)).contains("pod/web created"));
    assert!(k.ok_stdin(&["apply", "-f", "-"], Some(POD)).contains("pod/web unchanged"));
    let changed = POD.replace("nginx:1", "nginx:2");
    assert!(k.ok_stdin(&["apply", "-f", "-"], Some(&changed)).contains("pod/web configured"));
    assert_eq!(k.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.containers[0].image}"]), "nginx:2");
    let wide = k.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("NODE") && wide.contains("gw-a") && wide.contains("0/1"), "{wide}");

    assert!(k.ok_stdin(&["apply", "-f", "-"], Some(WIDGET)).contains("widget.example.com/w1 created"));
    let table = k.ok(&["get", "widgets"]);
    assert!(table.contains("REPLICAS") && table.contains("PHASE"), "{table}");
    assert!(table.lines().nth(1).is_some_and(|l| l.starts_with("w1") && l.contains(" 2 ")), "{table}");

    let ssa = WIDGET.replace("w1", "w2");
    assert!(
        k.ok_stdin(&["apply", "--server-side", "--field-manager=alpha", "-f", "-"], Some(&ssa))
            .contains("serverside-applied")
    );
    let other = ssa.replace("replicas: 2", "replicas: 3");
    let conflict = k.fail(&["apply", "--server-side", "--field-manager=beta", "-f", "-"], Some(&other));
    assert!(conflict.contains("conflict with \"alpha\"") && conflict.contains(".spec.replicas"), "{conflict}");
    k.ok_stdin(&["apply", "--server-side", "--field-manager=beta", "--force-conflicts", "-f", "-"], Some(&other));
    assert_eq!(k.ok(&["get", "wd", "w2", "-o", "jsonpath={.spec.replicas}"]), "3");
    let dry = k.ok_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&WIDGET.replace("w1", "w3")));
    assert!(dry.contains("server dry run"), "{dry}");
    k.fail(&["get", "wd", "w3"], None);
}

#[test]
fn patch_label_edit_and_errors() {
    let f = Fixture::new(true);
    let k = &f.k;
    k.ok_stdin(&["apply", "-f", "-"], Some(WIDGET));
    k.ok(&["patch", "widget", "w1", "--type=merge", "-p", r#"{"spec":{"replicas":5}}"#]);
    k.ok(&["patch", "widget", "w1", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/color","value":"green"}]"#]);
    k.ok(&["label", "widget", "w1", "tier=gold"]);
    k.ok(&["annotate", "widget", "w1", "note=hi"]);
    k.ok_env(&["edit", "widget", "w1"], &[("EDITOR", "sed -i s/green/red/"), ("KUBE_EDITOR", "sed -i s/green/red/")]);
    let got = k.ok(&[
        "get",
        "widget",
        "w1",
        "-o",
        "jsonpath={.spec.replicas} {.spec.color} {.metadata.labels.tier} {.metadata.generation}",
    ]);
    assert_eq!(got, "5 red gold 4");
    k.ok(&["patch", "widget", "w1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Ready"}}"#]);
    assert!(k.ok(&["get", "widget", "w1"]).contains("Ready"));
    let bad = k.fail(&["patch", "widget", "w1", "--type=strategic", "-p", r#"{"spec":{"replicas":1}}"#], None);
    assert!(
        bad.contains("UnsupportedMediaType") || bad.contains("unknown format") || bad.contains("strategic"),
        "{bad}"
    );
    k.ok_stdin(&["apply", "-f", "-"], Some(POD));
    k.ok(&["patch", "pod", "web", "-p", r#"{"spec":{"containers":[{"name":"c","image":"nginx:3"}]}}"#]);
    let img = k.ok(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.spec.containers[*].image} {.spec.containers[0].ports[0].containerPort}",
    ]);
    assert_eq!(img, "nginx:3 80");
    let invalid = k.fail(&["create", "configmap", "Bad_Name"], None);
    assert!(invalid.contains("is invalid") && invalid.contains("metadata.name"), "{invalid}");
    let unknown =
        k.fail(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u}\nbogus: 1\n"));
    assert!(unknown.contains("unknown field \"bogus\""), "{unknown}");
    let warned = k.run(
        &["apply", "--validate=warn", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u}\nbogus: 1\n"),
    );
    assert!(warned.status.success());
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(stderr.contains("Warning: unknown field \"bogus\""), "{stderr}");
}

#[test]
fn wait_for_condition_delete_and_jsonpath() {
    let f = Fixture::new(true);
    let k = &f.k;
    k.ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=5s"]);
    k.ok_stdin(&["apply", "-f", "-"], Some(WIDGET));
    let status = r#"{"status":{"phase":"Ready","conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-01-01T00:00:00Z","reason":"R","message":"m"}]}}"#;
    let waiter = k.spawn(&["wait", "--for=condition=Ready", "widget/w1", "--timeout=10s"]);
    k.ok(&["patch", "widget", "w1", "--subresource=status", "--type=merge", "-p", status]);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    k.ok(&["wait", "--for=jsonpath={.status.phase}=Ready", "widget/w1", "--timeout=5s"]);
    k.ok(&["patch", "widget", "w1", "--type=merge", "-p", r#"{"metadata":{"finalizers":["example.com/hold"]}}"#]);
    k.ok(&["delete", "widget", "w1", "--wait=false"]);
    let waiter = k.spawn(&["wait", "--for=delete", "widget/w1", "--timeout=10s"]);
    k.ok(&["patch", "widget", "w1", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn get_watch_streams_changes() {
    let f = Fixture::new(false);
    let k = &f.k;
    let mut child = k.spawn(&["get", "configmaps", "-w", "--output-watch-events"]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = vec![];
    let mut step = 0;
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.starts_with("DELETED") && l.contains("watched"))
    {
        // Keep writing until the watch has seen each step (it may start after our first write).
        match step {
            0 => k.ok(&["create", "configmap", "watched"]),
            1 => k.ok(&["label", "configmap", "watched", "x=y"]),
            2 => k.ok(&["delete", "configmap", "watched"]),
            _ => String::new(),
        };
        step += 1;
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            lines.push(l);
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(text.contains("ADDED") && text.contains("MODIFIED") && text.contains("DELETED"), "{text}");
}

#[test]
fn auth_can_i_with_rbac() {
    let f = Fixture::new(false);
    let k = &f.k;
    k.ok(&["create", "role", "reader", "--verb=get,list,watch", "--resource=configmaps,pods"]);
    k.ok(&["create", "rolebinding", "dev-read", "--role=reader", "--group=dev"]);
    let alice = f.kubectl_as("tok-alice");
    assert_eq!(alice.ok(&["auth", "can-i", "list", "configmaps"]).trim(), "yes");
    let no = alice.run(&["auth", "can-i", "delete", "configmaps"], None);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    alice.ok(&["get", "pods"]);
    let rules = alice.ok(&["auth", "can-i", "--list"]);
    assert!(rules.lines().any(|l| l.starts_with("configmaps") && l.contains("[get list watch]")), "{rules}");
    let denied = alice.fail(&["create", "configmap", "x"], None);
    assert!(
        denied.contains("configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\""),
        "{denied}"
    );
    assert_eq!(k.ok(&["auth", "can-i", "list", "pods", "--as=alice", "--as-group=dev"]).trim(), "yes");
    let bob = f.kubectl_as("tok-bob");
    let e = bob.fail(&["get", "configmaps"], None);
    assert!(e.contains("Forbidden"), "{e}");
    let bad = f.kubectl_as("not-a-token");
    let e = bad.fail(&["get", "configmaps"], None);
    assert!(e.contains("Unauthorized") || e.contains("logged in"), "{e}");
}

#[test]
fn metrics_count_requests_by_client_verb_and_resource() {
    let f = Fixture::new(false);
    f.k.ok(&["get", "pods"]);
    f.k.ok(&["create", "configmap", "m", "--from-literal=a=1"]);
    let metrics = f.k.ok(&["get", "--raw", "/metrics"]);
    for want in [
        "apiserver_request_total{client=\"kubectl\",code=\"200\",group=\"\",resource=\"pods\",subresource=\"\",verb=\"LIST\"} 1",
        "apiserver_request_total{client=\"kubectl\",code=\"201\",group=\"\",resource=\"configmaps\",subresource=\"\",verb=\"CREATE\"} 1",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
}
