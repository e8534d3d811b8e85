//! A stream side on its Gateway's shared relays (`spec.s2ds.relayModel: Shared`), without
//! I/O: how the side is named on a relay, what is sent for it, and what its relays' reports
//! mean for its phase. The I/O is in [`super::shared_relays`].

use std::collections::BTreeMap;

use scistream_api::Role;
use scistream_core::phase::Relays;
use scistream_relay_proto::{StreamConfig, StreamState};

use crate::relay_hub::RelayKey;

/// The side's name on a shared relay: `STREAM.ROLE` (both sides of a stream may share a
/// relay; s2ds accepts `[A-Za-z0-9._-]`, and stream ids have no dot). Also the `stream`
/// label of the relay's metrics.
pub fn key(stream_id: &str, role: Role) -> String {
    format!("{stream_id}.{}", role.label_value())
}

/// The stream id and role of a [`key`].
pub fn parse_key(key: &str) -> Option<(&str, Role)> {
    let (id, role) = key.rsplit_once('.')?;
    let role = match role {
        "producer" => Role::Producer,
        "consumer" => Role::Consumer,
        _ => return None,
    };
    (!id.is_empty()).then_some((id, role))
}

/// The shared relay of `gateway` on `node`.
pub fn relay(gateway: &str, node: &str) -> RelayKey {
    RelayKey { gateway: gateway.to_owned(), node: node.to_owned() }
}

/// What is sent for the side on one relay: its rendered s2ds config and the files it names
/// (certificate, key, pinned peer certificate). The generation is a hash of both, so the
/// relay's report says whether it runs exactly this.
pub fn stream_config(key: &str, config: String, files: BTreeMap<String, Vec<u8>>) -> StreamConfig {
    let generation = generation(&config, &files);
    StreamConfig { stream_id: key.to_owned(), generation, config, files: files.into_iter().collect() }
}

/// 64-bit FNV-1a over the config and the files in name order, each length-prefixed: stable
/// across operator versions and restarts (a restarted operator sends the same generation,
/// and the relay leaves the stream as it runs).
pub fn generation(config: &str, files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(config.as_bytes());
    for (name, content) in files {
        feed(name.as_bytes());
        feed(content);
    }
    format!("{h:016x}")
}

/// What one node's shared relay shows of the side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OnRelay {
    /// The node.
    pub node: String,
    /// The generation the relay is to run (set in the hub), if any.
    pub desired: Option<String>,
    /// What the relay last said of the side.
    pub reported: Option<StreamState>,
    /// Whether the relay has its channel open.
    pub connected: bool,
}

/// The side's relays on `nodes` (those it holds ports on), as their reports tell: ready when
/// the relay runs the generation it was given; failing when it refused that generation (its
/// error) or is not connected while it is to run the side.
pub fn relays(nodes: &[String], seen: &[OnRelay]) -> Relays {
    let mut r = Relays { wanted: nodes.len(), ..Relays::default() };
    for node in nodes {
        let Some(on) = seen.iter().find(|s| &s.node == node) else { continue };
        let Some(desired) = &on.desired else { continue };
        match &on.reported {
            Some(s) if &s.generation == desired && s.ready => r.ready += 1,
            Some(s) if &s.generation == desired && !s.error.is_empty() => {
                r.failing.push((node.clone(), s.error.clone()))
            }
            _ if !on.connected => {
                r.failing.push((node.clone(), "its shared relay is not connected to the operator".to_owned()))
            }
            _ => {}
        }
    }
    r
}

/// Whether any relay still runs (or is to run) the side.
pub fn present(seen: &[OnRelay]) -> bool {
    seen.iter().any(|s| s.desired.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_refuse_what_is_not_one() {
        let id = "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d";
        for role in [Role::Producer, Role::Consumer] {
            assert_eq!(parse_key(&key(id, role)), Some((id, role)));
        }
        assert_eq!(key(id, Role::Producer), format!("{id}.producer"));
        for bad in ["", "no-role", ".producer", "x.prod", "x.consumer.extra"] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_generation_follows_config_and_files_only() {
        let files = |key: &[u8]| BTreeMap::from([("/tls.key".to_owned(), key.to_vec())]);
        let a = stream_config("s.producer", "mode: plain\n".into(), files(b"k1"));
        assert_eq!(a.generation, stream_config("s.producer", "mode: plain\n".into(), files(b"k1")).generation);
        assert_ne!(a.generation, stream_config("s.producer", "mode: plain\n".into(), files(b"k2")).generation);
        assert_ne!(a.generation, stream_config("s.producer", "mode: tls\n".into(), files(b"k1")).generation);
        // A byte moved between a name and its content is another generation.
        let moved = BTreeMap::from([("/tls.ke".to_owned(), b"yk1".to_vec())]);
        assert_ne!(a.generation, generation("mode: plain\n", &moved));
        assert_eq!(a.generation.len(), 16);
    }

    fn on(node: &str, desired: Option<&str>, reported: Option<(&str, bool, &str)>, connected: bool) -> OnRelay {
        OnRelay {
            node: node.into(),
            desired: desired.map(Into::into),
            reported: reported.map(|(generation, ready, error)| StreamState {
                stream_id: "s.producer".into(),
                generation: generation.into(),
                ready,
                error: error.into(),
                ..StreamState::default()
            }),
            connected,
        }
    }

    #[test]
    fn relays_are_ready_only_at_the_generation_they_were_given() {
        let nodes = vec!["a".to_owned(), "b".to_owned()];
        let cases: Vec<(&str, Vec<OnRelay>, usize, Vec<&str>)> = vec![
            ("nothing set yet", vec![], 0, vec![]),
            (
                "both ready",
                vec![
                    on("a", Some("g1"), Some(("g1", true, "")), true),
                    on("b", Some("g1"), Some(("g1", true, "")), true),
                ],
                2,
                vec![],
            ),
            (
                "b still runs the previous generation",
                vec![
                    on("a", Some("g2"), Some(("g2", true, "")), true),
                    on("b", Some("g2"), Some(("g1", true, "")), true),
                ],
                1,
                vec![],
            ),
            (
                "b refused its config",
                vec![
                    on("a", Some("g1"), Some(("g1", true, "")), true),
                    on("b", Some("g1"), Some(("g1", false, "bind 5100: in use")), true),
                ],
                1,
                vec!["b"],
            ),
            (
                "b's relay is not connected",
                vec![on("a", Some("g1"), Some(("g1", true, "")), true), on("b", Some("g1"), None, false)],
                1,
                vec!["b"],
            ),
            ("set, connected, not yet answered", vec![on("a", Some("g1"), None, true)], 0, vec![]),
            (
                "a relay on a node not held does not count",
                vec![on("c", Some("g1"), Some(("g1", true, "")), true)],
                0,
                vec![],
            ),
        ];
        for (what, seen, ready, failing) in cases {
            let r = relays(&nodes, &seen);
            assert_eq!(r.wanted, 2, "{what}");
            assert_eq!(r.ready, ready, "{what}");
            assert_eq!(r.failing.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), failing, "{what}");
        }
        let refused = relays(&nodes, &[on("b", Some("g1"), Some(("g1", false, "bind 5100: in use")), true)]);
        assert_eq!(refused.failing[0].1, "bind 5100: in use", "the relay's own words reach the status");
        assert!(present(&[on("a", Some("g1"), None, false)]));
        assert!(!present(&[on("a", None, Some(("g1", true, "")), true)]));
    }
}
