//! Reaching the control endpoint from outside the cluster, as the chart renders it: a
//! Service of type LoadBalancer or NodePort, or host ports on chosen nodes; the names and
//! addresses in the certificate; the address the operator publishes for users, and who may
//! read it.

mod chart;

use chart::{find, objects, operator_args, parse_operator, template};
use serde_json::json;

fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().find_map(|a| a.strip_prefix(&format!("{flag}=")))
}

#[test]
fn by_default_the_in_cluster_name_is_published_and_readable_by_every_user() {
    let o = objects(&[]);
    let args = operator_args(&o);
    assert_eq!(arg(&args, "--control-advertise"), Some("t-scistream-operator-control.scistream-system.svc:5000"));
    let parsed = parse_operator(&args);
    assert!(!parsed.no_control_publish);
    let role = find(&o, "Role", "t-scistream-operator-control-endpoint-readers");
    assert_eq!(role["rules"][0]["resourceNames"], json!(["scistream-control-endpoint"]));
    assert_eq!(role["rules"][0]["verbs"], json!(["get"]));
    let binding = find(&o, "RoleBinding", "t-scistream-operator-control-endpoint-readers");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"})
    );
    let o = objects(&["controlEndpoint.publish.enabled=false"]);
    assert!(parse_operator(&operator_args(&o)).no_control_publish);
    assert!(!o.iter().any(|x| x["metadata"]["name"] == "t-scistream-operator-control-endpoint-readers"));
}

#[test]
fn a_node_port_is_published_with_the_certificates_address() {
    let o = objects(&[
        "controlEndpoint.service.type=NodePort",
        "controlEndpoint.service.nodePort=31500",
        "controlEndpoint.service.httpNodePort=31501",
        "controlEndpoint.service.externalTrafficPolicy=Local",
        "controlEndpoint.tls.ipAddresses={203.0.113.10}",
    ]);
    let svc = find(&o, "Service", "t-scistream-operator-control");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 31500);
    assert_eq!(svc["spec"]["ports"][1]["nodePort"], 31501);
    let args = operator_args(&o);
    assert_eq!(arg(&args, "--control-advertise"), Some("203.0.113.10:31500"));
    assert_eq!(arg(&args, "--control-tls-ip"), Some("203.0.113.10"));
    parse_operator(&args).control.config().unwrap();
    // The port users dial must be known: a NodePort chosen by the cluster is not.
    let out = template(&["controlEndpoint.service.type=NodePort", "controlEndpoint.tls.ipAddresses={203.0.113.10}"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("controlEndpoint.service.nodePort"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = objects(&["controlEndpoint.service.type=NodePort", "controlEndpoint.advertise=dtn.aps.example:30999"]);
    assert_eq!(arg(&operator_args(&o), "--control-advertise"), Some("dtn.aps.example:30999"));
}

#[test]
fn a_load_balancer_keeps_its_address_and_source_ranges() {
    let o = objects(&[
        "controlEndpoint.service.type=LoadBalancer",
        "controlEndpoint.service.loadBalancerIP=198.51.100.20",
        "controlEndpoint.service.loadBalancerSourceRanges={198.51.100.0/24}",
        "controlEndpoint.tls.dnsNames={control.aps.example}",
        "controlEndpoint.tls.ipAddresses={198.51.100.20}",
    ]);
    let svc = find(&o, "Service", "t-scistream-operator-control");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["loadBalancerIP"], "198.51.100.20");
    assert_eq!(svc["spec"]["loadBalancerSourceRanges"], json!(["198.51.100.0/24"]));
    let args = operator_args(&o);
    assert_eq!(arg(&args, "--control-advertise"), Some("control.aps.example:5000"));
    let names = arg(&args, "--control-tls-dns-name").unwrap();
    assert!(
        names.contains("control.aps.example") && names.contains("t-scistream-operator-control.scistream-system.svc")
    );
}

#[test]
fn host_ports_pin_the_operator_to_the_chosen_nodes() {
    let o = objects(&[
        "controlEndpoint.hostPort.enabled=true",
        "controlEndpoint.hostPort.nodeSelector.kubernetes\\.io/hostname=dtn1",
        "controlEndpoint.tls.ipAddresses={192.0.2.10}",
    ]);
    let d = find(&o, "Deployment", "t-scistream-operator");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["kubernetes.io/hostname"], "dtn1");
    let ports = pod["containers"][0]["ports"].as_array().unwrap();
    let control = ports.iter().find(|p| p["name"] == "control").unwrap();
    assert_eq!(control["hostPort"], 5000);
    let http = ports.iter().find(|p| p["name"] == "hello-http").unwrap();
    assert_eq!(http["hostPort"], 5001);
    assert_eq!(arg(&operator_args(&o), "--control-advertise"), Some("192.0.2.10:5000"));
    // Without a node selector the host ports would land anywhere.
    let out = template(&["controlEndpoint.hostPort.enabled=true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("controlEndpoint.hostPort.nodeSelector"));
}

#[test]
fn cert_manager_gets_the_names_and_addresses() {
    let o = objects(&[
        "controlEndpoint.tls.certManager.enabled=true",
        "controlEndpoint.tls.certManager.issuerRef.name=facility-ca",
        "controlEndpoint.tls.dnsNames={control.aps.example}",
        "controlEndpoint.tls.ipAddresses={198.51.100.20}",
    ]);
    let cert = find(&o, "Certificate", "t-scistream-operator-control");
    assert_eq!(
        cert["spec"]["dnsNames"],
        json!(["t-scistream-operator-control.scistream-system.svc", "control.aps.example"])
    );
    assert_eq!(cert["spec"]["ipAddresses"], json!(["198.51.100.20"]));
    assert_eq!(cert["spec"]["secretName"], "t-scistream-operator-control-tls");
    let args = operator_args(&o);
    assert_eq!(arg(&args, "--control-tls-secret"), Some("t-scistream-operator-control-tls"));
}
