//! The Gateway's policy in the plan: refused requests fail before anything is reserved,
//! streams the policy stops allowing are released, namespace limits make requests wait.

use scistream_api::policy::{GatewayPolicy, NamespaceLimits, TargetPolicy};

use super::*;

fn with_policy(mut gw: Gateway, policy: GatewayPolicy) -> Gateway {
    gw.spec.policy = policy;
    gw
}

fn lan_only() -> GatewayPolicy {
    GatewayPolicy {
        data_channels: vec![scistream_api::stream_request::DataChannel::Plain],
        allow_static_targets: true,
        targets: TargetPolicy { cidrs: vec!["192.0.2.0/24".into()], ..TargetPolicy::default() },
        ..GatewayPolicy::default()
    }
}

fn denied(name: &str, o: &Observed, changes: &'static [&'static str], rule: &str) {
    let p = check(
        name,
        o,
        &Expect {
            phase: Phase::Failed,
            reason: reasons::POLICY_DENIED,
            changes,
            relays: "remove",
            events: &[],
            next: p_next(o),
        },
    );
    assert!(p.decision.ready.message.contains(rule), "{name}: {}", p.decision.ready.message);
    assert!(p.decision.ready.message.contains("Gateway dtn's policy refuses"), "{name}");
}

/// A Failed request is not looked at again but for the resync.
fn p_next(o: &Observed) -> Duration {
    plan(o).next
}

#[test]
fn requests_the_policy_refuses_fail_and_hold_nothing() {
    let plain = request(serde_json::json!({}));
    // The default policy: MutualTLS only, no static targets.
    denied(
        "Plain on a Gateway without policy",
        &observed(plain.clone(), Some(with_policy(gateway(&[]), GatewayPolicy::default()))),
        &[],
        "dataChannel Plain: it allows MutualTLS (spec.policy.dataChannels)",
    );
    let only_plain = GatewayPolicy {
        data_channels: vec![scistream_api::stream_request::DataChannel::Plain],
        ..GatewayPolicy::default()
    };
    denied(
        "static targets where the policy wants a Hello",
        &observed(plain.clone(), Some(with_policy(gateway(&[]), only_plain))),
        &[],
        "spec.policy.allowStaticTargets",
    );
    let outside = request(serde_json::json!({"targets": ["10.9.9.9:22"]}));
    denied(
        "a target outside the LAN's CIDRs",
        &observed(outside, Some(with_policy(gateway(&[]), lan_only()))),
        &[],
        "target 10.9.9.9:22: not in targets.cidrs [192.0.2.0/24]",
    );
    let metadata = request(serde_json::json!({"targets": ["169.254.169.254:80"]}));
    denied(
        "the metadata address",
        &observed(metadata, Some(with_policy(gateway(&[]), GatewayPolicy::open_but_specials()))),
        &[],
        "link-local",
    );
    let node = request(serde_json::json!({"targets": ["192.0.2.1:10250"]}));
    denied(
        "a gateway node's own address (its kubelet)",
        &observed(node, Some(with_policy(gateway(&[]), lan_only()))),
        &[],
        "an address of one of the Gateway's own nodes",
    );
    let mut by_label = lan_only();
    by_label.namespace_selector = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some([("streams".to_owned(), "yes".to_owned())].into()),
        ..Default::default()
    });
    let o = Observed {
        namespace_labels: Some([("team".to_owned(), "x".to_owned())].into()),
        ..observed(plain.clone(), Some(with_policy(gateway(&[]), by_label.clone())))
    };
    denied("a namespace the selector does not select", &o, &[], "namespace ns: its labels do not match");
    let labelled = Observed { namespace_labels: Some([("streams".to_owned(), "yes".to_owned())].into()), ..o };
    assert_eq!(plan(&labelled).changes.len(), 1, "a selected namespace reserves");
    let mut capped = lan_only();
    capped.per_namespace =
        Some(NamespaceLimits { max_streams: None, max_bandwidth: Some(Rate::from_bps(500_000_000).into()) });
    denied(
        "a rate beyond what one namespace may hold",
        &observed(plain, Some(with_policy(gateway(&[]), capped))),
        &[],
        "rate 1Gbps: more than the 500Mbps one namespace may hold",
    );
}

#[test]
fn a_hello_to_a_refused_target_releases_what_the_stream_held() {
    let mut sr = request(serde_json::json!({"targets": null, "helloKeySecretRef": {"name": "k", "key": "key"}}));
    sr.status = Some(StreamRequestStatus {
        hello_time: Some(Time(Timestamp::now())),
        prod_listeners: vec!["169.254.169.254:80".into()],
        ..Default::default()
    });
    let gw = with_policy(holding_me(&sr, &[]), lan_only());
    denied("a Hello naming the metadata address", &observed(sr, Some(gw)), &["release"], "link-local");
}

