//! The install as facilities do it: the Helm chart renders (several value sets), its schema
//! refuses bad values, and `manifests/` is exactly the chart's rendering.

mod chart;

use std::process::Command;

use chart::{helm, root, template};

#[test]
fn manifests_are_the_charts_rendering() {
    let out = Command::new(root().join("kind-tests/gen-manifests.sh")).arg("--stdout").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let committed = std::fs::read_to_string(root().join("manifests/scistream-operator.yaml")).unwrap();
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "manifests/ is out of date: run kind-tests/gen-manifests.sh and commit the result"
    );
    // The chart's CRDs are the generated ones.
    for crd in ["gateways.scistream.io.yaml", "streamrequests.scistream.io.yaml"] {
        let top = std::fs::read_to_string(root().join("crds").join(crd)).unwrap();
        let chart = std::fs::read_to_string(root().join("charts/scistream-operator/crds").join(crd)).unwrap();
        assert_eq!(top, chart, "{crd}");
    }
}

#[test]
fn the_chart_lints_and_renders_with_several_value_sets() {
    let lint = Command::new(helm())
        .current_dir(root())
        .args(["lint", "--strict", "charts/scistream-operator"])
        .output()
        .unwrap();
    assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stdout));
    let sets: [&[&str]; 4] = [
        &[],
        &["replicaCount=1", "defaultGateway.enabled=true", "defaultGateway.implementation=Haproxy"],
        &["serviceMonitor.enabled=true", "prometheusRule.enabled=true", "grafanaDashboard.enabled=true"],
        &[
            "controlEndpoint.tls.certManager.enabled=true",
            "controlEndpoint.tls.certManager.issuerRef.name=ca",
            "controlEndpoint.service.type=LoadBalancer",
        ],
    ];
    for set in sets {
        let out = template(set);
        assert!(out.status.success(), "{set:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("kind: Deployment") && text.contains("runAsNonRoot: true"), "{set:?}");
        if set.contains(&"replicaCount=1") {
            assert!(text.contains("--no-leader-election") && !text.contains("PodDisruptionBudget"));
            assert!(text.contains("kind: Gateway"));
        }
        if set.contains(&"grafanaDashboard.enabled=true") {
            assert!(text.contains("kind: PrometheusRule") && text.contains("scistream.json"));
        }
    }
    for bad in ["replicaCount=0", "defaultGateway.bandwidth=fast", "controlEndpoint.auth=guess", "logFormat=xml"] {
        let out = template(&[bad]);
        assert!(!out.status.success(), "{bad} must be refused by values.schema.json");
    }
}

#[test]
fn the_operator_accepts_the_arguments_the_chart_renders() {
    let sets: [&[&str]; 3] = [
        &[],
        &["replicaCount=1", "controlEndpoint.enabled=false"],
        &[
            "controlEndpoint.tls.certManager.enabled=true",
            "controlEndpoint.tls.certManager.issuerRef.name=ca",
            "controlEndpoint.tls.ipAddresses={198.51.100.7}",
            "controlEndpoint.legacy.gateway=dtn",
        ],
    ];
    for set in sets {
        let out = template(set);
        assert!(out.status.success(), "{set:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let deployment = text
            .split("\n---\n")
            .map(|d| serde_yaml::from_str::<serde_json::Value>(d).unwrap_or_default())
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let parsed = <scistream_controller::Args as clap::Parser>::try_parse_from(
            std::iter::once("scistream-operator".to_owned()).chain(args.clone()),
        );
        let parsed =
            parsed.unwrap_or_else(|e| panic!("{set:?}: the operator refuses the chart's arguments {args:?}: {e}"));
        assert_eq!(parsed.no_control_endpoint, set.contains(&"controlEndpoint.enabled=false"));
        parsed.control.config().unwrap_or_else(|e| panic!("{set:?}: control endpoint flags: {e}"));
    }
}
