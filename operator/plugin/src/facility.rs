//! Connecting to a facility's cluster through a kubeconfig context, as kubectl does
//! (exec and OIDC credential plugins included, through kube-rs).

use std::path::Path;

use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use scistream_api::{Gateway, StreamRequest};

use crate::error::{Error, Result};

/// One facility: a client and the namespace to work in.
#[derive(Clone)]
pub struct Facility {
    /// The context name as given (or the current context's name).
    pub context: String,
    /// Namespace for StreamRequests and Hello-key Secrets.
    pub namespace: String,
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
        // Who is asking, in the API server's audit log and request metrics.
        let agent = concat!("kubectl-scistream/", env!("CARGO_PKG_VERSION"));
        config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(agent)));
        // kube-rs runs an exec credential plugin here (an OIDC id-token is checked on first use).
        let client = Client::try_from(config).map_err(|e| match crate::error::auth_problem(&e) {
            Some(why) => Error::Auth(format!("context {name}: {why}")),
            None => Error::Usage(format!("context {name}: {e}")),
        })?;
        Ok(Facility { context: name, namespace, client })
    }

    /// StreamRequests in this facility's namespace.
    pub fn requests(&self) -> Api<StreamRequest> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Gateways of this facility.
    pub fn gateways(&self) -> Api<Gateway> {
        Api::all(self.client.clone())
    }
}
