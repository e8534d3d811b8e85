//! The configuration channel's gRPC service over mutual TLS: only certificates the
//! [`Authority`](super::identity::Authority) issued complete the handshake; a call is then
//! served only when its Hello names the relay the certificate was issued to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use scistream_relay_proto::relay_config_server::{RelayConfig, RelayConfigServer};
use scistream_relay_proto::{RelayReport, RelayUpdate, relay_report};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{Hub, RelayKey};
use crate::certs::KeyMaterial;

/// Largest message either way (a snapshot carries every stream of a node).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the channel could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS material is unusable.
    #[error("the configuration channel's TLS material is unusable: {0}")]
    Tls(String),
    /// The gRPC server failed.
    #[error("the configuration channel failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The TLS server config: our certificate, client certificates issued by `authority_pem`
/// required, TLS 1.3, HTTP/2.
pub fn tls_config(serving: &KeyMaterial, authority_pem: &str) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let bad = |e: String| ServeError::Tls(e);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(authority_pem.as_bytes()) {
        roots.add(ca.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(serving.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(serving.private_key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

struct Service {
    hub: Arc<Hub>,
}

#[tonic::async_trait]
impl RelayConfig for Service {
    type SyncStream = tokio_stream::wrappers::ReceiverStream<Result<RelayUpdate, Status>>;

    async fn sync(&self, request: Request<Streaming<RelayReport>>) -> Result<Response<Self::SyncStream>, Status> {
        if !self.hub.is_open() {
            return Err(Status::unavailable("the operator is starting: it has not yet set every stream; call again"));
        }
        let relay = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| <[u8; 32]>::from(Sha256::digest(c.as_ref()))))
            .and_then(|fp| self.hub.identify(&fp));
        let Some(relay) = relay else {
            self.hub.count_refusal();
            return Err(Status::permission_denied("this certificate was not issued to any relay (or was revoked)"));
        };
        let mut reports = request.into_inner();
        let hello = match reports.message().await? {
            Some(RelayReport { report: Some(relay_report::Report::Hello(h)) }) => h,
            _ => return Err(Status::invalid_argument("the first message of a call is a Hello")),
        };
        let said = RelayKey { gateway: hello.gateway.clone(), node: hello.node.clone() };
        if said != relay {
            self.hub.count_refusal();
            tracing::warn!(%relay, claimed = %said, "a relay claimed another relay's streams; refused");
            return Err(Status::permission_denied(format!("this certificate was issued to relay {relay}, not {said}")));
        }
        let (call, updates) = self.hub.connect(&relay, &hello);
        let hub = self.hub.clone();
        tokio::spawn(async move {
            loop {
                match reports.message().await {
                    Ok(Some(RelayReport { report: Some(relay_report::Report::Applied(a)) })) => {
                        hub.applied(&relay, call, a)
                    }
                    Ok(Some(_)) => tracing::debug!(%relay, "ignoring a report that is not Applied"),
                    Ok(None) | Err(_) => break,
                }
            }
            hub.disconnect(&relay, call);
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(updates)))
    }
}

/// Serves `hub` on `listener` until `shutdown`.
pub async fn serve(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accepting = shutdown.clone();
    let counting = hub.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
                () = accepting.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => { tracing::debug!(error = %e, "accept failed"); continue; }
                },
            };
            // Small messages both ways: without it, Nagle and delayed ACKs add 40 ms to some.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, hub) = (acceptor.clone(), tx.clone(), counting.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(e)) => {
                        hub.count_refusal();
                        tracing::info!(%peer, error = %e, "relay-config TLS handshake refused");
                    }
                    Err(_) => tracing::info!(%peer, "relay-config TLS handshake timed out"),
                }
            });
        }
    });
    let service = RelayConfigServer::new(Service { hub })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown.cancelled())
        .await?;
    Ok(())
}
