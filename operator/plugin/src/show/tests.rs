//! Snapshot tests of the read commands' tables, rendered from the fixed objects of
//! `fixtures.rs`. The snapshots are in `src/show/snapshots/`; after an intended change,
//! regenerate them with `INSTA_UPDATE=always cargo nextest run -p scistream-plugin --lib`
//! (or `cargo insta review`) and read the diff before committing.

use super::{describe, fixtures::*, gateway_table, join, table};

fn both_sides() -> Vec<(String, scistream_api::StreamRequest)> {
    vec![
        ("alcf".to_owned(), consumer_degraded()),
        ("aps".to_owned(), producer_ready()),
        ("aps".to_owned(), producer_pending()),
    ]
}

#[test]
fn list_joins_both_sides_by_stream_id() {
    let streams = join(&both_sides());
    assert_eq!(streams.len(), 2, "two streams, the first with both sides");
    assert_eq!(streams[0].producer.as_ref().unwrap().context, "aps");
    assert_eq!(streams[0].consumer.as_ref().unwrap().context, "alcf");
    assert!(streams[1].consumer.is_none());
    insta::assert_snapshot!("list_table", table(&streams, false, true));
    insta::assert_snapshot!("list_wide", table(&streams, true, true));
}

#[test]
fn the_rate_column_shows_what_is_held_when_a_change_did_not_fit() {
    let mut raised = producer_ready();
    let asked = raised.spec.rate.text().to_owned();
    let streams = join(&[("aps".to_owned(), raised.clone())]);
    assert_eq!(streams[0].rate, asked, "no grantedRate: the rate asked for");
    raised.spec.rate = "95Gbps".parse::<scistream_api::Rate>().unwrap().into();
    raised.status.as_mut().unwrap().granted_rate = Some("5Gbps".into());
    let streams = join(&[("aps".to_owned(), raised)]);
    assert_eq!(streams[0].rate, "5Gbps (asked 95Gbps)");
}

#[test]
fn get_shows_one_stream() {
    let streams = join(&[("aps".to_owned(), producer_ready()), ("alcf".to_owned(), consumer_degraded())]);
    let text = table(&streams, false, true);
    assert!(text.contains("192.0.2.1:5100,192.0.2.1:5101,192.0.2.2:5102"), "consumer listeners: {text}");
    insta::assert_snapshot!("get_table", text);
    insta::assert_snapshot!("get_wide", table(&streams, true, true));
}

#[test]
fn gateways_table() {
    let gws = [
        gateway("dtn", &[("gw-a", true), ("gw-b", true)], 1, ("True", "GatewayReady", "2 nodes ready")),
        gateway("dtn-2", &[("gw-c", false)], 0, ("False", "NoReadyNodes", "no Ready node matches")),
    ];
    insta::assert_snapshot!("gateways_table", gateway_table(&gws, true));
}

fn consumer_facts() -> describe::SideFacts {
    let request = consumer_degraded();
    let events = vec![
        event(
            "Pod",
            &format!("s2ds-{ID}-consumer-9f1e4959"),
            "Warning",
            "BackOff",
            "2026-03-02T10:15:25Z",
            "Back-off restarting failed container relay",
            Some(4),
        ),
        event("StreamRequest", "run-42", "Normal", "Reserved", "2026-03-02T10:14:03Z", "3 ports on gw-a,gw-b", None),
        event(
            "StreamRequest",
            "run-42",
            "Warning",
            "PodFailed",
            "2026-03-02T10:15:20Z",
            "relay on gw-b is not ready; recreating",
            None,
        ),
        event(
            "StreamRequest",
            "run-42",
            "Normal",
            "HelloReceived",
            "2026-03-02T10:14:10Z",
            "consumer Hello from 10.20.0.8",
            None,
        ),
    ];
    let pods = vec![
        relay_pod(ID, "consumer", "gw-b", &[5102], 3, Some("CrashLoopBackOff")),
        relay_pod(ID, "consumer", "gw-a", &[5100, 5101], 0, None),
    ];
    describe::SideFacts {
        context: "alcf".to_owned(),
        request,
        gateway: Ok(gateway("dtn", &[("gw-a", true), ("gw-b", true)], 1, ("True", "GatewayReady", "2 nodes ready"))),
        pods: Ok(pods),
        events,
    }
}

fn producer_facts() -> describe::SideFacts {
    let mut draining = relay_pod(ID, "producer", "gw-c", &[5104], 0, None);
    draining.metadata.deletion_timestamp =
        Some(serde_json::from_value(serde_json::json!("2026-03-02T10:15:00Z")).unwrap());
    describe::SideFacts {
        context: "aps".to_owned(),
        request: producer_ready(),
        gateway: Ok(gateway("dtn", &[("gw-a", true), ("gw-b", false)], 1, ("True", "GatewayReady", "1 node ready"))),
        // gw-b's pod is gone (the node went NotReady); a pod of an earlier node drains.
        pods: Ok(vec![relay_pod(ID, "producer", "gw-a", &[5100, 5101], 0, None), draining]),
        events: vec![event("StreamRequest", "run-42", "Normal", "Ready", "2026-03-02T10:14:11Z", "streaming", None)],
    }
}

