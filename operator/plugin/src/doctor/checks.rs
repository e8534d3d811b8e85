//! The doctor's checklist from what was fetched (pure, table-tested): per facility the API
//! (CRDs served in our version), the operator (leading, or at least processing), each
//! Gateway (Ready, its nodes and addresses) and the control endpoint (reachable from here
//! with the published certificate); per stream both sides' phases, the relay of each reserved
//! node, and the pinned peer certificates agreeing across the facilities. Every failure says
//! how to fix it.

use kube::ResourceExt;
use scistream_api::{DataChannel, Gateway, Phase, Role, StreamRequest, conditions};
use serde::Serialize;

use crate::show::describe::RelayReport;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Wrong: the stream cannot work (or will not) until fixed.
    Fail,
    /// Could not be checked from here (permission, nothing published).
    Unknown,
}

/// One line of the checklist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Kubeconfig context of the facility.
    pub facility: String,
    /// What was checked.
    pub check: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do (failures and unknowns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(facility: &str, name: &str, verdict: Verdict, detail: String, fix: Option<String>) -> Check {
    Check { facility: facility.to_owned(), check: name.to_owned(), verdict, detail, fix }
}

/// The Lease the leader renews, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFacts {
    /// Who holds it.
    pub holder: String,
    /// Seconds since its last renewal.
    pub age_seconds: i64,
    /// Its duration.
    pub duration_seconds: i64,
}

/// What was fetched about one facility.
#[derive(Clone, Debug)]
pub struct FacilityFacts {
    /// Kubeconfig context.
    pub context: String,
    /// Namespace of the operator.
    pub operator_namespace: String,
    /// The API: `Ok(version)` when StreamRequests and Gateways are served, else why not.
    pub api: Result<String, String>,
    /// The leader Lease: `None` when there is none (no leader election), `Err` unreadable.
    pub lease: Option<Result<LeaseFacts, String>>,
    /// The Gateways (or why they could not be listed).
    pub gateways: Result<Vec<Gateway>, String>,
    /// The control endpoint: `None` when not published; else its address and whether it
    /// answered TLS with the published certificate (`Err`: why not).
    pub control: Option<(String, Result<String, String>)>,
}

/// The checks of one facility.
pub fn facility(f: &FacilityFacts) -> Vec<Check> {
    let c = f.context.as_str();
    let ns = f.operator_namespace.as_str();
    let mut out = Vec::new();
    match &f.api {
        Ok(version) => out.push(check(c, "CRDs", Verdict::Pass, format!("scistream.io/{version} served"), None)),
        Err(why) => {
            out.push(check(
                c,
                "CRDs",
                Verdict::Fail,
                why.clone(),
                Some(
                    "install them: `kubectl apply --server-side -f crds/` or the Helm chart (docs/operator-guide.md)"
                        .into(),
                ),
            ));
            return out;
        }
    }
    let operator_fix = format!(
        "check the operator: `kubectl -n {ns} get pods -l app.kubernetes.io/name=scistream-operator` and \
         `kubectl -n {ns} logs deploy/scistream-operator`"
    );
    let gateways = f.gateways.as_ref().ok();
    let unprocessed: Vec<String> = gateways
        .into_iter()
        .flatten()
        .filter(|g| g.status.as_ref().and_then(|s| s.observed_generation) != g.metadata.generation)
        .map(ResourceExt::name_any)
        .collect();
    out.push(match &f.lease {
        Some(Ok(l)) if l.age_seconds <= l.duration_seconds => {
            check(c, "operator", Verdict::Pass, format!("{} leads (renewed {}s ago)", l.holder, l.age_seconds), None)
        }
        Some(Ok(l)) => check(
            c,
            "operator",
            Verdict::Fail,
            format!(
                "no leader: {} last renewed the Lease {}s ago (it lasts {}s)",
                l.holder, l.age_seconds, l.duration_seconds
            ),
            Some(operator_fix),
        ),
        _ if !unprocessed.is_empty() => check(
            c,
            "operator",
            Verdict::Fail,
            format!("Gateway {} not processed (no status for its current spec)", unprocessed.join(", ")),
            Some(operator_fix),
        ),
        Some(Err(why)) => check(c, "operator", Verdict::Unknown, format!("cannot read its Lease: {why}"), None),
        None => {
            check(c, "operator", Verdict::Pass, "processes every Gateway (no leader Lease: one replica)".into(), None)
        }
    });
    match &f.gateways {
        Err(why) => out.push(check(c, "Gateways", Verdict::Unknown, why.clone(), None)),
        Ok(list) if list.is_empty() => out.push(check(
            c,
            "Gateways",
            Verdict::Fail,
            "none".into(),
            Some("the facility creates one: manifests/examples/gateway.yaml or defaultGateway.enabled".into()),
        )),
        Ok(list) => out.extend(list.iter().map(|g| gateway(c, g))),
    }
    out.push(match &f.control {
        None => check(
            c,
            "control endpoint",
            Verdict::Unknown,
            format!("not published (no ConfigMap {ns}/scistream-control-endpoint)"),
            Some("application controllers need its address and certificate from the facility".into()),
        ),
        Some((address, Ok(cert))) => {
            check(c, "control endpoint", Verdict::Pass, format!("{address} answers TLS as {cert}"), None)
        }
        Some((address, Err(why))) => check(
            c,
            "control endpoint",
            Verdict::Fail,
            format!("{address}: {why}"),
            Some("see docs/operator-guide.md, \"Reaching the control endpoint\"".into()),
        ),
    });
    out
}

