use super::*;
use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeSpec, NodeStatus};
use scistream_api::{NodeAllocation, Reservation};

fn spec() -> GatewaySpec {
    serde_json::from_value(serde_json::json!({
        "nodeSelector": {"gw": "true"}, "bandwidth": "10Gbps", "podNamespace": "gw",
        "portRange": {"start": 5100, "end": 5109},
        "tolerations": [{"key": "dtn", "operator": "Exists", "effect": "NoSchedule"}]
    }))
    .unwrap()
}

fn node(name: &str, ready: bool, annotations: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.to_owned());
    n.metadata.annotations = Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
    n.spec = Some(NodeSpec { taints: Some(taints), ..NodeSpec::default() });
    n.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..NodeCondition::default()
        }]),
        addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: "192.0.2.9".into() }]),
        ..NodeStatus::default()
    });
    n
}

#[test]
fn addresses_come_from_annotations_then_node_addresses() {
    let s = spec();
    let n = node("a", true, &[(keys::ANNOTATION_WAN_ADDRESS, "198.51.100.1")], vec![]);
    let st = node_status(&s, &n);
    assert_eq!(st.wan_address.as_deref(), Some("198.51.100.1"));
    assert_eq!(st.lan_address.as_deref(), Some("192.0.2.9"));
    assert!(st.ready);
    let no_wan = node_status(&s, &node("b", true, &[], vec![]));
    assert!(!no_wan.ready);
    let (ok, reason, message) = readiness(&s, &[(node("b", true, &[], vec![]), no_wan)], None, None);
    assert!(!ok);
    assert_eq!(reason, reasons::NO_ADDRESS);
    assert!(message.contains("scistream.io/wan-address"), "{message}");
}

#[test]
fn untolerated_taints_and_not_ready_nodes_are_unusable() {
    let s = spec();
    let wan = [(keys::ANNOTATION_WAN_ADDRESS, "198.51.100.1")];
    let tolerated = Taint { key: "dtn".into(), effect: "NoSchedule".into(), ..Taint::default() };
    let other = Taint { key: "gpu".into(), effect: "NoExecute".into(), ..Taint::default() };
    assert!(node_status(&s, &node("a", true, &wan, vec![tolerated])).ready);
    assert!(!node_status(&s, &node("a", true, &wan, vec![other])).ready);
    assert!(!node_status(&s, &node("a", false, &wan, vec![])).ready);
}

#[test]
fn tolerations_follow_the_scheduler_rules() {
    let taint = Taint { key: "k".into(), value: Some("v".into()), effect: "NoSchedule".into(), ..Taint::default() };
    let equal = Toleration { key: Some("k".into()), value: Some("v".into()), ..Toleration::default() };
    let wrong_value = Toleration { key: Some("k".into()), value: Some("w".into()), ..Toleration::default() };
    let wildcard = Toleration { operator: Some("Exists".into()), ..Toleration::default() };
    let other_effect = Toleration { effect: Some("NoExecute".into()), ..equal.clone() };
    assert!(tolerates(&equal, &taint));
    assert!(!tolerates(&wrong_value, &taint));
    assert!(tolerates(&wildcard, &taint));
    assert!(!tolerates(&other_effect, &taint));
}

#[test]
fn empty_selector_match_and_namespace_problems_are_explained() {
    let s = spec();
    let (ok, reason, message) = readiness(&s, &[], None, None);
    assert!(!ok && reason == reasons::NO_READY_NODES && message.contains("gw=true"), "{message}");
    let problem = (reasons::NAMESPACE_NOT_PRIVILEGED, "namespace gw does not exist".to_owned());
    let (ok, reason, _) = readiness(&s, &[], Some(problem), None);
    assert!(!ok && reason == reasons::NAMESPACE_NOT_PRIVILEGED);
    let problem = (reasons::NAMESPACE_NOT_PERMITTED, "not a gateway namespace".to_owned());
    let (ok, reason, message) = readiness(&s, &[], Some(problem), Some("overlaps".into()));
    assert!(!ok && reason == reasons::NAMESPACE_NOT_PERMITTED && message == "not a gateway namespace");
}

#[test]
fn summaries_count_ports_bandwidth_and_streams() {
    let s = spec();
    let held = vec![Reservation {
        request: "ns/x".into(),
        uid: "u".into(),
        bandwidth_bps: 2_500_000_000,
        nodes: vec![NodeAllocation { node: "a".into(), ports: vec![5100, 5101], metrics_port: Some(5102) }],
        ..Default::default()
    }];
    let mut st = GatewayStatus {
        nodes: vec![
            GatewayNodeStatus { name: "a".into(), ready: true, ..Default::default() },
            GatewayNodeStatus { name: "b".into(), ready: false, ..Default::default() },
        ],
        ..Default::default()
    };
    summarize(&s, &held, &mut st);
    assert_eq!((st.ready_nodes, st.ports_in_use, st.ports_total, st.streams), (1, 3, 10, 1));
    assert_eq!(st.nodes[0].ports_in_use, 3);
    assert_eq!(st.ports_summary.as_deref(), Some("3/10"));
    assert_eq!(st.bandwidth_summary.as_deref(), Some("2.5Gbps/10Gbps"));
    // Shared relays keep the range's last port for their metrics: streams have one fewer.
    let mut shared = s.clone();
    shared.s2ds = Some(scistream_api::S2dsSettings {
        relay_model: scistream_api::RelayModel::Shared,
        ..scistream_api::S2dsSettings::DEFAULT
    });
    summarize(&shared, &held, &mut st);
    assert_eq!((st.ports_in_use, st.ports_total), (3, 9));
}

