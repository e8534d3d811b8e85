use super::*;
use proptest::prelude::*;

fn nodes(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn demand(uid: &str, connections: usize, gbps: u64) -> Demand {
    Demand {
        request: format!("ns/{uid}"),
        stream_id: format!("id-{uid}"),
        uid: uid.to_owned(),
        connections,
        rate: Rate::from_bps(gbps * 1_000_000_000),
        metrics_port: false,
    }
}

fn cap<'a>(nodes: &'a [String], reservations: &'a [Reservation], ports: (i32, i32), gbps: u64) -> Capacity<'a> {
    Capacity {
        port_range: PortRange { start: ports.0, end: ports.1 },
        bandwidth: Rate::from_bps(gbps * 1_000_000_000),
        nodes,
        reservations,
        elsewhere: &NOTHING_ELSEWHERE,
    }
}

#[test]
fn fits_on_the_least_loaded_node() {
    let n = nodes(&["gw-a", "gw-b"]);
    let first = reserve(&cap(&n, &[], (5100, 5109), 100), &demand("1", 3, 1)).unwrap();
    assert_eq!(
        first.nodes,
        vec![NodeAllocation { node: "gw-a".into(), ports: vec![5100, 5101, 5102], metrics_port: None }]
    );
    let held = vec![first];
    let second = reserve(&cap(&n, &held, (5100, 5109), 100), &demand("2", 3, 1)).unwrap();
    assert_eq!(
        second.nodes,
        vec![NodeAllocation { node: "gw-b".into(), ports: vec![5100, 5101, 5102], metrics_port: None }]
    );
}

#[test]
fn stripes_when_no_single_node_fits() {
    let n = nodes(&["gw-a", "gw-b"]);
    let r = reserve(&cap(&n, &[], (5100, 5103), 100), &demand("1", 6, 1)).unwrap();
    let counts: Vec<usize> = r.nodes.iter().map(|a| a.ports.len()).collect();
    assert_eq!(counts, vec![4, 2]);
}

#[test]
fn exhaustion_says_what_is_short() {
    let n = nodes(&["gw-a", "gw-b"]);
    let held = vec![reserve(&cap(&n, &[], (5100, 5104), 100), &demand("1", 5, 1)).unwrap()];
    let held2 = [held.clone(), vec![reserve(&cap(&n, &held, (5100, 5104), 100), &demand("2", 2, 1)).unwrap()]].concat();
    let err = reserve(&cap(&n, &held2, (5100, 5104), 100), &demand("3", 5, 1)).unwrap_err();
    assert_eq!(err.to_string(), "needs 5 ports, 3 free on gw-b, 0 free on gw-a");
}

#[test]
fn bandwidth_is_never_overpromised() {
    let n = nodes(&["gw-a"]);
    let held = vec![reserve(&cap(&n, &[], (5100, 5199), 10), &demand("1", 1, 8)).unwrap()];
    let err = reserve(&cap(&n, &held, (5100, 5199), 10), &demand("2", 1, 3)).unwrap_err();
    assert_eq!(err.to_string(), "needs 3Gbps, but 8Gbps of the gateway's 10Gbps is already promised (2Gbps left)");
    assert!(reserve(&cap(&n, &held, (5100, 5199), 10), &demand("3", 1, 2)).is_ok());
}

#[test]
fn reserve_is_idempotent_per_uid() {
    let n = nodes(&["gw-a"]);
    let held = vec![reserve(&cap(&n, &[], (5100, 5199), 10), &demand("1", 2, 1)).unwrap()];
    let again = reserve(&cap(&n, &held, (5100, 5199), 10), &demand("1", 2, 1)).unwrap();
    assert_eq!(again, held[0]);
}

#[test]
fn metrics_ports_are_held_per_node_used() {
    let n = nodes(&["gw-a", "gw-b"]);
    let with_metrics = |uid, c| Demand { metrics_port: true, ..demand(uid, c, 1) };
    let one = reserve(&cap(&n, &[], (5100, 5104), 100), &with_metrics("1", 4)).unwrap();
    assert_eq!(
        one.nodes,
        vec![NodeAllocation { node: "gw-a".into(), ports: vec![5100, 5101, 5102, 5103], metrics_port: Some(5104) }]
    );
    // 5 connections do not fit with a metrics port on one 5-port node: striped, 4 + 1.
    let striped = reserve(&cap(&n, &[], (5100, 5104), 100), &with_metrics("2", 5)).unwrap();
    assert_eq!(
        striped.nodes.iter().map(|a| (a.ports.len(), a.metrics_port.is_some())).collect::<Vec<_>>(),
        vec![(4, true), (1, true)]
    );
    let err = reserve(&cap(&n, &[], (5100, 5104), 100), &with_metrics("3", 9)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "needs 9 ports plus 1 per node used for the relay's health listener, 5 free on gw-a, 5 free on gw-b"
    );
}

/// Regression (found by `sequences_keep_the_invariants`): metrics ports were not counted as
/// used, so the next stream on the node was given one as a listener port.
#[test]
fn a_metrics_port_is_never_given_to_another_stream() {
    let n = nodes(&["gw-a"]);
    let first = reserve(&cap(&n, &[], (5100, 5109), 100), &Demand { metrics_port: true, ..demand("1", 1, 1) }).unwrap();
    assert_eq!(first.nodes[0].metrics_port, Some(5101));
    let held = vec![first];
    let second = reserve(&cap(&n, &held, (5100, 5109), 100), &demand("2", 2, 1)).unwrap();
    assert_eq!(second.nodes[0].ports, vec![5102, 5103]);
}

#[test]
fn no_nodes_is_its_own_error() {
    assert_eq!(reserve(&cap(&[], &[], (5100, 5199), 10), &demand("1", 1, 1)), Err(AllocError::NoReadyNodes));
}

#[test]
fn relocation_keeps_surviving_ports() {
    let n = nodes(&["gw-a", "gw-b", "gw-c"]);
    let r = reserve(&cap(&n, &[], (5100, 5102), 100), &demand("1", 5, 1)).unwrap();
    assert_eq!(r.nodes.len(), 2);
    let lost = r.nodes[0].node.clone();
    let survivor = r.nodes[1].clone();
    let held = vec![r];
    let moved = relocate(&cap(&n, &held, (5100, 5102), 100), "1", &lost).unwrap().unwrap();
    assert!(moved.nodes.iter().all(|a| a.node != lost));
    assert!(moved.nodes.contains(&survivor));
    assert_eq!(moved.nodes.iter().map(|a| a.ports.len()).sum::<usize>(), 5);
    check(&[moved], Some(PortRange { start: 5100, end: 5102 })).unwrap();
}

#[test]
fn check_finds_double_holdings_and_strays() {
    let a = Reservation {
        request: "ns/a".into(),
        uid: "a".into(),
        nodes: vec![NodeAllocation { node: "n".into(), ports: vec![5100], metrics_port: None }],
        ..Default::default()
    };
    let b = Reservation { request: "ns/b".into(), uid: "b".into(), ..a.clone() };
    assert!(matches!(check(&[a.clone(), b], None), Err(Conflict::DoubleHeld { port: 5100, .. })));
    assert!(matches!(
        check(&[a], Some(PortRange { start: 6000, end: 6001 })),
        Err(Conflict::OutOfRange { port: 5100, .. })
    ));
}

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        uid: u8,
        connections: usize,
        gbps: u64,
        metrics: bool,
    },
    Release {
        uid: u8,
    },
    /// The operator restarts: state is whatever the API holds (a serialization round trip).
    Restart,
    LoseNode {
        node: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 1usize..8, 1u64..5, any::<bool>()).prop_map(|(uid, connections, gbps, metrics)| Op::Reserve { uid, connections, gbps, metrics }),
        3 => (0u8..12).prop_map(|uid| Op::Release { uid }),
        1 => Just(Op::Restart),
        1 => (0usize..3).prop_map(|node| Op::LoseNode { node }),
    ]
}

