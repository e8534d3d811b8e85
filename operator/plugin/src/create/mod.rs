//! `kubectl scistream create`: protocol steps 1-5 across two facilities, with progress, and a
//! rollback of everything created when a step fails, times out or is interrupted (Ctrl-C,
//! SIGTERM).

mod preflight;
pub mod report;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent},
};
use scistream_api::{Phase, Role, StreamRequest, conditions, keys};
use serde_json::json;

pub use self::preflight::{check_arguments, gateway_problem};
use self::{
    preflight::preflight,
    report::{CreateReport, SideReport},
};
use crate::{
    cli::{Cli, CreateArgs, Output},
    error::{Error, Result},
    facility::Facility,
    objects,
    out::{self, Format},
    progress::Step,
};

/// What was (or may have been) created, for rollback. An object is recorded before the
/// call that creates it: a call interrupted in flight may have created it, and rolling back
/// something that is not there is harmless.
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
                Ok(()) => out::note(&format!("  rolled back {kind} {}/{name} in {}", f.namespace, f.context)),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    out::note(&format!("  could not roll back {kind} {}/{name} in {}: {e}", f.namespace, f.context))
                }
            }
        }
    }
}

async fn create_side(f: &Facility, side: objects::Side, created: &mut Created) -> Result<StreamRequest> {
    let pp = PostParams { field_manager: Some(keys::FIELD_MANAGER_PLUGIN.to_owned()), ..PostParams::default() };
    let name = side.request.name_any();
    created.items.push((f.clone(), "StreamRequest", name.clone()));
    let request = f
        .requests()
        .create(&pp, &side.request)
        .await
        .map_err(f.fail(format!("create StreamRequest {name} in {}", f.context)))?;
    if let Some(mut secret) = side.secret {
        // Owned by the request: deleting the request deletes its key.
        secret.metadata.owner_references = request.controller_owner_ref(&()).map(|o| vec![o]);
        let api: Api<Secret> = Api::namespaced(f.client.clone(), &f.namespace);
        created.items.push((f.clone(), "Secret", objects::secret_name(&name)));
        api.create(&pp, &secret).await.map_err(f.fail(format!("create the Hello-key Secret in {}", f.context)))?;
    }
    Ok(request)
}

/// Resolves on Ctrl-C or SIGTERM with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

