//! Write operations (create, update, patch, apply) with the real API
//! server's metadata, status-subresource, generation, finalizer and
//! managedFields semantics. Pure logic over the [`State`]; no HTTP here.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission::{self, Request};
use crate::fields::{BuiltinLists, ListTypes, SchemaLists, Scope};
use crate::managed::{self, Writer};
use crate::patch::{PatchType, json_patch, merge_patch, strategic_merge};
use crate::resources::{self, ResourceInfo};
use crate::state::{Ctx, Reply, State, name_suffix, new_uid, now_rfc3339};
use crate::status::{ApiError, ApiResult, Cause};
use crate::store::Write;

/// Metadata fields clients cannot change after creation.
const SYSTEM_META: [&str; 5] =
    ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"];

fn scope(info: &ResourceInfo, subresource: &str) -> Scope {
    match (subresource, info.status_subresource) {
        ("status", _) => Scope::Status,
        (_, true) => Scope::MainNoStatus,
        (_, false) => Scope::All,
    }
}

fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

/// How lists merge for `info`: its CRD schema, or the built-in rules.
fn lists_of(info: &ResourceInfo) -> Box<dyn ListTypes + '_> {
    match (&info.crd, &info.schema) {
        (Some(_), Some(root)) => Box::new(SchemaLists { root }),
        _ => Box::new(BuiltinLists),
    }
}

fn check_type(info: &ResourceInfo, body: &Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body of the request was not a JSON object"));
    }
    if let Some(av) = body["apiVersion"].as_str()
        && av != info.api_version()
        && !av.is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            info.api_version()
        )));
    }
    if let Some(k) = body["kind"].as_str()
        && k != info.kind
        && !k.is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            info.kind
        )));
    }
    Ok(())
}

impl State {
    /// Checks that a namespace exists and accepts new content.
    fn check_namespace(&self, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<()> {
        if !info.namespaced {
            return Ok(());
        }
        let ns_info = self
            .registry
            .lookup("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces not registered"))?;
        let Some(nso) = self.store.get(&ns_info.key(), "", ns) else {
            return Err(ApiError::not_found(&ns_info, ns));
        };
        if nso["metadata"]["deletionTimestamp"].is_string() {
            return Err(ApiError::forbidden(
                info,
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            ));
        }
        Ok(())
    }

    /// Stores (or, in a dry run, only computes) a write; returns the object as stored.
    fn commit(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        ctx: &Ctx,
        decide: impl FnOnce(Option<&Arc<Value>>) -> ApiResult<Write>,
    ) -> ApiResult<Value> {
        let dry = ctx.dry_run;
        let (stored, preview) = self.store.mutate(&info.key(), ns, name, |cur| {
            let w = decide(cur)?;
            if dry {
                let preview = match w {
                    Write::Put(v) => Some(v),
                    Write::Delete | Write::Keep => cur.map(|c| (**c).clone()),
                };
                return Ok((Write::Keep, preview));
            }
            Ok((w, None))
        })?;
        if let Some(p) = preview {
            return Ok(p);
        }
        let out = stored.map(|s| (*s).clone()).unwrap_or(Value::Null);
        if info.plural == "customresourcedefinitions" && out.is_object() {
            // A write that completed the CRD's deletion unregisters it.
            match self.store.get(&info.key(), ns, name) {
                Some(current) => self.sync_crd(&current),
                None => self.registry.remove_crd(name),
            }
        }
        Ok(out)
    }

    /// (Re)registers the resources of a CRD that is not being deleted.
    pub fn sync_crd(&self, crd: &Value) {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        self.registry.remove_crd(name);
        for r in resources::from_crd(crd) {
            self.registry.add(r);
        }
    }

    /// Fills in server-set metadata and defaults of a new object.
    fn prepare_create(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: &mut Value,
        ctx: &Ctx,
        subresource_scope: Scope,
    ) -> ApiResult<Vec<String>> {
        let meta =
            obj["metadata"].as_object_mut().ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for f in SYSTEM_META {
            meta.remove(f);
        }
        meta.remove("resourceVersion");
        meta.remove("managedFields");
        if info.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if info.has_generation() {
            meta.insert("generation".into(), json!(1));
        }
        if info.status_subresource
            && info.crd.is_some()
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        crate::defaults::apply_defaults(info, obj);
        let warnings =
            admission::admit(&Request { info, old: None, subresource: "", validation: ctx.validation }, obj)?;
        crate::validation::validate_defaulted(info, obj)?;
        let w = Writer {
            manager: &ctx.manager,
            subresource: "",
            api_version: &info.api_version(),
            scope: subresource_scope,
            now: &now_rfc3339(),
            lists: &*lists_of(info),
        };
        managed::track_update(None, obj, &w);
        Ok(warnings)
    }

