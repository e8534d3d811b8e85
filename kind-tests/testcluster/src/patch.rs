//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch for the built-in list fields we use.

use serde_json::{Map, Value, json};

use crate::status::{ApiError, ApiResult};

/// The patch flavours, from the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Parses a Content-Type header.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// Applies a JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// Applies a JSON patch; errors are 422 like the real server's.
pub fn json_patch(target: &Value, patch: &Value) -> ApiResult<Value> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    // The server answers any failure to apply a JSON patch with this generic 422 and drops
    // the library's text (`NewGenericServerResponse` in the apiserver's patch handler).
    let invalid = |e: String| {
        tracing::debug!(error = %e, "JSON patch not applied");
        ApiError {
            code: 422,
            reason: "Invalid",
            message: "the server rejected our request due to an error in our request".into(),
            details: Some(json!({})),
        }
    };
    let mut out = target.clone();
    for op in ops.0 {
        // As the API server's json-patch library does, `test` of a missing
        // path against null succeeds (kube-runtime's finalizer helper relies
        // on it).
        if let json_patch::PatchOperation::Test(t) = &op {
            let found = out.pointer(t.path.as_str());
            let ok = match found {
                None => t.value.is_null(),
                Some(v) => *v == t.value,
            };
            if !ok {
                return Err(invalid(format!("testing value {} failed", t.path)));
            }
            continue;
        }
        json_patch::patch(&mut out, &[op]).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(out)
}

/// The merge key of a list field in built-in types, if it is merged by key.
pub fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => "name",
        "volumeMounts" | "volumeDevices" => "mountPath",
        "tolerations" => "key",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of scalars merged as sets.
fn is_primitive_merge_list(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch (the subset our built-in types need).
pub fn strategic_merge(target: &Value, patch: &Value) -> ApiResult<Value> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => Ok(Value::Object(merge_map(t, p)?)),
        (_, p) => Ok(strip_directives(p)),
    }
}

fn merge_map(target: &Map<String, Value>, patch: &Map<String, Value>) -> ApiResult<Map<String, Value>> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch.clone();
        p.remove("$patch");
        return Ok(strip_map(&p));
    }
    let mut out = target.clone();
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = pv.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(items)) = out.get_mut(field) {
                items.retain(|i| !remove.contains(&i));
            }
            continue;
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), pv) {
            (Some(Value::Object(t)), Value::Object(p)) => Value::Object(merge_map(t, p)?),
            (Some(Value::Array(t)), Value::Array(p)) => merge_list(k, t, p)?,
            (_, Value::Array(p)) => merge_list(k, &[], p)?,
            (_, p) => strip_directives(p),
        };
        out.insert(k.clone(), merged);
    }
    Ok(out)
}

fn merge_list(field: &str, target: &[Value], patch: &[Value]) -> ApiResult<Value> {
    if is_primitive_merge_list(field) {
        let mut out = target.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(key) = merge_key(field, patch) else {
        return Ok(Value::Array(patch.iter().map(strip_directives).collect()));
    };
    if patch.iter().any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Ok(Value::Array(patch.iter().filter(|p| p.get("$patch").is_none()).map(strip_directives).collect()));
    }
    let mut out = target.to_vec();
    for p in patch {
        let Some(pk) = p.get(key) else {
            return Err(ApiError::bad_request(format!("map: {p} does not contain declared merge key: {key}")));
        };
        let pos = out.iter().position(|t| t.get(key) == Some(pk));
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic_merge(&out[i], p)?,
            (None, false) => out.push(strip_directives(p)),
        }
    }
    Ok(Value::Array(out))
}

fn strip_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "c:1"}]}});
        let out = strategic_merge(&pod, &patch).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "c", "image": "c:1"}]}})
        );
    }

    #[test]
    fn strategic_finalizers_are_a_set_and_directives_apply() {
        let o = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}});
        let p = json!({"metadata": {"finalizers": ["b", "c"], "$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null}}});
        let out = strategic_merge(&o, &p).unwrap();
        assert_eq!(out, json!({"metadata": {"finalizers": ["b", "c"], "labels": {"y": "2"}}}));
    }

    #[test]
    fn unkeyed_lists_are_replaced() {
        let o = json!({"spec": {"args": ["a"]}});
        let out = strategic_merge(&o, &json!({"spec": {"args": ["b"]}})).unwrap();
        assert_eq!(out["spec"]["args"], json!(["b"]));
    }

    #[test]
    fn json_patch_errors_are_invalid() {
        let e = json_patch(&json!({}), &json!([{"op": "replace", "path": "/a", "value": 1}])).unwrap_err();
        assert_eq!(e.code, 422);
        let ok = json_patch(&json!({"a": 0}), &json!([{"op": "replace", "path": "/a", "value": 1}])).unwrap();
        assert_eq!(ok, json!({"a": 1}));
    }

    #[test]
    fn json_patch_test_of_missing_path_against_null_succeeds() {
        let p = json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                       {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        let out = json_patch(&json!({"metadata": {}}), &p).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["f"]));
        let fail = json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]);
        assert_eq!(json_patch(&out, &fail).unwrap_err().code, 422);
    }

    #[test]
    fn merge_patch_removes_nulls() {
        assert_eq!(merge_patch(&json!({"a": 1, "b": 2}), &json!({"a": null})), json!({"b": 2}));
    }
}
