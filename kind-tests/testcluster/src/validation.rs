//! Type-specific validation of built-in objects beyond the schema (the
//! checks our tests and tools rely on).

use serde_json::Value;

use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult, Cause};

fn invalid(info: &ResourceInfo, name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(info, name, vec![Cause { reason: "FieldValueInvalid".into(), message, field: field.into() }])
}

fn required(info: &ResourceInfo, name: &str, field: &str) -> ApiError {
    ApiError::invalid(
        info,
        name,
        vec![Cause { reason: "FieldValueRequired".into(), message: "Required value".into(), field: field.into() }],
    )
}

/// Validates a new object.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    match (info.group.as_str(), info.plural.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let spec = &obj["spec"];
            let plural = spec["names"]["plural"].as_str().unwrap_or_default();
            let group = spec["group"].as_str().unwrap_or_default();
            if plural.is_empty() {
                return Err(required(info, name, "spec.names.plural"));
            }
            if spec["names"]["kind"].as_str().unwrap_or_default().is_empty() {
                return Err(required(info, name, "spec.names.kind"));
            }
            if name != format!("{plural}.{group}") {
                return Err(invalid(
                    info,
                    name,
                    "metadata.name",
                    format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
                ));
            }
            let versions = spec["versions"].as_array().map(Vec::as_slice).unwrap_or_default();
            if versions.iter().filter(|v| v["storage"].as_bool() == Some(true)).count() != 1 {
                return Err(invalid(
                    info,
                    name,
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version".into(),
                ));
            }
        }
        ("", "pods") if obj["spec"]["containers"].as_array().is_none_or(Vec::is_empty) => {
            return Err(required(info, name, "spec.containers"));
        }
        _ => {}
    }
    Ok(())
}

/// The per-type rules of a new object, once the server's defaults are in (a Secret's
/// `stringData` is in `data` then).
pub fn validate_defaulted(info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    let causes = crate::builtin_rules::check(info, obj, None);
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(info, obj["metadata"]["name"].as_str().unwrap_or_default(), causes))
}

/// Validates an update of `old` into `new` (`subresource` is `status` or "") with the rules the
/// real server applies to that type on update; may complete `new` as the server's update
/// strategy does (a pod's omitted QoS class).
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &mut Value, subresource: &str) -> ApiResult<()> {
    if subresource.is_empty()
        && let Some(cause) = new_finalizers_while_deleting(old, new)
    {
        return Err(ApiError::invalid(info, new["metadata"]["name"].as_str().unwrap_or_default(), vec![cause]));
    }
    let causes = crate::builtin_rules::check(info, new, Some(old));
    if !causes.is_empty() {
        let name = new["metadata"]["name"].as_str().unwrap_or_default();
        return Err(ApiError::invalid(info, name, causes));
    }
    match (info.group.as_str(), info.plural.as_str(), subresource) {
        ("", "pods", "status") => crate::pods::validate_status_update(info, old, new),
        ("", "pods", "") => {
            crate::defaults::default_pod_spec(new);
            crate::pods::validate_update(info, old, new)
        }
        _ => Ok(()),
    }
}

/// An update that adds finalizers to an object being deleted, as kube-apiserver refuses it
/// (apimachinery `ValidateObjectMetaUpdate` -> `ValidateNoNewFinalizers`: 422, a Forbidden
/// cause on `metadata.finalizers`, the new ones in Go's `%#v` of a `[]string`, sorted).
fn new_finalizers_while_deleting(old: &Value, new: &Value) -> Option<Cause> {
    old["metadata"].get("deletionTimestamp").filter(|t| !t.is_null())?;
    let list = |o: &Value| -> std::collections::BTreeSet<String> {
        o["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect()
    };
    let (before, after) = (list(old), list(new));
    let extra: Vec<String> = after.difference(&before).map(|f| format!("{f:?}")).collect();
    if extra.is_empty() {
        return None;
    }
    Some(Cause {
        reason: "FieldValueForbidden".into(),
        message: format!(
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
            extra.join(", ")
        ),
        field: "metadata.finalizers".into(),
    })
}
