//! The controllers a real control plane runs that our semantics depend
//! on: the garbage collector (owner references; foreground and orphan
//! finalizers), the namespace controller (Terminating namespaces are
//! emptied, then removed) and CRD cleanup (instances removed before the
//! CRD goes).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::auth::UserInfo;
use crate::delete::{CRD_CLEANUP_FINALIZER, DeleteOptions, FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use crate::resources::{ResKey, ResourceInfo};
use crate::state::{Ctx, Shared, State};
use crate::store::{Event, EventType};

/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

fn system_ctx() -> Ctx {
    Ctx { user: UserInfo::admin(), manager: "kube-controller-manager".into(), ..Default::default() }
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj["metadata"]["finalizers"].as_array().is_some_and(|a| a.iter().any(|x| x == f))
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(String::from))
        .collect()
}

impl State {
    fn info_of(&self, key: &ResKey) -> Option<Arc<ResourceInfo>> {
        self.registry.versions_of(key).into_iter().next()
    }

    fn delete_quietly(&self, key: &ResKey, obj: &Value) {
        let Some(info) = self.info_of(key) else {
            return;
        };
        let (ns, name) = (crate::state::ns_of(obj), crate::state::name_of(obj));
        if let Err(e) = self.delete(&info, ns, name, &DeleteOptions::default(), &system_ctx())
            && e.code != 404
        {
            tracing::debug!(%name, error = %e, "controller delete failed; will retry");
        }
    }

    /// Rewrites an object's metadata field through a normal update (so the
    /// usual completion of pending deletions applies).
    fn rewrite(&self, key: &ResKey, obj: &Value, edit: impl FnOnce(&mut Value)) {
        let Some(info) = self.info_of(key) else {
            return;
        };
        let mut new = obj.clone();
        edit(&mut new);
        let (ns, name) = (crate::state::ns_of(obj), crate::state::name_of(obj));
        if let Err(e) = self.update(&info, ns, name, new, &system_ctx(), "") {
            tracing::debug!(%name, error = %e, "controller update failed; will retry");
        }
    }

    fn remove_finalizer(&self, key: &ResKey, obj: &Value, f: &str) {
        self.rewrite(key, obj, |o| {
            if let Some(a) = o["metadata"]["finalizers"].as_array_mut() {
                a.retain(|x| x != f);
            }
        });
    }

    /// One pass of every controller. Returns whether anything was changed.
    pub fn reconcile(&self) -> bool {
        let before = self.store.current_rv();
        let all = self.store.all();
        self.seed_namespaces(&all);
        let ns_key = ResKey { group: String::new(), plural: "namespaces".into() };
        let crd_key = ResKey { group: "apiextensions.k8s.io".into(), plural: "customresourcedefinitions".into() };
        for (key, obj) in &all {
            let deleting = obj["metadata"]["deletionTimestamp"].is_string();
            let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
            if deleting && *key == ns_key {
                self.empty_namespace(&all, key, obj);
            } else if deleting && *key == crd_key && has_finalizer(obj, CRD_CLEANUP_FINALIZER) {
                self.clean_crd(key, obj);
            }
            if deleting && has_finalizer(obj, FOREGROUND_FINALIZER) {
                let deps: Vec<_> = all.iter().filter(|(_, d)| owner_uids(d).iter().any(|u| u == uid)).collect();
                for (dk, d) in &deps {
                    self.delete_quietly(dk, d);
                }
                if deps.is_empty() {
                    self.remove_finalizer(key, obj, FOREGROUND_FINALIZER);
                }
            }
            if deleting && has_finalizer(obj, ORPHAN_FINALIZER) {
                for (dk, d) in all.iter().filter(|(_, d)| owner_uids(d).iter().any(|u| u == uid)) {
                    self.rewrite(dk, d, |o| {
                        if let Some(a) = o["metadata"]["ownerReferences"].as_array_mut() {
                            a.retain(|r| r["uid"] != uid);
                        }
                    });
                }
                if let Some(fresh) = self.store.get(key, crate::state::ns_of(obj), crate::state::name_of(obj)) {
                    self.remove_finalizer(key, &fresh, ORPHAN_FINALIZER);
                }
            }
            let owners = owner_uids(obj);
            if !deleting && !owners.is_empty() && owners.iter().all(|u| self.store.locate_uid(u).is_none()) {
                self.delete_quietly(key, obj);
            }
        }
        self.store.current_rv() != before
    }

