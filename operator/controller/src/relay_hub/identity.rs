//! Who is who on the configuration channel: the operator holds an authority (a CA key made
//! with rcgen) and issues the channel's serving certificate and one client certificate per
//! shared relay. The TLS layer accepts only certificates this authority issued (rustls's
//! WebPKI verifier, no verifier of our own); the [`Hub`](super::Hub) then knows each relay by
//! the SHA-256 of the certificate it was issued, so a relay cannot speak for another node.
//! Relays pin the serving certificate itself.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

use super::RelayKey;
use crate::certs::KeyMaterial;

/// Why a certificate could not be made, or a kept authority not read back.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen refused.
    #[error("cannot make the configuration channel's certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A kept authority's certificate is not PEM.
    #[error("the kept relay-channel authority's certificate is not a PEM certificate")]
    NotACertificate,
}

/// The authority of the configuration channel.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// SHA-256 over the DER of the first certificate in `pem` (how relays are known).
pub fn fingerprint_pem(pem: &str) -> Option<[u8; 32]> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(Sha256::digest(der.as_ref()).into())
}

/// The authority's own parameters: the same each time, so that an authority read back from
/// its kept key issues certificates that chain to its kept certificate (the issuer is its
/// name, key identifier and key usages; rcgen takes them from here).
fn authority_params() -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    params.distinguished_name.push(DnType::CommonName, "scistream relay-config authority");
    params.distinguished_name.push(DnType::OrganizationName, "SciStream");
    Ok(params)
}

impl Authority {
    /// A new authority.
    pub fn generate() -> Result<Self, IdentityError> {
        let key = KeyPair::generate()?;
        let certificate_pem = authority_params()?.self_signed(&key)?.pem();
        Ok(Self { issuer: Issuer::new(authority_params()?, key), certificate_pem })
    }

    /// The authority kept from an earlier start (its certificate and PKCS#8 key).
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        fingerprint_pem(certificate_pem).ok_or(IdentityError::NotACertificate)?;
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self { issuer: Issuer::new(authority_params()?, key), certificate_pem: certificate_pem.to_owned() })
    }

    /// The authority's key (PKCS#8 PEM), to keep it.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The authority's certificate (what the server trusts client certificates by).
    pub fn certificate_pem(&self) -> String {
        self.certificate_pem.clone()
    }

    /// The channel's serving certificate, for `names` (relays pin it; names are for people).
    pub fn issue_server(&self, names: &[String]) -> Result<KeyMaterial, IdentityError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, "scistream relay-config");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A relay's client certificate.
    pub fn issue_relay(&self, relay: &RelayKey) -> Result<KeyMaterial, IdentityError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("scistream relay {relay}"));
        params.distinguished_name.push(DnType::OrganizationName, "SciStream");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<KeyMaterial, IdentityError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(KeyMaterial { certificate_pem: cert.pem(), private_key_pem: key.serialize_pem() })
    }
}
