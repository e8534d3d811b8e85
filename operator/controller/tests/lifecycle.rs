//! The StreamRequest lifecycle against the embedded API server: reservation, Hello,
//! relays, Ready, release; Hello timeout; capacity exhaustion; refused combinations.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use scistream_api::{Phase, StreamRequest, conditions};
use scistream_testkit::{Facility, GATEWAY_NS, USER_NS, wait_until};
use serde_json::json;

const ID: &str = "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d";

fn gateway_spec(implementation: &str, start: i32, end: i32) -> serde_json::Value {
    json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "100Gbps", "podNamespace": GATEWAY_NS,
           "portRange": {"start": start, "end": end}, "implementation": implementation})
}

fn phase(sr: &StreamRequest) -> Option<Phase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

fn reason(sr: &StreamRequest, type_: &str) -> String {
    sr.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, type_))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn peer_certificate() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["peer".to_owned()]).unwrap().self_signed(&key).unwrap().pem()
}

async fn ready_facility(implementation: &str, start: i32, end: i32) -> Facility {
    let mut f = Facility::start("prod").await;
    f.start_operator(false);
    f.apply_gateway(gateway_spec(implementation, start, end)).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f
}

#[tokio::test]
async fn static_producer_goes_ready_then_releases_everything() {
    let f = ready_facility("S2ds", 5100, 5119).await;
    f.create_request(
        "hpc",
        json!({"streamId": ID, "role": "Producer", "gateway": "dtn", "numConnections": 4,
        "rate": "10Gbps", "targets": ["192.0.2.50:7000", "192.0.2.51:7000"], "peerCertificate": peer_certificate()}),
    )
    .await;
    let sr = f.wait_request("hpc", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let status = sr.status.clone().unwrap();
    assert_eq!(status.listeners.len(), 4);
    assert!(status.listeners.iter().all(|l| l.starts_with("198.51.100.")), "{:?}", status.listeners);
    assert!(status.certificate.as_deref().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(status.reserved_time.is_some() && status.ready_time.is_some());
    assert_eq!(reason(&sr, "HelloReceived"), "StaticTargets");
    // The key stays in the gateway namespace; the status has only the certificate.
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), GATEWAY_NS);
    let secret = secrets.get(&format!("s2ds-{ID}-producer-tls")).await.unwrap();
    assert!(secret.data.unwrap().contains_key("tls.key"));
    assert!(!serde_json::to_string(&sr).unwrap().contains("PRIVATE KEY"));
    // One relay config per node used, plus the pinned peer certificate.
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), GATEWAY_NS);
    let cm = cms.get(&format!("s2ds-{ID}-producer")).await.unwrap();
    let data = cm.data.unwrap();
    assert!(data.contains_key("peer.crt"));
    let config = data.iter().find(|(k, _)| k.starts_with("relay-")).unwrap().1;
    assert!(config.contains("mode: tls-server") && config.contains("192.0.2.50:7000"), "{config}");
    // The gateway holds 4 listener ports and 1 metrics port for it (its totals follow the
    // holding within moments).
    let gw = f.wait_gateway(10, |g| g.status.as_ref().is_some_and(|s| (s.ports_in_use, s.streams) == (5, 1))).await;
    let st = gw.status.unwrap();
    assert_eq!(st.bandwidth_summary.as_deref(), Some("10Gbps/100Gbps"));

    f.requests().delete("hpc", &DeleteParams::default()).await.unwrap();
    f.assert_released("hpc", ID).await;
    let st = f.gateway().await.status.unwrap();
    assert_eq!((st.ports_in_use, st.bandwidth_promised_bps), (0, 0));
    f.shutdown().await;
}

