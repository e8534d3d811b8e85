//! A facility for control-endpoint tests: the embedded API server with our CRDs, two gateway
//! nodes and a ready Gateway `dtn`, a stand-in kubelet, the real operator (in-process), and the
//! control endpoint running as the operator's service account with exactly the RBAC rules the
//! chart ships, on real TLS sockets on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node, Pod, Secret},
        rbac::v1::{ClusterRole, PolicyRule},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use scistream_api::{DataChannel, Gateway, StreamRequest, keys};
use scistream_control_endpoint::{
    AuthConfig, EndpointConfig, Metrics, handler::HandlerConfig, legacy::Placement,
    proto::control_client::ControlClient, tls::TlsSource,
};
use scistream_testcluster::TestCluster;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[path = "../../../controller/tests/common/wait.rs"]
mod wait;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
pub use wait::wait_until;

pub const GATEWAY_NS: &str = "scistream-gateway";
pub const USER_NS: &str = "science";
pub const SYSTEM_NS: &str = "scistream-system";
/// The endpoint's own identity (the operator's service account).
pub const ENDPOINT_USER: &str = "system:serviceaccount:scistream-system:scistream-operator";
/// A user allowed to create/patch/delete StreamRequests in USER_NS.
pub const ALICE: &str = "alice-token";
/// A user with no rights.
pub const BOB: &str = "bob-token";
/// The introspected user allowed in USER_NS (mode `introspection`, prefix `globus:`).
pub const CAROL_USER: &str = "globus:carol@uni.edu";

pub struct Facility {
    pub cluster: TestCluster,
    pub client: Client,
    operator: (CancellationToken, JoinHandle<anyhow::Result<()>>),
    kubelet: JoinHandle<()>,
    endpoint: Option<(CancellationToken, JoinHandle<scistream_control_endpoint::Result<()>>)>,
    pub grpc: SocketAddr,
    pub http: Option<SocketAddr>,
    pub cert_pem: Option<String>,
    pub registry: std::sync::Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
}

fn node(name: &str, wan: &str, lan: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"scistream.io/gateway": "dtn"},
                     "annotations": {keys::ANNOTATION_WAN_ADDRESS: wan, keys::ANNOTATION_LAN_ADDRESS: lan}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": lan}]}
    }))
    .unwrap()
}

fn shipped_rules() -> Vec<PolicyRule> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../charts/scistream-operator/files/operator-clusterrole-rules.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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
            }),
            listeners_wait: Duration::from_secs(10),
            ..HandlerConfig::default()
        },
        max_auth_failures: 50,
        auth_failure_window: Duration::from_secs(60),
        max_message_bytes: scistream_api::control::MAX_MESSAGE_BYTES,
    }
}

