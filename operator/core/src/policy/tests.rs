use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use scistream_api::{
    Endpoint, Rate, Reservation,
    policy::{GatewayPolicy, NamespaceLimits, SpecialTarget, TargetPolicy},
    stream_request::DataChannel,
};

use super::*;

fn ep(s: &str) -> Endpoint {
    s.parse().expect("endpoint")
}

const NODES: [IpAddr; 2] = [IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10))];

fn gw(policy: &GatewayPolicy) -> GatewayRef<'_> {
    GatewayRef { name: "dtn", policy, node_addresses: &NODES }
}

fn ask<'a>(labels: Option<&'a BTreeMap<String, String>>, channel: DataChannel, targets: &'a [Endpoint]) -> Ask<'a> {
    Ask { namespace: "beamline", namespace_labels: labels, data_channel: channel, static_targets: false, targets }
}

fn lan() -> GatewayPolicy {
    GatewayPolicy {
        targets: TargetPolicy {
            cidrs: vec!["10.20.0.0/16".into(), "2001:db8:20::/48".into()],
            dns_suffixes: vec![".aps.example.org".into()],
            allow: vec![],
        },
        ..GatewayPolicy::default()
    }
}

#[test]
fn targets_by_default_anywhere_but_loopback_link_local_and_the_gateway_nodes() {
    let p = GatewayPolicy::default();
    let table: &[(&str, Option<&str>)] = &[
        ("10.1.2.3:7000", None),
        ("203.0.113.9:7000", None),
        ("daq.aps.example.org:7000", None),
        ("127.0.0.1:22", Some("loopback")),
        ("127.8.9.10:22", Some("loopback")),
        ("[::1]:22", Some("loopback")),
        ("[::ffff:127.0.0.1]:22", Some("loopback")),
        ("localhost:22", Some("loopback name")),
        ("LocalHost:22", Some("loopback name")),
        ("api.localhost:22", Some("loopback name")),
        ("169.254.169.254:80", Some("link-local")),
        ("[::ffff:169.254.169.254]:80", Some("link-local")),
        ("[fe80::1]:80", Some("link-local")),
        ("198.51.100.10:10250", Some("Gateway's own nodes")),
        ("10.0.0.10:10250", Some("Gateway's own nodes")),
        ("0.0.0.0:80", Some("not a unicast")),
        ("[::]:80", Some("not a unicast")),
        ("224.0.0.1:80", Some("not a unicast")),
        ("255.255.255.255:80", Some("not a unicast")),
    ];
    for (target, refused) in table {
        let r = gw(&p).check_target(&ep(target));
        match refused {
            None => assert_eq!(r, Ok(()), "{target}"),
            Some(why) => {
                let d = r.expect_err(target);
                assert_eq!(d.rule, Rule::Target, "{target}");
                assert!(d.message.contains(why), "{target}: {}", d.message);
                assert!(
                    d.message.contains("Gateway dtn's policy refuses") && d.message.contains("spec.policy.targets")
                );
            }
        }
    }
}

#[test]
fn special_targets_allowed_one_kind_at_a_time() {
    for (kind, target) in [
        (SpecialTarget::Loopback, "127.0.0.1:5000"),
        (SpecialTarget::LinkLocal, "169.254.169.254:80"),
        (SpecialTarget::GatewayNodes, "198.51.100.10:9000"),
    ] {
        let mut p = GatewayPolicy::default();
        p.targets.allow = vec![kind];
        assert_eq!(gw(&p).check_target(&ep(target)), Ok(()), "{kind:?}");
        let others = ["127.0.0.1:5000", "169.254.169.254:80", "198.51.100.10:9000"];
        for other in others.iter().filter(|o| **o != target) {
            assert!(gw(&p).check_target(&ep(other)).is_err(), "{kind:?} does not allow {other}");
        }
    }
    // Never: unspecified and multicast, whatever is allowed.
    let open = GatewayPolicy::open();
    assert!(gw(&open).check_target(&ep("0.0.0.0:80")).is_err());
    assert_eq!(gw(&open).check_target(&ep("127.0.0.1:80")), Ok(()));
}

#[test]
fn targets_restricted_to_the_facility_lan() {
    let p = lan();
    let table: &[(&str, bool)] = &[
        ("10.20.0.1:7000", true),
        ("10.20.255.254:7000", true),
        ("10.21.0.1:7000", false),
        ("[2001:db8:20::5]:7000", true),
        ("[2001:db8:21::5]:7000", false),
        ("daq.aps.example.org:7000", true),
        ("DAQ.APS.Example.org:7000", true),
        ("aps.example.org:7000", true),
        ("daq.evil-aps.example.org:7000", false),
        ("daqaps.example.org:7000", false),
        ("aps.example.org.evil.net:7000", false),
        ("203.0.113.9:7000", false),
        // In an allowed range, still refused: the gateway node itself.
        ("10.0.0.10:7000", false),
    ];
    for (target, allowed) in table {
        assert_eq!(gw(&p).check_target(&ep(target)).is_ok(), *allowed, "{target}");
    }
    let d = gw(&p).check_target(&ep("10.21.0.1:7000")).unwrap_err();
    assert!(d.message.contains("not in targets.cidrs [10.20.0.0/16, 2001:db8:20::/48]"), "{}", d.message);
    let d = gw(&p).check_target(&ep("evil.net:7000")).unwrap_err();
    assert!(d.message.contains("not under targets.dnsSuffixes [.aps.example.org]"), "{}", d.message);
    // A peer gateway's listener is on the WAN: the LAN's ranges do not apply, the specials do.
    assert_eq!(gw(&p).check_remote(&ep("203.0.113.9:5100")), Ok(()));
    assert!(gw(&p).check_remote(&ep("169.254.169.254:80")).is_err());
    assert!(gw(&p).check_remote(&ep("127.0.0.1:5100")).is_err());
    // Only names listed: every address is refused.
    let names_only = GatewayPolicy {
        targets: TargetPolicy { dns_suffixes: vec!["aps.example.org".into()], ..TargetPolicy::default() },
        ..GatewayPolicy::default()
    };
    assert!(gw(&names_only).check_target(&ep("10.20.0.1:7000")).is_err());
    assert!(gw(&names_only).check_target(&ep("x.aps.example.org:7000")).is_ok());
}

