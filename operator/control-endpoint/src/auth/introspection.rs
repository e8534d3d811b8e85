//! The `introspection` mode: tokens are checked at an OAuth2 token-introspection endpoint
//! (RFC 7662) with the endpoint's client credentials (HTTP Basic), as SciStream 1.x does with
//! Globus Auth. An active token's identity (`username`, else `sub`) becomes the Kubernetes user
//! `<prefix><identity>`, its `groups` (if any) `<prefix><group>`; RBAC then decides with a
//! SubjectAccessReview, as in the `kubernetes` mode.

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use kube::Client;
use serde::Deserialize;

use super::{Access, Identity, Verb};
use crate::error::{Error, Result};

/// Largest introspection answer read.
const MAX_ANSWER: usize = 64 * 1024;

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Client of an introspection endpoint.
pub struct Introspector {
    url: http::Uri,
    basic: String,
    prefix: String,
    http: HttpClient<Connector, Full<bytes::Bytes>>,
    kube: Client,
}

/// The fields of an RFC 7662 answer we use.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Answer {
    /// Whether the token is valid now.
    #[serde(default)]
    pub active: bool,
    /// Human-readable identifier of the owner.
    #[serde(default)]
    pub username: Option<String>,
    /// Subject.
    #[serde(default)]
    pub sub: Option<String>,
    /// Groups (an extension some providers send).
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Introspector {
    /// Introspects at `url` as client `client_id`/`client_secret`; users are named
    /// `<prefix><username>`.
    pub fn new(url: &str, client_id: &str, client_secret: &str, prefix: &str, kube: Client) -> Result<Self> {
        let url: http::Uri = url.parse().map_err(|e| Error::Setup(format!("introspection URL {url:?}: {e}")))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| Error::Setup(format!("could not load the system's CA certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{client_secret}"));
        Ok(Self {
            url,
            basic: format!("Basic {creds}"),
            prefix: prefix.to_owned(),
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            kube,
        })
    }

    async fn introspect(&self, token: &str) -> Result<Answer> {
        let body: String = form_urlencoded(&[("token", token), ("token_type_hint", "access_token")]);
        let request = http::Request::post(self.url.clone())
            .header(http::header::AUTHORIZATION, &self.basic)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| Error::Provider(e.to_string()))?;
        let fut = self.http.request(request);
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), fut)
            .await
            .map_err(|_| Error::Provider("no answer within 10 s".into()))?
            .map_err(|e| Error::Provider(e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| Error::Provider(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::Provider(format!("the introspection endpoint answered HTTP {status}")));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Provider(format!("the answer is not RFC 7662 JSON: {e}")))
    }
}

/// The Kubernetes identity of an introspection answer.
pub fn identity_from(answer: Answer, prefix: &str) -> Result<Identity> {
    if !answer.active {
        return Err(Error::Unauthenticated(
            "the identity provider says the token is not active (expired or revoked); log in again".into(),
        ));
    }
    let name = answer.username.filter(|u| !u.is_empty()).or(answer.sub.filter(|s| !s.is_empty())).ok_or_else(|| {
        Error::Unauthenticated("the identity provider's answer names no user (neither username nor sub)".into())
    })?;
    let mut groups: Vec<String> = answer.groups.iter().map(|g| format!("{prefix}{g}")).collect();
    groups.push("system:authenticated".to_owned());
    Ok(Identity { user: format!("{prefix}{name}"), groups, uid: None })
}

impl Access for Introspector {
    async fn check(&self, token: &str, verb: Verb, namespace: &str) -> Result<Option<Identity>> {
        let identity = identity_from(self.introspect(token).await?, &self.prefix)?;
        super::kubernetes::authorize(&self.kube, &identity, verb, namespace).await?;
        Ok(Some(identity))
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_answers_map_to_prefixed_users() {
        let a: Answer = serde_json::from_str(r#"{"active":true,"username":"alice@uni.edu","groups":["lab"]}"#).unwrap();
        let id = identity_from(a, "globus:").unwrap();
        assert_eq!(id.user, "globus:alice@uni.edu");
        assert_eq!(id.groups, vec!["globus:lab".to_owned(), "system:authenticated".to_owned()]);
        let a: Answer = serde_json::from_str(r#"{"active":true,"sub":"123"}"#).unwrap();
        assert_eq!(identity_from(a, "").unwrap().user, "123");
        for bad in [r#"{"active":false,"username":"x"}"#, r#"{"active":true}"#, r#"{}"#] {
            let a: Answer = serde_json::from_str(bad).unwrap();
            assert_eq!(identity_from(a, "p:").unwrap_err().code(), tonic::Code::Unauthenticated, "{bad}");
        }
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_urlencoded(&[("token", "a b+c/=")]), "token=a+b%2Bc%2F%3D");
    }
}
