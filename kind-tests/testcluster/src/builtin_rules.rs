//! Validation of the built-in types our components write, in the real server's words (pure):
//! Secret and ConfigMap keys, sizes and immutability, Lease durations, Event namespaces and
//! reporting fields, Node taints, Service ports and types.
//!
//! Sources (Kubernetes 1.33–1.36): `pkg/apis/core/validation/validation.go` (`ValidateSecret`,
//! `ValidateConfigMap`, `ValidateNode`, `ValidateService` and their `...Update`),
//! `pkg/apis/core/validation/events.go`, `pkg/apis/coordination/validation/validation.go`. The
//! list of what is enforced, and what is not, is in `kind-tests/README.md`.

use serde_json::Value;

use crate::resources::ResourceInfo;
use crate::status::Cause;

/// `MaxSecretSize` and the ConfigMap limit: 1 MiB of values.
const MAX_DATA_BYTES: usize = 1 << 20;

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause { reason: reason.into(), message, field: field.into() }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `IsConfigMapKey`: the problems of a Secret or ConfigMap key, as the server lists them.
fn config_key_problems(key: &str) -> Vec<&'static str> {
    let mut out = vec![];
    if key.len() > 253 {
        out.push("must be no more than 253 characters");
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        out.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
    }
    match key {
        "." => out.push("must not be '.'"),
        ".." => out.push("must not be '..'"),
        k if k.starts_with("..") => out.push("must not start with '..'"),
        _ => {}
    }
    out
}

/// The length of what a base64 text decodes to.
fn decoded_len(b64: &str) -> usize {
    let padding = b64.bytes().rev().take_while(|b| *b == b'=').count();
    (b64.len() / 4 * 3).saturating_sub(padding)
}

/// Key and size checks of `fields` (name, whether its values are base64).
fn data_causes(obj: &Value, fields: &[(&str, bool)], too_long_at: &str) -> Vec<Cause> {
    let mut out = vec![];
    let mut size = 0;
    for (field, base64) in fields {
        for (k, v) in obj[*field].as_object().into_iter().flatten() {
            for p in config_key_problems(k) {
                out.push(cause(
                    "FieldValueInvalid",
                    &format!("{field}[{k}]"),
                    format!("Invalid value: {}: {p}", quoted(k)),
                ));
            }
            let text = v.as_str().unwrap_or_default();
            size += if *base64 { decoded_len(text) } else { text.len() };
        }
    }
    if size > MAX_DATA_BYTES {
        out.push(cause(
            "FieldValueTooLong",
            too_long_at,
            format!("Too long: may not be more than {MAX_DATA_BYTES} bytes"),
        ));
    }
    out
}

/// The data of an object marked `immutable: true` may not change, nor the mark.
fn immutable_causes(obj: &Value, old: &Value, fields: &[&str]) -> Vec<Cause> {
    if old["immutable"].as_bool() != Some(true) {
        return vec![];
    }
    let text = "Forbidden: field is immutable when `immutable` is set".to_owned();
    let mut out = vec![];
    if obj["immutable"].as_bool() != Some(true) {
        out.push(cause("FieldValueForbidden", "immutable", text.clone()));
    }
    for f in fields {
        if obj[*f] != old[*f] {
            out.push(cause("FieldValueForbidden", f, text.clone()));
        }
    }
    out
}

fn event_causes(obj: &Value) -> Vec<Cause> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let involved = obj["involvedObject"]["namespace"].as_str().unwrap_or_default();
    let new_style = obj["eventTime"].as_str().is_some_and(|t| !t.is_empty());
    let mut out = vec![];
    let allowed: &[&str] = if new_style { &["default", "kube-system"] } else { &["", "default"] };
    let mismatch = if involved.is_empty() { !allowed.contains(&ns) } else { involved != ns };
    if mismatch {
        out.push(cause(
            "FieldValueInvalid",
            "involvedObject.namespace",
            format!("Invalid value: {}: does not match event.namespace", quoted(involved)),
        ));
    }
    if new_style {
        for (json, field, limit) in [
            ("reportingComponent", "reportingController", None),
            ("reportingInstance", "reportingInstance", Some(128)),
            ("action", "action", Some(128)),
            ("reason", "reason", Some(128)),
        ] {
            let value = obj[json].as_str().unwrap_or_default();
            if value.is_empty() {
                out.push(cause("FieldValueRequired", field, "Required value".into()));
            } else if let Some(limit) = limit.filter(|l| value.len() > *l) {
                out.push(cause(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: \"\": can have at most {limit} characters"),
                ));
            }
        }
        if obj["message"].as_str().is_some_and(|m| m.len() > 1024) {
            out.push(cause(
                "FieldValueInvalid",
                "message",
                "Invalid value: \"\": can have at most 1024 characters".into(),
            ));
        }
    }
    out
}

