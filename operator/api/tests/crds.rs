//! The committed CRD YAML is exactly what the Rust types generate.

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_types() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let files = scistream_api::crdgen::render().unwrap();
    assert_eq!(files.len(), 2);
    for dir in ["crds", "charts/scistream-operator/crds"] {
        let mut committed: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        committed.sort();
        let mut generated: Vec<String> = files.iter().map(|f| f.file_name.clone()).collect();
        generated.sort();
        assert_eq!(committed, generated, "{dir}/ holds other files than the generated CRDs");
        for file in &files {
            let on_disk = std::fs::read_to_string(root.join(dir).join(&file.file_name)).unwrap();
            assert!(
                on_disk == file.yaml,
                "{dir}/{} is out of date: run `cargo run -p scistream-api --bin crdgen` and commit the result",
                file.file_name
            );
        }
    }
}

#[test]
fn the_reference_doc_matches_the_types() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let on_disk = std::fs::read_to_string(root.join("docs/reference.md")).unwrap_or_default();
    assert!(
        on_disk == scistream_api::reference::render(),
        "docs/reference.md is out of date: run `cargo run -p scistream-api --bin crdgen` and commit the result"
    );
}

#[test]
fn every_schema_property_is_documented() {
    // `kubectl explain` must read like a manual: no property without a description.
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                // metadata and the embedded upstream Condition are documented upstream.
                if name == "metadata" || path.ends_with(".conditions[]") {
                    continue;
                }
                if child.get("description").and_then(|d| d.as_str()).is_none_or(str::is_empty) {
                    missing.push(child_path.clone());
                }
                walk(&child_path, child, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    use kube::CustomResourceExt;
    let mut missing = Vec::new();
    for crd in [scistream_api::Gateway::crd(), scistream_api::StreamRequest::crd()] {
        let schema =
            serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
                .unwrap();
        walk(&crd.spec.names.kind, &schema, &mut missing);
    }
    assert!(missing.is_empty(), "undocumented fields: {missing:#?}");
}
