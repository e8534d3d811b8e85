use super::*;

fn key(node: &str) -> RelayKey {
    RelayKey { gateway: "dtn".into(), node: node.into() }
}

fn stream(id: &str, generation: &str) -> StreamConfig {
    StreamConfig {
        stream_id: id.into(),
        generation: generation.into(),
        config: format!("streamId: {id}\n"),
        ..Default::default()
    }
}

fn next(rx: &mut mpsc::Receiver<Result<RelayUpdate, tonic::Status>>) -> Option<RelayUpdate> {
    rx.try_recv().ok().map(|u| u.expect("an update, not an error"))
}

fn ids(u: &RelayUpdate) -> Vec<&str> {
    u.streams.iter().map(|s| s.stream_id.as_str()).collect()
}

#[test]
fn a_relay_gets_a_snapshot_then_only_its_own_changes_numbered_in_order() {
    let hub = Hub::default();
    hub.set(&key("gw-a"), stream("s1", "g1"));
    hub.set(&key("gw-b"), stream("s2", "g1"));
    let (_, mut a) = hub.connect(&key("gw-a"), &Hello::default());
    let snap = next(&mut a).unwrap();
    assert!(snap.snapshot);
    assert_eq!((snap.version, ids(&snap)), (1, vec!["s1"]), "only gw-a's streams: keys reach only their node");

    assert!(hub.set(&key("gw-a"), stream("s3", "g1")));
    assert!(!hub.set(&key("gw-a"), stream("s3", "g1")), "the same config again sends nothing");
    hub.set(&key("gw-b"), stream("s4", "g1"));
    assert!(hub.set(&key("gw-a"), stream("s1", "g2")));
    assert!(hub.remove(&key("gw-a"), "s3"));
    assert!(!hub.remove(&key("gw-a"), "s3"));
    let got: Vec<(u64, bool, Vec<String>, Vec<String>)> = std::iter::from_fn(|| next(&mut a))
        .map(|u| {
            (
                u.version,
                u.snapshot,
                u.streams.iter().map(|s| format!("{}@{}", s.stream_id, s.generation)).collect(),
                u.removed,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (2, false, vec!["s3@g1".to_owned()], vec![]),
            (3, false, vec!["s1@g2".to_owned()], vec![]),
            (4, false, vec![], vec!["s3".to_owned()]),
        ]
    );
    assert_eq!(hub.desired(&key("gw-a")), vec!["s1".to_owned()]);
}

#[test]
fn a_new_call_replaces_the_old_and_starts_from_a_snapshot() {
    let hub = Hub::default();
    hub.set(&key("gw-a"), stream("s1", "g1"));
    let (first, mut old) = hub.connect(&key("gw-a"), &Hello::default());
    let (second, mut new) = hub.connect(&key("gw-a"), &Hello::default());
    assert_ne!(first, second);
    hub.set(&key("gw-a"), stream("s2", "g1"));
    let _ = next(&mut old);
    assert!(next(&mut old).is_none() && old.is_closed(), "the old call gets nothing more");
    assert!(next(&mut new).unwrap().snapshot);
    assert_eq!(ids(&next(&mut new).unwrap()), vec!["s2"]);
    // Reports and the end of the replaced call are ignored.
    hub.applied(
        &key("gw-a"),
        first,
        Applied {
            version: 1,
            streams: vec![StreamState { stream_id: "s1".into(), ready: true, ..Default::default() }],
        },
    );
    assert_eq!(hub.reported(&key("gw-a"), "s1"), None);
    hub.disconnect(&key("gw-a"), first);
    assert!(hub.connected(&key("gw-a")));
    hub.disconnect(&key("gw-a"), second);
    assert!(!hub.connected(&key("gw-a")));
}

#[test]
fn reports_are_kept_for_streams_still_wanted_and_published() {
    let hub = Hub::default();
    let mut reports = hub.subscribe();
    hub.set(&key("gw-a"), stream("s1", "g1"));
    let (call, _rx) = hub.connect(&key("gw-a"), &Hello::default());
    let ready = StreamState { stream_id: "s1".into(), generation: "g1".into(), ready: true, ..Default::default() };
    let stale = StreamState { stream_id: "gone".into(), removed: true, ..Default::default() };
    hub.applied(&key("gw-a"), call, Applied { version: 1, streams: vec![ready.clone(), stale.clone()] });
    assert_eq!(hub.reported(&key("gw-a"), "s1"), Some(ready.clone()));
    assert_eq!(hub.reported(&key("gw-a"), "gone"), None);
    assert_eq!(reports.try_recv().unwrap(), Report { relay: key("gw-a"), state: ready.clone() });
    assert_eq!(reports.try_recv().unwrap().state, stale);
    // The same state again (a snapshot's answer) wakes nobody; a change does.
    hub.applied(&key("gw-a"), call, Applied { version: 2, streams: vec![ready.clone()] });
    assert!(reports.try_recv().is_err(), "an unchanged state is not published again");
    let failed = StreamState { ready: false, error: "bind: address in use".into(), ..ready.clone() };
    hub.applied(&key("gw-a"), call, Applied { version: 3, streams: vec![failed.clone()] });
    assert_eq!(reports.try_recv().unwrap().state, failed);
    hub.remove(&key("gw-a"), "s1");
    assert_eq!(hub.reported(&key("gw-a"), "s1"), None, "a removed stream's report is dropped with it");
}

#[test]
fn a_relay_that_does_not_read_loses_its_call_not_the_operator() {
    let hub = Hub::default();
    let (_, rx) = hub.connect(&key("gw-a"), &Hello::default());
    for i in 0..QUEUE + 1 {
        hub.set(&key("gw-a"), stream(&format!("s{i}"), "g1"));
    }
    assert!(!hub.connected(&key("gw-a")), "its call is dropped; it calls again for a snapshot");
    drop(rx);
    assert_eq!(hub.desired(&key("gw-a")).len(), QUEUE + 1, "nothing desired is lost");
}

#[test]
fn identities_name_one_relay_and_revoking_drops_its_call() {
    let hub = Hub::default();
    hub.authorize([1; 32], key("gw-a"));
    assert_eq!(hub.identify(&[1; 32]), Some(key("gw-a")));
    assert_eq!(hub.identify(&[2; 32]), None);
    let (_, _rx) = hub.connect(&key("gw-a"), &Hello::default());
    hub.revoke(&key("gw-a"));
    assert_eq!(hub.identify(&[1; 32]), None);
    assert!(!hub.connected(&key("gw-a")));
}

/// A stopping operator ends every call (a graceful shutdown would otherwise wait on calls
/// that never end, and the relays would stay on an operator that no longer acts) and lets
/// none in; what each relay is to run stays for the next leader to rebuild the same way.
#[test]
fn closing_ends_every_call_and_lets_none_in() {
    let hub = Hub::default();
    hub.open();
    hub.set(&key("gw-a"), stream("s1", "g1"));
    let (_, mut a) = hub.connect(&key("gw-a"), &Hello::default());
    let (_, mut b) = hub.connect(&key("gw-b"), &Hello::default());
    assert!(next(&mut a).is_some() && next(&mut b).is_some(), "snapshots");
    hub.close();
    assert!(!hub.is_open());
    assert!(!hub.connected(&key("gw-a")) && !hub.connected(&key("gw-b")));
    assert!(matches!(a.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)), "a's call ended");
    assert!(matches!(b.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)), "b's call ended");
    assert_eq!(hub.desired(&key("gw-a")), vec!["s1".to_owned()]);
}
