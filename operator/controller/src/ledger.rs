//! The ledger: which stream holds which ports and bandwidth on each Gateway.
//!
//! The durable record of a holding is its own StreamRequest's status (`allocations`,
//! `grantedRate`, see [`StreamRequest::holding`]), written before any relay uses it. The
//! leader keeps every holding here, in memory, rebuilt once from the StreamRequests when its
//! caches first synced (it leads, so no other process hands out ports meanwhile), and decides
//! each change under one lock with the same pure functions as before ([`holding::apply_all`]).
//! This is the pattern of Kubernetes' node IPAM controller, which rebuilds its CIDR bitmap from
//! `Node.spec.podCIDR` at start and records each allocation on the Node it gives it to; it
//! replaces a list in the Gateway's status that grew with the streams (210 bytes each, every
//! version sent to every watcher, and refused by etcd past 1.5 MiB).
//!
//! Each change is told to a listener (see [`Ledger::on_change`]): the Gateway then writes its
//! totals, and when capacity was freed the requests waiting for it are woken.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use kube::ResourceExt;
use scistream_api::{Gateway, GatewayStatus, Reservation, StreamRequest};
use scistream_core::allocator::{self, AllocError, HeldElsewhere};

use crate::stream::holding::{self, Change};

/// What a change did, for whoever listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The Gateway whose holdings changed.
    pub gateway: String,
    /// Whether ports or bandwidth were given back (requests waiting for capacity may fit now).
    pub freed: bool,
}

type Listener = Box<dyn Fn(Notice) + Send + Sync>;

/// Which Gateway object a view was made of: its uid and resourceVersion.
type Seen = (Option<String>, Option<String>);

/// The holdings of one Gateway, with the view last made of them.
#[derive(Default)]
struct Book {
    reservations: Vec<Reservation>,
    generation: u64,
    /// The Gateway as last planned with: (the object it was made of, our generation, view).
    view: Option<(Seen, u64, Arc<Gateway>)>,
}

#[derive(Default)]
struct Inner {
    seeded: bool,
    books: HashMap<String, Book>,
}

impl Inner {
    fn book(&mut self, gateway: &str) -> &mut Book {
        self.books.entry(gateway.to_owned()).or_default()
    }

    /// Ports each node holds through Gateways other than `gateway`.
    fn held_elsewhere(&self, gateway: &str) -> HeldElsewhere {
        let mut held = HeldElsewhere::new();
        for (_, book) in self.books.iter().filter(|(name, _)| name.as_str() != gateway) {
            for (node, ports) in allocator::used_ports(&book.reservations) {
                held.entry(node.to_owned()).or_default().extend(ports);
            }
        }
        held
    }
}

/// The result of [`Ledger::apply`].
#[derive(Debug)]
pub struct Applied {
    /// The Gateway with its holdings after the change.
    pub gateway: Arc<Gateway>,
    /// Whether anything changed.
    pub changed: bool,
    /// The first change that did not fit, if one did not (the ones before it stay applied).
    pub refusal: Option<AllocError>,
}

/// Every Gateway's holdings (see the module documentation).
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
    listener: Mutex<Option<Listener>>,
}

