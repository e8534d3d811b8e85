//! Pure translation between SciStream 1.x messages and `StreamRequest`s: validation of what a
//! client sent (so bad input is refused before anything is written), the objects a legacy
//! `req` creates, the patch an `update` makes and the replies 1.x clients expect.

use scistream_api::{DataChannel, Rate, RateEnforcement, Role, endpoint::parse_list, stream_request::MAX_CONNECTIONS};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub use scistream_api::keys::{
    ANNOTATION_LEGACY_CREATOR as ANNOTATION_CREATOR, ANNOTATION_LEGACY_CREDENTIAL as ANNOTATION_CREDENTIAL,
    FIELD_MANAGER_CONTROL_ENDPOINT as FIELD_MANAGER, FIELD_MANAGER_CONTROL_ENDPOINT as MANAGED_BY_ENDPOINT,
};
/// `num_conn` when a 1.x client sends 0.
pub const DEFAULT_NUM_CONN: i32 = 5;
/// `rate` (kb/s) when a 1.x client sends 0, as 1.x clients default.
pub const DEFAULT_RATE_KBPS: i32 = 10_000;
/// Longest uid accepted.
const MAX_UID: usize = 64;

/// Reply text of a `hello` with role PROD, as 1.x sends it.
pub const PROD_HELLO_MESSAGE: &str = "Sending Prod listeners...";
/// Reply text of any other `hello`, as 1.x sends it.
pub const HELLO_MESSAGE: &str = "Sending listeners...";

/// Parses a 1.x role (`PROD`/`CONS`).
pub fn parse_role(role: &str) -> Result<Role> {
    Role::from_legacy(role).ok_or_else(|| {
        Error::InvalidArgument(format!("role {:?} is neither PROD nor CONS; send PROD or CONS", truncate(role)))
    })
}

/// Parses the role of a Hello: empty means "not said".
pub fn parse_hello_role(role: &str) -> Result<Option<Role>> {
    if role.is_empty() { Ok(None) } else { parse_role(role).map(Some) }
}

/// Checks a uid for lookups (any stream): non-empty and short. Returns it lowercased, since
/// stream ids are lowercase UUIDs and UUIDs are case-insensitive.
pub fn lookup_uid(uid: &str) -> Result<String> {
    if uid.is_empty() {
        return Err(Error::InvalidArgument("uid is empty; send the stream id".into()));
    }
    if uid.len() > MAX_UID || !uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::InvalidArgument(format!(
            "uid {:?} is not a stream id (a UUID such as 2f0f3c4e-8f1d-4d7a-9a43-1c2b3d4e5f60)",
            truncate(uid)
        )));
    }
    Ok(uid.to_ascii_lowercase())
}

/// Checks a uid for a new stream: it must be a UUID (the StreamRequest's `spec.streamId`).
pub fn new_uid(uid: &str) -> Result<String> {
    let uid = lookup_uid(uid)?;
    let ok = uid.len() == 36
        && uid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(uid)
    } else {
        Err(Error::InvalidArgument(format!(
            "uid {uid:?} is not a UUID; SciStream stream ids look like 2f0f3c4e-8f1d-4d7a-9a43-1c2b3d4e5f60"
        )))
    }
}

/// Checks a list of `host:port` endpoints (`field` names it in the message).
pub fn endpoints(list: &[String], field: &str, allow_empty: bool) -> Result<()> {
    if list.is_empty() && !allow_empty {
        return Err(Error::InvalidArgument(format!("{field} is empty; send at least one host:port")));
    }
    if list.len() > MAX_CONNECTIONS as usize {
        return Err(Error::InvalidArgument(format!(
            "{field} has {} entries; at most {MAX_CONNECTIONS} are allowed",
            list.len()
        )));
    }
    parse_list(list).map(|_| ()).map_err(|(i, e)| Error::InvalidArgument(format!("{field}[{i}]: {e}")))
}

/// Hex SHA-256 of a credential (what [`ANNOTATION_CREDENTIAL`] holds).
pub fn credential_digest(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where legacy streams go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Namespace of legacy StreamRequests.
    pub namespace: String,
    /// Gateway of legacy StreamRequests.
    pub gateway: String,
    /// Data channel of legacy StreamRequests (`Plain` by default: 1.x exchanges no certificates).
    pub data_channel: DataChannel,
    /// Whether the relays limit legacy streams to their rate (`status.rateEnforcement`).
    pub rate_enforcement: RateEnforcement,
}

