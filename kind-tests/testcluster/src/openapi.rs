//! OpenAPI documents: built-in schemas generated from k8s-openapi's
//! schemars support, CRD schemas from their `openAPIV3Schema`. Served as
//! `/openapi/v3` (per group-version, as kubectl's `apply` and `explain`
//! read them) and `/openapi/v2` (JSON).

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use k8s_openapi::api::{apps, authentication, authorization, coordination, core, discovery, events, policy, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::resources::ResourceInfo;

/// Built-in component schemas and where each kind's schema is.
#[derive(Debug)]
pub struct BuiltinSchemas {
    /// Component schemas by name (`io.k8s.api.core.v1.Pod`).
    pub defs: Map<String, Value>,
    /// Schema name by (group, version, kind).
    pub by_kind: HashMap<(String, String, String), String>,
}

/// Name of the ObjectMeta schema.
pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn add<T: JsonSchema>(
    g: &mut SchemaGenerator,
    by_kind: &mut HashMap<(String, String, String), String>,
    gvk: (&str, &str, &str),
) {
    g.subschema_for::<T>();
    by_kind.insert((gvk.0.into(), gvk.1.into(), gvk.2.into()), T::schema_name().into_owned());
}

/// The built-in schemas (generated once per process).
pub fn builtin_schemas() -> &'static BuiltinSchemas {
    static CELL: OnceLock<BuiltinSchemas> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut g = SchemaSettings::openapi3().into_generator();
        let mut m = HashMap::new();
        let k = &mut m;
        add::<core::v1::Namespace>(&mut g, k, ("", "v1", "Namespace"));
        add::<core::v1::Node>(&mut g, k, ("", "v1", "Node"));
        add::<core::v1::Pod>(&mut g, k, ("", "v1", "Pod"));
        add::<core::v1::ConfigMap>(&mut g, k, ("", "v1", "ConfigMap"));
        add::<core::v1::Secret>(&mut g, k, ("", "v1", "Secret"));
        add::<core::v1::Service>(&mut g, k, ("", "v1", "Service"));
        add::<core::v1::Endpoints>(&mut g, k, ("", "v1", "Endpoints"));
        add::<core::v1::Event>(&mut g, k, ("", "v1", "Event"));
        add::<core::v1::ServiceAccount>(&mut g, k, ("", "v1", "ServiceAccount"));
        add::<events::v1::Event>(&mut g, k, ("events.k8s.io", "v1", "Event"));
        add::<discovery::v1::EndpointSlice>(&mut g, k, ("discovery.k8s.io", "v1", "EndpointSlice"));
        add::<coordination::v1::Lease>(&mut g, k, ("coordination.k8s.io", "v1", "Lease"));
        add::<apps::v1::Deployment>(&mut g, k, ("apps", "v1", "Deployment"));
        add::<apps::v1::ReplicaSet>(&mut g, k, ("apps", "v1", "ReplicaSet"));
        add::<policy::v1::PodDisruptionBudget>(&mut g, k, ("policy", "v1", "PodDisruptionBudget"));
        let rb = "rbac.authorization.k8s.io";
        add::<rbac::v1::Role>(&mut g, k, (rb, "v1", "Role"));
        add::<rbac::v1::ClusterRole>(&mut g, k, (rb, "v1", "ClusterRole"));
        add::<rbac::v1::RoleBinding>(&mut g, k, (rb, "v1", "RoleBinding"));
        add::<rbac::v1::ClusterRoleBinding>(&mut g, k, (rb, "v1", "ClusterRoleBinding"));
        add::<apiext::CustomResourceDefinition>(&mut g, k, ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"));
        let az = "authorization.k8s.io";
        add::<authorization::v1::SelfSubjectAccessReview>(&mut g, k, (az, "v1", "SelfSubjectAccessReview"));
        add::<authorization::v1::SelfSubjectRulesReview>(&mut g, k, (az, "v1", "SelfSubjectRulesReview"));
        add::<authorization::v1::SubjectAccessReview>(&mut g, k, (az, "v1", "SubjectAccessReview"));
        add::<authorization::v1::LocalSubjectAccessReview>(&mut g, k, (az, "v1", "LocalSubjectAccessReview"));
        let an = "authentication.k8s.io";
        add::<authentication::v1::TokenReview>(&mut g, k, (an, "v1", "TokenReview"));
        add::<authentication::v1::SelfSubjectReview>(&mut g, k, (an, "v1", "SelfSubjectReview"));
        let mut defs = g.take_definitions(true);
        for ((group, version, kind), name) in &m {
            if let Some(s) = defs.get_mut(name).and_then(Value::as_object_mut) {
                s.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "version": version, "kind": kind}]),
                );
            }
        }
        BuiltinSchemas { defs, by_kind: m }
    })
}

/// Component schema name of a custom resource (`com.example.v1.Widget`).
pub fn crd_schema_name(info: &ResourceInfo) -> String {
    let rev: Vec<&str> = info.group.split('.').rev().collect();
    format!("{}.{}.{}", rev.join("."), info.version, info.kind)
}

