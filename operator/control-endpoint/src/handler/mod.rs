//! The four calls of the 1.x protocol, independent of the transport (gRPC or the JSON Hello):
//! validate, authenticate, then act through [`Streams`]. Bad input is refused before any write.
//!
//! This module has the handler and `hello`; [`calls`] the user client's `req`, `update` and
//! `release`; [`waiting`] the `req`s in progress, by connection.

mod calls;
pub mod waiting;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use kube::ResourceExt;
use scistream_api::{Role, StreamRequest};
use scistream_core::policy::{self, GatewayRef};

use crate::{
    auth::{
        self, Access,
        limiter::{Blocked, Claimed, FailureLimiter},
    },
    decide::{self, ProducerHello},
    error::{Error, Result},
    legacy::{self, Placement},
    proto,
    streams::{EndpointStatus, Streams},
};

/// Settings of the handlers.
#[derive(Clone, Debug)]
pub struct HandlerConfig {
    /// Where legacy `req`s create StreamRequests (`None`: legacy calls are refused).
    pub placement: Option<Placement>,
    /// How long a consumer's Hello waits for the listeners to exist.
    pub listeners_wait: Duration,
    /// Added to a stream's `helloTimeout` before a blocked `req` gives up on its own.
    pub req_grace: Duration,
    /// How long a call waits for the index's first list.
    pub index_wait: Duration,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        Self {
            placement: None,
            listeners_wait: Duration::from_secs(10),
            req_grace: Duration::from_secs(10),
            index_wait: Duration::from_secs(10),
        }
    }
}

/// The protocol logic, generic over where streams live and how users are checked.
pub struct Handler<S, A> {
    streams: S,
    access: A,
    limiter: FailureLimiter,
    config: HandlerConfig,
    waiting: waiting::Waiting,
}

impl<S: Streams, A: Access> Handler<S, A> {
    /// A handler.
    pub fn new(streams: S, access: A, limiter: FailureLimiter, config: HandlerConfig) -> Self {
        Self { streams, access, limiter, config, waiting: waiting::Waiting::default() }
    }

    /// Refuses a call from `peer` with `authorization` that failed to authenticate too often.
    fn check_peer(&self, peer: Option<SocketAddr>, authorization: Option<&str>) -> Result<()> {
        let Some(peer) = peer else { return Ok(()) };
        match self.limiter.blocked(peer.ip(), Claimed::of(authorization), Instant::now()) {
            None => Ok(()),
            Some(Blocked::Identity(wait)) => Err(Error::ResourceExhausted(format!(
                "too many failed authentications with this credential from {}; fix the token or Hello key and \
                 retry in {} s",
                peer.ip(),
                wait.as_secs().max(1)
            ))),
            Some(Blocked::Address(wait)) => Err(Error::ResourceExhausted(format!(
                "too many failed authentications from {}, with many credentials; retry in {} s",
                peer.ip(),
                wait.as_secs().max(1)
            ))),
        }
    }

    /// Counts `e` against `peer` and the credential, if it is an authentication failure.
    fn auth_failed(&self, peer: Option<SocketAddr>, authorization: Option<&str>, e: Error) -> Error {
        if let (Some(peer), tonic::Code::Unauthenticated) = (peer, e.code()) {
            self.limiter.failed(peer.ip(), Claimed::of(authorization), Instant::now());
        }
        e
    }

    fn auth_succeeded(&self, peer: Option<SocketAddr>, authorization: Option<&str>) {
        if let Some(peer) = peer {
            self.limiter.succeeded(peer.ip(), Claimed::of(authorization));
        }
    }

    async fn index_ready(&self) {
        let deadline = tokio::time::Instant::now() + self.config.index_wait;
        self.streams.index().wait_for(deadline, |i| i.ready().then_some(())).await;
    }

