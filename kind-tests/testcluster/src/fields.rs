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

/// How a list merges (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// Replaced as a whole, owned as one field.
    Atomic,
    /// Scalars merged as a set (`v:` elements).
    Set,
    /// Objects merged by these keys (`k:` elements).
    Map(Vec<String>),
}

/// Tells how the list at a path merges.
pub trait ListTypes {
    /// The kind of the list at `path` (a path of `f:`/`k:`/`v:` elements).
    fn kind(&self, path: &[String], items: &[Value]) -> ListKind;
}

/// Built-in types: the merge keys of their Go struct tags we use.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinLists;

impl ListTypes for BuiltinLists {
    fn kind(&self, path: &[String], items: &[Value]) -> ListKind {
        let field = path.last().and_then(|l| l.strip_prefix("f:")).unwrap_or_default();
        if field == "finalizers" {
            return ListKind::Set;
        }
        match merge_key(field, items) {
            Some(k) => ListKind::Map(vec![k.to_string()]),
            None => ListKind::Atomic,
        }
    }
}

/// Custom resources: the CRD schema's `x-kubernetes-list-type` and
/// `x-kubernetes-list-map-keys` (metadata follows the built-in rules).
#[derive(Debug, Clone, Copy)]
pub struct SchemaLists<'a> {
    /// The version's openAPIV3Schema.
    pub root: &'a Value,
}

impl ListTypes for SchemaLists<'_> {
    fn kind(&self, path: &[String], items: &[Value]) -> ListKind {
        if path.first().map(String::as_str) == Some("f:metadata") {
            return BuiltinLists.kind(path, items);
        }
        let mut s = self.root;
        for el in path {
            let next = match el.strip_prefix("f:") {
                Some(f) => s["properties"].get(f).or_else(|| s.get("additionalProperties").filter(|a| a.is_object())),
                None => s.get("items"),
            };
            match next {
                Some(n) => s = n,
                None => return ListKind::Atomic,
            }
        }
        match s["x-kubernetes-list-type"].as_str() {
            Some("set") => ListKind::Set,
            Some("map") => ListKind::Map(
                s["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect(),
            ),
            _ => ListKind::Atomic,
        }
    }
}

const OWNABLE_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// The owned paths of an object (or applied configuration).
pub fn fields_of(obj: &Value, scope: Scope, lists: &dyn ListTypes) -> FieldSet {
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
                    collect(mv, &mut prefix, &mut out, lists);
                    prefix.pop();
                }
            }
        } else {
            collect(v, &mut prefix, &mut out, lists);
        }
    }
    out
}

/// The `k:` element of a list item keyed by `keys`, if it has them all.
pub fn item_key(keys: &[String], item: &Value) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

fn collect(v: &Value, prefix: &mut Path, out: &mut FieldSet, lists: &dyn ListTypes) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                prefix.push(format!("f:{k}"));
                collect(c, prefix, out, lists);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match lists.kind(prefix, items) {
            ListKind::Set => {
                out.insert(prefix.clone());
                for i in items {
                    prefix.push(format!("v:{i}"));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            ListKind::Map(keys) if !keys.is_empty() && items.iter().all(|i| item_key(&keys, i).is_some()) => {
                for i in items {
                    let Some(k) = item_key(&keys, i) else {
                        continue;
                    };
                    prefix.push(k);
                    out.insert(prefix.clone());
                    collect_item(i, prefix, out, lists);
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

fn collect_item(item: &Value, prefix: &mut Path, out: &mut FieldSet, lists: &dyn ListTypes) {
    if let Some(m) = item.as_object() {
        for (k, c) in m {
            prefix.push(format!("f:{k}"));
            collect(c, prefix, out, lists);
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
        return items.iter().find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
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
            let idx = step(cur, el).and_then(|found| cur.as_array()?.iter().position(|i| std::ptr::eq(i, found)));
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
    let idx = step(cur, last).and_then(|found| cur.as_array()?.iter().position(|i| std::ptr::eq(i, found)));
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
        let set = fields_of(&obj, Scope::MainNoStatus, &BuiltinLists);
        assert!(set.contains(&p(&["f:metadata", "f:labels", "f:a"])));
        assert!(set.contains(&p(&["f:spec", "f:containers", "k:{\"name\":\"c\"}"])));
        assert!(set.contains(&p(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"])));
        assert!(set.contains(&p(&["f:spec", "f:args"])));
        assert!(!set.iter().any(|x| x[0] == "f:status"));
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."], json!({}));
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
