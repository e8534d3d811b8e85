//! `release` and `update`.

use kube::{
    ResourceExt,
    api::{DeleteParams, Patch, PatchParams, WatchEvent},
};
use scistream_api::{Role, StreamRequest, keys};
use serde::Serialize;
use serde_json::json;

use crate::{
    cli::{Cli, GetArgs, StreamRef},
    create::connect_sides,
    error::{Error, Result},
    facility::Facility,
    out::{self, Format},
    progress::Step,
    show::{both, unless_ignored},
};

/// Where a side was released (the document of `release`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Place {
    /// Kubeconfig context.
    pub context: String,
    /// Namespace.
    pub namespace: String,
}

/// What `release` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Released {
    /// Name of the stream.
    pub name: String,
    /// Its stream id.
    pub stream_id: String,
    /// The sides released.
    pub released: Vec<Place>,
}

/// What `update` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Updated {
    /// Name of the stream.
    pub name: String,
    /// Its stream id.
    pub stream_id: String,
    /// The producer side's listeners the consumer side's relays now forward to.
    pub consumer_forwards_to: Vec<String>,
}

/// Returns once StreamRequest `name` of `uid` no longer exists (one read, then a watch of that
/// object from the version read, [`Facility::watch_request`]; read again when the watch ends).
async fn until_gone(f: &Facility, name: &str, uid: Option<&str>) -> Result<()> {
    let read = format!("read StreamRequest {name} in {}", f.context);
    loop {
        let Some(sr) = f.get_opt(&f.requests(), name, &read).await? else { return Ok(()) };
        if sr.uid().as_deref() != uid {
            return Ok(()); // made again under the same name: the one released is gone
        }
        let version = sr.resource_version().unwrap_or_default();
        let gone = |event: WatchEvent<StreamRequest>| {
            Ok(matches!(event, WatchEvent::Deleted(gone) if gone.uid().as_deref() == uid).then_some(()))
        };
        if f.watch_request(name, &version, gone).await?.is_some() {
            return Ok(());
        }
    }
}

/// Deletes both sides and waits until both are gone (their operators released everything).
pub async fn release(cli: &Cli, args: &GetArgs) -> Result<()> {
    let r = &args.stream;
    let timeout = cli.timeout;
    let Some((f, sr, other)) = unless_ignored(both(cli, &r.at, &r.name).await, args)? else {
        return Ok(());
    };
    let stream_id = sr.spec.stream_id.clone();
    let name = sr.name_any();
    let mut sides = vec![(f, sr)];
    sides.extend(other);
    let step = Step::start(format!("Releasing {}", r.name));
    for (f, sr) in &sides {
        f.requests().delete(&sr.name_any(), &DeleteParams::default()).await.map_err(f.fail(format!(
            "delete StreamRequest {} in {}",
            sr.name_any(),
            f.context
        )))?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for (f, sr) in &sides {
        step.detail(&format!("waiting for {} to release its gateway resources", f.context));
        let (name, uid) = (sr.name_any(), sr.uid());
        let gone = tokio::time::timeout_at(deadline, until_gone(f, &name, uid.as_deref())).await;
        if let Ok(done) = gone {
            done?;
        } else {
            let why = format!(
                "{} side still releasing after {}s; `kubectl scistream describe {}` shows why",
                f.context,
                timeout.as_secs(),
                r.name
            );
            step.failed(&why);
            return Err(Error::Failed(why));
        }
    }
    let contexts: Vec<String> = sides.iter().map(|(f, _)| f.context.clone()).collect();
    step.done(&format!("released in {}", contexts.join(" and ")));
    let released = Released {
        name: name.clone(),
        stream_id,
        released: sides
            .iter()
            .map(|(f, _)| Place { context: f.context.clone(), namespace: f.namespace.clone() })
            .collect(),
    };
    let places: Vec<String> = released.released.iter().map(|p| format!("{}/{}", p.context, p.namespace)).collect();
    out::document(Format::of(cli), &released, &[out::request_name(&name)], |_| {
        format!("stream {name} released ({})\n", places.join(", "))
    })
}

/// Copies the producer's current listeners and certificates to the consumer again.
pub async fn update(cli: &Cli, r: &StreamRef) -> Result<()> {
    let (f, sr, other) = both(cli, &r.at, &r.name).await?;
    let Some((of, osr)) = other else {
        return Err(Error::NotFound(format!(
            "the other side of {} is not reachable (peer annotations missing?)",
            r.name
        )));
    };
    let ((pf, p), (cf, c)) = if sr.spec.role == Role::Producer { ((f, sr), (of, osr)) } else { ((of, osr), (f, sr)) };
    let step = Step::start("Re-running the connection map");
    connect_sides(&pf, &cf, &p.name_any(), &p, &c).await?;
    // Tell each side's operator which of its listeners the peer now knows (it clears its
    // ListenersMoved condition when they are the current ones).
    let pp = PatchParams { field_manager: Some(keys::FIELD_MANAGER_PLUGIN.to_owned()), ..PatchParams::default() };
    for (f, sr) in [(&pf, &p), (&cf, &c)] {
        let known = sr.status.as_ref().map(|s| s.listeners.join(",")).unwrap_or_default();
        let stamp = json!({"metadata": {"annotations": {keys::ANNOTATION_PEER_UPDATED: known}}});
        f.requests().patch(&sr.name_any(), &pp, &Patch::Merge(&stamp)).await.map_err(f.fail(format!(
            "annotate {} in {}",
            sr.name_any(),
            f.context
        )))?;
    }
    let listeners = p.status.as_ref().map(|s| s.listeners.clone()).unwrap_or_default();
    step.done(&format!("consumer forwards to {}", listeners.join(",")));
    let name = p.name_any();
    let updated = Updated { name: name.clone(), stream_id: p.spec.stream_id.clone(), consumer_forwards_to: listeners };
    out::document(Format::of(cli), &updated, &[out::request_name(&name)], |_| {
        format!("stream {name}: the consumer side forwards to {}\n", updated.consumer_forwards_to.join(","))
    })
}
