//! The configuration channel as the operator runs it: its authority and serving certificate
//! kept in a Secret of the operator's namespace (so every replica and every restart presents
//! the certificate the relays pin, and the relays' certificates stay valid), the listener,
//! and what the Gateway and StreamRequest controllers need from it.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Api, Client, api::PostParams};
use tokio_util::sync::CancellationToken;

use super::{
    Hub, RelayKey,
    identity::{Authority, IdentityError},
    server,
};
use crate::certs::KeyMaterial;

/// The Secret (in the operator's namespace) keeping the channel's authority and serving
/// certificate.
pub const SECRET: &str = "scistream-relay-channel";
/// The name in the serving certificate (relays pin the certificate; the name is for people).
pub const SERVER_NAME: &str = "scistream-operator";

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// Why the channel could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Reading or writing the kept Secret failed.
    #[error("cannot keep the relay channel's identity in Secret {namespace}/{SECRET}: {source}")]
    Kube {
        /// The operator's namespace.
        namespace: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The kept Secret lacks a key or holds something unusable.
    #[error(
        "Secret {namespace}/{SECRET} does not hold a usable relay channel identity ({what}); delete it and restart the operator to make a new one (every shared relay then gets a new certificate)"
    )]
    Unusable {
        /// The operator's namespace.
        namespace: String,
        /// What is wrong.
        what: String,
    },
    /// Certificates could not be made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The listener could not be bound or TLS set up.
    #[error("cannot serve the relay channel on {address}: {what}")]
    Serve {
        /// The address.
        address: SocketAddr,
        /// Why.
        what: String,
    },
}

/// The channel's identity: the authority and the serving certificate.
#[derive(Debug)]
pub struct Kept {
    /// Issues the relays' certificates.
    pub authority: Authority,
    /// What the channel presents (relays pin its certificate).
    pub serving: KeyMaterial,
}

impl Kept {
    /// A new identity.
    pub fn generate() -> Result<Self, IdentityError> {
        let authority = Authority::generate()?;
        let serving = authority.issue_server(&[SERVER_NAME.to_owned()])?;
        Ok(Self { authority, serving })
    }

    /// The Secret that keeps it.
    pub fn to_secret(&self, namespace: &str) -> Secret {
        let bytes = |s: String| ByteString(s.into_bytes());
        Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    scistream_api::keys::LABEL_MANAGED_BY.to_owned(),
                    scistream_api::keys::MANAGED_BY_OPERATOR.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([
                (CA_CRT.to_owned(), bytes(self.authority.certificate_pem())),
                (CA_KEY.to_owned(), bytes(self.authority.key_pem())),
                (TLS_CRT.to_owned(), bytes(self.serving.certificate_pem.clone())),
                (TLS_KEY.to_owned(), bytes(self.serving.private_key_pem.clone())),
            ])),
            ..Secret::default()
        }
    }

    /// Reads it back from its Secret.
    pub fn from_secret(secret: &Secret, namespace: &str) -> Result<Self, ChannelError> {
        let unusable = |what: String| ChannelError::Unusable { namespace: namespace.to_owned(), what };
        let field = |key: &str| -> Result<String, ChannelError> {
            let bytes = secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| unusable(format!("no {key}")))?;
            String::from_utf8(bytes.0.clone()).map_err(|_| unusable(format!("{key} is not text")))
        };
        let authority =
            Authority::from_pem(&field(CA_CRT)?, &field(CA_KEY)?).map_err(|e| unusable(format!("{CA_CRT}: {e}")))?;
        let serving = KeyMaterial { certificate_pem: field(TLS_CRT)?, private_key_pem: field(TLS_KEY)? };
        server::tls_config(&serving, &authority.certificate_pem()).map_err(|e| unusable(e.to_string()))?;
        Ok(Self { authority, serving })
    }
}

/// The kept identity, made and kept on first start (a replica that loses the race to create
/// it reads the winner's).
pub async fn load_or_create(client: &Client, namespace: &str) -> Result<Kept, ChannelError> {
    let kube = |source| ChannelError::Kube { namespace: namespace.to_owned(), source };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = api.get_opt(SECRET).await.map_err(kube)? {
        return Kept::from_secret(&secret, namespace);
    }
    let kept = Kept::generate()?;
    match api.create(&PostParams::default(), &kept.to_secret(namespace)).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{SECRET}"), "made the relay channel's authority");
            Ok(kept)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Kept::from_secret(&api.get(SECRET).await.map_err(kube)?, namespace)
        }
        Err(e) => Err(kube(e)),
    }
}

