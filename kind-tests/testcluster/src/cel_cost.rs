//! The static cost of a CRD's CEL rules, estimated the way kube-apiserver does when the CRD is
//! created (`apiextensions-apiserver` `validation.go`, cel-go's cost checker), closely enough
//! for the same verdicts and the same kinds of causes:
//!
//! - a rule's cost is its expression's worst case times how often it may run (the product of
//!   the `maxItems` / `maxProperties` of the lists and maps above it);
//! - a list or map without a bound holds as many of its smallest items as fit in a 3 MiB
//!   request, a string without `maxLength` is as long as a whole request;
//! - a comprehension (`all`, `exists`, `map`, `filter`...) costs its body once per item, a
//!   string traversal (`contains`, `startsWith`, `matches`...) a tenth of the string's length,
//!   and `matches` also a quarter of the pattern's length, multiplied;
//! - limits: 10⁷ per rule, 10⁸ for the whole schema.
//!
//! Pure: no I/O. The figures can differ from a real server's in detail; the verdicts on our own
//! CRDs and on the K8S-FACTS example (`self.all(t, t.matches(...))` over 256 unbounded strings:
//! 4.8x the total) agree.

use cel::common::ast::{Expr, LiteralValue};
use serde_json::Value;

/// `StaticEstimatedCostLimit`: the most one rule may cost.
pub const PER_RULE_LIMIT: f64 = 1e7;
/// `StaticEstimatedCRDCostLimit`: the most all rules of a schema may cost together.
pub const TOTAL_LIMIT: f64 = 1e8;
/// The largest request body the server accepts (bounds what is not bounded in the schema).
const MAX_REQUEST: f64 = 3_145_728.0;

/// How many items of `schema` (a list or a map) fit at most.
pub fn cardinality(schema: &Value) -> f64 {
    if let Some(n) = schema["maxItems"].as_f64().or_else(|| schema["maxProperties"].as_f64()) {
        return n;
    }
    let item = if schema["type"] == "array" { &schema["items"] } else { &schema["additionalProperties"] };
    let smallest = match item["type"].as_str() {
        Some("string") => 2.0,
        Some("boolean") => 4.0,
        Some("integer" | "number") => 1.0,
        _ => 2.0,
    };
    ((MAX_REQUEST - 2.0) / (smallest + 1.0)).floor()
}

fn max_length(schema: &Value) -> f64 {
    schema["maxLength"].as_f64().unwrap_or(MAX_REQUEST - 2.0)
}

/// What the estimator knows of a name in scope: the schema it stands for.
struct Scope<'a> {
    vars: Vec<(String, &'a Value)>,
}

impl<'a> Scope<'a> {
    fn schema_of(&self, e: &Expr) -> Option<&'a Value> {
        match e {
            Expr::Ident(name) => self.vars.iter().rev().find(|(n, _)| n == name).map(|(_, s)| *s),
            Expr::Select(sel) => {
                let parent = self.schema_of(&sel.operand.expr)?;
                parent["properties"].get(&sel.field).or_else(|| parent.get("additionalProperties"))
            }
            _ => None,
        }
    }
}

const TRAVERSALS: [&str; 10] =
    ["contains", "startsWith", "endsWith", "matches", "find", "findAll", "replace", "split", "indexOf", "lastIndexOf"];

fn literal_len(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(LiteralValue::String(s)) => Some(s.len() as f64),
        _ => None,
    }
}

