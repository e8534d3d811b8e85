//! Reaching a control endpoint over TLS, as SciStream 1.x clients do (its certificate is the
//! only trust root), and when that fails, finding out why and saying what to fix: the name
//! dialled is not in the certificate (with the names it has), the certificate is not the one
//! trusted (with both), the trusted file is not PEM, nothing listens (refused), no answer
//! (timed out), the name does not resolve, or something listens but does not speak TLS.
//!
//! [`probe`] repeats the connection step by step (resolve, TCP, TLS handshake) with a
//! verifier that records the presented certificate; [`tls_problem`] turns a handshake error
//! into words (pure, table-tested).

use std::{path::Path, sync::Arc, time::Duration};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// What the chart calls the values that put names and addresses in the endpoint's certificate.
const CERT_VALUES: &str = "chart values controlEndpoint.tls.dnsNames / controlEndpoint.tls.ipAddresses";

/// The certificate a user trusts for a control endpoint (`--server-cert`).
#[derive(Clone, Debug)]
pub struct TrustedCert {
    /// Where it came from, for messages.
    pub source: String,
    /// The PEM text.
    pub pem: Vec<u8>,
    /// Its certificates.
    pub certs: Vec<CertificateDer<'static>>,
}

/// What a person needs to know about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject (e.g. `CN=scistream-control-endpoint`).
    pub subject: String,
    /// DNS names and IP addresses (subjectAltName).
    pub names: Vec<String>,
    /// SHA-256 of the DER, hex, first 8 bytes (enough to tell two apart).
    pub sha256: String,
}

impl CertFacts {
    /// Facts of a DER certificate (`None` if it does not parse).
    pub fn of(der: &[u8]) -> Option<CertFacts> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => names.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => names.extend(ip_text(b)),
                    _ => {}
                }
            }
        }
        let digest = Sha256::digest(der);
        let sha256 = digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        Some(CertFacts { subject: cert.subject().to_string(), names, sha256 })
    }

    fn describe(&self) -> String {
        let names = if self.names.is_empty() { "no names".to_owned() } else { self.names.join(", ") };
        format!("{} ({names}; sha256 {}...)", self.subject, self.sha256)
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes).ok().map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// Reads `--server-cert`: it must hold at least one PEM certificate.
pub fn read_trusted(path: &Path) -> Result<TrustedCert, Error> {
    let pem = std::fs::read(path).map_err(|e| Error::Usage(format!("--server-cert {}: {e}", path.display())))?;
    let certs = trusted_from_pem(&pem).map_err(|why| {
        Error::Usage(format!(
            "--server-cert {} is not a PEM certificate: {why}; it must hold a -----BEGIN CERTIFICATE----- block \
             (the control endpoint's certificate, as its operator publishes it: `kubectl -n scistream-system get \
             configmap scistream-control-endpoint -o jsonpath='{{.data.ca\\.crt}}'`)",
            path.display()
        ))
    })?;
    Ok(TrustedCert { source: format!("--server-cert {}", path.display()), pem, certs })
}

/// The certificates of a PEM text, or why there are none.
pub fn trusted_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect();
    if !certs.is_empty() {
        return Ok(certs);
    }
    let text = String::from_utf8_lossy(pem);
    Err(if text.contains("PRIVATE KEY-----") {
        "it holds a private key, not a certificate".to_owned()
    } else if pem.first() == Some(&0x30) {
        "it looks like DER (binary); convert it with `openssl x509 -inform der -in FILE -out FILE.crt`".to_owned()
    } else {
        "it holds no certificate".to_owned()
    })
}

/// A handshake error in words: what is wrong and what to do. `host` is what was dialled,
/// `presented` the certificate the endpoint showed, `trusted` what the user trusts.
pub fn tls_problem(e: &rustls::Error, host: &str, presented: Option<&CertFacts>, trusted: &TrustedCert) -> String {
    let shown = presented.map_or_else(|| "its certificate".to_owned(), |p| format!("its certificate {}", p.describe()));
    let Some(cert_error) = (match e {
        rustls::Error::InvalidCertificate(c) => Some(c),
        _ => None,
    }) else {
        return format!("the TLS handshake failed: {e}");
    };
    match cert_error {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            // rustls's own list is debug text (`DnsName("a.example")`): prefer the certificate's.
            let names = match (presented, cert_error) {
                (Some(p), _) => p.names.join(", "),
                (None, CertificateError::NotValidForNameContext { presented, .. }) => presented.join(", "),
                (None, _) => "other names".to_owned(),
            };
            format!(
                "its certificate is for {names}, not {host}: dial it by one of those names, or have the facility \
                 add {host} to the certificate ({CERT_VALUES}, docs/operator-guide.md)"
            )
        }
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            let trusted_facts: Vec<String> =
                trusted.certs.iter().filter_map(|c| CertFacts::of(c)).map(|f| f.describe()).collect();
            format!(
                "{shown} is not signed by {} (which holds {}): the file is stale or from another endpoint; \
                 fetch the endpoint's current certificate (`kubectl -n scistream-system get configmap \
                 scistream-control-endpoint -o jsonpath='{{.data.ca\\.crt}}'`, or let `hello --context` find it)",
                trusted.source,
                trusted_facts.join("; ")
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("{shown} has expired ({cert_error:?}); the facility must renew it")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("{shown} is not valid yet ({cert_error:?}); check this machine's clock")
        }
        other => format!("{shown} is not accepted: {other:?}"),
    }
}