/// Watches `name` until `done` says yes, failing on `broken` or after `timeout`: read once,
/// then a watch of that one object from the version read ([`Facility::watch_request`]), read
/// again when the watch ends or the server says the version is gone.
pub async fn wait_for(
    f: &Facility,
    name: &str,
    timeout: Duration,
    step: &Step,
    done: impl Fn(&StreamRequest) -> bool,
) -> Result<StreamRequest> {
    let mut why = "no status yet (is the operator running?)".to_owned();
    let watching = async {
        loop {
            let read = format!("read StreamRequest {name} in {}", f.context);
            let sr = f.requests().get(name).await.map_err(f.fail(read))?;
            if judge(f, name, &sr, step, &done, &mut why)? {
                return Ok(sr);
            }
            let version = sr.resource_version().unwrap_or_default();
            let seen = |event| match event {
                WatchEvent::Added(sr) | WatchEvent::Modified(sr) => {
                    Ok(judge(f, name, &sr, step, &done, &mut why)?.then_some(sr))
                }
                WatchEvent::Deleted(_) => Err(Error::Failed(format!(
                    "{} side ({}/{name}) was deleted while waiting for it",
                    f.context, f.namespace
                ))),
                _ => Ok(None),
            };
            if let Some(sr) = f.watch_request(name, &version, seen).await? {
                return Ok(sr);
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, watching).await;
    outcome.unwrap_or_else(|_| {
        Err(Error::Failed(format!(
            "timed out after {}s; {} side ({}/{name}): {why}",
            timeout.as_secs(),
            f.context,
            f.namespace
        )))
    })
}

/// Whether `sr` is what the caller waits for; shows where it stands otherwise, and fails
/// when it has failed.
fn judge(
    f: &Facility,
    name: &str,
    sr: &StreamRequest,
    step: &Step,
    done: &impl Fn(&StreamRequest) -> bool,
    why: &mut String,
) -> Result<bool> {
    if done(sr) {
        return Ok(true);
    }
    let status = sr.status.clone().unwrap_or_default();
    let ready = conditions::find(&status.conditions, conditions::types::READY);
    if let Some(c) = ready {
        *why = format!("{}: {}", c.reason, c.message);
    }
    step.detail(&format!("{} side: {why}", f.context));
    if status.phase == Some(Phase::Failed) || ready.is_some_and(|c| c.reason == conditions::reasons::INVALID_SPEC) {
        return Err(Error::Failed(format!("{} side ({}/{name}): {why}", f.context, f.namespace)));
    }
    Ok(false)
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
    let timeout = cli.timeout;
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
    let outcome = tokio::select! {
        r = steps(cli, args, &prod, &cons, timeout, &mut created) => r,
        signal = interrupted() => Err(Error::Interrupted(format!(
            "interrupted ({signal}) before the stream was ready; {}",
            if args.keep_on_failure { "left what was created in place (--keep-on-failure)" } else { "rolled back what was created" }
        ))),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(e) => {
            if matches!(e, Error::Interrupted(_)) {
                out::note(&format!("{e}:"));
            }
            if args.keep_on_failure {
                out::note(&format!(
                    "left in place for inspection (--keep-on-failure): `kubectl scistream describe {} --context {}`",
                    args.name, prod.context
                ));
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

    let report = CreateReport {
        name: args.name.clone(),
        stream_id: stream_id.clone(),
        producer: side_report(args, prod, &p, prod_key.as_deref(), args.prod_control.as_deref()).await?,
        consumer: side_report(args, cons, &c, Some(&cons_key), args.cons_control.as_deref()).await?,
        prod_targets: args.prod_targets.clone(),
    };
    let format = Format::of(cli);
    out::document(format, &report, &[out::request_name(&args.name)], |_| report::render(&report))?;
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
    let line = format!("Ready: the consumer application connects to {}", listeners(&c).join(","));
    // The document is already out: scripts get exactly one; people read this line with it.
    match format.output {
        Output::Table | Output::Wide => out::stdout(&format!("{line}\n")),
        Output::Json | Output::Yaml | Output::Name => {
            out::note(&line);
            Ok(())
        }
    }
}

/// One side of the report: its published control endpoint (best effort: a facility that
/// does not publish one, or does not let this user read it, is said on stderr), the files
/// of `--hello-files`, and the `hello` command.
async fn side_report(
    args: &CreateArgs,
    f: &Facility,
    sr: &StreamRequest,
    key: Option<&str>,
    explicit_control: Option<&str>,
) -> Result<SideReport> {
    let published = match crate::control::published(f, &args.operator_namespace).await {
        Ok(Some(p)) => Some(p),
        Ok(None) => {
            out::note(&format!(
                "note: the operator of {} publishes no control endpoint; its application controller needs --control and --server-cert from the facility",
                f.context
            ));
            None
        }
        Err(e) => {
            out::note(&format!("note: cannot read the control endpoint of {}: {e}", f.context));
            None
        }
    };
    let role = match sr.spec.role {
        Role::Producer => scistream_api::control::ROLE_PROD,
        Role::Consumer => scistream_api::control::ROLE_CONS,
    };
    let mut side = SideReport {
        context: f.context.clone(),
        namespace: f.namespace.clone(),
        listeners: listeners(sr),
        hello_key: key.map(str::to_owned),
        control: explicit_control.map(str::to_owned).or_else(|| published.as_ref().map(|p| p.address.clone())),
        server_cert_file: None,
        key_file: None,
        hello: None,
    };
    if let (Some(dir), Some(p), Some(key)) = (&args.hello_files, &published, key) {
        let (cert, key_file) = crate::control::hello_files(dir, &args.name, &f.context);
        let write = |path: &std::path::Path, text: &str, private: bool| {
            let written = if private { crate::control::write_private(path, text) } else { std::fs::write(path, text) };
            written.map_err(|e| Error::Usage(format!("--hello-files: cannot write {}: {e}", path.display())))
        };
        write(&cert, &p.ca_pem, false)?;
        write(&key_file, key, true)?;
        side.server_cert_file = Some(cert);
        side.key_file = Some(key_file);
    }
    if key.is_some() {
        side.hello = Some(report::hello_command(&side, role, &sr.spec.stream_id, explicit_control));
    }
    Ok(side)
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
            .map_err(prod.fail(format!("set the producer's peer certificate in {}", prod.context)))?;
    }
    cons.requests()
        .patch(name, &pp, &Patch::Merge(&json!({"spec": cons_spec})))
        .await
        .map_err(cons.fail(format!("set the consumer's remote listeners in {}", cons.context)))?;
    Ok(())
}

#[cfg(test)]
mod tests;
