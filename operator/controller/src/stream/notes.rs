//! Conditions beyond the phase machine's four, each telling a person what to do:
//!
//! - `ListenersMoved`: a gateway node holding some of this side's listeners was lost and they
//!   moved to other nodes (`True`, reason `NodeLost`). On the producer side the consumer side
//!   still forwards to the old listeners until `kubectl scistream update NAME` re-runs the
//!   connection map; on the consumer side the consumer application must connect to the new
//!   ones, and `update` acknowledges that. "Updated" means: `update` stamped this request with
//!   the listeners it propagated (annotation `keys::ANNOTATION_PEER_UPDATED`) and they equal
//!   the current `status.listeners`; the condition then turns `False` with reason
//!   `PeerUpdated`.
//! - `HelloReceived`/`Ready` with reason `HelloKeyMissing` while awaiting Hello: the Secret
//!   named by `spec.helloKeySecretRef` does not exist or lacks its key, so no Hello can be
//!   authenticated (instead of a silent wait until `helloTimeout`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use scistream_api::{
    Role,
    conditions::{
        self, Reason, reasons,
        reasons::PEER_UPDATED,
        types::{self, LISTENERS_MOVED},
    },
};

/// What a move of the listeners asks of a person, for request `name` of `role`.
fn todo(role: Role, name: &str) -> String {
    match role {
        Role::Producer => {
            format!("The consumer side still forwards to the old ones until `kubectl scistream update {name}`")
        }
        Role::Consumer => format!(
            "The consumer application must connect to the new ones (status.listeners); \
             `kubectl scistream update {name}` acknowledges the move"
        ),
    }
}

/// What a relocation off the `lost` nodes asks of a person, for request `name` of `role`.
pub fn moved_note(role: Role, lost: &[String], name: &str) -> String {
    format!("gateway node(s) {} lost; listeners moved to other gateway nodes. {}", lost.join(", "), todo(role, name))
}

/// What a gateway node's new address asks of a person: the listeners `before` are `now`.
pub fn address_note(role: Role, before: &[String], now: &[String], name: &str) -> String {
    format!(
        "the address of a gateway node holding these listeners changed; listeners moved from {} to {}. {}",
        before.join(","),
        now.join(","),
        todo(role, name)
    )
}

/// Sets or clears `ListenersMoved`. `moved` is the reason and note of a move made now (a
/// relocation or a node's new address); `acknowledged` the annotation `update` left;
/// `listeners` the current ones.
pub fn listeners_moved(
    conds: &mut Vec<Condition>,
    moved: Option<(Reason, &str)>,
    acknowledged: Option<&str>,
    listeners: &[String],
    generation: Option<i64>,
    now: &Time,
) {
    if let Some((reason, note)) = moved {
        // A new move restarts the clock even if an earlier one was still unacknowledged.
        conds.retain(|c| c.type_ != LISTENERS_MOVED);
        conds.push(conditions::new(LISTENERS_MOVED, true, reason, note, generation, now));
        return;
    }
    if conditions::is_true(conds, LISTENERS_MOVED)
        && !listeners.is_empty()
        && acknowledged == Some(&listeners.join(","))
    {
        let message = format!(
            "the peer side was updated (`kubectl scistream update`) with the moved listeners {}",
            listeners.join(",")
        );
        conditions::merge(conds, conditions::new(LISTENERS_MOVED, false, PEER_UPDATED, message, generation, now));
    }
}

/// Marks `HelloReceived` and `Ready` as blocked by a missing Hello key.
pub fn hello_key_missing(conds: &mut Vec<Condition>, message: &str, generation: Option<i64>, now: &Time) {
    for type_ in [types::HELLO_RECEIVED, types::READY] {
        conditions::merge(conds, conditions::new(type_, false, reasons::HELLO_KEY_MISSING, message, generation, now));
    }
}

