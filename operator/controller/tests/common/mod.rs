//! A facility for operator tests: an embedded API server with our CRDs, gateway nodes, a
//! privileged gateway namespace, a stand-in kubelet for the gateway nodes, and operators
//! started and stopped at will.
//!
//! The stand-in kubelet marks relay pods Running and Ready as soon as they appear and removes
//! pods being deleted, as a kubelet would once their processes exit. (The node agent of
//! `kind-tests/nodeagent` runs real relays; these tests are about the operator's decisions
//! and API writes.)
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{Namespace, Node, Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use scistream_api::{Gateway, StreamRequest, keys};
use scistream_testcluster::TestCluster;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod wait;
pub use wait::wait_until;

/// Namespace of the relays.
pub const GATEWAY_NS: &str = "scistream-gateway";
/// Namespace of the users' StreamRequests.
pub const USER_NS: &str = "science";

pub struct Facility {
    pub cluster: TestCluster,
    pub client: Client,
    operators: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    kubelet: JoinHandle<()>,
    started: usize,
    /// Pods the stand-in kubelet must leave NotReady (by node).
    pub broken_nodes: Arc<Mutex<Vec<String>>>,
}

pub fn node(name: &str, wan: &str, lan: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"scistream.io/gateway": "dtn"},
                     "annotations": {keys::ANNOTATION_WAN_ADDRESS: wan, keys::ANNOTATION_LAN_ADDRESS: lan}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": lan}]}
    }))
    .unwrap()
}

impl Facility {
    pub async fn start(name: &str) -> Facility {
        Self::start_with_users(name, &[]).await
    }

    /// A facility whose API server also knows `(token, user, groups)` users (RBAC applies to them).
    pub async fn start_with_users(name: &str, users: &[(&str, &str, &[&str])]) -> Facility {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = TestCluster::builder().name(name);
        for (token, user, groups) in users {
            builder = builder.user(token, user, groups);
        }
        let cluster = builder.start().await.unwrap();
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
        for (ns, level) in [(GATEWAY_NS, "privileged"), (USER_NS, "restricted")] {
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
        let broken_nodes = Arc::new(Mutex::new(Vec::new()));
        let kubelet = tokio::spawn(kubelet(client.clone(), broken_nodes.clone()));
        Facility { cluster, client, operators: Vec::new(), kubelet, broken_nodes, started: 0 }
    }

    /// Starts an operator (several may run at once; `leader_election` decides whether they
    /// compete for the Lease).
    pub fn start_operator(&mut self, leader_election: bool) {
        let kubeconfig = self.cluster.kubeconfig_path().to_owned();
        self.start_operator_with(kubeconfig, leader_election);
    }

    /// Starts an operator authenticated as the user of `token`.
    pub fn start_operator_as(&mut self, token: &str, leader_election: bool) {
        let path = std::env::temp_dir().join(format!("scistream-operator-{}-{token}.kubeconfig", self.cluster.name()));
        std::fs::write(&path, self.cluster.kubeconfig_for_token(token)).unwrap();
        self.start_operator_with(path, leader_election);
    }

    fn start_operator_with(&mut self, kubeconfig: std::path::PathBuf, leader_election: bool) {
        let identity = format!("operator-{}", self.started);
        self.started += 1;
        let mut args = vec![
            "scistream-operator".to_owned(),
            "--kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
            "--metrics-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--namespace".to_owned(),
            "default".to_owned(),
            "--identity".to_owned(),
            identity,
            "--resync-seconds".to_owned(),
            "10".to_owned(),
            "--drain-seconds".to_owned(),
            "1".to_owned(),
            "--transfer-interval-seconds".to_owned(),
            "1".to_owned(),
            "--no-control-endpoint".to_owned(),
        ];
        if !leader_election {
            args.push("--no-leader-election".to_owned());
        }
        let args = <scistream_controller::Args as clap::Parser>::parse_from(args);
        let token = CancellationToken::new();
        let handle = tokio::spawn(scistream_controller::run_until(args, token.clone()));
        self.operators.push((token, handle));
    }

    /// Stops the most recently started operator and waits for it to exit.
    pub async fn stop_operator(&mut self) {
        if let Some((token, handle)) = self.operators.pop() {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(20), handle).await.expect("operator stops").unwrap().unwrap();
        }
    }

