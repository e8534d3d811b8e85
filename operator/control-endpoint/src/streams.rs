//! What the handlers need from the cluster, as a trait ([`Streams`]) so the protocol logic in
//! [`crate::handler`] does not depend on how StreamRequests are stored; [`KubeStreams`] is the
//! implementation on the Kubernetes API (reads from the [`Index`], writes by the API).

use std::{future::Future, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use scistream_api::{Gateway, RateEnforcement, StreamRequest, keys};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    index::Index,
    legacy::{FIELD_MANAGER, MANAGED_BY_ENDPOINT, NewStream},
};

/// The status fields the control endpoint owns, written together in one server-side apply
/// (so a write never drops another of them): what an absent field means is "not set".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStatus {
    /// `helloTime` (RFC 3339).
    pub hello_time: Option<String>,
    /// `prodListeners` (producer side).
    pub prod_listeners: Option<Vec<String>>,
    /// `rateEnforcement` (streams a legacy `req` created).
    pub rate_enforcement: Option<RateEnforcement>,
}

impl EndpointStatus {
    /// The `status` object of the apply.
    pub fn to_json(&self) -> Value {
        let mut status = json!({});
        if let Some(t) = &self.hello_time {
            status["helloTime"] = json!(t);
        }
        if let Some(l) = &self.prod_listeners {
            status["prodListeners"] = json!(l);
        }
        if let Some(r) = self.rate_enforcement {
            status["rateEnforcement"] = json!(r);
        }
        status
    }
}

/// Access to StreamRequests and their Hello keys.
pub trait Streams: Send + Sync + 'static {
    /// The index of StreamRequests by stream id.
    fn index(&self) -> &Index;
    /// The Hello key of `sr` (`None` when its Secret or key does not exist).
    fn hello_key(&self, sr: &StreamRequest) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Writes the endpoint's status fields of `sr` (a Hello: `helloTime`, and `prodListeners`
    /// for a producer; a legacy stream's `rateEnforcement`).
    fn write_status(&self, sr: &StreamRequest, status: &EndpointStatus) -> impl Future<Output = Result<()>> + Send;
    /// Creates the StreamRequest of a legacy `req`, its Hello-key Secret and its status'
    /// `rateEnforcement`.
    fn create(&self, new: &NewStream, namespace: &str) -> impl Future<Output = Result<()>> + Send;
    /// Merge-patches `sr`'s spec.
    fn patch(&self, sr: &StreamRequest, patch: &Value) -> impl Future<Output = Result<()>> + Send;
    /// Deletes `sr`.
    fn delete(&self, sr: &StreamRequest) -> impl Future<Output = Result<()>> + Send;
    /// The Gateway named `name`, for its policy (`None` when it does not exist).
    fn gateway(&self, name: &str) -> impl Future<Output = Result<Option<Gateway>>> + Send;
}

/// [`Streams`] on the Kubernetes API.
#[derive(Clone)]
pub struct KubeStreams {
    client: Client,
    index: Index,
}

impl KubeStreams {
    /// Reads through `index` (fed by [`crate::index::run`]) and writes with `client`.
    pub fn new(client: Client, index: Index) -> Self {
        Self { client, index }
    }

    /// Applies `status` to `sr` as field manager `manager`.
    async fn apply_status(&self, sr: &StreamRequest, status: &EndpointStatus, manager: &str) -> Result<()> {
        let (ns, name) = name_of(sr)?;
        let body = json!({
            "apiVersion": StreamRequest::api_version(&()),
            "kind": StreamRequest::kind(&()),
            "status": status.to_json(),
        });
        let api: Api<StreamRequest> = Api::namespaced(self.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::apply(manager).force(), &Patch::Apply(body))
            .await
            .map_err(Error::kube(format!("write the status of StreamRequest {ns}/{name}")))?;
        Ok(())
    }
}

fn name_of(sr: &StreamRequest) -> Result<(String, String)> {
    let ns = sr.namespace().ok_or_else(|| Error::Setup("a StreamRequest without a namespace".into()))?;
    Ok((ns, sr.name_any()))
}

impl Streams for KubeStreams {
    fn index(&self) -> &Index {
        &self.index
    }

