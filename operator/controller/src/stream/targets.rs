//! Pure decisions about a stream side: its targets, whether Hello is needed, how its relays
//! are doing, and the order in which waiting requests get capacity.

use k8s_openapi::api::core::v1::Pod;
use scistream_api::{Endpoint, Rate, RateEnforcement, Reservation, Role, StreamRequest, endpoint::parse_list};
use scistream_core::{phase::Relays, relay::RelayMode};

/// Where the relays of this side forward to, or what they still wait for.
pub fn targets(sr: &StreamRequest, mode: RelayMode) -> Result<Vec<Endpoint>, String> {
    let spec = &sr.spec;
    let status = sr.status.as_ref();
    if mode.encrypted() && spec.peer_certificate.is_none() {
        let other = match spec.role {
            Role::Producer => "consumer",
            Role::Consumer => "producer",
        };
        return Err(format!(
            "waiting for spec.peerCertificate (the {other} side's status.certificate; `kubectl scistream create` copies it)"
        ));
    }
    let (list, field) = match spec.role {
        Role::Producer => match &spec.targets {
            Some(t) => (t.clone(), "spec.targets"),
            None => (status.map(|s| s.prod_listeners.clone()).unwrap_or_default(), "the Hello's prod_listeners"),
        },
        Role::Consumer => match &spec.remote_listeners {
            Some(r) => (r.clone(), "spec.remoteListeners"),
            None => {
                return Err("waiting for spec.remoteListeners (the producer side's status.listeners; `kubectl scistream create` copies them)".to_owned());
            }
        },
    };
    if list.is_empty() {
        return Err(format!("{field} is empty: the producer application's Hello must list its endpoints"));
    }
    parse_list(&list).map_err(|(i, e)| format!("{field}[{i}]: {e}"))
}

/// The rate the relays limit a stream to: what the gateway promised, not what was asked
/// for; none (0) when the rate is a reservation only (`status.rateEnforcement`, set by the
/// control endpoint on SciStream 1.x streams).
pub fn relay_rate(reservation: &Reservation, enforcement: Option<RateEnforcement>) -> Rate {
    match enforcement {
        Some(RateEnforcement::ReservationOnly) => Rate::from_bps(0),
        Some(RateEnforcement::Enforced) | None => Rate::from_bps(u64::try_from(reservation.bandwidth_bps).unwrap_or(0)),
    }
}

/// Whether this side waits for an application controller's Hello.
pub fn needs_hello(sr: &StreamRequest) -> bool {
    sr.spec.hello_key_secret_ref.is_some() && !(sr.spec.role == Role::Producer && sr.spec.targets.is_some())
}

/// Whether a pod is Ready.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod is failing, if it is (a crash loop, an image or config error, or a failed pod).
pub fn pod_failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(status.reason.clone().unwrap_or_else(|| "Failed".to_owned()));
    }
    status.container_statuses.iter().flatten().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        matches!(
            reason,
            "CrashLoopBackOff"
                | "ErrImagePull"
                | "ImagePullBackOff"
                | "CreateContainerConfigError"
                | "RunContainerError"
        )
        .then(|| match &waiting.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason.to_owned(),
        })
    })
}

/// The relays' state from the pods found for the nodes of the reservation.
pub fn relays(nodes: &[String], pods: &[(String, Pod)]) -> Relays {
    let mut r = Relays { wanted: nodes.len(), ..Relays::default() };
    for node in nodes {
        if let Some((_, pod)) = pods.iter().find(|(n, _)| n == node) {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if pod_ready(pod) {
                r.ready += 1;
            } else if let Some(why) = pod_failure(pod) {
                r.failing.push((node.clone(), why));
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus};
    use scistream_api::StreamRequestSpec;

    fn sr(role: Role) -> StreamRequest {
        let spec: StreamRequestSpec = serde_json::from_value(serde_json::json!({
            "streamId": "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", "role": role, "gateway": "dtn",
            "helloKeySecretRef": {"name": "k"}
        }))
        .unwrap();
        StreamRequest::new("s", spec)
    }

    #[test]
    fn consumer_waits_for_remote_listeners_and_certificate() {
        let mut c = sr(Role::Consumer);
        assert!(targets(&c, RelayMode::Plain).unwrap_err().contains("spec.remoteListeners"));
        c.spec.remote_listeners = Some(vec!["198.51.100.1:5100".into()]);
        assert!(targets(&c, RelayMode::TlsClient).unwrap_err().contains("spec.peerCertificate"));
        c.spec.peer_certificate = Some("-----BEGIN CERTIFICATE-----".into());
        assert_eq!(targets(&c, RelayMode::TlsClient).unwrap().len(), 1);
    }

    #[test]
    fn producer_uses_static_targets_else_hello_listeners() {
        let mut p = sr(Role::Producer);
        assert!(needs_hello(&p));
        assert!(targets(&p, RelayMode::Plain).unwrap_err().contains("prod_listeners"));
        p.status = Some(scistream_api::StreamRequestStatus {
            prod_listeners: vec!["10.0.0.1:7000".into(), "bad".into()],
            ..Default::default()
        });
        assert!(targets(&p, RelayMode::Plain).unwrap_err().contains("prod_listeners[1]"));
        p.spec.targets = Some(vec!["10.0.0.2:7000".into()]);
        assert!(!needs_hello(&p));
        assert_eq!(targets(&p, RelayMode::Plain).unwrap()[0].to_string(), "10.0.0.2:7000");
    }

    #[test]
    fn relays_limit_to_the_promised_rate_unless_it_is_a_reservation_only() {
        let r = Reservation { bandwidth_bps: 10_000_000, ..Default::default() };
        assert_eq!(relay_rate(&r, None).bps(), 10_000_000);
        assert_eq!(relay_rate(&r, Some(RateEnforcement::Enforced)).bps(), 10_000_000);
        assert_eq!(relay_rate(&r, Some(RateEnforcement::ReservationOnly)).bps(), 0, "0: no limit");
    }

    #[test]
    fn relay_state_from_pods() {
        let ready = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let crashing = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting { reason: Some("CrashLoopBackOff".into()), message: None }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let nodes = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let r = relays(&nodes, &[("a".into(), ready), ("b".into(), crashing)]);
        assert_eq!((r.wanted, r.ready), (3, 1));
        assert_eq!(r.failing, vec![("b".to_owned(), "CrashLoopBackOff".to_owned())]);
    }
}