/// What is wrong with the Hello-key Secret, if anything: `secret` is the Secret as read
/// (`None`: it does not exist).
pub fn hello_key_problem(
    namespace: &str,
    reference: &scistream_api::SecretKeyRef,
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
) -> Option<String> {
    let name = &reference.name;
    let Some(secret) = secret else {
        return Some(format!(
            "Secret {namespace}/{name} named by spec.helloKeySecretRef does not exist: no Hello can be authenticated \
             until it does (`kubectl scistream create` makes it; recreate it with the key the application controller uses)"
        ));
    };
    let present = secret.data.as_ref().and_then(|d| d.get(&reference.key)).is_some_and(|v| !v.0.is_empty())
        || secret.string_data.as_ref().and_then(|d| d.get(&reference.key)).is_some_and(|v| !v.is_empty());
    (!present).then(|| {
        format!(
            "Secret {namespace}/{name} named by spec.helloKeySecretRef has no (or an empty) key {}: no Hello can be \
             authenticated until it has one",
            reference.key
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{ByteString, api::core::v1::Secret, jiff::Timestamp};
    use scistream_api::SecretKeyRef;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn listeners() -> Vec<String> {
        vec!["198.51.100.2:5100".to_owned(), "198.51.100.2:5101".to_owned()]
    }

    #[test]
    fn a_move_sets_the_condition_and_only_the_matching_update_clears_it() {
        let mut conds = Vec::new();
        listeners_moved(&mut conds, Some((reasons::NODE_LOST, "gw-a lost")), None, &listeners(), Some(1), &at(10));
        let c = conditions::find(&conds, LISTENERS_MOVED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "NodeLost"));
        // An update made before the move (other listeners) does not clear it; nor does nothing.
        listeners_moved(&mut conds, None, Some("198.51.100.1:5100,198.51.100.1:5101"), &listeners(), Some(1), &at(20));
        listeners_moved(&mut conds, None, None, &listeners(), Some(1), &at(20));
        assert!(conditions::is_true(&conds, LISTENERS_MOVED));
        listeners_moved(&mut conds, None, Some(&listeners().join(",")), &listeners(), Some(1), &at(30));
        let c = conditions::find(&conds, LISTENERS_MOVED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.last_transition_time.clone()),
            ("False", PEER_UPDATED.as_str(), at(30))
        );
        // A second move sets it again, from now.
        let moved = Some((reasons::ADDRESS_CHANGED, "gw-b's address changed"));
        listeners_moved(&mut conds, moved, Some(&listeners().join(",")), &listeners(), Some(1), &at(40));
        let c = conditions::find(&conds, LISTENERS_MOVED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "AddressChanged"));
        assert_eq!(c.last_transition_time, at(40));
        assert_eq!(conds.iter().filter(|c| c.type_ == LISTENERS_MOVED).count(), 1);
    }

    #[test]
    fn the_note_says_what_each_side_must_do() {
        let lost = vec!["gw-a".to_owned()];
        let p = moved_note(Role::Producer, &lost, "beam");
        assert!(p.contains("gw-a lost") && p.contains("`kubectl scistream update beam`"), "{p}");
        let c = moved_note(Role::Consumer, &lost, "beam");
        assert!(c.contains("consumer application must connect to the new ones") && c.contains("update beam"), "{c}");
        let a = address_note(Role::Producer, &["192.0.2.1:5100".into()], &["192.0.2.9:5100".into()], "beam");
        assert!(a.contains("from 192.0.2.1:5100 to 192.0.2.9:5100") && a.contains("update beam"), "{a}");
    }

    #[test]
    fn no_move_no_condition() {
        let mut conds = Vec::new();
        listeners_moved(&mut conds, None, Some("x"), &listeners(), None, &at(1));
        assert!(conds.is_empty());
    }

    #[test]
    fn hello_key_problems_are_explained() {
        let r = SecretKeyRef { name: "beam-hello".to_owned(), key: "key".to_owned() };
        let missing = hello_key_problem("science", &r, None).unwrap();
        assert!(missing.contains("science/beam-hello") && missing.contains("does not exist"), "{missing}");
        let mut s = Secret::default();
        assert!(hello_key_problem("science", &r, Some(&s)).unwrap().contains("no (or an empty) key key"));
        s.data = Some([("key".to_owned(), ByteString(b"s3cret".to_vec()))].into());
        assert_eq!(hello_key_problem("science", &r, Some(&s)), None);
        let mut conds = Vec::new();
        hello_key_missing(&mut conds, &missing, Some(1), &at(1));
        assert_eq!(conditions::find(&conds, types::READY).unwrap().reason, "HelloKeyMissing");
        assert_eq!(conditions::find(&conds, types::HELLO_RECEIVED).unwrap().reason, "HelloKeyMissing");
        assert!(!missing.contains("s3cret"));
    }
}