    async fn hello_key(&self, sr: &StreamRequest) -> Result<Option<Vec<u8>>> {
        let Some(r) = &sr.spec.hello_key_secret_ref else { return Ok(None) };
        let (ns, _) = name_of(sr)?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = api.get_opt(&r.name).await.map_err(Error::kube(format!("read Secret {ns}/{}", r.name)))?;
        Ok(secret.and_then(|s| s.data).and_then(|mut d| d.remove(&r.key)).map(|b| b.0))
    }

    async fn write_status(&self, sr: &StreamRequest, status: &EndpointStatus) -> Result<()> {
        self.apply_status(sr, status, FIELD_MANAGER).await
    }

    async fn create(&self, new: &NewStream, namespace: &str) -> Result<()> {
        let sr: StreamRequest = serde_json::from_value(new.object.clone())
            .map_err(|e| Error::Setup(format!("built an invalid StreamRequest: {e}")))?;
        let api: Api<StreamRequest> = Api::namespaced(self.client.clone(), namespace);
        let pp = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
        let created = api
            .create(&pp, &sr)
            .await
            .map_err(Error::kube(format!("create StreamRequest {namespace}/{}", new.name)))?;
        let key: [u8; 32] = rand::random();
        let owner = created.controller_owner_ref(&()).map(|mut o| {
            o.controller = Some(false);
            o
        });
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": new.secret_name,
                "namespace": namespace,
                "labels": { keys::LABEL_MANAGED_BY: MANAGED_BY_ENDPOINT, keys::LABEL_STREAM_ID: new.stream_id },
                "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
            },
            "stringData": { keys::DEFAULT_HELLO_KEY: key.iter().map(|b| format!("{b:02x}")).collect::<String>() },
        }))
        .map_err(|e| Error::Setup(format!("built an invalid Secret: {e}")))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        if let Err(e) = secrets.create(&pp, &secret).await {
            let _ = api.delete(&new.name, &DeleteParams::default()).await;
            return Err(Error::kube(format!("create the Hello-key Secret {namespace}/{}", new.secret_name))(e));
        }
        // Its own field manager: the Hello of s2uc may be recorded before this is written.
        let status = EndpointStatus { rate_enforcement: Some(new.rate_enforcement), ..Default::default() };
        if let Err(e) = self.apply_status(&created, &status, keys::FIELD_MANAGER_CONTROL_ENDPOINT_REQ).await {
            let _ = api.delete(&new.name, &DeleteParams::default()).await;
            return Err(e);
        }
        Ok(())
    }

    async fn patch(&self, sr: &StreamRequest, patch: &Value) -> Result<()> {
        let (ns, name) = name_of(sr)?;
        let api: Api<StreamRequest> = Api::namespaced(self.client.clone(), &ns);
        let pp = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
        api.patch(&name, &pp, &Patch::Merge(patch))
            .await
            .map_err(Error::kube(format!("patch StreamRequest {ns}/{name}")))?;
        Ok(())
    }

    async fn delete(&self, sr: &StreamRequest) -> Result<()> {
        let (ns, name) = name_of(sr)?;
        let api: Api<StreamRequest> = Api::namespaced(self.client.clone(), &ns);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::kube(format!("delete StreamRequest {ns}/{name}"))(e)),
        }
    }

    async fn gateway(&self, name: &str) -> Result<Option<Gateway>> {
        let api: Api<Gateway> = Api::all(self.client.clone());
        api.get_opt(name).await.map_err(Error::kube(format!("read Gateway {name}")))
    }
}

/// Shared handle, so tests can wrap it.
impl<T: Streams> Streams for Arc<T> {
    fn index(&self) -> &Index {
        (**self).index()
    }
    fn hello_key(&self, sr: &StreamRequest) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send {
        (**self).hello_key(sr)
    }
    fn write_status(&self, sr: &StreamRequest, status: &EndpointStatus) -> impl Future<Output = Result<()>> + Send {
        (**self).write_status(sr, status)
    }
    fn create(&self, new: &NewStream, namespace: &str) -> impl Future<Output = Result<()>> + Send {
        (**self).create(new, namespace)
    }
    fn patch(&self, sr: &StreamRequest, patch: &Value) -> impl Future<Output = Result<()>> + Send {
        (**self).patch(sr, patch)
    }
    fn delete(&self, sr: &StreamRequest) -> impl Future<Output = Result<()>> + Send {
        (**self).delete(sr)
    }
    fn gateway(&self, name: &str) -> impl Future<Output = Result<Option<Gateway>>> + Send {
        (**self).gateway(name)
    }
}
