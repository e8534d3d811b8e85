//! Installing without this checkout: the chart packaged (`helm package`), pushed to an OCI
//! registry (CNCF Distribution, Debian's `docker-registry`, on loopback), and installed from
//! `oci://` into the embedded cluster with `helm install`, as docs/operator-guide.md says;
//! `helm uninstall` then keeps the gateway namespace and the CRDs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace, rbac::v1::Role};
use kube::Api;
use scistream_api::Gateway;
use scistream_testcluster::TestCluster;
use scistream_testkit::wait_until;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// helm, with its caches and registry credentials in `home` (nothing written to ~).
fn helm(home: &Path, args: &[&str]) -> String {
    let helm = Command::new(root().join("kind-tests/helm.sh")).output().unwrap();
    assert!(helm.status.success(), "kind-tests/helm.sh: {}", String::from_utf8_lossy(&helm.stderr));
    let out = Command::new(String::from_utf8(helm.stdout).unwrap().trim())
        .current_dir(root())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "helm {}: {said}", args.join(" "));
    said
}

/// A registry on 127.0.0.1 (stopped when dropped).
struct Registry(std::process::Child, u16);

impl Registry {
    async fn start(dir: &Path) -> Registry {
        let binary = "/usr/bin/docker-registry";
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: apt-get install docker-registry (kind-tests/setup.sh)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let child =
            Command::new(binary).arg("serve").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        wait_until(Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Registry(child, port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_from_an_oci_registry() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path();
    let registry = Registry::start(&home.join("registry")).await;
    let version = std::fs::read_to_string(root().join("charts/scistream-operator/Chart.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("version: ").map(str::to_owned))
        .unwrap();

    // The release job's steps (docs/operator-guide.md, "Install without this repository").
    let packages = home.join("packages");
    helm(home, &["package", "charts/scistream-operator", "--destination", packages.to_str().unwrap()]);
    let archive = packages.join(format!("scistream-operator-{version}.tgz"));
    assert!(archive.is_file(), "{}", archive.display());
    let repo = format!("oci://127.0.0.1:{}/charts", registry.1);
    let pushed = helm(home, &["push", archive.to_str().unwrap(), &repo, "--plain-http"]);
    assert!(pushed.contains("Digest: sha256:"), "{pushed}");

    // A facility installs it from the registry.
    let cluster = TestCluster::builder().name("oci").start().await.unwrap();
    let client = cluster.client().await.unwrap();
    let kc = cluster.kubeconfig_path().to_str().unwrap().to_owned();
    let chart = format!("{repo}/scistream-operator");
    let shown = helm(home, &["show", "chart", &chart, "--version", &version, "--plain-http"]);
    assert!(shown.contains("name: scistream-operator"), "{shown}");
    let installed = helm(
        home,
        &[
            "install",
            "t",
            &chart,
            "--version",
            &version,
            "--plain-http",
            "--namespace",
            "scistream-system",
            "--create-namespace",
            "--kubeconfig",
            &kc,
            "--set",
            "defaultGateway.enabled=true",
        ],
    );
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(installed.contains("NOTES:"), "{installed}");
    let deployment =
        Api::<Deployment>::namespaced(client.clone(), "scistream-system").get("t-scistream-operator").await.unwrap();
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
    assert_eq!(
        image,
        format!("ghcr.io/scistream/scistream-operator:{version}"),
        "images pinned by the chart's version"
    );
    assert!(Api::<Gateway>::all(client.clone()).get_opt("dtn").await.unwrap().is_some(), "the CRDs and the Gateway");
    let readers = Api::<Role>::namespaced(client.clone(), "scistream-system");
    assert!(readers.get_opt("t-scistream-operator-control-endpoint-readers").await.unwrap().is_some());

    // Uninstall keeps the gateway namespace (relays may still run there) and the CRDs.
    helm(home, &["uninstall", "t", "--namespace", "scistream-system", "--kubeconfig", &kc]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let gateway_ns = namespaces.get_opt("scistream-gateway").await.unwrap();
    assert!(gateway_ns.is_some_and(|n| n.metadata.deletion_timestamp.is_none()), "the gateway namespace is kept");
    assert!(
        Api::<Deployment>::namespaced(client.clone(), "scistream-system")
            .get_opt("t-scistream-operator")
            .await
            .unwrap()
            .is_none_or(|d| d.metadata.deletion_timestamp.is_some()),
        "the operator is removed"
    );
    assert!(Api::<Gateway>::all(client).list(&Default::default()).await.is_ok(), "the CRDs stay");
    cluster.shutdown().await;
    drop(registry);
}
