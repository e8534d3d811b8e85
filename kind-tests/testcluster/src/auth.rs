//! Bearer-token authentication (an admin token plus users from a static
//! token file in kube-apiserver's CSV format) and RBAC authorisation over
//! the Role/ClusterRole/(Cluster)RoleBinding objects in the store.

use std::collections::HashMap;

use serde_json::Value;

use crate::resources::ResKey;
use crate::store::Store;

/// The group whose members bypass RBAC.
pub const MASTERS: &str = "system:masters";

/// An authenticated user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// User uid.
    pub uid: String,
    /// Groups (always including `system:authenticated`).
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The admin user.
    pub fn admin() -> Self {
        UserInfo {
            name: "admin".into(),
            uid: "admin".into(),
            groups: vec![MASTERS.into(), "system:authenticated".into()],
        }
    }
}

/// Token to user table.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
}

/// A malformed token file line.
#[derive(Debug, thiserror::Error)]
#[error("token file line {line}: expected token,user,uid[,\"group1,group2\"]")]
pub struct TokenFileError {
    /// 1-based line number.
    pub line: usize,
}

impl Authenticator {
    /// An authenticator knowing only the admin token.
    pub fn new(admin_token: &str) -> Self {
        let mut tokens = HashMap::new();
        tokens.insert(admin_token.to_string(), UserInfo::admin());
        Authenticator { tokens }
    }

    /// Adds a user.
    pub fn add(&mut self, token: &str, user: UserInfo) {
        self.tokens.insert(token.to_string(), user);
    }

    /// Adds the users of a static token file (`token,user,uid,"g1,g2"`).
    pub fn load_csv(&mut self, text: &str) -> Result<(), TokenFileError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err(TokenFileError { line: i + 1 });
            }
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|g| g.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            self.add(&fields[0], UserInfo { name: fields[1].clone(), uid: fields[2].clone(), groups });
        }
        Ok(())
    }

    /// The user of a bearer token.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.tokens.get(token).cloned()
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// What a request wants to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource ("" if none).
    pub subresource: String,
    /// Namespace ("" if cluster scoped).
    pub namespace: String,
    /// Object name ("" for collections).
    pub name: String,
    /// Non-resource path (`/healthz`) when `resource` is empty.
    pub path: String,
}

fn has(list: &Value, want: &str) -> bool {
    list.as_array().into_iter().flatten().any(|v| v.as_str().is_some_and(|s| s == "*" || s == want))
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    if a.resource.is_empty() {
        return rule["nonResourceURLs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|u| u == a.path || u == "*" || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p)));
    }
    let res = if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
    let res_ok = has(&rule["resources"], &res)
        || (!a.subresource.is_empty() && has(&rule["resources"], &format!("*/{}", a.subresource)));
    let names = rule["resourceNames"].as_array().map(Vec::len).unwrap_or(0);
    has(&rule["apiGroups"], &a.group) && res_ok && (names == 0 || has(&rule["resourceNames"], &a.name))
}

fn subject_matches(s: &Value, u: &UserInfo, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or_default();
    match s["kind"].as_str() {
        Some("User") => name == u.name,
        Some("Group") => u.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
            u.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rbac_key(plural: &str) -> ResKey {
    ResKey { group: "rbac.authorization.k8s.io".into(), plural: plural.into() }
}

fn always_allowed(a: &Attributes) -> bool {
    let public_paths = ["/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi"];
    (a.resource.is_empty() && a.verb == "get" && public_paths.iter().any(|p| a.path.starts_with(p)))
        || (a.verb == "create"
            && matches!(
                a.resource.as_str(),
                "selfsubjectaccessreviews" | "selfsubjectrulesreviews" | "selfsubjectreviews"
            ))
}

/// Every RBAC rule that applies to the user in `ns` (cluster-wide rules
/// included), for `SelfSubjectRulesReview`.
pub fn rules_for(store: &Store, u: &UserInfo, ns: &str) -> Vec<Value> {
    if u.groups.iter().any(|g| g == MASTERS) {
        return vec![
            serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            serde_json::json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
        ];
    }
    let mut rules = vec![
        serde_json::json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}),
        serde_json::json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]}),
    ];
    let matches =
        |b: &Value, ns: &str| b["subjects"].as_array().into_iter().flatten().any(|s| subject_matches(s, u, ns));
    let role = |b: &Value, ns: &str| -> Vec<Value> {
        let name = b["roleRef"]["name"].as_str().unwrap_or_default();
        let found = match b["roleRef"]["kind"].as_str() {
            Some("ClusterRole") => store.get(&rbac_key("clusterroles"), "", name),
            _ => store.get(&rbac_key("roles"), ns, name),
        };
        found.and_then(|r| r["rules"].as_array().cloned()).unwrap_or_default()
    };
    for b in store.list(&rbac_key("clusterrolebindings"), None, None).0 {
        if matches(&b, "") {
            rules.extend(role(&b, ""));
        }
    }
    if !ns.is_empty() {
        for b in store.list(&rbac_key("rolebindings"), Some(ns), None).0 {
            if matches(&b, ns) {
                rules.extend(role(&b, ns));
            }
        }
    }
    rules
}

