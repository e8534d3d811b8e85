//! Who may do what: the credential of a call, the Hello-key check (constant time), the
//! user-facing authentication modes (`kubernetes`, `introspection`, `none`) and the limits on
//! failed authentications (per address and identity, and per address).

pub mod introspection;
pub mod kubernetes;
pub mod limiter;

use std::future::Future;

use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

pub use scistream_api::control::INVALID_TOKEN;
/// Longest credential accepted (a JWT with many claims fits; anything longer is refused unread).
pub const MAX_TOKEN_LENGTH: usize = 8192;

/// The credential of a call from its `authorization` metadata: the bare token (1.x) or
/// `Bearer <token>`.
pub fn credential(header: Option<&str>) -> Result<&str> {
    let raw = header.map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
        Error::Unauthenticated("no credential: send the token or Hello key as the `authorization` metadata".into())
    })?;
    if raw.len() > MAX_TOKEN_LENGTH {
        return Err(Error::Unauthenticated(format!("the credential is longer than {MAX_TOKEN_LENGTH} bytes")));
    }
    let token = raw.strip_prefix("Bearer ").or_else(|| raw.strip_prefix("bearer ")).unwrap_or(raw).trim();
    if token.is_empty() || token.eq_ignore_ascii_case("bearer") {
        return Err(Error::Unauthenticated("the `authorization` metadata holds no token".into()));
    }
    Ok(token)
}

/// Whether `presented` opens a stream whose Hello key is `key` (if readable) or that a legacy
/// `req` created with a credential of digest `creator_digest`. Both comparisons take the same
/// time whatever the inputs' common prefix.
pub fn hello_accepted(presented: &str, key: Option<&[u8]>, creator_digest: Option<&str>) -> bool {
    let by_key = key.is_some_and(|k| !k.is_empty() && bool::from(presented.as_bytes().ct_eq(k)));
    let by_creator = creator_digest.is_some_and(|d| {
        let mine = crate::legacy::credential_digest(presented);
        bool::from(mine.as_bytes().ct_eq(d.as_bytes()))
    });
    by_key | by_creator
}

/// A user as Kubernetes RBAC knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name (`system:serviceaccount:ns:name`, `oidc:alice`, ...).
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// User uid, when known.
    pub uid: Option<String>,
}

/// What a legacy call wants to do to StreamRequests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `req`.
    Create,
    /// `update`.
    Patch,
    /// `release`.
    Delete,
}

impl Verb {
    /// The Kubernetes verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// What a legacy call wants to do it to: StreamRequests in `namespace`, or the one `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// Namespace of legacy StreamRequests.
    pub namespace: &'a str,
    /// The StreamRequest (`update`, `release`), or `None` for any (`req` creates it).
    pub name: Option<&'a str>,
}

/// Authentication and authorisation of user-facing (`req`/`update`/`release`) calls.
pub trait Access: Send + Sync + 'static {
    /// Who `token` belongs to (`None` in the `none` mode, where nobody is known).
    fn authenticate(&self, token: &str) -> impl Future<Output = Result<Option<Identity>>> + Send;
    /// Checks that `who` may `verb` the StreamRequests of `target` (RBAC, as kubectl would be
    /// checked). Always allowed in the `none` mode.
    fn authorize(&self, who: &Identity, verb: Verb, target: Target<'_>) -> impl Future<Output = Result<()>> + Send;
}

/// Authentication mode of the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Tokens are Kubernetes bearer tokens, checked with TokenReview.
    Kubernetes,
    /// Tokens are checked at an OAuth2 introspection endpoint (RFC 7662), as 1.x does with
    /// Globus Auth.
    Introspection,
    /// No check (1.x's trusted-testbed mode); any token, including `INVALID_TOKEN`, is accepted.
    None,
}

/// The `none` mode: everyone may do everything.
#[derive(Clone, Debug, Default)]
pub struct Open;

impl Access for Open {
    async fn authenticate(&self, _token: &str) -> Result<Option<Identity>> {
        Ok(None)
    }
    async fn authorize(&self, _who: &Identity, _verb: Verb, _target: Target<'_>) -> Result<()> {
        Ok(())
    }
}

/// Any of the modes (the endpoint picks one at start).
pub enum AnyAccess {
    /// `kubernetes`.
    Kubernetes(kubernetes::TokenReviewer),
    /// `introspection`.
    Introspection(Box<introspection::Introspector>),
    /// `none`.
    None(Open),
}

impl Access for AnyAccess {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>> {
        match self {
            AnyAccess::Kubernetes(a) => a.authenticate(token).await,
            AnyAccess::Introspection(a) => a.authenticate(token).await,
            AnyAccess::None(a) => a.authenticate(token).await,
        }
    }
    async fn authorize(&self, who: &Identity, verb: Verb, target: Target<'_>) -> Result<()> {
        match self {
            AnyAccess::Kubernetes(a) => a.authorize(who, verb, target).await,
            AnyAccess::Introspection(a) => a.authorize(who, verb, target).await,
            AnyAccess::None(a) => a.authorize(who, verb, target).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_bare_or_bearer() {
        assert_eq!(credential(Some("abc")).unwrap(), "abc");
        assert_eq!(credential(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(credential(Some(" INVALID_TOKEN ")).unwrap(), INVALID_TOKEN);
        for bad in [None, Some(""), Some("  "), Some("Bearer  ")] {
            assert_eq!(credential(bad).unwrap_err().code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let long = "a".repeat(MAX_TOKEN_LENGTH + 1);
        assert!(credential(Some(&long)).is_err());
    }

    #[test]
    fn hello_key_or_creator() {
        let digest = crate::legacy::credential_digest("user-token");
        assert!(hello_accepted("k3y", Some(b"k3y"), None));
        assert!(!hello_accepted("k3y", Some(b"k3y2"), None));
        assert!(!hello_accepted("k3", Some(b"k3y"), None));
        assert!(!hello_accepted("", Some(b""), None));
        assert!(hello_accepted("user-token", Some(b"other"), Some(&digest)));
        assert!(hello_accepted("user-token", None, Some(&digest)));
        assert!(!hello_accepted("user-tokem", None, Some(&digest)));
        assert!(!hello_accepted("x", None, None));
    }
}
