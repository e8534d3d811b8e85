//! Authentication modes (`none`, `introspection` against a small RFC 7662 server in the test)
//! and transports (plaintext behind the insecure option, the serving certificate reloaded from
//! its Secret).

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{CAROL_USER, Facility, SYSTEM_NS, endpoint_config, with_auth};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use scistream_control_endpoint::{AuthConfig, auth::INVALID_TOKEN, proto, tls};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig},
};

const UID: &str = "9e8d7c6b-5a49-4837-a625-140f0e0d0c0b";

fn req(role: &str) -> proto::Request {
    proto::Request { uid: UID.into(), role: role.into(), num_conn: 1, rate: 1000 }
}

#[tokio::test]
async fn none_mode_accepts_invalid_token_and_hello_with_it() {
    let mut f = Facility::start("mode-none", 5119).await;
    f.start_endpoint(endpoint_config(AuthConfig::None)).await;
    let client = f.grpc_client().await;
    let mut c = client.clone();
    let pending = tokio::spawn(async move { c.req(with_auth(req("PROD"), INVALID_TOKEN)).await });
    let hello = proto::Hello { uid: UID.into(), prod_listeners: vec!["192.0.2.8:80".into()], role: "PROD".into() };
    // Until the req's StreamRequest exists the uid is unknown: appctrl retries NOT_FOUND.
    let mut attempts = 0;
    let r = loop {
        attempts += 1;
        match client.clone().hello(with_auth(hello.clone(), INVALID_TOKEN)).await {
            Err(e) if e.code() == Code::NotFound && attempts < 100 => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => break other,
        }
    };
    assert_eq!(r.unwrap().into_inner().message, "Sending Prod listeners...");
    let reply = tokio::time::timeout(Duration::from_secs(10), pending).await.unwrap().unwrap().unwrap().into_inner();
    assert_eq!(reply.listeners.len(), 1);
    let mut c = client.clone();
    let e = c.hello(with_auth(hello, "another-token")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "Hello is still checked in mode none: {e:?}");
    c.release(with_auth(proto::Release { uid: UID.into() }, "anything")).await.unwrap();
    f.wait_gone(&format!("legacy-{UID}-prod"), 20).await;
    f.shutdown().await;
}

#[tokio::test]
async fn introspection_mode_maps_identities_to_users_checked_by_rbac() {
    let mut f = Facility::start("mode-introspection", 5119).await;
    let auth = common::introspection_auth(&f).await;
    assert!(CAROL_USER.starts_with("globus:"));
    f.start_endpoint(endpoint_config(auth)).await;
    let mut c = f.grpc_client().await;
    let e = c.req(with_auth(req("CONS"), "expired")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // Carol's token for another service (another scope and audience) is not one for us.
    let e = c.req(with_auth(req("CONS"), "carol-transfer-token")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("lacks scope"), "{e:?}");
    let e = c.req(with_auth(req("CONS"), "dave-token")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("globus:dave@uni.edu"), "{e:?}");
    let mut c2 = c.clone();
    let pending = tokio::spawn(async move { c2.req(with_auth(req("CONS"), "carol-token")).await });
    let name = format!("legacy-{UID}-cons");
    f.wait_request(&name, 20, |sr| sr.status.as_ref().is_some_and(|s| !s.listeners.is_empty())).await;
    let r = c
        .hello(with_auth(proto::Hello { uid: UID.into(), prod_listeners: vec![], role: "CONS".into() }, "carol-token"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.listeners.len(), 1);
    let reply = tokio::time::timeout(Duration::from_secs(10), pending).await.unwrap().unwrap().unwrap().into_inner();
    assert_eq!(reply.listeners, r.listeners);
    c.release(with_auth(proto::Release { uid: UID.into() }, "carol-token")).await.unwrap();
    f.wait_gone(&name, 20).await;
    f.shutdown().await;
}

#[tokio::test]
async fn insecure_mode_serves_plaintext() {
    let mut f = Facility::start("mode-insecure", 5119).await;
    let mut config = endpoint_config(AuthConfig::Kubernetes);
    config.insecure = true;
    f.start_endpoint(config).await;
    assert!(f.cert_pem.is_none());
    let mut c = f.grpc_client().await;
    let e = c.hello(with_auth(proto::Hello { uid: UID.into(), ..Default::default() }, "k")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    f.shutdown().await;
}

async fn call_with_ca(addr: SocketAddr, ca: &str) -> Result<tonic::Status, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await?;
    let mut c = proto::control_client::ControlClient::new(channel);
    Ok(c.hello(with_auth(proto::Hello { uid: UID.into(), ..Default::default() }, "k")).await.unwrap_err())
}

#[tokio::test]
async fn the_serving_certificate_comes_from_its_secret_and_reloads() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut f = Facility::start("tls-reload", 5119).await;
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), SYSTEM_NS);
    let tls_secret = |cert: &str, key: &str| Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [("tls.crt", cert), ("tls.key", key)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        metadata: kube::api::ObjectMeta { name: Some("control-cert".into()), ..Default::default() },
        ..Default::default()
    };
    let (cert1, key1) = tls::generate(&[], &["127.0.0.1".parse().unwrap()]).unwrap();
    secrets.create(&PostParams::default(), &tls_secret(&cert1, &key1)).await.unwrap();
    let mut config = endpoint_config(AuthConfig::Kubernetes);
    config.tls.secret = Some("control-cert".into());
    f.start_endpoint(config).await;
    assert_eq!(f.cert_pem.as_deref(), Some(cert1.as_str()));
    assert_eq!(call_with_ca(f.grpc, &cert1).await.unwrap().code(), Code::NotFound);
    let (cert2, key2) = tls::generate(&[], &["127.0.0.1".parse().unwrap()]).unwrap();
    assert!(call_with_ca(f.grpc, &cert2).await.is_err(), "a client trusting only the next certificate fails");
    secrets.patch("control-cert", &PatchParams::default(), &Patch::Merge(tls_secret(&cert2, &key2))).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while call_with_ca(f.grpc, &cert2).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(call_with_ca(f.grpc, &cert1).await.is_err(), "the old certificate is no longer served");
    f.shutdown().await;
}

#[tokio::test]
async fn a_generated_certificate_is_stored_and_reused() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut f = Facility::start("tls-generated", 5119).await;
    f.start_endpoint(endpoint_config(AuthConfig::Kubernetes)).await;
    let first = f.cert_pem.clone().unwrap();
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), SYSTEM_NS);
    let stored = secrets.get("scistream-control-tls").await.unwrap();
    assert_eq!(stored.data.unwrap()["tls.crt"].0, first.as_bytes());
    assert_eq!(call_with_ca(f.grpc, &first).await.unwrap().code(), Code::NotFound);
    // A second replica (or a restart) serves the same certificate.
    f.stop_endpoint().await;
    f.start_endpoint(endpoint_config(AuthConfig::Kubernetes)).await;
    assert_eq!(f.cert_pem.as_deref(), Some(first.as_str()));
    // Other names: a new certificate replaces it.
    f.stop_endpoint().await;
    let mut config = endpoint_config(AuthConfig::Kubernetes);
    config.tls.dns_names = vec!["s2cs.example.org".into()];
    f.start_endpoint(config).await;
    assert_ne!(f.cert_pem.as_deref(), Some(first.as_str()));
    f.shutdown().await;
}
