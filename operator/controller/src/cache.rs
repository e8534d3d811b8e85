//! What the operator's caches keep of an object: what it reads, not the bookkeeping the API
//! server keeps for other clients. `metadata.managedFields` (server-side apply's record of
//! who set what, often larger than the object itself) and kubectl's last-applied annotation
//! are dropped before an object enters a store, as kube.rs's optimization guide advises
//! ("minimize what you store"); of a Node, its list of cached images too (hundreds of entries
//! on a real node). Nothing the operator decides on is dropped.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Resource;

/// kubectl's copy of the last applied object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from `o` what no reconcile reads.
pub fn trim<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// [`trim`], and a relay pod's spec: the operator decides on a pod's name, annotations
/// (request, spec hash), deletion and status, and never reads back the spec it applied (a
/// changed spec shows as a changed hash annotation). At 5,000 streams with a relay pod each,
/// the specs were most of the pod cache.
pub fn trim_pod(pod: &mut Pod) {
    trim(pod);
    pod.spec = None;
}

/// [`trim`], and a Node's image list.
pub fn trim_node(node: &mut Node) {
    trim(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bookkeeping_goes_and_what_is_read_stays() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gw-a", "labels": {"scistream.io/gateway": "dtn"},
                "annotations": {"scistream.io/wan-address": "198.51.100.1", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {}}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
                "images": [{"names": ["registry/huge:1"], "sizeBytes": 1}]}
        }))
        .expect("a Node");
        let kept = node.clone();
        trim_node(&mut node);
        assert_eq!(node.metadata.managed_fields, None);
        assert_eq!(node.status.as_ref().and_then(|s| s.images.as_ref()), None);
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.len(), 1, "{annotations:?}");
        assert_eq!(node.metadata.labels, kept.metadata.labels);
        let status = |n: &Node| n.status.clone().map(|s| (s.conditions, s.addresses));
        assert_eq!(status(&node), status(&kept));
    }

    #[test]
    fn a_relay_pod_keeps_what_decides_on_it() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "relay-gw-a", "namespace": "scistream-gateways",
                "deletionTimestamp": "2026-12-07T10:00:00Z",
                "labels": {"scistream.io/stream-id": "s"},
                "annotations": {"scistream.io/request": "u/s", "scistream.io/spec-hash": "abc"},
                "managedFields": [{"manager": "scistream-operator", "operation": "Apply"}]},
            "spec": {"nodeName": "gw-a", "containers": [{"name": "relay", "image": "s2ds", "args": ["--config", "/etc/relay"]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "relay", "ready": true, "restartCount": 2, "image": "s2ds", "imageID": ""}]}
        }))
        .expect("a Pod");
        let kept = pod.clone();
        trim_pod(&mut pod);
        assert_eq!((pod.spec.as_ref(), pod.metadata.managed_fields.as_ref()), (None, None));
        assert_eq!(pod.metadata.annotations, kept.metadata.annotations);
        assert_eq!(pod.metadata.labels, kept.metadata.labels);
        assert_eq!(pod.metadata.deletion_timestamp, kept.metadata.deletion_timestamp);
        assert_eq!(pod.status, kept.status);
    }
}