fn lease_causes(obj: &Value) -> Vec<Cause> {
    let mut out = vec![];
    if let Some(d) = obj["spec"]["leaseDurationSeconds"].as_i64().filter(|d| *d <= 0) {
        out.push(cause(
            "FieldValueInvalid",
            "spec.leaseDurationSeconds",
            format!("Invalid value: {d}: must be greater than 0"),
        ));
    }
    if let Some(t) = obj["spec"]["leaseTransitions"].as_i64().filter(|t| *t < 0) {
        let m = format!("Invalid value: {t}: must be greater than or equal to 0");
        out.push(cause("FieldValueInvalid", "spec.leaseTransitions", m));
    }
    out
}

fn node_causes(obj: &Value) -> Vec<Cause> {
    let mut out = vec![];
    let mut seen = vec![];
    for (i, t) in obj["spec"]["taints"].as_array().into_iter().flatten().enumerate() {
        // The server builds these paths from `metadata`, not `spec`.
        let effect = t["effect"].as_str().unwrap_or_default();
        match effect {
            "" => {
                out.push(cause("FieldValueRequired", &format!("metadata.taints[{i}].effect"), "Required value".into()))
            }
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => out.push(cause(
                "FieldValueNotSupported",
                &format!("metadata.taints[{i}].effect"),
                format!(
                    "Unsupported value: {}: supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
                    quoted(other)
                ),
            )),
        }
        let key = (t["key"].clone(), effect.to_owned());
        if seen.contains(&key) {
            out.push(cause(
                "FieldValueDuplicate",
                &format!("metadata.taints[{i}]"),
                format!("Duplicate value: {t}: taints must be unique by key and effect pair"),
            ));
        }
        seen.push(key);
    }
    out
}

fn service_causes(obj: &Value) -> Vec<Cause> {
    let spec = &obj["spec"];
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    let mut out = vec![];
    if !matches!(kind, "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort") {
        out.push(cause(
            "FieldValueNotSupported",
            "spec.type",
            format!("Unsupported value: {}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"", quoted(kind)),
        ));
    }
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    let headless = spec["clusterIP"] == "None";
    if ports.is_empty() && !headless && kind != "ExternalName" {
        out.push(cause("FieldValueRequired", "spec.ports", "Required value".into()));
    }
    for (i, p) in ports.iter().enumerate() {
        if ports.len() > 1 && p["name"].as_str().is_none_or(str::is_empty) {
            out.push(cause("FieldValueRequired", &format!("spec.ports[{i}].name"), "Required value".into()));
        }
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            let m = format!("Invalid value: {port}: must be between 1 and 65535, inclusive");
            out.push(cause("FieldValueInvalid", &format!("spec.ports[{i}].port"), m));
        }
        if kind == "ClusterIP" && p["nodePort"].as_i64().is_some_and(|n| n != 0) {
            let m = "Forbidden: may not be used when `type` is 'ClusterIP'".to_owned();
            out.push(cause("FieldValueForbidden", &format!("spec.ports[{i}].nodePort"), m));
        }
    }
    out
}

/// The causes of refusing `obj` (a create when `old` is `None`), empty when it passes.
pub fn check(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = match (info.group.as_str(), info.plural.as_str()) {
        ("", "secrets") => data_causes(obj, &[("data", true)], "data"),
        // The server reports an oversized ConfigMap at the empty path, printed `[]`.
        ("", "configmaps") => data_causes(obj, &[("data", false), ("binaryData", true)], "[]"),
        ("", "events") | ("events.k8s.io", "events") => event_causes(obj),
        ("coordination.k8s.io", "leases") => lease_causes(obj),
        ("", "nodes") => node_causes(obj),
        ("", "services") => service_causes(obj),
        _ => vec![],
    };
    if let Some(old) = old {
        match info.plural.as_str() {
            "secrets" if info.group.is_empty() => {
                if obj["type"] != old["type"] {
                    let m = format!("Invalid value: {}: field is immutable", obj["type"]);
                    out.insert(0, cause("FieldValueInvalid", "type", m));
                }
                out.extend(immutable_causes(obj, old, &["data"]));
            }
            "configmaps" if info.group.is_empty() => out.extend(immutable_causes(obj, old, &["data", "binaryData"])),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
