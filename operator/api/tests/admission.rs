//! The example objects are accepted and every invalid fixture is rejected for its own
//! reason, by the generated schema and CEL rules.

mod support;

use std::path::PathBuf;

use scistream_api::{Gateway, StreamRequest};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn examples_are_admitted_and_deserialize() {
    let admission = support::Admission::new();
    let objects = support::objects(&repo().join("manifests/examples"));
    let ours: Vec<_> = objects.iter().filter(|(_, o)| o["apiVersion"] == "scistream.io/v1alpha1").collect();
    assert!(ours.len() >= 4, "expected a Gateway and several StreamRequests in manifests/examples");
    for (file, object) in ours {
        let causes = admission.check(object, None);
        assert!(causes.is_empty(), "{file}: example rejected: {causes:#?}");
        match object["kind"].as_str() {
            Some("Gateway") => drop(serde_json::from_value::<Gateway>(object.clone()).unwrap()),
            Some("StreamRequest") => drop(serde_json::from_value::<StreamRequest>(object.clone()).unwrap()),
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
}

#[test]
fn every_invalid_fixture_is_rejected_for_its_own_reason() {
    let admission = support::Admission::new();
    let fixtures = support::fixtures(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid"));
    assert!(fixtures.len() >= 30, "fixtures went missing: {}", fixtures.len());
    let mut failures = Vec::new();
    for fixture in &fixtures {
        if let Some(old) = &fixture.old {
            let causes = admission.check(old, None);
            assert!(causes.is_empty(), "{}: the stored object itself is invalid: {causes:#?}", fixture.name);
        }
        let causes = admission.check(&fixture.new, fixture.old.as_ref());
        println!("{:<40} rejected: {}", fixture.name, causes.join(" | "));
        for expected in &fixture.expect {
            if !causes.iter().any(|c| c.contains(expected.as_str())) {
                failures.push(format!("{}: expected {expected:?}, got {causes:#?}", fixture.name));
            }
        }
        // Each fixture breaks one thing: it must not be rejected for unrelated reasons too.
        for cause in &causes {
            if !fixture.expect.iter().any(|e| cause.contains(e.as_str())) {
                failures.push(format!("{}: unexpected extra cause {cause:?}", fixture.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_valid_update_passes_transition_rules() {
    let admission = support::Admission::new();
    let old = serde_json::json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest", "metadata": {"name": "c"},
        "spec": {"streamId": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", "role": "Consumer", "gateway": "dtn",
                 "helloKeySecretRef": {"name": "k"}}
    });
    let mut new = old.clone();
    new["spec"]["remoteListeners"] = serde_json::json!(["198.51.100.10:5100", "198.51.100.11:5100"]);
    new["spec"]["peerCertificate"] =
        serde_json::json!("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    new["spec"]["rate"] = serde_json::json!("20Gbps");
    assert_eq!(admission.check(&new, Some(&old)), Vec::<String>::new());
}
