//! Legacy 1.x user-client calls (`req`, `update`, `release`) through a tonic client over TLS,
//! replaying the call sequences of SciStream 1.2.1's `s2uc` (PROTOCOL.md), against the
//! embedded API server with the real operator.

mod common;

use std::time::Duration;

use common::{ALICE, BOB, Facility, endpoint_config, with_auth};
use kube::ResourceExt;
use scistream_api::Phase;
use scistream_control_endpoint::{AuthConfig, legacy::ANNOTATION_CREDENTIAL, proto};
use tonic::Code;

const UID: &str = "6f1c0d2e-3b4a-4c5d-8e6f-7a8b9c0d1e2f";

fn phase(sr: &scistream_api::StreamRequest) -> Option<Phase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

async fn facility(name: &str) -> Facility {
    let mut f = Facility::start(name, 5119).await;
    f.start_endpoint(endpoint_config(AuthConfig::Kubernetes)).await;
    f
}

#[tokio::test]
async fn s2uc_inbound_request_producer_sequence() {
    let f = facility("inbound").await;
    let client = f.grpc_client().await;
    // req (PROD) blocks until Hello...
    let mut c = client.clone();
    let req = tokio::spawn(async move {
        c.req(with_auth(proto::Request { uid: UID.into(), role: "PROD".into(), num_conn: 0, rate: 0 }, ALICE)).await
    });
    // ...s2uc sends hello 0.5 s later on the same channel with the same token (its timing, replayed).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let prod = vec!["192.0.2.50:7000".to_owned(), "192.0.2.51:7000".to_owned()];
    let hello = client
        .clone()
        .hello(with_auth(proto::Hello { uid: UID.into(), prod_listeners: prod.clone(), role: "PROD".into() }, ALICE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hello.message, "Sending Prod listeners...");
    let reply = tokio::time::timeout(Duration::from_secs(5), req).await.expect("req answers within 5 s").unwrap();
    let reply = reply.unwrap().into_inner();
    assert_eq!(reply.listeners.len(), 5, "one listener per num_conn (default 5): {reply:?}");
    assert!(reply.listeners.iter().all(|l| l.starts_with("198.51.100.")), "WAN listeners: {reply:?}");
    assert_eq!(reply.prod_listeners, prod);
    let name = format!("legacy-{UID}-prod");
    let sr = f.requests().get(&name).await.unwrap();
    assert_eq!(sr.spec.data_channel, scistream_api::DataChannel::Plain);
    assert_eq!(sr.spec.rate.text(), "10Mbps");
    assert!(sr.annotations().contains_key(ANNOTATION_CREDENTIAL));
    // update (PROD) with the req reply's prod_listeners starts the data path.
    client
        .clone()
        .update(with_auth(
            proto::UpdateTargets {
                uid: UID.into(),
                remote_listeners: reply.prod_listeners.clone(),
                role: "PROD".into(),
            },
            ALICE,
        ))
        .await
        .unwrap();
    let sr = f.wait_request(&name, 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    assert_eq!(sr.spec.targets, Some(prod));
    // release frees everything.
    let r = client.clone().release(with_auth(proto::Release { uid: UID.into() }, ALICE)).await.unwrap().into_inner();
    assert_eq!(r, proto::Response::default());
    f.wait_gone(&name, 20).await;
    let text = f.metrics_text().await;
    assert!(text.contains("scistream_control_calls_total{method=\"req\"} 1"), "{text}");
    assert!(text.contains("scistream_control_latency_seconds_count{method=\"hello\"} 1"), "{text}");
    f.shutdown().await;
}

#[tokio::test]
async fn s2uc_outbound_request_consumer_sequence_with_the_role_quirk() {
    let f = facility("outbound").await;
    let client = f.grpc_client().await;
    let mut c = client.clone();
    let req = tokio::spawn(async move {
        c.req(with_auth(proto::Request { uid: UID.into(), role: "CONS".into(), num_conn: 2, rate: 5000 }, ALICE)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // s2uc outbound-request sends its Hello with role PROD for a consumer stream.
    let remote = vec!["198.51.100.77:5100".to_owned(), "198.51.100.77:5101".to_owned()];
    let hello = client
        .clone()
        .hello(with_auth(proto::Hello { uid: UID.into(), prod_listeners: remote.clone(), role: "PROD".into() }, ALICE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hello.message, "Sending Prod listeners...");
    let reply = tokio::time::timeout(Duration::from_secs(5), req).await.unwrap().unwrap().unwrap().into_inner();
    assert_eq!(reply.listeners.len(), 2);
    assert!(reply.listeners.iter().all(|l| l.starts_with("192.0.2.")), "LAN listeners: {reply:?}");
    assert!(reply.prod_listeners.is_empty(), "a consumer records no prod_listeners: {reply:?}");
    let name = format!("legacy-{UID}-cons");
    client
        .clone()
        .update(with_auth(
            proto::UpdateTargets { uid: UID.into(), remote_listeners: remote.clone(), role: "CONS".into() },
            ALICE,
        ))
        .await
        .unwrap();
    let sr = f.wait_request(&name, 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    assert_eq!(sr.spec.remote_listeners, Some(remote));
    assert_eq!(sr.spec.rate.text(), "5Mbps");
    client.clone().release(with_auth(proto::Release { uid: UID.into() }, ALICE)).await.unwrap();
    f.wait_gone(&name, 20).await;
    f.shutdown().await;
}

#[tokio::test]
async fn legacy_errors_have_precise_codes_and_change_nothing() {
    let f = facility("legacy-errors").await;
    let mut c = f.grpc_client().await;
    let req =
        |uid: &str, role: &str, n: i32| proto::Request { uid: uid.into(), role: role.into(), num_conn: n, rate: 0 };
    let cases: Vec<(tonic::Request<proto::Request>, Code)> = vec![
        (tonic::Request::new(req(UID, "PROD", 1)), Code::Unauthenticated),
        (with_auth(req(UID, "PROD", 1), "not-a-token"), Code::Unauthenticated),
        (with_auth(req(UID, "PROD", 1), BOB), Code::PermissionDenied),
        (with_auth(req(UID, "PRODUCER", 1), ALICE), Code::InvalidArgument),
        (with_auth(req("not-a-uuid", "PROD", 1), ALICE), Code::InvalidArgument),
        (with_auth(req(UID, "PROD", 300), ALICE), Code::InvalidArgument),
        (with_auth(proto::Request { rate: -1, ..req(UID, "PROD", 1) }, ALICE), Code::InvalidArgument),
    ];
    for (request, code) in cases {
        let what = format!("{:?}", request.get_ref());
        let e = c.req(request).await.unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e:?}");
        assert!(!e.message().is_empty());
    }
    assert!(f.requests().list(&Default::default()).await.unwrap().items.is_empty(), "bad input changed nothing");
    // No capacity: 2 nodes x 20 ports cannot hold 41 connections.
    let e = c.req(with_auth(req(UID, "PROD", 41), ALICE)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    f.wait_gone(&format!("legacy-{UID}-prod"), 20).await;
    // Unknown uids.
    let e = c
        .update(with_auth(
            proto::UpdateTargets { uid: UID.into(), remote_listeners: vec!["h:1".into()], role: "PROD".into() },
            ALICE,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c.release(with_auth(proto::Release { uid: UID.into() }, ALICE)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // A duplicate req; a client that gives up does not cancel the first one.
    let mut first = tonic::Request::new(req(UID, "PROD", 1));
    first.metadata_mut().insert("authorization", ALICE.parse().unwrap());
    first.set_timeout(Duration::from_millis(300));
    let e = c.req(first).await.unwrap_err();
    assert!(matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded), "client-side deadline: {e:?}");
    let name = format!("legacy-{UID}-prod");
    f.wait_request(&name, 20, |sr| phase(sr) == Some(Phase::AwaitingHello)).await;
    let e = c.req(with_auth(req(UID, "PROD", 1), ALICE)).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    // Bad update input changes nothing; a permitted-but-wrong user is refused.
    let e = c
        .update(with_auth(
            proto::UpdateTargets { uid: UID.into(), remote_listeners: vec!["nope".into()], role: "PROD".into() },
            ALICE,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .update(with_auth(
            proto::UpdateTargets { uid: UID.into(), remote_listeners: vec!["h:1".into()], role: "PROD".into() },
            BOB,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(f.requests().get(&name).await.unwrap().spec.targets, None);
    let e = c.release(with_auth(proto::Release { uid: UID.into() }, BOB)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The abandoned request still takes its Hello (with the creator's token).
    let hello = proto::Hello { uid: UID.into(), prod_listeners: vec!["192.0.2.9:9".into()], role: "PROD".into() };
    c.hello(with_auth(hello, ALICE)).await.unwrap();
    f.wait_request(&name, 20, |sr| sr.status.as_ref().is_some_and(|s| s.hello_time.is_some())).await;
    c.release(with_auth(proto::Release { uid: UID.into() }, ALICE)).await.unwrap();
    f.wait_gone(&name, 20).await;
    let text = f.metrics_text().await;
    assert!(text.contains("code=\"PERMISSION_DENIED\""), "{text}");
    f.shutdown().await;
}
