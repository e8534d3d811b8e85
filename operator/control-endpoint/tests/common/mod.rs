//! A facility for control-endpoint tests: the test kit's facility (embedded API server with
//! our CRDs, two gateway nodes, a stand-in kubelet) with the real operator (in-process) and a
//! ready Gateway `dtn`, plus what only these tests need: the control endpoint running as the
//! operator's service account with exactly the RBAC rules the chart ships, on real TLS
//! sockets on 127.0.0.1, users for its auth modes and an introspection server.
#![allow(dead_code, clippy::unwrap_used)]

use std::{net::SocketAddr, ops::Deref, path::PathBuf, time::Duration};

use k8s_openapi::api::{
    core::v1::Secret,
    rbac::v1::{ClusterRole, PolicyRule},
};
use kube::{Api, Client, api::PostParams};
use scistream_api::{DataChannel, RateEnforcement, StreamRequest};
use scistream_control_endpoint::{
    AuthConfig, EndpointConfig, Metrics, auth::introspection::Expectations, handler::HandlerConfig, legacy::Placement,
    proto::control_client::ControlClient, tls::TlsSource,
};
use scistream_testkit::{OperatorOptions, USER_NS, gateway_spec};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

pub const SYSTEM_NS: &str = "scistream-system";
/// The endpoint's own identity (the operator's service account).
pub const ENDPOINT_USER: &str = "system:serviceaccount:scistream-system:scistream-operator";
/// Bearer token of [`ENDPOINT_USER`].
const ENDPOINT_TOKEN: &str = "endpoint-token";
/// A user allowed to create/patch/delete StreamRequests in USER_NS.
pub const ALICE: &str = "alice-token";
/// A user with no rights.
pub const BOB: &str = "bob-token";
/// The introspected user allowed in USER_NS (mode `introspection`, prefix `globus:`).
pub const CAROL_USER: &str = "globus:carol@uni.edu";

/// The test kit's facility (`f.client`, `f.requests()`, `f.wait_request(..)`... through
/// `Deref`) and the control endpoint.
pub struct Facility {
    kit: scistream_testkit::Facility,
    endpoint: Option<(CancellationToken, JoinHandle<scistream_control_endpoint::Result<()>>)>,
    pub grpc: SocketAddr,
    pub http: Option<SocketAddr>,
    pub cert_pem: Option<String>,
    pub registry: std::sync::Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
}

impl Deref for Facility {
    type Target = scistream_testkit::Facility;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

fn shipped_rules(file: &str) -> Vec<PolicyRule> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/scistream-operator/files").join(file);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A Role in `namespace` with the chart's rules of `file`, bound to the endpoint's user.
async fn shipped_role(client: &Client, namespace: &str, file: &str) {
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), namespace);
    let role = json!({"metadata": {"name": "scistream-operator"}, "rules": shipped_rules(file)});
    roles.create(&PostParams::default(), &serde_json::from_value(role).unwrap()).await.unwrap();
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client.clone(), namespace);
    let binding = json!({"metadata": {"name": "scistream-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scistream-operator"},
        "subjects": [{"kind": "User", "name": ENDPOINT_USER}]});
    rbs.create(&PostParams::default(), &serde_json::from_value(binding).unwrap()).await.unwrap();
}

/// Endpoint settings for a facility (the test may adjust them before [`Facility::start_endpoint`]).
pub fn endpoint_config(auth: AuthConfig) -> EndpointConfig {
    EndpointConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        insecure: false,
        tls: TlsSource {
            namespace: SYSTEM_NS.into(),
            secret: None,
            generated_secret: "scistream-control-tls".into(),
            dns_names: vec!["control.example.org".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        },
        auth,
        handler: HandlerConfig {
            placement: Some(Placement {
                namespace: USER_NS.into(),
                gateway: "dtn".into(),
                data_channel: DataChannel::Plain,
                rate_enforcement: RateEnforcement::ReservationOnly,
            }),
            listeners_wait: Duration::from_secs(10),
            ..HandlerConfig::default()
        },
        max_auth_failures: 50,
        max_auth_failures_per_address: 500,
        auth_failure_window: Duration::from_secs(60),
        max_message_bytes: scistream_api::control::MAX_MESSAGE_BYTES,
    }
}

