//! Conversion between a served version and the stored form. Two cases:
//! multi-version CRDs (only `apiVersion` differs; no conversion webhooks)
//! and `events.k8s.io/v1` Events, which a real API server stores as core
//! `v1` Events: an event recorded through either API is listed by both,
//! so `kubectl describe` shows the events our controllers record.

use serde_json::{Map, Value};

use crate::resources::{ResKey, ResourceInfo};

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

/// Whether `info` is the events.k8s.io view of core Events.
pub fn is_event_view(info: &ResourceInfo) -> bool {
    info.group == "events.k8s.io" && info.plural == "events"
}

/// Where objects of `info` are stored.
pub fn storage_key(info: &ResourceInfo) -> ResKey {
    if is_event_view(info) {
        return ResKey { group: String::new(), plural: "events".into() };
    }
    ResKey { group: info.group.clone(), plural: info.plural.clone() }
}

/// The apiVersion objects of `info` are stored with.
pub fn storage_api_version(info: &ResourceInfo) -> String {
    if is_event_view(info) { "v1".into() } else { info.api_version() }
}

fn rename(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = m.remove(from) {
        m.insert(to.into(), v);
    }
}

/// A request body (served version) in the stored form.
pub fn to_storage(info: &ResourceInfo, mut obj: Value) -> Value {
    if is_event_view(info)
        && let Some(m) = obj.as_object_mut()
    {
        for (view, core) in EVENT_FIELDS {
            rename(m, view, core);
        }
    }
    obj["apiVersion"] = Value::String(storage_api_version(info));
    obj["kind"] = Value::String(info.kind.clone());
    obj
}

/// A stored object in the served version of `info`.
pub fn to_view(info: &ResourceInfo, obj: &Value) -> Value {
    let mut o = obj.clone();
    if is_event_view(info)
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
    use crate::resources::builtin;
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
        assert_eq!(storage_key(&ev), ResKey { group: String::new(), plural: "events".into() });
    }
}