/// The ledger has not been rebuilt from the StreamRequests yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the operator has not read every StreamRequest's holding yet (its caches are not synced); it decides once it has"
)]
pub struct NotSeeded;

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells `listener` of every change from now on.
    pub fn on_change(&self, listener: impl Fn(Notice) + Send + Sync + 'static) {
        *self.listener.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(listener));
    }

    fn tell(&self, notice: Notice) {
        if let Some(listener) = self.listener.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            listener(notice);
        }
    }

    /// Rebuilds the ledger from the holdings `requests` record, once (later calls do nothing
    /// and return 0). Holdings are taken in the order they were made (`reservedTime`, then
    /// name); one that claims a node port an earlier one holds is left out and logged (its
    /// request reserves again). Returns the number of holdings taken.
    pub fn seed<'a>(&self, requests: impl IntoIterator<Item = &'a StreamRequest>) -> usize {
        let mut held: Vec<(&StreamRequest, Reservation)> =
            requests.into_iter().filter_map(|r| r.holding().map(|h| (r, h))).collect();
        held.sort_by_key(|(r, h)| (r.status.as_ref().and_then(|s| s.reserved_time.clone()), h.request.clone()));
        let mut inner = self.lock();
        if inner.seeded {
            return 0;
        }
        let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut count = 0;
        for (request, reservation) in held {
            let ports: Vec<(String, i32)> = reservation
                .nodes
                .iter()
                .flat_map(|a| a.ports.iter().chain(&a.metrics_port).map(|p| (a.node.clone(), *p)))
                .collect();
            if let Some((node, port)) = ports.iter().find(|p| taken.contains(*p)) {
                tracing::warn!(request = %reservation.request, %node, port, "a StreamRequest's status records a port another holds; it reserves again");
                continue;
            }
            taken.extend(ports);
            inner.book(&request.spec.gateway).reservations.push(reservation);
            count += 1;
        }
        inner.seeded = true;
        let gateways: Vec<String> = inner.books.keys().cloned().collect();
        drop(inner);
        for gateway in gateways {
            self.tell(Notice { gateway, freed: false });
        }
        count
    }

    /// Whether the ledger was rebuilt.
    pub fn seeded(&self) -> bool {
        self.lock().seeded
    }

    /// `cached` with what planning `uid` needs: its own holding alone when it holds one, every
    /// holding otherwise (the same `Arc` until the Gateway or its holdings change). A held
    /// stream's plan reads only its own holding, and a change it plans (a relocation, a new
    /// rate) is decided again here, under the lock, against every holding
    /// ([`Ledger::apply`]), which gives the full view back when it refuses it. (Each
    /// full view copies every holding: at 5,000 streams, a copy in every reconcile was most
    /// of the operator's CPU.)
    pub fn view_for(&self, cached: &Gateway, uid: &str) -> Arc<Gateway> {
        let mut inner = self.lock();
        let book = inner.book(&cached.name_any());
        match book.reservations.iter().find(|r| r.uid == uid) {
            Some(own) => light(cached, own),
            None => view(book, cached),
        }
    }

    /// Ports each node holds through Gateways other than `gateway`.
    pub fn held_elsewhere(&self, gateway: &str) -> HeldElsewhere {
        self.lock().held_elsewhere(gateway)
    }

    /// The holdings on `gateway`.
    pub fn reservations(&self, gateway: &str) -> Vec<Reservation> {
        self.lock().books.get(gateway).map(|b| b.reservations.clone()).unwrap_or_default()
    }

    /// Applies `changes` to `uid`'s holding on `cached` (its nodes and spec as the cache has
    /// them), in order, stopping at the first that does not fit.
    pub fn apply(&self, cached: &Gateway, uid: &str, changes: &[Change]) -> Result<Applied, NotSeeded> {
        let name = cached.name_any();
        let mut inner = self.lock();
        if !inner.seeded {
            return Err(NotSeeded);
        }
        let elsewhere = inner.held_elsewhere(&name);
        let book = inner.book(&name);
        let mut status = cached.status.as_ref().map(GatewayStatus::without_reservations).unwrap_or_default();
        status.reservations = std::mem::take(&mut book.reservations);
        let before = Capacity::of(&status.reservations);
        let (changed, refusal) = holding::apply_all(&cached.spec, &elsewhere, &mut status, uid, changes);
        book.reservations = std::mem::take(&mut status.reservations);
        if changed {
            book.generation += 1;
        }
        // What the plan made again after the change reads: the full view when a change was
        // refused (it says why) or nothing is held.
        let own = book.reservations.iter().find(|r| r.uid == uid).filter(|_| refusal.is_none());
        let gateway = match own {
            Some(own) => light(cached, own),
            None => view(book, cached),
        };
        if !changed {
            return Ok(Applied { gateway, changed, refusal });
        }
        let freed = Capacity::of(&book.reservations).freed_since(&before);
        drop(inner);
        self.tell(Notice { gateway: name, freed });
        Ok(Applied { gateway, changed, refusal })
    }

    /// Gives back every holding of `uid` on `gateway`, or on every Gateway when `None` (its
    /// Gateway is gone). Returns whether one was held.
    pub fn release(&self, gateway: Option<&str>, uid: &str) -> bool {
        let mut inner = self.lock();
        let mut released = Vec::new();
        for (name, book) in inner.books.iter_mut().filter(|(name, _)| gateway.is_none_or(|g| g == name.as_str())) {
            let before = book.reservations.len();
            book.reservations.retain(|r| r.uid != uid);
            if book.reservations.len() != before {
                book.generation += 1;
                released.push(name.clone());
            }
        }
        drop(inner);
        let any = !released.is_empty();
        for gateway in released {
            self.tell(Notice { gateway, freed: true });
        }
        any
    }
}

/// `cached` with `book`'s holdings, made again only when either changed.
fn view(book: &mut Book, cached: &Gateway) -> Arc<Gateway> {
    let key: Seen = (cached.metadata.uid.clone(), cached.metadata.resource_version.clone());
    if let Some((k, generation, view)) = &book.view
        && *k == key
        && *generation == book.generation
    {
        return view.clone();
    }
    let mut gateway = bare(cached);
    gateway.status.get_or_insert_default().reservations = book.reservations.clone();
    let view = Arc::new(gateway);
    book.view = Some((key, book.generation, view.clone()));
    view
}

/// `cached` without the holdings it may carry (a view given back to be changed).
fn bare(cached: &Gateway) -> Gateway {
    Gateway {
        metadata: cached.metadata.clone(),
        spec: cached.spec.clone(),
        status: cached.status.as_ref().map(GatewayStatus::without_reservations),
    }
}

/// `cached` with `own` as its only holding.
fn light(cached: &Gateway, own: &Reservation) -> Arc<Gateway> {
    let mut gateway = bare(cached);
    gateway.status.get_or_insert_default().reservations = vec![own.clone()];
    Arc::new(gateway)
}

/// Ports and bandwidth held, to tell whether a change gave some back.
#[derive(Clone, Copy)]
struct Capacity {
    ports: usize,
    bps: i64,
}

impl Capacity {
    fn of(reservations: &[Reservation]) -> Self {
        let ports = reservations
            .iter()
            .flat_map(|r| &r.nodes)
            .map(|a| a.ports.len() + usize::from(a.metrics_port.is_some()))
            .sum();
        Capacity { ports, bps: reservations.iter().map(|r| r.bandwidth_bps).sum() }
    }

    fn freed_since(self, before: &Capacity) -> bool {
        self.ports < before.ports || self.bps < before.bps
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
