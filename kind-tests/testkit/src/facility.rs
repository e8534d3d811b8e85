//! A facility for operator tests: an embedded API server with our CRDs, a privileged gateway
//! namespace and a restricted user namespace, gateway nodes `gw-a` and `gw-b`, a stand-in
//! kubelet, and operators started and stopped at will.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use scistream_api::{Gateway, Reservation, StreamRequest, keys};
use scistream_testcluster::TestCluster;
use serde_json::json;

use crate::{
    kubelet::{StandInKubelet, node},
    operator::{OperatorOptions, OperatorTask, operator_args, spawn_operator},
    wait::{request_until, wait_until},
};

/// Namespace of the relays (pod security `privileged`: relays use the host network).
pub const GATEWAY_NS: &str = "scistream-gateway";
/// Namespace of the users' StreamRequests (pod security `restricted`).
pub const USER_NS: &str = "science";

/// The spec of Gateway `dtn` on both gateway nodes: 100 Gbit/s, relays in [`GATEWAY_NS`],
/// ports `5100..=last_port` on each node, the default relay implementation (`S2ds`); applied
/// with [`Facility::apply_gateway`], it gets the open policy of a test on one host.
pub fn gateway_spec(last_port: i32) -> serde_json::Value {
    json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "100Gbps", "podNamespace": GATEWAY_NS,
           "portRange": {"start": 5100, "end": last_port}})
}

/// A Gateway policy that allows what tests on one host need: Plain and MutualTLS, static
/// targets, and loopback, link-local and gateway-node targets.
pub fn open_policy() -> serde_json::Value {
    serde_json::to_value(scistream_api::policy::GatewayPolicy::open()).unwrap_or_default()
}

/// What a [`Facility`] starts with besides the fixed parts.
pub struct FacilityBuilder {
    name: String,
    users: Vec<(String, String, Vec<String>)>,
    namespaces: Vec<(String, String)>,
}

impl FacilityBuilder {
    /// A user the API server knows by bearer `token` (RBAC applies to it; the admin is
    /// [`Facility::client`]).
    pub fn user(mut self, token: &str, user: &str, groups: &[&str]) -> Self {
        self.users.push((token.to_owned(), user.to_owned(), groups.iter().map(|g| (*g).to_owned()).collect()));
        self
    }

    /// Another namespace, enforcing pod security `level`.
    pub fn namespace(mut self, name: &str, level: &str) -> Self {
        self.namespaces.push((name.to_owned(), level.to_owned()));
        self
    }

