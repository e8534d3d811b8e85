//! `kubectl scistream doctor [STREAM]`: a checklist of what a stream needs, with the fix for
//! each failure and a non-zero exit code when something fails. Gathering (I/O) is here; the
//! checks are pure functions in [`checks`].

pub mod checks;
pub mod datapath;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt, api::ListParams};
use scistream_api::keys;
use serde::Serialize;

use self::checks::{Check, FacilityFacts, LeaseFacts, StreamSide, Verdict};
use crate::{
    cli::{Cli, DoctorArgs},
    error::{Error, Result},
    facility::Facility,
    out::{self, Format},
    show,
};

/// Name of the operator's leader Lease (the chart's default).
const LEASE: &str = "scistream-operator";
/// How long the control endpoint may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The document of `doctor`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Every check.
    pub checks: Vec<Check>,
    /// How many failed.
    pub failed: usize,
}

async fn facility_facts(f: &Facility, operator_namespace: &str) -> FacilityFacts {
    let api = f
        .gateways()
        .list(&ListParams::default().limit(1))
        .await
        .map(|_| keys::VERSION.to_owned())
        .map_err(|e| f.fail(format!("list Gateways in {}", f.context))(e).to_string());
    let leases: Api<Lease> = Api::namespaced(f.client.clone(), operator_namespace);
    let lease = match leases.get_opt(LEASE).await {
        Ok(None) => None,
        Ok(Some(l)) => {
            let spec = l.spec.unwrap_or_default();
            let last = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
            let age = last.map_or(i64::MAX, |t| jiff_now().duration_since(t).as_secs().max(0));
            Some(Ok(LeaseFacts {
                holder: spec.holder_identity.unwrap_or_default(),
                age_seconds: age,
                duration_seconds: i64::from(spec.lease_duration_seconds.unwrap_or(15)),
            }))
        }
        Err(e) => Some(Err(e.to_string())),
    };
    let gateways = if api.is_ok() {
        f.gateways()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| f.fail(format!("list Gateways in {}", f.context))(e).to_string())
    } else {
        Ok(Vec::new())
    };
    let control = match crate::control::published(f, operator_namespace).await {
        Ok(Some(p)) => {
            let reached = match crate::reach::trusted_from_pem(p.ca_pem.as_bytes()) {
                Err(why) => Err(format!("the published certificate is unusable: {why}")),
                Ok(certs) => {
                    let trusted = crate::reach::TrustedCert {
                        source: "the published certificate".into(),
                        pem: p.ca_pem.clone().into_bytes(),
                        certs,
                    };
                    match crate::reach::probe(&p.address, &trusted, PROBE_TIMEOUT).await {
                        Ok(facts) => Ok(facts.map_or_else(|| "(no certificate)".to_owned(), |c| c.names.join(", "))),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            Some((p.address, reached))
        }
        _ => None,
    };
    FacilityFacts {
        context: f.context.clone(),
        operator_namespace: operator_namespace.to_owned(),
        api,
        lease,
        gateways,
        control,
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

async fn stream_side(f: &Facility, request: scistream_api::StreamRequest) -> StreamSide {
    let facts = show::facts(f, request).await;
    let relays = match &facts.pods {
        Ok(pods) => Ok(show::describe::relays(&facts.request, facts.gateway.as_ref().ok(), Some(pods))),
        Err(why) => Err(why.clone()),
    };
    StreamSide { context: f.context.clone(), request: facts.request, relays }
}

/// Most WAN listeners probed per stream.
const MAX_PROBES: usize = 16;

/// The WAN hop of a MutualTLS stream: each producer listener the consumer side dials, probed
/// from here with the certificate that side pins (see [`datapath`]).
async fn wan_listeners(sides: &[StreamSide]) -> Vec<Check> {
    let mut out = Vec::new();
    for s in sides {
        let spec = &s.request.spec;
        if spec.role != scistream_api::Role::Consumer || spec.data_channel != scistream_api::DataChannel::MutualTLS {
            continue;
        }
        let Some(pinned) = spec.peer_certificate.as_deref() else { continue };
        for listener in spec.remote_listeners.iter().flatten().take(MAX_PROBES) {
            let probe = datapath::probe(listener, pinned, PROBE_TIMEOUT).await;
            out.push(checks::wan_listener(&s.context, &s.request.name_any(), listener, &probe));
        }
    }
    out
}

/// Runs `doctor`.
pub async fn run(cli: &Cli, args: &DoctorArgs) -> Result<()> {
    let f =
        Facility::connect(cli.kubeconfig.as_deref(), args.at.context.as_deref(), args.at.namespace.as_deref()).await?;
    let mut checks = checks::facility(&facility_facts(&f, &args.operator_namespace).await);
    if let Some(name) = &args.name {
        let sr = show::find(&f, name).await?;
        let peer = show::peer(cli, &sr).await;
        let missing = match (&peer, sr.annotations().get(keys::ANNOTATION_PEER_CONTEXT)) {
            (Some(_), _) => None,
            (None, Some(ctx)) => Some(format!("the other side in context {ctx} was not found or is unreachable")),
            (None, None) => Some("no peer annotations: only this side can be checked".to_owned()),
        };
        let mut sides = vec![stream_side(&f, sr).await];
        if let Some((pf, p)) = peer {
            checks.extend(checks::facility(&facility_facts(&pf, &args.operator_namespace).await));
            sides.push(stream_side(&pf, p).await);
        }
        sides.sort_by_key(|s| s.request.spec.role != scistream_api::Role::Producer);
        checks.extend(checks::stream(&sides, missing));
        if !args.no_probe {
            checks.extend(wan_listeners(&sides).await);
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let report = Report { checks, failed };
    out::document(Format::of(cli), &report, &[], |_| checks::render(&report.checks))?;
    if failed > 0 {
        return Err(Error::Failed(format!("{failed} checks failed; each says how to fix it")));
    }
    Ok(())
}