proptest! {
    /// Random reserve / release / restart / node-loss sequences never double-allocate, never
    /// leave the range or over-promise bandwidth, and leak nothing once all is released.
    #[test]
    fn sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let all = nodes(&["gw-a", "gw-b", "gw-c"]);
        let range = PortRange { start: 5100, end: 5109 };
        let mut usable = all.clone();
        let mut held: Vec<Reservation> = Vec::new();
        for op in ops {
            match op {
                Op::Reserve { uid, connections, gbps, metrics } => {
                    let c = cap(&usable, &held, (range.start, range.end), 12);
                    let before = held.len();
                    let d = Demand { metrics_port: metrics, ..demand(&uid.to_string(), connections, gbps) };
                    if let Ok(r) = reserve(&c, &d)
                        && !held.iter().any(|h| h.uid == r.uid)
                    {
                        prop_assert_eq!(r.nodes.iter().map(|a| a.ports.len()).sum::<usize>(), connections);
                        held.push(r);
                    }
                    prop_assert!(held.len() <= before + 1);
                }
                Op::Release { uid } => held = release(&held, &uid.to_string()),
                Op::Restart => {
                    let text = serde_json::to_string(&held).unwrap();
                    held = serde_json::from_str(&text).unwrap();
                }
                Op::LoseNode { node } => {
                    let lost = all[node].clone();
                    usable.retain(|n| *n != lost);
                    let uids: Vec<String> = held.iter().map(|r| r.uid.clone()).collect();
                    for uid in uids {
                        let c = cap(&usable, &held, (range.start, range.end), 12);
                        match relocate(&c, &uid, &lost) {
                            Ok(Some(moved)) => {
                                for r in held.iter_mut().filter(|r| r.uid == uid) { *r = moved.clone(); }
                            }
                            // Nowhere to go: the stream is released (its request fails).
                            _ => held = release(&held, &uid),
                        }
                    }
                    if usable.is_empty() { usable = all.clone(); }
                }
            }
            prop_assert_eq!(check(&held, Some(range)), Ok(()));
            prop_assert!(promised(&held) <= Rate::from_bps(12_000_000_000));
        }
        for uid in 0u8..12 { held = release(&held, &uid.to_string()); }
        prop_assert!(held.is_empty());
        prop_assert!(used_ports(&held).is_empty());
    }

    /// Two operators allocating from stale views never overlap when their writes go through
    /// a compare-and-swap on the stored version (the Gateway's resourceVersion): the loser
    /// re-reads and allocates again.
    #[test]
    fn racing_allocators_never_overlap(demands in prop::collection::vec((1usize..6, any::<bool>()), 1..30)) {
        let n = nodes(&["gw-a", "gw-b"]);
        let mut store: (u64, Vec<Reservation>) = (0, Vec::new());
        for (i, (connections, second_wins)) in demands.into_iter().enumerate() {
            // Both read the same version.
            let snapshot = store.clone();
            let mut attempts = Vec::new();
            for who in 0..2 {
                let uid = format!("{i}-{who}");
                let c = cap(&n, &snapshot.1, (5100, 5119), 1000);
                if let Ok(r) = reserve(&c, &demand(&uid, connections, 1)) { attempts.push((uid, r)); }
            }
            if second_wins { attempts.reverse(); }
            for (uid, r) in attempts {
                if store.0 == snapshot.0 {
                    store.1.push(r);
                    store.0 += 1;
                } else {
                    // 409 Conflict: re-read and retry once.
                    let c = cap(&n, &store.1, (5100, 5119), 1000);
                    if let Ok(r) = reserve(&c, &demand(&uid, connections, 1)) {
                        store.1.push(r);
                        store.0 += 1;
                    }
                }
            }
            prop_assert_eq!(check(&store.1, Some(PortRange { start: 5100, end: 5119 })), Ok(()));
        }
    }
}

