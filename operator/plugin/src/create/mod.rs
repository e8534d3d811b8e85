//! `kubectl scistream create`: protocol steps 1-5 across two facilities, with progress, and a
//! rollback of everything created when a step fails.

use std::time::Duration;

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::Secret,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use scistream_api::{
    Gateway, Implementation, Phase, Rate, Role, StreamRequest, conditions, endpoint::parse_list, keys,
    rate::parse_duration,
};
use serde_json::json;

use crate::{
    cli::{Channel, Cli, CreateArgs, Output},
    error::{Error, Result},
    facility::Facility,
    objects,
    progress::Step,
};

/// Checks arguments that need no cluster.
fn check_arguments(args: &CreateArgs) -> Result<()> {
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
        .map_err(Error::kube(format!("ask {} for permissions", f.context)))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Everything that can be checked before creating anything.
async fn preflight(prod: &Facility, cons: &Facility, args: &CreateArgs) -> Result<()> {
    for (f, gateway) in [(prod, &args.prod_gateway), (cons, &args.cons_gateway)] {
        let gw = f
            .gateways()
            .get_opt(gateway)
            .await
            .map_err(Error::kube(format!("read Gateway {gateway} in {}", f.context)))?;
        let Some(gw) = gw else {
            return Err(Error::NotFound(format!(
                "Gateway {gateway} does not exist in {}; `kubectl scistream gateways --context {}` lists them",
                f.context, f.context
            )));
        };
        if let Some(problem) = gateway_problem(&gw, args, &f.context) {
            return Err(Error::Refused(problem));
        }
        if f.requests()
            .get_opt(&args.name)
            .await
            .map_err(Error::kube(format!("read StreamRequests in {}", f.context)))?
            .is_some()
        {
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

/// What was created, for rollback.
#[derive(Default)]
struct Created {
    items: Vec<(Facility, &'static str, String)>,
}

impl Created {
    async fn rollback(&self) {
        for (f, kind, name) in self.items.iter().rev() {
            let dp = DeleteParams::default();
            let result = match *kind {
                "StreamRequest" => f.requests().delete(name, &dp).await.map(|_| ()),
                _ => Api::<Secret>::namespaced(f.client.clone(), &f.namespace).delete(name, &dp).await.map(|_| ()),
            };
            match result {
                Ok(()) => eprintln!("  rolled back {kind} {}/{name} in {}", f.namespace, f.context),
                Err(e) => eprintln!("  could not roll back {kind} {}/{name} in {}: {e}", f.namespace, f.context),
            }
        }
    }
}

async fn create_side(f: &Facility, side: objects::Side, created: &mut Created) -> Result<StreamRequest> {
    let pp = PostParams { field_manager: Some(keys::FIELD_MANAGER_PLUGIN.to_owned()), ..PostParams::default() };
    let name = side.request.name_any();
    let request = f
        .requests()
        .create(&pp, &side.request)
        .await
        .map_err(Error::kube(format!("create StreamRequest {name} in {}", f.context)))?;
    created.items.push((f.clone(), "StreamRequest", name.clone()));
    if let Some(mut secret) = side.secret {
        // Owned by the request: deleting the request deletes its key.
        secret.metadata.owner_references = request.controller_owner_ref(&()).map(|o| vec![o]);
        let api: Api<Secret> = Api::namespaced(f.client.clone(), &f.namespace);
        api.create(&pp, &secret).await.map_err(Error::kube(format!("create the Hello-key Secret in {}", f.context)))?;
        created.items.push((f.clone(), "Secret", objects::secret_name(&name)));
    }
    Ok(request)
}

/// Polls `name` until `done` says yes, failing on `broken` or after `timeout`.
pub async fn wait_for(
    f: &Facility,
    name: &str,
    timeout: Duration,
    step: &Step,
    done: impl Fn(&StreamRequest) -> bool,
) -> Result<StreamRequest> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let sr =
            f.requests().get(name).await.map_err(Error::kube(format!("read StreamRequest {name} in {}", f.context)))?;
        if done(&sr) {
            return Ok(sr);
        }
        let status = sr.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, conditions::types::READY);
        let why = ready
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "no status yet (is the operator running?)".to_owned());
        step.detail(&format!("{} side: {why}", f.context));
        if status.phase == Some(Phase::Failed) || ready.is_some_and(|c| c.reason == conditions::reasons::INVALID_SPEC) {
            return Err(Error::Failed(format!("{} side ({}/{name}): {why}", f.context, f.namespace)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Failed(format!(
                "timed out after {}s; {} side ({}/{name}): {why}",
                timeout.as_secs(),
                f.context,
                f.namespace
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn reserved(sr: &StreamRequest) -> bool {
    sr.status.as_ref().is_some_and(|s| !s.listeners.is_empty())
}

fn hello_done(sr: &StreamRequest) -> bool {
    sr.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::types::HELLO_RECEIVED))
}

fn ready(sr: &StreamRequest) -> bool {
    sr.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
}

/// Runs `create`.
pub async fn run(cli: &Cli, args: &CreateArgs) -> Result<()> {
    check_arguments(args)?;
    let timeout = parse_duration(&cli.timeout).map_err(|e| Error::Usage(format!("--timeout: {e}")))?;
    let step = Step::start("Checking both facilities");
    let kubeconfig = cli.kubeconfig.as_deref();
    let prod = Facility::connect(kubeconfig, args.prod_context.as_deref(), args.prod_namespace.as_deref()).await?;
    let cons = Facility::connect(kubeconfig, args.cons_context.as_deref(), args.cons_namespace.as_deref()).await?;
    if let Err(e) = preflight(&prod, &cons, args).await {
        step.failed(&e.to_string());
        return Err(e);
    }
    step.done(&format!("producer {prod:?}, consumer {cons:?}"));
    let mut created = Created::default();
    match steps(cli, args, &prod, &cons, timeout, &mut created).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if args.keep_on_failure {
                eprintln!(
                    "left in place for inspection (--keep-on-failure): `kubectl scistream describe {} --context {}`",
                    args.name, prod.context
                );
            } else {
                created.rollback().await;
            }
            Err(e)
        }
    }
}

async fn steps(
    cli: &Cli,
    args: &CreateArgs,
    prod: &Facility,
    cons: &Facility,
    timeout: Duration,
    created: &mut Created,
) -> Result<()> {
    let stream_id = uuid::Uuid::new_v4().to_string();
    let prod_key = args.prod_targets.is_empty().then(objects::new_key);
    let cons_key = objects::new_key();
    let step = Step::start("Creating both StreamRequests");
    let p = objects::side(args, Role::Producer, &stream_id, prod_key.as_deref(), (&cons.context, &cons.namespace));
    let c = objects::side(args, Role::Consumer, &stream_id, Some(&cons_key), (&prod.context, &prod.namespace));
    create_side(prod, p, created).await?;
    create_side(cons, c, created).await?;
    step.done(&format!("stream id {stream_id}"));

    let step = Step::start("Waiting for gateway reservations");
    let p = wait_for(prod, &args.name, timeout, &step, reserved).await?;
    let c = wait_for(cons, &args.name, timeout, &step, reserved).await?;
    step.done(&format!("{} + {} listeners", listeners(&p).len(), listeners(&c).len()));

    let step = Step::start("Exchanging listeners and certificates");
    connect_sides(prod, cons, &args.name, &p, &c).await?;
    step.done("consumer relays will forward to the producer's listeners");

    report(cli.output, args, prod, cons, &stream_id, prod_key.as_deref(), &cons_key, &p, &c);
    if !args.wait {
        return Ok(());
    }
    let step = Step::start("Waiting for both Hellos");
    wait_for(prod, &args.name, timeout, &step, hello_done).await?;
    wait_for(cons, &args.name, timeout, &step, hello_done).await?;
    step.done("");
    let step = Step::start("Waiting for the data path");
    wait_for(prod, &args.name, timeout, &step, ready).await?;
    let c = wait_for(cons, &args.name, timeout, &step, ready).await?;
    step.done("");
    println!("Ready: the consumer application connects to {}", listeners(&c).join(","));
    Ok(())
}

fn listeners(sr: &StreamRequest) -> Vec<String> {
    sr.status.as_ref().map(|s| s.listeners.clone()).unwrap_or_default()
}

/// The connection map: the consumer forwards to the producer's listeners; each side pins the
/// other's certificate (public parts only; private keys never leave their facility).
pub async fn connect_sides(
    prod: &Facility,
    cons: &Facility,
    name: &str,
    p: &StreamRequest,
    c: &StreamRequest,
) -> Result<()> {
    let pp = PatchParams { field_manager: Some(keys::FIELD_MANAGER_PLUGIN.to_owned()), ..PatchParams::default() };
    let cert = |sr: &StreamRequest| sr.status.as_ref().and_then(|s| s.certificate.clone());
    let mut cons_spec = json!({"remoteListeners": listeners(p)});
    if p.spec.data_channel == scistream_api::DataChannel::MutualTLS {
        let (Some(pc), Some(cc)) = (cert(p), cert(c)) else {
            return Err(Error::Failed(
                "a side has no data-channel certificate yet; is its operator up to date?".to_owned(),
            ));
        };
        cons_spec["peerCertificate"] = json!(pc);
        prod.requests()
            .patch(name, &pp, &Patch::Merge(&json!({"spec": {"peerCertificate": cc}})))
            .await
            .map_err(Error::kube(format!("set the producer's peer certificate in {}", prod.context)))?;
    }
    cons.requests()
        .patch(name, &pp, &Patch::Merge(&json!({"spec": cons_spec})))
        .await
        .map_err(Error::kube(format!("set the consumer's remote listeners in {}", cons.context)))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    output: Output,
    args: &CreateArgs,
    prod: &Facility,
    cons: &Facility,
    stream_id: &str,
    prod_key: Option<&str>,
    cons_key: &str,
    p: &StreamRequest,
    c: &StreamRequest,
) {
    let control = |c: &Option<String>, f: &Facility| {
        c.clone().unwrap_or_else(|| format!("<the control endpoint of {}>", f.context))
    };
    let value = json!({
        "name": args.name,
        "streamId": stream_id,
        "producer": {"context": prod.context, "namespace": prod.namespace, "listeners": listeners(p),
                     "helloKey": prod_key, "control": control(&args.prod_control, prod)},
        "consumer": {"context": cons.context, "namespace": cons.namespace, "listeners": listeners(c),
                     "helloKey": cons_key, "control": control(&args.cons_control, cons)},
    });
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default()),
        Output::Yaml => print!("{}", serde_yaml::to_string(&value).unwrap_or_default()),
        Output::Table | Output::Wide => {
            println!("Stream {} (id {stream_id})", args.name);
            match prod_key {
                Some(key) => println!(
                    "  producer application controller: hello --role PROD --stream-id {stream_id} --key {key} --control {} --listeners <host:port,...>",
                    control(&args.prod_control, prod)
                ),
                None => println!("  producer: static targets {}, no Hello needed", args.prod_targets.join(",")),
            }
            println!(
                "  consumer application controller: hello --role CONS --stream-id {stream_id} --key {cons_key} --control {}",
                control(&args.cons_control, cons)
            );
            println!("  consumer application connects to: {}", listeners(c).join(","));
        }
    }
}

#[cfg(test)]
mod tests;
