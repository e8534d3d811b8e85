//! The 1.x user client's calls (`s2uc`): `req` creates a StreamRequest and blocks until its
//! Hello; `update` sets its targets; `release` deletes it. `update` and `release` act only on
//! streams a legacy `req` created, for their creator, as RBAC allows ([`decide::may_change`]).

use std::{net::SocketAddr, sync::Arc};

use kube::ResourceExt;
use scistream_api::{Role, StreamRequest};

use super::Handler;
use crate::{
    auth::{self, Access, Identity, Target, Verb},
    decide::{self, FailKind, ReqOutcome},
    error::{Error, Result},
    legacy::{self, Creator},
    proto,
    streams::Streams,
};

/// Who sent a legacy call: the token, and the user it names (`None` in the `none` mode).
struct Caller<'a> {
    token: &'a str,
    identity: Option<Identity>,
}

impl<S: Streams, A: Access> Handler<S, A> {
    /// Authenticates a legacy call and checks that its user may `verb` in the legacy namespace
    /// (for `req`; `update` and `release` are checked per StreamRequest).
    async fn caller<'a>(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&'a str>,
        verb: Verb,
    ) -> Result<Caller<'a>> {
        self.check_peer(peer, authorization)?;
        let ns = &self.placement()?.namespace;
        let failed = |e| self.auth_failed(peer, authorization, e);
        let token = auth::credential(authorization).map_err(failed)?;
        let identity = self.access.authenticate(token).await.map_err(failed)?;
        self.auth_succeeded(peer, authorization);
        if let (Some(who), Verb::Create) = (&identity, verb) {
            self.access.authorize(who, verb, Target { namespace: ns, name: None }).await?;
        }
        tracing::debug!(user = ?identity.as_ref().map(|w| &w.user), verb = verb.as_str(), "legacy call authenticated");
        Ok(Caller { token, identity })
    }

    /// The legacy streams of `uid` (of `role`, if given) that `caller` may `verb`: all of them,
    /// or an error saying why not (nothing is done to some and not to others).
    async fn legacy_streams(
        &self,
        caller: &Caller<'_>,
        verb: Verb,
        uid: &str,
        role: Option<Role>,
    ) -> Result<Vec<Arc<StreamRequest>>> {
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
        for sr in &found {
            decide::may_change(sr, caller.identity.as_ref(), caller.token)?;
            if let Some(who) = &caller.identity {
                let name = sr.name_any();
                self.access.authorize(who, verb, Target { namespace: ns, name: Some(&name) }).await?;
            }
        }
        Ok(found)
    }
}

impl<S: Streams + Clone, A: Access> Handler<S, A> {
    /// `req`: creates the StreamRequest and blocks until its Hello (or failure, or timeout).
    /// The wait runs in its own task: a client that gives up does not cancel the request.
    pub async fn req(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        msg: proto::Request,
    ) -> Result<proto::Response> {
        let placement = self.placement()?.clone();
        // Validate before anything else, so bad input costs nothing.
        let probe = legacy::new_stream(&msg.uid, &msg.role, msg.num_conn, msg.rate, &placement, Creator::default())?;
        // From now on a Hello for this stream (on this connection: s2uc's) waits for it.
        let _registered = self.waiting.register(&probe.stream_id, peer, &probe.name);
        let caller = self.caller(peer, authorization, Verb::Create).await?;
        let creator = Creator { credential: caller.token, user: caller.identity.as_ref().map(|i| i.user.as_str()) };
        let new = legacy::new_stream(&msg.uid, &msg.role, msg.num_conn, msg.rate, &placement, creator)?;
        self.index_ready().await;
        let ns = &placement.namespace;
        let existing = self.streams.index().by_stream_id(&new.stream_id);
        if let Some(sr) = existing.iter().find(|sr| sr.namespace().as_deref() == Some(ns) && sr.spec.role == new.role) {
            return Err(Error::AlreadyExists(format!(
                "Entry already found for uid '{}': StreamRequest {} exists; release it first",
                new.stream_id,
                decide::display(sr)
            )));
        }
        self.streams.create(&new, ns).await?;
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
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        msg: proto::UpdateTargets,
    ) -> Result<proto::Response> {
        self.placement()?;
        let uid = legacy::lookup_uid(&msg.uid)?;
        let role = legacy::parse_role(&msg.role)?;
        let patch = legacy::update_patch(role, &msg.remote_listeners)?;
        let caller = self.caller(peer, authorization, Verb::Patch).await?;
        self.index_ready().await;
        let sr = self.legacy_streams(&caller, Verb::Patch, &uid, Some(role)).await?.remove(0);
        decide::accepts_hello(&sr)?;
        self.allowed(&sr, &msg.remote_listeners).await?;
        self.streams.patch(&sr, &patch).await?;
        tracing::info!(stream = %uid, request = %decide::display(&sr), "legacy update: targets set");
        let status = sr.status.clone().unwrap_or_default();
        Ok(proto::Response { listeners: status.listeners, prod_listeners: status.prod_listeners })
    }

    /// `release`: deletes the stream's legacy StreamRequests in the legacy namespace.
    pub async fn release(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        msg: proto::Release,
    ) -> Result<proto::Response> {
        self.placement()?;
        let uid = legacy::lookup_uid(&msg.uid)?;
        let caller = self.caller(peer, authorization, Verb::Delete).await?;
        self.index_ready().await;
        for sr in self.legacy_streams(&caller, Verb::Delete, &uid, None).await? {
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
        FailKind::Denied => Error::PermissionDenied(error),
        FailKind::Failed => Error::FailedPrecondition(error),
    })
}
