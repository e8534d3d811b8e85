//! DELETE semantics: preconditions, finalizers and `deletionTimestamp`,
//! propagation policies (as garbage-collector finalizers), graceful pod
//! deletion for pods bound to a node, namespaces that go Terminating.

use serde_json::{Value, json};

use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::{Ctx, Reply, State};
use crate::status::{ApiError, ApiResult};
use crate::store::Write;

/// Finalizer of a CRD whose instances are being removed.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// Finalizer of an object waiting for its dependents (foreground deletion).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer of an object whose dependents must be orphaned.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// `DeleteOptions` from the query and/or body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    /// `Foreground`, `Background` or `Orphan`.
    pub propagation: Option<String>,
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun: ["All"]` in the body (the query parameter is in the context).
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Merges a `DeleteOptions` body over query values.
    pub fn from_parts(query: &std::collections::HashMap<String, String>, body: &[u8]) -> ApiResult<Self> {
        let mut o = DeleteOptions {
            propagation: query.get("propagationPolicy").cloned(),
            grace: query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()),
            ..Default::default()
        };
        if body.iter().any(|b| !b.is_ascii_whitespace()) {
            let v: Value = if body.starts_with(b"k8s\x00") {
                crate::protobuf::decode_body(body)?
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
            };
            if let Some(p) = v["propagationPolicy"].as_str() {
                o.propagation = Some(p.into());
            }
            if v["orphanDependents"].as_bool() == Some(true) {
                o.propagation = Some("Orphan".into());
            }
            if let Some(g) = v["gracePeriodSeconds"].as_i64() {
                o.grace = Some(g);
            }
            o.dry_run = v["dryRun"].as_array().is_some_and(|d| d.iter().any(|x| x == "All"));
            o.uid = v["preconditions"]["uid"].as_str().map(String::from);
            o.resource_version = v["preconditions"]["resourceVersion"].as_str().map(String::from);
        }
        Ok(o)
    }
}

fn finalizers(obj: &Value) -> Vec<Value> {
    obj["metadata"]["finalizers"].as_array().cloned().unwrap_or_default()
}

/// Whether a pod is waiting for its node's agent to confirm termination.
fn pod_waits_for_node(info: &ResourceInfo, obj: &Value) -> bool {
    info.group.is_empty()
        && info.plural == "pods"
        && obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
        && obj["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) > 0
}

/// Whether an object marked for deletion can now be removed.
pub fn deletion_complete(info: &ResourceInfo, obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
        && finalizers(obj).is_empty()
        && !pod_waits_for_node(info, obj)
        && !(info.plural == "namespaces" && obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()))
}

fn check_preconditions(info: &ResourceInfo, name: &str, obj: &Value, o: &DeleteOptions) -> ApiResult<()> {
    if let Some(uid) = &o.uid {
        let have = obj["metadata"]["uid"].as_str().unwrap_or_default();
        if have != uid {
            let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}");
            return Err(ApiError::conflict(info, name, &why));
        }
    }
    if let Some(rv) = &o.resource_version {
        let have = obj["metadata"]["resourceVersion"].as_str().unwrap_or_default();
        if have != rv {
            let why = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
            );
            return Err(ApiError::conflict(info, name, &why));
        }
    }
    Ok(())
}

fn timestamp_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Decides what a DELETE does to `old`: remove it, or mark it.
pub fn decide(info: &ResourceInfo, old: &Value, o: &DeleteOptions) -> Write {
    let mut obj = old.clone();
    let terminating = obj["metadata"]["deletionTimestamp"].is_string();
    if info.group.is_empty() && info.plural == "namespaces" {
        if terminating {
            return Write::Keep;
        }
        obj["metadata"]["deletionTimestamp"] = json!(timestamp_in(0));
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        obj["status"]["phase"] = json!("Terminating");
        return Write::Put(obj);
    }
    let mut fins = finalizers(&obj);
    let gc = match o.propagation.as_deref() {
        Some("Foreground") => Some(FOREGROUND_FINALIZER),
        Some("Orphan") => Some(ORPHAN_FINALIZER),
        _ => None,
    };
    if let Some(f) = gc
        && !fins.contains(&json!(f))
    {
        fins.push(json!(f));
        obj["metadata"]["finalizers"] = Value::Array(fins.clone());
    }
    let on_node = info.group.is_empty()
        && info.plural == "pods"
        && obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    if on_node {
        let grace = o.grace.or(obj["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30).max(0);
        let current = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
        if grace > 0 && current.is_none_or(|c| c > grace) {
            obj["metadata"]["deletionTimestamp"] = json!(timestamp_in(grace));
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            return Write::Put(obj);
        }
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    }
    if fins.is_empty() {
        return Write::Delete;
    }
    if !terminating {
        obj["metadata"]["deletionTimestamp"] = json!(timestamp_in(0));
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    }
    if obj == *old { Write::Keep } else { Write::Put(obj) }
}

impl State {
    /// DELETE of one object.
    pub fn delete(&self, info: &ResourceInfo, ns: &str, name: &str, o: &DeleteOptions, ctx: &Ctx) -> ApiResult<Reply> {
        let dry = ctx.dry_run || o.dry_run;
        let (out, gone) = self.store.mutate(&info.key(), ns, name, |cur| {
            let old = cur.ok_or_else(|| ApiError::not_found(info, name))?;
            check_preconditions(info, name, old, o)?;
            let w = decide(info, old, o);
            let gone = matches!(w, Write::Delete);
            if dry {
                let preview = match w {
                    Write::Put(v) => Some(v),
                    _ => None,
                };
                return Ok((Write::Keep, (gone, preview)));
            }
            Ok((w, (gone, None)))
        })?;
        let (gone, preview) = gone;
        let body = preview.or_else(|| out.map(|v| (*v).clone())).unwrap_or(Value::Null);
        if gone && !dry && info.plural == "customresourcedefinitions" {
            self.registry.remove_crd(name);
        }
        Ok(Reply { body, code: if gone { 200 } else { 202 }, warnings: vec![] })
    }

    /// DELETE of a collection (selectors apply).
    pub fn delete_collection(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        o: &DeleteOptions,
        ctx: &Ctx,
    ) -> ApiResult<Reply> {
        let (items, _) = self.store.list(&info.key(), ns, None);
        let mut deleted = vec![];
        for item in items.iter().filter(|i| labels.matches(i) && fields.matches(i)) {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let ins = item["metadata"]["namespace"].as_str().unwrap_or_default();
            match self.delete(info, ins, name, o, ctx) {
                Ok(r) => deleted.push(crate::state::as_version(&r.body, info)),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let body = json!({"apiVersion": info.api_version(), "kind": format!("{}List", info.kind),
            "metadata": {"resourceVersion": self.store.current_rv().to_string()}, "items": deleted});
        Ok(Reply::ok(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin;

    fn info(plural: &str) -> ResourceInfo {
        builtin().into_iter().find(|r| r.plural == plural && r.group.is_empty()).unwrap()
    }

    #[test]
    fn finalizers_keep_the_object() {
        let cm = info("configmaps");
        let obj = json!({"metadata": {"name": "a", "finalizers": ["x"]}});
        let Write::Put(marked) = decide(&cm, &obj, &DeleteOptions::default()) else { panic!() };
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert!(matches!(decide(&cm, &marked, &DeleteOptions::default()), Write::Keep));
        assert!(matches!(decide(&cm, &json!({"metadata": {}}), &DeleteOptions::default()), Write::Delete));
    }

    #[test]
    fn pods_on_a_node_wait_for_grace_zero() {
        let pods = info("pods");
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "terminationGracePeriodSeconds": 30}});
        let Write::Put(marked) = decide(&pods, &pod, &DeleteOptions::default()) else { panic!() };
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        assert!(!deletion_complete(&pods, &marked));
        let now = DeleteOptions { grace: Some(0), ..Default::default() };
        assert!(matches!(decide(&pods, &marked, &now), Write::Delete));
    }

    #[test]
    fn propagation_adds_gc_finalizers_and_namespaces_terminate() {
        let cm = info("configmaps");
        let fg = DeleteOptions { propagation: Some("Foreground".into()), ..Default::default() };
        let Write::Put(m) = decide(&cm, &json!({"metadata": {}}), &fg) else { panic!() };
        assert_eq!(m["metadata"]["finalizers"], json!([FOREGROUND_FINALIZER]));
        let Write::Put(ns) =
            decide(&info("namespaces"), &json!({"metadata": {}, "spec": {"finalizers": ["kubernetes"]}}), &fg)
        else {
            panic!()
        };
        assert_eq!(ns["status"]["phase"], "Terminating");
        assert!(!deletion_complete(&info("namespaces"), &ns));
    }
}
