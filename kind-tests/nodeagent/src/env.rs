//! Container environment (pure): literal values, ConfigMap/Secret keys and
//! the downward API fields the relays use.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::volumes::Sources;

/// Resolves `container.env` for `pod` running with `pod_ip`. `$(VAR)`
/// references to earlier variables are expanded, as Kubernetes does.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(expand(v, &out)),
            (None, Some(vf)) => {
                if let Some(r) = &vf.config_map_key_ref {
                    let v = sources.config_maps.get(&r.name).and_then(|c| c.data.as_ref()?.get(&r.key).cloned());
                    missing(v, r.optional, || {
                        format!("env {}: ConfigMap {:?} key {:?} not found", e.name, r.name, r.key)
                    })?
                } else if let Some(r) = &vf.secret_key_ref {
                    let v = sources.secrets.get(&r.name).and_then(|s| {
                        let ByteString(b) = s.data.as_ref()?.get(&r.key)?;
                        Some(String::from_utf8_lossy(b).into_owned())
                    });
                    missing(v, r.optional, || format!("env {}: Secret {:?} key {:?} not found", e.name, r.name, r.key))?
                } else if let Some(f) = &vf.field_ref {
                    Some(
                        field(pod, &f.field_path, pod_ip)
                            .ok_or_else(|| format!("env {}: unsupported fieldPath {:?}", e.name, f.field_path))?,
                    )
                } else {
                    return Err(format!(
                        "env {}: only configMapKeyRef, secretKeyRef and fieldRef are supported",
                        e.name
                    ));
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            out.retain(|(k, _)| k != &e.name);
            out.push((e.name.clone(), v));
        }
    }
    Ok(out)
}

fn missing(v: Option<String>, optional: Option<bool>, msg: impl FnOnce() -> String) -> Result<Option<String>, String> {
    match v {
        Some(v) => Ok(Some(v)),
        None if optional == Some(true) => Ok(None),
        None => Err(msg()),
    }
}

/// The downward-API value of `path`.
pub fn field(pod: &Pod, path: &str, pod_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "status.podIP" | "status.hostIP" => Some(pod_ip.to_string()),
        _ => {
            let key = path.strip_prefix("metadata.labels['")?.strip_suffix("']");
            if let Some(k) = key {
                return m.labels.as_ref()?.get(k).cloned();
            }
            let k = path.strip_prefix("metadata.annotations['")?.strip_suffix("']")?;
            m.annotations.as_ref()?.get(k).cloned()
        }
    }
}

/// Expands `$(NAME)` from `vars`; `$$` escapes; unknown references stay.
pub fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}},
            "spec": {"nodeName": "gw-a", "containers": [{"name": "c", "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "$(A)-$$(A)-$(Z)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "O", "valueFrom": {"secretKeyRef": {"name": "none", "key": "k", "optional": true}}}
            ]}]}
        }))
        .expect("pod")
    }

    #[test]
    fn resolves_all_sources() {
        let p = pod();
        let mut s = Sources::default();
        s.config_maps.insert(
            "cm".into(),
            ConfigMap { data: Some([("k".to_string(), "cv".to_string())].into()), ..Default::default() },
        );
        s.secrets.insert(
            "s".into(),
            Secret { data: Some([("k".to_string(), ByteString(b"sv".to_vec()))].into()), ..Default::default() },
        );
        let env = resolve(&p, &p.spec.as_ref().expect("spec").containers[0], &s, "198.51.100.1").expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("B"), Some("1-$(A)-$(Z)"));
        assert_eq!(get("POD"), Some("p"));
        assert_eq!(get("NODE"), Some("gw-a"));
        assert_eq!(get("IP"), Some("198.51.100.1"));
        assert_eq!(get("APP"), Some("x"));
        assert_eq!(get("C"), Some("cv"));
        assert_eq!(get("S"), Some("sv"));
        assert_eq!(get("O"), None);
    }

    #[test]
    fn missing_key_is_an_error() {
        let p = pod();
        let e =
            resolve(&p, &p.spec.as_ref().expect("spec").containers[0], &Sources::default(), "x").expect_err("missing");
        assert!(e.contains("ConfigMap \"cm\""), "{e}");
    }
}
