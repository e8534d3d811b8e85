//! The install as a facility does it, end to end: `helm template` renders the chart, the
//! embedded API server accepts the rendering (`kubectl apply --dry-run=server`, then for
//! real), the operator runs with the arguments of the chart's Deployment as the chart's
//! ServiceAccount (so only the chart's RBAC, enforced by the API server, lets it act), the
//! chart's default Gateway becomes Ready over two gateway nodes served by the node agent, a
//! user bound to the chart's `scistream-user` ClusterRole creates a stream with kubectl, and
//! bytes flow through the relay the operator started. Deleting it leaves nothing behind.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use kube::Api;
use scistream_api::{Gateway, Phase, StreamRequest, keys};
use scistream_e2e::workload;
use scistream_nodeagent::{NetworkMode, NodeAgent, NodeSpec, Topology, network::Network, topology::lan};
use scistream_testcluster::TestCluster;
use serde_json::Value;

const RELEASE_NS: &str = "scistream-system";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:scistream-system:t-scistream-operator";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join(name);
    assert!(path.exists(), "{} is not built (nextest builds it)", path.display());
    path
}

/// `kubectl` against the test cluster with the given kubeconfig; returns stdout or panics
/// with stderr.
fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The chart rendered as `helm install t charts/scistream-operator -n scistream-system` would,
/// with a default Gateway; returns (CRDs, the other objects), both multi-document YAML.
fn render(loopback: bool) -> (String, String) {
    let helm = Command::new(root().join("kind-tests/helm.sh")).output().unwrap();
    assert!(helm.status.success(), "kind-tests/helm.sh: {}", String::from_utf8_lossy(&helm.stderr));
    let helm = String::from_utf8(helm.stdout).unwrap().trim().to_owned();
    let mut args: Vec<&str> = vec![
        "template",
        "t",
        "charts/scistream-operator",
        "--namespace",
        RELEASE_NS,
        "--include-crds",
        "--set",
        "defaultGateway.enabled=true",
        "--set",
        "defaultGateway.portRange.end=5150",
        "--set",
        "controlEndpoint.legacy.gateway=dtn",
        "--set",
        "controlEndpoint.tls.ipAddresses={127.0.0.1}",
    ];
    if loopback {
        // On loopback a node has one address: its WAN address is its LAN address.
        args.extend(["--set", "defaultGateway.addresses.wan.annotation=scistream.io/lan-address"]);
    }
    let out = Command::new(helm).current_dir(root()).args(&args).output().unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (mut crds, mut rest) = (String::new(), String::new());
    for doc in text.split("\n---\n") {
        let kind = serde_yaml::from_str::<Value>(doc).unwrap_or_default()["kind"].clone();
        let into = if kind == "CustomResourceDefinition" { &mut crds } else { &mut rest };
        into.push_str("---\n");
        into.push_str(doc);
        into.push('\n');
    }
    (crds, rest)
}

