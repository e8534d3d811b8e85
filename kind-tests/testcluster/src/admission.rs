//! The per-resource admission hook run on every create, update, patch and
//! apply: prune (and report) unknown fields, default, validate.
//!
//! Issue #5 (CRD structural schemas and CEL) plugs in here: `admit` is the
//! single place where a new object is checked against its resource's
//! schema before it is stored.

use serde_json::{Map, Value};

use crate::openapi::{builtin_schemas, crd_schema};
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult, Cause};

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop unknown fields with a warning (the server default).
    #[default]
    Warn,
    /// Reject unknown fields.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter (unknown values mean the default).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// What the hook is admitting.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Resource.
    pub info: &'a ResourceInfo,
    /// Previous object (None on create).
    pub old: Option<&'a Value>,
    /// `status` or "".
    pub subresource: &'a str,
    /// Unknown-field handling.
    pub validation: FieldValidation,
}

/// Prunes, defaults and validates `obj`; returns warnings for the client.
pub fn admit(req: &Request<'_>, obj: &mut Value) -> ApiResult<Vec<String>> {
    let mut unknown = vec![];
    // Built-in schemas are static; a CRD's is rebuilt per write (cheap
    // next to a request) so that it always matches the served CRD.
    let defs = &builtin_schemas().defs;
    let resolve = |n: &str| defs.get(n);
    if req.info.crd.is_some() {
        let root = crd_schema(req.info);
        prune(obj, &root, &resolve, "", &mut unknown);
    } else {
        let b = builtin_schemas();
        let gvk = if req.info.is_event_view() {
            (String::new(), "v1".to_string(), "Event".to_string())
        } else {
            (req.info.group.clone(), req.info.version.clone(), req.info.kind.clone())
        };
        if let Some(root) = b.by_kind.get(&gvk).and_then(|n| defs.get(n)) {
            prune(obj, root, &resolve, "", &mut unknown);
        }
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if !unknown.is_empty() {
        match req.validation {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = req.info.kind,
                    v = req.info.version
                )));
            }
            FieldValidation::Warn => {}
            FieldValidation::Ignore => unknown.clear(),
        }
    }
    validate_metadata(req.info, &name)?;
    if req.info.plural == "customresourcedefinitions" && req.subresource.is_empty() {
        // Create and update: the schemas must be structural and their
        // rules affordable.
        let versions = obj["spec"]["versions"].as_array().map(Vec::as_slice).unwrap_or_default();
        // Versions that share one schema are checked once, under the path the server's
        // internal form gives it.
        let shared = versions.windows(2).all(|w| w[0]["schema"] == w[1]["schema"]);
        let mut causes = vec![];
        for (i, v) in versions.iter().enumerate() {
            if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
                let field = if shared {
                    "spec.validation.openAPIV3Schema".to_owned()
                } else {
                    format!("spec.versions[{i}].schema.openAPIV3Schema")
                };
                causes.extend(crate::crd_admit::check_schema(s, &field));
                if shared {
                    break;
                }
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(req.info, &name, causes));
        }
    }
    if req.info.crd.is_some()
        && let Some(schema) = &req.info.schema
    {
        crate::crd_admit::apply_defaults(schema, obj);
        let causes = crate::crd_admit::validate(schema, obj, req.old);
        if !causes.is_empty() {
            return Err(ApiError::invalid(req.info, &name, causes));
        }
    }
    Ok(unknown.into_iter().map(|f| format!("unknown field \"{f}\"")).collect())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn validate_metadata(info: &ResourceInfo, name: &str) -> ApiResult<()> {
    let rbac = info.group == "rbac.authorization.k8s.io";
    let ok = if rbac { !name.is_empty() && !name.contains('/') && !name.contains('%') } else { is_dns_subdomain(name) };
    if ok {
        return Ok(());
    }
    let (reason, message) = if name.is_empty() {
        ("FieldValueRequired", "Required value: name or generateName is required".to_string())
    } else {
        (
            "FieldValueInvalid",
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        )
    };
    Err(ApiError::invalid(info, name, vec![Cause { reason: reason.into(), message, field: "metadata.name".into() }]))
}

fn deref<'a>(mut s: &'a Value, resolve: &dyn Fn(&str) -> Option<&'a Value>) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match resolve(r.rsplit('/').next().unwrap_or_default()) {
                Some(t) => s = t,
                None => return s,
            }
        } else if let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            s = one;
        } else {
            return s;
        }
    }
    s
}

/// Removes fields the schema does not declare, recording their paths.
fn prune<'a>(
    v: &mut Value,
    schema: &'a Value,
    resolve: &dyn Fn(&str) -> Option<&'a Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let schema = deref(schema, resolve);
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if props.is_none() && additional.is_none() {
                return;
            }
            prune_map(m, props, additional, resolve, path, out);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune(it, item_schema, resolve, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn prune_map<'a>(
    m: &mut Map<String, Value>,
    props: Option<&'a Map<String, Value>>,
    additional: Option<&'a Value>,
    resolve: &dyn Fn(&str) -> Option<&'a Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let mut drop = vec![];
    for (k, c) in m.iter_mut() {
        let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match props.and_then(|p| p.get(k)) {
            Some(s) => prune(c, s, resolve, &child, out),
            None => match additional {
                Some(a) if a.is_object() => prune(c, a, resolve, &child, out),
                Some(Value::Bool(true)) => {}
                _ => drop.push(k.clone()),
            },
        }
    }
    for k in drop {
        m.remove(&k);
        out.push(if path.is_empty() { k } else { format!("{path}.{k}") });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin;
    use serde_json::json;

    fn info(plural: &str) -> ResourceInfo {
        builtin().into_iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn unknown_fields_are_pruned_with_warnings_or_rejected() {
        let cm = info("configmaps");
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "bogus": 1}, "data": {"k": "v"}, "extra": true});
        let req = Request { info: &cm, old: None, subresource: "", validation: FieldValidation::Warn };
        let warnings = admit(&req, &mut obj.clone()).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let strict = Request { validation: FieldValidation::Strict, ..req };
        let e = admit(&strict, &mut obj).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("unknown field \"extra\""), "{}", e.message);
    }

    #[test]
    fn pod_containers_are_walked() {
        let pods = info("pods");
        let mut obj =
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "nope": 1}]}});
        let req = Request { info: &pods, old: None, subresource: "", validation: FieldValidation::Warn };
        let w = admit(&req, &mut obj).unwrap();
        assert_eq!(w, vec!["unknown field \"spec.containers[0].nope\"".to_string()]);
        assert!(obj["spec"]["containers"][0].get("nope").is_none());
    }

    #[test]
    fn bad_names_are_invalid() {
        let cm = info("configmaps");
        let mut obj = json!({"metadata": {"name": "Bad_Name"}});
        let req = Request { info: &cm, old: None, subresource: "", validation: FieldValidation::Warn };
        let e = admit(&req, &mut obj).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.details.unwrap()["causes"][0]["field"], "metadata.name");
    }
}
