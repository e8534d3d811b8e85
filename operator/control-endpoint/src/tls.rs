//! The serving certificate: from a `kubernetes.io/tls` Secret (reloaded when it changes), or
//! generated (rcgen) for the configured DNS names and IPs and stored in a Secret, so that every
//! replica serves the same certificate and users can fetch it for 1.x clients'
//! `--server_cert` (`kubectl get secret -n <ns> <name> -o jsonpath='{.data.tls\.crt}' | base64 -d`).

use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
    runtime::{WatchStreamExt, watcher},
};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::{
    error::{Error, Result},
    legacy::MANAGED_BY_ENDPOINT,
};

/// Annotation on a generated certificate's Secret: the names and IPs it was made for.
pub const ANNOTATION_SANS: &str = "scistream.io/control-endpoint-sans";

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSource {
    /// Namespace of the Secrets.
    pub namespace: String,
    /// A `kubernetes.io/tls` Secret provided by the administrator (e.g. cert-manager).
    pub secret: Option<String>,
    /// Where a generated certificate is stored when `secret` is not given.
    pub generated_secret: String,
    /// DNS names of a generated certificate.
    pub dns_names: Vec<String>,
    /// IP addresses of a generated certificate.
    pub ips: Vec<IpAddr>,
}

/// The current certificate, swappable while serving.
#[derive(Debug)]
pub struct Certs {
    key: ArcSwap<CertifiedKey>,
    pem: ArcSwap<String>,
}

impl Certs {
    /// Certificates from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = certified_key(cert_pem, key_pem)?;
        Ok(Self { key: ArcSwap::from_pointee(key), pem: ArcSwap::from_pointee(cert_pem.to_owned()) })
    }

    /// Replaces the certificate.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        self.key.store(Arc::new(certified_key(cert_pem, key_pem)?));
        self.pem.store(Arc::new(cert_pem.to_owned()));
        Ok(())
    }

    /// The certificate chain being served (PEM), what 1.x clients take as `--server_cert`.
    pub fn certificate_pem(&self) -> String {
        self.pem.load().as_ref().clone()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}

/// A rustls key pair from PEM.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Setup(format!("the serving certificate is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Setup("the serving certificate PEM holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::Setup(format!("the serving key is not a PEM private key: {e}")))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| Error::Setup(format!("unsupported serving key: {e}")))?;
    Ok(CertifiedKey::new(certs, signer))
}

/// A self-signed serving certificate (PEM certificate, PEM key) for `dns_names` and `ips`:
/// an end-entity certificate that 1.x clients use as their only trust root.
pub fn generate(dns_names: &[String], ips: &[IpAddr]) -> Result<(String, String)> {
    let mut sans: Vec<String> = dns_names.to_vec();
    sans.extend(ips.iter().map(|ip| ip.to_string()));
    if sans.is_empty() {
        sans.push("localhost".to_owned());
    }
    let mut params =
        rcgen::CertificateParams::new(sans).map_err(|e| Error::Setup(format!("bad --control-tls-dns-name: {e}")))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "scistream-control-endpoint");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = rcgen::KeyPair::generate().map_err(|e| Error::Setup(format!("could not generate a key: {e}")))?;
    let cert = params.self_signed(&key).map_err(|e| Error::Setup(format!("could not sign a certificate: {e}")))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn sans_of(source: &TlsSource) -> String {
    let mut all: Vec<String> = source.dns_names.clone();
    all.extend(source.ips.iter().map(|ip| ip.to_string()));
    all.join(",")
}

fn pem_pair(secret: &Secret) -> Option<(String, String)> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
    Some((text("tls.crt")?, text("tls.key")?))
}

