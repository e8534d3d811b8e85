//! Shared helpers of the conformance tests: clusters, a kubectl runner,
//! the synthetic `widgets.example.com` CRD, bounded waits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube::CustomResource;
use kube::api::{Api, PostParams};
use kube::core::crd::CustomResourceExt;
use schemars::JsonSchema;
use scistream_testcluster::TestCluster;
use serde::{Deserialize, Serialize};

/// The synthetic custom resource of the tests.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd",
    category = "all",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
pub struct WidgetSpec {
    /// How many.
    pub replicas: i32,
    /// Colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// Widget status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
pub struct WidgetStatus {
    /// Phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Last seen generation.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "observedGeneration")]
    pub observed_generation: Option<i64>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "free_form_list")]
    pub conditions: Vec<serde_json::Value>,
}

/// A list of free-form objects, as a structural schema (a real API server
/// refuses array items without a type).
fn free_form_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// A widget with a spec.
pub fn widget(name: &str, replicas: i32) -> Widget {
    Widget::new(name, WidgetSpec { replicas, color: None })
}

/// Installs the Widget CRD and waits until it is served.
pub async fn install_widget_crd(client: &kube::Client) {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd()).await.expect("create CRD");
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    eventually(Duration::from_secs(2), || async { widgets.list(&Default::default()).await.is_ok() }).await;
}

/// Polls `check` until true or the deadline (then panics).
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    for _ in 0..10_000 {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "condition not met within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met after 10000 polls");
}

/// Starts a cluster with the test users `alice` (group `dev`) and `bob`.
pub async fn start() -> TestCluster {
    scistream_testcluster::tls::install_crypto_provider();
    TestCluster::builder()
        .user("tok-alice", "alice", &["dev"])
        .user("tok-bob", "bob", &[])
        .start()
        .await
        .expect("start test cluster")
}

/// Runs kubectl against one cluster with its own discovery cache.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// kubectl for the admin kubeconfig of `c`.
    pub fn new(c: &TestCluster) -> Self {
        Self::with_kubeconfig(c.kubeconfig_path())
    }

    /// kubectl for a kubeconfig file.
    pub fn with_kubeconfig(path: &Path) -> Self {
        let cache = path.with_file_name(format!("kubectl-cache-{}", uuid::Uuid::new_v4().simple()));
        Kubectl { kubeconfig: path.to_path_buf(), cache }
    }

    fn command(&self, args: &[&str]) -> Command {
        // TESTCLUSTER_KUBECTL picks another kubectl binary (e.g. a fixed minor version).
        let bin = std::env::var("TESTCLUSTER_KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
        let mut c = Command::new(bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache).args(args);
        c.env_remove("KUBECONFIG");
        c
    }

    /// Runs kubectl with optional stdin.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.command(args);
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn kubectl");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    /// Runs with extra environment variables and asserts success; returns stdout.
    pub fn ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut c = self.command(args);
        c.envs(env.iter().copied()).stdin(Stdio::null());
        let out = c.output().expect("kubectl output");
        let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubectl {args:?} failed\nstdout: {o}\nstderr: {e}");
        o.into_owned()
    }

    /// Runs with stdin and asserts success; returns stdout.
    pub fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubectl {args:?} failed\nstdout: {o}\nstderr: {e}");
        o.into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fail(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        e
    }

    /// Starts kubectl in the background (for `get -w`).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl")
    }
}

/// A cluster on its own runtime thread, for synchronous kubectl tests.
pub struct Fixture {
    /// The runtime serving the cluster.
    pub rt: tokio::runtime::Runtime,
    /// The cluster.
    pub cluster: TestCluster,
    /// kubectl as admin.
    pub k: Kubectl,
}

impl Fixture {
    /// Starts a cluster (with the Widget CRD if `widgets`).
    pub fn new(widgets: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let cluster = rt.block_on(async {
            let c = start().await;
            if widgets {
                install_widget_crd(&c.client().await.expect("client")).await;
            }
            c
        });
        let k = Kubectl::new(&cluster);
        Fixture { rt, cluster, k }
    }

    /// kubectl authenticating with another token.
    pub fn kubectl_as(&self, token: &str) -> Kubectl {
        let path = self.cluster.kubeconfig_path().with_file_name(format!("kubeconfig-{token}"));
        std::fs::write(&path, self.cluster.kubeconfig_for_token(token)).expect("write kubeconfig");
        Kubectl::with_kubeconfig(&path)
    }

    /// Runs a future on the cluster's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// The Widget CRD as YAML (for kubectl tests).
pub fn widget_crd_yaml() -> String {
    serde_yaml::to_string(&Widget::crd()).expect("CRD yaml")
}
