//! Leader election on a `coordination.k8s.io` Lease, so two operator replicas never both
//! act. Writes use the Lease's `resourceVersion` (optimistic concurrency): of two replicas
//! racing for an expired lease, one gets 409 Conflict and keeps waiting.
//!
//! The leader renews every `renew` interval; if it cannot renew before its own lease would
//! expire it stops acting (cancels the shutdown token) rather than risk a second leader.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tokio_util::sync::CancellationToken;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the operator's).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew: Duration,
}

/// What to do with the lease as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a valid lease.
    Wait,
}

/// Decides from the Lease's spec (pure; `now` passed in).
pub fn step(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Step {
    let Some(spec) = spec else { return Step::Acquire };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::Acquire;
    }
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let last = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    match last {
        Some(t) if t + SignedDuration::from_secs(seconds) > now => Step::Wait,
        _ => Step::Acquire,
    }
}

fn spec(cfg: &LeaseConfig, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let renewing = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(cfg.identity.as_str()));
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(cfg.duration.as_secs()).unwrap_or(15)),
        acquire_time: if renewing { previous.and_then(|p| p.acquire_time.clone()) } else { Some(MicroTime(now)) },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0)
                + if renewing || previous.is_none() { 0 } else { 1 },
        ),
        ..LeaseSpec::default()
    }
}

/// One attempt: returns whether we hold the lease afterwards.
pub async fn try_hold(client: &Client, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = Timestamp::now();
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(cfg.name.clone()), ..ObjectMeta::default() },
                spec: Some(spec(cfg, now, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => match step(lease.spec.as_ref(), &cfg.identity, now) {
            Step::Wait => Ok(false),
            Step::Acquire | Step::Renew => {
                lease.spec = Some(spec(cfg, now, lease.spec.as_ref()));
                match api.replace(&lease.name_any(), &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        },
    }
}

/// Waits until this replica leads (or `token` is cancelled: returns false).
pub async fn acquire(client: &Client, cfg: &LeaseConfig, token: &CancellationToken) -> bool {
    let mut logged = false;
    loop {
        match try_hold(client, cfg).await {
            Ok(true) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became the leader");
                return true;
            }
            Ok(false) if !logged => {
                tracing::info!(lease = %cfg.name, "another replica leads; standing by");
                logged = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not read or write the leader Lease"),
        }
        tokio::select! {
            () = token.cancelled() => return false,
            () = tokio::time::sleep(cfg.renew) => {}
        }
    }
}

/// Renews the lease until `token` is cancelled; cancels `token` itself when leadership is
/// lost or cannot be confirmed within the lease duration.
pub async fn keep(client: Client, cfg: LeaseConfig, token: CancellationToken) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(cfg.renew) => {}
        }
        match try_hold(&client, &cfg).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %cfg.name, "lost the leader Lease to another replica; stopping");
                token.cancel();
                return;
            }
            Err(e) if last_ok.elapsed() < cfg.duration => {
                tracing::warn!(error = %e, "could not renew the leader Lease; retrying")
            }
            Err(e) => {
                tracing::error!(error = %e, "could not renew the leader Lease within its duration; stopping");
                token.cancel();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn steps() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(step(None, "a", now), Step::Acquire);
        assert_eq!(step(Some(&lease("a", 990)), "a", now), Step::Renew);
        assert_eq!(step(Some(&lease("b", 990)), "a", now), Step::Wait);
        assert_eq!(step(Some(&lease("b", 980)), "a", now), Step::Acquire);
        assert_eq!(step(Some(&lease("", 999)), "a", now), Step::Acquire);
    }

    #[test]
    fn transitions_count_only_changes_of_holder() {
        let cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        };
        let now = Timestamp::from_second(2_000).unwrap();
        let mut theirs = lease("b", 1_000);
        theirs.lease_transitions = Some(3);
        assert_eq!(spec(&cfg, now, Some(&theirs)).lease_transitions, Some(4));
        let mut ours = lease("a", 1_990);
        ours.lease_transitions = Some(4);
        assert_eq!(spec(&cfg, now, Some(&ours)).lease_transitions, Some(4));
    }
}
