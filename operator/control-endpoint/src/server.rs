//! Sockets: binds the gRPC and HTTP listeners, terminates TLS with rustls (certificate
//! reloadable), and runs tonic and warp until shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{AnyAccess, Open, introspection::Introspector, kubernetes::TokenReviewer, limiter::FailureLimiter},
    config::{AuthConfig, EndpointConfig},
    error::{Error, Result},
    grpc::ControlService,
    handler::Handler,
    index::{self, Index},
    limit::MessageLimit,
    metrics::Metrics,
    proto::control_server::ControlServer,
    streams::KubeStreams,
    tls::{self, Certs},
};

/// Longest TLS handshake allowed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Shared = Arc<Handler<KubeStreams, AnyAccess>>;

/// The endpoint with its sockets bound, not yet serving.
pub struct Bound {
    client: Client,
    config: EndpointConfig,
    grpc: TcpListener,
    http: Option<TcpListener>,
    certs: Option<Arc<Certs>>,
    handler: Shared,
    index: Index,
    metrics: Metrics,
}

/// Binds the endpoint's sockets and prepares its certificate and authentication.
pub async fn bind(client: Client, config: EndpointConfig, metrics: Metrics) -> Result<Bound> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let access = access(&client, &config).await?;
    let certs = if config.insecure {
        tracing::warn!(
            addr = %config.grpc_addr,
            "--insecure-control: the control endpoint serves PLAINTEXT; tokens and Hello keys cross the network unencrypted"
        );
        None
    } else {
        Some(tls::load(&client, &config.tls).await?)
    };
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| Error::Setup(format!("could not listen on {} (--control-addr): {e}", config.grpc_addr)))?;
    let http = match config.http_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Setup(format!("could not listen on {addr} (--control-http-addr): {e}")))?,
        ),
        None => None,
    };
    let index = Index::default();
    let streams = KubeStreams::new(client.clone(), index.clone());
    let limiter =
        FailureLimiter::new(config.max_auth_failures, config.max_auth_failures_per_address, config.auth_failure_window);
    let handler = Arc::new(Handler::new(streams, access, limiter, config.handler.clone()));
    Ok(Bound { client, config, grpc, http, certs, handler, index, metrics })
}

async fn access(client: &Client, config: &EndpointConfig) -> Result<AnyAccess> {
    Ok(match &config.auth {
        AuthConfig::Kubernetes => AnyAccess::Kubernetes(TokenReviewer::new(client.clone())),
        AuthConfig::None => {
            tracing::warn!(
                "--control-auth none: legacy req/update/release are accepted from ANYONE who can reach the endpoint \
                 (SciStream 1.x trusted-testbed mode); use only on a trusted network"
            );
            AnyAccess::None(Open)
        }
        AuthConfig::Introspection { url, credentials_secret, expect } => {
            let ns = &config.tls.namespace;
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            let secret = api
                .get_opt(credentials_secret)
                .await
                .map_err(Error::kube(format!("read the introspection credentials Secret {ns}/{credentials_secret}")))?
                .ok_or_else(|| {
                    Error::Setup(format!(
                        "the introspection credentials Secret {ns}/{credentials_secret} does not exist; create it with \
                         keys client_id and client_secret"
                    ))
                })?;
            let data = secret.data.unwrap_or_default();
            let field = |k: &str| {
                data.get(k)
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .ok_or_else(|| Error::Setup(format!("Secret {ns}/{credentials_secret} has no key {k}")))
            };
            let (id, secret) = (field("client_id")?, field("client_secret")?);
            AnyAccess::Introspection(Box::new(Introspector::new(url, &id, &secret, expect.clone(), client.clone())?))
        }
    })
}

impl Bound {
    /// Where gRPC is served (the actual port when bound to port 0).
    pub fn grpc_addr(&self) -> Result<SocketAddr> {
        self.grpc.local_addr().map_err(|e| Error::Setup(e.to_string()))
    }

    /// Where the JSON Hello is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The serving certificate (PEM), for 1.x clients' `--server_cert`; `None` when insecure.
    pub fn certificate_pem(&self) -> Option<String> {
        self.certs.as_ref().map(|c| c.certificate_pem())
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let Bound { client, config, grpc, http, certs, handler, index, metrics } = self;
        let mut background = tokio::task::JoinSet::new();
        background.spawn(index::run(client.clone(), index));
        if let Some(certs) = &certs {
            background.spawn(tls::watch(client.clone(), config.tls.clone(), certs.clone()));
        }
        if let Some(http) = http {
            let acceptor =
                certs.as_ref().map(|c| TlsAcceptor::from(tls::server_config(c.clone(), &[b"h2", b"http/1.1"])));
            background.spawn(serve_http(http, acceptor, handler.clone(), metrics.clone(), shutdown.clone()));
        }
        tracing::info!(addr = ?grpc.local_addr().ok(), tls = certs.is_some(), "control endpoint serving");
        let service = ControlServer::new(ControlService::new(handler, metrics))
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(1024 * 1024);
        let service = MessageLimit::new(service, config.max_message_bytes);
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(service);
        let result = match certs {
            None => router.serve_with_incoming_shutdown(TcpListenerStream::new(grpc), shutdown.cancelled()).await,
            Some(certs) => {
                let acceptor = TlsAcceptor::from(tls::server_config(certs, &[b"h2"]));
                let incoming = tls_incoming(grpc, acceptor, shutdown.clone());
                router.serve_with_incoming_shutdown(incoming, shutdown.cancelled()).await
            }
        };
        background.abort_all();
        result.map_err(|e| Error::Setup(format!("the gRPC server failed: {e}")))
    }
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => { tracing::debug!(error = %e, "accept failed"); continue; }
                },
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn serve_http(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    handler: Shared,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    use hyper_util::{rt::TokioExecutor, rt::TokioIo, server::conn::auto, service::TowerToHyperService};
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { tracing::debug!(error = %e, "accept failed"); continue; }
            },
        };
        let service =
            TowerToHyperService::new(warp::service(crate::http::routes(handler.clone(), metrics.clone(), Some(peer))));
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let served = match acceptor {
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), service).await,
                    _ => return,
                },
                None => builder.serve_connection(TokioIo::new(tcp), service).await,
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}
