//! `kubectl scistream doctor`: every failure it names, made real on embedded clusters, with
//! its fix and exit code 4; a healthy facility and stream pass with exit code 0.

mod cli;

use std::{net::SocketAddr, time::Duration};

use cli::{hello, merged_kubeconfig, plugin, text};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use scistream_api::keys;
use scistream_testkit::{Facility, GATEWAY_NS, OperatorOptions, USER_NS, wait_until};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn facility(name: &str) -> Facility {
    let mut f = Facility::builder(name).namespace(keys::OPERATOR_NAMESPACE, "privileged").start().await;
    let port = free_port();
    f.start_operator_with(OperatorOptions::quick().control_endpoint(SocketAddr::from(([127, 0, 0, 1], port))).args([
        "--control-http-addr",
        "off",
        "--control-tls-ip",
        "127.0.0.1",
    ]));
    f.apply_gateway(json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "20Gbps",
        "podNamespace": GATEWAY_NS, "portRange": {"start": 5100, "end": 5119}}))
        .await;
    f.wait_gateway(15, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), keys::OPERATOR_NAMESPACE);
    wait_until(Duration::from_secs(20), || {
        let cms = cms.clone();
        async move { cms.get_opt(keys::CONTROL_ENDPOINT_CONFIGMAP).await.unwrap().is_some() }
    })
    .await;
    f
}

/// `doctor` as JSON: (exit code, the failed checks as "check: detail", every check).
fn doctor(kc: &std::path::Path, args: &[&str]) -> (Option<i32>, Vec<String>, Value) {
    // The gateways' WAN addresses here are documentation addresses outside any namespace of
    // the test: no probe may leave for them (the e2e suite probes relays on loopback).
    let mut all = vec!["doctor", "-o", "json", "--no-probe"];
    all.extend_from_slice(args);
    let out = plugin(kc, &all);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let failed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "Fail")
        .map(|c| {
            assert!(
                c["fix"].as_str().is_some_and(|f| !f.is_empty()) || c["check"].as_str().unwrap().starts_with("Gateway"),
                "a fix: {c}"
            );
            format!("{}: {}", c["check"].as_str().unwrap(), c["detail"].as_str().unwrap())
        })
        .collect();
    (out.status.code(), failed, report)
}