#[test]
fn a_gateway_no_stream_could_use_says_so() {
    let mut s = spec();
    s.port_range = scistream_api::PortRange { start: 5100, end: 5100 };
    // s2ds relays need a health listener beside the data listener on each node.
    s.implementation = scistream_api::Implementation::S2ds;
    let (ok, reason, message) = readiness(&s, &[], None, None);
    assert!(!ok && reason == reasons::INVALID_SPEC, "{reason}: {message}");
    assert!(
        message.contains("spec.portRange 5100-5100 holds 1 port per node") && message.contains("widen"),
        "{message}"
    );
    s.port_range.end = 5101;
    let (_, reason, _) = readiness(&s, &[], None, None);
    assert_eq!(reason, reasons::NO_READY_NODES, "two ports serve a one-connection stream");
    // Shared relays need no health listener per stream, but keep a port for their metrics.
    s.s2ds = Some(scistream_api::S2dsSettings {
        relay_model: scistream_api::RelayModel::Shared,
        ..scistream_api::S2dsSettings::DEFAULT
    });
    s.port_range.end = 5100;
    let (ok, reason, message) = readiness(&s, &[], None, None);
    assert!(!ok && reason == reasons::INVALID_SPEC, "{reason}: {message}");
    assert!(message.contains("the shared relays' metrics port"), "{message}");
    s.port_range.end = 5101;
    assert_eq!(readiness(&s, &[], None, None).1, reasons::NO_READY_NODES);
}

fn claim(name: &str, created: &str, range: (i32, i32), nodes: &[&str]) -> Claim {
    Claim {
        name: name.to_owned(),
        created: Some(created.parse().unwrap()),
        range: PortRange { start: range.0, end: range.1 },
        nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
    }
}

#[test]
fn one_owner_per_node_port_the_older_gateway() {
    let old = claim("dtn", "2026-12-01T00:00:00Z", (5100, 5200), &["gw-a", "gw-b"]);
    struct Case {
        name: &'static str,
        me: Claim,
        others: Vec<Claim>,
        conflict: Option<&'static str>,
    }
    let cases = [
        Case {
            name: "overlapping range on a shared node: the newer is refused, naming the older and the ports",
            me: claim("dtn-2", "2026-12-02T00:00:00Z", (5150, 5300), &["gw-b", "gw-c"]),
            others: vec![old.clone()],
            conflict: Some("spec.portRange 5150-5300 overlaps Gateway dtn's 5100-5200 (ports 5150-5200) on node gw-b"),
        },
        Case {
            name: "the older one keeps serving",
            me: old.clone(),
            others: vec![claim("dtn-2", "2026-12-02T00:00:00Z", (5150, 5300), &["gw-b"])],
            conflict: None,
        },
        Case {
            name: "ranges that only touch at different ports do not conflict",
            me: claim("dtn-2", "2026-12-02T00:00:00Z", (5201, 5300), &["gw-a"]),
            others: vec![old.clone()],
            conflict: None,
        },
        Case {
            name: "the same range on other nodes does not conflict",
            me: claim("dtn-2", "2026-12-02T00:00:00Z", (5100, 5200), &["gw-c"]),
            others: vec![old.clone()],
            conflict: None,
        },
        Case {
            name: "one shared port is a conflict",
            me: claim("dtn-2", "2026-12-02T00:00:00Z", (5200, 5300), &["gw-a", "gw-b"]),
            others: vec![old.clone()],
            conflict: Some("(ports 5200-5200) on nodes gw-a, gw-b"),
        },
        Case {
            name: "created in the same second: the name decides",
            me: claim("dtn-b", "2026-12-01T00:00:00Z", (5100, 5200), &["gw-a"]),
            others: vec![claim("dtn-a", "2026-12-01T00:00:00Z", (5100, 5200), &["gw-a"])],
            conflict: Some("overlaps Gateway dtn-a's"),
        },
        Case {
            name: "of several older owners, the oldest is named",
            me: claim("dtn-3", "2026-12-03T00:00:00Z", (5100, 5200), &["gw-a"]),
            others: vec![claim("dtn-2", "2026-12-02T00:00:00Z", (5100, 5200), &["gw-a"]), old.clone()],
            conflict: Some("overlaps Gateway dtn's"),
        },
    ];
    for case in cases {
        let got = conflict(&case.me, &case.others);
        match (case.conflict, &got) {
            (None, None) => {}
            (Some(words), Some(message)) => assert!(message.contains(words), "{}: {message}", case.name),
            _ => panic!("{}: got {got:?}", case.name),
        }
    }
    // A conflicting Gateway is not Ready, with reason Conflict and the message.
    let (ok, reason, message) = readiness(&spec(), &[], None, Some("overlaps Gateway dtn's".into()));
    assert!(!ok && reason == reasons::CONFLICT && message.contains("dtn"), "{reason:?} {message}");
}
