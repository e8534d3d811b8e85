//! The JSONPath subset used by CRD printer columns: `.a.b`, `['a.b']`,
//! `[0]`, `[*]` and filters `[?(@.type=="Ready")]`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Field(String),
    Index(i64),
    All,
    Filter(Vec<String>, String),
}

fn parse(path: &str) -> Option<Vec<Seg>> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut segs = vec![];
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                segs.push(Seg::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                segs.push(Seg::All);
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (lhs, rhs) = f.split_once("==")?;
                let rhs = rhs.trim().trim_matches(['"', '\'']).to_string();
                segs.push(Seg::Filter(lhs.trim().split('.').map(String::from).collect(), rhs));
            } else if let Ok(i) = inner.parse() {
                segs.push(Seg::Index(i));
            } else {
                segs.push(Seg::Field(inner.trim_matches(['"', '\'']).to_string()));
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            segs.push(Seg::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    Some(segs)
}

fn scalar_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Evaluates `path` on `obj`; all matches, in order.
pub fn eval<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(segs) = parse(path) else {
        return vec![];
    };
    let mut cur = vec![obj];
    for seg in &segs {
        let mut next = vec![];
        for v in cur {
            match seg {
                Seg::Field(f) => next.extend(v.get(f.as_str())),
                Seg::Index(i) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        next.extend(usize::try_from(idx).ok().and_then(|i| a.get(i)));
                    }
                }
                Seg::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Seg::Filter(lhs, rhs) => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut x = item;
                        for f in lhs {
                            x = &x[f.as_str()];
                        }
                        if !x.is_null() && scalar_str(x) == *rhs {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn printer_column_paths() {
        let o = json!({"spec": {"replicas": 3, "items": [{"n": "a"}, {"n": "b"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]},
            "metadata": {"labels": {"app.kubernetes.io/name": "w"}}});
        assert_eq!(eval(&o, ".spec.replicas"), vec![&json!(3)]);
        assert_eq!(eval(&o, ".status.conditions[?(@.type==\"Ready\")].status"), vec![&json!("True")]);
        assert_eq!(eval(&o, ".spec.items[*].n").len(), 2);
        assert_eq!(eval(&o, ".spec.items[-1].n"), vec![&json!("b")]);
        assert_eq!(eval(&o, ".metadata.labels['app.kubernetes.io/name']"), vec![&json!("w")]);
        assert!(eval(&o, ".spec.missing").is_empty());
    }
}
