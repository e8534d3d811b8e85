//! Shared state of the operator's controllers: the client, caches, configuration, event
//! recorder and metrics, built once and passed to every reconcile as `Arc<Context>`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::{
    Client,
    runtime::reflector::{ObjectRef, Store},
};
use scistream_api::{Gateway, StreamRequest};

use crate::{ledger::Ledger, metrics::Metrics, relay_hub::channel::Channel, reservations::GatewayWriter};

/// Relay images per implementation.
#[derive(Clone, Debug)]
pub struct Images {
    /// The s2ds relay.
    pub s2ds: String,
    /// HAProxy.
    pub haproxy: String,
    /// Nginx (with the stream module).
    pub nginx: String,
    /// Stunnel.
    pub stunnel: String,
}

/// Operator settings (from flags and environment).
#[derive(Clone, Debug)]
pub struct Config {
    /// Default relay images.
    pub images: Images,
    /// Path of Nginx's dynamic stream module in the Nginx image, if it is one.
    pub nginx_stream_module: Option<String>,
    /// Seconds relays drain established connections on SIGTERM.
    pub drain_seconds: u32,
    /// Requeue interval of a healthy object (drift safety net).
    pub resync: Duration,
    /// Where the operator may write relay pods, ConfigMaps and Secrets.
    pub gateway_namespaces: GatewayNamespaces,
}

/// The namespaces the operator's RBAC lets it write relay objects in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GatewayNamespaces {
    /// Any namespace (the operator's rules are cluster-wide).
    #[default]
    Any,
    /// Only these (a Role in each), sorted.
    Only(std::collections::BTreeSet<String>),
}

impl GatewayNamespaces {
    /// From `--gateway-namespaces` (empty entries ignored; none at all: any namespace).
    pub fn from_flag(names: &[String]) -> Self {
        let set: std::collections::BTreeSet<String> =
            names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).map(str::to_owned).collect();
        if set.is_empty() { Self::Any } else { Self::Only(set) }
    }

    /// Why relay objects may not be written in `namespace`, if they may not.
    pub fn refusal(&self, namespace: &str) -> Option<String> {
        match self {
            Self::Only(set) if !set.contains(namespace) => Some(format!(
                "the operator may write relay pods only in the gateway namespaces {} (a Role in each), not in spec.podNamespace {namespace}; use one of them, or add {namespace} to the chart's extraGatewayNamespaces",
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            _ => None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            images: Images {
                s2ds: "ghcr.io/scistream/s2ds:0.1.0".to_owned(),
                haproxy: "haproxy:2.6".to_owned(),
                nginx: "nginx:1.27".to_owned(),
                stunnel: "ghcr.io/scistream/stunnel:0.1.0".to_owned(),
            },
            nginx_stream_module: None,
            drain_seconds: 20,
            resync: Duration::from_secs(300),
            gateway_namespaces: GatewayNamespaces::Any,
        }
    }
}

/// Caches fed by watches; reads in reconcile come from here, writes go to the API.
#[derive(Clone)]
pub struct Stores {
    /// Gateways.
    pub gateways: Store<Gateway>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// StreamRequests.
    pub requests: Store<StreamRequest>,
    /// Relay pods (labelled as ours), in every namespace.
    pub pods: Store<Pod>,
    /// Relay ConfigMaps (labelled as ours), in every namespace.
    pub config_maps: Store<ConfigMap>,
    /// Namespaces, for their labels (a Gateway's `policy.namespaceSelector`).
    pub namespaces: Store<Namespace>,
}

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Publishes events.
    pub events: crate::events::Publisher,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: Config,
    /// Caches.
    pub stores: Stores,
    /// Becomes true once every cache is synced.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// Consecutive failures per StreamRequest, for backoff (reset on success).
    pub failures: Mutex<HashMap<ObjectRef<StreamRequest>, u32>>,
    /// Takes turns writing each Gateway's status.
    pub gateway_writer: GatewayWriter,
    /// Every stream's holding on its Gateway.
    pub ledger: Ledger,
    /// When each Gateway's orphaned relay objects were last swept.
    pub sweeps: crate::gateway::sweep::Sweeps,
    /// The shared relays' configuration channel, when the operator serves it.
    pub channel: Option<Arc<Channel>>,
    /// Uids of the Gateways and StreamRequests reconciled since start, kept only while the
    /// relay channel waits to open (once every object known at start has been reconciled);
    /// `None` without a channel and once it is open, so it does not grow with every stream.
    reconciled: Mutex<Option<HashSet<String>>>,
    reconciled_changed: tokio::sync::Notify,
}

impl Context {
    /// Builds the context.
    pub fn new(
        client: Client,
        config: Config,
        stores: Stores,
        metrics: Arc<Metrics>,
        instance: String,
        synced: tokio::sync::watch::Receiver<bool>,
        channel: Option<Arc<Channel>>,
    ) -> Arc<Self> {
        let controller = scistream_api::keys::FIELD_MANAGER_OPERATOR.to_owned();
        Arc::new(Self {
            events: crate::events::Publisher::new(
                client.clone(),
                controller,
                instance,
                crate::events::DEFAULT_CAPACITY,
            ),
            client,
            metrics,
            config,
            stores,
            synced,
            failures: Mutex::new(HashMap::new()),
            gateway_writer: GatewayWriter::default(),
            ledger: Ledger::default(),
            sweeps: crate::gateway::sweep::Sweeps::default(),
            reconciled: Mutex::new(channel.is_some().then(HashSet::new)),
            channel,
            reconciled_changed: tokio::sync::Notify::new(),
        })
    }

    /// Notes that the object with `uid` was reconciled (whatever came of it).
    pub fn note_reconciled(&self, uid: Option<String>) {
        let Some(uid) = uid else { return };
        let mut reconciled = self.reconciled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = reconciled.as_mut().is_some_and(|seen| seen.insert(uid));
        drop(reconciled);
        if new {
            self.reconciled_changed.notify_waiters();
        }
    }

    /// Waits until every Gateway and StreamRequest in the caches now has been reconciled once
    /// since start, or `within` passed; returns how many were still not. Reconciles are no
    /// longer noted afterwards.
    pub async fn all_reconciled_once(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        let missing = loop {
            let changed = self.reconciled_changed.notified();
            let missing = {
                let reconciled = self.reconciled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let Some(seen) = reconciled.as_ref() else { break 0 };
                let gateways = self.stores.gateways.state();
                let requests = self.stores.requests.state();
                let uids = gateways.iter().filter_map(|g| g.metadata.uid.clone());
                uids.chain(requests.iter().filter_map(|r| r.metadata.uid.clone())).filter(|u| !seen.contains(u)).count()
            };
            if missing == 0 || tokio::time::timeout_at(deadline, changed).await.is_err() {
                break missing;
            }
        };
        *self.reconciled.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        missing
    }

    /// Waits (bounded) until the caches hold a first full list, so no decision is made on an
    /// empty cache at start-up. (kube's `Store::wait_until_ready` wakes only one of several
    /// concurrent waiters, so one task waits on the stores and flips this flag for all.)
    pub async fn caches_ready(&self) {
        let mut ready = self.synced.clone();
        if tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r)).await.is_err() {
            tracing::warn!("caches not synced after 30s; reconciling anyway");
        }
    }

    /// Records a failure of `obj` and returns the consecutive count.
    pub fn failed(&self, obj: ObjectRef<StreamRequest>) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(obj).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets the failures of `obj` after a success.
    pub fn succeeded(&self, obj: &ObjectRef<StreamRequest>) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(obj);
    }
}