impl Facility {
    /// A facility with the operator running and Gateway `dtn` ready (ports `5100..=last_port`
    /// on each of two nodes); the endpoint is not started yet.
    pub async fn start(name: &str, last_port: i32) -> Facility {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cluster = TestCluster::builder()
            .name(name)
            .user("endpoint-token", ENDPOINT_USER, &[])
            .user(ALICE, "alice", &["scientists"])
            .user(BOB, "bob", &[])
            .start()
            .await
            .unwrap();
        let client = cluster.client().await.unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in [Gateway::crd(), StreamRequest::crd()] {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        wait_until(Duration::from_secs(10), || {
            let client = client.clone();
            async move { Api::<Gateway>::all(client).list(&Default::default()).await.is_ok() }
        })
        .await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for (ns, level) in [(GATEWAY_NS, "privileged"), (USER_NS, "restricted"), (SYSTEM_NS, "restricted")] {
            let object = serde_json::from_value(
                json!({"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": level}}}),
            )
            .unwrap();
            namespaces.create(&PostParams::default(), &object).await.unwrap();
        }
        let nodes: Api<Node> = Api::all(client.clone());
        for (n, wan, lan) in [("gw-a", "198.51.100.1", "192.0.2.1"), ("gw-b", "198.51.100.2", "192.0.2.2")] {
            nodes.create(&PostParams::default(), &node(n, wan, lan)).await.unwrap();
        }
        rbac(&client).await;
        let kubelet = tokio::spawn(kubelet(client.clone()));
        let args = <scistream_controller::Args as clap::Parser>::parse_from([
            "scistream-operator",
            "--kubeconfig",
            &cluster.kubeconfig_path().display().to_string(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--namespace",
            "default",
            "--no-leader-election",
            "--no-control-endpoint",
            "--resync-seconds",
            "10",
            "--drain-seconds",
            "1",
        ]);
        let token = CancellationToken::new();
        let operator = (token.clone(), tokio::spawn(scistream_controller::run_until(args, token)));
        let gw: Gateway = serde_json::from_value(json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "dtn"},
            "spec": {"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "100Gbps", "podNamespace": GATEWAY_NS,
                     "portRange": {"start": 5100, "end": last_port}, "implementation": "S2ds"}
        }))
        .unwrap();
        let gateways: Api<Gateway> = Api::all(client.clone());
        gateways.patch("dtn", &PatchParams::apply("test").force(), &Patch::Apply(&gw)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let gw = gateways.get("dtn").await.unwrap();
            if gw.status.as_ref().is_some_and(|s| s.ready_nodes == 2) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "gateway never ready: {:?}", gw.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Facility {
            cluster,
            client,
            operator,
            kubelet,
            endpoint: None,
            grpc: "127.0.0.1:0".parse().unwrap(),
            http: None,
            cert_pem: None,
            registry: Default::default(),
        }
    }

    /// Starts the control endpoint as the operator's service account.
    pub async fn start_endpoint(&mut self, config: EndpointConfig) {
        let client = self.cluster.client_for_token("endpoint-token").await.unwrap();
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

    pub fn requests(&self) -> Api<StreamRequest> {
        Api::namespaced(self.client.clone(), USER_NS)
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
        let sr: StreamRequest = serde_json::from_value(json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest", "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        self.requests().create(&PostParams::default(), &sr).await.unwrap()
    }

    /// Waits until `ns/name` satisfies `cond`.
    pub async fn wait_request(&self, name: &str, secs: u64, cond: impl Fn(&StreamRequest) -> bool) -> StreamRequest {
        wait::request_until(&self.requests(), name, secs, cond).await
    }

    /// Waits until `name` is gone.
    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let api = self.requests();
        let name = name.to_owned();
        wait_until(Duration::from_secs(secs), || {
            let (api, name) = (api.clone(), name.clone());
            async move { api.get_opt(&name).await.unwrap().is_none() }
        })
        .await;
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
        self.operator.0.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.operator.1).await;
        self.kubelet.abort();
        self.cluster.shutdown().await;
    }
}

/// The endpoint's ClusterRole is exactly the shipped rules; alice and carol may manage
/// StreamRequests in USER_NS; bob and dave may not.
async fn rbac(client: &Client) {
    let crs: Api<ClusterRole> = Api::all(client.clone());
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "scistream-operator"}})).unwrap();
    crs.create(&PostParams::default(), &ClusterRole { rules: Some(shipped_rules()), ..role }).await.unwrap();
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

/// Marks relay pods Running and Ready; removes pods being deleted (as a kubelet would).
async fn kubelet(client: Client) {
    let api: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
    while let Some(Ok(pod)) = events.next().await {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
            continue;
        }
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            continue;
        }
        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "relay", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                                   "state": {"running": {}}}]}});
        let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
    }
}

/// Metadata map with the `authorization` credential.
pub fn with_auth<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    request.metadata_mut().insert("authorization", token.parse().unwrap());
    request
}

/// An RFC 7662 introspection endpoint for client `endpoint`/`s3cret`: `carol-token` is carol,
/// `dave-token` is dave (no RBAC), anything else is inactive.
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
            let body = match form.get("token").map(String::as_str) {
                Some("carol-token") => json!({"active": true, "username": "carol@uni.edu", "sub": "c-1"}),
                Some("dave-token") => json!({"active": true, "username": "dave@uni.edu"}),
                _ => json!({"active": false}),
            };
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
        prefix: "globus:".into(),
    }
}
