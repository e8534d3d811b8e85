//! A tiny scheduler for pods with no `nodeName`: a node of this agent is
//! eligible when it matches the pod's `nodeSelector` and the pod tolerates
//! its `NoSchedule`/`NoExecute` taints. Affinity, resources and ports are
//! ignored. Binding uses the `pods/binding` subresource, as on real clusters.

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::topology::NodeSpec;

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let key_ok = match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) => k == taint.key,
    };
    let value_ok = t.operator.as_deref() == Some("Exists")
        || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
    let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    key_ok && value_ok && effect_ok
}

/// Whether `pod` may run on `node` (pure).
pub fn fits(pod: &Pod, node: &NodeSpec) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v) || (k == "kubernetes.io/hostname" && *v == node.name));
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let taints_ok = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)));
    selector_ok && taints_ok
}

/// The node for `pod` among `nodes`, spreading pods by a hash of their name (pure).
pub fn choose<'a>(pod: &Pod, nodes: &'a [NodeSpec]) -> Option<&'a NodeSpec> {
    let spec = pod.spec.as_ref()?;
    if spec.node_name.is_some() || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if spec.scheduler_name.as_deref().is_some_and(|s| s != "default-scheduler") {
        return None;
    }
    let fitting: Vec<&NodeSpec> = nodes.iter().filter(|n| fits(pod, n)).collect();
    if fitting.is_empty() {
        return None;
    }
    let h = pod.name_any().bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    Some(fitting[h % fitting.len()])
}

/// Binds `pod` to `node` through the `pods/binding` subresource, as a scheduler does (a pod's
/// `spec.nodeName` cannot be changed by an update).
pub async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}
    });
    api.create_subresource::<serde_json::Value, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": v})).expect("pod")
    }

    #[test]
    fn selector_and_taints() {
        let nodes = vec![
            NodeSpec::new("a").label("zone", "x").taint("gw", "true", "NoSchedule"),
            NodeSpec::new("b").label("zone", "y"),
        ];
        let p = pod(json!({"containers": [], "nodeSelector": {"zone": "x"}}));
        assert!(choose(&p, &nodes).is_none(), "taint not tolerated");
        let p = pod(json!({"containers": [], "nodeSelector": {"zone": "x"},
                           "tolerations": [{"key": "gw", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}));
        assert_eq!(choose(&p, &nodes).map(|n| n.name.as_str()), Some("a"));
        let p = pod(
            json!({"containers": [], "tolerations": [{"operator": "Exists"}], "nodeSelector": {"kubernetes.io/hostname": "b"}}),
        );
        assert_eq!(choose(&p, &nodes).map(|n| n.name.as_str()), Some("b"));
        let bound = pod(json!({"containers": [], "nodeName": "a"}));
        assert!(choose(&bound, &nodes).is_none());
        let other = pod(json!({"containers": [], "schedulerName": "custom"}));
        assert!(choose(&other, &nodes).is_none());
    }
}
