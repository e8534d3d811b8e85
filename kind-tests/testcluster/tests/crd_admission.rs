//! CRD admission driven by kubectl: the project's CRDs, its examples (all
//! accepted) and its invalid fixtures (all rejected with their expected
//! messages), synthetic CRDs, and `kubectl explain`.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A directory of the repository: `crds/`, `manifests/examples` and `manifests/` are read where
/// they are generated (no copies to drift); the invalid fixtures are this test's own.
fn dir(sub: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match sub {
        "crds" => root.join("crds"),
        "examples" => root.join("manifests/examples"),
        "install" => root.join("manifests"),
        other => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(other),
    }
}

fn files(sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir(sub))
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

fn with_crds() -> Fixture {
    let f = Fixture::new(false);
    let crds = dir("crds");
    f.k.ok(&["apply", "-f", crds.to_str().expect("utf8")]);
    f
}

/// The kubectl texts that a failed apply of `doc` prints.
fn apply_fails(k: &Kubectl, doc: &str) -> String {
    k.fail(&["apply", "-f", "-"], Some(doc))
}

#[test]
fn examples_are_accepted() {
    let f = with_crds();
    for p in files("examples") {
        f.k.ok(&["apply", "-f", p.to_str().expect("utf8")]);
    }
    let out = f.k.ok(&["get", "streamrequests,gateways", "-A"]);
    assert!(out.lines().count() >= 5, "{out}");
}

