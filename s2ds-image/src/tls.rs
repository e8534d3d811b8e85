//! Mutual TLS 1.3 with a pinned peer certificate.
//!
//! Trust comes from the config, not from a CA: the peer's end-entity
//! certificate must hash (SHA-256 over its DER) to the pinned fingerprint,
//! compared in constant time. The server-name check is replaced by the pin,
//! and the certificate's validity period is not checked (the operator
//! rotates the pin with the certificate). The handshake signature is still
//! verified, so the peer must hold the pinned certificate's private key.
//!
//! Session resumption is disabled on both sides: a resumed TLS 1.3 session
//! skips certificate verification, which would let a peer whose pin was
//! removed by a reload reconnect.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{PeerPin, TlsFiles, format_fingerprint};
use crate::material::Material;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {path}; check that the Secret is mounted (or was sent) and holds PEM")]
    Pem {
        /// Which file (`tls.certFile`, ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the key or certificate.
    #[error("rustls rejected the certificate/key pair; check that tls.keyFile matches tls.certFile")]
    Rustls(#[source] rustls::Error),
}

/// The process-wide crypto provider: aws-lc-rs with AES-128-GCM first (the
/// fastest suite on AES-NI hardware).
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    Arc::new(p)
}

/// Installs [`provider`] as the process default (idempotent).
pub fn install_provider() {
    // Err means one is already installed, which is fine.
    let _ = CryptoProvider::install_default(Arc::unwrap_or_clone(provider()));
}

/// SHA-256 over a certificate's DER encoding.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// Reads the pin: the fingerprint itself or the first certificate of a file.
pub fn load_pin(pin: &PeerPin) -> Result<[u8; 32], TlsError> {
    load_pin_from(pin, &Material::Disk)
}

/// [`load_pin`], reading a pinned certificate from `material`.
pub fn load_pin_from(pin: &PeerPin, material: &Material) -> Result<[u8; 32], TlsError> {
    match pin {
        PeerPin::Fingerprint(fp) => Ok(*fp),
        PeerPin::CertFile(p) => Ok(fingerprint(&load_certs("tls.peerCertFile", p, material)?[0])),
    }
}

fn read(what: &'static str, path: &Path, material: &Material) -> Result<zeroize::Zeroizing<Vec<u8>>, TlsError> {
    material.read(path).map_err(|e| TlsError::Pem {
        what,
        path: path.to_owned(),
        source: rustls::pki_types::pem::Error::Io(e),
    })
}

fn load_certs(what: &'static str, path: &Path, material: &Material) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path, material)?;
    let pem = |source| TlsError::Pem { what, path: path.to_owned(), source };
    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(pem(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

fn load_identity(
    files: &TlsFiles,
    material: &Material,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = load_certs("tls.certFile", &files.cert_file, material)?;
    let bytes = read("tls.keyFile", &files.key_file, material)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| TlsError::Pem {
        what: "tls.keyFile",
        path: files.key_file.clone(),
        source,
    })?;
    Ok((certs, key))
}

/// Builds the acceptor side (`tls-server` mode).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_from(files, &Material::Disk)
}

/// [`server_config`], reading the files from `material`.
pub fn server_config_from(files: &TlsFiles, material: &Material) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let pin = Pin::new(load_pin_from(&files.peer, material)?, &provider);
    let (certs, key) = load_identity(files, material)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .with_client_cert_verifier(Arc::new(pin))
        .with_single_cert(certs, key)
        .map_err(TlsError::Rustls)?;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    // After the handshake our own record layer carries the data (relay::record).
    cfg.enable_secret_extraction = true;
    Ok(Arc::new(cfg))
}

/// Builds the connector side (`tls-client` mode).
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_from(files, &Material::Disk)
}

/// [`client_config`], reading the files from `material`.
pub fn client_config_from(files: &TlsFiles, material: &Material) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let pin = Pin::new(load_pin_from(&files.peer, material)?, &provider);
    let (certs, key) = load_identity(files, material)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pin))
        .with_client_auth_cert(certs, key)
        .map_err(TlsError::Rustls)?;
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_secret_extraction = true;
    Ok(Arc::new(cfg))
}

/// Whether a handshake error means "the peer's certificate is not the
/// pinned one" (as opposed to a protocol or I/O failure).
pub fn is_pin_mismatch(e: &std::io::Error) -> bool {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return false;
    };
    matches!(
        inner,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::DecryptError
            )
    )
}

/// Verifier for both roles: accepts exactly the pinned certificate.
#[derive(Debug)]
struct Pin {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl Pin {
    fn new(fingerprint: [u8; 32], provider: &CryptoProvider) -> Self {
        Self { fingerprint, algorithms: provider.signature_verification_algorithms }
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let got = fingerprint(cert);
        if bool::from(got.ct_eq(&self.fingerprint)) {
            Ok(())
        } else {
            tracing::debug!(
                presented = %format_fingerprint(&got),
                "peer certificate does not match the pin"
            );
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }
}

impl ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is not offered.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pin {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_accepts_only_the_pinned_cert() {
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let p = provider();
        let pin = Pin::new(fingerprint(a.cert.der()), &p);
        assert!(pin.check(a.cert.der()).is_ok());
        let e = pin.check(b.cert.der()).unwrap_err();
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert!(is_pin_mismatch(&io));
        assert!(!is_pin_mismatch(&std::io::Error::other("x")));
    }

    #[test]
    fn configs_build_from_files_and_report_bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let me = rcgen::generate_simple_self_signed(vec!["me".into()]).unwrap();
        let peer = rcgen::generate_simple_self_signed(vec!["peer".into()]).unwrap();
        let w = |n: &str, s: String| {
            let p = dir.path().join(n);
            std::fs::write(&p, s).unwrap();
            p
        };
        let files = TlsFiles {
            cert_file: w("c.pem", me.cert.pem()),
            key_file: w("k.pem", me.signing_key.serialize_pem()),
            peer: PeerPin::CertFile(w("p.pem", peer.cert.pem())),
            kernel_tls: true,
            record_layer: crate::config::RecordLayer::S2ds,
        };
        assert!(server_config(&files).is_ok());
        assert!(client_config(&files).is_ok());
        assert_eq!(load_pin(&files.peer).unwrap(), fingerprint(peer.cert.der()));
        let bad = TlsFiles { key_file: dir.path().join("missing"), ..files };
        let e = server_config(&bad).unwrap_err().to_string();
        assert!(e.contains("tls.keyFile") && e.contains("missing"), "{e}");
    }
}
