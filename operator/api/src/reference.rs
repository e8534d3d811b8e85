//! Markdown reference of both CRDs, generated from their schemas (so it says exactly what
//! `kubectl explain` and admission say). Written to `docs/reference.md` by `crdgen`.

use std::fmt::Write;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::{Gateway, StreamRequest};

fn type_of(schema: &Value) -> String {
    let base = match schema.get("type").and_then(Value::as_str) {
        Some("array") => format!("[]{}", schema.get("items").map(type_of).unwrap_or_default()),
        Some(t) => t.to_owned(),
        None if schema.get("x-kubernetes-int-or-string").is_some() => "int-or-string".to_owned(),
        None => "object".to_owned(),
    };
    match schema.get("format").and_then(Value::as_str) {
        Some(f) => format!("{base} ({f})"),
        None => base,
    }
}

fn constraints(schema: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = e.iter().filter_map(Value::as_str).map(|v| format!("`{v}`")).collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    let num = |v: &Value| v.as_f64().map(|f| format!("{}", f as i64)).unwrap_or_default();
    for (key, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ] {
        if let Some(v) = schema.get(key) {
            parts.push(format!("{label} {}", num(v)));
        }
    }
    if let Some(d) = schema.get("default") {
        parts.push(format!("default `{}`", d.to_string().trim_matches('"')));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str)
        && p.len() <= 80
    {
        parts.push(format!("pattern `{p}`"));
    }
    for rule in schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        if let Some(m) = rule.get("message").and_then(Value::as_str) {
            parts.push(m.to_owned());
        }
    }
    parts.join("; ")
}

fn clean(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

fn walk(out: &mut String, path: &str, schema: &Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let _ = writeln!(
        out,
        "\n### `{path}`\n\n| field | type | required | constraints | description |\n|---|---|---|---|---|"
    );
    let mut nested = Vec::new();
    for (name, child) in props {
        let description = child.get("description").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {} | {} |",
            type_of(child),
            if required.contains(&name.as_str()) { "yes" } else { "" },
            clean(&constraints(child)),
            clean(description)
        );
        let target =
            if child.get("type").and_then(Value::as_str) == Some("array") { child.get("items") } else { Some(child) };
        if let Some(t) = target
            && t.get("properties").is_some()
            && name != "metadata"
        {
            let suffix = if target.map(|t| !std::ptr::eq(t, child)).unwrap_or(false) { "[]" } else { "" };
            nested.push((format!("{path}.{name}{suffix}"), t.clone()));
        }
    }
    for (p, s) in nested {
        walk(out, &p, &s);
    }
}

/// The reference document.
pub fn render() -> String {
    let mut out = String::from(
        "# API reference: scistream.io/v1alpha1\n\n\
         Generated from the Rust types by `cargo run -p scistream-api --bin crdgen`; do not edit.\n\
         Every description here is also what `kubectl explain` prints.\n",
    );
    for crd in [Gateway::crd(), StreamRequest::crd()] {
        let version = &crd.spec.versions[0];
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .unwrap_or_default();
        let kind = &crd.spec.names.kind;
        let scope = &crd.spec.scope;
        let short = crd.spec.names.short_names.clone().unwrap_or_default().join(", ");
        let _ = writeln!(out, "\n## {kind}\n\n{scope}, short name `{short}`, category `scistream`.\n");
        if let Some(d) = schema.get("description").and_then(Value::as_str) {
            let _ = writeln!(out, "{d}");
        }
        let columns: Vec<String> =
            version.additional_printer_columns.iter().flatten().map(|c| format!("`{}`", c.name)).collect();
        let _ = writeln!(out, "\n`kubectl get` columns: {}.", columns.join(", "));
        for rule in
            schema.pointer("/properties/spec/x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten()
        {
            if let Some(m) = rule.get("message").and_then(Value::as_str) {
                let _ = writeln!(out, "- rule: {m}");
            }
        }
        for part in ["spec", "status"] {
            if let Some(s) = schema.pointer(&format!("/properties/{part}")) {
                walk(&mut out, &format!("{}.{part}", kind.to_lowercase()), s);
            }
        }
    }
    out
}
