//! Table columns and cells of the apps and policy kinds, as the real
//! server prints them (`kubectl get deploy,rs,pdb`).

use serde_json::{Value, json};

/// (name, type, priority) of a column.
pub type Col = (&'static str, &'static str, i64);

/// Columns for `apps`/`policy` kinds, None for others.
pub fn columns(group: &str, plural: &str) -> Option<Vec<Col>> {
    let name = ("Name", "string", 0);
    let age = ("Age", "string", 0);
    Some(match (group, plural) {
        ("apps", "deployments") => {
            vec![name, ("Ready", "string", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0), age]
        }
        ("apps", "replicasets") => {
            vec![name, ("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0), age]
        }
        ("policy", "poddisruptionbudgets") => vec![
            name,
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            age,
        ],
        _ => return None,
    })
}

/// Cells (after the name, before the age) for `apps`/`policy` kinds.
pub fn cells(group: &str, plural: &str, o: &Value) -> Option<Vec<Value>> {
    let n = |v: &Value| json!(v.as_i64().unwrap_or(0));
    let st = &o["status"];
    Some(match (group, plural) {
        ("apps", "deployments") => {
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = st["readyReplicas"].as_i64().unwrap_or(0);
            vec![json!(format!("{ready}/{want}")), n(&st["updatedReplicas"]), n(&st["availableReplicas"])]
        }
        ("apps", "replicasets") => {
            vec![json!(o["spec"]["replicas"].as_i64().unwrap_or(1)), n(&st["replicas"]), n(&st["readyReplicas"])]
        }
        ("policy", "poddisruptionbudgets") => {
            let show = |v: &Value| match v {
                Value::Null => json!("N/A"),
                Value::String(s) => json!(s),
                other => json!(other.to_string()),
            };
            vec![show(&o["spec"]["minAvailable"]), show(&o["spec"]["maxUnavailable"]), n(&st["disruptionsAllowed"])]
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_and_pdb_cells() {
        let d = json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 1}});
        assert_eq!(cells("apps", "deployments", &d).unwrap(), vec![json!("1/2"), json!(0), json!(0)]);
        let p = json!({"spec": {"minAvailable": 1}});
        assert_eq!(cells("policy", "poddisruptionbudgets", &p).unwrap(), vec![json!("1"), json!("N/A"), json!(0)]);
        assert_eq!(columns("apps", "deployments").unwrap().len(), 5);
        assert!(columns("", "pods").is_none());
    }
}
