//! Server-side printing: `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`.
//! Built-in types get the columns kubectl users know; custom resources
//! get their CRD's `additionalPrinterColumns`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::jsonpath;
use crate::resources::ResourceInfo;

/// `includeObject` of a Table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object in rows.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", s % 60) }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 { format!("{y}y") } else { format!("{y}y{}d", d % 365) }
    } else {
        format!("{}y", d / 365)
    }
}

fn age(ts: &Value) -> String {
    let Some(t) = ts.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
}

type Col = (&'static str, &'static str, i64);

fn builtin_columns(info: &ResourceInfo) -> Vec<Col> {
    let name = ("Name", "string", 0);
    let age = ("Age", "string", 0);
    if let Some(c) = crate::table_extra::columns(&info.group, &info.plural) {
        return c;
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => vec![
            name,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            age,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("", "namespaces") => vec![name, ("Status", "string", 0), age],
        ("", "nodes") => vec![
            name,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            age,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
        ],
        ("", "configmaps") => vec![name, ("Data", "integer", 0), age],
        ("", "secrets") => vec![name, ("Type", "string", 0), ("Data", "integer", 0), age],
        ("", "services") => vec![
            name,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            age,
            ("Selector", "string", 1),
        ],
        ("", "serviceaccounts") => vec![name, ("Secrets", "integer", 0), age],
        ("", "endpoints") => vec![name, ("Endpoints", "string", 0), age],
        ("coordination.k8s.io", "leases") => vec![name, ("Holder", "string", 0), age],
        ("apiextensions.k8s.io", _) => vec![name, ("Created At", "date", 0)],
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            vec![name, ("Created At", "string", 0)]
        }
        ("rbac.authorization.k8s.io", _) => vec![name, ("Role", "string", 0), age],
        (_, "events") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        _ => vec![name, age],
    }
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let total = o["spec"]["containers"].as_array().map(Vec::len).unwrap_or(0);
    let ready = statuses.iter().filter(|s| s["ready"].as_bool() == Some(true)).count();
    let restarts: i64 = statuses.iter().filter_map(|s| s["restartCount"].as_i64()).sum();
    let mut status = o["status"]["reason"].as_str().or(o["status"]["phase"].as_str()).unwrap_or("Pending").to_string();
    for s in &statuses {
        if let Some(r) = s["state"]["waiting"]["reason"].as_str() {
            status = r.to_string();
        }
    }
    if o["metadata"]["deletionTimestamp"].is_string() {
        status = "Terminating".into();
    }
    let none = || json!("<none>");
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(&o["metadata"]["creationTimestamp"])),
        o["status"]["podIP"].as_str().map(|s| json!(s)).unwrap_or_else(none),
        o["spec"]["nodeName"].as_str().map(|s| json!(s)).unwrap_or_else(none),
        none(),
        none(),
    ]
    .into_iter()
    .map(|v| if v.is_string() { v } else { json!(v.to_string()) })
    .collect()
}

fn builtin_cells(info: &ResourceInfo, o: &Value) -> Vec<Value> {
    let name = json!(o["metadata"]["name"].as_str().unwrap_or_default());
    let a = json!(age(&o["metadata"]["creationTimestamp"]));
    let s = |v: &Value| json!(v.as_str().unwrap_or("<none>"));
    let count = |v: &Value| json!(v.as_object().map(|m| m.len()).or(v.as_array().map(Vec::len)).unwrap_or(0));
    if let Some(c) = crate::table_extra::cells(&info.group, &info.plural, o) {
        return std::iter::once(name).chain(c).chain(std::iter::once(a)).collect();
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => std::iter::once(name).chain(pod_cells(o)).collect(),
        ("", "namespaces") => vec![name, s(&o["status"]["phase"]), a],
        ("", "nodes") => {
            let ready = o["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let ip = o["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["type"] == "InternalIP")
                .map(|x| x["address"].clone())
                .unwrap_or(json!("<none>"));
            vec![
                name,
                json!(if ready { "Ready" } else { "NotReady" }),
                json!("<none>"),
                a,
                s(&o["status"]["nodeInfo"]["kubeletVersion"]),
                ip,
            ]
        }
        ("", "configmaps") => {
            let n = o["data"].as_object().map(|m| m.len()).unwrap_or(0)
                + o["binaryData"].as_object().map(|m| m.len()).unwrap_or(0);
            vec![name, json!(n), a]
        }
        ("", "secrets") => vec![name, s(&o["type"]), count(&o["data"]), a],
        ("", "services") => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                .collect();
            let sel: Vec<String> = o["spec"]["selector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            let ports = if ports.is_empty() { "<none>".to_string() } else { ports.join(",") };
            let sel = if sel.is_empty() { "<none>".to_string() } else { sel.join(",") };
            vec![name, s(&o["spec"]["type"]), s(&o["spec"]["clusterIP"]), json!("<none>"), json!(ports), a, json!(sel)]
        }
        ("", "serviceaccounts") => vec![name, count(&o["secrets"]), a],
        ("", "endpoints") => vec![name, json!("<none>"), a],
        ("coordination.k8s.io", "leases") => vec![name, s(&o["spec"]["holderIdentity"]), a],
        ("apiextensions.k8s.io", _) | ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            vec![name, o["metadata"]["creationTimestamp"].clone()]
        }
        ("rbac.authorization.k8s.io", _) => {
            let r = format!(
                "{}/{}",
                o["roleRef"]["kind"].as_str().unwrap_or_default(),
                o["roleRef"]["name"].as_str().unwrap_or_default()
            );
            vec![name, json!(r), a]
        }
        (_, "events") => {
            let obj = format!(
                "{}/{}",
                o["involvedObject"]["kind"]
                    .as_str()
                    .or(o["regarding"]["kind"].as_str())
                    .unwrap_or_default()
                    .to_lowercase(),
                o["involvedObject"]["name"].as_str().or(o["regarding"]["name"].as_str()).unwrap_or_default()
            );
            let msg = o["message"].as_str().or(o["note"].as_str()).unwrap_or_default();
            let ts =
                if o["lastTimestamp"].is_string() { &o["lastTimestamp"] } else { &o["metadata"]["creationTimestamp"] };
            vec![json!(age(ts)), s(&o["type"]), s(&o["reason"]), json!(obj), json!(msg)]
        }
        _ => vec![name, a],
    }
}

