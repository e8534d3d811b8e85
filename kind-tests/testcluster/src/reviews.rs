//! `SelfSubjectAccessReview`, `SubjectAccessReview`,
//! `LocalSubjectAccessReview`, `TokenReview` and `SelfSubjectReview`:
//! create-only resources answered from the authenticator and RBAC.

use serde_json::{Value, json};

use crate::auth::{Attributes, UserInfo, authorize};
use crate::resources::ResourceInfo;
use crate::state::{Ctx, Reply, State};
use crate::status::{ApiError, ApiResult, Cause};

fn attributes(spec: &Value, ns_default: &str) -> Attributes {
    let ra = &spec["resourceAttributes"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if ra.is_object() {
        let ns = ra["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(ns_default);
        Attributes {
            verb: s(&ra["verb"]),
            group: s(&ra["group"]),
            resource: s(&ra["resource"]),
            subresource: s(&ra["subresource"]),
            namespace: ns.into(),
            name: s(&ra["name"]),
            path: String::new(),
        }
    } else {
        let nr = &spec["nonResourceAttributes"];
        Attributes { verb: s(&nr["verb"]), path: s(&nr["path"]), ..Default::default() }
    }
}

fn user_from_spec(spec: &Value) -> UserInfo {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect()
    };
    UserInfo {
        name: spec["user"].as_str().unwrap_or_default().into(),
        uid: spec["uid"].as_str().unwrap_or_default().into(),
        groups: strs(&spec["groups"]),
    }
}

fn user_json(u: &UserInfo) -> Value {
    json!({"username": u.name, "uid": u.uid, "groups": u.groups})
}

fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

/// The rules kube-apiserver checks on an access review's spec
/// (`pkg/apis/authorization/validation`): exactly one of `resourceAttributes` and
/// `nonResourceAttributes`, and (except for the self review) a user or a group.
fn access_review_causes(spec: &Value, self_review: bool) -> Vec<Cause> {
    let (resource, non_resource) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    let mut causes = Vec::new();
    if resource.is_object() && non_resource.is_object() {
        let s = |k: &str| non_resource[k].as_str().unwrap_or_default().to_owned();
        let value = format!("authorization.NonResourceAttributes{{Path:{:?}, Verb:{:?}}}", s("path"), s("verb"));
        causes.push(invalid(
            "spec.nonResourceAttributes",
            &value,
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if !resource.is_object() && !non_resource.is_object() {
        let detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified";
        causes.push(invalid("spec.resourceAttributes", "\"null\"", detail));
    }
    let user = spec["user"].as_str().unwrap_or_default();
    let no_groups = spec["groups"].as_array().is_none_or(Vec::is_empty);
    if !self_review && user.is_empty() && no_groups {
        causes.push(invalid("spec.user", &format!("{user:?}"), "at least one of user or group must be specified"));
    }
    causes
}

impl State {
    /// Answers a review create.
    pub fn review(&self, info: &ResourceInfo, ns: &str, body: Value, ctx: &Ctx) -> ApiResult<Reply> {
        let mut out = body;
        out["apiVersion"] = json!(info.api_version());
        out["kind"] = json!(info.kind);
        if !out["metadata"].is_object() {
            out["metadata"] = json!({});
        }
        match info.plural.as_str() {
            "selfsubjectaccessreviews" | "subjectaccessreviews" | "localsubjectaccessreviews" => {
                let causes = access_review_causes(&out["spec"], info.plural == "selfsubjectaccessreviews");
                if !causes.is_empty() {
                    return Err(ApiError::invalid(info, "", causes));
                }
                let user = if info.plural == "selfsubjectaccessreviews" {
                    ctx.user.clone()
                } else {
                    user_from_spec(&out["spec"])
                };
                let (allowed, reason) = authorize(&self.store, &user, &attributes(&out["spec"], ns));
                out["status"] = json!({"allowed": allowed});
                if !reason.is_empty() {
                    out["status"]["reason"] = json!(reason);
                }
            }
            "selfsubjectrulesreviews" => {
                let ns = out["spec"]["namespace"].as_str().unwrap_or(ns).to_string();
                let (resource, non_resource): (Vec<Value>, Vec<Value>) =
                    crate::auth::rules_for(&self.store, &ctx.user, &ns)
                        .into_iter()
                        .partition(|r| r.get("nonResourceURLs").is_none());
                out["status"] =
                    json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false});
            }
            "tokenreviews" => {
                let token = out["spec"]["token"].as_str().unwrap_or_default();
                out["status"] = match self.auth.authenticate(token) {
                    Some(u) => json!({"authenticated": true, "user": user_json(&u)}),
                    None => json!({"authenticated": false, "error": "invalid bearer token"}),
                };
            }
            _ => out["status"] = json!({"userInfo": user_json(&ctx.user)}),
        }
        Ok(Reply { body: out, code: 201, warnings: vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_reviews_need_one_kind_of_attributes_and_a_subject() {
        let resource = json!({"verb": "get", "resource": "pods"});
        let ok = json!({"user": "alice", "resourceAttributes": resource});
        assert!(access_review_causes(&ok, false).is_empty());
        assert!(
            access_review_causes(
                &json!({"groups": ["g"], "nonResourceAttributes": {"path": "/x", "verb": "get"}}),
                false
            )
            .is_empty()
        );
        let none = access_review_causes(&json!({"resourceAttributes": resource}), false);
        assert_eq!(none.len(), 1);
        assert_eq!(
            (none[0].field.as_str(), none[0].message.as_str()),
            ("spec.user", "Invalid value: \"\": at least one of user or group must be specified")
        );
        assert!(
            access_review_causes(&json!({"resourceAttributes": resource}), true).is_empty(),
            "self reviews name nobody"
        );
        let neither = access_review_causes(&json!({"user": "alice"}), false);
        assert_eq!(neither[0].field, "spec.resourceAttributes");
        assert_eq!(
            neither[0].message,
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"
        );
        let both = access_review_causes(
            &json!({"user": "a", "resourceAttributes": resource, "nonResourceAttributes": {"path": "/x", "verb": "get"}}),
            false,
        );
        assert_eq!(
            both[0].message,
            "Invalid value: authorization.NonResourceAttributes{Path:\"/x\", Verb:\"get\"}: cannot be specified in combination with resourceAttributes"
        );
    }
}
