//! The install as a facility does it, end to end: `helm template` renders the chart, the
//! embedded API server accepts the rendering (`kubectl apply --dry-run=server`, then for
//! real), the operator runs with the arguments of the chart's Deployment as the chart's
//! ServiceAccount (so only the chart's RBAC, enforced by the API server, lets it act), the
//! chart's default Gateway becomes Ready over two gateway nodes served by the node agent, a
//! user bound to the chart's `scistream-user` ClusterRole creates a stream with kubectl, the
//! producer's application host (a network namespace on the facility LAN, without access to
//! the cluster) says Hello by running the user guide's commands as written, through the
//! control endpoint exposed on a gateway node's host port with the address and certificate
//! the operator published, and bytes flow through the relay the operator started. Deleting
//! it leaves nothing behind.

use std::{
    net::{IpAddr, SocketAddr},
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
/// with a default Gateway; returns (CRDs and Namespaces, the other objects), both
/// multi-document YAML.
fn render(loopback: bool, control_ip: IpAddr) -> (String, String) {
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
        // The control endpoint on the host port of gateway node gw-site-1, dialled by its LAN address.
        "--set",
        "controlEndpoint.hostPort.enabled=true",
        "--set",
        "controlEndpoint.hostPort.nodeSelector.kubernetes\\.io/hostname=gw-site-1",
    ];
    let ips = format!("controlEndpoint.tls.ipAddresses={{{control_ip}}}");
    args.extend(["--set", &ips]);
    // Applications and gateway nodes share one host here: the open policy of a test.
    let policy = format!("defaultGateway.policy={}", scistream_testkit::open_policy());
    args.extend(["--set-json", &policy]);
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
        // Helm installs CRDs first, then in its kind order, Namespaces before what lives in them.
        let into = if kind == "CustomResourceDefinition" || kind == "Namespace" { &mut crds } else { &mut rest };
        into.push_str("---\n");
        into.push_str(doc);
        into.push('\n');
    }
    (crds, rest)
}

/// The operator's arguments from the rendered Deployment, its listen addresses moved to
/// loopback ports, talking to the API server as the chart's ServiceAccount.
fn operator_args(
    rendered: &str,
    kubeconfig: &Path,
    control_port: u16,
    relay_channel: SocketAddr,
) -> scistream_controller::Args {
    let deployment = rendered
        .split("\n---\n")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap_or_default())
        .find(|d| d["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut args = vec!["scistream-operator".to_owned()];
    for arg in container["args"].as_array().unwrap() {
        let arg = arg.as_str().unwrap();
        let replaced = [
            "--metrics-addr=",
            "--control-addr=",
            "--control-http-addr=",
            "--relay-channel-addr=",
            "--relay-channel-advertise=",
        ];
        // The chart's relay channel is served (its shared relays dial the Service by name).
        if arg.starts_with("--relay-channel-advertise=") {
            assert!(arg.ends_with("-relay-channel.scistream-system.svc:8444"), "{arg}");
        }
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
        // No cluster DNS here: the relays reach the channel as a Service, through the node
        // agent's host service at the same loopback address in every node.
        format!("--relay-channel-addr={relay_channel}"),
        format!("--relay-channel-advertise={relay_channel}"),
        "--nginx-stream-module=/usr/lib/nginx/modules/ngx_stream_module.so".to_owned(),
    ]);
    <scistream_controller::Args as clap::Parser>::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("the operator refuses the chart's arguments {args:?}: {e}"))
}

