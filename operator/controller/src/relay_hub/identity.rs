//! Who is who on the configuration channel: the operator holds an authority (a CA key made
//! with rcgen) and issues the channel's serving certificate and one client certificate per
//! shared relay. The TLS layer accepts only certificates this authority issued (rustls's
//! WebPKI verifier, no verifier of our own); the [`Hub`](super::Hub) then knows each relay by
//! the SHA-256 of the certificate it was issued, so a relay cannot speak for another node.
//! Relays pin the serving certificate itself.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

use super::RelayKey;
use crate::certs::KeyMaterial;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make the configuration channel's certificates: {0}")]
pub struct IdentityError(#[from] rcgen::Error);

/// The authority of the configuration channel.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
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

impl Authority {
    /// A new authority.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(DnType::CommonName, "scistream relay-config authority");
        params.distinguished_name.push(DnType::OrganizationName, "SciStream");
        Ok(Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)? })
    }

    /// The authority's certificate (what the server trusts client certificates by).
    pub fn certificate_pem(&self) -> String {
        self.issuer.pem()
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
