//! Pod rules of a real kube-apiserver (pure): requests defaulted from limits, the QoS class
//! derived at creation and immutable afterwards, which spec fields an update may change, and
//! `pods/binding`.
//!
//! Sources (Kubernetes 1.33–1.36): `pkg/apis/core/v1/defaults.go` (`SetDefaults_Pod`),
//! `pkg/registry/core/pod/strategy.go` (`PrepareForCreate`, `podStatusStrategy`),
//! `pkg/apis/core/helper/qos/qos.go` (`ComputePodQOS`), `pkg/apis/core/validation/validation.go`
//! (`ValidatePodUpdate`, `ValidatePodStatusUpdate`), `pkg/registry/core/pod/storage/storage.go`
//! (`BindingREST`, `setPodNodeAndMetadata`). Facts: `../shared/K8S-FACTS.md`.

use serde_json::{Value, json};

use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult, Cause};

/// The fields a pod update may change, as the server lists them in its refusal.
const UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// A resource quantity (`100m`, `64Mi`, `1.5G`, `2e3`) as a number, for comparisons only.
pub fn quantity(q: &Value) -> Option<f64> {
    let s = match q {
        Value::String(s) => s.trim(),
        Value::Number(n) => return n.as_f64(),
        _ => return None,
    };
    let split = s.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-'))).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * scale)
}

/// `SetDefaults_Pod`: a container's requests default to its limits, for every resource it limits.
pub fn default_requests(spec: &mut Value) {
    for key in ["containers", "initContainers"] {
        for c in spec.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(limits) = c.pointer("/resources/limits").and_then(Value::as_object).cloned() else { continue };
            if !c["resources"]["requests"].is_object() {
                c["resources"]["requests"] = json!({});
            }
            for (k, v) in limits {
                if c["resources"]["requests"].get(&k).is_none() {
                    c["resources"]["requests"][k] = v;
                }
            }
        }
    }
}

/// `ComputePodQOS` over containers and init containers: only cpu and memory count, only above
/// zero. Run after [`default_requests`].
pub fn qos_class(spec: &Value) -> &'static str {
    let (mut requests, mut limits) = ([0.0f64; 2], [0.0f64; 2]);
    let (mut any_request, mut any_limit) = ([false; 2], [false; 2]);
    let mut guaranteed = true;
    let all = ["containers", "initContainers"].into_iter().flat_map(|k| spec[k].as_array().into_iter().flatten());
    for c in all {
        let amount = |kind: &str, res: &str| quantity(&c["resources"][kind][res]).filter(|q| *q > 0.0);
        let mut limited = 0;
        for (i, res) in ["cpu", "memory"].into_iter().enumerate() {
            if let Some(q) = amount("requests", res) {
                requests[i] += q;
                any_request[i] = true;
            }
            if let Some(q) = amount("limits", res) {
                limits[i] += q;
                any_limit[i] = true;
                limited += 1;
            }
        }
        guaranteed &= limited == 2;
    }
    if !any_request.contains(&true) && !any_limit.contains(&true) {
        return "BestEffort";
    }
    let equal = (0..2).all(|i| any_request[i] == any_limit[i] && (requests[i] - limits[i]).abs() <= 1e-9 * limits[i]);
    if guaranteed && equal { "Guaranteed" } else { "Burstable" }
}

/// `PrepareForCreate` (after [`default_requests`]): status is `Pending` with the derived QoS
/// class (a class the client sent is kept, everything else it put in status is dropped).
pub fn prepare_create(obj: &mut Value) {
    let qos = match obj["status"]["qosClass"].as_str().filter(|q| !q.is_empty()) {
        Some(q) => q.to_owned(),
        None => qos_class(&obj["spec"]).to_owned(),
    };
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
}

fn forbidden(info: &ResourceInfo, name: &str, field: &str, detail: String) -> ApiError {
    ApiError::invalid(
        info,
        name,
        vec![Cause {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }],
    )
}

fn differing_fields(old: &Value, new: &Value) -> Vec<String> {
    let keys = |v: &Value| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    let mut all = keys(old);
    all.extend(keys(new));
    all.sort();
    all.dedup();
    all.into_iter()
        .filter(|k| old.get(k) != new.get(k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("<unset>".to_owned(), Value::to_string);
            format!("  spec.{k}: {} -> {}", show(old.get(&k)), show(new.get(&k)))
        })
        .collect()
}