impl Facility {
    /// A facility with the operator running and Gateway `dtn` ready (ports `5100..=last_port`
    /// on each of two nodes); the endpoint is not started yet.
    pub async fn start(name: &str, last_port: i32) -> Facility {
        let mut kit = scistream_testkit::Facility::builder(name)
            .user(ENDPOINT_TOKEN, ENDPOINT_USER, &[])
            .user(ALICE, "alice", &["scientists"])
            .user(BOB, "bob", &[])
            .namespace(SYSTEM_NS, "restricted")
            .start()
            .await;
        rbac(&kit.client).await;
        // The operator's own control endpoint stays off: each test starts one with its settings.
        kit.start_operator_with(OperatorOptions::default().resync_seconds(10).drain_seconds(1));
        kit.apply_gateway(gateway_spec(last_port)).await;
        kit.wait_gateway(20, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
        Facility {
            kit,
            endpoint: None,
            grpc: "127.0.0.1:0".parse().unwrap(),
            http: None,
            cert_pem: None,
            registry: Default::default(),
        }
    }

    /// Starts the control endpoint as the operator's service account.
    pub async fn start_endpoint(&mut self, config: EndpointConfig) {
        let client = self.kit.cluster.client_for_token(ENDPOINT_TOKEN).await.unwrap();
        let metrics = Metrics::new(&mut self.registry.lock().unwrap());
        let bound = scistream_control_endpoint::bind(client, config, metrics).await.unwrap();
        self.grpc = bound.grpc_addr().unwrap();
        self.http = bound.http_addr();
        self.cert_pem = bound.certificate_pem();
        let token = CancellationToken::new();
        self.endpoint = Some((token.clone(), tokio::spawn(bound.run(token))));
    }

    /// A tonic client over TLS trusting only the endpoint's certificate (as 1.x clients do).
    pub async fn grpc_client(&self) -> ControlClient<Channel> {
        let channel = match &self.cert_pem {
            Some(pem) => Channel::from_shared(format!("https://127.0.0.1:{}", self.grpc.port()))
                .unwrap()
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .unwrap(),
            None => Channel::from_shared(format!("http://127.0.0.1:{}", self.grpc.port())).unwrap(),
        };
        ControlClient::new(channel.connect().await.unwrap())
    }

    /// Creates a Hello-key Secret and a StreamRequest the way the kubectl plugin does.
    pub async fn plugin_request(&self, name: &str, key: &str, spec: serde_json::Value) -> StreamRequest {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), USER_NS);
        let secret =
            serde_json::from_value(json!({"metadata": {"name": format!("{name}-key")}, "stringData": {"key": key}}))
                .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        let mut spec = spec;
        spec["helloKeySecretRef"] = json!({"name": format!("{name}-key")});
        self.create_request(name, spec).await
    }

    pub async fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry.lock().unwrap()).unwrap();
        text
    }

    pub async fn stop_endpoint(&mut self) {
        if let Some((token, handle)) = self.endpoint.take() {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(20), handle).await.expect("endpoint stops").unwrap().unwrap();
        }
    }

    pub async fn shutdown(mut self) {
        self.stop_endpoint().await;
        self.kit.shutdown().await;
    }
}