fn gateway(c: &str, g: &Gateway) -> Check {
    let name = format!("Gateway {}", g.name_any());
    let status = g.status.clone().unwrap_or_default();
    let nodes: Vec<String> = status
        .nodes
        .iter()
        .map(|n| {
            let wan = n.wan_address.as_deref().unwrap_or("no WAN address");
            let lan = n.lan_address.as_deref().unwrap_or("no LAN address");
            format!("{} ({}, WAN {wan}, LAN {lan})", n.name, if n.ready { "ready" } else { "not ready" })
        })
        .collect();
    let nodes = if nodes.is_empty() { "no node matches".to_owned() } else { nodes.join("; ") };
    match conditions::find(&status.conditions, conditions::types::READY) {
        Some(r) if r.status == "True" => check(c, &name, Verdict::Pass, format!("Ready: {nodes}"), None),
        Some(r) => check(
            c,
            &name,
            Verdict::Fail,
            format!("{}: {} ({nodes})", r.reason, r.message),
            Some("docs/operator-guide.md, \"Troubleshooting by condition reason\"".into()),
        ),
        None => check(c, &name, Verdict::Fail, format!("no Ready condition yet ({nodes})"), None),
    }
}

/// One side of a stream as fetched: its context, its request and its relays.
#[derive(Clone, Debug)]
pub struct StreamSide {
    /// Kubeconfig context.
    pub context: String,
    /// The request.
    pub request: StreamRequest,
    /// Its relays per node (or why they could not be read).
    pub relays: Result<Vec<RelayReport>, String>,
}