#[test]
fn data_channels_and_static_targets() {
    let p = GatewayPolicy::default();
    let d = gw(&p).check(&ask(None, DataChannel::Plain, &[])).unwrap_err();
    assert_eq!(d.rule, Rule::DataChannel);
    assert!(d.message.contains("dataChannel Plain: it allows MutualTLS"), "{}", d.message);
    assert_eq!(gw(&p).check(&ask(None, DataChannel::MutualTLS, &[])), Ok(()));
    let statics = [ep("10.1.2.3:7000")];
    let mut a = ask(None, DataChannel::MutualTLS, &statics);
    a.static_targets = true;
    let d = gw(&p).check(&a).unwrap_err();
    assert_eq!(d.rule, Rule::StaticTargets);
    assert!(d.message.contains("spec.policy.allowStaticTargets"), "{}", d.message);
    let open = GatewayPolicy::open();
    assert_eq!(gw(&open).check(&a), Ok(()));
    let mut plain = ask(None, DataChannel::Plain, &statics);
    plain.static_targets = true;
    assert_eq!(gw(&open).check(&plain), Ok(()));
}

#[test]
fn namespaces_by_label() {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let by_label = GatewayPolicy {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(labels(&[("scistream.io/streams", "allowed")])),
            ..LabelSelector::default()
        }),
        ..GatewayPolicy::default()
    };
    let yes = labels(&[("scistream.io/streams", "allowed"), ("team", "x")]);
    let no = labels(&[("team", "x")]);
    assert_eq!(gw(&by_label).check_namespace("beamline", Some(&yes)), Ok(()));
    let d = gw(&by_label).check_namespace("beamline", Some(&no)).unwrap_err();
    assert_eq!(d.rule, Rule::Namespace);
    assert!(d.message.contains("namespace beamline: its labels do not match"), "{}", d.message);
    assert!(gw(&by_label).check_namespace("beamline", None).is_err(), "an unknown namespace is refused");
    // No selector, or an empty one: every namespace, even one not known.
    assert_eq!(gw(&GatewayPolicy::default()).check_namespace("x", None), Ok(()));
    let empty = GatewayPolicy { namespace_selector: Some(LabelSelector::default()), ..GatewayPolicy::default() };
    assert_eq!(gw(&empty).check_namespace("x", Some(&no)), Ok(()));
    // Expressions, and a selector that cannot be read refuses everyone.
    let expr = |op: &str, values: Option<Vec<String>>| GatewayPolicy {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement { key: "team".into(), operator: op.into(), values }]),
            ..LabelSelector::default()
        }),
        ..GatewayPolicy::default()
    };
    assert_eq!(gw(&expr("In", Some(vec!["x".into()]))).check_namespace("b", Some(&no)), Ok(()));
    assert!(gw(&expr("NotIn", Some(vec!["x".into()]))).check_namespace("b", Some(&no)).is_err());
    assert!(gw(&expr("DoesNotExist", None)).check_namespace("b", Some(&no)).is_err());
    let d = gw(&expr("Near", None)).check_namespace("b", Some(&no)).unwrap_err();
    assert!(d.message.contains("not valid"), "{}", d.message);
}

#[test]
fn per_namespace_limits() {
    let g = |n: u64| Rate::from_bps(n * 1_000_000_000);
    let p = GatewayPolicy {
        per_namespace: Some(NamespaceLimits { max_streams: Some(2), max_bandwidth: Some(g(20).into()) }),
        ..GatewayPolicy::default()
    };
    let held = |streams, gbps| Usage { streams, bandwidth: g(gbps) };
    assert_eq!(gw(&p).check_limits("b", held(0, 0), g(20)), Limit::Fits);
    assert_eq!(gw(&p).check_limits("b", held(1, 10), g(10)), Limit::Fits);
    let Limit::Wait(m) = gw(&p).check_limits("b", held(1, 15), g(10)) else { panic!("waits for bandwidth") };
    assert!(m.contains("namespace b holds 15Gbps of the 20Gbps"), "{m}");
    let Limit::Wait(m) = gw(&p).check_limits("b", held(2, 2), g(1)) else { panic!("waits for a stream") };
    assert!(m.contains("holds 2 of the 2 streams"), "{m}");
    let Limit::Never(d) = gw(&p).check_limits("b", held(0, 0), g(21)) else { panic!("never fits") };
    assert_eq!(d.rule, Rule::NamespaceLimit);
    assert!(d.message.contains("rate 21Gbps: more than the 20Gbps"), "{}", d.message);
    assert_eq!(gw(&GatewayPolicy::default()).check_limits("b", held(4000, 9000), g(100)), Limit::Fits);
}

#[test]
fn usage_counts_only_the_namespace() {
    let r = |request: &str, bps: i64| Reservation { request: request.into(), bandwidth_bps: bps, ..Default::default() };
    let all = [r("b/one", 1_000), r("b/two", 2_000), r("bb/three", 4_000), r("other/b", 8_000)];
    assert_eq!(Usage::of("b", &all), Usage { streams: 2, bandwidth: Rate::from_bps(3_000) });
    assert_eq!(Usage::of("nobody", &all), Usage::default());
}