/// The endpoint's ClusterRole and Roles are exactly the shipped rules (its own namespace's in
/// SYSTEM_NS, the legacy namespace's in USER_NS, where legacy `req`s create streams here);
/// alice and carol may manage StreamRequests in USER_NS; bob and dave may not.
async fn rbac(client: &Client) {
    let crs: Api<ClusterRole> = Api::all(client.clone());
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "scistream-operator"}})).unwrap();
    let rules = shipped_rules("operator-clusterrole-rules.yaml");
    crs.create(&PostParams::default(), &ClusterRole { rules: Some(rules), ..role }).await.unwrap();
    shipped_role(client, SYSTEM_NS, "operator-role-rules.yaml").await;
    shipped_role(client, USER_NS, "operator-legacy-role-rules.yaml").await;
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let binding = json!({"metadata": {"name": "scistream-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "scistream-operator"},
        "subjects": [{"kind": "User", "name": ENDPOINT_USER}]});
    crbs.create(&PostParams::default(), &serde_json::from_value(binding).unwrap()).await.unwrap();
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), USER_NS);
    let role = json!({"metadata": {"name": "streamers"}, "rules": [{"apiGroups": ["scistream.io"],
        "resources": ["streamrequests"], "verbs": ["get", "list", "create", "patch", "delete"]}]});
    roles.create(&PostParams::default(), &serde_json::from_value(role).unwrap()).await.unwrap();
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client.clone(), USER_NS);
    let binding = json!({"metadata": {"name": "streamers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "streamers"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": CAROL_USER}]});
    rbs.create(&PostParams::default(), &serde_json::from_value(binding).unwrap()).await.unwrap();
}

/// Metadata map with the `authorization` credential.
pub fn with_auth<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    request.metadata_mut().insert("authorization", token.parse().unwrap());
    request
}

/// The scope tokens for the endpoint carry (SciStream 1.x's form with Globus Auth).
pub const SCOPE: &str = "https://auth.globus.org/scopes/endpoint/scistream";

/// An RFC 7662 introspection endpoint for client `endpoint`/`s3cret`, answering as Globus
/// Auth does: `carol-token` is carol, `dave-token` is dave (no RBAC), both for [`SCOPE`] and
/// audience `endpoint`; `carol-transfer-token` is carol's token for another service; anything
/// else is inactive.
pub async fn introspection_server() -> SocketAddr {
    use warp::Filter;
    let route = warp::post()
        .and(warp::path("introspect"))
        .and(warp::header::<String>("authorization"))
        .and(warp::body::form::<std::collections::HashMap<String, String>>())
        .map(|auth: String, form: std::collections::HashMap<String, String>| {
            use base64::Engine;
            let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("endpoint:s3cret"));
            if auth != expected {
                return warp::reply::with_status(
                    warp::reply::json(&json!({"error": "invalid_client"})),
                    warp::http::StatusCode::UNAUTHORIZED,
                );
            }
            let ours = json!({"scope": SCOPE, "aud": ["endpoint"], "client_id": "s2uc-native-app"});
            let other = json!({"scope": "urn:globus:auth:scope:transfer.api.globus.org:all",
                "aud": ["transfer.api.globus.org"]});
            let (body, extra) = match form.get("token").map(String::as_str) {
                Some("carol-token") => (json!({"active": true, "username": "carol@uni.edu", "sub": "c-1"}), ours),
                Some("dave-token") => (json!({"active": true, "username": "dave@uni.edu"}), ours),
                Some("carol-transfer-token") => (json!({"active": true, "username": "carol@uni.edu"}), other),
                _ => (json!({"active": false}), json!({})),
            };
            let mut body = body;
            for (k, v) in extra.as_object().into_iter().flatten() {
                body[k] = v.clone();
            }
            warp::reply::with_status(warp::reply::json(&body), warp::http::StatusCode::OK)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    addr
}

/// Creates the introspection client-credentials Secret and returns the mode's settings.
pub async fn introspection_auth(f: &Facility) -> AuthConfig {
    let addr = introspection_server().await;
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), SYSTEM_NS);
    let creds = json!({"metadata": {"name": "introspection"},
        "stringData": {"client_id": "endpoint", "client_secret": "s3cret"}});
    secrets.create(&PostParams::default(), &serde_json::from_value(creds).unwrap()).await.unwrap();
    AuthConfig::Introspection {
        url: format!("http://{addr}/introspect"),
        credentials_secret: "introspection".into(),
        expect: Expectations { prefix: "globus:".into(), scope: Some(SCOPE.into()), audience: Some("endpoint".into()) },
    }
}