    /// What the service-account and root-CA publisher controllers create
    /// in every active namespace: the `default` ServiceAccount and the
    /// `kube-root-ca.crt` ConfigMap.
    fn seed_namespaces(&self, all: &[(ResKey, Arc<Value>)]) {
        let seeds = [
            ("serviceaccounts", "ServiceAccount", "default", json!({})),
            ("configmaps", "ConfigMap", ROOT_CA_CONFIGMAP, json!({"data": {"ca.crt": self.ca_pem}})),
        ];
        for (_, ns) in all.iter().filter(|(k, _)| k.group.is_empty() && k.plural == "namespaces") {
            if ns["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            let ns_name = crate::state::name_of(ns);
            for (plural, kind, name, extra) in &seeds {
                let Some(info) = self.registry.lookup("", "v1", plural) else {
                    continue;
                };
                if self.store.get(&info.key(), ns_name, name).is_some() {
                    continue;
                }
                let mut body =
                    json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": ns_name}});
                if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                    b.extend(e.clone());
                }
                if let Err(e) = self.create(&info, ns_name, body, &system_ctx())
                    && e.code != 409
                {
                    tracing::debug!(namespace = ns_name, %name, error = %e, "seeding namespace failed; will retry");
                }
            }
        }
    }

    fn empty_namespace(&self, all: &[(ResKey, Arc<Value>)], key: &ResKey, ns_obj: &Value) {
        let ns = crate::state::name_of(ns_obj);
        let content: Vec<_> = all.iter().filter(|(k, o)| k != key && crate::state::ns_of(o) == ns).collect();
        for (k, o) in &content {
            if !o["metadata"]["deletionTimestamp"].is_string() {
                self.delete_quietly(k, o);
            }
        }
        if content.is_empty() && ns_obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) {
            self.rewrite(key, ns_obj, |o| o["spec"]["finalizers"] = json!([]));
        }
    }

    fn clean_crd(&self, key: &ResKey, crd: &Value) {
        let name = crate::state::name_of(crd);
        let Some((plural, group)) = name.split_once('.') else {
            return;
        };
        let ck = ResKey { group: group.into(), plural: plural.into() };
        let (items, _) = self.store.list(&ck, None, None);
        for o in &items {
            if !o["metadata"]["deletionTimestamp"].is_string() {
                self.delete_quietly(&ck, o);
            }
        }
        if items.is_empty() {
            self.remove_finalizer(key, crd, CRD_CLEANUP_FINALIZER);
            if self.store.get(key, "", name).is_none() {
                self.registry.remove_crd(name);
            }
        }
    }
}

/// Whether a change can give the controllers work: deletions (dependents,
/// namespaces, CRDs), objects being deleted or with owners, new namespaces.
fn relevant(e: &Event) -> bool {
    let meta = &e.object["metadata"];
    e.etype == EventType::Deleted
        || meta["deletionTimestamp"].is_string()
        || meta["ownerReferences"].is_array()
        || (e.key.group.is_empty() && e.key.plural == "namespaces")
}

/// Runs the controllers until `stop` turns true: soon after relevant
/// changes (batched) and every `period` (a full pass as a safety net).
pub async fn run(state: Shared, mut stop: watch::Receiver<bool>, period: Duration) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = state.store.subscribe();
    let mut next_full = tokio::time::Instant::now() + period;
    loop {
        let work = tokio::select! {
            _ = stop.changed() => return,
            r = events.recv() => match r {
                Ok(e) => relevant(&e),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(next_full) => true,
        };
        if !work {
            continue;
        }
        // Let a burst of related writes land, then drop what is queued: the
        // pass below looks at the whole store anyway.
        tokio::time::sleep(Duration::from_millis(20)).await;
        events = events.resubscribe();
        next_full = tokio::time::Instant::now() + period;
        // Converge: a pass may enable the next (namespace emptied -> removed).
        for _ in 0..8 {
            if !state.reconcile() {
                break;
            }
        }
    }
}