#[test]
fn a_namespace_at_its_limit_waits_and_a_failed_request_stays_denied() {
    let sr = request(serde_json::json!({}));
    let mut limited = lan_only();
    limited.per_namespace = Some(NamespaceLimits { max_streams: Some(1), max_bandwidth: None });
    // "ns/a" holds the namespace's one stream; "other/b" is another namespace's.
    let mut b = want("b", 1, 1);
    b.request = "other/b".into();
    let o = observed(sr.clone(), Some(with_policy(gateway(&[want("a", 1, 1), b]), limited)));
    let p = check(
        "the namespace's one stream is held",
        &o,
        &Expect {
            phase: Phase::Pending,
            reason: reasons::NAMESPACE_LIMIT,
            changes: &[],
            relays: "wait",
            events: &[],
            next: Duration::from_secs(30),
        },
    );
    assert!(p.decision.ready.message.contains("namespace ns holds 1 of the 1 streams"), "{}", p.decision.ready.message);
    let mut waiting = sr.clone();
    waiting.status = Some(super::status(&o, &p, None).0);
    assert!(super::waits_for_capacity(&waiting), "woken when capacity is freed");

    let mut failed = sr;
    let o = observed(failed.clone(), Some(with_policy(gateway(&[]), GatewayPolicy::default())));
    failed.status = Some(super::status(&o, &plan(&o), None).0);
    assert_eq!(super::failed(&failed).map(|(r, _)| r), Some(reasons::POLICY_DENIED));
}

#[test]
fn static_targets_are_those_no_authenticated_party_sent() {
    let only_plain = GatewayPolicy {
        data_channels: vec![scistream_api::stream_request::DataChannel::Plain],
        ..GatewayPolicy::default()
    };
    let gw = || Some(with_policy(gateway(&[]), only_plain.clone()));
    // A Hello key does not make spec.targets any less static: Hello is not awaited then.
    let keyed = request(serde_json::json!({"helloKeySecretRef": {"name": "k", "key": "key"}}));
    assert_eq!(plan(&observed(keyed.clone(), gw())).decision.ready.reason, reasons::POLICY_DENIED);
    // Targets a Hello set (a producer's second Hello retargets through spec.targets).
    let mut helloed = keyed;
    helloed.status = Some(StreamRequestStatus { hello_time: Some(Time(Timestamp::now())), ..Default::default() });
    assert_ne!(plan(&observed(helloed, gw())).decision.ready.reason, reasons::POLICY_DENIED);
    // A SciStream 1.x stream's `update`, authenticated by its creator's credential.
    let mut legacy = request(serde_json::json!({}));
    legacy.metadata.annotations = Some([(keys::ANNOTATION_LEGACY_CREDENTIAL.to_owned(), "ab".to_owned())].into());
    assert_ne!(plan(&observed(legacy, gw())).decision.ready.reason, reasons::POLICY_DENIED);
}

#[test]
fn a_second_request_with_a_stream_id_and_role_fails_naming_the_first() {
    let sr = request(serde_json::json!({}));
    let o = Observed { duplicate_of: Some("other/first".into()), ..observed(sr.clone(), Some(gateway(&[]))) };
    let p = check(
        "a duplicate",
        &o,
        &Expect {
            phase: Phase::Failed,
            reason: reasons::DUPLICATE_STREAM_ID,
            changes: &[],
            relays: "remove",
            events: &[],
            next: p_next(&o),
        },
    );
    let message = &p.decision.ready.message;
    assert!(message.contains("already used by the Producer side other/first"), "{message}");
    let mut failed = sr;
    failed.status = Some(super::status(&o, &p, None).0);
    assert!(super::is_duplicate(&failed), "it stays a duplicate, and hides no later request");
    // A duplicate that already held capacity (its twin came first in the cache) releases it.
    let held = holding_me(&failed, &[]);
    let mut twin = failed.clone();
    twin.status = None;
    let o = Observed { duplicate_of: Some("other/first".into()), ..observed(twin, Some(held)) };
    assert_eq!(plan(&o).changes.iter().map(kind).collect::<Vec<_>>(), ["release"]);
}

#[test]
fn a_request_its_gateway_could_never_hold_fails_naming_the_limit() {
    // The fixture Gateway: 2 nodes of 2 ports, 10 Gbps.
    for (spec, why) in [
        (
            serde_json::json!({"rate": "20Gbps"}),
            "rate 20Gbps is more than Gateway dtn declares in all (spec.bandwidth 10Gbps)",
        ),
        (
            serde_json::json!({"numConnections": 5}),
            "5 connections and a health listener on each node used need more ports than Gateway dtn has: 2 per node (spec.portRange 5100-5101) on 2 node(s)",
        ),
    ] {
        let o = observed(request(spec.clone()), Some(gateway(&[])));
        let p = plan(&o);
        assert_eq!(p.decision.phase, Phase::Failed, "{spec}: {:?}", p.decision.ready);
        assert_eq!(p.decision.ready.reason, reasons::EXCEEDS_GATEWAY, "{spec}");
        assert!(p.decision.ready.message.contains(why), "{spec}: {}", p.decision.ready.message);
        assert!(p.changes.is_empty(), "{spec}: nothing reserved");
    }
    // What fits an empty Gateway but not this one now waits, as before.
    let o = observed(request(serde_json::json!({"numConnections": 2})), Some(gateway(&[want("a", 1, 1)])));
    assert_eq!(plan(&o).decision.ready.reason, reasons::PORTS_EXHAUSTED);
    let o = observed(request(serde_json::json!({"numConnections": 2, "rate": "10Gbps"})), Some(gateway(&[])));
    assert_eq!(plan(&o).changes.len(), 1, "the whole Gateway is still a fit");
    // A Gateway without nodes yet may get some: connections wait for them; a rate beyond the
    // declared bandwidth fails all the same.
    let mut bare = gateway(&[]);
    bare.status = None;
    let o = observed(request(serde_json::json!({"numConnections": 5})), Some(bare.clone()));
    assert_eq!(plan(&o).decision.phase, Phase::Pending);
    let o = observed(request(serde_json::json!({"rate": "20Gbps"})), Some(bare));
    assert_eq!(plan(&o).decision.ready.reason, reasons::EXCEEDS_GATEWAY);
}
