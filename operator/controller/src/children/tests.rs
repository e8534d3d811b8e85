use super::*;
use scistream_core::relay::{RelayMode, Route};

fn gateway() -> Gateway {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "dtn"},
        "spec": {"nodeSelector": {"gw": "true"}, "bandwidth": "10Gbps", "podNamespace": "scistream-gateway",
                 "tolerations": [{"key": "dtn", "operator": "Exists", "effect": "NoSchedule"}]}
    }))
    .unwrap()
}

fn side() -> Side<'static> {
    Side {
        request: "science/beamline".into(),
        stream_id: "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d",
        role: Role::Producer,
        gateway: "dtn",
        namespace: "scistream-gateway",
    }
}

fn relay() -> NodeRelay {
    NodeRelay {
        node: "gw-a".into(),
        mode: RelayMode::TlsServer,
        routes: vec![Route {
            index: 0,
            listen: "198.51.100.1:5100".parse().unwrap(),
            target: "10.0.0.1:7000".parse().unwrap(),
        }],
        rate: scistream_api::Rate::from_bps(1_000_000),
    }
}

#[test]
fn relay_pod_is_pinned_host_network_and_locked_down() {
    let gw = gateway();
    let s = side();
    let r = relay();
    let rendered = Rendered {
        file_name: "config.yaml",
        text: String::new(),
        args: vec!["--config".into()],
        enforces_rate: true,
        health: None,
        ready_command: Some(vec!["/s2ds".into(), "wait-ready".into()]),
    };
    let pod = relay_pod(&RelayPod {
        side: &s,
        relay: &r,
        rendered: &rendered,
        image: "s2ds:test",
        gateway: &gw,
        health: Some(Health::Http("192.0.2.1:5101".parse().unwrap())),
        drain_seconds: 20,
        tls: true,
        spec_hash: "abc".into(),
    });
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("gw-a"));
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(spec.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dtn"));
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!((psc.run_as_non_root, psc.fs_group), (Some(true), Some(RELAY_UID)));
    let c = &spec.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let probe = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!((probe.host.as_deref(), probe.path.as_deref()), (Some("192.0.2.1"), Some("/readyz")));
    // The rendered ready command is the postStart hook: running (and probed) once bound.
    let hook = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()).and_then(|h| h.exec.as_ref());
    assert_eq!(hook.and_then(|e| e.command.as_deref()), Some(&["/s2ds".to_owned(), "wait-ready".to_owned()][..]));
    let resources = c.resources.as_ref().unwrap();
    assert!(resources.requests.as_ref().unwrap().contains_key("cpu"));
    // A memory limit by default, never a CPU limit (a throttled relay misses line rate).
    let limits = resources.limits.as_ref().unwrap();
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some(DEFAULT_MEMORY_LIMIT));
    assert!(!limits.contains_key("cpu"));
    assert_eq!(spec.priority_class_name, None, "no priority class unless the Gateway names one");
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[keys::LABEL_STREAM_ID], "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d");
    assert_eq!(labels[keys::LABEL_NODE], "gw-a");
    assert_eq!(pod.metadata.annotations.as_ref().unwrap()[keys::ANNOTATION_REQUEST], "science/beamline");
    let volumes: Vec<&str> = spec.volumes.as_ref().unwrap().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes, vec!["config", "run", "tls"]);
    // The health listener serves /metrics too: a named port for the chart's PodMonitor.
    let metrics = c.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some(METRICS_PORT_NAME)).unwrap();
    assert_eq!((metrics.container_port, metrics.host_port), (5101, Some(5101)));
}

#[test]
fn plain_relay_mounts_no_secret_and_probes_tcp() {
    let gw = gateway();
    let s = side();
    let r = NodeRelay { mode: RelayMode::Plain, ..relay() };
    let rendered = Rendered {
        file_name: "nginx.conf",
        text: String::new(),
        args: vec![],
        enforces_rate: false,
        health: None,
        ready_command: None,
    };
    let pod = relay_pod(&RelayPod {
        side: &s,
        relay: &r,
        rendered: &rendered,
        image: "nginx:1.27",
        gateway: &gw,
        health: Some(Health::Tcp("192.0.2.1:5101".parse().unwrap())),
        drain_seconds: 20,
        tls: false,
        spec_hash: "abc".into(),
    });
    let spec = pod.spec.unwrap();
    assert!(spec.volumes.as_ref().unwrap().iter().all(|v| v.secret.is_none()));
    assert_eq!(
        spec.containers[0].readiness_probe.as_ref().unwrap().tcp_socket.as_ref().unwrap().port,
        IntOrString::Int(5101)
    );
    assert!(spec.containers[0].liveness_probe.is_none());
}