    /// Starts the API server, installs the CRDs (waiting until they are served), creates the
    /// namespaces and the two gateway nodes, and starts the stand-in kubelet. No operator runs
    /// yet.
    pub async fn start(self) -> Facility {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = TestCluster::builder().name(&self.name);
        for (token, user, groups) in &self.users {
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            builder = builder.user(token, user, &groups);
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
        let fixed = [(GATEWAY_NS, "privileged"), (USER_NS, "restricted")];
        let extra = self.namespaces.iter().map(|(n, l)| (n.as_str(), l.as_str()));
        for (ns, level) in fixed.into_iter().chain(extra) {
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
        let kubelet = StandInKubelet::spawn(client.clone());
        Facility { cluster, client, kubelet, operators: Vec::new(), started: 0 }
    }
}

/// One facility of an operator test (see the module docs). Call [`Facility::shutdown`] at
/// the end: it checks that every operator stops cleanly.
pub struct Facility {
    /// The embedded API server.
    pub cluster: TestCluster,
    /// An admin client of it.
    pub client: Client,
    /// The stand-in kubelet of the gateway nodes (see [`StandInKubelet::set_broken`]).
    pub kubelet: StandInKubelet,
    operators: Vec<OperatorTask>,
    /// Operators started so far: each gets its own identity.
    started: usize,
}

impl Facility {
    /// A facility whose API server is named `name` (also its kubeconfig context).
    pub fn builder(name: &str) -> FacilityBuilder {
        FacilityBuilder { name: name.to_owned(), users: Vec::new(), namespaces: Vec::new() }
    }

    /// A facility with no extra users or namespaces.
    pub async fn start(name: &str) -> Facility {
        Self::builder(name).start().await
    }

    /// Starts an operator as the admin with [`OperatorOptions::quick`] (several may run at
    /// once; `leader_election` decides whether they compete for the Lease).
    pub fn start_operator(&mut self, leader_election: bool) {
        self.start_operator_with(OperatorOptions::quick().leader_election(leader_election));
    }

    /// Starts an operator as the admin with `options`.
    pub fn start_operator_with(&mut self, options: OperatorOptions) {
        let kubeconfig = self.cluster.kubeconfig_path().to_owned();
        self.spawn(kubeconfig, &options);
    }

    /// Starts an operator authenticated as the user of `token`, with `options`.
    pub fn start_operator_as(&mut self, token: &str, options: OperatorOptions) {
        let path = std::env::temp_dir().join(format!("scistream-operator-{}-{token}.kubeconfig", self.cluster.name()));
        std::fs::write(&path, self.cluster.kubeconfig_for_token(token)).unwrap();
        self.spawn(path, &options);
    }

    fn spawn(&mut self, kubeconfig: PathBuf, options: &OperatorOptions) {
        let identity = format!("operator-{}", self.started);
        self.started += 1;
        let args = operator_args(&kubeconfig, &identity, options).unwrap();
        self.operators.push(spawn_operator(args));
    }

    /// Stops the most recently started operator and waits for it to exit; panics unless it
    /// exits cleanly within 20 s.
    pub async fn stop_operator(&mut self) {
        if let Some((token, handle)) = self.operators.pop() {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(20), handle).await.expect("operator stops").unwrap().unwrap();
        }
    }

    /// Applies Gateway `dtn` with `spec` (server-side, forced, as field manager `test`); a spec
    /// without `policy` gets the [`open_policy`] of a test on one host.
    pub async fn apply_gateway(&self, mut spec: serde_json::Value) -> Gateway {
        if let Some(fields) = spec.as_object_mut() {
            fields.entry("policy").or_insert_with(open_policy);
        }
        let gw: Gateway = serde_json::from_value(json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "dtn"}, "spec": spec
        }))
        .unwrap();
        let api: Api<Gateway> = Api::all(self.client.clone());
        api.patch("dtn", &PatchParams::apply("test").force(), &Patch::Apply(&gw)).await.unwrap()
    }

    /// StreamRequests of [`USER_NS`].
    pub fn requests(&self) -> Api<StreamRequest> {
        Api::namespaced(self.client.clone(), USER_NS)
    }

    /// Relay pods ([`GATEWAY_NS`]).
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), GATEWAY_NS)
    }

    /// Creates StreamRequest `name` in [`USER_NS`] with `spec`.
    pub async fn create_request(&self, name: &str, spec: serde_json::Value) -> StreamRequest {
        let sr: StreamRequest = serde_json::from_value(json!({
            "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest", "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        self.requests().create(&PostParams::default(), &sr).await.unwrap()
    }

    /// Waits until the request satisfies `cond`, failing with its last status after `secs`.
    pub async fn wait_request(&self, name: &str, secs: u64, cond: impl Fn(&StreamRequest) -> bool) -> StreamRequest {
        request_until(&self.requests(), name, secs, cond).await
    }

    /// Waits up to `secs` until request `name` is gone.
    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let api = self.requests();
        wait_until(Duration::from_secs(secs), || {
            let api = api.clone();
            let name = name.to_owned();
            async move { api.get_opt(&name).await.unwrap().is_none() }
        })
        .await;
    }

    /// Gateway `dtn`.
    pub async fn gateway(&self) -> Gateway {
        Api::<Gateway>::all(self.client.clone()).get("dtn").await.unwrap()
    }

    /// Waits until the gateway satisfies `cond`, failing with its last status after `secs`.
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

    /// The holdings the StreamRequests on Gateway `gateway` record in their statuses (every
    /// namespace): the durable record of who holds which ports.
    pub async fn holdings_on(&self, gateway: &str) -> Vec<Reservation> {
        holdings_on(&self.client, gateway).await.unwrap()
    }

    /// Checks no port is recorded by two StreamRequests and, while an operator runs, waits up
    /// to `secs` until Gateway `dtn`'s totals (streams, ports in use, bandwidth promised)
    /// count exactly the holdings its StreamRequests record (the operator writes them after
    /// each change). Returns the holdings.
    pub async fn wait_totals_match_holdings(&self, secs: u64) -> Vec<Reservation> {
        if self.operators.is_empty() {
            let held = self.holdings_on("dtn").await;
            scistream_core::allocator::check(&held, None).expect("no port recorded by two StreamRequests");
            return held;
        }
        wait_totals_match_holdings(&self.client, "dtn", secs).await
    }

    /// Waits until the request is gone, then checks nothing of it is left.
    pub async fn assert_released(&self, name: &str, stream_id: &str) {
        self.wait_gone(name, 30).await;
        self.assert_nothing_left(stream_id).await;
    }

    /// No pod, ConfigMap, Secret or reservation of `stream_id` remains.
    pub async fn assert_nothing_left(&self, stream_id: &str) {
        let selector = format!("{}={stream_id}", keys::LABEL_STREAM_ID);
        let lp = ListParams::default().labels(&selector);
        let pods = self.pods().list(&lp).await.unwrap();
        assert!(pods.items.is_empty(), "pods left: {:?}", pods.items.iter().map(|p| p.name_any()).collect::<Vec<_>>());
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), GATEWAY_NS);
        assert!(cms.list(&lp).await.unwrap().items.is_empty(), "ConfigMaps left");
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), GATEWAY_NS);
        assert!(secrets.list(&lp).await.unwrap().items.is_empty(), "Secrets left");
        let held = self.wait_totals_match_holdings(30).await;
        assert!(!held.iter().any(|r| r.stream_id == stream_id), "still held: {held:#?}");
    }

    /// Stops every operator (each must exit cleanly), the stand-in kubelet and the API server.
    pub async fn shutdown(mut self) {
        while !self.operators.is_empty() {
            self.stop_operator().await;
        }
        drop(self.kubelet);
        self.cluster.shutdown().await;
    }
}

