//! Fixed, realistic objects for the snapshot tests of the read commands: what the operator,
//! the stand-in kubelet and the event recorder write for a stream between two facilities.

use k8s_openapi::api::core::v1::{Event, Pod};
use scistream_api::{Gateway, StreamRequest};
use serde_json::{Value, json};

pub const ID: &str = "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d";
pub const ID2: &str = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a";

fn condition(type_: &str, status: &str, reason: &str, at: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "lastTransitionTime": at, "message": message,
           "observedGeneration": 2})
}

/// A StreamRequest as the plugin creates it and the operator reports it.
pub fn request(name: &str, id: &str, role: &str, peer: &str, status: Value) -> StreamRequest {
    serde_json::from_value(json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "metadata": {"name": name, "namespace": "science", "generation": 2,
                     "annotations": {"scistream.io/peer-context": peer, "scistream.io/peer-namespace": "science"}},
        "spec": {"streamId": id, "role": role, "gateway": "dtn", "numConnections": 3, "rate": "5Gbps",
                 "helloKeySecretRef": {"name": format!("{name}-hello"), "key": "key"}},
        "status": status
    }))
    .unwrap()
}

/// The producer side of `run-42` at aps: Ready, three listeners on two nodes, bytes flowing.
pub fn producer_ready() -> StreamRequest {
    request(
        "run-42",
        ID,
        "Producer",
        "alcf",
        json!({
            "phase": "Ready",
            "listeners": ["198.51.100.1:5100", "198.51.100.1:5101", "198.51.100.2:5100"],
            "prodListeners": ["10.10.0.5:9000", "10.10.0.6:9000"],
            "allocations": [{"node": "gw-a", "ports": [5100, 5101], "metricsPort": 5119},
                            {"node": "gw-b", "ports": [5100], "metricsPort": 5119}],
            "transfer": {"bytes": 1_073_741_824i64, "throughput": "4.3Gbps", "sampledTime": "2026-03-02T10:15:30Z"},
            "reservedTime": "2026-03-02T10:14:02Z", "helloTime": "2026-03-02T10:14:09Z", "readyTime": "2026-03-02T10:14:11Z",
            "conditions": [
                condition("Reserved", "True", "Reserved", "2026-03-02T10:14:02Z", "3 ports on gw-a,gw-b; 5Gbps of 20Gbps"),
                condition("HelloReceived", "True", "HelloReceived", "2026-03-02T10:14:09Z", "2 producer listeners"),
                condition("DataPathReady", "True", "PodsReady", "2026-03-02T10:14:11Z", "2/2 relays ready"),
                condition("Ready", "True", "PodsReady", "2026-03-02T10:14:11Z", "streaming through 3 listeners"),
            ],
            "observedGeneration": 2
        }),
    )
}

/// The consumer side of `run-42` at alcf: a relay restarting on gw-b.
pub fn consumer_degraded() -> StreamRequest {
    let mut c = request(
        "run-42",
        ID,
        "Consumer",
        "aps",
        json!({
            "phase": "Provisioning",
            "listeners": ["192.0.2.1:5100", "192.0.2.1:5101", "192.0.2.2:5102"],
            "allocations": [{"node": "gw-a", "ports": [5100, 5101], "metricsPort": 5119},
                            {"node": "gw-b", "ports": [5102], "metricsPort": 5118}],
            "transfer": {"bytes": 1_073_610_752i64, "throughput": "4.1Gbps", "sampledTime": "2026-03-02T10:15:31Z"},
            "conditions": [
                condition("Reserved", "True", "Reserved", "2026-03-02T10:14:03Z", "3 ports on gw-a,gw-b; 5Gbps of 40Gbps"),
                condition("HelloReceived", "True", "HelloReceived", "2026-03-02T10:14:10Z", "consumer Hello"),
                condition("DataPathReady", "False", "PodFailed", "2026-03-02T10:15:20Z",
                          "relay on gw-b is not ready (CrashLoopBackOff); recreating"),
                condition("Ready", "False", "PodFailed", "2026-03-02T10:15:20Z", "1/2 relays ready"),
            ],
            "observedGeneration": 2
        }),
    );
    c.spec.remote_listeners = Some(producer_ready().status.unwrap().listeners);
    c
}