/// Regression: HAProxy, Nginx and Stunnel relays were probed with a TCP connect to their
/// first data listener, which opened a connection through the relays to the application
/// every probe period. Each implementation is now probed on its health listener only.
#[test]
fn no_relay_is_probed_on_a_data_listener() {
    use scistream_core::render::{Paths, RenderInput, render};
    let gw = gateway();
    let s = side();
    let health: scistream_api::Endpoint = "192.0.2.1:5109".parse().unwrap();
    for implementation in
        [Implementation::S2ds, Implementation::Haproxy, Implementation::Nginx, Implementation::Stunnel]
    {
        let r = NodeRelay { mode: RelayMode::Plain, ..relay() };
        let paths = Paths::default();
        let input = |metrics| RenderInput {
            stream_id: s.stream_id,
            relay: &r,
            paths: &paths,
            metrics,
            drain_seconds: 20,
            nginx_stream_module: None,
            s2ds: &scistream_api::S2dsSettings::DEFAULT,
        };
        let pod_for = |rendered: &Rendered| {
            relay_pod(&RelayPod {
                side: &s,
                relay: &r,
                rendered,
                image: "relay:test",
                gateway: &gw,
                health: rendered.health.clone(),
                drain_seconds: 20,
                tls: false,
                spec_hash: "abc".into(),
            })
        };
        let pod = pod_for(&render(implementation, &input(Some(&health))));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let probe = c.readiness_probe.as_ref().unwrap_or_else(|| panic!("{implementation:?}: no readiness probe"));
        let port =
            probe.http_get.as_ref().map(|h| h.port.clone()).or(probe.tcp_socket.as_ref().map(|t| t.port.clone()));
        assert_eq!(port, Some(IntOrString::Int(5109)), "{implementation:?}");
        if let Some(liveness) = &c.liveness_probe {
            assert_eq!(liveness.http_get.as_ref().map(|h| h.port.clone()), port, "{implementation:?}");
        }
        // A reservation without a health port: no probe rather than one through the data path.
        let pod = pod_for(&render(implementation, &input(None)));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert!(c.readiness_probe.is_none() && c.liveness_probe.is_none(), "{implementation:?}");
    }
}

#[test]
fn config_map_has_a_key_per_node_and_the_peer_certificate() {
    let s = side();
    let rendered = vec![
        (
            "gw-a".to_owned(),
            Rendered {
                file_name: "config.yaml",
                text: "a".into(),
                args: vec![],
                enforces_rate: true,
                health: None,
                ready_command: None,
            },
        ),
        (
            "gw-b".to_owned(),
            Rendered {
                file_name: "config.yaml",
                text: "b".into(),
                args: vec![],
                enforces_rate: true,
                health: None,
                ready_command: None,
            },
        ),
    ];
    let cm = config_map(&s, &rendered, Some("PEM"));
    let data = cm.data.unwrap();
    assert_eq!(data["relay-gw-a"], "a");
    assert_eq!(data["relay-gw-b"], "b");
    assert_eq!(data[names::PEER_CERT_KEY], "PEM");
}

#[test]
fn spec_hashes_are_pinned_and_separate_their_parts() {
    // Pinned: a change of this value restarts every relay of every facility on upgrade.
    // (FNV-1a of the bytes `["a","b"]`.)
    assert_eq!(spec_hash(&["a", "b"]), "aec547ab721fa7a8");
    assert_ne!(spec_hash(&["ab", "c"]), spec_hash(&["a", "bc"]), "parts do not run into each other");
}

#[test]
fn the_gateway_names_the_relays_priority_class_and_resources() {
    let mut gw = gateway();
    gw.spec.priority_class_name = Some("scistream-relays".into());
    gw.spec.resources = Some(serde_json::from_value(serde_json::json!({"limits": {"memory": "1Gi"}})).unwrap());
    let (s, r) = (side(), relay());
    let rendered = Rendered {
        file_name: "c",
        text: String::new(),
        args: vec![],
        enforces_rate: false,
        health: None,
        ready_command: None,
    };
    let pod = relay_pod(&RelayPod {
        side: &s,
        relay: &r,
        rendered: &rendered,
        image: "s2ds:test",
        gateway: &gw,
        health: None,
        drain_seconds: 20,
        tls: false,
        spec_hash: "abc".into(),
    });
    let spec = pod.spec.unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("scistream-relays"));
    let limits = spec.containers[0].resources.as_ref().and_then(|r| r.limits.clone()).unwrap();
    assert_eq!(limits["memory"].0, "1Gi", "the Gateway's resources replace the default");
}