/// Records the certificate the server presents, then verifies as rustls would.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: std::sync::Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.as_ref().to_vec());
        }
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Connects to `control` (`host:port`) step by step, trusting `trusted`, within `timeout`
/// per step. `Ok(facts)` when the TLS handshake succeeds (the presented certificate), else an
/// error (exit code 7) saying what failed and what to do.
pub async fn probe(control: &str, trusted: &TrustedCert, timeout: Duration) -> Result<Option<CertFacts>, Error> {
    let unreachable = |why: String| Error::Cluster(format!("cannot reach the control endpoint {control}: {why}"));
    let (host, _) =
        control.rsplit_once(':').ok_or_else(|| Error::Usage(format!("--control {control:?} is not host:port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let secs = humantime(timeout);
    let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(timeout, tokio::net::lookup_host(control)).await {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => return Err(unreachable(format!("{host} does not resolve ({e})"))),
        Err(_) => return Err(unreachable(format!("resolving {host} timed out after {secs}"))),
    };
    let addr = addrs.first().ok_or_else(|| unreachable(format!("{host} resolves to no address")))?;
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unreachable(connect_words(&e))),
        Err(_) => {
            return Err(unreachable(format!(
                "connecting timed out after {secs} (a firewall drops it, the address is wrong, or the endpoint is \
                 overloaded); check the address and that the control Service is exposed to this network"
            )));
        }
    };
    let mut roots = RootCertStore::empty();
    for cert in &trusted.certs {
        roots.add(cert.clone()).map_err(|e| Error::Usage(format!("{}: {e}", trusted.source)))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Usage(format!("{}: {e}", trusted.source)))?;
    let verifier = Arc::new(Recording { inner, seen: std::sync::Mutex::new(None) });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Failed(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| Error::Usage(format!("--control {control}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let presented = || verifier.seen.lock().ok().and_then(|s| s.clone()).and_then(|der| CertFacts::of(&der));
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(_)) => Ok(presented()),
        Ok(Err(e)) => {
            let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
            Err(unreachable(match tls {
                Some(tls) => tls_problem(&tls, host, presented().as_ref(), trusted),
                None => format!(
                    "the TLS handshake failed ({e}); is it the control endpoint (gRPC port) that listens there?"
                ),
            }))
        }
        Err(_) => Err(unreachable(format!(
            "it accepted the connection but gave no TLS answer within {secs}: something else listens there, or the \
             endpoint serves without TLS (--insecure-control)"
        ))),
    }
}

pub(crate) fn connect_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused: nothing listens there; check the address and port \
                                          (the control Service's, docs/operator-guide.md) and that the operator runs"
            .to_owned(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => format!("no route to it ({e})"),
        _ => e.to_string(),
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{:.1}s", d.as_secs_f64()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedCert {
        let c = rcgen::generate_simple_self_signed(vec!["control.aps.example".to_owned()]).unwrap();
        let pem = c.cert.pem().into_bytes();
        TrustedCert { source: "--server-cert c.crt".to_owned(), certs: trusted_from_pem(&pem).unwrap(), pem }
    }

    #[test]
    fn certificate_facts_name_its_subject_and_names() {
        let c = rcgen::generate_simple_self_signed(vec!["a.example".to_owned(), "10.0.0.1".to_owned()]).unwrap();
        let facts = CertFacts::of(c.cert.der()).unwrap();
        assert_eq!(facts.names, ["a.example", "10.0.0.1"]);
        assert_eq!(facts.sha256.len(), 23);
    }

    #[test]
    fn files_that_are_not_pem_say_what_they_are() {
        let c = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
        assert!(trusted_from_pem(c.cert.der()).unwrap_err().contains("DER"));
        assert!(trusted_from_pem(c.signing_key.serialize_pem().as_bytes()).unwrap_err().contains("private key"));
        assert!(trusted_from_pem(b"hello").unwrap_err().contains("no certificate"));
        assert_eq!(trusted_from_pem(c.cert.pem().as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn handshake_errors_in_words() {
        let t = trusted();
        let presented = CertFacts::of(&t.certs[0]).unwrap();
        let cases: Vec<(rustls::Error, &[&str])> = vec![
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("10.0.0.9").unwrap().to_owned(),
                    presented: vec!["control.aps.example".to_owned()],
                }),
                &["is for control.aps.example, not 10.0.0.9", "controlEndpoint.tls.ipAddresses"],
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                &["is not signed by --server-cert c.crt", "stale", "control.aps.example"],
            ),
            (rustls::Error::InvalidCertificate(CertificateError::Expired), &["has expired"]),
            (rustls::Error::InvalidCertificate(CertificateError::NotValidYet), &["clock"]),
            (rustls::Error::HandshakeNotComplete, &["the TLS handshake failed"]),
        ];
        for (e, words) in cases {
            let said = tls_problem(&e, "10.0.0.9", Some(&presented), &t);
            for w in words {
                assert!(said.contains(w), "{w:?} in {said}");
            }
        }
    }
}
