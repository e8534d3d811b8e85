//! Connecting to a facility's cluster through a kubeconfig context, as kubectl does: the
//! files of $KUBECONFIG merged (or `--kubeconfig`), exec and OIDC credential plugins included
//! (through kube-rs).

use std::{path::Path, time::Duration};

use futures::{StreamExt as _, TryStreamExt as _};
use kube::{
    Api, Client, Resource,
    api::{WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use scistream_api::{Gateway, StreamRequest};
use serde::de::DeserializeOwned;

use crate::{
    error::{Error, Result},
    explain::{Target, explain},
};

/// How long a connection to an API server may take to open (kubectl's dialer waits 30 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One facility: a client and the namespace to work in.
#[derive(Clone)]
pub struct Facility {
    /// The context name as given (or the current context's name).
    pub context: String,
    /// Namespace for StreamRequests and Hello-key Secrets.
    pub namespace: String,
    /// The API server's URL, for messages.
    pub server: String,
    /// API client.
    pub client: Client,
}

impl std::fmt::Debug for Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.context, self.namespace)
    }
}

impl Facility {
    /// Connects to `context` of the kubeconfig (`path`, else $KUBECONFIG / ~/.kube/config).
    pub async fn connect(path: Option<&Path>, context: Option<&str>, namespace: Option<&str>) -> Result<Facility> {
        let kubeconfig = match path {
            Some(p) => Kubeconfig::read_from(p),
            None => Kubeconfig::read(),
        }
        .map_err(|e| Error::Usage(format!("cannot read the kubeconfig: {e}")))?;
        let name = context.map(str::to_owned).or_else(|| kubeconfig.current_context.clone()).ok_or_else(|| {
            Error::Usage("no context given and the kubeconfig has no current context; pass --context".to_owned())
        })?;
        let known = kubeconfig.contexts.iter().find(|c| c.name == name);
        let Some(known) = known else {
            let names: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "context {name:?} is not in the kubeconfig (known: {})",
                names.join(", ")
            )));
        };
        let namespace = namespace
            .map(str::to_owned)
            .or_else(|| known.context.as_ref().and_then(|c| c.namespace.clone()))
            .unwrap_or_else(|| "default".to_owned());
        let options = KubeConfigOptions { context: Some(name.clone()), ..KubeConfigOptions::default() };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| Error::Usage(format!("context {name}: {e}")))?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let server = config.cluster_url.to_string().trim_end_matches('/').to_owned();
        // Who is asking, in the API server's audit log and request metrics.
        let agent = concat!("kubectl-scistream/", env!("CARGO_PKG_VERSION"));
        config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(agent)));
        // kube-rs runs an exec credential plugin here (an OIDC id-token is checked on first use).
        let client = Client::try_from(config).map_err(|e| match crate::error::auth_problem(&e) {
            Some(why) => Error::Auth(format!("context {name}: {why}")),
            None => Error::Usage(format!("context {name}: {e}")),
        })?;
        Ok(Facility { context: name, namespace, server, client })
    }

    /// Turns a failed call made while doing `what` into a plain-words error naming this
    /// facility's context and API server (see [`explain`]).
    pub fn fail(&self, what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error + '_ {
        let what = what.into();
        move |e| explain(e, &what, Target { context: &self.context, server: &self.server })
    }

    /// Object `name`, or `None` if there is no such object. Unlike `Api::get_opt`, a 404 for
    /// the resource itself (its CRD is not installed) is an error, not "no such object".
    pub async fn get_opt<K>(&self, api: &Api<K>, name: &str, what: &str) -> Result<Option<K>>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        match api.get(name).await {
            Ok(object) => Ok(Some(object)),
            Err(kube::Error::Api(s)) if s.code == 404 && s.details.as_ref().is_some_and(|d| !d.name.is_empty()) => {
                Ok(None)
            }
            Err(e) => Err(self.fail(what)(e)),
        }
    }

    /// StreamRequests in this facility's namespace.
    pub fn requests(&self) -> Api<StreamRequest> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Gateways of this facility.
    pub fn gateways(&self) -> Api<Gateway> {
        Api::all(self.client.clone())
    }

    /// Watches StreamRequest `name` from `version` (the one last read) and hands each event
    /// to `seen` until it has an answer. `Ok(None)`: the watch ended first (the server's
    /// timeout, or an Error event such as 410 Gone, after a short pause); read the object again
    /// and watch from there. Waiting this way costs one read and one watch, not a read a tick.
    pub async fn watch_request<T>(
        &self,
        name: &str,
        version: &str,
        mut seen: impl FnMut(WatchEvent<StreamRequest>) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(290);
        let what = format!("watch StreamRequest {name} in {}", self.context);
        let mut events = self.requests().watch(&params, version).await.map_err(self.fail(what.clone()))?.boxed();
        while let Some(event) = events.try_next().await.map_err(self.fail(what.clone()))? {
            if let WatchEvent::Error(_) = event {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(None);
            }
            if let Some(answer) = seen(event)? {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }
}
