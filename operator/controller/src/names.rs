//! Names of the objects the operator creates for a stream side, all derived from the stream
//! id and role so that cleanup can find them again after a restart.

use scistream_api::Role;

/// Prefix of every object of one stream side: `s2ds-<stream id>-<role>`.
pub fn side(stream_id: &str, role: Role) -> String {
    format!("s2ds-{stream_id}-{}", role.label_value())
}

/// The side's key Secret (kubernetes.io/tls).
pub fn tls_secret(stream_id: &str, role: Role) -> String {
    format!("{}-tls", side(stream_id, role))
}

/// The side's ConfigMap (one key per node, plus the peer certificate).
pub fn config_map(stream_id: &str, role: Role) -> String {
    side(stream_id, role)
}

/// The relay pod on `node`: the node name is hashed so the name stays a valid, bounded DNS
/// label whatever the node is called.
pub fn pod(stream_id: &str, role: Role, node: &str) -> String {
    format!("{}-{:08x}", side(stream_id, role), fnv1a(node))
}

/// ConfigMap key holding the relay configuration for `node`.
pub fn config_key(node: &str) -> String {
    format!("relay-{node}")
}

/// ConfigMap key holding the peer's pinned certificate.
pub const PEER_CERT_KEY: &str = "peer.crt";

/// Label selector of the operator's objects of `component` for Gateway `gateway`.
pub fn gateway_selector(component: &str, gateway: &str) -> String {
    use scistream_api::keys;
    format!(
        "{}={},{}={component},{}={gateway}",
        keys::LABEL_MANAGED_BY,
        keys::MANAGED_BY_OPERATOR,
        keys::LABEL_COMPONENT,
        keys::LABEL_GATEWAY,
    )
}

/// 32-bit FNV-1a: stable across versions and platforms (unlike `DefaultHasher`).
pub fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_dns_labels() {
        let id = "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d";
        let long_node = "a".repeat(253);
        for name in
            [pod(id, Role::Consumer, &long_node), tls_secret(id, Role::Producer), config_map(id, Role::Consumer)]
        {
            assert!(name.len() <= 63, "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{name}");
        }
        assert_eq!(pod(id, Role::Producer, "gw-a"), pod(id, Role::Producer, "gw-a"));
        assert_ne!(pod(id, Role::Producer, "gw-a"), pod(id, Role::Producer, "gw-b"));
        assert_eq!(fnv1a(""), 0x811c_9dc5);
    }
}
