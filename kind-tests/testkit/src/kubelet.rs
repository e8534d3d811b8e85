//! Gateway nodes and a stand-in kubelet for them, for tests about the operator's decisions
//! and API writes (the node agent of `kind-tests/nodeagent` runs real relays).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use scistream_api::keys;
use serde_json::json;
use tokio::task::JoinHandle;

/// A Ready gateway node of Gateway `dtn` (label `scistream.io/gateway=dtn`) with its WAN and
/// LAN address annotations; its InternalIP is the LAN address.
pub fn node(name: &str, wan: &str, lan: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"scistream.io/gateway": "dtn"},
                     "annotations": {keys::ANNOTATION_WAN_ADDRESS: wan, keys::ANNOTATION_LAN_ADDRESS: lan}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": lan}]}
    }))
    .expect("a literal Node")
}

/// Plays the kubelet of every node: marks each pod Running with its one container `relay`
/// Ready as soon as it appears (NotReady, waiting in `CrashLoopBackOff`, on a node set
/// broken), and removes pods being deleted at once, as a kubelet does once their processes
/// have exited.
///
/// It writes only what a kubelet writes: pod status, through `pods/status`, and the final
/// deletion. It never sends `status.qosClass`: the API server derives it at creation and
/// refuses a status that changes it (a merge patch leaves it as it is).
///
/// Stopped when dropped.
pub struct StandInKubelet {
    task: JoinHandle<()>,
    broken: Arc<Mutex<Vec<String>>>,
}

impl StandInKubelet {
    /// Starts watching all pods of `client`'s cluster.
    pub fn spawn(client: Client) -> StandInKubelet {
        let broken = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(client, broken.clone()));
        StandInKubelet { task, broken }
    }

    /// From now on the pods of `nodes` are NotReady, those of other nodes Ready (pods already
    /// there change at their next watch event, e.g. the operator's next write).
    pub fn set_broken(&self, nodes: &[&str]) {
        *self.broken.lock().expect("no panic while holding the lock") = nodes.iter().map(|n| (*n).to_owned()).collect();
    }
}

impl Drop for StandInKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(client: Client, broken: Arc<Mutex<Vec<String>>>) {
    let api: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
    while let Some(Ok(pod)) = events.next().await {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
            continue;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let ready = !broken.lock().expect("no panic while holding the lock").contains(&node);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let is_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if phase == Some("Running") && is_ready == ready {
            continue;
        }
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": "relay", "ready": ready, "restartCount": 0, "image": "", "imageID": "",
                                   "state": if ready { json!({"running": {}}) } else { json!({"waiting": {"reason": "CrashLoopBackOff"}}) }}]
        }});
        // A refused write is tried again at the pod's next event.
        let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
    }
}
