//! Hello from application controllers (`appctrl`, the plugin's streams): the Hello key in
//! constant time, the role rules, idempotency, the consumer's listeners, the JSON Hello over
//! HTTPS, and the per-peer limit on failed authentications.

mod common;

use std::time::Duration;

use common::{Facility, endpoint_config, with_auth};
use http_body_util::{BodyExt, Full};
use kube::ResourceExt;
use scistream_api::Phase;
use scistream_control_endpoint::{AuthConfig, proto};
use serde_json::json;
use tonic::Code;

const ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn phase(sr: &scistream_api::StreamRequest) -> Option<Phase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

fn hello(uid: &str, role: &str, listeners: &[&str]) -> proto::Hello {
    proto::Hello {
        uid: uid.into(),
        role: role.into(),
        prod_listeners: listeners.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn hello_records_on_both_sides_of_a_stream_in_one_cluster() {
    let mut f = Facility::start("hello", 5119).await;
    f.start_endpoint(endpoint_config(AuthConfig::Kubernetes)).await;
    f.plugin_request(
        "prod",
        "k-prod",
        json!({"streamId": ID, "role": "Producer", "gateway": "dtn", "dataChannel": "Plain"}),
    )
    .await;
    f.plugin_request(
        "cons",
        "k-cons",
        json!({"streamId": ID, "role": "Consumer", "gateway": "dtn", "dataChannel": "Plain",
               "remoteListeners": ["198.51.100.9:5100"]}),
    )
    .await;
    f.wait_request("prod", 20, |sr| phase(sr) == Some(Phase::AwaitingHello)).await;
    f.wait_request("cons", 20, |sr| phase(sr) == Some(Phase::AwaitingHello)).await;
    let mut c = f.grpc_client().await;

    let e = c.hello(with_auth(hello("1d2e3f40-0000-4000-8000-000000000000", "PROD", &["192.0.2.5:1"]), "x")).await;
    assert_eq!(e.unwrap_err().code(), Code::NotFound, "unknown uid is NOT_FOUND, never UNAUTHENTICATED");
    let e = c.hello(with_auth(hello(ID, "PROD", &["192.0.2.5:7000"]), "k-wrong")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c.hello(tonic::Request::new(hello(ID, "PROD", &["192.0.2.5:7000"]))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c.hello(with_auth(hello(ID, "PROD", &["192.0.2.5:7000"]), "k-cons")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "the consumer's key with role PROD: {e:?}");
    let e = c.hello(with_auth(hello(ID, "PROD", &["not an endpoint"]), "k-prod")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c.hello(with_auth(hello(ID, "PROD", &[]), "k-prod")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "a producer's Hello lists endpoints: {e:?}");
    let e = c.hello(with_auth(hello(ID, "BOTH", &[]), "k-prod")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Over the 64 KiB message limit: RESOURCE_EXHAUSTED (not tonic's OUT_OF_RANGE), and the
    // channel stays usable for the calls below.
    let big = "a".repeat(70_000);
    let e = c.hello(with_auth(hello(ID, "PROD", &[big.as_str()]), "k-prod")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("limit of 65536 bytes"), "{e:?}");
    let sr = f.requests().get("prod").await.unwrap();
    assert!(sr.status.unwrap().hello_time.is_none(), "refused Hellos changed nothing");

    // The producer's Hello.
    let r = c.hello(with_auth(hello(ID, "PROD", &["192.0.2.5:7000"]), "Bearer k-prod")).await.unwrap().into_inner();
    assert_eq!(r.message, "Sending Prod listeners...");
    let sr = f.wait_request("prod", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let status = sr.status.clone().unwrap();
    assert_eq!(status.prod_listeners, vec!["192.0.2.5:7000"]);
    let managers: Vec<_> = sr.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.iter().any(|m| m == "scistream-control-endpoint"), "{managers:?}");
    // Repeating it changes nothing; new listeners update the targets.
    let rv = sr.resource_version();
    c.hello(with_auth(hello(ID, "PROD", &["192.0.2.5:7000"]), "k-prod")).await.unwrap();
    assert_eq!(f.requests().get("prod").await.unwrap().resource_version(), rv, "an identical Hello writes nothing");
    c.hello(with_auth(hello(ID, "PROD", &["192.0.2.6:7000", "192.0.2.7:7000"]), "k-prod")).await.unwrap();
    let sr = f.wait_request("prod", 20, |sr| sr.status.as_ref().is_some_and(|s| s.prod_listeners.len() == 2)).await;
    assert_eq!(sr.status.unwrap().hello_time, status.hello_time, "the first Hello's time is kept");

    // The consumer's Hello learns its listeners (appctrl connects to listeners[0]).
    let r = c.hello(with_auth(hello(ID, "CONS", &[]), "k-cons")).await.unwrap().into_inner();
    assert_eq!(r.message, "Sending listeners...");
    let cons = f.requests().get("cons").await.unwrap();
    assert_eq!(r.listeners, cons.status.unwrap().listeners);
    assert!(r.listeners[0].starts_with("192.0.2."), "{r:?}");
    f.wait_request("cons", 20, |sr| phase(sr) == Some(Phase::Ready)).await;

    // The same Hello as JSON over HTTPS.
    let http = https_client(f.cert_pem.as_deref().unwrap());
    let url = format!("https://127.0.0.1:{}{}", f.http.unwrap().port(), scistream_api::control::HELLO_PATH);
    let post = |body: String, auth: Option<&str>| {
        let mut b = http::Request::post(&url).header("content-type", "application/json");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let request = b.body(Full::new(bytes::Bytes::from(body))).unwrap();
        let http = http.clone();
        async move {
            let response = http.request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
        }
    };
    let (status, body) = post(json!({"uid": ID, "role": "CONS"}).to_string(), Some("k-cons")).await;
    assert_eq!((status, body["message"].as_str()), (200, Some("Sending listeners...")), "{body}");
    assert_eq!(body["listeners"].as_array().unwrap().len(), 5);
    let (status, body) = post(json!({"uid": ID, "role": "CONS"}).to_string(), Some("wrong")).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHENTICATED")), "{body}");
    let (status, _) = post(json!({"uid": "3c2b1a00-0000-4000-8000-000000000000"}).to_string(), Some("k")).await;
    assert_eq!(status, 404);
    let (status, body) = post("{not json".into(), Some("k-cons")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_ARGUMENT")), "{body}");
    let text = f.metrics_text().await;
    assert!(
        text.contains("scistream_control_errors_total{method=\"http_hello\",code=\"UNAUTHENTICATED\"} 1"),
        "{text}"
    );
    assert!(text.contains("scistream_control_errors_total{method=\"hello\",code=\"NOT_FOUND\"} 1"), "{text}");
    f.shutdown().await;
}

#[tokio::test]
async fn preconditions_deadlines_and_the_failed_authentication_limit() {
    let mut f = Facility::start("hello-limits", 5119).await;
    let mut config = endpoint_config(AuthConfig::Kubernetes);
    config.handler.listeners_wait = Duration::from_secs(1);
    config.max_auth_failures = 3;
    config.max_auth_failures_per_address = 5;
    config.handler.placement = None;
    f.start_endpoint(config).await;
    let mut c = f.grpc_client().await;
    // Legacy calls need a configured gateway.
    let e = c.req(with_auth(proto::Request { uid: ID.into(), role: "PROD".into(), num_conn: 1, rate: 1 }, "t")).await;
    assert_eq!(e.unwrap_err().code(), Code::FailedPrecondition);
    // A consumer whose listeners never come (no such gateway): DEADLINE_EXCEEDED after the wait.
    f.plugin_request(
        "lost",
        "k1",
        json!({"streamId": ID, "role": "Consumer", "gateway": "nope", "dataChannel": "Plain"}),
    )
    .await;
    let e = c.hello(with_auth(hello(ID, "CONS", &[]), "k1")).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    // A stream that failed (Hello timeout) takes no Hello.
    let id2 = "0a1b2c3d-4e5f-4a6b-8c7d-000000000002";
    f.plugin_request(
        "late",
        "k2",
        json!({"streamId": id2, "role": "Producer", "gateway": "dtn", "dataChannel": "Plain", "helloTimeout": "1s"}),
    )
    .await;
    f.wait_request("late", 20, |sr| phase(sr) == Some(Phase::Failed)).await;
    let e = c.hello(with_auth(hello(id2, "PROD", &["192.0.2.5:1"]), "k2")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // A producer with static targets takes no Hello.
    let id3 = "0a1b2c3d-4e5f-4a6b-8c7d-000000000003";
    let sr: scistream_api::StreamRequest = serde_json::from_value(json!({"apiVersion": "scistream.io/v1alpha1",
        "kind": "StreamRequest", "metadata": {"name": "static"},
        "spec": {"streamId": id3, "role": "Producer", "gateway": "dtn", "dataChannel": "Plain", "targets": ["192.0.2.5:1"]}}))
    .unwrap();
    f.requests().create(&Default::default(), &sr).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let e = loop {
        // Until the endpoint's index has seen it, it is NOT_FOUND.
        let e = c.hello(with_auth(hello(id3, "PROD", &["192.0.2.5:1"]), "k")).await.unwrap_err();
        if e.code() != Code::NotFound || tokio::time::Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Three failures with one wrong key: that key is refused for the rest of the window, the
    // right key from the same address is not.
    for _ in 0..3 {
        let e = c.hello(with_auth(hello(ID, "CONS", &[]), "guess")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let e = c.hello(with_auth(hello(ID, "CONS", &[]), "guess")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("too many failed authentications with this credential"), "{e:?}");
    let e = c.hello(with_auth(hello(ID, "CONS", &[]), "k1")).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "authenticated, then no listeners: {e:?}");
    // Two more keys fail: five failures from the address, so every key is refused.
    for guess in ["guess-2", "guess-3"] {
        let e = c.hello(with_auth(hello(ID, "CONS", &[]), guess)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let e = c.hello(with_auth(hello(ID, "CONS", &[]), "k1")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("with many credentials"), "{e:?}");
    f.shutdown().await;
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<bytes::Bytes>,
>;

fn https_client(ca_pem: &str) -> HttpsClient {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}
