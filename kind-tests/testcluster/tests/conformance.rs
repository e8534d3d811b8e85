//! One test per fact a real kube-apiserver (1.36) was seen to answer (`../shared/K8S-FACTS.md`,
//! "Seen on kube-apiserver 1.36.2"), with its exact text, through real kubectl where a person
//! would meet the text and through kube-rs where our components do.

mod common;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const RELAY_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: qos}
spec:
  hostNetwork: true
  nodeName: gw-a
  containers:
  - name: relay
    image: ghcr.io/scistream/s2ds:0.1.0
    args: ["--config", "/etc/s2ds/config/config.yaml"]
    resources: {requests: {cpu: 100m, memory: 64Mi}}
"#;

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("not an API error: {other}"),
    }
}

#[test]
fn the_qos_class_is_derived_at_creation_and_immutable() {
    let f = Fixture::new(false);
    f.k.ok_stdin(&["apply", "-f", "-"], Some(RELAY_POD));
    assert_eq!(f.k.ok(&["get", "pod", "qos", "-o", "jsonpath={.status.qosClass}"]), "Burstable");
    let err = f.k.fail(
        &[
            "patch",
            "pod",
            "qos",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"qosClass":"BestEffort"}}"#,
        ],
        None,
    );
    assert!(
        err.contains(r#"The Pod "qos" is invalid: status.qosClass: Invalid value: "BestEffort": field is immutable"#),
        "{err}"
    );
    // A status write that leaves the class out (as a kubelet's does) keeps it.
    f.k.ok(&["patch", "pod", "qos", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Running"}}"#]);
    assert_eq!(
        f.k.ok(&["get", "pod", "qos", "-o", "jsonpath={.status.qosClass} {.status.phase}"]),
        "Burstable Running"
    );
}

#[test]
fn pod_spec_updates_beyond_the_allowed_fields_are_forbidden() {
    let f = Fixture::new(false);
    f.k.ok_stdin(&["apply", "-f", "-"], Some(RELAY_POD));
    let prefix = "The Pod \"qos\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n";
    for patch in [
        r#"{"spec":{"nodeName":"gw-b"}}"#,
        r#"{"spec":{"hostNetwork":false}}"#,
        r#"{"spec":{"containers":[{"name":"relay","args":["--config","/tmp/other.yaml"]}]}}"#,
    ] {
        let err = f.k.fail(&["patch", "pod", "qos", "-p", patch], None);
        assert!(err.contains(prefix), "{patch}: {err}");
    }
    // The image may change.
    f.k.ok(&[
        "patch",
        "pod",
        "qos",
        "-p",
        r#"{"spec":{"containers":[{"name":"relay","image":"ghcr.io/scistream/s2ds:0.2.0"}]}}"#,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_through_the_binding_subresource() {
    let c = start().await;
    let pods: Api<Pod> = Api::default_namespaced(c.client().await.expect("client"));
    let unbound: Pod = serde_json::from_value(json!({"metadata": {"name": "nb"},
        "spec": {"containers": [{"name": "relay", "image": "s2ds"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &unbound).await.expect("create");
    let by_update = json!({"spec": {"nodeName": "gw-a"}});
    let e = status_of(pods.patch("nb", &PatchParams::default(), &Patch::Merge(&by_update)).await.expect_err("refused"));
    assert_eq!(e.code, 422);
    assert!(
        e.message.starts_with("Pod \"nb\" is invalid: spec: Forbidden: pod updates may not change fields"),
        "{}",
        e.message
    );
    let binding = |node: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "nb"},
                                      "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    };
    let pp = PostParams::default();
    let done: Value = pods.create_subresource("binding", "nb", &pp, &binding("gw-a")).await.expect("bound");
    assert_eq!((done["status"].as_str(), done["code"].as_i64()), (Some("Success"), Some(201)));
    let bound = pods.get("nb").await.expect("get");
    assert_eq!(bound.spec.and_then(|s| s.node_name).as_deref(), Some("gw-a"));
    let scheduled = bound.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(scheduled.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"), "{scheduled:?}");
    let again = pods.create_subresource::<Value, Value>("binding", "nb", &pp, &binding("gw-b")).await;
    let e = status_of(again.expect_err("already bound"));
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on pods/binding \"nb\": pod nb is already assigned to node \"gw-a\""
    );
}

/// A CRD with a CEL rule whose `fieldPath` points at a scalar (like our StreamRequest's
/// `peerCertificate` rule).
const CERT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: tunnels.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: tunnels, singular: tunnel, kind: Tunnel}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "!has(self.peerCertificate) || self.peerCertificate.startsWith('-----BEGIN CERTIFICATE-----')"
              fieldPath: .peerCertificate
              message: peerCertificate must be a PEM certificate
            properties:
              peerCertificate: {type: string, maxLength: 8192}
"#;

#[test]
fn a_cel_rule_with_a_field_path_on_a_scalar_shows_no_value() {
    let f = Fixture::new(false);
    f.k.ok_stdin(&["apply", "-f", "-"], Some(CERT_CRD));
    let bad = "apiVersion: example.com/v1\nkind: Tunnel\nmetadata: {name: t}\nspec: {peerCertificate: not-a-pem}\n";
    let err = f.k.fail(&["apply", "-f", "-"], Some(bad));
    assert!(
        err.contains("The Tunnel \"t\" is invalid: spec.peerCertificate: Invalid value: peerCertificate must be a PEM certificate"),
        "{err}"
    );
    assert!(!err.contains("not-a-pem"), "{err}");
}

#[test]
fn a_crd_over_the_cel_cost_budget_gets_three_kinds_of_cause() {
    let f = Fixture::new(false);
    let costly = CERT_CRD.replace(
        "              peerCertificate: {type: string, maxLength: 8192}\n",
        "              peerCertificate: {type: string, maxLength: 8192}\n              hosts:\n                type: array\n                items: {type: array, items: {type: string}}\n                x-kubernetes-validations:\n                - rule: \"self.all(a, a.all(h, h.matches('^[a-z0-9.-]+$')))\"\n",
    );
    let err = f.k.fail(&["apply", "-f", "-"], Some(&costly));
    let rule = "spec.validation.openAPIV3Schema.properties[spec].properties[hosts].x-kubernetes-validations[0].rule";
    for want in [
        format!("{rule}: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"),
        format!("{rule}: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"),
        "spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)".to_owned(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in {err}");
    }
}

#[test]
fn a_non_structural_schema_is_reported_under_spec_validation() {
    let f = Fixture::new(false);
    let untyped =
        CERT_CRD.replace("peerCertificate: {type: string, maxLength: 8192}", "peerCertificate: {maxLength: 8192}");
    let err = f.k.fail(&["apply", "-f", "-"], Some(&untyped));
    assert!(
        err.contains("spec.validation.openAPIV3Schema.properties[spec].properties[peerCertificate].type: Required value: must not be empty for specified object fields"),
        "{err}"
    );
}

#[test]
fn a_failed_json_patch_test_answers_only_the_generic_text() {
    let f = Fixture::new(false);
    f.k.ok(&["create", "configmap", "c", "--from-literal=a=1"]);
    let patch = r#"[{"op":"test","path":"/data/a","value":"2"},{"op":"replace","path":"/data/a","value":"3"}]"#;
    let err = f.k.fail(&["patch", "configmap", "c", "--type=json", "-p", patch], None);
    assert_eq!(err.trim(), "The request is invalid: the server rejected our request due to an error in our request");
    assert_eq!(f.k.ok(&["get", "configmap", "c", "-o", "jsonpath={.data.a}"]), "1", "nothing changed");
}