    pub async fn apply_gateway(&self, spec: serde_json::Value) -> Gateway {
        let gw: Gateway = serde_json::from_value(json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "dtn"}, "spec": spec
        }))
        .unwrap();
        let api: Api<Gateway> = Api::all(self.client.clone());
        api.patch("dtn", &PatchParams::apply("test").force(), &Patch::Apply(&gw)).await.unwrap()
    }

    pub fn requests(&self) -> Api<StreamRequest> {
        Api::namespaced(self.client.clone(), USER_NS)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), GATEWAY_NS)
    }

    pub async fn create_request(&self, name: &str, spec: serde_json::Value) -> StreamRequest {
        let sr: StreamRequest = serde_json::from_value(json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest", "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        self.requests().create(&PostParams::default(), &sr).await.unwrap()
    }

    /// Waits until the request satisfies `cond`, failing with its last status after `secs`.
    pub async fn wait_request(&self, name: &str, secs: u64, cond: impl Fn(&StreamRequest) -> bool) -> StreamRequest {
        wait::request_until(&self.requests(), name, secs, cond).await
    }

    pub async fn gateway(&self) -> Gateway {
        Api::<Gateway>::all(self.client.clone()).get("dtn").await.unwrap()
    }

    /// Waits until the gateway satisfies `cond`.
    pub async fn wait_gateway(&self, secs: u64, cond: impl Fn(&Gateway) -> bool) -> Gateway {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let gw = self.gateway().await;
            if cond(&gw) {
                return gw;
            }
            assert!(tokio::time::Instant::now() < deadline, "gateway never got there; last: {:#?}", gw.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the request is gone, then checks nothing of it is left.
    pub async fn assert_released(&self, name: &str, stream_id: &str) {
        let api = self.requests();
        wait_until(Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.to_owned();
            async move { api.get_opt(&name).await.unwrap().is_none() }
        })
        .await;
        self.assert_nothing_left(stream_id).await;
    }

    /// No pod, ConfigMap, Secret or reservation of `stream_id` remains.
    pub async fn assert_nothing_left(&self, stream_id: &str) {
        let selector = format!("{}={stream_id}", keys::LABEL_STREAM_ID);
        let lp = kube::api::ListParams::default().labels(&selector);
        let pods = self.pods().list(&lp).await.unwrap();
        assert!(pods.items.is_empty(), "pods left: {:?}", pods.items.iter().map(|p| p.name_any()).collect::<Vec<_>>());
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(self.client.clone(), GATEWAY_NS);
        assert!(cms.list(&lp).await.unwrap().items.is_empty(), "ConfigMaps left");
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), GATEWAY_NS);
        assert!(secrets.list(&lp).await.unwrap().items.is_empty(), "Secrets left");
        let gw = self.gateway().await;
        let held = gw.status.iter().flat_map(|s| &s.reservations).filter(|r| r.stream_id == stream_id).count();
        assert_eq!(held, 0, "reservations left: {:#?}", gw.status);
    }

    pub async fn shutdown(mut self) {
        while !self.operators.is_empty() {
            self.stop_operator().await;
        }
        self.kubelet.abort();
        self.cluster.shutdown().await;
    }
}

/// The stand-in kubelet (see the module docs).
async fn kubelet(client: Client, broken: Arc<Mutex<Vec<String>>>) {
    let api: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
    while let Some(Ok(pod)) = events.next().await {
        let ns = pod.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let name = pod.name_any();
        if pod.meta().deletion_timestamp.is_some() {
            let _ = pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
            continue;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let ready = !broken.lock().unwrap().contains(&node);
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        let is_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if phase.as_deref() == Some("Running") && is_ready == ready {
            continue;
        }
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": "relay", "ready": ready, "restartCount": 0, "image": "", "imageID": "",
                                   "state": if ready { json!({"running": {}}) } else { json!({"waiting": {"reason": "CrashLoopBackOff"}}) }}]
        }});
        let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
    }
}

pub fn labels_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.labels().clone()
}
