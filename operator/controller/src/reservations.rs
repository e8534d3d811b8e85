//! The one way the Gateway's status is written: start from the Gateway as we last stored it
//! (or read it), change it, and replace it with that `resourceVersion`. A concurrent writer
//! (another operator replica that wrongly believes it leads, or a user) makes the API answer
//! 409 Conflict and we start over from a fresh read, so two writers never both hand out the
//! same port. Within this process the writers of one Gateway take turns (one lock per
//! Gateway), so they do not conflict with each other and need no read before each write;
//! changes submitted while another write is under way go together in the next one (group
//! commit: one write for many streams, not one each, of a status that grows with them).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use scistream_api::{Gateway, GatewayStatus};

use crate::{
    error::{Error, Result},
    gateway::status::summarize,
};

/// Attempts before giving up on a gateway that keeps changing under us.
const ATTEMPTS: usize = 8;

/// A change to a Gateway's status: returns whether it changed anything.
pub type StatusChange = Box<dyn FnMut(&Gateway, &mut GatewayStatus) -> bool + Send>;

/// A submitted change and where its outcome goes (`None`: the write failed).
struct Waiting {
    change: StatusChange,
    done: tokio::sync::oneshot::Sender<Option<Option<Gateway>>>,
}

/// One Gateway: the turn to write, with the Gateway as our last write stored it, and the
/// changes waiting for the next write.
#[derive(Default)]
struct Slot {
    turn: tokio::sync::Mutex<Option<Gateway>>,
    queue: Mutex<Vec<Waiting>>,
}

/// Per Gateway: a turn to write, the Gateway as our last write stored it, and the changes
/// waiting for the next write.
#[derive(Default)]
pub struct GatewayWriter {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl GatewayWriter {
    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(name.to_owned()).or_default().clone()
    }

    /// Forgets a deleted Gateway.
    pub fn forget(&self, name: &str) {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
    }
}

/// Submits `change` to the named Gateway's status and returns the Gateway as stored after
/// the write that carried it (`None` if the Gateway does not exist). Changes submitted while
/// a write is under way are applied in order, each to the status as the ones before it left
/// it, and written together by whichever submitter takes the next turn.
pub async fn submit(
    client: &Client,
    writer: &GatewayWriter,
    name: &str,
    cached: Option<&Gateway>,
    change: StatusChange,
) -> Result<Option<Gateway>> {
    let slot = writer.slot(name);
    let (done, mut outcome) = tokio::sync::oneshot::channel();
    slot.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Waiting { change, done });
    let mut last = slot.turn.lock().await;
    if let Ok(written) = outcome.try_recv() {
        return written.ok_or_else(|| Error::Contended(name.to_owned()));
    }
    let mut batch = std::mem::take(&mut *slot.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let written = write(client, &mut last, name, cached, |gw, st| {
        let mut changed = false;
        for w in batch.iter_mut() {
            changed |= (w.change)(gw, st);
        }
        changed
    })
    .await;
    let shared = written.as_ref().ok().cloned();
    for w in batch {
        let _ = w.done.send(shared.clone());
    }
    match outcome.try_recv() {
        Ok(Some(stored)) => Ok(stored),
        _ => written,
    }
}

/// Applies `change` to the named Gateway's status with optimistic concurrency; `change`
/// returns whether it changed anything (no write otherwise). Counters and summaries are
/// recomputed on every write, so they always agree with the reservations. `cached` is the
/// Gateway as the caller's cache has it: a starting point when this process has not written
/// it yet. Returns the Gateway as stored afterwards, or `None` if it does not exist.
pub async fn update_gateway_status(
    client: &Client,
    writer: &GatewayWriter,
    name: &str,
    cached: Option<&Gateway>,
    change: impl FnMut(&Gateway, &mut GatewayStatus) -> bool,
) -> Result<Option<Gateway>> {
    let slot = writer.slot(name);
    let mut last = slot.turn.lock().await;
    write(client, &mut last, name, cached, change).await
}

/// One write in our turn: from `last` (or `cached`, or a fresh read), retried from a fresh
/// read on a conflict.
async fn write(
    client: &Client,
    last: &mut Option<Gateway>,
    name: &str,
    cached: Option<&Gateway>,
    mut change: impl FnMut(&Gateway, &mut GatewayStatus) -> bool,
) -> Result<Option<Gateway>> {
    let api: Api<Gateway> = Api::all(client.clone());
    // What we last wrote, unless the Gateway was deleted and made again under its name since:
    // the old one's status must not stand in for the new one's (it would skip the write).
    let mut base = match (last.as_ref(), cached) {
        (Some(l), Some(c)) if l.uid() != c.uid() => Some(c.clone()),
        _ => last.clone().or_else(|| cached.cloned()),
    };
    for _ in 0..ATTEMPTS {
        let mut gateway = match base.take() {
            Some(g) => g,
            None => match api.get_opt(name).await.map_err(Error::kube(format!("read Gateway {name}")))? {
                Some(g) => g,
                None => {
                    *last = None;
                    return Ok(None);
                }
            },
        };
        let before = gateway.status.clone().unwrap_or_default();
        let mut status = before.clone();
        if !change(&gateway, &mut status) {
            return Ok(Some(gateway));
        }
        summarize(&gateway.spec, &mut status);
        if status == before {
            return Ok(Some(gateway));
        }
        gateway.status = Some(status);
        match api.replace_status(&gateway.name_any(), &PostParams::default(), &gateway).await {
            Ok(stored) => {
                *last = Some(stored.clone());
                return Ok(Some(stored));
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                // Changed (or deleted and perhaps re-created) since we last saw it: read it again.
                tracing::debug!(gateway = name, code = s.code, "gateway changed since last seen; reading it again");
                *last = None;
            }
            Err(e) => {
                *last = None;
                return Err(Error::kube(format!("write the status of Gateway {name}"))(e));
            }
        }
    }
    Err(Error::Contended(name.to_owned()))
}