#[tokio::test]
async fn hello_from_the_producer_starts_the_relays() {
    let f = ready_facility("S2ds", 5100, 5119).await;
    f.create_request(
        "beam",
        json!({"streamId": ID, "role": "Producer", "gateway": "dtn", "dataChannel": "Plain",
        "helloKeySecretRef": {"name": "beam-key"}, "helloTimeout": "60s"}),
    )
    .await;
    let sr = f.wait_request("beam", 20, |sr| phase(sr) == Some(Phase::AwaitingHello)).await;
    assert_eq!(reason(&sr, "Reserved"), "Reserved");
    assert!(f.pods().list(&Default::default()).await.unwrap().items.is_empty(), "relays must wait for Hello");
    // What the control endpoint records on Hello (its own field manager).
    let hello = json!({"apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest",
        "status": {"helloTime": "2026-01-01T00:00:00Z", "prodListeners": ["192.0.2.60:9000"]}});
    f.requests()
        .patch_status("beam", &PatchParams::apply("scistream-control-endpoint"), &Patch::Apply(&hello))
        .await
        .unwrap();
    let sr = f.wait_request("beam", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let status = sr.status.unwrap();
    assert_eq!(status.prod_listeners, vec!["192.0.2.60:9000"], "the operator must not clobber Hello fields");
    assert!(status.hello_time.is_some());
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), GATEWAY_NS);
    let cm = cms.get(&format!("s2ds-{ID}-producer")).await.unwrap();
    assert!(cm.data.unwrap().values().any(|v| v.contains("192.0.2.60:9000") && v.contains("mode: plain")));
    f.requests().delete("beam", &DeleteParams::default()).await.unwrap();
    f.assert_released("beam", ID).await;
    f.shutdown().await;
}

#[tokio::test]
async fn no_hello_within_the_timeout_fails_and_releases() {
    let f = ready_facility("S2ds", 5100, 5119).await;
    f.create_request(
        "late",
        json!({"streamId": ID, "role": "Consumer", "gateway": "dtn",
        "helloKeySecretRef": {"name": "k"}, "helloTimeout": "2s"}),
    )
    .await;
    f.wait_request("late", 10, |sr| phase(sr) == Some(Phase::AwaitingHello)).await;
    let sr = f.wait_request("late", 15, |sr| phase(sr) == Some(Phase::Failed)).await;
    assert_eq!(reason(&sr, "Ready"), "HelloTimeout");
    let message = sr.status.as_ref().and_then(|s| conditions::find(&s.conditions, "Ready")).unwrap().message.clone();
    assert!(message.contains("helloTimeout"), "{message}");
    assert!(sr.status.as_ref().unwrap().failed_time.is_some());
    f.wait_gateway(10, |g| g.status.as_ref().is_some_and(|s| s.streams == 0 && s.ports_in_use == 0)).await;
    f.assert_nothing_left(ID).await;
    // Failed is terminal: it stays Failed and holds nothing.
    tokio::time::sleep(Duration::from_millis(300)).await; // let any stray reconcile run (assertion below is on state, not timing)
    let again = f.requests().get("late").await.unwrap();
    assert_eq!(phase(&again), Some(Phase::Failed));
    f.requests().delete("late", &DeleteParams::default()).await.unwrap();
    f.assert_released("late", ID).await;
    f.shutdown().await;
}

fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[tokio::test]
async fn exhausted_ports_wait_then_proceed_when_freed() {
    // 2 nodes x 7 ports: a stream of 6 connections and its relay's health port fill a node.
    let f = ready_facility("Haproxy", 5100, 5106).await;
    for (name, n) in [("a", 1), ("b", 2)] {
        f.create_request(
            name,
            json!({"streamId": id(n), "role": "Producer", "gateway": "dtn", "numConnections": 6,
            "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]}),
        )
        .await;
        f.wait_request(name, 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    }
    f.create_request(
        "c",
        json!({"streamId": id(3), "role": "Producer", "gateway": "dtn", "numConnections": 3,
        "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]}),
    )
    .await;
    let sr = f.wait_request("c", 20, |sr| reason(sr, "Reserved") == "PortsExhausted").await;
    let message = sr.status.as_ref().and_then(|s| conditions::find(&s.conditions, "Reserved")).unwrap().message.clone();
    assert!(message.contains("needs 3 ports") && message.contains("0 free on gw-a"), "{message}");
    assert_eq!(phase(&sr), Some(Phase::Pending));
    f.requests().delete("a", &DeleteParams::default()).await.unwrap();
    f.assert_released("a", &id(1)).await;
    f.wait_request("c", 30, |sr| phase(sr) == Some(Phase::Ready)).await;
    scistream_core::allocator::check(&f.wait_totals_match_holdings(10).await, None).unwrap();
    f.shutdown().await;
}

#[tokio::test]
async fn refused_combinations_and_missing_gateways_are_explained() {
    let f = ready_facility("Haproxy", 5100, 5119).await;
    f.create_request(
        "tls-on-haproxy",
        json!({"streamId": id(4), "role": "Producer", "gateway": "dtn",
        "targets": ["192.0.2.50:7000"]}),
    )
    .await;
    let sr = f.wait_request("tls-on-haproxy", 20, |sr| reason(sr, "Ready") == "InvalidSpec").await;
    let message = sr.status.as_ref().and_then(|s| conditions::find(&s.conditions, "Ready")).unwrap().message.clone();
    assert!(message.contains("dataChannel: Plain"), "{message}");
    assert_eq!(phase(&sr), Some(Phase::Pending));
    f.create_request(
        "nowhere",
        json!({"streamId": id(5), "role": "Producer", "gateway": "nope",
        "targets": ["192.0.2.50:7000"]}),
    )
    .await;
    let sr = f.wait_request("nowhere", 20, |sr| reason(sr, "Ready") == "GatewayNotFound").await;
    assert_eq!(phase(&sr), Some(Phase::Pending));
    assert!(f.wait_totals_match_holdings(10).await.is_empty());
    for name in ["tls-on-haproxy", "nowhere"] {
        f.requests().delete(name, &DeleteParams::default()).await.unwrap();
    }
    f.wait_request("nowhere", 1, |_| true).await; // still readable until the finalizer ran
    wait_until(Duration::from_secs(20), || {
        let api = f.requests();
        async move { api.list(&Default::default()).await.unwrap().items.is_empty() }
    })
    .await;
    let _ = USER_NS;
    let _ = ResourceExt::name_any(&f.gateway().await);
    f.shutdown().await;
}

/// Serves an s2ds-style metrics page whose byte counter grows by 125,000,000 per scrape.
async fn fake_relay_metrics(port: u16) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        for scrape in 1..=200u64 {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf).await;
            let body = format!(
                "s2ds_bytes_total{{stream=\"s\",listener=\"0\",direction=\"target_to_client\"}} {}\n\
                 s2ds_bytes_total{{stream=\"s\",listener=\"0\",direction=\"client_to_target\"}} 5\n",
                scrape * 125_000_000
            );
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    })
}

#[tokio::test]
async fn bytes_and_throughput_are_read_from_the_relays() {
    let f = Facility::start("transfer").await;
    // The relays' metrics endpoints bind the nodes' LAN addresses: put those on loopback.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(f.client.clone());
    for n in ["gw-a", "gw-b"] {
        let patch = json!({"metadata": {"annotations": {"scistream.io/lan-address": "127.0.0.1"}}});
        nodes.patch(n, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    let mut f = f;
    f.start_operator(false);
    // A port range unlikely to be in use on this machine.
    f.apply_gateway(gateway_spec("S2ds", 47100, 47119)).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f.create_request(
        "t",
        json!({"streamId": ID, "role": "Producer", "gateway": "dtn", "numConnections": 1,
        "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]}),
    )
    .await;
    let sr = f.wait_request("t", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let port = sr.status.unwrap().allocations[0].metrics_port.unwrap();
    let server = fake_relay_metrics(u16::try_from(port).unwrap()).await;
    let sr = f
        .wait_request("t", 20, |sr| {
            sr.status.as_ref().and_then(|s| s.transfer.as_ref()).is_some_and(|t| t.throughput.is_some())
        })
        .await;
    let transfer = sr.status.unwrap().transfer.unwrap();
    assert!(transfer.bytes >= 250_000_000, "{transfer:?}");
    assert!(transfer.throughput.unwrap().ends_with("bps"));
    // A later reconcile (any status change) must not remove the poller's field.
    f.requests().patch("t", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"rate": "2Gbps"}}))).await.unwrap();
    let sr = f.wait_request("t", 20, |sr| sr.status.as_ref().and_then(|s| s.observed_generation) == Some(2)).await;
    assert!(sr.status.unwrap().transfer.is_some());
    server.abort();
    f.shutdown().await;
}

/// Regression: a changed rate used to leave the gateway's promise at the old value.
#[tokio::test]
async fn rate_changes_are_readmitted_against_the_gateway() {
    let mut f = Facility::start("resize").await;
    f.start_operator(false);
    let mut spec = gateway_spec("S2ds", 5100, 5119);
    spec["bandwidth"] = json!("10Gbps");
    f.apply_gateway(spec).await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    f.create_request(
        "r",
        json!({"streamId": ID, "role": "Producer", "gateway": "dtn", "numConnections": 1,
        "rate": "4Gbps", "dataChannel": "Plain", "targets": ["192.0.2.50:7000"]}),
    )
    .await;
    f.wait_request("r", 20, |sr| phase(sr) == Some(Phase::Ready)).await;
    let set_rate = |rate: &'static str| {
        let api = f.requests();
        async move {
            api.patch("r", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"rate": rate}}))).await.unwrap()
        }
    };
    set_rate("8Gbps").await;
    f.wait_gateway(20, |g| g.status.as_ref().is_some_and(|s| s.bandwidth_promised_bps == 8_000_000_000)).await;
    // Too much: refused, the promise stays, an event says why.
    set_rate("12Gbps").await;
    f.wait_request("r", 20, |sr| sr.status.as_ref().and_then(|s| s.observed_generation) == Some(3)).await;
    assert_eq!(f.gateway().await.status.unwrap().bandwidth_promised_bps, 8_000_000_000);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(f.client.clone(), USER_NS);
    let reasons: Vec<String> =
        events.list(&Default::default()).await.unwrap().items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(reasons.iter().any(|r| r == "BandwidthExhausted"), "{reasons:?}");
    f.shutdown().await;
}

