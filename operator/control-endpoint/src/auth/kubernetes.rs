//! The `kubernetes` mode: a token is a Kubernetes bearer token, checked with a TokenReview;
//! the user it names must be allowed, by a SubjectAccessReview, to create StreamRequests in the
//! legacy namespace, or to patch or delete the one StreamRequest a legacy call acts on. A legacy client can do no more than its user could
//! with kubectl. (The introspection mode reuses [`authorize`].)

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};

use super::{Access, Identity, Target, Verb};
use crate::error::{Error, Result};

/// TokenReview + SubjectAccessReview.
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
}

impl TokenReviewer {
    /// Reviews tokens with `client` (needs `create` on tokenreviews and subjectaccessreviews).
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Access for TokenReviewer {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), ..Default::default() },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let done = api.create(&PostParams::default(), &review).await.map_err(Error::kube("review the token"))?;
        identity_from(done.status).map(Some)
    }

    async fn authorize(&self, who: &Identity, verb: Verb, target: Target<'_>) -> Result<()> {
        authorize(&self.client, who, verb, target).await
    }
}

/// The identity a TokenReview established, or why there is none.
pub fn identity_from(status: Option<TokenReviewStatus>) -> Result<Identity> {
    let status = status.unwrap_or_default();
    let user = status.user.filter(|_| status.authenticated == Some(true)).and_then(|u| {
        let name = u.username.filter(|n| !n.is_empty())?;
        Some(Identity { user: name, groups: u.groups.unwrap_or_default(), uid: u.uid })
    });
    user.ok_or_else(|| {
        Error::Unauthenticated(
            "the token is not a valid Kubernetes token for this cluster; send a token of a user or service \
             account (e.g. from `kubectl create token`)"
                .into(),
        )
    })
}

/// The SubjectAccessReview asking whether `identity` may `verb` the StreamRequests of
/// `target` (one by name, or any in its namespace).
pub fn access_review(identity: &Identity, verb: Verb, target: Target<'_>) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(identity.user.clone()),
            groups: Some(identity.groups.clone()),
            uid: identity.uid.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(scistream_api::keys::GROUP.to_owned()),
                resource: Some("streamrequests".to_owned()),
                verb: Some(verb.as_str().to_owned()),
                namespace: Some(target.namespace.to_owned()),
                name: target.name.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Asks the API server whether `identity` may `verb` the StreamRequests of `target`.
pub async fn authorize(client: &Client, identity: &Identity, verb: Verb, target: Target<'_>) -> Result<()> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let review = access_review(identity, verb, target);
    let done = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(Error::kube("check access with a SubjectAccessReview"))?;
    if done.status.is_some_and(|s| s.allowed) {
        Ok(())
    } else {
        let what = match target.name {
            Some(name) => format!("streamrequests.scistream.io {name:?} in namespace {:?}", target.namespace),
            None => format!("streamrequests.scistream.io in namespace {:?}", target.namespace),
        };
        Err(Error::PermissionDenied(format!(
            "user {:?} may not {} {what}; ask an administrator for a RoleBinding that allows it",
            identity.user,
            verb.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    #[test]
    fn identity_only_when_authenticated() {
        let user = UserInfo { username: Some("alice".into()), groups: Some(vec!["g".into()]), ..Default::default() };
        let ok = TokenReviewStatus { authenticated: Some(true), user: Some(user.clone()), ..Default::default() };
        assert_eq!(identity_from(Some(ok)).unwrap().user, "alice");
        let no = TokenReviewStatus { authenticated: Some(false), user: Some(user), ..Default::default() };
        assert_eq!(identity_from(Some(no)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(identity_from(None).is_err());
    }

    #[test]
    fn review_asks_for_the_verb_in_the_namespace() {
        let id = Identity { user: "alice".into(), groups: vec!["devs".into()], uid: None };
        let r = access_review(&id, Verb::Delete, Target { namespace: "science", name: Some("legacy-x-prod") });
        let attrs = r.spec.resource_attributes.unwrap();
        assert_eq!(attrs.verb.as_deref(), Some("delete"));
        assert_eq!(attrs.namespace.as_deref(), Some("science"));
        assert_eq!(attrs.resource.as_deref(), Some("streamrequests"));
        assert_eq!(attrs.name.as_deref(), Some("legacy-x-prod"), "RBAC resourceNames apply");
        assert_eq!(r.spec.user.as_deref(), Some("alice"));
        let r = access_review(&id, Verb::Create, Target { namespace: "science", name: None });
        assert_eq!(r.spec.resource_attributes.unwrap().name, None);
    }
}