/// What a legacy `req` creates.
#[derive(Clone, Debug, PartialEq)]
pub struct NewStream {
    /// Stream id (lowercase UUID).
    pub stream_id: String,
    /// Role.
    pub role: Role,
    /// Name of the StreamRequest.
    pub name: String,
    /// Name of the Hello-key Secret.
    pub secret_name: String,
    /// The StreamRequest (JSON).
    pub object: Value,
    /// Whether its relays limit it to its rate (written to its status once created).
    pub rate_enforcement: RateEnforcement,
}

/// Who sends a legacy `req`: the credential (its digest lets the 1.x client's Hello with the
/// same token in), and the Kubernetes user it authenticated as (`None` in the `none` mode).
#[derive(Clone, Copy, Debug, Default)]
pub struct Creator<'a> {
    /// The token sent.
    pub credential: &'a str,
    /// The user it names.
    pub user: Option<&'a str>,
}

/// Validates a `req` and builds the StreamRequest it asks for.
pub fn new_stream(
    uid: &str,
    role: &str,
    num_conn: i32,
    rate_kbps: i32,
    placement: &Placement,
    creator: Creator<'_>,
) -> Result<NewStream> {
    let stream_id = new_uid(uid)?;
    let role = parse_role(role)?;
    let num_conn = if num_conn == 0 { DEFAULT_NUM_CONN } else { num_conn };
    if !(1..=MAX_CONNECTIONS).contains(&num_conn) {
        return Err(Error::InvalidArgument(format!(
            "num_conn {num_conn} is out of range; send 1 to {MAX_CONNECTIONS}"
        )));
    }
    let rate_kbps = if rate_kbps == 0 { DEFAULT_RATE_KBPS } else { rate_kbps };
    let rate = Rate::from_legacy_kbps(rate_kbps).ok_or_else(|| {
        Error::InvalidArgument(format!("rate {rate_kbps} kb/s is not positive; send kb/s, e.g. 10000"))
    })?;
    let name = format!("legacy-{stream_id}-{}", role.legacy_name().to_ascii_lowercase());
    let secret_name = format!("{name}-hello");
    let mut annotations = json!({ ANNOTATION_CREDENTIAL: credential_digest(creator.credential) });
    if let Some(user) = creator.user {
        annotations[ANNOTATION_CREATOR] = json!(user);
    }
    let object = json!({
        "apiVersion": "scistream.io/v1alpha1",
        "kind": "StreamRequest",
        "metadata": {
            "name": name,
            "namespace": placement.namespace,
            "labels": {
                scistream_api::keys::LABEL_MANAGED_BY: MANAGED_BY_ENDPOINT,
                scistream_api::keys::LABEL_STREAM_ID: stream_id,
            },
            "annotations": annotations,
        },
        "spec": {
            "streamId": stream_id,
            "role": role,
            "gateway": placement.gateway,
            "numConnections": num_conn,
            "rate": rate.to_string(),
            "dataChannel": placement.data_channel,
            "helloKeySecretRef": { "name": secret_name, "key": scistream_api::keys::DEFAULT_HELLO_KEY },
        },
    });
    Ok(NewStream { stream_id, role, name, secret_name, object, rate_enforcement: placement.rate_enforcement })
}

/// The merge patch of an `update`: targets for a producer, remote listeners for a consumer.
pub fn update_patch(role: Role, listeners: &[String]) -> Result<Value> {
    let field = match role {
        Role::Producer => "targets",
        Role::Consumer => "remoteListeners",
    };
    endpoints(listeners, "remote_listeners", false)?;
    Ok(json!({ "spec": { field: listeners } }))
}

/// Whether a StreamRequest was created by a legacy `req`: its Hello role is not checked, and
/// only such streams are touched by legacy `update` and `release`.
pub fn is_legacy(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations.contains_key(ANNOTATION_CREDENTIAL)
}

