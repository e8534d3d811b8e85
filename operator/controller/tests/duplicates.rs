//! One stream id per role per cluster (issue 21): a second StreamRequest with the stream id
//! and role of a live one, in the same namespace or another, fails with `DuplicateStreamId`
//! naming the first and holds nothing; the first keeps streaming.

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{PostParams, ResourceExt},
};
use scistream_api::{Phase, StreamRequest, conditions};
use scistream_testkit::{Facility, USER_NS, request_until};
use serde_json::json;

const ID: &str = "7c1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d";

fn spec() -> serde_json::Value {
    json!({"streamId": ID, "role": "Producer", "gateway": "dtn", "numConnections": 1, "rate": "1Gbps",
           "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]})
}

fn ready(sr: &StreamRequest) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    sr.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::types::READY))
}

#[tokio::test]
async fn a_second_request_with_the_stream_id_and_role_fails_naming_the_first() {
    let mut f = Facility::start("prod").await;
    f.start_operator(false);
    f.apply_gateway(json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "10Gbps",
        "podNamespace": scistream_testkit::GATEWAY_NS, "portRange": {"start": 5100, "end": 5119}}))
        .await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f.create_request("first", spec()).await;
    f.wait_request("first", 20, |sr| sr.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)).await;

    let other: Namespace = serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
    Api::<Namespace>::all(f.client.clone()).create(&PostParams::default(), &other).await.unwrap();
    let elsewhere: Api<StreamRequest> = Api::namespaced(f.client.clone(), "other");
    let twin: StreamRequest = serde_json::from_value(json!({"apiVersion": "scistream.io/v1alpha1",
        "kind": "StreamRequest", "metadata": {"name": "twin"}, "spec": spec()}))
    .unwrap();
    elsewhere.create(&PostParams::default(), &twin).await.unwrap();
    f.create_request("again", spec()).await;
    let first = format!("already used by the Producer side {USER_NS}/first in this cluster");
    for (api, name) in [(&elsewhere, "twin"), (&f.requests(), "again")] {
        let sr =
            request_until(api, name, 20, |sr| sr.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed)).await;
        let c = ready(&sr).expect("a Ready condition");
        assert_eq!(c.reason, conditions::reasons::DUPLICATE_STREAM_ID, "{name}");
        assert!(c.message.contains(&first), "{name}: {}", c.message);
    }
    // Only the first holds ports, and it is still Ready.
    let held: Vec<String> = f.wait_totals_match_holdings(10).await.into_iter().map(|r| r.request).collect();
    assert_eq!(held, [format!("{USER_NS}/first")]);
    let first = f.requests().get("first").await.unwrap();
    assert_eq!(first.status.as_ref().and_then(|s| s.phase), Some(Phase::Ready), "{}", first.name_any());
}
