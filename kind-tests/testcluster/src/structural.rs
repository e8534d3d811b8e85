//! Structural-schema validation of custom objects, with the causes the
//! real API server (kube-openapi's validator as mapped by apiextensions)
//! reports: one cause per violation, its field path and its exact text.
//!
//! Pure logic: `validate(schema, value)` returns the causes.

use serde_json::Value;

use crate::formats::format_ok;
use crate::status::Cause;

/// Go's `%#v`-like rendering of a bad value as the API server prints it.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause { reason: reason.into(), message, field: field.into() }
}

fn invalid(field: &str, value: &str, detail: String) -> Cause {
    cause("FieldValueInvalid", field, format!("Invalid value: {value}: {detail}"))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    let got = type_name(v);
    want == got || (want == "number" && got == "integer")
}

fn int_or_string(s: &Value) -> bool {
    s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true)
}

/// Validates `v` against the structural schema `s` at `path`.
pub fn validate(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        if s.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            let msg = format!("{path} in body must be of type {t}: \"null\"");
            out.push(cause("FieldValueTypeInvalid", path, format!("Invalid value: \"null\": {msg}")));
        }
        return;
    }
    if int_or_string(s) {
        if !(v.is_string() || type_name(v) == "integer") {
            let got = type_name(v);
            let msg = format!("{path} in body must be of type integer,string: \"{got}\"");
            out.push(cause("FieldValueTypeInvalid", path, format!("Invalid value: \"{got}\": {msg}")));
            return;
        }
    } else if let Some(t) = s.get("type").and_then(Value::as_str)
        && !type_ok(t, v)
    {
        let got = type_name(v);
        let msg = format!("{path} in body must be of type {t}: \"{got}\"");
        out.push(cause("FieldValueTypeInvalid", path, format!("Invalid value: \"{got}\": {msg}")));
        return;
    }
    check_enum(s, v, path, out);
    match v {
        Value::String(st) => check_string(s, st, v, path, out),
        Value::Number(_) => check_number(s, v, path, out),
        Value::Array(items) => check_array(s, items, path, out),
        Value::Object(m) => check_object(s, m, path, out),
        _ => {}
    }
}

fn check_enum(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        let list: Vec<String> = e.iter().map(go_value).collect();
        out.push(cause(
            "FieldValueNotSupported",
            path,
            format!("Unsupported value: {}: supported values: {}", go_value(v), list.join(", ")),
        ));
    }
}

fn u(s: &Value, k: &str) -> Option<u64> {
    s.get(k).and_then(Value::as_u64)
}

fn check_format(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(f) = s.get("format").and_then(Value::as_str)
        && !format_ok(f, v)
    {
        let shown = go_value(v);
        out.push(invalid(path, &shown, format!("{path} in body must be of type {f}: {shown}")));
    }
}

fn check_string(s: &Value, st: &str, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let shown = go_value(v);
    let chars = st.chars().count() as u64;
    if let Some(max) = u(s, "maxLength")
        && chars > max
    {
        out.push(cause("FieldValueTooLong", path, format!("Too long: may not be more than {max} bytes")));
    }
    if let Some(min) = u(s, "minLength")
        && chars < min
    {
        out.push(invalid(path, &shown, format!("{path} in body should be at least {min} chars long")));
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str)
        && regex::Regex::new(p).is_ok_and(|re| !re.is_match(st))
    {
        out.push(invalid(path, &shown, format!("{path} in body should match '{p}'")));
    }
    check_format(s, v, path, out);
}

fn check_number(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let x = v.as_f64().unwrap_or_default();
    let shown = go_value(v);
    let excl = |k: &str| s.get(k).and_then(Value::as_bool) == Some(true);
    if let Some(max) = s.get("maximum") {
        let m = max.as_f64().unwrap_or(f64::MAX);
        if excl("exclusiveMaximum") && x >= m {
            out.push(invalid(path, &shown, format!("{path} in body should be less than {max}")));
        } else if x > m {
            out.push(invalid(path, &shown, format!("{path} in body should be less than or equal to {max}")));
        }
    }
    if let Some(min) = s.get("minimum") {
        let m = min.as_f64().unwrap_or(f64::MIN);
        if excl("exclusiveMinimum") && x <= m {
            out.push(invalid(path, &shown, format!("{path} in body should be greater than {min}")));
        } else if x < m {
            out.push(invalid(path, &shown, format!("{path} in body should be greater than or equal to {min}")));
        }
    }
    if let Some(mo) = s.get("multipleOf").and_then(Value::as_f64)
        && mo > 0.0
        && (x / mo).fract() != 0.0
    {
        out.push(invalid(path, &shown, format!("{path} in body should be a multiple of {}", s["multipleOf"])));
    }
    check_format(s, v, path, out);
}

