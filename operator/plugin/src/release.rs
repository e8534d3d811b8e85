//! `release` and `update`.

use std::time::Duration;

use kube::{
    ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use scistream_api::{Role, keys, rate::parse_duration};
use serde_json::json;

use crate::{
    cli::{Cli, StreamRef},
    create::connect_sides,
    error::{Error, Result},
    progress::Step,
    show::both,
};

/// Deletes both sides and waits until both are gone (their operators released everything).
pub async fn release(cli: &Cli, r: &StreamRef) -> Result<()> {
    let timeout = parse_duration(&cli.timeout).map_err(|e| Error::Usage(format!("--timeout: {e}")))?;
    let (f, sr, other) = both(cli, &r.at, &r.name).await?;
    let mut sides = vec![(f, sr)];
    sides.extend(other);
    let step = Step::start(format!("Releasing {}", r.name));
    for (f, sr) in &sides {
        f.requests()
            .delete(&sr.name_any(), &DeleteParams::default())
            .await
            .map_err(Error::kube(format!("delete in {}", f.context)))?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for (f, sr) in &sides {
        while f
            .requests()
            .get_opt(&sr.name_any())
            .await
            .map_err(Error::kube(format!("read in {}", f.context)))?
            .is_some()
        {
            step.detail(&format!("waiting for {} to release its gateway resources", f.context));
            if tokio::time::Instant::now() >= deadline {
                let why = format!(
                    "{} side still releasing after {}s; `kubectl scistream describe {}` shows why",
                    f.context,
                    timeout.as_secs(),
                    r.name
                );
                step.failed(&why);
                return Err(Error::Failed(why));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let contexts: Vec<String> = sides.iter().map(|(f, _)| f.context.clone()).collect();
    step.done(&format!("released in {}", contexts.join(" and ")));
    Ok(())
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
        f.requests().patch(&sr.name_any(), &pp, &Patch::Merge(&stamp)).await.map_err(Error::kube(format!(
            "annotate {} in {}",
            sr.name_any(),
            f.context
        )))?;
    }
    let listeners = p.status.map(|s| s.listeners).unwrap_or_default();
    step.done(&format!("consumer forwards to {}", listeners.join(",")));
    Ok(())
}
