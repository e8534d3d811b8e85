//! The one way the Gateway's status is written: start from the Gateway as we last stored it
//! (or read it), change it, and replace it with that `resourceVersion`. A concurrent writer
//! (a user, or another replica) makes the API answer 409 Conflict and we start over from a
//! fresh read. Within this process the writers of one Gateway take turns (one lock per
//! Gateway), so they do not conflict with each other and need no read before each write.
//! The status holds totals only: who holds what is in the ledger ([`crate::ledger`]), whose
//! holdings each write counts.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use scistream_api::Reservation;

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

/// One Gateway: the turn to write, with the Gateway as our last write stored it.
#[derive(Default)]
struct Slot {
    turn: tokio::sync::Mutex<Option<Gateway>>,
}

/// Per Gateway: a turn to write, and the Gateway as our last write stored it.
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

/// Applies `change` to the named Gateway's status with optimistic concurrency; `change`
/// returns whether it changed anything (no write otherwise). Counters and summaries are
/// recomputed from `held` (the Gateway's holdings) on every write. `cached` is the
/// Gateway as the caller's cache has it: a starting point when this process has not written
/// it yet. Returns the Gateway as stored afterwards, or `None` if it does not exist.
pub async fn update_gateway_status(
    client: &Client,
    writer: &GatewayWriter,
    name: &str,
    cached: Option<&Gateway>,
    held: &[Reservation],
    change: impl FnMut(&Gateway, &mut GatewayStatus) -> bool,
) -> Result<Option<Gateway>> {
    let slot = writer.slot(name);
    let mut last = slot.turn.lock().await;
    write(client, &mut last, name, cached, held, change).await
}

/// One write in our turn: from `last` (or `cached`, or a fresh read), retried from a fresh
/// read on a conflict.
async fn write(
    client: &Client,
    last: &mut Option<Gateway>,
    name: &str,
    cached: Option<&Gateway>,
    held: &[Reservation],
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
        summarize(&gateway.spec, held, &mut status);
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
