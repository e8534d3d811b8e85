//! The chart as facilities expect it: introspection settings, extra arguments and
//! environment for the operator, the gateway namespace kept on uninstall (or not created
//! when it exists), NOTES written from the values, a PodMonitor for the relays' metrics.

mod chart;

use std::process::Command;

use chart::{find, helm, objects, operator_args, parse_operator, root, template};
use serde_json::json;

#[test]
fn introspection_has_its_values_and_refuses_to_render_without_them() {
    let out = template(&["controlEndpoint.auth=introspection"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("controlEndpoint.introspection.url"), "{said}");
    let o = objects(&[
        "controlEndpoint.auth=introspection",
        "controlEndpoint.introspection.url=https://auth.globus.org/v2/oauth2/token/introspect",
        "controlEndpoint.introspection.credentialsSecret=globus-client",
        "controlEndpoint.introspection.identityPrefix=globus:",
        "controlEndpoint.introspection.scope=https://auth.globus.org/scopes/c1/scistream",
    ]);
    let args = operator_args(&o);
    assert!(
        args.contains(&"--control-introspection-url=https://auth.globus.org/v2/oauth2/token/introspect".to_owned())
    );
    assert!(args.contains(&"--control-introspection-secret=globus-client".to_owned()));
    let config = parse_operator(&args).control.config().unwrap();
    assert_eq!(
        config.auth,
        scistream_control_endpoint::AuthConfig::Introspection {
            url: "https://auth.globus.org/v2/oauth2/token/introspect".into(),
            credentials_secret: "globus-client".into(),
            expect: scistream_control_endpoint::auth::introspection::Expectations {
                prefix: "globus:".into(),
                scope: Some("https://auth.globus.org/scopes/c1/scistream".into()),
                audience: None,
            },
        }
    );
}

/// The shared relays' channel is served by default: the operator listens where the Service
/// `<release>-relay-channel` sends relays, and tells them that Service's cluster DNS name; turned
/// off, neither the flag, the port nor the Service is there.
#[test]
fn the_relay_channel_is_served_behind_its_own_service() {
    let o = objects(&[]);
    let args = parse_operator(&operator_args(&o));
    assert_eq!(args.relay_channel_addr, Some("0.0.0.0:8444".parse().unwrap()));
    assert_eq!(
        args.relay_channel_address().as_deref(),
        Some("t-scistream-operator-relay-channel.scistream-system.svc:8444")
    );
    let service = find(&o, "Service", "t-scistream-operator-relay-channel");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "relay-channel");
    let d = find(&o, "Deployment", "t-scistream-operator");
    let ports = d["spec"]["template"]["spec"]["containers"][0]["ports"].as_array().unwrap();
    assert!(ports.contains(&json!({"name": "relay-channel", "containerPort": 8444})), "{ports:?}");
    let refused = template(&["defaultGateway.enabled=true", "relayChannel.enabled=false"]);
    assert!(!refused.status.success(), "a Shared default Gateway without the channel is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("relayChannel.enabled=true"));
    let per_stream =
        ["defaultGateway.enabled=true", "relayChannel.enabled=false", "defaultGateway.s2ds.relayModel=PerStream"];
    assert!(template(&per_stream).status.success());
    let off = objects(&["relayChannel.enabled=false"]);
    assert_eq!(parse_operator(&operator_args(&off)).relay_channel_addr, None);
    assert!(!off.iter().any(|o| o["metadata"]["name"] == "t-scistream-operator-relay-channel"));
}

#[test]
fn extra_arguments_and_environment_reach_the_operator() {
    let o = objects(&["extraArgs={--resync-seconds=60}", "extraEnv[0].name=RUST_LOG", "extraEnv[0].value=debug"]);
    let args = operator_args(&o);
    assert_eq!(args.last().map(String::as_str), Some("--resync-seconds=60"));
    assert_eq!(parse_operator(&args).resync_seconds, 60);
    let d = find(&o, "Deployment", "t-scistream-operator");
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "RUST_LOG", "value": "debug"})), "{env:?}");
}