/// The node's host port as the CNI's portmap plugin provides it: connections to `at` in
/// `node`'s network namespace reach `to`, where the operator (in this process) serves.
async fn host_port(network: &Arc<Network>, node: &str, at: SocketAddr, to: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = network.listen(node, at).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// The user guide's "Hello from a host without the kubeconfig": the commands run on the
/// workstation, and those run on the application host, as written there.
fn documented_hello() -> (String, String) {
    let guide = std::fs::read_to_string(root().join("docs/user-guide.md")).unwrap();
    let section = guide.split("### Hello from a host without the kubeconfig").nth(1).expect("the section");
    let blocks: Vec<String> =
        section.split("```sh\n").skip(1).take(2).map(|b| b.split("```").next().unwrap().to_owned()).collect();
    assert_eq!(blocks.len(), 2, "two command blocks in the section");
    (blocks[0].clone(), blocks[1].clone())
}

/// Runs `script` with `sh -e` through `cmd` (on this machine or in a host's namespace).
async fn run_script(mut cmd: tokio::process::Command, script: &str, dir: &Path, env: &[(&str, String)]) -> String {
    cmd.args(["-ec", script]).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{script}\nfailed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let control_ip = IpAddr::V4(network.address_on("gw-site-1", &lan("site")).unwrap());
    let (crds, rest) = render(!netns, control_ip);
    kubectl(&admin_kc, &cache, &["apply", "--server-side", "-f", "-"], Some(&crds));
    wait("the CRDs served", 10, async || Api::<Gateway>::all(admin.clone()).list(&Default::default()).await.ok()).await;
    kubectl(&admin_kc, &cache, &["create", "namespace", RELEASE_NS], None);
    let dry = kubectl(&admin_kc, &cache, &["apply", "--dry-run=server", "-f", "-"], Some(&rest));
    assert!(dry.contains("deployment.apps/t-scistream-operator created (server dry run)"), "{dry}");
    assert!(Api::<Gateway>::all(admin.clone()).get_opt("dtn").await.unwrap().is_none(), "a dry run stores nothing");
    kubectl(&admin_kc, &cache, &["apply", "-f", "-"], Some(&rest));

    let relay_channel = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let agent = NodeAgent::builder(admin.clone())
        .network(network.clone())
        .serve(["gw-site-1", "gw-site-2"])
        .s2ds(bin("s2ds"))
        .host_service(relay_channel)
        .start()
        .await
        .unwrap();
    let operator_kc = scratch.path().join("operator.kubeconfig");
    std::fs::write(&operator_kc, cluster.kubeconfig_for_token("operator-token")).unwrap();
    let control_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let token = tokio_util::sync::CancellationToken::new();
    let operator = tokio::spawn(scistream_controller::run_until(
        operator_args(&rest, &operator_kc, control_port, relay_channel),
        token.clone(),
    ));
    let control = SocketAddr::new(control_ip, 5000);
    let forward = host_port(&network, "gw-site-1", control, SocketAddr::from(([127, 0, 0, 1], control_port))).await;
    let published = wait("the control endpoint published", 30, async || {
        let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), RELEASE_NS)
            .get_opt(keys::CONTROL_ENDPOINT_CONFIGMAP)
            .await
            .ok()??;
        cm.data?.get(keys::CONTROL_ADDRESS_KEY).cloned()
    })
    .await;
    assert_eq!(published, control.to_string(), "the chart's address of the host port");

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
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: scan-42-hello, namespace: science}}\n\
         stringData: {{key: a-hello-key-for-scan-42}}\n---\n\
         apiVersion: scistream.io/v1alpha1\nkind: StreamRequest\nmetadata: {{name: scan-42, namespace: science}}\n\
         spec: {{streamId: {stream_id}, role: Producer, gateway: dtn, numConnections: 1, rate: 1Gbps,\n\
         dataChannel: Plain, helloKeySecretRef: {{name: scan-42-hello, key: key}}}}\n"
    );
    kubectl(&alice_kc, &cache, &["apply", "-f", "-"], Some(&request));

    // The producer's Hello from its application host, as the user guide says: the files
    // fetched on the workstation (as alice), the Hello sent from the host (no kubeconfig).
    let (workstation, app_host) = documented_hello();
    let plugins = scratch.path().join("bin");
    std::fs::create_dir(&plugins).unwrap();
    std::os::unix::fs::symlink(bin("kubectl-scistream"), plugins.join("kubectl-scistream")).unwrap();
    let path = format!("{}:{}", plugins.display(), std::env::var("PATH").unwrap_or_default());
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let workstation = workstation.replace("run-42", "scan-42");
    let env = [
        ("KUBECONFIG", alice_kc.display().to_string()),
        ("KUBECACHEDIR", cache.display().to_string()),
        ("PATH", path.clone()),
    ];
    run_script(tokio::process::Command::new("sh"), &workstation, &work, &env).await;
    let app_host = app_host.replace("<stream-id>", stream_id).replace("<host:port,...>", &target.to_string());
    let env = [("KUBECONFIG", "/nonexistent".to_owned()), ("PATH", path)];
    let said = run_script(network.command_on("app-site", "sh"), &app_host, &work, &env).await;
    assert!(said.contains("Sending Prod listeners"), "{said}");
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
    // Through the chart's default: the Gateway's shared relays, one per node, no pod of its own.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), "scistream-gateway");
    let shared = pods.list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=s2ds-node")).await;
    assert_eq!(shared.unwrap().items.len(), 2, "one shared relay per gateway node");
    let mine = kube::api::ListParams::default().labels(&format!("{}={stream_id}", keys::LABEL_STREAM_ID));
    assert!(pods.list(&mine).await.unwrap().items.is_empty(), "the stream has no relay pod of its own");

    kubectl(&alice_kc, &cache, &["delete", "streamrequest", "scan-42", "-n", "science", "--wait=true"], None);
    let lp = kube::api::ListParams::default().labels(&format!("{}={stream_id}", keys::LABEL_STREAM_ID));
    let gateway_ns = "scistream-gateway";
    wait("nothing left of the stream", 60, async || {
        let pods =
            Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), gateway_ns).list(&lp).await.ok()?;
        let cms =
            Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), gateway_ns).list(&lp).await.ok()?;
        let held = gateways.get("dtn").await.ok()?.status.map_or(0, |s| s.streams + s.ports_in_use);
        (pods.items.is_empty() && cms.items.is_empty() && held == 0).then_some(())
    })
    .await;

    token.cancel();
    forward.abort();
    tokio::time::timeout(Duration::from_secs(30), operator).await.unwrap().unwrap().unwrap();
    agent.stop().await;
    cluster.shutdown().await;
    network.teardown().await;
}