#[test]
fn describe_tells_both_sides_relays_per_node() {
    let report = describe::DescribeReport {
        sides: vec![describe::report(&producer_facts()), describe::report(&consumer_facts())],
        notes: vec![],
    };
    let c = &report.sides[1];
    // Listeners are matched to nodes by position in the allocations.
    assert_eq!(c.relays[0].node, "gw-a");
    assert_eq!(c.relays[0].listeners, ["192.0.2.1:5100", "192.0.2.1:5101"]);
    assert_eq!(c.relays[1].node, "gw-b");
    assert_eq!(c.relays[1].listeners, ["192.0.2.2:5102"]);
    assert_eq!((c.relays[1].restarts, c.relays[1].state.as_deref()), (3, Some("CrashLoopBackOff")));
    assert!(c.relays[0].ready && !c.relays[1].ready);
    // Events oldest first, from the request and its pods.
    let reasons: Vec<&str> = c.events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["Reserved", "HelloReceived", "PodFailed", "BackOff"]);
    assert_eq!(c.events[3].count, 4);
    let p = &report.sides[0];
    assert_eq!(p.relays[1].phase, "Missing", "gw-b is reserved but has no pod");
    assert_eq!(p.relays[1].node_ready, Some(false));
    assert_eq!((p.relays[2].phase.as_str(), p.relays[2].reserved), ("Terminating", false));
    assert_eq!(p.transfer.as_ref().unwrap().bytes, 1_073_741_824);
    let text = describe::render(&report);
    assert!(text.contains("1073741824 (1.00 GiB), now 4.3Gbps"), "{text}");
    insta::assert_snapshot!("describe", text);
    insta::assert_json_snapshot!("describe_json", report.sides[1].relays);
}

#[test]
fn describe_says_what_it_could_not_read() {
    let mut facts = producer_facts();
    facts.gateway = Err("cannot read Gateway dtn in aps: gateways.scistream.io \"dtn\" is forbidden".to_owned());
    facts.pods = Err(facts.gateway.clone().unwrap_err());
    facts.events.clear();
    let mut pending = consumer_facts();
    pending.request = producer_pending();
    pending.context = "aps".to_owned();
    pending.pods = Ok(vec![]);
    pending.events.clear();
    let report = describe::DescribeReport {
        sides: vec![describe::report(&facts), describe::report(&pending)],
        notes: vec!["the other side (alcf/science/run-43) was not found or its cluster is unreachable".to_owned()],
    };
    let text = describe::render(&report);
    assert!(text.contains("cannot show: cannot read Gateway dtn"), "{text}");
    // Without the Gateway the reserved nodes are still listed, from the request's status.
    assert_eq!(report.sides[0].relays.len(), 2);
    insta::assert_snapshot!("describe_partial", text);
}

/// A Gateway's shared relay pod on `node` (no stream's labels: it serves them all).
fn shared_relay(node: &str) -> k8s_openapi::api::core::v1::Pod {
    let mut pod = relay_pod(ID, "producer", node, &[5119], 1, None);
    pod.metadata.name = Some(format!("s2ds-node-dtn-{node}"));
    pod.metadata.labels = Some(
        [
            (scistream_api::keys::LABEL_COMPONENT, scistream_api::keys::COMPONENT_SHARED_RELAY),
            (scistream_api::keys::LABEL_GATEWAY, "dtn"),
            (scistream_api::keys::LABEL_NODE, node),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into(),
    );
    pod
}

#[test]
fn describe_shows_the_shared_relays_of_the_nodes_a_stream_holds_ports_on() {
    let mut facts = producer_facts();
    let mut gw = gateway("dtn", &[("gw-a", true), ("gw-b", false)], 1, ("True", "GatewayReady", "1 node ready"));
    gw.spec.s2ds = Some(scistream_api::S2dsSettings {
        relay_model: scistream_api::RelayModel::Shared,
        ..scistream_api::S2dsSettings::DEFAULT
    });
    facts.gateway = Ok(gw);
    // The shared relay of another node serves other streams: not a row of this one.
    facts.pods = Ok(vec![shared_relay("gw-a"), shared_relay("gw-c")]);
    let side = describe::report(&facts);
    assert_eq!(side.relay_model, Some(scistream_api::RelayModel::Shared));
    let rows: Vec<(&str, Option<&str>, &str)> =
        side.relays.iter().map(|r| (r.node.as_str(), r.pod.as_deref(), r.phase.as_str())).collect();
    assert_eq!(rows, [("gw-a", Some("s2ds-node-dtn-gw-a"), "Running"), ("gw-b", None, "Missing")]);
    assert_eq!(side.relays[0].ports, [5100, 5101], "the stream's ports on the node, not the relay's metrics port");
    assert_eq!(side.relays[0].restarts, 1);
    let text = describe::render(&describe::DescribeReport { sides: vec![side], notes: vec![] });
    assert!(text.contains("Gateway:     dtn (shared relays in namespace scistream-gateway)"), "{text}");
    assert!(text.contains("Relays (each node's shared relay, serving every stream of the Gateway there"), "{text}");
    assert!(!text.contains("gw-c"), "{text}");
}

#[test]
fn human_bytes_picks_the_unit() {
    assert_eq!(describe::human_bytes(0), "0 B");
    assert_eq!(describe::human_bytes(1023), "1023 B");
    assert_eq!(describe::human_bytes(1536), "1536 (1.50 KiB)");
    assert_eq!(describe::human_bytes(5 << 40), "5497558138880 (5.00 TiB)");
}

#[test]
fn only_the_latest_events_are_kept() {
    let many: Vec<_> = (0..30)
        .map(|i| {
            event("StreamRequest", "s", "Normal", &format!("R{i:02}"), &format!("2026-03-02T10:00:{i:02}Z"), "m", None)
        })
        .collect();
    let kept = describe::events(&many);
    assert_eq!(kept.len(), describe::MAX_EVENTS);
    assert_eq!(kept[0].reason, "R10");
    assert_eq!(kept[kept.len() - 1].reason, "R29");
}