    /// `hello`: finds the stream, checks the key (or the legacy creator's credential), records
    /// the Hello and answers as 1.x does.
    pub async fn hello(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        msg: proto::Hello,
    ) -> Result<proto::AppResponse> {
        self.check_peer(peer, authorization)?;
        let uid = legacy::lookup_uid(&msg.uid)?;
        let role = legacy::parse_hello_role(&msg.role)?;
        legacy::endpoints(&msg.prod_listeners, "prod_listeners", true)?;
        self.index_ready().await;
        let here = self.waiting.on_connection(&uid, peer);
        let candidates = self.hello_candidates(&uid, here.as_deref()).await;
        if candidates.is_empty() {
            return Err(Error::NotFound(format!(
                "entry not found for uid '{uid}': no StreamRequest has this stream id"
            )));
        }
        let token = auth::credential(authorization).map_err(|e| self.auth_failed(peer, authorization, e))?;
        let candidates = decide::order_candidates(candidates, role, here.as_deref());
        let sr = self.authenticate_hello(peer, authorization, token, candidates).await?;
        decide::role_fits(&sr, role)?;
        decide::accepts_hello(&sr)?;
        if sr.spec.role == Role::Producer {
            self.allowed(&sr, &msg.prod_listeners).await?;
        }
        self.record(&sr, &msg.prod_listeners).await?;
        let message = legacy::hello_message(role, sr.spec.role).to_owned();
        let listeners = match sr.spec.role {
            Role::Producer => Vec::new(),
            Role::Consumer => self.wait_listeners(&sr).await?,
        };
        Ok(proto::AppResponse { message, listeners })
    }

    /// The StreamRequests a Hello for `uid` may be for. When a legacy `req` for it is being
    /// created (on this connection: `here`, its name; or on another), waits for that
    /// StreamRequest to be listed first, so the Hello goes where the `req` waits.
    async fn hello_candidates(&self, uid: &str, here: Option<&str>) -> Vec<Arc<StreamRequest>> {
        let index = self.streams.index();
        let ns = self.config.placement.as_ref().map(|p| p.namespace.as_str()).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + self.config.index_wait;
        let listed = |i: &crate::index::Index| {
            let candidates = i.by_stream_id(uid);
            let ready = match here {
                Some(name) => {
                    candidates.iter().any(|sr| sr.name_any() == name && sr.namespace().as_deref() == Some(ns))
                }
                None => !candidates.is_empty() || !self.waiting.any(uid),
            };
            ready.then_some(candidates)
        };
        match index.wait_for(deadline, listed).await {
            Some(candidates) => candidates,
            None => index.by_stream_id(uid),
        }
    }

    async fn authenticate_hello(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        token: &str,
        candidates: Vec<Arc<StreamRequest>>,
    ) -> Result<Arc<StreamRequest>> {
        let mut takes_hello = false;
        for sr in candidates {
            let digest = sr.annotations().get(legacy::ANNOTATION_CREDENTIAL).cloned();
            if sr.spec.hello_key_secret_ref.is_none() && digest.is_none() {
                continue;
            }
            takes_hello = true;
            let key = self.streams.hello_key(&sr).await?;
            if auth::hello_accepted(token, key.as_deref(), digest.as_deref()) {
                self.auth_succeeded(peer, authorization);
                return Ok(sr);
            }
        }
        if !takes_hello {
            return Err(Error::FailedPrecondition(
                "this stream takes no Hello: its StreamRequest has static spec.targets and no spec.helloKeySecretRef"
                    .into(),
            ));
        }
        Err(self.auth_failed(
            peer,
            authorization,
            Error::Unauthenticated(
                "the credential is not this stream's Hello key; send the key from the StreamRequest's \
                 spec.helloKeySecretRef Secret"
                    .into(),
            ),
        ))
    }

