//! The data path's WAN hop, probed without reaching any application: a TLS handshake with a
//! producer relay's WAN listener, from here, as the consumer gateway's relay starts one.
//!
//! The relay must present the certificate the consumer side pins, and prove it holds its key
//! (the handshake's signature). The probe presents no certificate of its own, so the relay
//! refuses the handshake and never connects onward: the producer application sees nothing
//! (relays connect to their targets only after a handshake; the relay counts one failed
//! handshake). A Plain stream's listener is never probed: any connection to it reaches the
//! application.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

/// What the probe of one listener found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The relay presented the pinned certificate and signed the handshake with its key.
    Pinned,
    /// The relay presented another certificate (the consumer's relay would refuse it): its
    /// subject names and SHA-256 prefix.
    NotPinned(String),
    /// The pinned certificate itself is not a PEM certificate.
    BadPin,
    /// Nothing answered from here (refused, timed out): the peer gateway may still reach it.
    Unreachable(String),
    /// Something answered but no TLS handshake came of it.
    NoHandshake(String),
}

/// Records what the relay presents and accepts only the pinned certificate.
#[derive(Debug)]
struct Pinned {
    pinned: Vec<u8>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    certificate: Option<Vec<u8>>,
    signed: bool,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.certificate = Some(end_entity.as_ref().to_vec());
        }
        if end_entity.as_ref() == self.pinned.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Relays speak TLS 1.3 only.
        Err(rustls::Error::General("TLS 1.2 offered; relays speak TLS 1.3".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let valid = rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )?;
        if let Ok(mut seen) = self.seen.lock() {
            seen.signed = true;
        }
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A certificate in words: its names and the start of its SHA-256.
fn describe(der: &[u8]) -> String {
    match crate::reach::CertFacts::of(der) {
        Some(f) if f.names.is_empty() => format!("{} (sha256 {})", f.subject, f.sha256),
        Some(f) => format!("{} (sha256 {})", f.names.join(", "), f.sha256),
        None => "an unreadable certificate".into(),
    }
}

/// Probes the relay listener `addr` (`host:port`), which must present `pinned_pem`, within
/// `timeout` for each step.
pub async fn probe(addr: &str, pinned_pem: &str, timeout: Duration) -> Probe {
    let Ok(pinned) = CertificateDer::from_pem_slice(pinned_pem.as_bytes()) else {
        return Probe::BadPin;
    };
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Probe::Unreachable(crate::reach::connect_words(&e)),
        Err(_) => return Probe::Unreachable(format!("connecting timed out after {}s", timeout.as_secs())),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(Pinned { pinned: pinned.to_vec(), provider: provider.clone(), seen: Mutex::default() });
    let config = match ClientConfig::builder_with_provider(provider).with_protocol_versions(&[&rustls::version::TLS13])
    {
        Ok(b) => b.dangerous().with_custom_certificate_verifier(verifier.clone()).with_no_client_auth(),
        Err(e) => return Probe::NoHandshake(format!("TLS: {e}")),
    };
    // Relays' certificates name the stream, not an address: the name is not checked (the
    // certificate is compared whole).
    let name = ServerName::try_from("relay.scistream.io").map(|n| n.to_owned());
    let Ok(name) = name else { return Probe::NoHandshake("no server name".into()) };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // Nothing is ever written: a finished handshake's connection is dropped at once.
    let failure = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => Some(format!("no TLS answer within {}s", timeout.as_secs())),
        Ok(Err(e)) => Some(e.to_string()),
        Ok(Ok(_dropped)) => None,
    };
    let (certificate, signed) = verifier.seen.lock().map(|s| (s.certificate.clone(), s.signed)).unwrap_or_default();
    match (certificate, failure) {
        (Some(cert), _) if signed && cert.as_slice() == pinned.as_ref() => Probe::Pinned,
        (Some(cert), _) => Probe::NotPinned(describe(&cert)),
        (None, Some(why)) => Probe::NoHandshake(why),
        (None, None) => Probe::NoHandshake("a handshake without a certificate".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use tokio::{io::AsyncReadExt, net::TcpListener};

    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn key_pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A relay's TLS server: TLS 1.3, presents `own`, requires a client certificate pinned
    /// to `peer`. Returns its address and what it saw of one connection: whether the
    /// handshake finished, and the bytes read after it.
    async fn relay(own: &(String, String), peer: &str) -> (String, tokio::task::JoinHandle<(bool, usize)>) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(peer.as_bytes()).unwrap()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(own.0.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(own.1.as_bytes()).unwrap(),
            )
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            match tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(tcp).await {
                Err(_) => (false, 0),
                Ok(mut tls) => {
                    let mut buf = Vec::new();
                    let _ = tokio::time::timeout(T, tls.read_to_end(&mut buf)).await;
                    (true, buf.len())
                }
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn the_pinned_relay_is_recognised_and_refuses_the_probe_before_any_byte() {
        let (relay_keys, consumer_keys) = (key_pair("producer.s.scistream.io"), key_pair("consumer.s.scistream.io"));
        let (addr, seen) = relay(&relay_keys, &consumer_keys.0).await;
        assert_eq!(probe(&addr, &relay_keys.0, T).await, Probe::Pinned);
        assert_eq!(seen.await.unwrap(), (false, 0), "the relay refused the probe: it would connect nowhere");
    }

    #[tokio::test]
    async fn another_certificate_is_not_pinned() {
        let (relay_keys, consumer_keys) = (key_pair("producer.s.scistream.io"), key_pair("consumer.s.scistream.io"));
        let (addr, seen) = relay(&relay_keys, &consumer_keys.0).await;
        let other = key_pair("producer.t.scistream.io");
        let said = probe(&addr, &other.0, T).await;
        assert!(matches!(&said, Probe::NotPinned(names) if names.contains("producer.s.scistream.io")), "{said:?}");
        assert_eq!(seen.await.unwrap(), (false, 0));
    }

    #[tokio::test]
    async fn nothing_listening_and_no_tls_are_told_apart() {
        let pinned = key_pair("producer.s.scistream.io").0;
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        assert!(matches!(probe(&closed, &pinned, T).await, Probe::Unreachable(w) if w.contains("refused")));

        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = http.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = http.accept().await.unwrap();
            let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
        });
        assert!(matches!(probe(&addr, &pinned, T).await, Probe::NoHandshake(_)));
        server.await.unwrap();
    }
}
