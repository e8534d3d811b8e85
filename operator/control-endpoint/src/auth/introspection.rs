//! The `introspection` mode: tokens are checked at an OAuth2 token-introspection endpoint
//! (RFC 7662) with the endpoint's client credentials (HTTP Basic), as SciStream 1.x does with
//! Globus Auth, so `s2uc login` users keep their workflow. A token is accepted when the answer
//! says it is `active`, and, when configured, carries the expected scope (1.x:
//! `https://auth.globus.org/scopes/<client id>/scistream`) and audience (the client id), so a
//! token issued for another service is not accepted here. Its identity (`username`, else
//! `sub`) becomes the Kubernetes user `<prefix><identity>`, its `groups` (if any)
//! `<prefix><group>` (plus `system:authenticated`); RBAC then decides with a
//! SubjectAccessReview, as in the `kubernetes` mode.

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use kube::Client;
use serde::Deserialize;

use super::{Access, Identity, Target, Verb};
use crate::error::{Error, Result};

/// Largest introspection answer read.
const MAX_ANSWER: usize = 64 * 1024;

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// What an introspected token must carry, and how its identity is named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Prefix of Kubernetes user and group names (e.g. `globus:`).
    pub prefix: String,
    /// A scope the token must have (`scope` of the answer, space-separated), if any.
    pub scope: Option<String>,
    /// An audience the token must have (`aud` of the answer), if any.
    pub audience: Option<String>,
}

/// Client of an introspection endpoint.
pub struct Introspector {
    url: http::Uri,
    basic: String,
    expect: Expectations,
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
    /// Scopes, space-separated.
    #[serde(default)]
    pub scope: Option<String>,
    /// Audience: one string or a list (RFC 7519 `aud`).
    #[serde(default)]
    pub aud: Option<Audience>,
}

/// `aud` of an introspection answer.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

impl Introspector {
    /// Introspects at `url` as client `client_id`/`client_secret`; tokens must meet `expect`.
    pub fn new(url: &str, client_id: &str, client_secret: &str, expect: Expectations, kube: Client) -> Result<Self> {
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
            expect,
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

/// The Kubernetes identity of an introspection answer, if the token meets `expect`.
pub fn identity_from(answer: Answer, expect: &Expectations) -> Result<Identity> {
    if !answer.active {
        return Err(Error::Unauthenticated(
            "the identity provider says the token is not active (expired or revoked); log in again".into(),
        ));
    }
    if let Some(scope) = &expect.scope
        && !answer.scope.as_deref().unwrap_or_default().split_whitespace().any(|s| s == scope)
    {
        return Err(Error::Unauthenticated(format!(
            "the token was not issued for this control endpoint (it lacks scope {scope}); log in for it, e.g. \
             `s2uc login --scope <this facility's client id>`"
        )));
    }
    if let Some(audience) = &expect.audience
        && !answer.aud.as_ref().is_some_and(|a| a.contains(audience))
    {
        return Err(Error::Unauthenticated(format!(
            "the token was not issued for this control endpoint (its audience is not {audience}); log in for it"
        )));
    }
    let prefix = expect.prefix.as_str();
    let name = answer.username.filter(|u| !u.is_empty()).or(answer.sub.filter(|s| !s.is_empty())).ok_or_else(|| {
        Error::Unauthenticated("the identity provider's answer names no user (neither username nor sub)".into())
    })?;
    let mut groups: Vec<String> = answer.groups.iter().map(|g| format!("{prefix}{g}")).collect();
    groups.push("system:authenticated".to_owned());
    Ok(Identity { user: format!("{prefix}{name}"), groups, uid: None })
}

impl Access for Introspector {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>> {
        identity_from(self.introspect(token).await?, &self.expect).map(Some)
    }

    async fn authorize(&self, who: &Identity, verb: Verb, target: Target<'_>) -> Result<()> {
        super::kubernetes::authorize(&self.kube, who, verb, target).await
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

    fn expect(prefix: &str) -> Expectations {
        Expectations { prefix: prefix.into(), ..Default::default() }
    }

    #[test]
    fn active_answers_map_to_prefixed_users() {
        let a: Answer = serde_json::from_str(r#"{"active":true,"username":"alice@uni.edu","groups":["lab"]}"#).unwrap();
        let id = identity_from(a, &expect("globus:")).unwrap();
        assert_eq!(id.user, "globus:alice@uni.edu");
        assert_eq!(id.groups, vec!["globus:lab".to_owned(), "system:authenticated".to_owned()]);
        let a: Answer = serde_json::from_str(r#"{"active":true,"sub":"123"}"#).unwrap();
        assert_eq!(identity_from(a, &expect("")).unwrap().user, "123");
        for bad in [r#"{"active":false,"username":"x"}"#, r#"{"active":true}"#, r#"{}"#] {
            let a: Answer = serde_json::from_str(bad).unwrap();
            assert_eq!(identity_from(a, &expect("p:")).unwrap_err().code(), tonic::Code::Unauthenticated, "{bad}");
        }
    }

    #[test]
    fn scope_and_audience_are_checked_when_configured() {
        // What Globus Auth answers for a token of a resource server's scope.
        let scope = "https://auth.globus.org/scopes/c42c0dac/scistream";
        let globus = |scope: &str, aud: &str| -> Answer {
            serde_json::from_value(serde_json::json!({"active": true, "username": "alice@uni.edu",
                "scope": scope, "aud": [aud, "other"], "client_id": "native-app"}))
            .unwrap()
        };
        let e = Expectations { prefix: "globus:".into(), scope: Some(scope.into()), audience: Some("c42c0dac".into()) };
        assert_eq!(
            identity_from(globus(&format!("openid {scope}"), "c42c0dac"), &e).unwrap().user,
            "globus:alice@uni.edu"
        );
        let cases = [
            (globus("urn:globus:auth:scope:transfer.api.globus.org:all", "c42c0dac"), "lacks scope"),
            (globus(scope, "transfer.api.globus.org"), "audience"),
            (globus(&format!("{scope}x"), "c42c0dac"), "lacks scope"),
        ];
        for (answer, why) in cases {
            let err = identity_from(answer, &e).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert!(err.to_string().contains(why), "{err}");
        }
        let one: Answer = serde_json::from_str(r#"{"active":true,"sub":"s","aud":"c42c0dac","scope":""}"#).unwrap();
        let e = Expectations { audience: Some("c42c0dac".into()), ..Default::default() };
        assert!(identity_from(one, &e).is_ok(), "aud as one string");
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_urlencoded(&[("token", "a b+c/=")]), "token=a+b%2Bc%2F%3D");
    }
}
