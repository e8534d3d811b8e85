//! The tonic service `scistream.Control`: extracts the `authorization` metadata and the peer,
//! calls the [`Handler`], counts the call.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use tonic::{Request, Response, Status};

use crate::{
    auth::Access,
    error::Result,
    handler::Handler,
    metrics::Metrics,
    proto::{self, control_server::Control},
    streams::Streams,
};

/// `scistream.Control` over a [`Handler`].
pub struct ControlService<S, A> {
    handler: Arc<Handler<S, A>>,
    metrics: Metrics,
}

impl<S, A> ControlService<S, A> {
    /// The service.
    pub fn new(handler: Arc<Handler<S, A>>, metrics: Metrics) -> Self {
        Self { handler, metrics }
    }
}

fn parts<T>(request: Request<T>) -> (Option<SocketAddr>, Option<String>, T) {
    let peer = request.remote_addr();
    let auth = request
        .metadata()
        .get(scistream_api::control::METADATA_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (peer, auth, request.into_inner())
}

impl<S, A> ControlService<S, A> {
    fn finish<T>(&self, method: &'static str, start: Instant, result: Result<T>) -> Result<Response<T>, Status> {
        let code = result.as_ref().map(|_| tonic::Code::Ok).unwrap_or_else(|e| e.code());
        self.metrics.observe(method, start, code);
        match result {
            Ok(reply) => Ok(Response::new(reply)),
            Err(e) => {
                tracing::debug!(method, code = crate::error::code_name(code), error = %e, "call failed");
                Err(e.into())
            }
        }
    }
}

#[tonic::async_trait]
impl<S: Streams + Clone, A: Access> Control for ControlService<S, A> {
    async fn req(&self, request: Request<proto::Request>) -> Result<Response<proto::Response>, Status> {
        let start = Instant::now();
        let (peer, auth, msg) = parts(request);
        let result = self.handler.req(peer, auth.as_deref(), msg).await;
        self.finish("req", start, result)
    }

    async fn update(&self, request: Request<proto::UpdateTargets>) -> Result<Response<proto::Response>, Status> {
        let start = Instant::now();
        let (peer, auth, msg) = parts(request);
        let result = self.handler.update(peer, auth.as_deref(), msg).await;
        self.finish("update", start, result)
    }

    async fn release(&self, request: Request<proto::Release>) -> Result<Response<proto::Response>, Status> {
        let start = Instant::now();
        let (peer, auth, msg) = parts(request);
        let result = self.handler.release(peer, auth.as_deref(), msg).await;
        self.finish("release", start, result)
    }

    async fn hello(&self, request: Request<proto::Hello>) -> Result<Response<proto::AppResponse>, Status> {
        let start = Instant::now();
        let (peer, auth, msg) = parts(request);
        let result = self.handler.hello(peer, auth.as_deref(), msg).await;
        self.finish("hello", start, result)
    }
}
