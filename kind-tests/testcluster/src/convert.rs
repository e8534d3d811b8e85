//! Conversion between a served version and the stored form. Two cases:
//! multi-version CRDs (only `apiVersion` differs; no conversion webhooks)
//! and `events.k8s.io/v1` Events, which a real API server stores as core
//! `v1` Events: an event recorded through either API is listed by both,
//! so `kubectl describe` shows the events our controllers record.
//!
//! Where a resource is stored (its key and stored apiVersion) is the resource table's
//! knowledge ([`ResourceInfo::key`]); this module only translates bodies.

use serde_json::{Map, Value};

use crate::resources::ResourceInfo;

/// (events.k8s.io field, core field).
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = m.remove(from) {
        m.insert(to.into(), v);
    }
}

/// A request body (served version) in the stored form.
pub fn to_storage(info: &ResourceInfo, mut obj: Value) -> Value {
    if info.is_event_view()
        && let Some(m) = obj.as_object_mut()
    {
        for (view, core) in EVENT_FIELDS {
            rename(m, view, core);
        }
    }
    obj["apiVersion"] = Value::String(info.storage_api_version());
    obj["kind"] = Value::String(info.kind.clone());
    obj
}

/// A stored object in the served version of `info`.
pub fn to_view(info: &ResourceInfo, obj: &Value) -> Value {
    let mut o = obj.clone();
    if info.is_event_view()
        && let Some(m) = o.as_object_mut()
    {
        for (view, core) in EVENT_FIELDS {
            rename(m, core, view);
        }
    }
    o["apiVersion"] = Value::String(info.api_version());
    o["kind"] = Value::String(info.kind.clone());
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ResKey, builtin};
    use serde_json::json;

    #[test]
    fn events_round_trip_through_core() {
        let ev = builtin().into_iter().find(|r| r.group == "events.k8s.io").unwrap();
        let view = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started", "reportingController": "c"});
        let stored = to_storage(&ev, view.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "hello");
        assert_eq!(to_view(&ev, &stored), view);
        assert_eq!(ev.key(), ResKey { group: String::new(), plural: "events".into() });
    }
}