    /// POST: creates an object (`generateName` supported).
    pub fn create(&self, info: &ResourceInfo, ns: &str, mut body: Value, ctx: &Ctx) -> ApiResult<Reply> {
        check_type(info, &body)?;
        body = crate::convert::to_storage(info, body);
        let body_ns = body["metadata"]["namespace"].as_str().unwrap_or_default();
        if info.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if body["metadata"]["resourceVersion"].as_str().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        let mut name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty()
            && let Some(prefix) = body["metadata"]["generateName"].as_str()
        {
            name = format!("{prefix}{}", name_suffix());
            body["metadata"]["name"] = json!(name);
        }
        if name.is_empty() {
            let cause = Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            };
            return Err(ApiError::invalid(info, "", vec![cause]));
        }
        self.check_namespace(info, ns, &name)?;
        crate::validation::validate_create(info, &body)?;
        let warnings = self.prepare_create(info, ns, &mut body, ctx, scope(info, ""))?;
        let out = self.commit(info, ns, &name, ctx, |cur| match cur {
            Some(_) => Err(ApiError::already_exists(info, &name)),
            None => Ok(Write::Put(body)),
        })?;
        Ok(Reply { body: out, code: 201, warnings })
    }

    /// Carries system metadata over from `old`, applies status-subresource
    /// rules, runs admission, bumps generation, tracks managed fields and
    /// completes pending deletions. Returns what to store.
    fn finish_update(
        &self,
        info: &ResourceInfo,
        old: &Value,
        mut new: Value,
        ctx: &Ctx,
        subresource: &str,
        track: bool,
    ) -> ApiResult<(Write, Vec<String>)> {
        new = crate::convert::to_storage(info, new);
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        let name = old["metadata"]["name"].clone();
        let new_name = new["metadata"]["name"].as_str().unwrap_or_default();
        if !new_name.is_empty() && Some(new_name) != name.as_str() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({})",
                name.as_str().unwrap_or_default()
            )));
        }
        new["metadata"]["name"] = name;
        for f in SYSTEM_META.iter().chain(&["namespace"]) {
            match old["metadata"].get(*f) {
                Some(v) => new["metadata"][*f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(*f);
                    }
                }
            }
        }
        if subresource == "status" {
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            merged["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
            new = merged;
        } else if info.status_subresource {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        let warnings =
            admission::admit(&Request { info, old: Some(old), subresource, validation: ctx.validation }, &mut new)?;
        crate::validation::validate_update(info, old, &mut new, subresource)?;
        if info.has_generation() && spec_of(old) != spec_of(&new) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if track {
            let w = Writer {
                manager: &ctx.manager,
                subresource,
                api_version: &info.api_version(),
                scope: scope(info, subresource),
                now: &now_rfc3339(),
                lists: &*lists_of(info),
            };
            managed::track_update(Some(old), &mut new, &w);
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if crate::delete::deletion_complete(info, &new) {
            return Ok((Write::Delete, warnings));
        }
        if strip_times(&new) == strip_times(old) {
            return Ok((Write::Keep, warnings));
        }
        Ok((Write::Put(new), warnings))
    }

    /// PUT (main endpoint or `/status`).
    pub fn update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        body: Value,
        ctx: &Ctx,
        subresource: &str,
    ) -> ApiResult<Reply> {
        check_type(info, &body)?;
        let want_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
        let mut warnings = vec![];
        let out = self.commit(info, ns, name, ctx, |cur| {
            let old = cur.ok_or_else(|| ApiError::not_found(info, name))?;
            if !want_rv.is_empty() && old["metadata"]["resourceVersion"].as_str() != Some(want_rv.as_str()) {
                return Err(ApiError::modified(info, name));
            }
            let (w, warn) = self.finish_update(info, old, body, ctx, subresource, true)?;
            warnings = warn;
            Ok(w)
        })?;
        Ok(Reply { body: out, code: 200, warnings })
    }

    /// PATCH of any type, including server-side apply (which may create).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &[u8],
        ctx: &Ctx,
        subresource: &str,
    ) -> ApiResult<Reply> {
        let patch: Value = if ptype == PatchType::Apply {
            serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
        };
        if ptype == PatchType::Strategic && info.crd.is_some() {
            return Err(ApiError::unsupported_media_type("application/strategic-merge-patch+json"));
        }
        if ptype == PatchType::Apply {
            return self.apply(info, ns, name, patch, ctx, subresource);
        }
        let mut warnings = vec![];
        let out = self.commit(info, ns, name, ctx, |cur| {
            let old = cur.ok_or_else(|| ApiError::not_found(info, name))?;
            let view = crate::state::as_version(old, info);
            let patched = match ptype {
                PatchType::Merge => merge_patch(&view, &patch),
                PatchType::Json => json_patch(&view, &patch)?,
                _ => strategic_merge(&view, &patch)?,
            };
            if patched["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                return Err(ApiError::modified(info, name));
            }
            let (w, warn) = self.finish_update(info, old, patched, ctx, subresource, true)?;
            warnings = warn;
            Ok(w)
        })?;
        Ok(Reply { body: out, code: 200, warnings })
    }

    fn apply(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        applied: Value,
        ctx: &Ctx,
        subresource: &str,
    ) -> ApiResult<Reply> {
        if ctx.manager.is_empty() {
            return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requires fieldManager parameter"));
        }
        check_type(info, &applied)?;
        if applied["apiVersion"].as_str().is_none() || applied["kind"].as_str().is_none() {
            return Err(ApiError::bad_request("invalid object type: apiVersion and kind are required for apply"));
        }
        let mut code = 200;
        let mut warnings = vec![];
        let sc = scope(info, subresource);
        let now = now_rfc3339();
        let av = info.api_version();
        let lists = lists_of(info);
        let w = Writer { manager: &ctx.manager, subresource, api_version: &av, scope: sc, now: &now, lists: &*lists };
        let conflict = |c: Vec<managed::Conflict>| ApiError::apply_conflict(info, name, &info.version, &c);
        if self.store.get(&info.key(), ns, name).is_none() {
            self.check_namespace(info, ns, name)?;
        }
        let out = self.commit(info, ns, name, ctx, |cur| {
            let Some(old) = cur else {
                let mut obj = managed::apply(&json!({}), &applied, &w, ctx.force).map_err(conflict)?;
                obj = crate::convert::to_storage(info, obj);
                obj["metadata"]["name"] = json!(name);
                crate::validation::validate_create(info, &obj)?;
                let entries = managed::entries(&obj);
                warnings = self.prepare_create(info, ns, &mut obj, ctx, sc)?;
                managed::set_entries(&mut obj, &entries);
                code = 201;
                return Ok(Write::Put(obj));
            };
            let want_rv = applied["metadata"]["resourceVersion"].as_str().unwrap_or_default();
            if !want_rv.is_empty() && old["metadata"]["resourceVersion"].as_str() != Some(want_rv) {
                return Err(ApiError::modified(info, name));
            }
            let view = crate::state::as_version(old, info);
            let merged = managed::apply(&view, &applied, &w, ctx.force).map_err(conflict)?;
            let (wr, warn) = self.finish_update(info, old, merged, ctx, subresource, false)?;
            warnings = warn;
            Ok(wr)
        })?;
        Ok(Reply { body: out, code, warnings })
    }
}

