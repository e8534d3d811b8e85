//! The same Hello as JSON over HTTP, for controllers that cannot speak gRPC:
//! `POST /v1/hello` with `Authorization: <key>` (or `Bearer <key>`) and a body
//! `{"uid": "...", "role": "PROD", "prod_listeners": ["host:port"]}`; the answer is
//! `{"message": "...", "listeners": [...]}`, or `{"code": "NOT_FOUND", "message": "..."}` with
//! the HTTP status of the gRPC code (404, 401, 400, 412, 429, 504, ...).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use serde::{Deserialize, Serialize};
use warp::{Filter, Reply, http::StatusCode};

use crate::{
    auth::Access,
    error::{Error, code_name},
    handler::Handler,
    metrics::Metrics,
    proto,
    streams::Streams,
};

/// Largest JSON body accepted.
pub const MAX_BODY: u64 = scistream_api::control::MAX_MESSAGE_BYTES as u64;

/// The JSON Hello.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HelloBody {
    /// Stream id.
    pub uid: String,
    /// Producer application endpoints (producer side).
    #[serde(default)]
    pub prod_listeners: Vec<String>,
    /// `PROD`, `CONS` or empty.
    #[serde(default)]
    pub role: String,
}

/// An error answer.
#[derive(Debug, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

/// Parses a JSON Hello body.
pub fn parse_body(bytes: &[u8]) -> Result<proto::Hello, Error> {
    let body: HelloBody = serde_json::from_slice(bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "the body is not a Hello ({e}); send {{\"uid\": \"<stream id>\", \"role\": \"PROD\", \"prod_listeners\": [\"host:port\"]}}"
        ))
    })?;
    Ok(proto::Hello { uid: body.uid, prod_listeners: body.prod_listeners, role: body.role })
}

fn error_reply(e: &Error) -> warp::reply::Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody { code: code_name(e.code()), message: e.client_message() };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// The routes for one connection from `peer`.
pub fn routes<S: Streams + Clone, A: Access>(
    handler: Arc<Handler<S, A>>,
    metrics: Metrics,
    peer: Option<SocketAddr>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static {
    let hello = warp::post()
        // scistream_api::control::HELLO_PATH (tests/hello.rs posts to that constant).
        .and(warp::path!("v1" / "hello"))
        .and(warp::header::optional::<String>(scistream_api::control::METADATA_AUTHORIZATION))
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .then(move |auth: Option<String>, body: bytes::Bytes| {
            let handler = handler.clone();
            let metrics = metrics.clone();
            async move {
                let start = Instant::now();
                let result = match parse_body(&body) {
                    Ok(msg) => handler.hello(peer, auth.as_deref(), msg).await,
                    Err(e) => Err(e),
                };
                let code = result.as_ref().map(|_| tonic::Code::Ok).unwrap_or_else(|e| e.code());
                metrics.observe("http_hello", start, code);
                match result {
                    Ok(reply) => warp::reply::json(&serde_json::json!({
                        "message": reply.message, "listeners": reply.listeners,
                    }))
                    .into_response(),
                    Err(e) => error_reply(&e),
                }
            }
        });
    let not_found =
        warp::any().map(|| error_reply(&Error::NotFound("no such path; the JSON Hello is POST /v1/hello".into())));
    hello.or(not_found).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let h = parse_body(br#"{"uid":"u","role":"PROD","prod_listeners":["192.0.2.1:7000"]}"#).unwrap();
        assert_eq!(h.prod_listeners, vec!["192.0.2.1:7000".to_owned()]);
        assert_eq!(parse_body(br#"{"uid":"u"}"#).unwrap().role, "");
        for bad in [&b"{"[..], br#"{"uid":1}"#, br#"{"uid":"u","extra":1}"#, b""] {
            assert_eq!(parse_body(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
    }
}