/// The operator's arguments from the rendered Deployment, its listen addresses moved to
/// loopback ports, talking to the API server as the chart's ServiceAccount.
fn operator_args(rendered: &str, kubeconfig: &Path, control_port: u16) -> scistream_controller::Args {
    let deployment = rendered
        .split("\n---\n")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap_or_default())
        .find(|d| d["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut args = vec!["scistream-operator".to_owned()];
    for arg in container["args"].as_array().unwrap() {
        let arg = arg.as_str().unwrap();
        let replaced = ["--metrics-addr=", "--control-addr=", "--control-http-addr="];
        if !replaced.iter().any(|p| arg.starts_with(p)) {
            args.push(arg.to_owned());
        }
    }
    // What the Deployment's environment gives it (POD_NAMESPACE, POD_NAME).
    let env: Vec<&str> = container["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(env.contains(&"POD_NAMESPACE") && env.contains(&"POD_NAME"), "{env:?}");
    args.extend([
        format!("--namespace={RELEASE_NS}"),
        "--identity=t-scistream-operator-0".to_owned(),
        format!("--kubeconfig={}", kubeconfig.display()),
        "--metrics-addr=127.0.0.1:0".to_owned(),
        format!("--control-addr=127.0.0.1:{control_port}"),
        "--control-http-addr=off".to_owned(),
        "--nginx-stream-module=/usr/lib/nginx/modules/ngx_stream_module.so".to_owned(),
    ]);
    <scistream_controller::Args as clap::Parser>::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("the operator refuses the chart's arguments {args:?}: {e}"))
}

async fn wait<T>(what: &str, secs: u64, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {secs}s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_facility_installed_from_the_chart_streams() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let netns = nix::unistd::geteuid().is_root();
    let mode = if netns { NetworkMode::Netns } else { NetworkMode::Loopback };
    let mut topology = Topology::new().network("wan").facility("site");
    for i in 1..=2 {
        topology =
            topology.node(NodeSpec::gateway(&format!("gw-site-{i}"), "site").label("scistream.io/gateway", "dtn"));
    }
    let topology = topology.app_host("app-site", &lan("site"));
    let network = Arc::new(Network::build(&topology, mode).await.unwrap());
    let cluster = TestCluster::builder()
        .name("install")
        .user("operator-token", SERVICE_ACCOUNT, &["system:serviceaccounts", "system:serviceaccounts:scistream-system"])
        .user("alice-token", "alice", &["beamline"])
        .start()
        .await
        .unwrap();
    let admin = cluster.client().await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let admin_kc = cluster.kubeconfig_path().to_owned();

    // helm install, as kubectl would apply it: CRDs first, then a server-side dry run of
    // everything else, then the real thing.
    let (crds, rest) = render(!netns);
    kubectl(&admin_kc, &cache, &["apply", "--server-side", "-f", "-"], Some(&crds));
    wait("the CRDs served", 10, async || Api::<Gateway>::all(admin.clone()).list(&Default::default()).await.ok()).await;
    kubectl(&admin_kc, &cache, &["create", "namespace", RELEASE_NS], None);
    let dry = kubectl(&admin_kc, &cache, &["apply", "--dry-run=server", "-f", "-"], Some(&rest));
    assert!(dry.contains("deployment.apps/t-scistream-operator created (server dry run)"), "{dry}");
    assert!(Api::<Gateway>::all(admin.clone()).get_opt("dtn").await.unwrap().is_none(), "a dry run stores nothing");
    kubectl(&admin_kc, &cache, &["apply", "-f", "-"], Some(&rest));

    let agent = NodeAgent::builder(admin.clone())
        .network(network.clone())
        .serve(["gw-site-1", "gw-site-2"])
        .s2ds(bin("s2ds"))
        .start()
        .await
        .unwrap();
    let operator_kc = scratch.path().join("operator.kubeconfig");
    std::fs::write(&operator_kc, cluster.kubeconfig_for_token("operator-token")).unwrap();
    let control_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let token = tokio_util::sync::CancellationToken::new();
    let operator =
        tokio::spawn(scistream_controller::run_until(operator_args(&rest, &operator_kc, control_port), token.clone()));

    let gateways: Api<Gateway> = Api::all(admin.clone());
    wait("the chart's Gateway Ready on both nodes", 60, async || {
        let st = gateways.get("dtn").await.ok()?.status?;
        let ready = scistream_api::conditions::find(&st.conditions, "Ready")?.status == "True";
        (ready && st.ready_nodes == 2).then_some(())
    })
    .await;

    // A user the facility bound to the chart's scistream-user role creates a stream with kubectl.
    let app = network.address("app-site").unwrap();
    let target = SocketAddr::new(app.into(), 7400);
    let listener = network.listen("app-site", target).await.unwrap();
    let producer = tokio::spawn(workload::produce(vec![listener], 1, 8 << 20, 1, Duration::from_secs(120)));
    kubectl(&admin_kc, &cache, &["create", "namespace", "science"], None);
    kubectl(
        &admin_kc,
        &cache,
        &["create", "rolebinding", "alice", "-n", "science", "--clusterrole=scistream-user", "--user=alice"],
        None,
    );
    let alice_kc = scratch.path().join("alice.kubeconfig");
    std::fs::write(&alice_kc, cluster.kubeconfig_for_token("alice-token")).unwrap();
    let stream_id = "7d1c3a52-3c1e-4c7e-9a53-2b8f5c0e1a01";
    let request = format!(
        "apiVersion: scistream.io/v1alpha1\nkind: StreamRequest\nmetadata: {{name: scan-42, namespace: science}}\n\
         spec: {{streamId: {stream_id}, role: Producer, gateway: dtn, numConnections: 1, rate: 1Gbps,\n\
         dataChannel: Plain, targets: [\"{target}\"]}}\n"
    );
    kubectl(&alice_kc, &cache, &["apply", "-f", "-"], Some(&request));
    let denied = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&alice_kc)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["delete", "gateway", "dtn"])
        .output()
        .unwrap();
    assert!(!denied.status.success(), "scistream-user may not delete Gateways");

    let requests: Api<StreamRequest> = Api::namespaced(admin.clone(), "science");
    let listeners = wait("the stream Ready", 60, async || {
        let st = requests.get("scan-42").await.ok()?.status?;
        (st.phase == Some(Phase::Ready)).then_some(st.listeners)
    })
    .await;
    assert_eq!(listeners.len(), 1, "{listeners:?}");
    // The peer facility's relay stands on the WAN: connect from a gateway node, as it would.
    let addr: SocketAddr = listeners[0].parse().unwrap();
    let net = network.clone();
    let received = workload::consume(1, move |_| {
        let net = net.clone();
        async move { net.connect("gw-site-2", addr).await }
    })
    .await
    .unwrap();
    let sent = producer.await.unwrap().unwrap();
    assert_eq!(sent, received, "bytes differ between the application and the far side of the relay");

    kubectl(&alice_kc, &cache, &["delete", "streamrequest", "scan-42", "-n", "science", "--wait=true"], None);
    let lp = kube::api::ListParams::default().labels(&format!("{}={stream_id}", keys::LABEL_STREAM_ID));
    let gateway_ns = "scistream-gateway";
    wait("nothing left of the stream", 60, async || {
        let pods =
            Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), gateway_ns).list(&lp).await.ok()?;
        let cms =
            Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), gateway_ns).list(&lp).await.ok()?;
        let held = gateways.get("dtn").await.ok()?.status.map(|s| s.reservations.len()).unwrap_or(0);
        (pods.items.is_empty() && cms.items.is_empty() && held == 0).then_some(())
    })
    .await;

    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), operator).await.unwrap().unwrap().unwrap();
    agent.stop().await;
    cluster.shutdown().await;
    network.teardown().await;
}
