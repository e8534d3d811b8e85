//! Field sets, the model behind `managedFields` (`FieldsV1`): a set of paths
//! whose elements are `f:<field>`, `k:<key json>` (list item by merge key)
//! or `v:<value json>` (set item), as the real API server writes them.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::patch::merge_key;

/// One path into an object.
pub type Path = Vec<String>;
/// A set of owned paths.
pub type FieldSet = BTreeSet<Path>;

/// Which part of an object a write may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything but `status` (main endpoint of a resource with a status subresource).
    MainNoStatus,
    /// Everything (resources without a status subresource).
    All,
    /// Only `status` (the `/status` subresource).
    Status,
}

const OWNABLE_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// The owned paths of an object (or applied configuration).
pub fn fields_of(obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        let wanted = match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => false,
            ("metadata", Scope::Status) => false,
            ("metadata", _) => true,
            ("status", Scope::Status) => true,
            (_, Scope::Status) => false,
            ("status", Scope::MainNoStatus) => false,
            _ => true,
        };
        if !wanted {
            continue;
        }
        let mut prefix = vec![format!("f:{k}")];
        if k == "metadata" {
            for mk in OWNABLE_METADATA {
                if let Some(mv) = v.get(mk) {
                    prefix.push(format!("f:{mk}"));
                    collect(mv, mk, &mut prefix, &mut out);
                    prefix.pop();
                }
            }
        } else {
            collect(v, k, &mut prefix, &mut out);
        }
    }
    out
}

/// The `k:` element of a keyed list item, if it has the key.
fn item_key(key: &str, item: &Value) -> Option<String> {
    let kv = item.get(key)?;
    Some(format!("k:{}", json!({ key: kv })))
}

fn collect(v: &Value, field: &str, prefix: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                prefix.push(format!("f:{k}"));
                collect(c, k, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if field == "finalizers" => {
            out.insert(prefix.clone());
            for i in items {
                prefix.push(format!("v:{i}"));
                out.insert(prefix.clone());
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match merge_key(field, items) {
            Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                for i in items {
                    let Some(k) = item_key(key, i) else { continue };
                    prefix.push(k);
                    out.insert(prefix.clone());
                    collect_item(i, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn collect_item(item: &Value, prefix: &mut Path, out: &mut FieldSet) {
    if let Some(m) = item.as_object() {
        for (k, c) in m {
            prefix.push(format!("f:{k}"));
            collect(c, k, prefix, out);
            prefix.pop();
        }
    }
}

/// The value at a path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    let v: Value = serde_json::from_str(el.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == v)
}

/// Removes the value at a path (no-op if absent).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parent_path {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            let idx = step(cur, el)
                .and_then(|found| cur.as_array()?.iter().position(|i| std::ptr::eq(i, found)));
            match idx {
                Some(i) => cur.get_mut(i),
                None => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
        return;
    }
    let idx = step(cur, last)
        .and_then(|found| cur.as_array()?.iter().position(|i| std::ptr::eq(i, found)));
    if let (Some(i), Some(a)) = (idx, cur.as_array_mut()) {
        a.remove(i);
    }
}

/// Encodes a field set as `FieldsV1`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for el in path {
            let entry = node.entry(el.clone()).or_insert_with(|| json!({}));
            let Some(m) = entry.as_object_mut() else {
                break;
            };
            node = m;
        }
    }
    // A node that is owned itself and has children gets a "." entry.
    fn mark(node: &mut Map<String, Value>, prefix: &mut Path, set: &FieldSet) {
        for (k, v) in node.iter_mut() {
            prefix.push(k.clone());
            if let Some(m) = v.as_object_mut()
                && !m.is_empty()
            {
                mark(m, prefix, set);
                if set.contains(prefix) {
                    m.insert(".".into(), json!({}));
                }
            }
            prefix.pop();
        }
    }
    mark(&mut root, &mut vec![], set);
    Value::Object(root)
}

/// Decodes `FieldsV1`.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, c) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            prefix.push(k.clone());
            walk(c, prefix, out);
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut vec![], &mut out);
    out.remove(&Vec::new());
    out
}

/// Paths rendered for conflict messages: `.spec.replicas`, `.spec.containers[name="a"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Path {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fields_of_pod_like_object() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "x", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "args": ["x"]},
            "status": {"phase": "Running"}});
        let set = fields_of(&obj, Scope::MainNoStatus);
        assert!(set.contains(&p(&["f:metadata", "f:labels", "f:a"])));
        assert!(set.contains(&p(&["f:spec", "f:containers", "k:{\"name\":\"c\"}"])));
        assert!(set.contains(&p(&[
            "f:spec",
            "f:containers",
            "k:{\"name\":\"c\"}",
            "f:image"
        ])));
        assert!(set.contains(&p(&["f:spec", "f:args"])));
        assert!(!set.iter().any(|x| x[0] == "f:status"));
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."],
            json!({})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn value_and_removal_by_key() {
        let mut obj = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
        let path = p(&["f:spec", "f:containers", "k:{\"name\":\"b\"}", "f:image"]);
        assert_eq!(value_at(&obj, &path), Some(&json!("2")));
        remove_at(&mut obj, &path);
        assert_eq!(obj["spec"]["containers"][1], json!({"name": "b"}));
        remove_at(&mut obj, &path[..3]);
        assert_eq!(obj["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(display_path(&path), ".spec.containers[name=\"b\"].image");
    }
}
