//! Kubernetes `Status` errors: every failure the server answers is one of
//! these, with the `reason`, `code`, `message` and `details` a real API
//! server would send.

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// One cause of a 422 `Invalid` (or of an SSA conflict).
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldManagerConflict`...
    pub reason: String,
    /// Human text, e.g. `Invalid value: "x": must be ...`.
    pub message: String,
    /// Field path such as `spec.replicas`.
    pub field: String,
}

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// CamelCase `StatusReason` (`NotFound`, `Conflict`...).
    pub reason: &'static str,
    /// Message as kubectl prints it.
    pub message: String,
    /// `details` of the Status, if any.
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Result of an API operation.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

fn details(info: &ResourceInfo, name: &str) -> Value {
    json!({"name": name, "group": info.group, "kind": info.plural})
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    /// 404 for a named object.
    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{} \"{name}\" not found", info.qualified_plural()));
        e.details = Some(details(info, name));
        e
    }

    /// 404 for a path the server does not serve.
    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 409 AlreadyExists.
    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        let mut e = Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", info.qualified_plural()));
        e.details = Some(details(info, name));
        e
    }

    /// 409 Conflict for a stale resourceVersion or a failed precondition.
    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", info.qualified_plural()),
        );
        e.details = Some(details(info, name));
        e
    }

    /// The standard optimistic-concurrency conflict.
    pub fn modified(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 for server-side apply conflicts; `conflicts` are (manager, field path).
    pub fn apply_conflict(info: &ResourceInfo, name: &str, version: &str, conflicts: &[(String, String)]) -> Self {
        let n = conflicts.len();
        let plural = if n == 1 { "conflict" } else { "conflicts" };
        let lines: Vec<String> =
            conflicts.iter().map(|(m, f)| format!("conflict with \"{m}\" using {version}: {f}")).collect();
        let message = if n == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!("Apply failed with {n} {plural}: {}", lines.join("\n"))
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {version}"), "field": f}))
            .collect();
        let mut e = Self::new(409, "Conflict", message);
        e.details = Some(json!({"name": name, "group": info.group, "kind": info.plural, "causes": causes}));
        e
    }

    /// 422 Invalid with one cause per violation.
    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> Self {
        let texts: Vec<String> = causes
            .iter()
            .map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) })
            .collect();
        let joined = if texts.len() == 1 { texts[0].clone() } else { format!("[{}]", texts.join(", ")) };
        let message = if info.group.is_empty() {
            format!("{} \"{name}\" is invalid: {joined}", info.kind)
        } else {
            format!("{}.{} \"{name}\" is invalid: {joined}", info.kind, info.group)
        };
        let causes: Vec<Value> =
            causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect();
        let mut e = Self::new(422, "Invalid", message);
        e.details = Some(json!({"name": name, "group": info.group, "kind": info.kind, "causes": causes}));
        e
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden from RBAC.
    pub fn forbidden_rbac(
        user: &str,
        verb: &str,
        info_plural: &str,
        group: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Self {
        let scope = match ns {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        let what = if group.is_empty() { info_plural.to_string() } else { format!("{info_plural}.{group}") };
        let named = if name.is_empty() { String::new() } else { format!(" \"{name}\"") };
        let mut e = Self::new(
            403,
            "Forbidden",
            format!(
                "{what}{named} is forbidden: User \"{user}\" cannot {verb} resource \"{info_plural}\" in API group \"{group}\"{scope}"
            ),
        );
        e.details = Some(json!({"name": name, "group": group, "kind": info_plural}));
        e
    }

    /// 403 Forbidden for other reasons (terminating namespace...).
    pub fn forbidden(info: &ResourceInfo, name: &str, why: &str) -> Self {
        let mut e = Self::new(403, "Forbidden", format!("{} \"{name}\" is forbidden: {why}", info.qualified_plural()));
        e.details = Some(details(info, name));
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 410 Gone / Expired for a too-old resourceVersion.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {requested} ({oldest})"))
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"
            ),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        // A plain error from a REST handler has no reason (StatusReasonUnknown is omitted).
        if self.reason.is_empty()
            && let Some(m) = v.as_object_mut()
        {
            m.remove("reason");
        }
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// A `Status` of success, as answered by DELETE of an object that is gone at once.
pub fn success_status(info: &ResourceInfo, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": info.group, "kind": info.plural, "uid": uid},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin;

    #[test]
    fn not_found_message_matches_kube() {
        let pods = builtin().into_iter().find(|r| r.plural == "pods").unwrap();
        let e = ApiError::not_found(&pods, "p");
        assert_eq!(e.message, "pods \"p\" not found");
        assert_eq!(e.to_status()["code"], 404);
    }

    #[test]
    fn invalid_joins_causes() {
        let cm = builtin().into_iter().find(|r| r.plural == "configmaps").unwrap();
        let c =
            |f: &str| Cause { reason: "FieldValueInvalid".into(), message: "Invalid value: 1".into(), field: f.into() };
        let e = ApiError::invalid(&cm, "x", vec![c("a"), c("b")]);
        assert_eq!(e.message, "ConfigMap \"x\" is invalid: [a: Invalid value: 1, b: Invalid value: 1]");
        let one = ApiError::invalid(&cm, "x", vec![c("a")]);
        assert_eq!(one.message, "ConfigMap \"x\" is invalid: a: Invalid value: 1");
    }
}
