//! Node objects and their heartbeats (Ready condition and node Lease).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec as K8sNodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::topology::{ANNOTATION_LAN_ADDRESS, ANNOTATION_WAN_ADDRESS, NodeSpec};
use crate::{Error, MANAGER, Result};

/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Annotation marking nodes this agent manages.
pub const ANNOTATION_AGENT: &str = "nodeagent.scistream.io/agent";

/// Addresses of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAddresses {
    /// InternalIP (LAN, or loopback).
    pub internal: Ipv4Addr,
    /// ExternalIP (WAN), if any.
    pub external: Option<Ipv4Addr>,
}

/// The Node object for `spec` (pure).
pub fn node_object(spec: &NodeSpec, addrs: NodeAddresses, agent_id: &str) -> Node {
    let mut labels = spec.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), spec.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert(
        "kubernetes.io/arch".into(),
        std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
    );
    let mut annotations = spec.annotations.clone();
    annotations.insert(ANNOTATION_AGENT.into(), agent_id.into());
    annotations.entry(ANNOTATION_LAN_ADDRESS.into()).or_insert_with(|| addrs.internal.to_string());
    if let Some(w) = addrs.external {
        annotations.entry(ANNOTATION_WAN_ADDRESS.into()).or_insert_with(|| w.to_string());
    }
    Node {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(K8sNodeSpec {
            taints: Some(spec.taints.clone()).filter(|t| !t.is_empty()),
            ..K8sNodeSpec::default()
        }),
        status: None,
    }
}

/// The Node status with Ready = `ready` (pure).
pub fn node_status(spec: &NodeSpec, addrs: NodeAddresses, ready: bool, since: Timestamp) -> NodeStatus {
    let mut addresses = vec![
        NodeAddress { type_: "InternalIP".into(), address: addrs.internal.to_string() },
        NodeAddress { type_: "Hostname".into(), address: spec.name.clone() },
    ];
    if let Some(w) = addrs.external {
        addresses.insert(1, NodeAddress { type_: "ExternalIP".into(), address: w.to_string() });
    }
    let q = |s: &str| Quantity(s.into());
    let capacity = BTreeMap::from([
        ("cpu".into(), q("4")),
        ("memory".into(), q("8Gi")),
        ("pods".into(), q("110")),
        ("ephemeral-storage".into(), q("20Gi")),
    ]);
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "nodeagent is posting ready status")
    } else {
        ("False", "NodeAgentStopped", "nodeagent stopped; pods on this node are not running")
    };
    let now = Time(Timestamp::now());
    NodeStatus {
        addresses: Some(addresses),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(now),
            last_transition_time: Some(Time(since)),
        }]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: "linux".into(),
            kubelet_version: "v1.33.0-nodeagent".into(),
            kube_proxy_version: String::new(),
            container_runtime_version: "nodeagent://0.1".into(),
            os_image: "scistream nodeagent".into(),
            kernel_version: String::new(),
            boot_id: String::new(),
            machine_id: String::new(),
            system_uuid: String::new(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Creates or updates the Node object (metadata and spec).
pub async fn register(client: &Client, spec: &NodeSpec, addrs: NodeAddresses, agent_id: &str) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let obj = node_object(spec, addrs, agent_id);
    let ctx = || format!("registering Node {}", spec.name);
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": obj.metadata.labels, "annotations": obj.metadata.annotations},
                               "spec": {"taints": obj.spec.and_then(|s| s.taints)}});
            api.patch(&spec.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(Error::kube(ctx()))?;
            Ok(())
        }
        Err(e) => Err(Error::kube(ctx())(e)),
    }
}

/// Writes the Node's status (Ready or not).
pub async fn post_status(
    client: &Client,
    spec: &NodeSpec,
    addrs: NodeAddresses,
    ready: bool,
    since: Timestamp,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"status": node_status(spec, addrs, ready, since)});
    api.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("posting status of Node {}", spec.name)))?;
    Ok(())
}

/// Renews (or creates) the node's Lease.
pub async fn renew_lease(client: &Client, node: &str, duration_seconds: i32) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let spec = LeaseSpec {
        holder_identity: Some(node.into()),
        lease_duration_seconds: Some(duration_seconds),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..LeaseSpec::default()
    };
    let ctx = || format!("renewing Lease {LEASE_NAMESPACE}/{node}");
    let patch = json!({"spec": spec});
    match api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.into()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() }, &lease)
                .await
                .map_err(Error::kube(ctx()))?;
            Ok(())
        }
        Err(e) => Err(Error::kube(ctx())(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_carries_addresses_labels_and_taints() {
        let spec = NodeSpec::gateway("gw-a", "a").taint("scistream.io/gateway", "true", "NoSchedule");
        let addrs =
            NodeAddresses { internal: Ipv4Addr::new(198, 51, 100, 1), external: Some(Ipv4Addr::new(192, 0, 2, 1)) };
        let n = node_object(&spec, addrs, "agent-1");
        let ann = n.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(ann[ANNOTATION_WAN_ADDRESS], "192.0.2.1");
        assert_eq!(ann[ANNOTATION_LAN_ADDRESS], "198.51.100.1");
        assert_eq!(n.metadata.labels.as_ref().expect("labels")["scistream.io/facility"], "a");
        assert_eq!(n.spec.as_ref().and_then(|s| s.taints.as_ref()).map(Vec::len), Some(1));
        let s = node_status(&spec, addrs, false, Timestamp::now());
        let types: Vec<_> = s.addresses.iter().flatten().map(|a| a.type_.as_str()).collect();
        assert_eq!(types, vec!["InternalIP", "ExternalIP", "Hostname"]);
        assert_eq!(s.conditions.as_ref().expect("conds")[0].status, "False");
    }
}
