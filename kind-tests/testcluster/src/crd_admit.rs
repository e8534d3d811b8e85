//! Admission of custom objects against their CRD version's schema:
//! defaulting, structural validation and CEL `x-kubernetes-validations`
//! (through `kube-cel`), plus the CRD-creation checks on the schema itself
//! (structural, CEL compilation and estimated cost).
//!
//! Pure logic: no I/O; `admission::admit` calls in.

use serde_json::Value;

use crate::status::Cause;
use crate::structural::{go_value, validate as structural_validate};

const NOT_CHECKED: &str = "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// The schema without the standard root fields (validated elsewhere).
fn body_schema(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(p) = s.get_mut("properties").and_then(Value::as_object_mut) {
        for k in ["apiVersion", "kind", "metadata"] {
            p.remove(k);
        }
    }
    s
}

fn body(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata"] {
            m.remove(k);
        }
    }
    o
}

fn has_rules(s: &Value) -> bool {
    match s {
        Value::Object(m) => m.contains_key("x-kubernetes-validations") || m.values().any(has_rules),
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

/// Applies the schema's defaults to `obj` (metadata untouched).
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    let s = body_schema(schema);
    let defaulted = kube_cel::apply_defaults(&s, &body(obj));
    if let (Some(m), Value::Object(d)) = (obj.as_object_mut(), defaulted) {
        for (k, v) in d {
            m.insert(k, v);
        }
    }
}

/// Resolves a cause path such as `spec.targets[0]` in `obj`.
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (key, rest) = seg.split_once('[').unwrap_or((seg, ""));
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// `a.b` of `a.b.c` or `a.b[2]`.
fn parent(path: &str) -> &str {
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    &path[..cut]
}

fn cel_cause(obj: &Value, e: &kube_cel::ValidationError) -> Cause {
    let (reason, message) = match e.reason.as_deref() {
        Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {}", e.message)),
        Some("FieldValueRequired") => ("FieldValueRequired", format!("Required value: {}", e.message)),
        Some("FieldValueDuplicate") => ("FieldValueDuplicate", format!("Duplicate value: {}", e.message)),
        _ => {
            let shown = lookup(obj, &e.field_path)
                .filter(|v| !v.is_object() && !v.is_array())
                .map(|v| format!("{}: ", go_value(v)))
                .unwrap_or_default();
            ("FieldValueInvalid", format!("Invalid value: {shown}{}", e.message))
        }
    };
    Cause { reason: reason.into(), message, field: e.field_path.clone() }
}

/// Validates a (pruned, defaulted) custom object; `old` on update.
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let s = body_schema(schema);
    let b = body(obj);
    let mut causes = vec![];
    structural_validate(&s, &b, "", &mut causes);
    let old_b = old.map(body);
    if let Some(ob) = &old_b {
        // Validation ratcheting (GA since 1.33): an update may keep a value
        // that was already invalid.
        causes.retain(|c| {
            let p = match c.reason.as_str() {
                "FieldValueRequired" | "FieldValueDuplicate" => parent(&c.field),
                _ => c.field.as_str(),
            };
            lookup(&b, p) != lookup(ob, p)
        });
    }
    // As the real server: schema errors of these types block the CEL
    // rules; others (pattern, minimum...) do not.
    let blocking = causes.iter().any(|c| {
        matches!(
            c.reason.as_str(),
            "FieldValueNotSupported"
                | "FieldValueRequired"
                | "FieldValueTooLong"
                | "FieldValueTooMany"
                | "FieldValueTypeInvalid"
        )
    });
    if blocking {
        if has_rules(&s) {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: NOT_CHECKED.into(),
                field: "<nil>".into(),
            });
        }
        return causes;
    }
    if !has_rules(&s) {
        return causes;
    }
    if let Err(errs) = kube_cel::validate(&s, &b, old_b.as_ref()) {
        causes.extend(errs.iter().map(|e| cel_cause(&b, e)));
    }
    causes
}

/// Budget of the whole schema's estimated CEL cost, per the API server's
/// per-call limit.
const BUDGET: f64 = 1_000_000.0;

