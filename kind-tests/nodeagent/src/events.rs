//! Core/v1 Events about pods, as the kubelet records them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

/// Event reasons (kubelet's).
pub mod reason {
    /// A container started.
    pub const STARTED: &str = "Started";
    /// A container could not be started or exited with an error.
    pub const FAILED: &str = "Failed";
    /// A crashed container waits before its restart.
    pub const BACK_OFF: &str = "BackOff";
    /// A container is being stopped.
    pub const KILLING: &str = "Killing";
    /// A probe failed.
    pub const UNHEALTHY: &str = "Unhealthy";
}

/// Records an Event on `pod`; failures are logged, never returned (events are best effort).
pub async fn record(client: &Client, pod: &Pod, node: &str, warning: bool, reason: &str, message: String) {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let now = Timestamp::now();
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{}", pod.name_any(), &uuid::Uuid::new_v4().simple().to_string()[..16])),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource { component: Some("kubelet".into()), host: Some(node.into()) }),
        reporting_component: Some(crate::MANAGER.into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        action: Some(reason.into()),
        count: Some(1),
        ..Event::default()
    };
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns).create(&PostParams::default(), &ev).await {
        tracing::debug!(pod = %pod.name_any(), reason, error = %e, "recording event failed");
    }
}