/// The holdings the StreamRequests on Gateway `gateway` of `client`'s cluster record in their
/// statuses (every namespace): the durable record of who holds which ports (the Gateway keeps
/// totals only).
pub async fn holdings_on(client: &Client, gateway: &str) -> kube::Result<Vec<Reservation>> {
    let all = Api::<StreamRequest>::all(client.clone()).list(&ListParams::default()).await?;
    Ok(all.items.iter().filter(|r| r.spec.gateway == gateway).filter_map(StreamRequest::holding).collect())
}

/// What a Gateway's totals say: (streams, ports in use, bandwidth promised).
fn totals_of(gateway: &Gateway) -> (i32, i32, i64) {
    gateway.status.as_ref().map_or((0, 0, 0), |s| (s.streams, s.ports_in_use, s.bandwidth_promised_bps))
}

/// The totals `held` adds up to.
fn totals(held: &[Reservation]) -> (i32, i32, i64) {
    let ports = scistream_core::allocator::used_ports(held).values().map(|p| p.len()).sum::<usize>();
    let streams = i32::try_from(held.len()).unwrap_or(i32::MAX);
    (streams, i32::try_from(ports).unwrap_or(i32::MAX), held.iter().map(|r| r.bandwidth_bps).sum())
}

/// See [`Facility::wait_totals_match_holdings`]; also checks no port is recorded twice.
pub async fn wait_totals_match_holdings(client: &Client, gateway: &str, secs: u64) -> Vec<Reservation> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let api: Api<Gateway> = Api::all(client.clone());
    loop {
        let held = holdings_on(client, gateway).await.unwrap();
        scistream_core::allocator::check(&held, None).expect("no port recorded by two StreamRequests");
        let gw = api.get(gateway).await.unwrap();
        if totals_of(&gw) == totals(&held) {
            return held;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Gateway {gateway} counts (streams, ports, bps) {:?}, its StreamRequests record {:?}: {held:#?}",
            totals_of(&gw),
            totals(&held)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
