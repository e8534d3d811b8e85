//! Defaults the real API server fills in on create for the built-in types
//! we use (enough for kubectl's describe/get and our controllers).

use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine;
use serde_json::{Value, json};

use crate::resources::ResourceInfo;

static NEXT_CLUSTER_IP: AtomicU32 = AtomicU32::new(10);

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null)
        && let Some(m) = obj.as_object_mut()
    {
        m.insert(key.into(), v);
    }
}

/// Applies create-time defaults for `info`'s type.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "pods") => default_pod(obj),
        ("", "services") => {
            if !obj["spec"].is_object() {
                obj["spec"] = json!({});
            }
            let spec = &mut obj["spec"];
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec["clusterIP"].is_null() {
                let n = NEXT_CLUSTER_IP.fetch_add(1, Ordering::Relaxed);
                let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff);
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            for p in spec["ports"].as_array_mut().into_iter().flatten() {
                set_default(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                set_default(p, "targetPort", port);
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "secrets") => {
            set_default(obj, "type", json!("Opaque"));
            if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                if !obj["data"].is_object() {
                    obj["data"] = json!({});
                }
                for (k, v) in sd {
                    let text = v.as_str().unwrap_or_default();
                    obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => default_crd(obj),
        _ => {}
    }
}

fn default_pod(obj: &mut Value) {
    default_pod_spec(obj);
    crate::pods::prepare_create(obj);
}

/// `SetDefaults_PodSpec` and the container defaults; the real server applies them to every
/// pod it decodes, updates included.
pub fn default_pod_spec(obj: &mut Value) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "serviceAccountName", json!("default"));
    for c in spec.get_mut("containers").and_then(Value::as_array_mut).into_iter().flatten() {
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
        set_default(c, "imagePullPolicy", json!("IfNotPresent"));
    }
    crate::pods::default_requests(spec);
}

fn default_crd(obj: &mut Value) {
    let names = obj["spec"]["names"].clone();
    let mut accepted = names.clone();
    if accepted["singular"].is_null()
        && let Some(k) = names["kind"].as_str()
    {
        accepted["singular"] = json!(k.to_lowercase());
    }
    if accepted["listKind"].is_null()
        && let Some(k) = names["kind"].as_str()
    {
        accepted["listKind"] = json!(format!("{k}List"));
    }
    let stored: Vec<Value> = obj["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    let now = crate::state::now_rfc3339();
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg});
    obj["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": stored,
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
    });
    let fins = obj["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
    let cleanup = json!(crate::delete::CRD_CLEANUP_FINALIZER);
    if !fins.contains(&cleanup) {
        let mut f = fins;
        f.push(cleanup);
        obj["metadata"]["finalizers"] = Value::Array(f);
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
    fn secret_string_data_is_encoded() {
        let mut s = json!({"stringData": {"a": "hi"}});
        apply_defaults(&info("secrets"), &mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"a": "aGk="}}));
    }

    #[test]
    fn pods_start_pending() {
        let mut p = json!({"spec": {"containers": [{"name": "c"}]}});
        apply_defaults(&info("pods"), &mut p);
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "BestEffort");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    }
}