fn cost<'a>(e: &Expr, scope: &mut Scope<'a>) -> f64 {
    match e {
        Expr::Comprehension(c) => {
            let range = scope.schema_of(&c.iter_range.expr);
            let n = range.map_or(MAX_REQUEST, cardinality);
            let item = range.map(|r| if r["type"] == "array" { &r["items"] } else { &r["additionalProperties"] });
            let range_cost = cost(&c.iter_range.expr, scope);
            if let Some(item) = item {
                scope.vars.push((c.iter_var.clone(), item));
            }
            let body = cost(&c.loop_step.expr, scope) + cost(&c.loop_cond.expr, scope);
            if item.is_some() {
                scope.vars.pop();
            }
            range_cost + n * (1.0 + body)
        }
        Expr::Call(call) => {
            let target = call.target.as_ref().map_or(0.0, |t| cost(&t.expr, scope));
            let args: f64 = call.args.iter().map(|a| cost(&a.expr, scope)).sum();
            let mut own = 1.0;
            if TRAVERSALS.contains(&call.func_name.as_str()) {
                let subject = call.target.as_ref().map(|t| &t.expr).or_else(|| call.args.first().map(|a| &a.expr));
                let len = subject.and_then(|s| scope.schema_of(s)).map_or(MAX_REQUEST - 2.0, max_length);
                own = (len * 0.1).ceil().max(1.0);
                if call.func_name == "matches" {
                    own = ((len + 1.0) * 0.1).ceil();
                    let pattern = call.args.last().and_then(|p| literal_len(&p.expr)).unwrap_or(1.0);
                    own *= (pattern * 0.25).ceil().max(1.0);
                }
            }
            own + target + args
        }
        Expr::Select(sel) => 1.0 + cost(&sel.operand.expr, scope),
        Expr::List(list) => list.elements.iter().map(|x| cost(&x.expr, scope)).sum(),
        Expr::Ident(_) => 1.0,
        _ => 0.0,
    }
}

/// The worst-case cost of one evaluation of `rule` declared on `node`, or `None` when it does
/// not parse (compilation errors are reported on their own).
pub fn rule_cost(rule: &str, node: &Value) -> Option<f64> {
    let program = cel::Program::compile(rule).ok()?;
    let mut scope = Scope { vars: vec![("self".to_owned(), node), ("oldSelf".to_owned(), node)] };
    Some(cost(&program.expression().expr, &mut scope))
}

/// The text the server gives for a cost over `limit` (`getCostErrorMessage`).
pub fn over_budget(what: &str, cost: f64, limit: f64) -> String {
    let factor = cost / limit;
    let factor = if factor > 100.0 {
        "more than 100x".to_owned()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list_of(item: Value, max: Option<u64>) -> Value {
        let mut s = json!({"type": "array", "items": item});
        if let Some(m) = max {
            s["maxItems"] = json!(m);
        }
        s
    }

    #[test]
    fn the_k8s_facts_example_costs_what_the_server_said() {
        // 256 strings without maxLength, each matched against a host:port pattern: the real
        // server reported 4.8x the schema's total budget (cel-go: ceil((len+1) * 0.1) *
        // ceil(pattern * 0.25) per item; any pattern of 21 to 24 characters gives 4.8x).
        let targets = list_of(json!({"type": "string"}), Some(256));
        let c = rule_cost("self.all(t, t.matches('^[a-z0-9.-]+:[0-9]{1,5}$'))", &targets).expect("parses");
        assert_eq!(
            over_budget("x", c, TOTAL_LIMIT),
            "x exceeds budget by factor of 4.8x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        );
    }

    #[test]
    fn bounds_make_rules_cheap() {
        let bounded = list_of(json!({"type": "string", "maxLength": 253}), Some(256));
        let c = rule_cost("self.all(t, t.matches('^[a-z0-9.-]+:[0-9]+$'))", &bounded).expect("parses");
        assert!(c < PER_RULE_LIMIT / 10.0, "{c}");
        let scalar = json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}});
        assert!(rule_cost("self.a <= self.b", &scalar).expect("parses") < 10.0);
        let unbounded = list_of(json!({"type": "string"}), None);
        let c = rule_cost("self.all(x, self.all(y, x == y))", &unbounded).expect("parses");
        assert!(c > 100.0 * PER_RULE_LIMIT, "nested loops over unbounded lists: {c}");
        assert!(rule_cost("self.(", &scalar).is_none());
    }

    #[test]
    fn factors_are_written_as_the_server_writes_them() {
        assert!(over_budget("c", 1.2e7, 1e7).contains("factor of 1.200000x"));
        assert!(over_budget("c", 4.84e8, 1e8).contains("factor of 4.8x"));
        assert!(over_budget("c", 2e10, 1e7).contains("factor of more than 100x"));
    }
}