fn walk_rules(s: &Value, path: &str, out: &mut Vec<Cause>, total: &mut f64) {
    let Some(m) = s.as_object() else { return };
    if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
        let compiled = kube_cel::compile_schema(s);
        for (i, r) in rules.iter().enumerate() {
            let rule = r["rule"].as_str().unwrap_or_default();
            let field = format!("{path}.x-kubernetes-validations[{i}].rule");
            if let Some(Err(e)) = compiled.validations.get(i) {
                out.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {}: compilation failed: {e}", go_value(&r["rule"])),
                    field,
                });
                continue;
            }
            for w in kube_cel::estimate_rule_cost(rule, &compiled) {
                if w.kind == kube_cel::WarningKind::CostExceeded {
                    *total +=
                        w.message.split_whitespace().nth(2).and_then(|c| c.parse::<f64>().ok()).unwrap_or(BUDGET * 2.0);
                }
            }
        }
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, c) in props {
            walk_rules(c, &format!("{path}.properties[{k}]"), out, total);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(c) = m.get(k) {
            walk_rules(c, &format!("{path}.{k}"), out, total);
        }
    }
}

fn structural_problems(s: &Value, path: &str, what: &str, out: &mut Vec<Cause>) {
    let Some(m) = s.as_object() else { return };
    let preserve = m.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    let ios = m.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    let embedded = m.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);
    if !m.contains_key("type") && !preserve && !ios && !embedded && !what.is_empty() {
        out.push(Cause {
            reason: "FieldValueRequired".into(),
            message: format!("Required value: must not be empty for specified {what}"),
            field: format!("{path}.type"),
        });
    }
    if m.contains_key("$ref") {
        out.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: $ref is not supported".into(),
            field: format!("{path}.$ref"),
        });
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, c) in props {
            structural_problems(c, &format!("{path}.properties[{k}]"), "object fields", out);
        }
    }
    for (k, what) in [("items", "array items"), ("additionalProperties", "object fields")] {
        if let Some(c) = m.get(k).filter(|c| c.is_object()) {
            structural_problems(c, &format!("{path}.{k}"), what, out);
        }
    }
}

