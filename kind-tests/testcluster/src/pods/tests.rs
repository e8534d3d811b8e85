use super::*;
use crate::resources::builtin;

fn pods() -> ResourceInfo {
    builtin().into_iter().find(|r| r.plural == "pods" && r.group.is_empty()).expect("pods")
}

fn spec_with(resources: &[Value]) -> Value {
    let containers: Vec<Value> =
        resources.iter().enumerate().map(|(i, r)| json!({"name": format!("c{i}"), "resources": r})).collect();
    json!({"containers": containers})
}

#[test]
fn quantities_parse_with_their_suffixes() {
    for (text, want) in [("100m", 0.1), ("64Mi", 67_108_864.0), ("1", 1.0), ("1.5G", 1.5e9), ("2e3", 2000.0)] {
        assert_eq!(quantity(&json!(text)), Some(want), "{text}");
    }
    assert_eq!(quantity(&json!(2)), Some(2.0));
    assert_eq!(quantity(&json!("5 apples")), None);
}

#[test]
fn qos_classes_follow_the_kubernetes_rules() {
    let cases = [
        ("no resources", vec![json!({})], "BestEffort"),
        ("the relay's requests", vec![json!({"requests": {"cpu": "100m", "memory": "64Mi"}})], "Burstable"),
        (
            "limits equal requests",
            vec![json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}})],
            "Guaranteed",
        ),
        ("cpu only limited", vec![json!({"limits": {"cpu": "1"}})], "Burstable"),
        ("a zero request counts as none", vec![json!({"requests": {"cpu": "0"}})], "BestEffort"),
        ("other resources do not count", vec![json!({"requests": {"ephemeral-storage": "1Gi"}})], "BestEffort"),
        ("one container unlimited", vec![json!({"limits": {"cpu": "1", "memory": "1Gi"}}), json!({})], "Burstable"),
        (
            "limits below requests",
            vec![json!({"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}})],
            "Burstable",
        ),
    ];
    for (what, resources, want) in cases {
        let mut spec = spec_with(&resources);
        default_requests(&mut spec);
        assert_eq!(qos_class(&spec), want, "{what}");
    }
}

#[test]
fn limits_alone_default_the_requests_and_make_a_pod_guaranteed() {
    let mut pod = json!({"spec": spec_with(&[json!({"limits": {"cpu": "1", "memory": "1Gi"}})]),
                         "status": {"phase": "Running", "podIP": "10.0.0.1"}});
    default_requests(&mut pod["spec"]);
    prepare_create(&mut pod);
    assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"], json!({"cpu": "1", "memory": "1Gi"}));
    assert_eq!(pod["status"], json!({"phase": "Pending", "qosClass": "Guaranteed"}), "the rest of status is dropped");
    assert!(pod["spec"].get("initContainers").is_none(), "no field is invented");
}

#[test]
fn a_qos_class_sent_at_creation_is_kept() {
    let mut pod = json!({"spec": spec_with(&[json!({})]), "status": {"qosClass": "Burstable"}});
    prepare_create(&mut pod);
    assert_eq!(pod["status"]["qosClass"], "Burstable");
}

fn pod(spec: Value, qos: &str) -> Value {
    json!({"metadata": {"name": "nb"}, "spec": spec, "status": {"phase": "Pending", "qosClass": qos}})
}

/// `v` with the field at JSON pointer `path` set to `value` (created under an existing parent).
fn with(v: &Value, path: &str, value: Value) -> Value {
    let mut out = v.clone();
    let (parent, key) = path.rsplit_once('/').expect("a pointer");
    let parent = out.pointer_mut(parent).expect("the parent exists");
    match parent {
        Value::Array(items) => items[key.parse::<usize>().expect("an index")] = value,
        other => other[key] = value,
    }
    out
}

fn relay_spec() -> Value {
    json!({"nodeName": "gw-a", "hostNetwork": true, "terminationGracePeriodSeconds": 30,
           "containers": [{"name": "relay", "image": "s2ds:1", "args": ["--config", "/a"]}],
           "tolerations": [{"key": "gw", "operator": "Exists", "effect": "NoSchedule"}]})
}

#[test]
fn the_qos_class_is_immutable_and_kept_when_omitted() {
    let old = pod(relay_spec(), "Burstable");
    let mut omitted = old.clone();
    omitted["status"] = json!({"phase": "Running"});
    validate_status_update(&pods(), &old, &mut omitted).expect("omitted is fine");
    assert_eq!(omitted["status"]["qosClass"], "Burstable");
    let mut changed = old.clone();
    changed["status"]["qosClass"] = json!("BestEffort");
    let e = validate_status_update(&pods(), &old, &mut changed).expect_err("immutable");
    assert_eq!(e.code, 422);
    assert_eq!(e.message, "Pod \"nb\" is invalid: status.qosClass: Invalid value: \"BestEffort\": field is immutable");
}

#[test]
fn pod_spec_updates_are_limited_to_what_the_server_allows() {
    let old = pod(relay_spec(), "BestEffort");
    let allowed = [
        ("image", "/spec/containers/0/image", json!("s2ds:2")),
        ("deadline set", "/spec/activeDeadlineSeconds", json!(60)),
        (
            "toleration added",
            "/spec/tolerations",
            json!([{"key": "gw", "operator": "Exists", "effect": "NoSchedule"}, {"key": "x", "operator": "Exists"}]),
        ),
    ];
    for (what, path, value) in allowed {
        let new = with(&old, path, value);
        validate_update(&pods(), &old, &new).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let prefix =
        format!("Pod \"nb\" is invalid: spec: Forbidden: pod updates may not change fields other than {UPDATABLE}\n");
    for (what, path, value) in [
        ("nodeName", "/spec/nodeName", json!("gw-b")),
        ("hostNetwork", "/spec/hostNetwork", json!(false)),
        ("args", "/spec/containers/0/args", json!(["--config", "/b"])),
    ] {
        let new = with(&old, path, value);
        let e = validate_update(&pods(), &old, &new).expect_err(what);
        assert_eq!(e.code, 422, "{what}");
        assert!(e.message.starts_with(&prefix), "{what}: {}", e.message);
    }
    let mut removed = old.clone();
    removed["spec"]["tolerations"] = json!([]);
    let e = validate_update(&pods(), &old, &removed).expect_err("toleration removed");
    assert!(
        e.message.ends_with(
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
        ),
        "{}",
        e.message
    );
    let mut more = old.clone();
    more["spec"]["containers"].as_array_mut().expect("containers").push(json!({"name": "b", "image": "x"}));
    let e = validate_update(&pods(), &old, &more).expect_err("added container");
    assert!(
        e.message.ends_with("spec.containers: Forbidden: pod updates may not add or remove containers"),
        "{}",
        e.message
    );
}

#[test]
fn an_unbound_pod_cannot_be_given_a_node_by_update() {
    let mut spec = relay_spec();
    spec.as_object_mut().expect("spec").remove("nodeName");
    let old = pod(spec, "BestEffort");
    let mut new = old.clone();
    new["spec"]["nodeName"] = json!("gw-a");
    let e = validate_update(&pods(), &old, &new).expect_err("binding is the way");
    assert!(e.message.contains("spec.nodeName: <unset> -> \"gw-a\""), "{}", e.message);
}

#[test]
fn binding_sets_the_node_once() {
    let mut spec = relay_spec();
    spec.as_object_mut().expect("spec").remove("nodeName");
    let unbound = pod(spec, "BestEffort");
    let binding =
        json!({"metadata": {"name": "nb", "annotations": {"a": "b"}}, "target": {"kind": "Node", "name": "gw-b"}});
    let node = binding_target("nb", &binding).expect("valid");
    let bound = bind(&unbound, &node, &binding, "2026-01-01T00:00:00Z").expect("bound");
    assert_eq!(bound["spec"]["nodeName"], "gw-b");
    assert_eq!(bound["metadata"]["annotations"]["a"], "b");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    let again = bind(&bound, "gw-a", &binding, "2026-01-01T00:00:01Z").expect_err("already bound");
    assert_eq!((again.code, again.reason), (409, "Conflict"));
    assert_eq!(
        again.message,
        "Operation cannot be fulfilled on pods/binding \"nb\": pod nb is already assigned to node \"gw-b\""
    );
    let mut deleting = unbound.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let e = bind(&deleting, "gw-a", &binding, "t").expect_err("deleting");
    assert!(e.message.ends_with("pod nb is being deleted, cannot be assigned to a host"), "{}", e.message);
    let e = binding_target("other", &binding).expect_err("name mismatch");
    assert_eq!((e.code, e.message.as_str()), (400, "name in URL does not match name in Binding object"));
    let e = binding_target("nb", &json!({"metadata": {"name": "nb"}, "target": {}})).expect_err("no node");
    assert_eq!((e.code, e.message.as_str()), (500, "target.name: Required value"));
}