fn crd_cell(col: &crate::resources::PrinterColumn, o: &Value) -> Value {
    let found = jsonpath::eval(o, &col.json_path);
    let Some(first) = found.first() else {
        return Value::Null;
    };
    match col.type_.as_str() {
        "date" => json!(age(first)),
        "integer" | "number" | "boolean" => (*first).clone(),
        _ => {
            let texts: Vec<String> = found
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            json!(texts.join(","))
        }
    }
}

/// The `columnDefinitions` of a resource's Table.
pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    let name_col = json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0});
    if info.crd.is_some() {
        let mut cols = vec![name_col];
        if info.printer_columns.is_empty() {
            cols.push(json!({"name": "Age", "type": "date", "format": "", "description": "Creation timestamp", "priority": 0}));
        }
        cols.extend(info.printer_columns.iter().map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})));
        return cols;
    }
    builtin_columns(info)
        .into_iter()
        .map(|(n, t, p)| {
            if n == "Name" {
                name_col.clone()
            } else {
                json!({"name": n, "type": t, "format": "", "description": n, "priority": p})
            }
        })
        .collect()
}

/// The cells of one row.
pub fn cells(info: &ResourceInfo, o: &Value) -> Vec<Value> {
    if info.crd.is_none() {
        return builtin_cells(info, o);
    }
    let mut row = vec![json!(o["metadata"]["name"].as_str().unwrap_or_default())];
    if info.printer_columns.is_empty() {
        row.push(json!(age(&o["metadata"]["creationTimestamp"])));
    }
    row.extend(info.printer_columns.iter().map(|c| crd_cell(c, o)));
    row
}

fn row(info: &ResourceInfo, o: &Value, include: IncludeObject) -> Value {
    let mut r = json!({"cells": cells(info, o)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => r["object"] = crate::state::as_version(o, info),
        IncludeObject::Metadata => {
            let mut meta = o["metadata"].clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta});
        }
    }
    r
}

/// A Table of `items`.
pub fn table(
    info: &ResourceInfo,
    items: &[Arc<Value>],
    rv: u64,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": column_definitions(info),
        "rows": items.iter().map(|o| row(info, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{PrinterColumn, builtin};

    #[test]
    fn durations_match_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (4 * 3600 + 60, "4h1m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
            (40 * 86400, "40d"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }

    #[test]
    fn pod_rows_show_ready_and_status() {
        let pods = builtin().into_iter().find(|r| r.plural == "pods").unwrap();
        let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 0}]}});
        let c = cells(&pods, &p);
        assert_eq!(c[0..4], [json!("p"), json!("1/2"), json!("Running"), json!("2")]);
        assert_eq!(c[6], json!("n1"));
        assert_eq!(column_definitions(&pods).len(), c.len());
    }

    #[test]
    fn crd_rows_use_printer_columns() {
        let mut info = builtin().into_iter().find(|r| r.plural == "configmaps").unwrap();
        info.crd = Some("widgets.example.com".into());
        info.printer_columns = vec![PrinterColumn {
            name: "Replicas".into(),
            type_: "integer".into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: ".spec.replicas".into(),
        }];
        let t = table(
            &info,
            &[Arc::new(json!({"metadata": {"name": "w"}, "spec": {"replicas": 2}}))],
            5,
            None,
            IncludeObject::None,
        );
        assert_eq!(t["rows"][0]["cells"], json!(["w", 2]));
        assert_eq!(t["columnDefinitions"][1]["name"], "Replicas");
    }
}
