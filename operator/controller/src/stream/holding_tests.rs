use super::*;
use scistream_api::gateway::GatewayNodeStatus;

/// A Gateway of `ports` ports per node on `nodes` (all ready) and `gbps` of bandwidth.
pub(crate) fn gateway(nodes: &[&str], ports: u16, gbps: u32) -> (GatewaySpec, GatewayStatus) {
    let spec: GatewaySpec = serde_json::from_value(serde_json::json!({
        "nodeSelector": {"gw": "true"}, "bandwidth": format!("{gbps}Gbps"), "podNamespace": "gw",
        "portRange": {"start": 5100, "end": 5100 + ports - 1}, "implementation": "Haproxy",
        "policy": scistream_api::policy::GatewayPolicy::open()
    }))
    .expect("a valid Gateway spec");
    let status = GatewayStatus {
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, n)| GatewayNodeStatus {
                name: (*n).to_owned(),
                ready: true,
                wan_address: Some(format!("198.51.100.{}", i + 1)),
                lan_address: Some(format!("192.0.2.{}", i + 1)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    (spec, status)
}

pub(crate) fn want(uid: &str, connections: usize, gbps: u64) -> Demand {
    Demand {
        request: format!("ns/{uid}"),
        stream_id: format!("id-{uid}"),
        uid: uid.to_owned(),
        connections,
        rate: Rate::from_bps(gbps * 1_000_000_000),
        metrics_port: false,
    }
}

fn ports(status: &GatewayStatus, uid: &str) -> usize {
    held(Some(status), uid).map_or(0, |r| r.nodes.iter().map(|a| a.ports.len()).sum())
}

#[test]
fn changes_apply_or_refuse_without_touching_the_status() {
    struct Case {
        name: &'static str,
        before: Vec<Demand>,
        change: Change,
        changed: Result<bool, &'static str>,
        bandwidth_after: Option<i64>,
    }
    let gbps = 1_000_000_000;
    let cases = [
        Case {
            name: "reserve on a free gateway",
            before: vec![],
            change: Change::Reserve(want("me", 2, 3)),
            changed: Ok(true),
            bandwidth_after: Some(3 * gbps),
        },
        Case {
            name: "reserve twice is no change",
            before: vec![want("me", 2, 3)],
            change: Change::Reserve(want("me", 2, 3)),
            changed: Ok(false),
            bandwidth_after: Some(3 * gbps),
        },
        Case {
            name: "reserve beyond the bandwidth",
            before: vec![want("a", 1, 8)],
            change: Change::Reserve(want("me", 1, 3)),
            changed: Err("promised"),
            bandwidth_after: None,
        },
        Case {
            name: "reserve beyond the ports",
            before: vec![want("a", 3, 1)],
            change: Change::Reserve(want("me", 2, 1)),
            changed: Err("ports"),
            bandwidth_after: None,
        },
        Case {
            name: "grow within the bandwidth",
            before: vec![want("me", 1, 2)],
            change: Change::Resize(5 * gbps),
            changed: Ok(true),
            bandwidth_after: Some(5 * gbps),
        },
        Case {
            name: "grow beyond the bandwidth keeps the holding",
            before: vec![want("a", 1, 6), want("me", 1, 2)],
            change: Change::Resize(5 * gbps),
            changed: Err("promised"),
            bandwidth_after: Some(2 * gbps),
        },
        Case {
            name: "shrink always fits",
            before: vec![want("a", 1, 8), want("me", 1, 2)],
            change: Change::Resize(gbps),
            changed: Ok(true),
            bandwidth_after: Some(gbps),
        },
        Case {
            name: "release",
            before: vec![want("me", 1, 2)],
            change: Change::Release,
            changed: Ok(true),
            bandwidth_after: None,
        },
        Case {
            name: "release of nothing",
            before: vec![],
            change: Change::Release,
            changed: Ok(false),
            bandwidth_after: None,
        },
    ];
    for case in cases {
        // 2 nodes of 2 ports, 10 Gbps.
        let (spec, mut status) = gateway(&["n1", "n2"], 2, 10);
        for d in &case.before {
            assert_eq!(
                apply(&spec, &Default::default(), &mut status, &d.uid, &Change::Reserve(d.clone())),
                Ok(true),
                "{}",
                case.name
            );
        }
        let before = status.clone();
        let outcome = apply(&spec, &Default::default(), &mut status, "me", &case.change);
        match (&outcome, case.changed) {
            (Ok(got), Ok(expected)) => assert_eq!(*got, expected, "{}", case.name),
            (Err(e), Err(word)) => {
                assert!(e.to_string().contains(word), "{}: {e}", case.name);
                assert_eq!(status, before, "{}: a refusal changes nothing", case.name);
            }
            _ => panic!("{}: got {outcome:?}", case.name),
        }
        assert_eq!(held(Some(&status), "me").map(|r| r.bandwidth_bps), case.bandwidth_after, "{}", case.name);
    }
}

#[test]
fn relocation_moves_only_the_ports_of_the_lost_node() {
    let (spec, mut status) = gateway(&["n1", "n2", "n3"], 2, 10);
    apply(&spec, &Default::default(), &mut status, "me", &Change::Reserve(want("me", 4, 1))).expect("fits");
    let on = |s: &GatewayStatus, node: &str| {
        held(Some(s), "me")
            .into_iter()
            .flat_map(|r| &r.nodes)
            .filter(|a| a.node == node)
            .map(|a| a.ports.len())
            .sum::<usize>()
    };
    let lost = ["n1", "n2"].into_iter().find(|n| on(&status, n) > 0).expect("some node holds ports");
    let kept: Vec<(String, Vec<i32>)> = held(Some(&status), "me")
        .into_iter()
        .flat_map(|r| &r.nodes)
        .filter(|a| a.node != lost)
        .map(|a| (a.node.clone(), a.ports.clone()))
        .collect();
    status.nodes.retain(|n| n.name != lost);
    assert_eq!(
        apply(&spec, &Default::default(), &mut status, "me", &Change::Relocate(vec![lost.to_owned()])),
        Ok(true)
    );
    assert_eq!(on(&status, lost), 0);
    assert_eq!(ports(&status, "me"), 4);
    for (node, ports) in kept {
        let now: Vec<i32> = held(Some(&status), "me")
            .into_iter()
            .flat_map(|r| &r.nodes)
            .filter(|a| a.node == node)
            .flat_map(|a| a.ports.clone())
            .collect();
        assert!(ports.iter().all(|p| now.contains(p)), "ports on {node} kept: {ports:?} ⊆ {now:?}");
    }
}

#[test]
fn a_new_request_yields_only_to_an_older_one_it_would_displace() {
    struct Case {
        name: &'static str,
        held: Vec<Demand>,
        older: Vec<Demand>,
        me: Demand,
        yields_to: Option<&'static str>,
    }
    let cases = [
        Case { name: "nobody waits", held: vec![], older: vec![], me: want("me", 1, 1), yields_to: None },
        Case {
            name: "an older waiting request that fits beside me",
            held: vec![],
            older: vec![want("old", 1, 1)],
            me: want("me", 1, 1),
            yields_to: None,
        },
        Case {
            name: "an older request that needs the last ports",
            held: vec![want("a", 2, 1)],
            older: vec![want("old", 2, 1)],
            me: want("me", 1, 1),
            yields_to: Some("old"),
        },
        Case {
            name: "an older request that needs the bandwidth",
            held: vec![want("a", 1, 5)],
            older: vec![want("old", 1, 4)],
            me: want("me", 1, 2),
            yields_to: Some("old"),
        },
        Case {
            name: "an older request that cannot fit anyway",
            held: vec![want("a", 1, 5)],
            older: vec![want("old", 1, 9)],
            me: want("me", 1, 2),
            yields_to: None,
        },
        Case {
            name: "I do not fit either: I wait on my own account",
            held: vec![want("a", 4, 1)],
            older: vec![want("old", 1, 1)],
            me: want("me", 1, 1),
            yields_to: None,
        },
    ];
    for case in cases {
        let (spec, mut status) = gateway(&["n1", "n2"], 2, 10);
        for d in &case.held {
            apply(&spec, &Default::default(), &mut status, &d.uid, &Change::Reserve(d.clone())).expect("fits");
        }
        let got = yields_to(&spec, &Default::default(), &status, &case.me, &case.older).map(|d| d.uid.as_str());
        assert_eq!(got, case.yields_to, "{}", case.name);
    }
}