impl State {
    /// POST `pods/{name}/binding`: assigns the pod to the Binding's node (see
    /// [`crate::pods::bind`]); answers 201 with a success `Status`, as the real server does.
    pub fn bind(&self, info: &ResourceInfo, ns: &str, name: &str, binding: Value, ctx: &Ctx) -> ApiResult<Reply> {
        let body_ns = binding["metadata"]["namespace"].as_str().unwrap_or_default();
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let node = crate::pods::binding_target(name, &binding)?;
        self.commit(info, ns, name, ctx, |cur| {
            let pod = cur.ok_or_else(|| ApiError::not_found(info, name))?;
            for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                let want = binding["metadata"][field].as_str().unwrap_or_default();
                let have = pod["metadata"][field].as_str().unwrap_or_default();
                if !want.is_empty() && want != have {
                    let why =
                        format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}");
                    return Err(ApiError::conflict(info, name, &why));
                }
            }
            Ok(Write::Put(crate::pods::bind(pod, &node, &binding, &now_rfc3339())?))
        })?;
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        Ok(Reply { body, code: 201, warnings: vec![] })
    }
}

/// The object without fields that change on every write (for no-op detection).
fn strip_times(v: &Value) -> Value {
    let mut o = v.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf {
                if let Some(em) = e.as_object_mut() {
                    em.remove("time");
                }
            }
        }
    }
    o
}
