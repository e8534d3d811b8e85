//! TLS material (a CA and a serving certificate for 127.0.0.1/localhost,
//! made with rcgen, kept in the data dir when there is one) and kubeconfig
//! files.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};

use crate::{Error, Result};

/// Installs the aws-lc-rs rustls provider for the process (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// PEM material of one cluster.
#[derive(Debug, Clone)]
pub struct Material {
    /// CA certificate (goes into kubeconfig).
    pub ca_pem: String,
    /// Serving certificate.
    pub cert_pem: String,
    /// Serving key (PKCS#8).
    pub key_pem: String,
}

fn generate() -> Result<Material> {
    let tls = |e: rcgen::Error| Error::Tls(e.to_string());
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "scistream-testcluster-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls)?).map_err(tls)?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(tls)?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let key = KeyPair::generate().map_err(tls)?;
    let cert = params.signed_by(&key, &ca).map_err(tls)?;
    Ok(Material { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Loads the material from `dir` if present, else generates (and saves it there).
pub fn load_or_generate(dir: Option<&Path>) -> Result<Material> {
    if let Some(d) = dir {
        let read = |f: &str| std::fs::read_to_string(d.join(f));
        if let (Ok(ca_pem), Ok(cert_pem), Ok(key_pem)) = (read("ca.crt"), read("tls.crt"), read("tls.key")) {
            return Ok(Material { ca_pem, cert_pem, key_pem });
        }
    }
    let m = generate()?;
    if let Some(d) = dir {
        for (f, c) in [("ca.crt", &m.ca_pem), ("tls.crt", &m.cert_pem), ("tls.key", &m.key_pem)] {
            std::fs::write(d.join(f), c)
                .map_err(|e| Error::Io { context: format!("writing {}", d.join(f).display()), source: e })?;
        }
    }
    Ok(m)
}

/// A rustls server configuration offering HTTP/2 and HTTP/1.1.
pub fn server_config(m: &Material) -> Result<Arc<rustls::ServerConfig>> {
    install_crypto_provider();
    let bad = |e: String| Error::Tls(e);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(m.cert_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(m.key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, PrivateKeyDer::Pkcs8(key))
        .map_err(|e| bad(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A kubeconfig with one cluster, user and context named `name`.
pub fn kubeconfig(name: &str, url: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {user}\n    namespace: default\ncurrent-context: {name}\npreferences: {{}}\n"
    )
}
