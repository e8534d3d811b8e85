//! The four calls of the 1.x protocol, independent of the transport (gRPC or the JSON Hello):
//! validate, authenticate, then act through [`Streams`]. Bad input is refused before any write.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::ResourceExt;
use scistream_api::{Role, StreamRequest};

use crate::{
    auth::{self, Access, Verb, limiter::FailureLimiter},
    decide::{self, FailKind, ReqOutcome},
    error::{Error, Result},
    legacy::{self, Placement},
    proto,
    streams::Streams,
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
    /// Stream ids of `req`s being created here: a Hello for one of them (s2uc sends it 0.5 s
    /// after `req`, on the same channel) waits for the StreamRequest instead of NOT_FOUND.
    creating: Arc<Mutex<HashSet<String>>>,
}

/// Removes a stream id from [`Handler::creating`] when dropped.
struct Creating(Arc<Mutex<HashSet<String>>>, String);

impl Drop for Creating {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

impl<S: Streams, A: Access> Handler<S, A> {
    /// A handler.
    pub fn new(streams: S, access: A, limiter: FailureLimiter, config: HandlerConfig) -> Self {
        Self { streams, access, limiter, config, creating: Arc::default() }
    }

    fn check_peer(&self, peer: Option<IpAddr>) -> Result<()> {
        if let Some(peer) = peer
            && let Some(wait) = self.limiter.blocked(peer, Instant::now())
        {
            return Err(Error::ResourceExhausted(format!(
                "too many failed authentications from {peer}; retry in {} s",
                wait.as_secs().max(1)
            )));
        }
        Ok(())
    }

    fn auth_failed(&self, peer: Option<IpAddr>, e: Error) -> Error {
        if let (Some(peer), tonic::Code::Unauthenticated) = (peer, e.code()) {
            self.limiter.failed(peer, Instant::now());
        }
        e
    }

    async fn index_ready(&self) {
        let deadline = tokio::time::Instant::now() + self.config.index_wait;
        self.streams.index().wait_for(deadline, |i| i.ready().then_some(())).await;
    }

    /// `hello`: finds the stream, checks the key (or the legacy creator's credential), records
    /// the Hello and answers as 1.x does.
    pub async fn hello(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        msg: proto::Hello,
    ) -> Result<proto::AppResponse> {
        self.check_peer(peer)?;
        let uid = legacy::lookup_uid(&msg.uid)?;
        let role = legacy::parse_hello_role(&msg.role)?;
        legacy::endpoints(&msg.prod_listeners, "prod_listeners", true)?;
        self.index_ready().await;
        let mut candidates = self.streams.index().by_stream_id(&uid);
        if candidates.is_empty() && self.creating.lock().unwrap_or_else(|p| p.into_inner()).contains(&uid) {
            let deadline = tokio::time::Instant::now() + self.config.index_wait;
            let found =
                self.streams.index().wait_for(deadline, |i| Some(i.by_stream_id(&uid)).filter(|c| !c.is_empty()));
            candidates = found.await.unwrap_or_default();
        }
        if candidates.is_empty() {
            return Err(Error::NotFound(format!(
                "entry not found for uid '{uid}': no StreamRequest has this stream id"
            )));
        }
        let token = auth::credential(authorization).map_err(|e| self.auth_failed(peer, e))?;
        let sr = self.authenticate_hello(peer, token, candidates, role).await?;
        decide::role_fits(&sr, role)?;
        decide::accepts_hello(&sr)?;
        self.record(&sr, &msg.prod_listeners).await?;
        let message = legacy::hello_message(role, sr.spec.role).to_owned();
        let listeners = match sr.spec.role {
            Role::Producer => Vec::new(),
            Role::Consumer => self.wait_listeners(&sr).await?,
        };
        Ok(proto::AppResponse { message, listeners })
    }

