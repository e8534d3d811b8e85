use serde_json::json;

use super::*;
use crate::resources::builtin;

fn info(group: &str, plural: &str) -> ResourceInfo {
    builtin().into_iter().find(|r| r.plural == plural && r.group == group).expect("registered")
}

/// `field: message` of each cause, as kubectl prints them.
fn texts(group: &str, plural: &str, obj: Value, old: Option<Value>) -> Vec<String> {
    check(&info(group, plural), &obj, old.as_ref()).into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
}

#[test]
fn secret_and_configmap_keys_sizes_and_immutability() {
    assert!(texts("", "secrets", json!({"data": {"tls.crt": "YQ==", "key_1-a": ""}}), None).is_empty());
    assert_eq!(
        texts("", "secrets", json!({"data": {"bad key": "YQ=="}}), None),
        [
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        ]
    );
    assert_eq!(
        texts("", "configmaps", json!({"data": {"..a": "x"}}), None),
        ["data[..a]: Invalid value: \"..a\": must not start with '..'"]
    );
    let big = "a".repeat(MAX_DATA_BYTES + 1);
    assert_eq!(
        texts("", "configmaps", json!({"data": {"k": big}}), None),
        ["[]: Too long: may not be more than 1048576 bytes"]
    );
    let exactly = "a".repeat(MAX_DATA_BYTES);
    assert!(texts("", "configmaps", json!({"data": {"k": exactly}}), None).is_empty(), "the limit itself is allowed");
    let old = json!({"type": "Opaque", "immutable": true, "data": {"a": "YQ=="}});
    let changed = json!({"type": "kubernetes.io/tls", "immutable": true, "data": {"a": "Yg=="}});
    assert_eq!(
        texts("", "secrets", changed, Some(old)),
        [
            "type: Invalid value: \"kubernetes.io/tls\": field is immutable",
            "data: Forbidden: field is immutable when `immutable` is set"
        ]
    );
    let old = json!({"immutable": true, "data": {"a": "1"}});
    assert_eq!(
        texts("", "configmaps", json!({"data": {"a": "1"}}), Some(old)),
        ["immutable: Forbidden: field is immutable when `immutable` is set"]
    );
}

#[test]
fn events_belong_to_their_object_namespace() {
    let pod_event = json!({"metadata": {"namespace": "gw"}, "involvedObject": {"kind": "Pod", "namespace": "gw"}});
    assert!(texts("", "events", pod_event, None).is_empty());
    let elsewhere = json!({"metadata": {"namespace": "other"}, "involvedObject": {"kind": "Pod", "namespace": "gw"}});
    assert_eq!(
        texts("", "events", elsewhere, None),
        ["involvedObject.namespace: Invalid value: \"gw\": does not match event.namespace"]
    );
    let node_event = json!({"metadata": {"namespace": "default"}, "involvedObject": {"kind": "Node"}});
    assert!(texts("", "events", node_event, None).is_empty(), "cluster-scoped objects' events live in default");
    let gateway_in_user_ns = json!({"metadata": {"namespace": "science"}, "involvedObject": {"kind": "Gateway"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingComponent": "scistream-operator", "reportingInstance": "op-0",
        "action": "Reconcile", "reason": "Ready"});
    assert_eq!(
        texts("events.k8s.io", "events", gateway_in_user_ns, None),
        ["involvedObject.namespace: Invalid value: \"\": does not match event.namespace"]
    );
    let incomplete = json!({"metadata": {"namespace": "default"}, "involvedObject": {"kind": "Node"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "x".repeat(129)});
    assert_eq!(
        texts("events.k8s.io", "events", incomplete, None),
        [
            "reportingController: Required value",
            "reportingInstance: Required value",
            "action: Required value",
            "reason: Invalid value: \"\": can have at most 128 characters"
        ]
    );
}

#[test]
fn leases_nodes_and_services() {
    assert_eq!(
        texts("coordination.k8s.io", "leases", json!({"spec": {"leaseDurationSeconds": 0}}), None),
        ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );
    let taints = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "Sometimes"}]}});
    let t = texts("", "nodes", taints, None);
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(t[0].starts_with("metadata.taints[1]: Duplicate value: "), "{t:?}");
    assert_eq!(
        t[1],
        "metadata.taints[2].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
    );
    assert_eq!(texts("", "services", json!({"spec": {"type": "ClusterIP"}}), None), ["spec.ports: Required value"]);
    assert!(texts("", "services", json!({"spec": {"clusterIP": "None"}}), None).is_empty(), "headless");
    let svc = json!({"spec": {"type": "ClusterIP", "ports": [{"name": "grpc", "port": 5000}, {"port": 70000, "nodePort": 30000}]}});
    assert_eq!(
        texts("", "services", svc, None),
        [
            "spec.ports[1].name: Required value",
            "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.ports[1].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        ]
    );
}