    /// Records the Hello on `sr`: `helloTime`, and on the producer side its endpoints (in
    /// `status.prodListeners`, and in `spec.targets` where the relays follow those; see
    /// [`decide::producer_hello`]).
    async fn record(&self, sr: &StreamRequest, prod_listeners: &[String]) -> Result<()> {
        let status = sr.status.clone().unwrap_or_default();
        let change = match sr.spec.role {
            Role::Producer => decide::producer_hello(sr, prod_listeners)?,
            Role::Consumer => ProducerHello::Unchanged,
        };
        if status.hello_time.is_some() && change == ProducerHello::Unchanged {
            return Ok(());
        }
        if change == ProducerHello::Retarget {
            self.streams.patch(sr, &legacy::update_patch(Role::Producer, prod_listeners)?).await?;
            tracing::info!(stream = %sr.spec.stream_id, request = %decide::display(sr), "Hello moved the targets");
        }
        let prod_listeners = match change {
            ProducerHello::Unchanged => Some(status.prod_listeners.clone()),
            ProducerHello::Record | ProducerHello::Retarget => Some(prod_listeners.to_vec()),
        };
        let rate_enforcement = status.rate_enforcement.or_else(|| {
            let placement = self.config.placement.as_ref().filter(|_| legacy::is_legacy(sr.annotations()));
            placement.map(|p| p.rate_enforcement)
        });
        let written = EndpointStatus {
            hello_time: Some(status.hello_time.map(|t| t.0.to_string()).unwrap_or_else(now_rfc3339)),
            prod_listeners: prod_listeners.filter(|_| sr.spec.role == Role::Producer),
            rate_enforcement,
        };
        self.streams.write_status(sr, &written).await?;
        tracing::info!(stream = %sr.spec.stream_id, request = %decide::display(sr), "Hello recorded");
        Ok(())
    }

    /// Refuses endpoints the Gateway of `sr` does not let its relays forward to: a producer's
    /// targets (a Hello's `prod_listeners`, an `update`'s targets) must be where the policy
    /// allows; a consumer's remote listeners must not be loopback, link-local or a gateway
    /// node. Nothing is written when they are refused.
    async fn allowed(&self, sr: &StreamRequest, endpoints: &[String]) -> Result<()> {
        // A Gateway that does not exist is the operator's to report on the StreamRequest.
        let Some(gateway) = self.streams.gateway(&sr.spec.gateway).await? else { return Ok(()) };
        let addresses = policy::node_addresses(&gateway);
        let policy = GatewayRef { name: &sr.spec.gateway, policy: &gateway.spec.policy, node_addresses: &addresses };
        for endpoint in endpoints {
            let endpoint: scistream_api::Endpoint =
                endpoint.parse().map_err(|e| Error::InvalidArgument(format!("{e}")))?;
            let verdict = match sr.spec.role {
                Role::Producer => policy.check_target(&endpoint),
                Role::Consumer => policy.check_remote(&endpoint),
            };
            verdict.map_err(|d| Error::PermissionDenied(d.message))?;
        }
        Ok(())
    }

    async fn wait_listeners(&self, sr: &StreamRequest) -> Result<Vec<String>> {
        let (ns, name, id) = (sr.namespace().unwrap_or_default(), sr.name_any(), sr.spec.stream_id.clone());
        let deadline = tokio::time::Instant::now() + self.config.listeners_wait;
        let found = self
            .streams
            .index()
            .wait_for(deadline, |i| {
                let sr = i.get(&id, &ns, &name)?;
                let listeners = sr.status.as_ref()?.listeners.clone();
                (!listeners.is_empty()).then_some(listeners)
            })
            .await;
        found.ok_or_else(|| {
            Error::DeadlineExceeded(format!(
                "StreamRequest {ns}/{name} has no listeners after {} s (no gateway capacity yet?); see \
                 `kubectl describe streamrequest -n {ns} {name}` and send Hello again",
                self.config.listeners_wait.as_secs()
            ))
        })
    }

    fn placement(&self) -> Result<&Placement> {
        self.config.placement.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(
                "this control endpoint takes no legacy req/update/release: no gateway is configured for it \
                 (operator flag --control-gateway)"
                    .into(),
            )
        })
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
