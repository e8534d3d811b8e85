//! Per-stream data-channel key material: a P-256 key pair and a self-signed certificate,
//! made with rcgen. The private key goes into a Secret in the gateway namespace and never
//! anywhere else; only the certificate is published (in status) for the peer side to pin.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

/// A freshly generated key pair and certificate, both PEM.
pub struct KeyMaterial {
    /// Certificate (public).
    pub certificate_pem: String,
    /// PKCS#8 private key. Never log it.
    pub private_key_pem: String,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial").field("certificate_pem", &self.certificate_pem).finish_non_exhaustive()
    }
}

/// Generates the key material of one stream side. The certificate names the stream and the
/// role so a person inspecting it knows what it is for; peers pin it, so names are not
/// used for verification.
pub fn generate(stream_id: &str, role: &str) -> Result<KeyMaterial, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![format!("{role}.{stream_id}.scistream.io")])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("scistream {role} {stream_id}"));
    dn.push(DnType::OrganizationName, "SciStream");
    params.distinguished_name = dn;
    let cert = params.self_signed(&key)?;
    Ok(KeyMaterial { certificate_pem: cert.pem(), private_key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_distinct_pem_pairs_and_hides_the_key_in_debug() {
        let a = generate("5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", "producer").unwrap();
        let b = generate("5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", "producer").unwrap();
        assert!(a.certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.private_key_pem.contains("PRIVATE KEY"));
        assert_ne!(a.private_key_pem, b.private_key_pem);
        assert!(!format!("{a:?}").contains("PRIVATE KEY"));
    }
}
