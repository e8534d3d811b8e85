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

/// The type of the schema node that declares `rule`, found along `path` from the root: the
/// rule's own node for a plain rule, an ancestor for one with a `fieldPath`.
fn declaring_type<'a>(schema: &'a Value, path: &str, rule: &str) -> Option<&'a str> {
    let declares = |s: &Value| {
        s["x-kubernetes-validations"].as_array().is_some_and(|rs| rs.iter().any(|r| r["rule"].as_str() == Some(rule)))
    };
    let mut cur = schema;
    let mut found = declares(cur).then(|| cur["type"].as_str()).flatten();
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (key, rest) = seg.split_once('[').unwrap_or((seg, ""));
        if !key.is_empty() {
            cur = cur["properties"].get(key).or_else(|| cur.get("additionalProperties"))?;
            if declares(cur) {
                found = cur["type"].as_str();
            }
        }
        for _ in rest.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get("items")?;
            if declares(cur) {
                found = cur["type"].as_str();
            }
        }
    }
    found
}

/// A CEL failure as the server words it (1.35+): the value is shown only when the rule is
/// declared on a scalar; on an object or a list (the usual place of a `fieldPath` rule) it
/// is omitted, e.g. `spec.peerCertificate: Invalid value: <message>`.
fn cel_cause(schema: &Value, obj: &Value, e: &kube_cel::ValidationError) -> Cause {
    let (reason, message) = match e.reason.as_deref() {
        Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {}", e.message)),
        Some("FieldValueRequired") => ("FieldValueRequired", format!("Required value: {}", e.message)),
        Some("FieldValueDuplicate") => ("FieldValueDuplicate", format!("Duplicate value: {}", e.message)),
        _ => {
            let on_scalar = !matches!(declaring_type(schema, &e.field_path, &e.rule), Some("object" | "array"));
            let shown = lookup(obj, &e.field_path)
                .filter(|v| on_scalar && !v.is_object() && !v.is_array())
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
        causes.extend(errs.iter().map(|e| cel_cause(&s, &b, e)));
    }
    causes
}

/// One rule's estimated cost, for the schema's total.
struct RuleCost {
    /// `...x-kubernetes-validations[i].rule`.
    field: String,
    cost: f64,
}

/// Compiles every rule under `s` (at `path`, evaluated up to `times` times per object) and
/// estimates its cost: compilation failures and rules over the per-rule limit go into `out`.
fn walk_rules(s: &Value, path: &str, times: f64, out: &mut Vec<Cause>, costs: &mut Vec<RuleCost>) {
    use crate::cel_cost::{PER_RULE_LIMIT, cardinality, over_budget, rule_cost};
    let Some(m) = s.as_object() else { return };
    // Children first, as the server reports them.
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, c) in props {
            walk_rules(c, &format!("{path}.properties[{k}]"), times, out, costs);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(c) = m.get(k).filter(|c| c.is_object()) {
            walk_rules(c, &format!("{path}.{k}"), times * cardinality(s), out, costs);
        }
    }
    let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) else { return };
    let compiled = kube_cel::compile_schema(s);
    for (i, r) in rules.iter().enumerate() {
        let field = format!("{path}.x-kubernetes-validations[{i}].rule");
        if let Some(Err(e)) = compiled.validations.get(i) {
            out.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {}: compilation failed: {e}", go_value(&r["rule"])),
                field,
            });
            continue;
        }
        let Some(cost) = rule_cost(r["rule"].as_str().unwrap_or_default(), s).map(|c| c * times) else { continue };
        if cost > PER_RULE_LIMIT {
            let message = format!("Forbidden: {}", over_budget("estimated rule cost", cost, PER_RULE_LIMIT));
            out.push(Cause { reason: "FieldValueForbidden".into(), message, field: field.clone() });
        }
        costs.push(RuleCost { field, cost });
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

/// Checks a CRD version's schema at CRD creation; `field` is its path as the server reports
/// it: `spec.validation.openAPIV3Schema` when every version has the same schema (the server
/// converts such a CRD to its internal form with one top-level schema), else
/// `spec.versions[i].schema.openAPIV3Schema`.
pub fn check_schema(schema: &Value, field: &str) -> Vec<Cause> {
    use crate::cel_cost::{TOTAL_LIMIT, over_budget};
    let mut out = vec![];
    structural_problems(schema, field, "", &mut out);
    let mut costs = vec![];
    walk_rules(schema, field, 1.0, &mut out, &mut costs);
    let total: f64 = costs.iter().map(|c| c.cost).sum();
    if total > TOTAL_LIMIT {
        // The (at most four) costliest rules that carry at least 1% of the limit, then the total.
        costs.sort_by(|a, b| b.cost.total_cmp(&a.cost));
        for c in costs.iter().filter(|c| c.cost >= TOTAL_LIMIT / 100.0).take(4) {
            out.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".into(),
                field: c.field.clone(),
            });
        }
        let what = "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema";
        out.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {}", over_budget(what, total, TOTAL_LIMIT)),
            field: field.into(),
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
                // Declared on the object `pair` with a fieldPath: the value is not shown.
                one("FieldValueInvalid", "spec.pair.a", "Invalid value: a must be positive"),
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
        let rule = "spec.validation.openAPIV3Schema.properties[l].x-kubernetes-validations[0].rule";
        let kinds: Vec<(&str, &str)> = c.iter().map(|c| (c.field.as_str(), c.message.as_str())).collect();
        assert_eq!(kinds.len(), 3, "per rule, contributed, total: {kinds:?}");
        assert_eq!(kinds[0].0, rule);
        assert!(kinds[0].1.starts_with("Forbidden: estimated rule cost exceeds budget by factor of more than 100x"));
        assert_eq!(
            kinds[1],
            (
                rule,
                "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"
            )
        );
        assert_eq!(kinds[2].0, "spec.validation.openAPIV3Schema");
        assert!(kinds[2].1.starts_with("Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of"));
        assert!(check_schema(&widget(), "s").is_empty());
    }
}