fn check_array(s: &Value, items: &[Value], path: &str, out: &mut Vec<Cause>) {
    let n = items.len() as u64;
    if let Some(max) = u(s, "maxItems")
        && n > max
    {
        out.push(cause("FieldValueTooMany", path, format!("Too many: {n}: must have at most {max} items")));
    }
    if let Some(min) = u(s, "minItems")
        && n < min
    {
        out.push(invalid(path, &n.to_string(), format!("{path} in body should have at least {min} items")));
    }
    if let Some(is) = s.get("items") {
        for (i, it) in items.iter().enumerate() {
            validate(is, it, &format!("{path}[{i}]"), out);
        }
    }
    check_list_type(s, items, path, out);
}

fn check_list_type(s: &Value, items: &[Value], path: &str, out: &mut Vec<Cause>) {
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, it) in items.iter().enumerate() {
                if items[..i].contains(it) {
                    out.push(cause(
                        "FieldValueDuplicate",
                        &format!("{path}[{i}]"),
                        format!("Duplicate value: {}", go_value(it)),
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |it: &Value| -> Vec<Value> {
                keys.iter().map(|k| it.get(*k).cloned().unwrap_or(Value::Null)).collect()
            };
            for (i, it) in items.iter().enumerate() {
                let k = key_of(it);
                if items[..i].iter().any(|o| key_of(o) == k) {
                    let shown: Vec<String> =
                        keys.iter().zip(&k).map(|(n, v)| format!("\"{n}\":{}", go_value(v))).collect();
                    out.push(cause(
                        "FieldValueDuplicate",
                        &format!("{path}[{i}]"),
                        format!("Duplicate value: map[string]interface {{}}{{{}}}", shown.join(", ")),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn check_object(s: &Value, m: &serde_json::Map<String, Value>, path: &str, out: &mut Vec<Cause>) {
    let n = m.len() as u64;
    if let Some(max) = u(s, "maxProperties")
        && n > max
    {
        out.push(cause("FieldValueTooMany", path, format!("Too many: {n}: must have at most {max} items")));
    }
    if let Some(min) = u(s, "minProperties")
        && n < min
    {
        out.push(invalid(path, &n.to_string(), format!("{path} in body should have at least {min} properties")));
    }
    if s.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true) {
        for k in ["apiVersion", "kind"] {
            if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                out.push(cause("FieldValueRequired", &join(path, k), "Required value".into()));
            }
        }
    }
    for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(k) = r.as_str()
            && !m.contains_key(k)
        {
            out.push(cause("FieldValueRequired", &join(path, k), "Required value".into()));
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    for (k, c) in m {
        match props.and_then(|p| p.get(k)) {
            Some(ps) => validate(ps, c, &join(path, k), out),
            None => {
                if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    validate(a, c, &join(path, k), out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(s: Value, v: Value) -> Vec<(String, String, String)> {
        let mut out = vec![];
        validate(&s, &v, "spec", &mut out);
        out.into_iter().map(|c| (c.reason, c.field, c.message)).collect()
    }

    #[test]
    fn table() {
        let cases = [
            (
                json!({"type": "integer"}),
                json!("x"),
                "FieldValueTypeInvalid",
                "spec",
                "Invalid value: \"string\": spec in body must be of type integer: \"string\"",
            ),
            (
                json!({"type": "string", "enum": ["A", "B"]}),
                json!("C"),
                "FieldValueNotSupported",
                "spec",
                "Unsupported value: \"C\": supported values: \"A\", \"B\"",
            ),
            (
                json!({"type": "integer", "maximum": 5}),
                json!(7),
                "FieldValueInvalid",
                "spec",
                "Invalid value: 7: spec in body should be less than or equal to 5",
            ),
            (
                json!({"type": "integer", "minimum": 5}),
                json!(1),
                "FieldValueInvalid",
                "spec",
                "Invalid value: 1: spec in body should be greater than or equal to 5",
            ),
            (
                json!({"type": "string", "maxLength": 2}),
                json!("abc"),
                "FieldValueTooLong",
                "spec",
                "Too long: may not be more than 2 bytes",
            ),
            (
                json!({"type": "string", "minLength": 2}),
                json!("a"),
                "FieldValueInvalid",
                "spec",
                "Invalid value: \"a\": spec in body should be at least 2 chars long",
            ),
            (
                json!({"type": "string", "pattern": "^a+$"}),
                json!("b"),
                "FieldValueInvalid",
                "spec",
                "Invalid value: \"b\": spec in body should match '^a+$'",
            ),
            (
                json!({"type": "array", "maxItems": 1}),
                json!([1, 2]),
                "FieldValueTooMany",
                "spec",
                "Too many: 2: must have at most 1 items",
            ),
            (
                json!({"type": "array", "minItems": 1}),
                json!([]),
                "FieldValueInvalid",
                "spec",
                "Invalid value: 0: spec in body should have at least 1 items",
            ),
            (
                json!({"type": "object", "maxProperties": 1}),
                json!({"a": 1, "b": 2}),
                "FieldValueTooMany",
                "spec",
                "Too many: 2: must have at most 1 items",
            ),
            (json!({"type": "object", "required": ["x"]}), json!({}), "FieldValueRequired", "spec.x", "Required value"),
            (
                json!({"type": "integer", "format": "int32"}),
                json!(5_000_000_000_i64),
                "FieldValueInvalid",
                "spec",
                "Invalid value: 5000000000: spec in body must be of type int32: 5000000000",
            ),
            (
                json!({"type": "string", "format": "date-time"}),
                json!("nope"),
                "FieldValueInvalid",
                "spec",
                "Invalid value: \"nope\": spec in body must be of type date-time: \"nope\"",
            ),
            (
                json!({"x-kubernetes-int-or-string": true}),
                json!(true),
                "FieldValueTypeInvalid",
                "spec",
                "Invalid value: \"boolean\": spec in body must be of type integer,string: \"boolean\"",
            ),
            (
                json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}),
                json!(["a", "a"]),
                "FieldValueDuplicate",
                "spec[1]",
                "Duplicate value: \"a\"",
            ),
            (
                json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}}),
                json!([{"name": "a"}, {"name": "a"}]),
                "FieldValueDuplicate",
                "spec[1]",
                "Duplicate value: map[string]interface {}{\"name\":\"a\"}",
            ),
            (
                json!({"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}),
                json!({"kind": "X"}),
                "FieldValueRequired",
                "spec.apiVersion",
                "Required value",
            ),
            (
                json!({"type": "string", "format": "uuid"}),
                json!("x-1"),
                "FieldValueInvalid",
                "spec",
                "Invalid value: \"x-1\": spec in body must be of type uuid: \"x-1\"",
            ),
            (
                json!({"type": "string", "format": "ipv4"}),
                json!("1.2.3"),
                "FieldValueInvalid",
                "spec",
                "Invalid value: \"1.2.3\": spec in body must be of type ipv4: \"1.2.3\"",
            ),
            (
                json!({"type": "string", "format": "duration"}),
                json!("3 min"),
                "FieldValueInvalid",
                "spec",
                "Invalid value: \"3 min\": spec in body must be of type duration: \"3 min\"",
            ),
            (
                json!({"type": "string"}),
                Value::Null,
                "FieldValueTypeInvalid",
                "spec",
                "Invalid value: \"null\": spec in body must be of type string: \"null\"",
            ),
        ];
        for (s, v, reason, field, msg) in cases {
            let got = run(s.clone(), v.clone());
            assert_eq!(got, vec![(reason.to_string(), field.to_string(), msg.to_string())], "{s} {v}");
        }
        let ok = [
            (json!({"type": "string", "nullable": true}), Value::Null),
            (json!({"x-kubernetes-int-or-string": true}), json!(3)),
            (json!({"type": "number"}), json!(3)),
            (json!({"type": "string", "format": "cidr"}), json!("10.0.0.0/8")),
            (json!({"type": "string", "format": "duration"}), json!("1h30m")),
            (json!({"type": "string", "format": "uuid"}), json!("5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d")),
            (json!({"type": "string", "format": "date-time"}), json!("2024-01-01T00:00:00Z")),
        ];
        for (s, v) in ok {
            assert!(run(s.clone(), v.clone()).is_empty(), "{s} {v}");
        }
    }
}
