//! The table of served resources: built-in types registered at start, and
//! custom resources registered when their CRD is created.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// A CRD printer column (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// Optional format (`name`, `date`...).
    pub format: String,
    /// Description for `columnDefinitions`.
    pub description: String,
    /// 0 = always shown, >0 = only with `-o wide`.
    pub priority: i64,
    /// JSONPath (without braces), e.g. `.status.phase`.
    pub json_path: String,
}

/// Which kind of resource this is, for the verbs it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbs {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    Full,
    /// create only (reviews).
    CreateOnly,
}

/// One served resource (group/version/plural).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    /// API group, "" for core.
    pub group: String,
    /// Served version.
    pub version: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Plural resource name, e.g. `pods`.
    pub plural: String,
    /// Singular name, e.g. `pod`.
    pub singular: String,
    /// Namespaced or cluster scoped.
    pub namespaced: bool,
    /// Whether `/status` is a subresource.
    pub status_subresource: bool,
    /// Short names (`po`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Verbs served.
    pub verbs: Verbs,
    /// CRD printer columns (empty for built-ins, which have their own tables).
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD's openAPIV3Schema for this version, if it is a custom resource.
    pub schema: Option<Value>,
    /// Name of the CRD that defines it.
    pub crd: Option<String>,
    /// Field selector paths a CRD declares in `selectableFields` (`spec.color`).
    pub selectable_fields: Vec<String>,
}

impl ResourceInfo {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `pods` or `widgets.example.com`, as in error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// Whether this is the `events.k8s.io` view of core Events. A real API server stores
    /// those as core `v1` Events, so an event recorded through either API is listed by both
    /// (`convert` translates the bodies).
    pub fn is_event_view(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    /// Storage key: one per group and plural, whatever the version; the events.k8s.io view
    /// shares core Events' key.
    pub fn key(&self) -> ResKey {
        if self.is_event_view() {
            return ResKey { group: String::new(), plural: "events".into() };
        }
        ResKey { group: self.group.clone(), plural: self.plural.clone() }
    }

    /// The apiVersion objects of this resource are stored with.
    pub fn storage_api_version(&self) -> String {
        if self.is_event_view() { "v1".into() } else { self.api_version() }
    }

    /// Whether `generation` is maintained (custom resources and types with a status).
    pub fn has_generation(&self) -> bool {
        self.crd.is_some() || (self.status_subresource && self.plural != "namespaces" && self.plural != "nodes")
    }
}

/// Key of a resource in the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResKey {
    /// API group.
    pub group: String,
    /// Plural name.
    pub plural: String,
}

#[allow(clippy::too_many_arguments)]
fn res(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    status: bool,
    short: &[&str],
    cats: &[&str],
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        status_subresource: status,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: cats.iter().map(|s| s.to_string()).collect(),
        verbs: Verbs::Full,
        printer_columns: vec![],
        schema: None,
        crd: None,
        selectable_fields: vec![],
    }
}