/// A second stream, still waiting for gateway ports on the producer side (no consumer yet).
pub fn producer_pending() -> StreamRequest {
    request(
        "run-43",
        ID2,
        "Producer",
        "alcf",
        json!({
            "phase": "Pending",
            "conditions": [
                condition("Reserved", "False", "PortsExhausted", "2026-03-02T10:16:00Z",
                          "3 ports wanted, 1 free on gw-a,gw-b; waiting for a stream to end"),
                condition("Ready", "False", "PortsExhausted", "2026-03-02T10:16:00Z", "waiting for gateway ports"),
            ]
        }),
    )
}

/// A relay pod as the operator makes it and a kubelet reports it.
pub fn relay_pod(id: &str, role: &str, node: &str, ports: &[i32], restarts: i32, waiting: Option<&str>) -> Pod {
    let ready = waiting.is_none();
    let state = match waiting {
        Some(reason) => json!({"waiting": {"reason": reason, "message": "back-off 40s restarting failed container"}}),
        None => json!({"running": {"startedAt": "2026-03-02T10:14:10Z"}}),
    };
    let hash = if node == "gw-a" { "9c1e44a0" } else { "9f1e4959" };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("s2ds-{id}-{role}-{hash}"), "namespace": "scistream-gateway",
                     "labels": {"scistream.io/stream-id": id, "scistream.io/role": role, "scistream.io/node": node,
                                "scistream.io/gateway": "dtn"}},
        "spec": {"nodeName": node, "hostNetwork": true, "containers": [{"name": "relay", "image": "s2ds:0.1",
                 "ports": ports.iter().enumerate().map(|(i, p)| json!({"name": format!("l{i}"), "containerPort": p,
                                                                         "hostPort": p, "protocol": "TCP"})).collect::<Vec<_>>()}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                   "containerStatuses": [{"name": "relay", "ready": ready, "restartCount": restarts, "image": "s2ds:0.1",
                                          "imageID": "", "state": state}]}
    }))
    .unwrap()
}

/// An event as kube's recorder writes it (events.k8s.io, seen through the core API).
pub fn event(kind: &str, name: &str, type_: &str, reason: &str, at: &str, message: &str, count: Option<i32>) -> Event {
    let mut e = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{reason}"), "namespace": "science", "creationTimestamp": at},
        "involvedObject": {"kind": kind, "name": name, "namespace": "science"},
        "type": type_, "reason": reason, "message": message, "eventTime": format!("{}.000000Z", at.trim_end_matches('Z')),
        "reportingComponent": "scistream-operator", "reportingInstance": "operator-0"
    });
    if let Some(count) = count {
        e["series"] = json!({"count": count, "lastObservedTime": format!("{}.000000Z", at.trim_end_matches('Z'))});
    }
    serde_json::from_value(e).unwrap()
}

/// A gateway of two nodes, as the operator reports it.
pub fn gateway(name: &str, ready_nodes: &[(&str, bool)], streams: i32, ready: (&str, &str, &str)) -> Gateway {
    let nodes: Vec<Value> = ready_nodes
        .iter()
        .enumerate()
        .map(|(i, (n, r))| {
            json!({"name": n, "ready": r, "wanAddress": format!("198.51.100.{}", i + 1),
                   "lanAddress": format!("192.0.2.{}", i + 1), "portsInUse": if *r { 2 } else { 0 }})
        })
        .collect();
    let count = ready_nodes.iter().filter(|(_, r)| *r).count();
    serde_json::from_value(json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"scistream.io/gateway": name}, "bandwidth": "20Gbps",
                 "podNamespace": "scistream-gateway", "portRange": {"start": 5100, "end": 5119}},
        "status": {"nodes": nodes, "readyNodes": count, "portsInUse": 3, "portsTotal": 40,
                   "portsSummary": "3/40", "bandwidthPromisedBps": 5_000_000_000i64, "bandwidthSummary": "5Gbps/20Gbps",
                   "streams": streams,
                   "conditions": [{"type": "Ready", "status": ready.0, "reason": ready.1, "message": ready.2,
                                   "lastTransitionTime": "2026-03-02T09:00:00Z"}]}
    }))
    .unwrap()
}
