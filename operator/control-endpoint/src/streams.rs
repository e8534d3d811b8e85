//! What the handlers need from the cluster, as a trait ([`Streams`]) so the protocol logic in
//! [`crate::handler`] does not depend on how StreamRequests are stored; [`KubeStreams`] is the
//! implementation on the Kubernetes API (reads from the [`Index`], writes by the API).

use std::{future::Future, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use scistream_api::{StreamRequest, keys};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    index::Index,
    legacy::{FIELD_MANAGER, MANAGED_BY_ENDPOINT, NewStream},
};

/// Access to StreamRequests and their Hello keys.
pub trait Streams: Send + Sync + 'static {
    /// The index of StreamRequests by stream id.
    fn index(&self) -> &Index;
    /// The Hello key of `sr` (`None` when its Secret or key does not exist).
    fn hello_key(&self, sr: &StreamRequest) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Records a Hello on `sr`'s status: `helloTime`, and `prodListeners` for a producer.
    fn record_hello(
        &self,
        sr: &StreamRequest,
        hello_time: &str,
        prod_listeners: Option<&[String]>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Creates the StreamRequest of a legacy `req` and its Hello-key Secret.
    fn create(&self, new: &NewStream, namespace: &str) -> impl Future<Output = Result<()>> + Send;
    /// Merge-patches `sr`'s spec.
    fn patch(&self, sr: &StreamRequest, patch: &Value) -> impl Future<Output = Result<()>> + Send;
    /// Deletes `sr`.
    fn delete(&self, sr: &StreamRequest) -> impl Future<Output = Result<()>> + Send;
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

    async fn record_hello(
        &self,
        sr: &StreamRequest,
        hello_time: &str,
        prod_listeners: Option<&[String]>,
    ) -> Result<()> {
        let (ns, name) = name_of(sr)?;
        let mut status = json!({ "helloTime": hello_time });
        if let Some(l) = prod_listeners {
            status["prodListeners"] = json!(l);
        }
        let body = json!({
            "apiVersion": StreamRequest::api_version(&()),
            "kind": StreamRequest::kind(&()),
            "status": status,
        });
        let api: Api<StreamRequest> = Api::namespaced(self.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
            .await
            .map_err(Error::kube(format!("record the Hello on StreamRequest {ns}/{name}")))?;
        Ok(())
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
}

/// Shared handle, so tests can wrap it.
impl<T: Streams> Streams for Arc<T> {
    fn index(&self) -> &Index {
        (**self).index()
    }
    fn hello_key(&self, sr: &StreamRequest) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send {
        (**self).hello_key(sr)
    }
    fn record_hello(
        &self,
        sr: &StreamRequest,
        hello_time: &str,
        prod_listeners: Option<&[String]>,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).record_hello(sr, hello_time, prod_listeners)
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
}
