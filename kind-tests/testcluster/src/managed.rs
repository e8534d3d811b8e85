//! Server-side apply and `managedFields` bookkeeping.
//!
//! Each manager owns a set of fields per operation (`Apply` or `Update`).
//! An apply merges the applied configuration into the live object, removes
//! the fields its manager owned before and no longer applies (unless
//! another manager owns them too), and fails with a conflict when it sets a
//! field another manager owns to a different value, unless forced.

use serde_json::{Value, json};

use crate::fields::{
    FieldSet, ListKind, ListTypes, Path, Scope, display_path, fields_of, from_fields_v1, item_key, remove_at,
    to_fields_v1, value_at,
};

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the fields were written with.
    pub api_version: String,
    /// Last write time.
    pub time: String,
    /// `status` for the status subresource, "" otherwise.
    pub subresource: String,
    /// Owned fields.
    pub set: FieldSet,
}

/// Reads `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().into(),
            operation: e["operation"].as_str().unwrap_or("Update").into(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
            time: e["time"].as_str().unwrap_or_default().into(),
            subresource: e["subresource"].as_str().unwrap_or_default().into(),
            set: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// Writes `metadata.managedFields` (entries with no fields are dropped).
pub fn set_entries(obj: &mut Value, list: &[Entry]) {
    let v: Vec<Value> = list
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.set)});
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if v.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(v);
    }
}

/// Who is writing.
#[derive(Clone)]
pub struct Writer<'a> {
    /// Field manager.
    pub manager: &'a str,
    /// `status` or "".
    pub subresource: &'a str,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// Scope of fields this write can own.
    pub scope: Scope,
    /// Timestamp for the entry.
    pub now: &'a str,
    /// How lists of this resource merge.
    pub lists: &'a dyn ListTypes,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("manager", &self.manager).field("subresource", &self.subresource).finish()
    }
}

/// A field owned by another manager that an apply would change.
pub type Conflict = (String, String);