    async fn authenticate_hello(
        &self,
        peer: Option<IpAddr>,
        token: &str,
        candidates: Vec<Arc<StreamRequest>>,
        role: Option<Role>,
    ) -> Result<Arc<StreamRequest>> {
        let mut takes_hello = false;
        for sr in decide::order_candidates(candidates, role) {
            let digest = sr.annotations().get(legacy::ANNOTATION_CREDENTIAL).cloned();
            if sr.spec.hello_key_secret_ref.is_none() && digest.is_none() {
                continue;
            }
            takes_hello = true;
            let key = self.streams.hello_key(&sr).await?;
            if auth::hello_accepted(token, key.as_deref(), digest.as_deref()) {
                if let Some(peer) = peer {
                    self.limiter.succeeded(peer);
                }
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
            Error::Unauthenticated(
                "the credential is not this stream's Hello key; send the key from the StreamRequest's \
                 spec.helloKeySecretRef Secret"
                    .into(),
            ),
        ))
    }

    async fn record(&self, sr: &StreamRequest, prod_listeners: &[String]) -> Result<()> {
        let status = sr.status.clone().unwrap_or_default();
        let listeners = match sr.spec.role {
            Role::Producer if prod_listeners.is_empty() && status.prod_listeners.is_empty() => {
                return Err(Error::InvalidArgument(format!(
                    "StreamRequest {} is the producer side: its Hello must list the producer application's \
                     endpoints in prod_listeners",
                    decide::display(sr)
                )));
            }
            Role::Producer if prod_listeners.is_empty() => None,
            Role::Producer => Some(prod_listeners),
            Role::Consumer => None,
        };
        let unchanged = status.hello_time.is_some() && listeners.is_none_or(|l| l == status.prod_listeners.as_slice());
        if unchanged {
            return Ok(());
        }
        let time = status.hello_time.map(|t| t.0.to_string()).unwrap_or_else(now_rfc3339);
        let listeners = listeners.or(Some(status.prod_listeners.as_slice())).filter(|_| sr.spec.role == Role::Producer);
        self.streams.record_hello(sr, &time, listeners).await?;
        tracing::info!(stream = %sr.spec.stream_id, request = %decide::display(sr), "Hello recorded");
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

    async fn user(&self, peer: Option<IpAddr>, authorization: Option<&str>, verb: Verb) -> Result<String> {
        self.check_peer(peer)?;
        let ns = &self.placement()?.namespace;
        let token = auth::credential(authorization).map_err(|e| self.auth_failed(peer, e))?;
        let who = self.access.check(token, verb, ns).await.map_err(|e| self.auth_failed(peer, e))?;
        if let Some(peer) = peer {
            self.limiter.succeeded(peer);
        }
        tracing::debug!(user = ?who.map(|w| w.user), verb = verb.as_str(), "legacy call authorised");
        Ok(token.to_owned())
    }

    fn legacy_streams(&self, uid: &str, role: Option<Role>) -> Result<Vec<Arc<StreamRequest>>> {
        let ns = &self.placement()?.namespace;
        let found: Vec<_> = self
            .streams
            .index()
            .by_stream_id(uid)
            .into_iter()
            .filter(|sr| sr.namespace().as_deref() == Some(ns.as_str()))
            .filter(|sr| role.is_none_or(|r| sr.spec.role == r))
            .collect();
        if found.is_empty() {
            return Err(Error::NotFound(format!("entry not found for uid '{uid}' in namespace {ns}")));
        }
        Ok(found)
    }
}

impl<S: Streams + Clone, A: Access> Handler<S, A> {
    /// `req`: creates the StreamRequest and blocks until its Hello (or failure, or timeout).
    /// The wait runs in its own task: a client that gives up does not cancel the request.
    pub async fn req(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        msg: proto::Request,
    ) -> Result<proto::Response> {
        let placement = self.placement()?.clone();
        // Validate before anything else, so bad input costs nothing.
        let probe = legacy::new_stream(&msg.uid, &msg.role, msg.num_conn, msg.rate, &placement, "")?;
        let _creating = {
            let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            creating.insert(probe.stream_id.clone());
            Creating(self.creating.clone(), probe.stream_id.clone())
        };
        let token = self.user(peer, authorization, Verb::Create).await?;
        let new = legacy::new_stream(&msg.uid, &msg.role, msg.num_conn, msg.rate, &placement, &token)?;
        self.index_ready().await;
        if let Ok(existing) = self.legacy_streams(&new.stream_id, Some(new.role)) {
            return Err(Error::AlreadyExists(format!(
                "Entry already found for uid '{}': StreamRequest {} exists; release it first",
                new.stream_id,
                decide::display(&existing[0])
            )));
        }
        self.streams.create(&new, &placement.namespace).await?;
        tracing::info!(stream = %new.stream_id, role = ?new.role, "legacy req: StreamRequest created");
        let streams = self.streams.clone();
        // A legacy request leaves helloTimeout to the API server's default.
        let hello_timeout = scistream_api::HelloTimeout::DEFAULT.duration();
        let deadline = tokio::time::Instant::now() + hello_timeout + self.config.req_grace;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ns, name) = (placement.namespace.clone(), new.name.clone());
        tokio::spawn(async move {
            let _ = tx.send(await_hello(streams, &new.stream_id, &ns, &name, deadline).await);
        });
        rx.await.map_err(|_| Error::Setup("the wait for Hello ended without an answer".into()))?
    }

