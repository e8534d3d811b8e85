//! The operator works with exactly the RBAC objects the chart renders, on an API server that
//! enforces them, and those rules deny what it must not do: write pods or Secrets outside the
//! gateway namespaces, list Secrets cluster-wide, delete Nodes, read RBAC.

mod chart;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use kube::{Api, Client, api::PostParams};
use scistream_api::{Gateway, Phase, conditions};
use scistream_testkit::{Facility, GATEWAY_NS, OperatorOptions};
use serde_json::{Value, json};

/// The release namespace of the test's install (the operator's Lease lives here too).
const RELEASE_NS: &str = "default";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:default:t-scistream-operator";

/// Creates every Namespace (unless it exists) and RBAC object of the chart's rendering.
async fn install_rbac(admin: &Client, rendered: &[Value]) -> usize {
    for o in rendered.iter().filter(|o| o["kind"] == "Namespace") {
        let api: Api<Namespace> = Api::all(admin.clone());
        let ns: Namespace = serde_json::from_value(o.clone()).unwrap();
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create {:?}: {e}", o["metadata"]["name"]),
        }
    }
    let mut created = 0;
    for o in rendered {
        let kind = o["kind"].as_str().unwrap_or_default();
        if !["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"].contains(&kind) {
            continue;
        }
        let ar = kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "rbac.authorization.k8s.io",
            "v1",
            kind,
        ));
        let api: Api<kube::api::DynamicObject> = match o["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
            None => Api::all_with(admin.clone(), &ar),
        };
        api.create(&PostParams::default(), &serde_json::from_value(o.clone()).unwrap()).await.unwrap();
        created += 1;
    }
    created
}

fn forbidden<T: std::fmt::Debug>(r: kube::Result<T>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test]
async fn the_operator_runs_with_exactly_the_charts_rules() {
    let mut f = Facility::builder("rbac").user("operator-token", SERVICE_ACCOUNT, &[]).start().await;
    let gateway_ns = format!("gatewayNamespace.name={GATEWAY_NS}");
    let rendered = chart::objects_in(RELEASE_NS, &[&gateway_ns, "controlEndpoint.legacy.gateway=dtn"]);
    assert!(install_rbac(&f.client, &rendered).await >= 10, "the chart's roles and bindings");
    let args = chart::operator_args(&rendered);
    let namespaces = args.iter().find(|a| a.starts_with("--gateway-namespaces=")).expect("the chart names them");
    assert_eq!(namespaces, &format!("--gateway-namespaces={GATEWAY_NS}"));

    // The operator, as that ServiceAccount, with leader election (so the Lease rule is exercised too).
    f.start_operator_as("operator-token", OperatorOptions::quick().leader_election(true).args([namespaces.clone()]));
    f.apply_gateway(json!({"nodeSelector": {"scistream.io/gateway": "dtn"}, "bandwidth": "10Gbps",
        "podNamespace": GATEWAY_NS, "portRange": {"start": 5100, "end": 5119}}))
        .await;
    f.wait_gateway(20, |g| g.status.as_ref().is_some_and(|s| s.ready_nodes == 2)).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let peer = rcgen::CertificateParams::new(vec!["p".to_owned()]).unwrap().self_signed(&key).unwrap().pem();
    f.create_request(
        "r",
        json!({"streamId": "00000000-0000-4000-8000-000000000001", "role": "Producer",
        "gateway": "dtn", "targets": ["192.0.2.50:7000"], "peerCertificate": peer}),
    )
    .await;
    f.wait_request("r", 20, |sr| sr.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)).await;
    // The in-use finalizer is the operator's to write on Gateways.
    f.wait_gateway(20, |g| g.metadata.finalizers.iter().flatten().any(|x| x == scistream_api::keys::FINALIZER_GATEWAY))
        .await;
    f.requests().delete("r", &Default::default()).await.unwrap();
    f.assert_released("r", "00000000-0000-4000-8000-000000000001").await;

    // A Gateway whose relays would run outside the gateway namespaces is not Ready and says why.
    let gateways: Api<Gateway> = Api::all(f.client.clone());
    let elsewhere = json!({"apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "elsewhere"},
        "spec": {"nodeSelector": {"scistream.io/gateway": "none"}, "bandwidth": "1Gbps", "podNamespace": "default",
                 "portRange": {"start": 6100, "end": 6119}}});
    gateways.create(&PostParams::default(), &serde_json::from_value(elsewhere).unwrap()).await.unwrap();
    let judged = async || {
        let st = gateways.get("elsewhere").await.ok()?.status?;
        conditions::find(&st.conditions, "Ready").cloned()
    };
    scistream_testkit::wait_until(std::time::Duration::from_secs(20), async || judged().await.is_some()).await;
    let verdict = judged().await.unwrap();
    assert_eq!((verdict.status.as_str(), verdict.reason.as_str()), ("False", "NamespaceNotPermitted"), "{verdict:?}");
    assert!(verdict.message.contains(GATEWAY_NS) && verdict.message.contains("extraGatewayNamespaces"), "{verdict:?}");

    // And it may not do what it does not need.
    let as_operator = f.cluster.client_for_token("operator-token").await.unwrap();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "intruder"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    assert!(forbidden(
        Api::<Pod>::namespaced(as_operator.clone(), "default").create(&PostParams::default(), &pod).await
    ));
    let secrets_everywhere: Api<Secret> = Api::all(as_operator.clone());
    assert!(forbidden(secrets_everywhere.list(&Default::default()).await), "no cluster-wide Secret list");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "planted"}})).unwrap();
    let in_kube_system: Api<Secret> = Api::namespaced(as_operator.clone(), "kube-system");
    assert!(forbidden(in_kube_system.create(&PostParams::default(), &secret).await), "no Secret writes outside");
    let in_gateway_ns: Api<Secret> = Api::namespaced(as_operator.clone(), GATEWAY_NS);
    assert!(in_gateway_ns.list(&Default::default()).await.is_ok(), "its own gateway namespace");
    // Legacy req: StreamRequests and Hello-key Secrets in the legacy namespace only.
    let legacy: Api<Secret> = Api::namespaced(as_operator.clone(), "scistream-legacy");
    assert!(legacy.create(&PostParams::default(), &secret).await.is_ok(), "a legacy Hello-key Secret");
    assert!(forbidden(legacy.list(&Default::default()).await), "but not a list of them");
    let sr: scistream_api::StreamRequest = serde_json::from_value(json!({"metadata": {"name": "legacy-elsewhere"},
        "spec": {"streamId": "00000000-0000-4000-8000-000000000002", "role": "Producer", "gateway": "dtn"}}))
    .unwrap();
    let in_user_ns: Api<scistream_api::StreamRequest> = Api::namespaced(as_operator.clone(), "default");
    assert!(forbidden(in_user_ns.create(&PostParams::default(), &sr).await), "no StreamRequests outside it");
    assert!(forbidden(Api::<Node>::all(as_operator.clone()).delete("gw-a", &Default::default()).await));
    let crs: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(as_operator);
    assert!(forbidden(crs.list(&Default::default()).await));
    f.shutdown().await;
}
