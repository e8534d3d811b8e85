//! The orphan sweep: relay pods, ConfigMaps and Secrets in a gateway's namespace whose
//! StreamRequest no longer exists are deleted. Normally the finalizer removes them; this
//! catches whatever a crash, a forced finalizer removal or a bug left behind. It runs on a
//! Gateway's first reconcile in this process and then at most once per resync interval
//! ([`Sweeps::due`]): a Gateway reconciles on every change of its holdings, and listing
//! thousands of relay objects each time was the operator's largest cost in memory at 1,000
//! streams (the largest allocation site of a 170 MiB peak, in transient lists).

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{Api, ResourceExt, api::ListParams};
use scistream_api::{Gateway, StreamRequest, keys};

use crate::{
    context::Context,
    error::{Error, Result},
    stream::children::delete,
};

/// When each Gateway was last swept.
#[derive(Default)]
pub struct Sweeps(Mutex<HashMap<String, Instant>>);

impl Sweeps {
    /// Whether `gateway` is to be swept at `now` (never swept, or last swept at least
    /// `every` ago); if it is, `now` is recorded as its last sweep.
    pub fn due(&self, gateway: &str, now: Instant, every: Duration) -> bool {
        let mut last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.get(gateway).is_none_or(|t| now.saturating_duration_since(*t) >= every);
        if due {
            last.insert(gateway.to_owned(), now);
        }
        due
    }

    /// Sweeps `gateway` at its next reconcile (a sweep that failed is tried again).
    pub fn forget(&self, gateway: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(gateway);
    }
}

/// `namespace/name` of the StreamRequest an object belongs to, with its stream id.
fn owner(
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<(String, String)> {
    Some((annotations.get(keys::ANNOTATION_REQUEST)?.clone(), labels.get(keys::LABEL_STREAM_ID)?.clone()))
}

/// Whether the owner exists (cache first, confirmed against the API before a deletion).
async fn owner_alive(ctx: &Context, live: &BTreeSet<(String, String)>, request: &str, stream_id: &str) -> Result<bool> {
    if live.contains(&(request.to_owned(), stream_id.to_owned())) {
        return Ok(true);
    }
    let Some((ns, name)) = request.split_once('/') else { return Ok(false) };
    let api: Api<StreamRequest> = Api::namespaced(ctx.client.clone(), ns);
    let current = api.get_opt(name).await.map_err(Error::kube(format!("read StreamRequest {request}")))?;
    Ok(current.is_some_and(|r| r.spec.stream_id == stream_id))
}

/// How many objects one LIST of the sweep returns (kubectl's `--chunk-size` is 500): a sweep
/// holds one page at a time, not every relay object of the Gateway. Listing 5,000 relay pods at
/// once took 27.8 MB of JSON and over 250 MiB of heap while it was read (heaptrack).
pub const PAGE: u32 = 250;

/// What one sweep has learned of the owners it looked up.
struct Owners {
    /// `namespace/name` and stream id of every StreamRequest in the cache.
    live: BTreeSet<(String, String)>,
    /// Owners confirmed alive against the API.
    alive: BTreeSet<(String, String)>,
    /// Owners confirmed gone.
    dead: BTreeSet<(String, String)>,
}

/// Deletes the orphaned relay objects of `gateway`; returns how many it deleted.
pub async fn sweep(ctx: &Context, gateway: &Gateway) -> Result<usize> {
    let ns = &gateway.spec.pod_namespace;
    let selector = crate::names::gateway_selector(keys::COMPONENT_S2DS, &gateway.name_any());
    let lp = ListParams::default().labels(&selector).limit(PAGE);
    let live = ctx
        .stores
        .requests
        .state()
        .iter()
        .map(|r| (format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()), r.spec.stream_id.clone()))
        .collect();
    let mut owners = Owners { live, alive: BTreeSet::new(), dead: BTreeSet::new() };
    let mut deleted = sweep_kind::<Pod>(ctx, ns, &lp, &mut owners, "pod").await?;
    deleted += sweep_kind::<ConfigMap>(ctx, ns, &lp, &mut owners, "ConfigMap").await?;
    deleted += sweep_kind::<Secret>(ctx, ns, &lp, &mut owners, "Secret").await?;
    Ok(deleted)
}

/// Deletes the orphaned objects of one kind, a page at a time.
async fn sweep_kind<K>(ctx: &Context, ns: &str, lp: &ListParams, owners: &mut Owners, what: &str) -> Result<usize>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let mut lp = lp.clone();
    let mut deleted = 0;
    loop {
        let page = api.list(&lp).await.map_err(Error::kube(format!("list relay {what}s")))?;
        for obj in page.items {
            let Some(key) = owner(obj.labels(), obj.annotations()) else { continue };
            if owners.alive.contains(&key) {
                continue;
            }
            if !owners.dead.contains(&key) {
                if owner_alive(ctx, &owners.live, &key.0, &key.1).await? {
                    owners.alive.insert(key);
                    continue;
                }
                owners.dead.insert(key.clone());
            }
            tracing::warn!(object = %obj.name_any(), request = %key.0, kind = what, "deleting an orphaned relay object");
            delete(&api, &obj.name_any()).await?;
            deleted += 1;
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_is_swept_first_then_once_per_interval() {
        let sweeps = Sweeps::default();
        let every = Duration::from_secs(300);
        let t0 = Instant::now();
        for (gateway, after, due) in [
            ("dtn", 0, true),
            ("dtn", 1, false),
            ("other", 1, true),
            ("dtn", 299, false),
            ("dtn", 300, true),
            ("dtn", 301, false),
        ] {
            assert_eq!(sweeps.due(gateway, t0 + Duration::from_secs(after), every), due, "{gateway} at {after} s");
        }
        sweeps.forget("dtn");
        assert!(sweeps.due("dtn", t0 + Duration::from_secs(302), every), "swept again once forgotten");
    }
}