/// The message of a `hello` reply: by the Hello's role if it said one, else by the stream's.
pub fn hello_message(hello_role: Option<Role>, stream_role: Role) -> &'static str {
    match hello_role.unwrap_or(stream_role) {
        Role::Producer => PROD_HELLO_MESSAGE,
        Role::Consumer => HELLO_MESSAGE,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "2f0f3c4e-8f1d-4d7a-9a43-1c2b3d4e5f60";

    fn placement() -> Placement {
        Placement {
            namespace: "science".into(),
            gateway: "dtn".into(),
            data_channel: DataChannel::Plain,
            rate_enforcement: RateEnforcement::ReservationOnly,
        }
    }

    #[test]
    fn req_with_defaults_becomes_a_plain_stream_request() {
        let s =
            new_stream(UID, "PROD", 0, 0, &placement(), Creator { credential: "tok", user: Some("alice") }).unwrap();
        assert_eq!(s.name, format!("legacy-{UID}-prod"));
        assert_eq!(s.role, Role::Producer);
        let spec = &s.object["spec"];
        assert_eq!(spec["numConnections"], 5);
        assert_eq!(spec["rate"], "10Mbps");
        assert_eq!(spec["dataChannel"], "Plain");
        assert_eq!(spec["role"], "Producer");
        assert_eq!(spec["helloKeySecretRef"]["name"], format!("legacy-{UID}-prod-hello"));
        assert_eq!(s.object["metadata"]["annotations"][ANNOTATION_CREDENTIAL], credential_digest("tok"));
        assert_eq!(s.object["metadata"]["annotations"][ANNOTATION_CREATOR], "alice");
        let anonymous = new_stream(UID, "PROD", 0, 0, &placement(), Creator { credential: "x", user: None }).unwrap();
        assert!(anonymous.object["metadata"]["annotations"].get(ANNOTATION_CREATOR).is_none(), "mode none");
        let parsed: scistream_api::StreamRequest = serde_json::from_value(s.object).unwrap();
        assert_eq!(parsed.spec.stream_id, UID);
    }

    #[test]
    fn req_counts_rate_and_role_are_checked() {
        let p = placement();
        let s = new_stream(&UID.to_uppercase(), "CONS", 3, 2500, &p, Creator::default()).unwrap();
        assert_eq!(s.stream_id, UID);
        assert_eq!(s.object["spec"]["rate"], "2.5Mbps");
        assert_eq!(s.object["spec"]["numConnections"], 3);
        for (uid, role, n, rate) in
            [(UID, "prod", 1, 1), (UID, "", 1, 1), (UID, "PROD", 257, 1), (UID, "PROD", -1, 1), (UID, "PROD", 1, -5)]
        {
            let e = new_stream(uid, role, n, rate, &p, Creator::default()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{role} {n} {rate}");
        }
        for uid in ["", "abc", "2f0f3c4e_8f1d-4d7a-9a43-1c2b3d4e5f60", "../../etc", &"a".repeat(100)] {
            assert_eq!(
                new_stream(uid, "PROD", 1, 1, &p, Creator::default()).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
    }

    #[test]
    fn update_patches_the_field_of_the_role() {
        let l = vec!["192.0.2.7:5100".to_owned()];
        assert_eq!(update_patch(Role::Producer, &l).unwrap(), json!({"spec": {"targets": l}}));
        assert_eq!(update_patch(Role::Consumer, &l).unwrap(), json!({"spec": {"remoteListeners": l}}));
        assert!(update_patch(Role::Consumer, &[]).is_err());
        let e = update_patch(Role::Consumer, &["a:1".into(), "nope".into()]).unwrap_err();
        assert!(e.to_string().starts_with("remote_listeners[1]"), "{e}");
        assert!(update_patch(Role::Producer, &vec!["h:1".to_owned(); 257]).is_err());
    }

    #[test]
    fn hello_roles_and_messages() {
        assert_eq!(parse_hello_role("").unwrap(), None);
        assert_eq!(parse_hello_role("PROD").unwrap(), Some(Role::Producer));
        assert!(parse_hello_role("PRODUCER").is_err());
        assert_eq!(hello_message(Some(Role::Producer), Role::Consumer), PROD_HELLO_MESSAGE);
        assert_eq!(hello_message(None, Role::Consumer), HELLO_MESSAGE);
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(credential_digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