/// Whether RBAC allows the user to do `a`; returns the reason text.
pub fn authorize(store: &Store, u: &UserInfo, a: &Attributes) -> (bool, String) {
    if u.groups.iter().any(|g| g == MASTERS) || always_allowed(a) {
        return (true, String::new());
    }
    let role_rules = |kind: &str, name: &str, ns: &str| -> Vec<Value> {
        let found = if kind == "ClusterRole" {
            store.get(&rbac_key("clusterroles"), "", name)
        } else {
            store.get(&rbac_key("roles"), ns, name)
        };
        found.and_then(|r| r["rules"].as_array().cloned()).unwrap_or_default()
    };
    let bindings = |plural: &str, ns: Option<&str>| store.list(&rbac_key(plural), ns, None).0;
    for b in bindings("clusterrolebindings", None) {
        if !b["subjects"].as_array().into_iter().flatten().any(|s| subject_matches(s, u, "")) {
            continue;
        }
        let role = b["roleRef"]["name"].as_str().unwrap_or_default();
        if role_rules("ClusterRole", role, "").iter().any(|r| rule_allows(r, a)) {
            return (
                true,
                format!(
                    "RBAC: allowed by ClusterRoleBinding \"{}\" of ClusterRole \"{role}\" to User \"{}\"",
                    b["metadata"]["name"].as_str().unwrap_or_default(),
                    u.name
                ),
            );
        }
    }
    if !a.namespace.is_empty() {
        for b in bindings("rolebindings", Some(&a.namespace)) {
            if !b["subjects"].as_array().into_iter().flatten().any(|s| subject_matches(s, u, &a.namespace)) {
                continue;
            }
            let kind = b["roleRef"]["kind"].as_str().unwrap_or("Role");
            let role = b["roleRef"]["name"].as_str().unwrap_or_default();
            if role_rules(kind, role, &a.namespace).iter().any(|r| rule_allows(r, a)) {
                return (
                    true,
                    format!(
                        "RBAC: allowed by RoleBinding \"{}/{}\" of {kind} \"{role}\" to User \"{}\"",
                        a.namespace,
                        b["metadata"]["name"].as_str().unwrap_or_default(),
                        u.name
                    ),
                );
            }
        }
    }
    (false, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Write;
    use serde_json::json;

    fn put(s: &Store, plural: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        s.mutate(&rbac_key(plural), &ns, &name, |_| Ok((Write::Put(obj), ()))).unwrap();
    }

    #[test]
    fn token_file_parses_groups() {
        let mut a = Authenticator::new("root");
        a.load_csv("t1,alice,u1,\"dev,ops\"\n# comment\nt2,bob,u2\n").unwrap();
        let alice = a.authenticate("t1").unwrap();
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        assert_eq!(a.authenticate("t2").unwrap().name, "bob");
        assert!(a.authenticate("nope").is_none());
        assert!(a.load_csv("only,two").is_err());
    }

    #[test]
    fn role_binding_grants_in_its_namespace_only() {
        let s = Store::default();
        put(
            &s,
            "roles",
            json!({"metadata": {"name": "reader", "namespace": "a"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
        );
        put(
            &s,
            "rolebindings",
            json!({"metadata": {"name": "rb", "namespace": "a"},
            "roleRef": {"kind": "Role", "name": "reader"}, "subjects": [{"kind": "Group", "name": "dev"}]}),
        );
        let u = UserInfo { name: "alice".into(), uid: "1".into(), groups: vec!["dev".into()] };
        let attrs = |ns: &str, verb: &str| Attributes {
            verb: verb.into(),
            resource: "configmaps".into(),
            namespace: ns.into(),
            ..Default::default()
        };
        assert!(authorize(&s, &u, &attrs("a", "list")).0);
        assert!(!authorize(&s, &u, &attrs("b", "list")).0);
        assert!(!authorize(&s, &u, &attrs("a", "delete")).0);
        assert!(authorize(&s, &UserInfo::admin(), &attrs("b", "delete")).0);
    }
}
