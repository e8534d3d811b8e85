//! Publishing the control endpoint for users: where to dial it and which certificate to
//! trust, in ConfigMap [`keys::CONTROL_ENDPOINT_CONFIGMAP`] of the serving certificate's
//! namespace (the operator's), kept current as the certificate changes (generated,
//! cert-manager renewals, a replaced Secret). `kubectl scistream` reads it to print complete
//! `hello` commands and to say Hello with nothing but a kubeconfig context.
//!
//! What is trusted: the Secret's `ca.crt` when it has one (cert-manager, an administrator's
//! CA), else its `tls.crt` (a generated, self-signed certificate is its own trust root, as
//! SciStream 1.x clients' `--server_cert`). Every replica writes the same content with
//! server-side apply, so the write is idempotent.

use std::{collections::BTreeMap, net::IpAddr};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use scistream_api::keys;
use tokio_util::sync::CancellationToken;

/// What users need to reach the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// `host:port` application controllers dial.
    pub address: String,
    /// PEM certificate(s) to trust.
    pub ca_pem: String,
}

/// The address to publish when none is configured: the first DNS name, else the first IP
/// address of the certificate, with the gRPC port. `None` when the certificate names nothing.
pub fn default_address(dns_names: &[String], ips: &[IpAddr], port: u16) -> Option<String> {
    let host = dns_names
        .first()
        .cloned()
        .or_else(|| ips.first().map(|ip| if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() }))?;
    Some(format!("{host}:{port}"))
}

/// What to trust, from a TLS Secret's data (`ca.crt` first, else `tls.crt`).
pub fn trusted_pem(secret: &Secret) -> Option<String> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok()).filter(|t| !t.trim().is_empty());
    text("ca.crt").or_else(|| text("tls.crt"))
}

/// The ConfigMap that publishes `p`.
pub fn configmap(p: &Published) -> ConfigMap {
    let mut cm = ConfigMap {
        data: Some(BTreeMap::from([
            (keys::CONTROL_ADDRESS_KEY.to_owned(), p.address.clone()),
            (keys::CONTROL_CA_KEY.to_owned(), p.ca_pem.clone()),
        ])),
        ..ConfigMap::default()
    };
    cm.metadata.name = Some(keys::CONTROL_ENDPOINT_CONFIGMAP.to_owned());
    cm.metadata.labels =
        Some(BTreeMap::from([(keys::LABEL_MANAGED_BY.to_owned(), keys::MANAGED_BY_OPERATOR.to_owned())]));
    cm.metadata.annotations = Some(BTreeMap::from([(
        "scistream.io/description".to_owned(),
        "The SciStream control endpoint: dial `address`, trust `ca.crt` (kubectl scistream hello reads both)"
            .to_owned(),
    )]));
    cm
}

async fn apply(api: &Api<ConfigMap>, p: &Published) -> kube::Result<()> {
    let mut body = serde_json::to_value(configmap(p)).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    let pp = PatchParams::apply(keys::FIELD_MANAGER_OPERATOR).force();
    api.patch(keys::CONTROL_ENDPOINT_CONFIGMAP, &pp, &Patch::Apply(&body)).await.map(|_| ())
}

/// Keeps the ConfigMap in `namespace` current with `address` and the certificate of Secret
/// `secret` (watched) until `token` is cancelled.
pub async fn keep(client: Client, namespace: String, secret: String, address: String, token: CancellationToken) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={secret}"));
    let mut events = watcher(secrets, config).default_backoff().applied_objects().boxed();
    let mut last: Option<Published> = None;
    loop {
        let event = tokio::select! {
            () = token.cancelled() => return,
            e = events.next() => e,
        };
        let Some(event) = event else { return };
        let Ok(secret) = event else { continue };
        let Some(ca_pem) = trusted_pem(&secret) else { continue };
        let published = Published { address: address.clone(), ca_pem };
        if last.as_ref() == Some(&published) {
            continue;
        }
        match apply(&configmaps, &published).await {
            Ok(()) => {
                tracing::info!(configmap = %format!("{namespace}/{}", keys::CONTROL_ENDPOINT_CONFIGMAP), address = %address, "published the control endpoint");
                last = Some(published);
            }
            Err(e) => tracing::warn!(error = %e, "could not publish the control endpoint; retrying on the next change"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn the_address_defaults_to_the_certificates_first_name() {
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            default_address(&["control.aps.example".into()], &[ip], 5000).as_deref(),
            Some("control.aps.example:5000")
        );
        assert_eq!(default_address(&[], &[ip], 31500).as_deref(), Some("203.0.113.10:31500"));
        assert_eq!(default_address(&[], &[v6], 5000).as_deref(), Some("[2001:db8::1]:5000"));
        assert_eq!(default_address(&[], &[], 5000), None);
    }

    #[test]
    fn the_ca_is_preferred_over_the_serving_certificate() {
        let secret = |keys: &[(&str, &str)]| Secret {
            data: Some(keys.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Secret::default()
        };
        assert_eq!(trusted_pem(&secret(&[("tls.crt", "LEAF"), ("ca.crt", "CA")])).as_deref(), Some("CA"));
        assert_eq!(trusted_pem(&secret(&[("tls.crt", "LEAF"), ("ca.crt", "")])).as_deref(), Some("LEAF"));
        assert_eq!(trusted_pem(&secret(&[("tls.key", "K")])), None);
        let cm = configmap(&Published { address: "a:1".into(), ca_pem: "CA".into() });
        assert_eq!(cm.data.unwrap()["address"], "a:1");
    }
}
