//! A Gateway is not deleted out from under its streams. While streams hold ports on it, it
//! carries the finalizer `gateways.scistream.io/in-use`; deleted then, it admits no new
//! stream, its `Ready` condition (`False`, reason `InUse`) names the streams that keep it,
//! and it goes once the last is released. A Gateway nobody uses carries no finalizer, so
//! deleting it (or `helm uninstall` after the streams are released) never waits on the
//! operator.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use scistream_api::{Gateway, Reservation, keys::FINALIZER_GATEWAY};
use serde_json::json;

use crate::error::{Error, Result};

/// What to do with the Gateway's finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerChange {
    /// Streams hold ports on it: keep it from being deleted.
    Add,
    /// Nothing holds it any more: let it go (at once, if it is being deleted).
    Remove,
}

/// The finalizer change for a Gateway that `has` it or not, is `deleting` or not and is
/// `in_use` or not. A Gateway being deleted never gets it (the API server refuses new
/// finalizers on an object being deleted).
pub fn finalizer_change(has: bool, deleting: bool, in_use: bool) -> Option<FinalizerChange> {
    match (has, in_use) {
        (false, true) if !deleting => Some(FinalizerChange::Add),
        (true, false) => Some(FinalizerChange::Remove),
        _ => None,
    }
}

/// How many streams a message names before it counts the rest.
const NAMED: usize = 5;

/// The `Ready` message of Gateway `name` deleted while `reservations` hold it, or `None`.
pub fn deleting_note(name: &str, deleting: bool, reservations: &[Reservation]) -> Option<String> {
    if !deleting || reservations.is_empty() {
        return None;
    }
    let mut requests: Vec<&str> = reservations.iter().map(|r| r.request.as_str()).collect();
    requests.sort_unstable();
    let more = requests.len().saturating_sub(NAMED);
    let mut named = requests.iter().take(NAMED).copied().collect::<Vec<_>>().join(", ");
    if more > 0 {
        named.push_str(&format!(" and {more} more"));
    }
    Some(format!(
        "Gateway {name} is being deleted while {} stream(s) hold ports on it: {named}; it admits no new stream, \
         keeps these running, and goes once they are released (kubectl scistream release NAME, or kubectl delete \
         streamrequest -n NAMESPACE NAME)",
        requests.len()
    ))
}

/// Adds or removes the finalizer on `gateway` as stored (its resourceVersion): a Gateway
/// changed since (a stream reserving on it) refuses the patch, and the watch brings the
/// change back here. Returns whether the patch was applied.
pub async fn apply(api: &Api<Gateway>, gateway: &Gateway, change: FinalizerChange) -> Result<bool> {
    let name = gateway.name_any();
    let mut finalizers: Vec<String> = gateway.finalizers().to_vec();
    match change {
        FinalizerChange::Add => finalizers.push(FINALIZER_GATEWAY.to_owned()),
        FinalizerChange::Remove => finalizers.retain(|f| f != FINALIZER_GATEWAY),
    }
    // A resourceVersion in a patch is a precondition: the API server answers 409 if it moved.
    let patch = json!({"metadata": {"resourceVersion": gateway.resource_version(), "finalizers": finalizers}});
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        // It changed since it was read (409), is being deleted since (422: no new finalizers
        // then), or is gone: the watch brings the change back here.
        Err(kube::Error::Api(s)) if [404, 409, 422].contains(&s.code) => Ok(false),
        Err(e) => Err(Error::kube(format!("update the finalizer of Gateway {name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_follows_the_streams() {
        use FinalizerChange::{Add, Remove};
        // (has, deleting, in use) -> change
        let table = [
            ((false, false, false), None),
            ((false, false, true), Some(Add)),
            ((true, false, true), None),
            ((true, false, false), Some(Remove)),
            ((true, true, true), None),
            ((true, true, false), Some(Remove)),
            // Deleted before the first stream's reservation was seen: never added then.
            ((false, true, true), None),
            ((false, true, false), None),
        ];
        for ((has, deleting, in_use), want) in table {
            assert_eq!(
                finalizer_change(has, deleting, in_use),
                want,
                "has {has}, deleting {deleting}, in use {in_use}"
            );
        }
    }

    fn held_by(request: &str) -> Reservation {
        Reservation { request: request.to_owned(), uid: request.to_owned(), ..Default::default() }
    }

    #[test]
    fn the_note_names_the_streams_that_keep_it() {
        assert_eq!(deleting_note("dtn", false, &[held_by("ns/a")]), None);
        assert_eq!(deleting_note("dtn", true, &[]), None);
        let note = deleting_note("dtn", true, &[held_by("ns/b"), held_by("ns/a")]).unwrap();
        assert!(note.contains("2 stream(s) hold ports on it: ns/a, ns/b;") && note.contains("admits no new"), "{note}");
        let many: Vec<Reservation> = (0..8).map(|i| held_by(&format!("ns/s{i}"))).collect();
        let note = deleting_note("dtn", true, &many).unwrap();
        assert!(
            note.contains("8 stream(s)") && note.contains("ns/s4 and 3 more;") && !note.contains("ns/s5"),
            "{note}"
        );
    }
}