#[test]
fn the_gateway_namespace_outlives_the_release_or_is_left_to_the_facility() {
    let o = objects(&[]);
    let ns = find(&o, "Namespace", "scistream-gateway");
    assert_eq!(ns["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    let o = objects(&["gatewayNamespace.create=false", "gatewayNamespace.name=dtn-relays"]);
    assert!(!o.iter().any(|x| x["kind"] == "Namespace"), "an existing namespace is not created");
}

#[test]
fn a_pod_monitor_scrapes_the_relays() {
    assert!(!objects(&[]).iter().any(|x| x["kind"] == "PodMonitor"));
    let o = objects(&["podMonitor.enabled=true", "podMonitor.labels.release=prometheus"]);
    let pm = find(&o, "PodMonitor", "t-scistream-operator-relays");
    assert_eq!(pm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(pm["spec"]["namespaceSelector"]["matchNames"], json!(["scistream-gateway"]));
    // Per-stream relay pods and shared relay pods.
    let selector = &pm["spec"]["selector"]["matchExpressions"][0];
    assert_eq!(selector["key"], "app.kubernetes.io/component");
    assert_eq!(selector["operator"], "In");
    assert_eq!(selector["values"], json!(["s2ds", scistream_controller::gateway::node_relays::COMPONENT]));
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], scistream_controller::children::METRICS_PORT_NAME);
}

/// NOTES as `helm install` prints them (a client-side dry run renders them).
fn notes(values: &[&str]) -> String {
    let mut cmd = Command::new(helm());
    cmd.current_dir(root()).args([
        "install",
        "t",
        "charts/scistream-operator",
        "--namespace",
        "scistream-system",
        "--dry-run=client",
    ]);
    for v in values {
        cmd.args(["--set", v]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("NOTES:").nth(1).expect("NOTES").to_owned()
}

#[test]
fn notes_follow_the_values() {
    let n = notes(&["defaultGateway.enabled=true", "defaultGateway.name=beamline"]);
    assert!(n.contains("--prod-gateway beamline") && !n.contains(" dtn "), "{n}");
    assert!(n.contains("scistream.io/gateway=beamline"), "{n}");
    assert!(n.contains("only inside the cluster") && n.contains("Reaching the control endpoint"), "{n}");
    assert!(n.contains("kubectl krew install") || n.contains("kubectl-scistream"), "how to get the plugin: {n}");
    let n = notes(&["controlEndpoint.service.type=LoadBalancer", "controlEndpoint.tls.ipAddresses={198.51.100.20}"]);
    assert!(n.contains("198.51.100.20:5000") && !n.contains("only inside the cluster"), "{n}");
    let n = notes(&["gatewayNamespace.create=false", "gatewayNamespace.name=dtn-relays"]);
    assert!(n.contains("dtn-relays") && n.contains("privileged"), "an existing namespace must allow relays: {n}");
}

#[test]
fn the_default_gateway_takes_the_s2ds_settings_and_the_schema_refuses_others() {
    let gateway = |values: &[&str]| {
        let o = objects(&[&["defaultGateway.enabled=true"], values].concat());
        let gw = find(&o, "Gateway", "dtn");
        serde_json::from_value::<scistream_api::Gateway>(gw.clone()).expect("the chart's Gateway reads as the API type")
    };
    assert_eq!(gateway(&[]).spec.relay_model(), scistream_api::RelayModel::Shared, "the chart's default");
    let gw = gateway(&["defaultGateway.s2ds.recordLayer=Rustls", "defaultGateway.priorityClassName=scistream-relays"]);
    assert_eq!(gw.spec.priority_class_name.as_deref(), Some("scistream-relays"));
    assert_eq!(gw.spec.s2ds.map(|s| s.record_layer), Some(scistream_api::RecordLayer::Rustls));
    let shared = gateway(&["defaultGateway.s2ds.relayModel=Shared"]);
    assert_eq!(shared.spec.relay_model(), scistream_api::RelayModel::Shared);
    for bad in [
        "defaultGateway.s2ds.recordLayer=openssl",
        "defaultGateway.s2ds.kTLS=true",
        "defaultGateway.s2ds.relayModel=Pooled",
    ] {
        let out = template(&["defaultGateway.enabled=true", bad]);
        assert!(!out.status.success(), "{bad} is refused by values.schema.json");
        assert!(String::from_utf8_lossy(&out.stderr).contains("s2ds"), "{bad}: the error names the value");
    }
}

/// The operator writes relays only in the gateway namespaces: a Role there for each (and the
/// operator told which), none in other namespaces; the legacy namespace gets its own Role and
/// is created only when legacy requests are enabled.
#[test]
fn the_operator_gets_a_role_in_each_gateway_namespace_only() {
    let o = objects(&["extraGatewayNamespaces={relays-b,relays-c}", "podMonitor.enabled=true"]);
    let roles: Vec<&str> = o
        .iter()
        .filter(|r| r["kind"] == "Role" && r["metadata"]["name"] == "t-scistream-operator-relays")
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["scistream-gateway", "relays-b", "relays-c"]);
    let args = operator_args(&o);
    assert!(args.contains(&"--gateway-namespaces=scistream-gateway,relays-b,relays-c".to_owned()), "{args:?}");
    let namespaces = parse_operator(&args).config().gateway_namespaces;
    assert!(namespaces.refusal("default").is_some() && namespaces.refusal("relays-c").is_none());
    let pm = find(&o, "PodMonitor", "t-scistream-operator-relays");
    assert_eq!(pm["spec"]["namespaceSelector"]["matchNames"], json!(["scistream-gateway", "relays-b", "relays-c"]));
    let cluster = find(&o, "ClusterRole", "t-scistream-operator");
    for rule in cluster["rules"].as_array().unwrap() {
        let writes = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| ["create", "delete", "list"].contains(&v.as_str().unwrap()));
        let resources = rule["resources"].as_array().unwrap();
        assert!(!(writes && resources.contains(&json!("secrets"))), "no cluster-wide Secret writes or lists: {rule}");
        assert!(
            !(writes && resources.contains(&json!("pods")) && rule["verbs"] != json!(["get", "list", "watch"])),
            "{rule}"
        );
    }
    assert!(!o.iter().any(|r| r["metadata"]["namespace"] == "scistream-legacy"), "no legacy gateway: no legacy Role");
    let o = objects(&["controlEndpoint.legacy.gateway=dtn"]);
    find(&o, "Namespace", "scistream-legacy");
    let legacy = find(&o, "Role", "t-scistream-operator-legacy");
    assert_eq!(legacy["metadata"]["namespace"], "scistream-legacy");
    let o = objects(&["controlEndpoint.legacy.gateway=dtn", "controlEndpoint.legacy.createNamespace=false"]);
    assert!(!o.iter().any(|r| r["kind"] == "Namespace" && r["metadata"]["name"] == "scistream-legacy"));
    find(&o, "Role", "t-scistream-operator-legacy");
}