/// The checks of a stream (one or both sides).
pub fn stream(sides: &[StreamSide], missing_peer: Option<String>) -> Vec<Check> {
    let mut out = Vec::new();
    for s in sides {
        let c = s.context.as_str();
        let sr = &s.request;
        let name = format!("{:?} side {}/{}", sr.spec.role, sr.namespace().unwrap_or_default(), sr.name_any());
        let status = sr.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, conditions::types::READY);
        let why = ready.map(|r| format!("{}: {}", r.reason, r.message)).unwrap_or_else(|| "no status yet".into());
        out.push(match status.phase {
            Some(Phase::Ready) => check(c, &name, Verdict::Pass, "Ready".into(), None),
            phase => check(
                c,
                &name,
                Verdict::Fail,
                format!("{} ({why})", phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into())),
                Some(format!(
                    "`kubectl scistream describe {} --context {c}`; the user guide's table of reasons",
                    sr.name_any()
                )),
            ),
        });
        match &s.relays {
            Err(why) => out.push(check(c, "relays", Verdict::Unknown, why.clone(), None)),
            Ok(relays) => {
                for r in relays.iter().filter(|r| r.reserved) {
                    let what = format!("relay on {}", r.node);
                    let state = r.state.as_deref().map(|s| format!(", {s}")).unwrap_or_default();
                    out.push(if r.ready {
                        check(c, &what, Verdict::Pass, format!("ready, {} listeners", r.listeners.len()), None)
                    } else {
                        check(
                            c,
                            &what,
                            Verdict::Fail,
                            format!("{}{state}, {} restarts", r.phase, r.restarts),
                            Some(format!(
                                "the facility looks at pod {} (kubectl logs)",
                                r.pod.as_deref().unwrap_or("(none)")
                            )),
                        )
                    });
                }
            }
        }
    }
    if let Some(why) = missing_peer {
        let c = sides.first().map(|s| s.context.clone()).unwrap_or_default();
        out.push(check(&c, "other side", Verdict::Unknown, why, None));
    }
    if let [a, b] = sides
        && a.request.spec.data_channel == DataChannel::MutualTLS
    {
        let (p, c) = if a.request.spec.role == Role::Producer { (a, b) } else { (b, a) };
        let cert = |s: &StreamSide| s.request.status.as_ref().and_then(|st| st.certificate.clone());
        let pinned = |s: &StreamSide| s.request.spec.peer_certificate.clone();
        let agree = pinned(p).is_some() && pinned(p) == cert(c) && pinned(c).is_some() && pinned(c) == cert(p);
        out.push(if agree {
            check(
                &p.context,
                "pinned certificates",
                Verdict::Pass,
                "each side pins the other's certificate".into(),
                None,
            )
        } else {
            check(
                &p.context,
                "pinned certificates",
                Verdict::Fail,
                "a side pins a certificate the other does not present: their relays refuse each other".into(),
                Some(format!(
                    "`kubectl scistream update {} --context {}` copies them again",
                    p.request.name_any(),
                    p.context
                )),
            )
        });
    }
    out
}

/// The check of the WAN listener `listener`, which the consumer side `request` (in context
/// `c`) dials, from its [`Probe`](super::datapath::Probe).
pub fn wan_listener(c: &str, request: &str, listener: &str, probe: &super::datapath::Probe) -> Check {
    use super::datapath::Probe;
    let what = format!("WAN listener {listener}");
    match probe {
        Probe::Pinned => check(
            c,
            &what,
            Verdict::Pass,
            "reachable from here; the producer relay presents the pinned certificate and holds its key".into(),
            None,
        ),
        Probe::NotPinned(presented) => check(
            c,
            &what,
            Verdict::Fail,
            format!(
                "the relay listening there presents {presented}, a certificate the consumer side does not pin: the \
                 consumer's relay refuses it"
            ),
            Some(format!(
                "`kubectl scistream update {request} --context {c}` copies the listeners and certificates again \
                 (the producer's listeners may have moved)"
            )),
        ),
        Probe::BadPin => check(
            c,
            &what,
            Verdict::Fail,
            "the consumer side's spec.peerCertificate is not a PEM certificate".into(),
            Some(format!("`kubectl scistream update {request} --context {c}` copies the certificates again")),
        ),
        Probe::Unreachable(why) => check(
            c,
            &what,
            Verdict::Unknown,
            format!("not reachable from here ({why}); the consumer gateway may still reach it"),
            None,
        ),
        Probe::NoHandshake(why) => check(
            c,
            &what,
            Verdict::Fail,
            format!("something answers there but no relay handshake came of it ({why})"),
            Some(
                "the producer facility looks for another process on that port of its gateway node, and at the \
                 relay's log"
                    .into(),
            ),
        ),
    }
}

/// The checklist for people.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match c.verdict {
            Verdict::Pass => "✔",
            Verdict::Fail => "✘",
            Verdict::Unknown => "?",
        };
        out.push_str(&format!("{mark} {}: {}: {}\n", c.facility, c.check, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    out.push_str(&if failed == 0 { "all checks passed\n".to_owned() } else { format!("{failed} checks failed\n") });
    out
}