#[test]
fn invalid_fixtures_are_rejected_with_their_messages() {
    let f = with_crds();
    let mut failures = vec![];
    for p in files("invalid") {
        let text = std::fs::read_to_string(&p).expect("read");
        let expects: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect: ")).collect();
        assert!(!expects.is_empty(), "{p:?} has no expectations");
        let docs: Vec<&str> = text.split("\n---\n").collect();
        if let [first, _, ..] = docs.as_slice() {
            f.k.ok_stdin(&["apply", "-f", "-"], Some(first));
        }
        let last = docs.last().copied().unwrap_or_default();
        let err = apply_fails(&f.k, last);
        for e in expects {
            if !err.contains(e) {
                failures.push(format!("{}: missing {e:?} in {err}", p.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: The widget's desired state.
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.maxReplicas
              message: minReplicas must be less than or equal to maxReplicas
            - rule: "!has(self.name) || self.name.startsWith('w-')"
            properties:
              minReplicas: {type: integer, default: 1}
              maxReplicas: {type: integer, default: 3}
              name:
                type: string
                maxLength: 20
                x-kubernetes-validations:
                - {rule: self == oldSelf, message: name is immutable}
              color: {type: string, enum: [red, blue]}
              tags:
                type: array
                maxItems: 2
                x-kubernetes-list-type: set
                items: {type: string}
"#;

fn widget(name: &str, spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

#[test]
fn synthetic_crd_kubectl_texts() {
    let f = Fixture::new(false);
    let k = &f.k;
    k.ok_stdin(&["apply", "-f", "-"], Some(WIDGET_CRD));
    let cases = [
        (
            "{minReplicas: 5, maxReplicas: 2}",
            "The Widget \"bad\" is invalid: spec: Invalid value: minReplicas must be less than or equal to maxReplicas",
        ),
        (
            "{name: x}",
            "The Widget \"bad\" is invalid: spec: Invalid value: failed rule: !has(self.name) || self.name.startsWith('w-')",
        ),
        ("{color: green}", "spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\""),
        ("{tags: [a, a]}", "spec.tags[1]: Duplicate value: \"a\""),
        ("{tags: [a, b, c]}", "spec.tags: Too many: 3: must have at most 2 items"),
        (
            "{name: w-123456789012345678901}",
            "The Widget \"bad\" is invalid: \n* spec.name: Too long: may not be more than 20 bytes\n* <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ),
    ];
    for (spec, want) in cases {
        let err = apply_fails(k, &widget("bad", spec));
        assert!(err.contains(want), "{spec}: {err}");
    }
    k.ok_stdin(&["apply", "-f", "-"], Some(&widget("good", "{name: w-a}")));
    let got = k.ok(&["get", "widget", "good", "-o", "jsonpath={.spec.minReplicas} {.spec.maxReplicas}"]);
    assert_eq!(got, "1 3", "defaults applied");
    let err = apply_fails(k, &widget("good", "{name: w-changed}"));
    assert!(
        err.contains("The Widget \"good\" is invalid: spec.name: Invalid value: \"w-changed\": name is immutable"),
        "{err}"
    );
    let explain = k.ok(&["explain", "widgets.spec"]);
    assert!(explain.contains("The widget's desired state."), "{explain}");
}

#[test]
fn costly_and_non_structural_crds_are_refused() {
    let f = Fixture::new(false);
    let costly = WIDGET_CRD.replace(
        "              tags:\n                type: array\n                maxItems: 2\n",
        "              tags:\n                type: array\n                x-kubernetes-validations:\n                - rule: \"self.all(t, t.all(u, u.all(v, v.matches('^a'))))\"\n",
    ).replace("items: {type: string}", "items: {type: array, items: {type: array, items: {type: string}}}");
    let err = apply_fails(&f.k, &costly);
    assert!(err.contains("spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of"), "{err}");
    let non_structural = WIDGET_CRD.replace("color: {type: string, enum: [red, blue]}", "color: {enum: [red, blue]}");
    let err = apply_fails(&f.k, &non_structural);
    assert!(err.contains("properties[color].type: Required value"), "{err}");
    // Also on update of an existing CRD.
    f.k.ok_stdin(&["apply", "-f", "-"], Some(WIDGET_CRD));
    let err = apply_fails(&f.k, &non_structural);
    assert!(err.contains("properties[color].type: Required value"), "{err}");
}

#[test]
fn explain_shows_our_descriptions() {
    let f = with_crds();
    let out = f.k.ok(&["explain", "streamrequests.spec"]);
    assert!(out.contains("KIND:") && out.contains("StreamRequest"), "{out}");
    assert!(out.contains("FIELDS:") && out.contains("streamId"), "{out}");
}

#[test]
fn project_install_applies_server_side_dry_run() {
    let f = Fixture::new(false);
    let install = dir("install").join("scistream-operator.yaml");
    let path = install.to_str().expect("utf8");
    // A server dry run stores nothing, so on a real cluster too the
    // namespaces must exist first for the namespaced objects to pass.
    for ns in ["scistream-system", "scistream-gateway"] {
        f.k.ok(&["create", "namespace", ns]);
    }
    let out = f.k.ok(&["apply", "--server-side", "--dry-run=server", "-f", path]);
    assert!(out.contains("deployment.apps/") && out.contains("poddisruptionbudget.policy/"), "{out}");
    f.k.ok(&["apply", "--server-side", "-f", path]);
    let got = f.k.ok(&["get", "deploy,pdb", "-A"]);
    assert!(got.contains("deployment.apps/") && got.contains("poddisruptionbudget.policy/"), "{got}");
}

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
"#;

#[test]
fn deployments_and_pdbs_with_client_side_validation_and_tables() {
    let f = Fixture::new(false);
    // Client-side apply with validation downloads /openapi/v3/apis/apps/v1
    // and /openapi/v3/apis/policy/v1.
    f.k.ok_stdin(&["apply", "--validate=strict", "-f", "-"], Some(DEPLOY));
    let out = f.k.ok(&["get", "deploy", "web"]);
    assert!(
        out.starts_with("NAME") && out.contains("READY") && out.contains("UP-TO-DATE") && out.contains("0/2"),
        "{out}"
    );
    let out = f.k.ok(&["get", "pdb", "web"]);
    assert!(out.contains("MIN AVAILABLE") && out.contains("ALLOWED DISRUPTIONS") && out.contains("N/A"), "{out}");
    let explain = f.k.ok(&["explain", "deployment.spec.replicas"]);
    assert!(explain.contains("replicas"), "{explain}");
}

#[test]
fn status_causes_carry_reason_and_field_path() {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::ApiResource;
    let f = Fixture::new(false);
    f.k.ok_stdin(&["apply", "-f", "-"], Some(WIDGET_CRD));
    let cases = [
        (serde_json::json!({"color": "green"}), "FieldValueNotSupported", "spec.color"),
        (serde_json::json!({"tags": ["a", "a"]}), "FieldValueDuplicate", "spec.tags[1]"),
        (serde_json::json!({"tags": ["a", "b", "c"]}), "FieldValueTooMany", "spec.tags"),
        (serde_json::json!({"minReplicas": "x"}), "FieldValueTypeInvalid", "spec.minReplicas"),
        (serde_json::json!({"minReplicas": 4}), "FieldValueInvalid", "spec"),
    ];
    f.block_on(async {
        let client = f.cluster.client().await.expect("client");
        let ar = ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
        for (spec, reason, field) in cases {
            let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "bad"}, "spec": spec}))
            .expect("object");
            match api.create(&PostParams::default(), &obj).await {
                Err(kube::Error::Api(s)) => {
                    assert_eq!(s.code, 422, "{spec}");
                    let causes = s.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
                    assert_eq!(causes[0].reason, reason, "{spec}: {causes:?}");
                    assert_eq!(causes[0].field, field, "{spec}: {causes:?}");
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    });
}

#[test]
fn unknown_fields_warn_or_fail_with_strict() {
    let f = Fixture::new(false);
    f.k.ok_stdin(&["apply", "-f", "-"], Some(WIDGET_CRD));
    let doc = widget("w", "{name: w-a, bogus: 1}");
    let out = f.k.run(&["apply", "--validate=warn", "-f", "-"], Some(&doc));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("unknown field \"spec.bogus\""), "{err}");
    let stored = f.k.ok(&["get", "widget", "w", "-o", "jsonpath={.spec}"]);
    assert!(!stored.contains("bogus"), "{stored}");
    let err = f.k.fail(&["create", "--validate=strict", "-f", "-"], Some(&widget("w2", "{bogus: 1}")));
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
}