/// `ValidatePodUpdate` (main endpoint): only images, `activeDeadlineSeconds` (set or lowered),
/// added tolerations and a negative grace period set to 1 may change. The refusal carries the
/// server's text; the diff after it is ours (the server prints a go-cmp diff of its internal
/// type, which no client can rely on).
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value) -> ApiResult<()> {
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    let (o, n) = (&old["spec"], &new["spec"]);
    for key in ["containers", "initContainers"] {
        let len = |v: &Value| v[key].as_array().map_or(0, Vec::len);
        if len(o) != len(n) {
            let detail = "pod updates may not add or remove containers".to_owned();
            return Err(forbidden(info, name, &format!("spec.{key}"), detail));
        }
    }
    let (old_deadline, new_deadline) = (o["activeDeadlineSeconds"].as_i64(), n["activeDeadlineSeconds"].as_i64());
    if let (Some(was), Some(now)) = (old_deadline, new_deadline)
        && now > was
    {
        let cause = Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {now}: must be less than or equal to previous value"),
            field: "spec.activeDeadlineSeconds".into(),
        };
        return Err(ApiError::invalid(info, name, vec![cause]));
    }
    let tolerations = |v: &Value| v["tolerations"].as_array().cloned().unwrap_or_default();
    let strip_seconds = |t: &Value| {
        let mut t = t.clone();
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    let kept: Vec<Value> = tolerations(n).iter().map(strip_seconds).collect();
    if tolerations(o).iter().map(strip_seconds).any(|t| !kept.contains(&t)) {
        let detail = "existing toleration can not be modified except its tolerationSeconds".to_owned();
        return Err(forbidden(info, name, "spec.tolerations", detail));
    }
    let mut munged = n.clone();
    for key in ["containers", "initContainers"] {
        for (i, c) in munged.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten().enumerate() {
            c["image"] = o[key][i]["image"].clone();
        }
    }
    if let Some(m) = munged.as_object_mut() {
        for key in ["activeDeadlineSeconds", "tolerations"] {
            match o.get(key) {
                Some(v) => m.insert(key.to_owned(), v.clone()),
                None => m.remove(key),
            };
        }
    }
    if o["terminationGracePeriodSeconds"].as_i64().is_some_and(|g| g < 0)
        && n["terminationGracePeriodSeconds"].as_i64() == Some(1)
    {
        munged["terminationGracePeriodSeconds"] = o["terminationGracePeriodSeconds"].clone();
    }
    if &munged != o {
        let diff = differing_fields(o, &munged).join("\n");
        let detail = format!("pod updates may not change fields other than {UPDATABLE}\n{diff}");
        return Err(forbidden(info, name, "spec", detail));
    }
    Ok(())
}

/// `podStatusStrategy` + `ValidatePodStatusUpdate`: an empty QoS class keeps the old one; any
/// other value than the old one is refused.
pub fn validate_status_update(info: &ResourceInfo, old: &Value, new: &mut Value) -> ApiResult<()> {
    let was = old["status"]["qosClass"].as_str().unwrap_or_default();
    match new["status"]["qosClass"].as_str().unwrap_or_default() {
        "" if !was.is_empty() => new["status"]["qosClass"] = json!(was),
        now if now != was && !was.is_empty() => {
            let name = new["metadata"]["name"].as_str().unwrap_or_default();
            let cause = Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"{now}\": field is immutable"),
                field: "status.qosClass".into(),
            };
            return Err(ApiError::invalid(info, name, vec![cause]));
        }
        _ => {}
    }
    Ok(())
}

/// Why a binding cannot be done, as `setPodNodeAndMetadata` says it (409 on `pods/binding`).
fn binding_conflict(pod: &str, why: String) -> ApiError {
    ApiError {
        code: 409,
        reason: "Conflict",
        message: format!("Operation cannot be fulfilled on pods/binding \"{pod}\": {why}"),
        details: Some(json!({"name": pod, "kind": "pods/binding"})),
    }
}

/// Checks a `Binding` posted to `pods/{name}/binding`; returns the node to bind to.
pub fn binding_target(name: &str, binding: &Value) -> ApiResult<String> {
    if binding["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::bad_request("name in URL does not match name in Binding object"));
    }
    let kind = binding["target"]["kind"].as_str().unwrap_or_default();
    let mut errors = vec![];
    if !matches!(kind, "" | "Node") {
        errors.push(format!("target.kind: Unsupported value: \"{kind}\": supported values: \"Node\", \"<empty>\""));
    }
    let node = binding["target"]["name"].as_str().unwrap_or_default();
    if node.is_empty() {
        errors.push("target.name: Required value".to_owned());
    }
    match errors.len() {
        0 => Ok(node.to_owned()),
        // The server returns these as a plain error: HTTP 500 with no reason.
        1 => Err(ApiError { code: 500, reason: "", message: errors.remove(0), details: None }),
        _ => Err(ApiError { code: 500, reason: "", message: format!("[{}]", errors.join(", ")), details: None }),
    }
}

/// Binds `pod` to `node` as `setPodNodeAndMetadata` does: refused when the pod is being deleted
/// or already has a node; otherwise `spec.nodeName`, the binding's annotations and a
/// `PodScheduled=True` condition.
pub fn bind(pod: &Value, node: &str, binding: &Value, now: &str) -> ApiResult<Value> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return Err(binding_conflict(name, format!("pod {name} is being deleted, cannot be assigned to a host")));
    }
    if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(binding_conflict(name, format!("pod {name} is already assigned to node \"{current}\"")));
    }
    if pod["spec"]["schedulingGates"].as_array().is_some_and(|g| !g.is_empty()) {
        return Err(binding_conflict(name, format!("pod {name} has non-empty .spec.schedulingGates")));
    }
    let mut out = pod.clone();
    out["spec"]["nodeName"] = json!(node);
    if let Some(annotations) = binding["metadata"]["annotations"].as_object() {
        if !out["metadata"]["annotations"].is_object() {
            out["metadata"]["annotations"] = json!({});
        }
        for (k, v) in annotations {
            out["metadata"]["annotations"][k] = v.clone();
        }
    }
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let conditions = out["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
    conditions.push(scheduled);
    out["status"]["conditions"] = Value::Array(conditions);
    Ok(out)
}

#[cfg(test)]
mod tests;
