//! The Gateway status writer: changes submitted while a write is under way go together in
//! the next write (group commit), each applied to the status as the ones before it left it,
//! and none is lost.

use scistream_api::Reservation;
use scistream_controller::reservations::{GatewayWriter, StatusChange, submit};
use scistream_testkit::{Facility, gateway_spec};

fn status_updates(f: &Facility) -> u64 {
    f.cluster
        .state()
        .requests
        .snapshot()
        .iter()
        .filter(|(k, _)| k.resource == "gateways" && k.subresource == "status" && k.verb == "update")
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn concurrent_changes_are_written_together_and_none_is_lost() {
    let f = Facility::start("writes").await;
    let gateway = f.apply_gateway(gateway_spec(5119)).await;
    let writer = GatewayWriter::default();
    let before = status_updates(&f);
    let n = 40;
    let changes = (0..n).map(|i| {
        let change: StatusChange = Box::new(move |_, st| {
            st.reservations.push(Reservation {
                request: format!("ns/s{i}"),
                uid: format!("u{i}"),
                ..Default::default()
            });
            true
        });
        submit(&f.client, &writer, "dtn", Some(&gateway), change)
    });
    let outcomes = futures::future::join_all(changes).await;
    let mut last = 0;
    for stored in outcomes {
        let held = stored.expect("written").expect("the Gateway exists").status.unwrap_or_default().reservations.len();
        last = last.max(held);
    }
    let stored = f.gateway().await.status.unwrap_or_default().reservations;
    let mut uids: Vec<String> = stored.iter().map(|r| r.uid.clone()).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), n, "every change written exactly once");
    assert_eq!(last, n);
    let writes = status_updates(&f) - before;
    assert!(writes < 10, "{n} concurrent changes took {writes} writes (one each without group commit)");
    f.shutdown().await;
}