    /// `update`: sets the targets (producer) or remote listeners (consumer).
    pub async fn update(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        msg: proto::UpdateTargets,
    ) -> Result<proto::Response> {
        self.placement()?;
        let uid = legacy::lookup_uid(&msg.uid)?;
        let role = legacy::parse_role(&msg.role)?;
        let patch = legacy::update_patch(role, &msg.remote_listeners)?;
        self.user(peer, authorization, Verb::Patch).await?;
        self.index_ready().await;
        let sr = self.legacy_streams(&uid, Some(role))?.remove(0);
        decide::accepts_hello(&sr)?;
        self.streams.patch(&sr, &patch).await?;
        tracing::info!(stream = %uid, request = %decide::display(&sr), "legacy update: targets set");
        let status = sr.status.clone().unwrap_or_default();
        Ok(proto::Response { listeners: status.listeners, prod_listeners: status.prod_listeners })
    }

    /// `release`: deletes the stream's StreamRequests in the legacy namespace.
    pub async fn release(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        msg: proto::Release,
    ) -> Result<proto::Response> {
        self.placement()?;
        let uid = legacy::lookup_uid(&msg.uid)?;
        self.user(peer, authorization, Verb::Delete).await?;
        self.index_ready().await;
        for sr in self.legacy_streams(&uid, None)? {
            self.streams.delete(&sr).await?;
            tracing::info!(stream = %uid, request = %decide::display(&sr), "legacy release: StreamRequest deleted");
        }
        Ok(proto::Response::default())
    }
}

/// Waits for the Hello of `ns/name`; on failure or timeout releases it, as 1.x does.
async fn await_hello<S: Streams>(
    streams: S,
    id: &str,
    ns: &str,
    name: &str,
    deadline: tokio::time::Instant,
) -> Result<proto::Response> {
    let index = streams.index();
    // The index may not have seen the creation yet: wait for it first.
    let created = index.wait_for(deadline, |i| i.get(id, ns, name)).await;
    let outcome = index
        .wait_for(deadline, |i| match decide::req_outcome(i.get(id, ns, name).as_deref()) {
            ReqOutcome::Wait => None,
            other => Some(other),
        })
        .await;
    let (error, kind) = match outcome {
        Some(ReqOutcome::Answer { listeners, prod_listeners }) => {
            return Ok(proto::Response { listeners, prod_listeners });
        }
        Some(ReqOutcome::Fail { error, kind }) => (error, kind),
        Some(ReqOutcome::Wait) | None => {
            ("Hello not received within the timeout period; the request was released".to_owned(), FailKind::Timeout)
        }
    };
    if let Some(sr) = index.get(id, ns, name).or(created)
        && let Err(e) = streams.delete(&sr).await
    {
        tracing::warn!(error = %e, request = %format!("{ns}/{name}"), "could not release a failed legacy request");
    }
    Err(match kind {
        FailKind::Timeout => Error::DeadlineExceeded(error),
        FailKind::Exhausted => Error::ResourceExhausted(error),
        FailKind::Failed => Error::FailedPrecondition(error),
    })
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