/// The built-in resources served by every test cluster.
pub fn builtin() -> Vec<ResourceInfo> {
    let mut v = vec![
        res("", "v1", "Namespace", "namespaces", false, true, &["ns"], &[]),
        res("", "v1", "Node", "nodes", false, true, &["no"], &[]),
        res("", "v1", "Pod", "pods", true, true, &["po"], &["all"]),
        res("", "v1", "ConfigMap", "configmaps", true, false, &["cm"], &[]),
        res("", "v1", "Secret", "secrets", true, false, &[], &[]),
        res("", "v1", "Service", "services", true, true, &["svc"], &["all"]),
        res("", "v1", "Endpoints", "endpoints", true, false, &["ep"], &[]),
        res("", "v1", "Event", "events", true, false, &["ev"], &[]),
        res("", "v1", "ServiceAccount", "serviceaccounts", true, false, &["sa"], &[]),
        res("events.k8s.io", "v1", "Event", "events", true, false, &["ev"], &[]),
        res("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, false, &[], &[]),
        res("coordination.k8s.io", "v1", "Lease", "leases", true, false, &[], &[]),
        res("rbac.authorization.k8s.io", "v1", "Role", "roles", true, false, &[], &[]),
        res("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, false, &[], &[]),
        res("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, false, &[], &[]),
        res("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, false, &[], &[]),
        res("apps", "v1", "Deployment", "deployments", true, true, &["deploy"], &["all"]),
        res("apps", "v1", "ReplicaSet", "replicasets", true, true, &["rs"], &["all"]),
        res("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, true, &["pdb"], &[]),
        res(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
            &["crd", "crds"],
            &["api-extensions"],
        ),
    ];
    for (group, kind, plural, namespaced) in [
        ("authorization.k8s.io", "SelfSubjectAccessReview", "selfsubjectaccessreviews", false),
        ("authorization.k8s.io", "SelfSubjectRulesReview", "selfsubjectrulesreviews", false),
        ("authorization.k8s.io", "SubjectAccessReview", "subjectaccessreviews", false),
        ("authorization.k8s.io", "LocalSubjectAccessReview", "localsubjectaccessreviews", true),
        ("authentication.k8s.io", "TokenReview", "tokenreviews", false),
        ("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews", false),
    ] {
        let mut r = res(group, "v1", kind, plural, namespaced, false, &[], &[]);
        r.verbs = Verbs::CreateOnly;
        v.push(r);
    }
    v
}

/// The registry of served resources; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<Vec<Arc<ResourceInfo>>>>,
}

impl Registry {
    /// A registry holding the built-in resources.
    pub fn with_builtins() -> Self {
        let r = Registry::default();
        for info in builtin() {
            r.add(info);
        }
        r
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ResourceInfo>>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or replaces) a resource version.
    pub fn add(&self, info: ResourceInfo) {
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        w.retain(|r| !(r.group == info.group && r.version == info.version && r.plural == info.plural));
        w.push(Arc::new(info));
    }

    /// Removes every version of the resources defined by CRD `crd`.
    pub fn remove_crd(&self, crd: &str) {
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        w.retain(|r| r.crd.as_deref() != Some(crd));
    }

    /// Looks a resource up by group, version and plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.read().iter().find(|r| r.group == group && r.version == version && r.plural == plural).cloned()
    }

    /// Looks a resource up by apiVersion and kind.
    pub fn lookup_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.read().iter().find(|r| r.api_version() == api_version && r.kind == kind).cloned()
    }

    /// Every version of a stored resource.
    pub fn versions_of(&self, key: &ResKey) -> Vec<Arc<ResourceInfo>> {
        self.read().iter().filter(|r| r.group == key.group && r.plural == key.plural).cloned().collect()
    }

    /// All served resources.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.read().clone()
    }

    /// Groups and their versions, in a stable order (core first).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.read().iter() {
            let vs = m.entry(r.group.clone()).or_default();
            if !vs.contains(&r.version) {
                vs.push(r.version.clone());
            }
        }
        m
    }
}

/// Resource definitions derived from a CRD object; empty if the CRD is malformed.
pub fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let (Some(kind), Some(plural)) = (names["kind"].as_str(), names["plural"].as_str()) else {
        return vec![];
    };
    let strs = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let mut out = vec![];
    for ver in spec["versions"].as_array().into_iter().flatten() {
        if ver["served"].as_bool() == Some(false) {
            continue;
        }
        let Some(version) = ver["name"].as_str() else {
            continue;
        };
        let printer_columns = ver["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: c["name"].as_str().unwrap_or_default().into(),
                type_: c["type"].as_str().unwrap_or("string").into(),
                format: c["format"].as_str().unwrap_or_default().into(),
                description: c["description"].as_str().unwrap_or_default().into(),
                priority: c["priority"].as_i64().unwrap_or(0),
                json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
            })
            .collect();
        out.push(ResourceInfo {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            status_subresource: ver["subresources"]["status"].is_object(),
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            verbs: Verbs::Full,
            printer_columns,
            schema: Some(ver["schema"]["openAPIV3Schema"].clone()).filter(|s| !s.is_null()),
            crd: Some(name.into()),
            selectable_fields: ver["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str())
                .map(|p| p.trim_start_matches('.').to_string())
                .collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_registers_each_served_version() {
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                 "selectableFields": [{"jsonPath": ".spec.color"}],
                 "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}]},
                {"name": "v0", "served": false, "storage": false}]}});
        let infos = from_crd(&crd);
        assert_eq!(infos.len(), 1);
        assert!(infos[0].status_subresource);
        assert_eq!(infos[0].printer_columns[0].json_path, ".status.phase");
        assert_eq!(infos[0].selectable_fields, vec!["spec.color".to_string()]);
        let reg = Registry::with_builtins();
        reg.add(infos[0].clone());
        assert!(reg.lookup("example.com", "v1", "widgets").is_some());
        reg.remove_crd("widgets.example.com");
        assert!(reg.lookup("example.com", "v1", "widgets").is_none());
    }
}
