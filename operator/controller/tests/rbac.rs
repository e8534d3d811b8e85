//! The operator works with exactly the RBAC rules the chart ships, on an API server that
//! enforces them, and those rules deny what it must not do.

use std::path::PathBuf;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::{Api, api::PostParams};
use scistream_api::Phase;
use scistream_testkit::{Facility, GATEWAY_NS};
use serde_json::json;

fn rules(file: &str) -> Vec<PolicyRule> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/scistream-operator/files").join(file);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_operator_runs_with_exactly_the_shipped_rules() {
    let mut f = Facility::builder("rbac")
        .user("operator-token", "system:serviceaccount:default:scistream-operator", &[])
        .start()
        .await;
    let crs: Api<ClusterRole> = Api::all(f.client.clone());
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "scistream-operator"}})).unwrap();
    crs.create(&PostParams::default(), &ClusterRole { rules: Some(rules("operator-clusterrole-rules.yaml")), ..role })
        .await
        .unwrap();
    let crbs: Api<ClusterRoleBinding> = Api::all(f.client.clone());
    let binding = json!({"metadata": {"name": "scistream-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "scistream-operator"},
        "subjects": [{"kind": "User", "name": "system:serviceaccount:default:scistream-operator"}]});
    crbs.create(&PostParams::default(), &serde_json::from_value(binding).unwrap()).await.unwrap();
    let roles: Api<Role> = Api::namespaced(f.client.clone(), "default");
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "scistream-operator"}})).unwrap();
    roles
        .create(&PostParams::default(), &Role { rules: Some(rules("operator-role-rules.yaml")), ..role })
        .await
        .unwrap();
    let rbs: Api<RoleBinding> = Api::namespaced(f.client.clone(), "default");
    let binding = json!({"metadata": {"name": "scistream-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scistream-operator"},
        "subjects": [{"kind": "User", "name": "system:serviceaccount:default:scistream-operator"}]});
    rbs.create(&PostParams::default(), &serde_json::from_value(binding).unwrap()).await.unwrap();

    // The operator, as that user, with leader election (so the Lease rule is exercised too).
    f.start_operator_as("operator-token", true);
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
    f.requests().delete("r", &Default::default()).await.unwrap();
    f.assert_released("r", "00000000-0000-4000-8000-000000000001").await;

    // And it may not do what it does not need: e.g. delete Nodes or read Secrets' cluster roles.
    let as_operator = f.cluster.client_for_token("operator-token").await.unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(as_operator.clone());
    let denied = nodes.delete("gw-a", &Default::default()).await.unwrap_err();
    assert!(matches!(denied, kube::Error::Api(s) if s.code == 403));
    let crs: Api<ClusterRole> = Api::all(as_operator);
    assert!(matches!(crs.list(&Default::default()).await.unwrap_err(), kube::Error::Api(s) if s.code == 403));
    f.shutdown().await;
}
