//! What `create` checks before it creates anything: both Gateways exist, are ready and can
//! take the stream, the name is free on both sides, and the user may create what it needs.

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::{Api, ResourceExt, api::PostParams};
use scistream_api::{Gateway, Implementation, Rate, conditions, endpoint::parse_list, keys};

use crate::{
    cli::{Channel, CreateArgs},
    error::{Error, Result},
    facility::Facility,
};

/// Checks arguments that need no cluster.
pub fn check_arguments(args: &CreateArgs) -> Result<()> {
    parse_list(&args.prod_targets).map_err(|(i, e)| Error::Usage(format!("--prod-targets[{i}]: {e}")))?;
    if !(1..=256).contains(&args.num_conn) {
        return Err(Error::Usage(format!("--num-conn {} is out of range; use 1 to 256", args.num_conn)));
    }
    Ok(())
}

/// Whether the gateway can take the stream now, and if not why (capacity as the operator
/// will count it: listener ports, plus one port per node used for the relay's health listener).
pub fn gateway_problem(gw: &Gateway, args: &CreateArgs, context: &str) -> Option<String> {
    let name = gw.name_any();
    let status = gw.status.clone().unwrap_or_default();
    if !conditions::is_true(&status.conditions, conditions::types::READY) {
        let why = conditions::find(&status.conditions, conditions::types::READY).map(|c| c.message.clone());
        return Some(format!(
            "Gateway {name} in {context} is not ready: {}",
            why.unwrap_or_else(|| "no status yet".to_owned())
        ));
    }
    let impl_ = gw.spec.implementation;
    match (impl_, args.data_channel) {
        (Implementation::Haproxy | Implementation::Nginx, Channel::MutualTls) => {
            return Some(format!(
                "Gateway {name} in {context} uses {impl_:?} (plain TCP only); pass --data-channel Plain or use an S2ds/Stunnel gateway"
            ));
        }
        (Implementation::Stunnel, Channel::Plain) => {
            return Some(format!(
                "Gateway {name} in {context} uses Stunnel (always TLS); use --data-channel MutualTLS"
            ));
        }
        _ => {}
    }
    // Every relay also holds a port for its health listener (probes never use a data listener).
    let free = status.ports_total - status.ports_in_use;
    if free < args.num_conn + 1 {
        return Some(format!(
            "Gateway {name} in {context} has {free} free ports; the stream needs {} plus 1 per gateway node it uses for the relay's health listener",
            args.num_conn,
        ));
    }
    let declared = gw.spec.bandwidth.get();
    let promised = Rate::from_bps(u64::try_from(status.bandwidth_promised_bps).unwrap_or(0));
    let wanted = args.rate.get();
    if promised.saturating_add(wanted) > declared {
        return Some(format!(
            "Gateway {name} in {context} has {} of {declared} left; the stream asks for {wanted}",
            declared.saturating_sub(promised)
        ));
    }
    None
}

async fn can_i(f: &Facility, verb: &str, resource: &str, group: &str) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(f.namespace.clone()),
                verb: Some(verb.to_owned()),
                resource: Some(resource.to_owned()),
                group: Some(group.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(f.client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(f.fail(format!("ask {} for permissions", f.context)))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Everything that can be checked before creating anything.
pub async fn preflight(prod: &Facility, cons: &Facility, args: &CreateArgs) -> Result<()> {
    for (f, gateway) in [(prod, &args.prod_gateway), (cons, &args.cons_gateway)] {
        let gw = f.get_opt(&f.gateways(), gateway, &format!("read Gateway {gateway} in {}", f.context)).await?;
        let Some(gw) = gw else {
            return Err(Error::NotFound(format!(
                "Gateway {gateway} does not exist in {}; `kubectl scistream gateways --context {}` lists them",
                f.context, f.context
            )));
        };
        if let Some(problem) = gateway_problem(&gw, args, &f.context) {
            return Err(Error::Refused(problem));
        }
        let what = format!("read StreamRequests in {}", f.context);
        if f.get_opt(&f.requests(), &args.name, &what).await?.is_some() {
            return Err(Error::Refused(format!(
                "StreamRequest {}/{} already exists in {}; choose another name",
                f.namespace, args.name, f.context
            )));
        }
        for (verb, resource, group) in [("create", "streamrequests", keys::GROUP), ("create", "secrets", "")] {
            if !can_i(f, verb, resource, group).await? {
                return Err(Error::Refused(format!(
                    "you may not {verb} {resource} in {}/{}; ask the facility for the scistream-user role",
                    f.context, f.namespace
                )));
            }
        }
    }
    Ok(())
}