fn has(failed: &[String], check: &str, words: &str) -> bool {
    failed.iter().any(|f| f.starts_with(check) && f.contains(words))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_is_named_with_its_fix() {
    let (aps, alcf) = (facility("aps").await, facility("alcf").await);
    let dir = tempfile::tempdir().unwrap();
    let kc = merged_kubeconfig(dir.path(), &[aps.cluster.kubeconfig_path(), alcf.cluster.kubeconfig_path()], "aps");

    // A healthy facility.
    let (code, failed, report) = doctor(&kc, &["--context", "aps"]);
    assert_eq!((code, failed.len()), (Some(0), 0), "{report:#}");
    let names: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(names, ["CRDs", "operator", "Gateway dtn", "control endpoint"]);

    // A stream awaiting its Hellos: both sides named, exit code 4, and the table says so too.
    let out = plugin(
        &kc,
        &[
            "create",
            "run-42",
            "--prod-context",
            "aps",
            "--prod-namespace",
            USER_NS,
            "--prod-gateway",
            "dtn",
            "--cons-context",
            "alcf",
            "--cons-namespace",
            USER_NS,
            "--cons-gateway",
            "dtn",
            "--num-conn",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let (code, failed, _) = doctor(&kc, &["run-42", "--context", "alcf", "-n", USER_NS]);
    assert_eq!(code, Some(4));
    assert!(
        has(&failed, "Producer side", "AwaitingHello") && has(&failed, "Consumer side", "AwaitingHello"),
        "{failed:?}"
    );
    let table = plugin(&kc, &["doctor", "run-42", "--context", "aps", "-n", USER_NS, "--no-probe"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("✘ aps: Producer side"), "{}", text(&table));

    // Hellos: both sides Ready, every relay ready, the certificates agree.
    hello(&aps, "run-42", &["192.0.2.77:9000"]).await;
    hello(&alcf, "run-42", &[]).await;
    for f in [&aps, &alcf] {
        f.wait_request("run-42", 30, |sr| {
            sr.status.as_ref().and_then(|s| s.phase) == Some(scistream_api::Phase::Ready)
        })
        .await;
    }
    let (code, failed, report) = doctor(&kc, &["run-42", "--context", "aps", "-n", USER_NS]);
    assert_eq!((code, failed.len()), (Some(0), 0), "{report:#}");
    let passed: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert!(
        passed.contains(&"pinned certificates") && passed.iter().any(|c| c.starts_with("relay on gw-")),
        "{passed:?}"
    );

    // A pinned certificate that is not the peer's.
    let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap().cert.pem();
    alcf.requests()
        .patch("run-42", &PatchParams::default(), &Patch::Merge(json!({"spec": {"peerCertificate": other}})))
        .await
        .unwrap();
    let (code, failed, _) = doctor(&kc, &["run-42", "--context", "aps", "-n", USER_NS]);
    assert_eq!(code, Some(4));
    assert!(has(&failed, "pinned certificates", "refuse each other"), "{failed:?}");

    // A relay that is not ready.
    aps.kubelet.set_broken(&["gw-a", "gw-b"]);
    // The stand-in kubelet applies it at a pod's next event: touch the relays.
    for pod in aps.pods().list(&Default::default()).await.unwrap().items {
        let name = kube::ResourceExt::name_any(&pod);
        let poke = json!({"metadata": {"annotations": {"test/poke": "1"}}});
        aps.pods().patch(&name, &PatchParams::default(), &Patch::Merge(poke)).await.unwrap();
    }
    let broken = wait_until(Duration::from_secs(30), || {
        let kc = kc.clone();
        async move {
            let (_, failed, _) =
                tokio::task::spawn_blocking(move || doctor(&kc, &["run-42", "--context", "aps", "-n", USER_NS]))
                    .await
                    .unwrap();
            failed.iter().any(|f| f.starts_with("relay on gw-"))
        }
    });
    broken.await;
    aps.kubelet.set_broken(&[]);

    // A Gateway that is not Ready, and a control endpoint nobody answers at.
    let none: scistream_api::Gateway = serde_json::from_value(json!({"apiVersion": "scistream.io/v1alpha1", "kind": "Gateway",
        "metadata": {"name": "nowhere"}, "spec": {"nodeSelector": {"scistream.io/gateway": "none"}, "bandwidth": "1Gbps",
        "podNamespace": GATEWAY_NS}}))
    .unwrap();
    Api::<scistream_api::Gateway>::all(alcf.client.clone()).create(&PostParams::default(), &none).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(alcf.client.clone(), keys::OPERATOR_NAMESPACE);
    let gone = format!("127.0.0.1:{}", free_port());
    cms.patch(
        keys::CONTROL_ENDPOINT_CONFIGMAP,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"address": gone}})),
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(20), || {
        let kc = kc.clone();
        async move {
            let (_, failed, _) =
                tokio::task::spawn_blocking(move || doctor(&kc, &["--context", "alcf"])).await.unwrap();
            has(&failed, "Gateway nowhere", "NoReadyNodes")
        }
    })
    .await;
    let (code, failed, _) = doctor(&kc, &["--context", "alcf"]);
    assert_eq!(code, Some(4));
    assert!(has(&failed, "control endpoint", "connection refused"), "{failed:?}");

    // No operator: its Gateway never processed.
    let idle = Facility::start("idle").await;
    idle.apply_gateway(
        json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "1Gbps", "podNamespace": GATEWAY_NS}),
    )
    .await;
    let (code, failed, _) = doctor(idle.cluster.kubeconfig_path(), &[]);
    assert_eq!(code, Some(4));
    assert!(has(&failed, "operator", "Gateway dtn not processed"), "{failed:?}");
    idle.shutdown().await;

    // No CRDs.
    let bare = scistream_testcluster::TestCluster::builder().name("bare").start().await.unwrap();
    let (code, failed, _) = doctor(bare.kubeconfig_path(), &[]);
    assert_eq!(code, Some(4));
    assert!(has(&failed, "CRDs", "not installed"), "{failed:?}");
    bare.shutdown().await;
    aps.shutdown().await;
    alcf.shutdown().await;
}