/// The schema of a custom resource as published: its openAPIV3Schema with
/// standard `apiVersion`/`kind`/`metadata` and the GVK extension.
pub fn crd_schema(info: &ResourceInfo) -> Value {
    let mut s =
        info.schema.clone().unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(props) = s.as_object_mut().map(|o| o.entry("properties").or_insert_with(|| json!({}))) {
        props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
        props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
        props["metadata"] = json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."});
    }
    s["x-kubernetes-group-version-kind"] = json!([{"group": info.group, "version": info.version, "kind": info.kind}]);
    s
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && let Some(name) = r.rsplit('/').next()
            {
                out.insert(name.to_string());
            }
            m.values().for_each(|c| collect_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// The named built-in schemas and everything they reference.
pub fn closure(roots: impl IntoIterator<Item = String>) -> Map<String, Value> {
    let defs = &builtin_schemas().defs;
    let mut todo: Vec<String> = roots.into_iter().collect();
    let mut out = Map::new();
    while let Some(n) = todo.pop() {
        if out.contains_key(&n) {
            continue;
        }
        let Some(s) = defs.get(&n) else { continue };
        let mut refs = BTreeSet::new();
        collect_refs(s, &mut refs);
        out.insert(n, s.clone());
        todo.extend(refs);
    }
    out
}

/// The schema of a resource plus the components it needs.
pub fn schema_for(info: &ResourceInfo) -> Option<(String, Map<String, Value>)> {
    if info.crd.is_some() {
        let mut comps = closure([OBJECT_META.to_string()]);
        let name = crd_schema_name(info);
        comps.insert(name.clone(), crd_schema(info));
        return Some((name, comps));
    }
    let name = builtin_schemas().by_kind.get(&(info.group.clone(), info.version.clone(), info.kind.clone()))?;
    Some((name.clone(), closure([name.clone()])))
}

fn path_of(info: &ResourceInfo, named: bool) -> String {
    let prefix =
        if info.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", info.group, info.version) };
    let ns = if info.namespaced { "/namespaces/{namespace}" } else { "" };
    let name = if named { "/{name}" } else { "" };
    format!("{prefix}{ns}/{}{name}", info.plural)
}

fn operation(info: &ResourceInfo, action: &str, schema: &str) -> Value {
    let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}});
    let mut params = vec![json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}})];
    if matches!(action, "patch" | "put" | "post") {
        params
            .push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
        params.push(json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
    }
    json!({
        "operationId": format!("{action}{}", info.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": params,
        "responses": ok,
    })
}

/// The `/openapi/v3/<gv>` document of one group-version.
pub fn v3_document(infos: &[std::sync::Arc<ResourceInfo>]) -> Value {
    let mut paths = Map::new();
    let mut comps = Map::new();
    for info in infos {
        let Some((schema, c)) = schema_for(info) else {
            continue;
        };
        comps.extend(c);
        if info.verbs == crate::resources::Verbs::CreateOnly {
            paths.insert(path_of(info, false), json!({"post": operation(info, "post", &schema)}));
            continue;
        }
        paths.insert(
            path_of(info, true),
            json!({"get": operation(info, "get", &schema), "put": operation(info, "put", &schema),
                   "patch": operation(info, "patch", &schema), "delete": operation(info, "delete", &schema)}),
        );
        paths.insert(path_of(info, false), json!({"post": operation(info, "post", &schema)}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": comps},
    })
}

/// A stable content hash for `serverRelativeURL` cache busting.
pub fn hash_of(v: &Value) -> String {
    let mut h = std::hash::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// The `/openapi/v2` document (JSON), definitions only.
pub fn v2_document(infos: &[std::sync::Arc<ResourceInfo>]) -> Value {
    let mut defs = Map::new();
    for info in infos {
        if let Some((_, c)) = schema_for(info) {
            defs.extend(c);
        }
    }
    let text = Value::Object(defs).to_string().replace("#/components/schemas/", "#/definitions/");
    let defs: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({}));
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "definitions": defs})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin;

    #[test]
    fn every_builtin_has_a_schema_with_gvk() {
        for info in builtin() {
            let (name, comps) = schema_for(&info).unwrap_or_else(|| panic!("{}", info.kind));
            assert!(comps[&name]["x-kubernetes-group-version-kind"].is_array(), "{name}");
        }
    }

    #[test]
    fn pod_schema_refs_resolve() {
        let pods = builtin().into_iter().find(|r| r.plural == "pods").unwrap();
        let (_, comps) = schema_for(&pods).unwrap();
        let mut refs = BTreeSet::new();
        collect_refs(&Value::Object(comps.clone()), &mut refs);
        for r in refs {
            assert!(comps.contains_key(&r), "{r}");
        }
        assert!(comps.contains_key("io.k8s.api.core.v1.PodSpec"));
    }
}