/// Checks a CRD version's schema at CRD creation; `field` is its path,
/// e.g. `spec.versions[0].schema.openAPIV3Schema`.
pub fn check_schema(schema: &Value, field: &str) -> Vec<Cause> {
    let mut out = vec![];
    structural_problems(schema, field, "", &mut out);
    let mut total = 0.0;
    walk_rules(schema, field, &mut out, &mut total);
    if total > BUDGET {
        out.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: format!(
                "Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of {:.1}x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)",
                total / BUDGET
            ),
            // The path a real v1.36 server reports (K8S-FACTS), whatever
            // the version.
            field: "spec.validation.openAPIV3Schema".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must be less than or equal to maxReplicas"},
            {"rule": "!has(self.name) || self.name.startsWith('w-')"}],
        "properties": {
            "minReplicas": {"type": "integer", "default": 1},
            "maxReplicas": {"type": "integer", "default": 3},
                "code": {"type": "string", "pattern": "^c"},
            "name": {"type": "string", "maxLength": 20,
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "name is immutable"}]},
            "size": {"type": "string", "x-kubernetes-validations": [{"rule": "self != 'huge'", "reason": "FieldValueForbidden", "messageExpression": "'size ' + self + ' is too big'"}]},
            "rate": {"type": "string", "x-kubernetes-validations": [{"rule": "isQuantity(self) && quantity(self).compareTo(quantity('1k')) >= 0", "message": "too slow"}]},
            "pair": {"type": "object", "properties": {"a": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.a > 0", "fieldPath": ".a", "message": "a must be positive"}]}
        }}}})
    }

    fn causes(obj: Value, old: Option<Value>) -> Vec<(String, String, String)> {
        let s = widget();
        let mut o = obj;
        apply_defaults(&s, &mut o);
        validate(&s, &o, old.as_ref()).into_iter().map(|c| (c.reason, c.field, c.message)).collect()
    }

    fn one(r: &str, f: &str, m: &str) -> Vec<(String, String, String)> {
        vec![(r.into(), f.into(), m.into())]
    }

    #[test]
    fn cel_table() {
        let cases = [
            (
                json!({"spec": {"minReplicas": 5, "maxReplicas": 2}}),
                None,
                one(
                    "FieldValueInvalid",
                    "spec",
                    "Invalid value: minReplicas must be less than or equal to maxReplicas",
                ),
            ),
            (
                json!({"spec": {"minReplicas": 5}}),
                None,
                one(
                    "FieldValueInvalid",
                    "spec",
                    "Invalid value: minReplicas must be less than or equal to maxReplicas",
                ),
            ),
            (
                json!({"spec": {"name": "x"}}),
                None,
                one(
                    "FieldValueInvalid",
                    "spec",
                    "Invalid value: failed rule: !has(self.name) || self.name.startsWith('w-')",
                ),
            ),
            (
                json!({"spec": {"name": "w-changed"}}),
                Some(json!({"spec": {"name": "w-a"}})),
                one("FieldValueInvalid", "spec.name", "Invalid value: \"w-changed\": name is immutable"),
            ),
            (
                json!({"spec": {"size": "huge"}}),
                None,
                one("FieldValueForbidden", "spec.size", "Forbidden: size huge is too big"),
            ),
            (
                json!({"spec": {"rate": "10"}}),
                None,
                one("FieldValueInvalid", "spec.rate", "Invalid value: \"10\": too slow"),
            ),
            (
                json!({"spec": {"pair": {"a": 0}}}),
                None,
                one("FieldValueInvalid", "spec.pair.a", "Invalid value: 0: a must be positive"),
            ),
            (
                json!({"spec": {"name": "w-123456789012345678901"}}),
                None,
                vec![
                    ("FieldValueTooLong".into(), "spec.name".into(), "Too long: may not be more than 20 bytes".into()),
                    ("FieldValueInvalid".into(), "<nil>".into(), NOT_CHECKED.into()),
                ],
            ),
        ];
        // A pattern error does not block the rules.
        assert_eq!(
            causes(json!({"spec": {"minReplicas": 5, "maxReplicas": 2, "code": "x"}}), None),
            vec![
                (
                    "FieldValueInvalid".into(),
                    "spec.code".into(),
                    "Invalid value: \"x\": spec.code in body should match '^c'".into()
                ),
                (
                    "FieldValueInvalid".into(),
                    "spec".into(),
                    "Invalid value: minReplicas must be less than or equal to maxReplicas".into()
                ),
            ]
        );
        for (obj, old, want) in cases {
            assert_eq!(causes(obj.clone(), old), want, "{obj}");
        }
        assert!(causes(json!({"spec": {"name": "w-a", "rate": "2k"}}), None).is_empty());
        // Ratcheting: an unchanged invalid value passes an update, a
        // changed one does not.
        let old = json!({"spec": {"name": "w-a", "code": "x"}});
        assert!(causes(json!({"spec": {"name": "w-a", "code": "x", "maxReplicas": 4}}), Some(old.clone())).is_empty());
        assert_eq!(causes(json!({"spec": {"name": "w-a", "code": "y"}}), Some(old)).len(), 1);
        // Transition rules run only on update.
        assert!(causes(json!({"spec": {"name": "w-new"}}), None).is_empty());
    }

    #[test]
    fn schema_checks() {
        let bad = json!({"type": "object", "properties": {"spec": {"properties": {}}}});
        let c = check_schema(&bad, "spec.validation.openAPIV3Schema");
        assert_eq!(c[0].field, "spec.validation.openAPIV3Schema.properties[spec].type");
        let costly = json!({"type": "object", "properties": {"l": {"type": "array",
            "items": {"type": "array", "items": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "self.all(x, x.all(y, y.all(z, z.matches('^a'))))"}]}}});
        let c = check_schema(&costly, "spec.validation.openAPIV3Schema");
        assert!(c.iter().any(|c| c.message.contains("exceeds budget by factor of")), "{c:?}");
        assert!(check_schema(&widget(), "s").is_empty());
    }
}