/// Merges an applied configuration into `base`: maps recursively, `map`
/// lists by their keys, `set` lists as sets, atomic lists replaced.
pub fn merge_applied(base: &Value, applied: &Value, path: &mut Path, lists: &dyn ListTypes) -> Value {
    match (base, applied) {
        (Value::Object(b), Value::Object(a)) => {
            let mut out = b.clone();
            for (k, v) in a {
                path.push(format!("f:{k}"));
                let merged = match out.get(k) {
                    Some(cur) => merge_applied(cur, v, path, lists),
                    None => v.clone(),
                };
                path.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(b), Value::Array(a)) => match lists.kind(path, a) {
            ListKind::Set => {
                let mut out = b.clone();
                out.extend(a.iter().filter(|x| !b.contains(x)).cloned());
                Value::Array(out)
            }
            ListKind::Map(keys) if !keys.is_empty() => {
                let mut out = b.clone();
                for item in a {
                    let Some(k) = item_key(&keys, item) else {
                        out.push(item.clone());
                        continue;
                    };
                    path.push(k.clone());
                    match out.iter().position(|x| item_key(&keys, x).as_ref() == Some(&k)) {
                        Some(i) => out[i] = merge_applied(&out[i], item, path, lists),
                        None => out.push(item.clone()),
                    }
                    path.pop();
                }
                Value::Array(out)
            }
            _ => applied.clone(),
        },
        _ => applied.clone(),
    }
}

/// Server-side apply of `applied` onto `current` (an empty object for a
/// create). Returns the new object with its managedFields, or the conflicts.
pub fn apply(current: &Value, applied: &Value, w: &Writer<'_>, force: bool) -> Result<Value, Vec<Conflict>> {
    let mut list = entries(current);
    let new_set = fields_of(applied, w.scope, w.lists);
    let is_mine = |e: &Entry| e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource;
    let mut conflicts = vec![];
    for e in list.iter_mut().filter(|e| !is_mine(e)) {
        let clashing: Vec<Path> = e
            .set
            .intersection(&new_set)
            .filter(|p| p.last().is_some_and(|l| l.starts_with("f:")))
            .filter(|p| value_at(current, p).is_some_and(|cur| Some(cur) != value_at(applied, p)))
            .cloned()
            .collect();
        if force {
            for p in &clashing {
                e.set.remove(p);
            }
        } else {
            conflicts.extend(clashing.iter().map(|p| (e.manager.clone(), display_path(p))));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let old_set = list.iter().find(|e| is_mine(e)).map(|e| e.set.clone()).unwrap_or_default();
    let mut merged = merge_applied(current, applied, &mut vec![], w.lists);
    let others: FieldSet = list.iter().filter(|e| !is_mine(e)).flat_map(|e| e.set.iter().cloned()).collect();
    let mut removed: Vec<&Path> = old_set
        .difference(&new_set)
        .filter(|p| !others.contains(*p) && !others.iter().any(|o| o.starts_with(p)))
        .collect();
    // Remove the shallowest paths only: removing a keyed item's fields
    // first would make the item unfindable by its key.
    removed.sort_by_key(|p| p.len());
    let mut done: Vec<&Path> = vec![];
    for p in removed {
        if done.iter().any(|d| p.starts_with(d)) {
            continue;
        }
        remove_at(&mut merged, p);
        done.push(p);
    }
    list.retain(|e| !is_mine(e));
    list.push(Entry {
        manager: w.manager.into(),
        operation: "Apply".into(),
        api_version: w.api_version.into(),
        time: w.now.into(),
        subresource: w.subresource.into(),
        set: new_set,
    });
    set_entries(&mut merged, &list);
    Ok(merged)
}

/// Records a non-apply write: fields that changed (or appeared) become the
/// writer's (`Update`), other managers lose them, and fields gone from the
/// object are dropped from every manager.
pub fn track_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut list = old.map(entries).unwrap_or_default();
    let now_set = fields_of(new, w.scope, w.lists);
    let changed: FieldSet =
        now_set.iter().filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p))).cloned().collect();
    let all_now = fields_of(new, Scope::All, w.lists);
    for e in list.iter_mut() {
        e.set.retain(|p| all_now.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        let idx = list
            .iter()
            .position(|e| e.manager == w.manager && e.operation == "Update" && e.subresource == w.subresource);
        let entry = match idx {
            Some(i) => &mut list[i],
            None => {
                list.push(Entry {
                    manager: w.manager.into(),
                    operation: "Update".into(),
                    api_version: w.api_version.into(),
                    time: String::new(),
                    subresource: w.subresource.into(),
                    set: FieldSet::new(),
                });
                let last = list.len() - 1;
                &mut list[last]
            }
        };
        entry.set.extend(changed);
        entry.time = w.now.into();
        entry.api_version = w.api_version.into();
    }
    set_entries(new, &list);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(m: &str) -> Writer<'_> {
        Writer {
            manager: m,
            subresource: "",
            api_version: "v1",
            scope: Scope::All,
            lists: &crate::fields::BuiltinLists,
            now: "t",
        }
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    #[test]
    fn apply_removes_dropped_fields() {
        let one = apply(&json!({}), &cm(json!({"a": "1", "b": "2"})), &w("m"), false).unwrap();
        let two = apply(&one, &cm(json!({"a": "1"})), &w("m"), false).unwrap();
        assert_eq!(two["data"], json!({"a": "1"}));
        assert_eq!(two["metadata"]["managedFields"][0]["manager"], "m");
    }

    #[test]
    fn apply_conflicts_name_the_other_manager() {
        let one = apply(&json!({}), &cm(json!({"a": "1"})), &w("m1"), false).unwrap();
        let err = apply(&one, &cm(json!({"a": "2"})), &w("m2"), false).unwrap_err();
        assert_eq!(err, vec![("m1".to_string(), ".data.a".to_string())]);
        // Same value: shared ownership, no conflict.
        let shared = apply(&one, &cm(json!({"a": "1"})), &w("m2"), false).unwrap();
        // m1 drops it, m2 still owns it: the field stays.
        let kept = apply(&shared, &cm(json!({})), &w("m1"), false).unwrap();
        assert_eq!(kept["data"]["a"], "1");
        let forced = apply(&one, &cm(json!({"a": "2"})), &w("m2"), true).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        assert_eq!(entries(&forced).len(), 1);
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let one = apply(&json!({}), &cm(json!({"a": "1"})), &w("m1"), false).unwrap();
        let mut two = one.clone();
        two["data"]["a"] = json!("2");
        track_update(Some(&one), &mut two, &w("editor"));
        let es = entries(&two);
        assert_eq!(es.len(), 1);
        assert_eq!(es[0].manager, "editor");
        let err = apply(&two, &cm(json!({"a": "3"})), &w("m1"), false).unwrap_err();
        assert_eq!(err[0].0, "editor");
    }

    #[test]
    fn crd_map_lists_merge_by_key_per_manager() {
        use crate::fields::SchemaLists;
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}},
            "tags": {"type": "array", "items": {"type": "string"}}}}}});
        let lists = SchemaLists { root: &schema };
        let wr = |m: &'static str| Writer {
            manager: m,
            subresource: "",
            api_version: "v1",
            scope: Scope::All,
            now: "t",
            lists: &lists,
        };
        let obj = |items: Value| json!({"apiVersion": "example.com/v1", "kind": "W", "metadata": {"name": "w"}, "spec": {"items": items}});
        let a = apply(&json!({}), &obj(json!([{"name": "a", "v": 1}])), &wr("ma"), false).unwrap();
        let ab = apply(&a, &obj(json!([{"name": "b", "v": 2}])), &wr("mb"), false).unwrap();
        assert_eq!(ab["spec"]["items"], json!([{"name": "a", "v": 1}, {"name": "b", "v": 2}]));
        let b_only = apply(&ab, &obj(json!([])), &wr("ma"), false).unwrap();
        assert_eq!(b_only["spec"]["items"], json!([{"name": "b", "v": 2}]));
        // Atomic lists are replaced and owned whole.
        let t =
            json!({"apiVersion": "example.com/v1", "kind": "W", "metadata": {"name": "w"}, "spec": {"tags": ["x"]}});
        let t1 = apply(&json!({}), &t, &wr("ma"), false).unwrap();
        let mut t2 = t.clone();
        t2["spec"]["tags"] = json!(["y"]);
        assert_eq!(apply(&t1, &t2, &wr("mb"), false).unwrap_err()[0], ("ma".to_string(), ".spec.tags".to_string()));
    }
}