/// A Hello-key Secret that is missing (or lacks its key) is reported as HelloKeyMissing, not
/// a silent wait; once the Secret is there the request awaits Hello as usual.
#[tokio::test]
async fn a_missing_hello_key_secret_is_reported() {
    let f = ready_facility("S2ds", 5100, 5119).await;
    f.create_request(
        "keyless",
        json!({"streamId": ID, "role": "Consumer", "gateway": "dtn",
        "helloKeySecretRef": {"name": "keyless-hello"}, "helloTimeout": "120s"}),
    )
    .await;
    let sr = f
        .wait_request("keyless", 30, |sr| {
            phase(sr) == Some(Phase::AwaitingHello) && reason(sr, "HelloReceived") == "HelloKeyMissing"
        })
        .await;
    assert_eq!(reason(&sr, "Ready"), "HelloKeyMissing");
    let message = sr.status.as_ref().and_then(|s| conditions::find(&s.conditions, "Ready")).unwrap().message.clone();
    assert!(message.contains(&format!("{USER_NS}/keyless-hello")) && message.contains("does not exist"), "{message}");
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), USER_NS);
    let key: Secret =
        serde_json::from_value(json!({"metadata": {"name": "keyless-hello"}, "data": {"other": "eA=="}})).unwrap();
    secrets.create(&Default::default(), &key).await.unwrap();
    let sr = f.wait_request("keyless", 20, |sr| message_of(sr).contains("has no (or an empty) key key")).await;
    assert_eq!(reason(&sr, "HelloReceived"), "HelloKeyMissing");
    let fixed = json!({"data": {"key": "czNjcmV0"}});
    secrets.patch("keyless-hello", &PatchParams::default(), &Patch::Merge(&fixed)).await.unwrap();
    let sr = f.wait_request("keyless", 20, |sr| reason(sr, "HelloReceived") == "AwaitingHello").await;
    assert_eq!(phase(&sr), Some(Phase::AwaitingHello));
    assert!(!serde_json::to_string(&sr).unwrap().contains("czNjcmV0"), "the key never appears in the status");
    f.requests().delete("keyless", &DeleteParams::default()).await.unwrap();
    f.assert_released("keyless", ID).await;
    f.shutdown().await;
}

fn message_of(sr: &StreamRequest) -> String {
    sr.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, "HelloReceived"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}