/// The running channel.
#[derive(Debug)]
pub struct Channel {
    /// Streams of every shared relay, and their reports.
    pub hub: Arc<Hub>,
    /// Issues relay certificates.
    pub authority: Authority,
    /// The certificate relays pin.
    pub serving_pem: String,
    /// Where relays dial it (`host:port`).
    pub address: String,
}

impl Channel {
    /// A new certificate for `relay`, known to the hub from now on.
    pub fn issue_relay(&self, relay: &RelayKey) -> Result<KeyMaterial, IdentityError> {
        let issued = self.authority.issue_relay(relay)?;
        self.authorize(&issued.certificate_pem, relay);
        Ok(issued)
    }

    /// `relay` may call with the certificate `pem` (one issued earlier, read from its Secret).
    /// Returns false when `pem` is not a certificate.
    pub fn authorize(&self, pem: &str, relay: &RelayKey) -> bool {
        match super::identity::fingerprint_pem(pem) {
            Some(fingerprint) => {
                self.hub.authorize(fingerprint, relay.clone());
                true
            }
            None => false,
        }
    }
}

/// Serves the channel on `listen` until `token` is cancelled, its identity kept in
/// `namespace`; relays are told to dial `address`.
pub async fn start(
    client: &Client,
    namespace: &str,
    listen: SocketAddr,
    address: String,
    token: CancellationToken,
) -> Result<Arc<Channel>, ChannelError> {
    let kept = load_or_create(client, namespace).await?;
    let serve_error = |what: String| ChannelError::Serve { address: listen, what };
    let tls =
        server::tls_config(&kept.serving, &kept.authority.certificate_pem()).map_err(|e| serve_error(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| serve_error(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| serve_error(e.to_string()))?;
    let hub = Arc::new(Hub::default());
    let serving = hub.clone();
    let stopping = (hub.clone(), token.clone());
    tokio::spawn(async move {
        if let Err(e) = server::serve(serving, listener, tls, token).await {
            tracing::error!(error = %e, "the relay channel stopped");
        }
    });
    tokio::spawn(async move {
        stopping.1.cancelled().await;
        stopping.0.close();
    });
    tracing::info!(%bound, %address, "serving the relay channel");
    Ok(Arc::new(Channel { hub, authority: kept.authority, serving_pem: kept.serving.certificate_pem, address }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a restarted operator reads back issues relay certificates its kept channel
    /// accepts, and presents the certificate the relays pinned.
    #[test]
    fn a_kept_identity_reads_back_the_same() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let kept = Kept::generate().unwrap();
        let secret = kept.to_secret("scistream-system");
        let again = Kept::from_secret(&secret, "scistream-system").unwrap();
        assert_eq!(again.serving.certificate_pem, kept.serving.certificate_pem);
        assert_eq!(again.authority.certificate_pem(), kept.authority.certificate_pem());
        // A relay certificate issued after the restart verifies against the kept authority.
        let relay = RelayKey { gateway: "dtn".into(), node: "gw-1".into() };
        let issued = again.authority.issue_relay(&relay).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let ca =
            rustls::pki_types::pem::PemObject::from_pem_slice(kept.authority.certificate_pem().as_bytes()).unwrap();
        roots.add(ca).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
        let leaf: rustls::pki_types::CertificateDer<'_> =
            rustls::pki_types::pem::PemObject::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
        verifier.verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now()).unwrap();
    }

    #[test]
    fn a_broken_kept_secret_says_what_to_do() {
        let kept = Kept::generate().unwrap();
        let mut secret = kept.to_secret("ns");
        secret.data.as_mut().unwrap().remove("ca.key");
        let e = Kept::from_secret(&secret, "ns").unwrap_err().to_string();
        assert!(e.contains("no ca.key") && e.contains("delete it and restart"), "{e}");
        let mut secret = kept.to_secret("ns");
        secret.data.as_mut().unwrap().insert("ca.crt".into(), ByteString(b"not pem".to_vec()));
        let e = Kept::from_secret(&secret, "ns").unwrap_err().to_string();
        assert!(e.contains("ca.crt"), "{e}");
    }
}
