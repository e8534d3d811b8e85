//! `SelfSubjectAccessReview`, `SubjectAccessReview`,
//! `LocalSubjectAccessReview`, `TokenReview` and `SelfSubjectReview`:
//! create-only resources answered from the authenticator and RBAC.

use serde_json::{Value, json};

use crate::auth::{Attributes, UserInfo, authorize};
use crate::resources::ResourceInfo;
use crate::state::{Ctx, Reply, State};
use crate::status::ApiResult;

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
