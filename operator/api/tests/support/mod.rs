//! A local stand-in for API-server admission of our CRDs: structural schema (with a JSON
//! Schema validator) then CEL rules (with kube's CEL evaluator), with causes formatted as a
//! real API server formats them (`spec.x: Invalid value: ...`), so the same fixture
//! expectations hold against the embedded test cluster and a real cluster.

use std::collections::BTreeMap;

use jsonschema::error::ValidationErrorKind;
use kube::CustomResourceExt;
use scistream_api::{Gateway, StreamRequest};
use serde_json::Value;

/// Our CRDs' schemas by kind.
pub struct Admission {
    schemas: BTreeMap<String, Value>,
}

/// A fixture: the object (and the stored object, for updates) plus expected messages.
pub struct Fixture {
    pub name: String,
    pub expect: Vec<String>,
    pub old: Option<Value>,
    pub new: Value,
}

impl Admission {
    pub fn new() -> Self {
        let mut schemas = BTreeMap::new();
        for crd in [Gateway::crd(), StreamRequest::crd()] {
            let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
            schemas.insert(crd.spec.names.kind.clone(), serde_json::to_value(schema).unwrap());
        }
        Self { schemas }
    }

    /// Causes for `new` (an update of `old` when given), in the API server's wording.
    pub fn check(&self, new: &Value, old: Option<&Value>) -> Vec<String> {
        let kind = new["kind"].as_str().unwrap_or_default();
        let schema = self.schemas.get(kind).unwrap_or_else(|| panic!("not our kind: {kind}"));
        let defaulted = kube::core::cel::apply_defaults(schema, new);
        let validator = jsonschema::validator_for(schema).expect("schema compiles");
        let structural: Vec<String> = validator.iter_errors(&defaulted).map(|e| describe(&e, &defaulted)).collect();
        if !structural.is_empty() {
            return structural;
        }
        let old = old.map(|o| kube::core::cel::apply_defaults(schema, o));
        match kube::core::cel::Validator::new().validate(schema, &defaulted, old.as_ref()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| {
                    let value = lookup(&defaulted, &e.field_path);
                    match value {
                        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                            format!("{}: Invalid value: {}: {}", e.field_path, v, e.message)
                        }
                        _ => format!("{}: Invalid value: {}", e.field_path, e.message),
                    }
                })
                .collect(),
        }
    }
}

/// `/spec/targets/0` -> `spec.targets[0]`.
fn k8s_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').filter(|s| !s.is_empty()) {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let pointer: String =
        path.replace('[', ".").replace(']', "").split('.').filter(|s| !s.is_empty()).map(|s| format!("/{s}")).collect();
    root.pointer(&pointer)
}

fn describe(err: &jsonschema::ValidationError<'_>, root: &Value) -> String {
    let path = k8s_path(err.instance_path().as_str());
    let value = root.pointer(err.instance_path().as_str()).cloned().unwrap_or(Value::Null);
    match err.kind() {
        ValidationErrorKind::Required { property } => {
            let child = property.as_str().unwrap_or_default();
            let full = if path.is_empty() { child.to_owned() } else { format!("{path}.{child}") };
            format!("{full}: Required value")
        }
        ValidationErrorKind::Enum { options } => {
            let supported: Vec<String> = options.as_array().into_iter().flatten().map(|o| o.to_string()).collect();
            format!("{path}: Unsupported value: {value}: supported values: {}", supported.join(", "))
        }
        ValidationErrorKind::Maximum { limit } => {
            let limit = integral(limit);
            format!("{path}: Invalid value: {value}: {path} in body should be less than or equal to {limit}")
        }
        ValidationErrorKind::Minimum { limit } => {
            let limit = integral(limit);
            format!("{path}: Invalid value: {value}: {path} in body should be greater than or equal to {limit}")
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("{path}: Invalid value: {value}: {path} in body should match '{pattern}'")
        }
        ValidationErrorKind::MaxItems { limit } => {
            let n = value.as_array().map_or(0, Vec::len);
            format!("{path}: Too many: {n}: must have at most {limit} items")
        }
        ValidationErrorKind::MinItems { limit } => {
            let n = value.as_array().map_or(0, Vec::len);
            format!("{path}: Invalid value: {n}: {path} in body should have at least {limit} items")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("{path}: Too long: may not be more than {limit} bytes")
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("{path}: Invalid value: {value}: {path} in body should be at least {limit} chars long")
        }
        ValidationErrorKind::MinProperties { limit } => {
            let n = value.as_object().map_or(0, |m| m.len());
            format!("{path}: Invalid value: {n}: {path} in body should have at least {limit} properties")
        }
        ValidationErrorKind::MaxProperties { limit } => {
            let n = value.as_object().map_or(0, |m| m.len());
            format!("{path}: Too many: {n}: must have at most {limit} items")
        }
        ValidationErrorKind::Type { kind } => {
            format!("{path}: Invalid value: {value}: {path} in body must be of type {kind:?}")
        }
        other => format!("{path}: Invalid value: {value}: {other:?}"),
    }
}

/// `256.0` -> `256`, as the API server prints integer bounds.
fn integral(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
        _ => limit.to_string(),
    }
}

/// Reads every fixture under `dir`: `# expect:` lines, then one document (create) or two
/// (stored object, then the update).
pub fn fixtures(dir: &std::path::Path) -> Vec<Fixture> {
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let expect: Vec<String> =
                text.lines().filter_map(|l| l.strip_prefix("# expect: ")).map(str::to_owned).collect();
            let mut docs: Vec<Value> = text
                .split("\n---\n")
                .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
                .collect();
            let new = docs.pop().unwrap();
            let old = docs.pop();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(!expect.is_empty(), "{name} has no `# expect:` line");
            Fixture { name, expect, old, new }
        })
        .collect()
}

/// Reads every object of every YAML file under `dir` (multi-document files included).
pub fn objects(dir: &std::path::Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), value));
        }
    }
    out
}
