//! What the operator's caches keep of an object: what it reads, not the bookkeeping the API
//! server keeps for other clients. `metadata.managedFields` (server-side apply's record of
//! who set what, often larger than the object itself) and kubectl's last-applied annotation
//! are dropped before an object enters a store, as kube.rs's optimization guide advises
//! ("minimize what you store"); of a Node, its list of cached images too (hundreds of entries
//! on a real node). Nothing the operator decides on is dropped.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ContainerState, ContainerStatus, Node, Pod, PodCondition, PodStatus};
use kube::Resource;
use sha2::{Digest, Sha256};

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

/// [`trim`], a relay pod's spec and most of its status: the operator decides on a pod's name,
/// annotations (request, spec hash), deletion, phase, readiness and waiting containers, and
/// never reads back the spec it applied (a changed spec shows as a changed hash annotation).
/// At 5,000 streams with a relay pod each, the pods were the largest of the caches.
pub fn trim_pod(pod: &mut Pod) {
    trim(pod);
    pod.spec = None;
    // Of the status: its phase and reason, the Ready condition, and each container's waiting
    // state (`stream::targets::pod_ready`, `pod_failure`).
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        reason: s.reason,
        conditions: s.conditions.map(|c| {
            c.into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| PodCondition { type_: c.type_, status: c.status, ..PodCondition::default() })
                .collect()
        }),
        container_statuses: s.container_statuses.map(|cs| {
            cs.into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    ready: c.ready,
                    restart_count: c.restart_count,
                    state: c
                        .state
                        .and_then(|st| st.waiting)
                        .map(|w| ContainerState { waiting: Some(w), ..ContainerState::default() }),
                    ..ContainerStatus::default()
                })
                .collect()
        }),
        ..PodStatus::default()
    });
}

/// Where a cached relay ConfigMap keeps the SHA-256 of its data in place of the data. No
/// ConfigMap key can contain `/`, so it never stands for a real key.
pub const DATA_DIGEST: &str = "scistream.io/data-sha256";

/// The form in which the cache keeps `data`: its digest under [`DATA_DIGEST`].
pub fn digested(data: Option<&BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let data = data?;
    let mut hash = Sha256::new();
    for (key, value) in data {
        for part in [key, value] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Some(BTreeMap::from([(DATA_DIGEST.to_owned(), hex)]))
}

/// [`trim`], and a relay ConfigMap's data kept as its digest ([`digested`]): the operator only
/// asks whether the data it would apply is already there, and at 5,000 streams with a relay
/// each the rendered configurations were the largest part of the ConfigMap cache.
pub fn trim_config_map(cm: &mut ConfigMap) {
    trim(cm);
    cm.data = digested(cm.data.as_ref());
    cm.binary_data = None;
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
    fn a_relay_config_map_keeps_the_digest_of_its_data() {
        let cm = |data: serde_json::Value| -> ConfigMap {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "s2ds-x", "labels": {"a": "b"}}, "data": data}),
            )
            .expect("a ConfigMap")
        };
        let mut cached = cm(serde_json::json!({"relay-gw-a.json": "{\"listen\": 5100}", "peer.crt": "PEM"}));
        trim_config_map(&mut cached);
        assert_eq!(
            cached.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()),
            Some(vec![DATA_DIGEST.to_owned()])
        );
        assert_eq!(cached.metadata.labels, cm(serde_json::json!({})).metadata.labels);
        let same = cm(serde_json::json!({"peer.crt": "PEM", "relay-gw-a.json": "{\"listen\": 5100}"}));
        assert_eq!(digested(same.data.as_ref()), cached.data, "the same data, in any order");
        for other in [
            serde_json::json!({"relay-gw-a.json": "{\"listen\": 5101}", "peer.crt": "PEM"}),
            serde_json::json!({"relay-gw-a.json": "{\"listen\": 5100}"}),
            serde_json::json!({"relay-gw-a.json": "{\"listen\": 5100}peer.crt", "": "PEM"}),
            serde_json::json!({}),
        ] {
            assert_ne!(digested(cm(other.clone()).data.as_ref()), cached.data, "{other}");
        }
        assert_eq!(digested(None), None);
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
            "status": {"phase": "Running", "hostIP": "192.0.2.1",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "relay", "ready": true, "restartCount": 2, "image": "s2ds", "imageID": ""}]}
        }))
        .expect("a Pod");
        let kept = pod.clone();
        trim_pod(&mut pod);
        assert_eq!((pod.spec.as_ref(), pod.metadata.managed_fields.as_ref()), (None, None));
        assert_eq!(pod.metadata.annotations, kept.metadata.annotations);
        assert_eq!(pod.metadata.labels, kept.metadata.labels);
        assert_eq!(pod.metadata.deletion_timestamp, kept.metadata.deletion_timestamp);
        let status = pod.status.as_ref().expect("a status");
        let kept_status = kept.status.as_ref().expect("a status");
        assert_eq!((&status.phase, &status.reason), (&kept_status.phase, &kept_status.reason));
        assert_eq!(crate::stream::targets::pod_ready(&pod), crate::stream::targets::pod_ready(&kept));
        assert!(crate::stream::targets::pod_ready(&pod));
        assert_eq!(status.host_ip, None);
        let c = &status.container_statuses.as_ref().expect("containers")[0];
        assert_eq!((c.name.as_str(), c.ready, c.restart_count, c.image.as_str()), ("relay", true, 2, ""));
        // A waiting container's reason, which tells a crash loop, is kept.
        let mut looping = kept.clone();
        let waiting = serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}});
        if let Some(cs) = looping.status.as_mut().and_then(|s| s.container_statuses.as_mut()) {
            cs[0].state = Some(serde_json::from_value(waiting).expect("a state"));
            cs[0].last_state = cs[0].state.clone();
        }
        let why = crate::stream::targets::pod_failure(&looping);
        trim_pod(&mut looping);
        assert_eq!(crate::stream::targets::pod_failure(&looping), why);
        assert_eq!(why.as_deref(), Some("CrashLoopBackOff: back-off 10s"));
        let failed: Pod =
            serde_json::from_value(serde_json::json!({"status": {"phase": "Failed", "reason": "Evicted"}}))
                .expect("a Pod");
        let mut trimmed = failed.clone();
        trim_pod(&mut trimmed);
        assert_eq!(crate::stream::targets::pod_failure(&trimmed).as_deref(), Some("Evicted"));
    }
}