#[test]
fn ports_held_through_another_gateway_are_never_handed_out() {
    let n = nodes(&["gw-a", "gw-b"]);
    // Another Gateway on gw-a holds 5100-5103 and 5105: gw-a keeps 5104 and 5106-5109 here.
    let elsewhere: HeldElsewhere = [("gw-a".to_owned(), [5100, 5101, 5102, 5103, 5105].into())].into();
    let view = Capacity { elsewhere: &elsewhere, ..cap(&n, &[], (5100, 5109), 100) };
    let r = reserve(&view, &Demand { metrics_port: true, ..demand("1", 3, 1) }).unwrap();
    // gw-a holds no reservation of ours, so it is tried first, and has 5 ports of 10: it fits.
    assert_eq!(
        r.nodes,
        vec![NodeAllocation { node: "gw-a".into(), ports: vec![5104, 5106, 5107], metrics_port: Some(5108) }]
    );
    // Every port of gw-a held elsewhere: the demand goes to gw-b.
    let all: HeldElsewhere = [("gw-a".to_owned(), (5100..=5109).collect())].into();
    let r = reserve(&Capacity { elsewhere: &all, ..cap(&n, &[], (5100, 5109), 100) }, &demand("2", 2, 1)).unwrap();
    assert_eq!(r.nodes[0].node, "gw-b");
    // Both nodes taken elsewhere: exhausted, with the free counts that say so.
    let both: HeldElsewhere =
        [("gw-a".to_owned(), (5100..=5109).collect()), ("gw-b".to_owned(), (5100..=5108).collect())].into();
    let err =
        reserve(&Capacity { elsewhere: &both, ..cap(&n, &[], (5100, 5109), 100) }, &demand("3", 2, 1)).unwrap_err();
    assert!(matches!(err, AllocError::PortsExhausted { needed: 2, .. }), "{err:?}");
}