/// Loads (or generates and stores) the serving certificate.
pub async fn load(client: &Client, source: &TlsSource) -> Result<Arc<Certs>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &source.namespace);
    if let Some(name) = &source.secret {
        let secret = api
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("read the serving certificate Secret {}/{name}", source.namespace)))?
            .ok_or_else(|| {
                Error::Setup(format!(
                    "the serving certificate Secret {}/{name} does not exist; create it (kubernetes.io/tls) or \
                     omit --control-tls-secret to have one generated",
                    source.namespace
                ))
            })?;
        let (cert, key) = pem_pair(&secret)
            .ok_or_else(|| Error::Setup(format!("Secret {}/{name} lacks tls.crt or tls.key", source.namespace)))?;
        return Ok(Arc::new(Certs::from_pem(&cert, &key)?));
    }
    let name = &source.generated_secret;
    let sans = sans_of(source);
    let existing = api.get_opt(name).await.map_err(Error::kube(format!("read Secret {}/{name}", source.namespace)))?;
    if let Some(secret) = &existing
        && secret.annotations().get(ANNOTATION_SANS) == Some(&sans)
        && let Some((cert, key)) = pem_pair(secret)
    {
        return Ok(Arc::new(Certs::from_pem(&cert, &key)?));
    }
    let (cert, key) = generate(&source.dns_names, &source.ips)?;
    let mut secret = Secret {
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(
            [("tls.crt", &cert), ("tls.key", &key)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    secret.metadata.name = Some(name.clone());
    secret.metadata.labels =
        Some([(scistream_api::keys::LABEL_MANAGED_BY.to_owned(), MANAGED_BY_ENDPOINT.to_owned())].into());
    secret.metadata.annotations = Some([(ANNOTATION_SANS.to_owned(), sans)].into());
    let stored = match existing {
        None => api.create(&PostParams::default(), &secret).await,
        // Regenerated for other names: a merge patch guarded by the resourceVersion read.
        Some(old) => {
            secret.metadata.resource_version = old.metadata.resource_version;
            api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&secret)).await
        }
    };
    match stored {
        Ok(_) => {
            tracing::info!(secret = %format!("{}/{name}", source.namespace), "generated the serving certificate");
            Ok(Arc::new(Certs::from_pem(&cert, &key)?))
        }
        // Another replica stored one first: serve theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let theirs =
                api.get(name).await.map_err(Error::kube(format!("read Secret {}/{name}", source.namespace)))?;
            let (cert, key) = pem_pair(&theirs)
                .ok_or_else(|| Error::Setup(format!("Secret {}/{name} lacks tls.crt", source.namespace)))?;
            Ok(Arc::new(Certs::from_pem(&cert, &key)?))
        }
        Err(e) => Err(Error::kube(format!("store the serving certificate in Secret {}/{name}", source.namespace))(e)),
    }
}

/// Reloads `certs` whenever the certificate's Secret changes, until the watch ends.
pub async fn watch(client: Client, source: TlsSource, certs: Arc<Certs>) {
    let name = source.secret.clone().unwrap_or(source.generated_secret.clone());
    let api: Api<Secret> = Api::namespaced(client, &source.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().applied_objects().boxed();
    while let Some(event) = events.next().await {
        let Ok(secret) = event else { continue };
        let Some((cert, key)) = pem_pair(&secret) else { continue };
        if certs.certificate_pem() == cert {
            continue;
        }
        match certs.replace(&cert, &key) {
            Ok(()) => tracing::info!(secret = %name, "serving certificate reloaded"),
            Err(e) => {
                tracing::error!(secret = %name, error = %e, "the changed serving certificate is unusable; keeping the old one")
            }
        }
    }
}

/// The rustls configuration of a listener offering `alpn` protocols.
pub fn server_config(certs: Arc<Certs>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(certs);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_swap() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (cert, key) = generate(&["control.example.org".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        let certs = Certs::from_pem(&cert, &key).unwrap();
        let (cert2, key2) = generate(&[], &[]).unwrap();
        certs.replace(&cert2, &key2).unwrap();
        assert_eq!(certs.certificate_pem(), cert2);
        assert!(certs.replace("garbage", &key2).is_err());
        assert_eq!(certs.certificate_pem(), cert2, "a bad certificate does not replace a good one");
        assert!(certified_key(&cert, "not a key").is_err());
    }
}
