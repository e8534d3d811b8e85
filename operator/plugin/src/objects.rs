//! The objects `create` makes, built without I/O (unit- and snapshot-tested).

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use scistream_api::{DataChannel, Role, SecretKeyRef, StreamRequest, StreamRequestSpec, keys};

use crate::cli::{Channel, CreateArgs};

/// One side to create.
#[derive(Clone, Debug)]
pub struct Side {
    /// The StreamRequest.
    pub request: StreamRequest,
    /// Its Hello-key Secret (None for a producer with static targets).
    pub secret: Option<Secret>,
}

/// Name of a side's Hello-key Secret.
pub fn secret_name(stream: &str) -> String {
    format!("{stream}-hello")
}

/// A random Hello key: 32 bytes, URL-safe base64 (no padding).
pub fn new_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds one side. `peer` is (context, namespace) of the other side.
pub fn side(args: &CreateArgs, role: Role, stream_id: &str, key: Option<&str>, peer: (&str, &str)) -> Side {
    let gateway = match role {
        Role::Producer => &args.prod_gateway,
        Role::Consumer => &args.cons_gateway,
    };
    let targets = (role == Role::Producer && !args.prod_targets.is_empty()).then(|| args.prod_targets.clone());
    let secret = key.map(|key| Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&args.name)),
            labels: Some(labels(stream_id)),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(keys::DEFAULT_HELLO_KEY.to_owned(), key.to_owned())])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    });
    let spec = StreamRequestSpec {
        stream_id: stream_id.to_owned(),
        role,
        gateway: gateway.clone(),
        num_connections: args.num_conn,
        rate: args.rate.clone(),
        hello_key_secret_ref: secret
            .is_some()
            .then(|| SecretKeyRef { name: secret_name(&args.name), key: keys::DEFAULT_HELLO_KEY.to_owned() }),
        remote_listeners: None,
        targets,
        data_channel: match args.data_channel {
            Channel::MutualTls => DataChannel::MutualTLS,
            Channel::Plain => DataChannel::Plain,
        },
        peer_certificate: None,
        hello_timeout: args.hello_timeout.clone(),
    };
    let mut request = StreamRequest::new(&args.name, spec);
    request.metadata.labels = Some(labels(stream_id));
    request.metadata.annotations = Some(BTreeMap::from([
        (keys::ANNOTATION_PEER_CONTEXT.to_owned(), peer.0.to_owned()),
        (keys::ANNOTATION_PEER_NAMESPACE.to_owned(), peer.1.to_owned()),
    ]));
    Side { request, secret }
}

fn labels(stream_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::LABEL_STREAM_ID.to_owned(), stream_id.to_owned()),
        (keys::LABEL_MANAGED_BY.to_owned(), keys::FIELD_MANAGER_PLUGIN.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> CreateArgs {
        let mut argv =
            vec!["kubectl-scistream", "create", "run-42", "--prod-gateway", "dtn-a", "--cons-gateway", "dtn-b"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Create(c) => *c,
            _ => unreachable!(),
        }
    }

    #[test]
    fn producer_with_static_targets_needs_no_key() {
        let a = args(&["--prod-targets", "10.0.0.1:7000"]);
        let p = side(&a, Role::Producer, "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", None, ("alcf", "science"));
        assert!(p.secret.is_none() && p.request.spec.hello_key_secret_ref.is_none());
        assert_eq!(p.request.spec.targets.as_deref(), Some(&["10.0.0.1:7000".to_owned()][..]));
        insta::assert_yaml_snapshot!("producer_static", p.request);
    }

    #[test]
    fn consumer_side_has_its_key_secret_and_peer_annotations() {
        let a = args(&["--rate", "10Gbps", "--num-conn", "8"]);
        let c = side(&a, Role::Consumer, "5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", Some("k3y"), ("aps", "beamline"));
        let secret = c.secret.unwrap();
        assert_eq!(secret.string_data.unwrap()["key"], "k3y");
        assert_eq!(c.request.spec.gateway, "dtn-b");
        assert_eq!(c.request.spec.targets, None);
        insta::assert_yaml_snapshot!("consumer", c.request);
    }

    #[test]
    fn keys_are_random_and_long() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
