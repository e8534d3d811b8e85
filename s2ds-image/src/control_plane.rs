//! The shared relay's side of its configuration channel (`scistream.relay.v1.RelayConfig`,
//! see `operator/relay-proto/proto/relay.proto`): dial the operator over mutual TLS (our
//! certificate, the operator's pinned), say who we are and what runs, then apply each update
//! to the [`NodeRelay`] and answer with every named stream's state. A lost channel is dialled
//! again (bounded backoff) while every stream keeps relaying; the snapshot that opens the new
//! call leaves untouched each stream it still holds at the generation running.
//!
//! Why a channel from the operator rather than a mounted ConfigMap or a watch of the API: a
//! kubelet refreshes a mounted ConfigMap only after up to a minute or more, and RBAC cannot
//! narrow a watch of Secrets to one node's streams, so any relay could read every stream's
//! key. The operator already holds the keys and knows which node needs which; it sends each
//! relay only its own streams, the moment it decides (the model of xDS, and of linkerd2's
//! proxies and their control plane).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use scistream_relay_proto::relay_config_client::RelayConfigClient;
use scistream_relay_proto::{Applied, Hello, RelayReport, RelayUpdate, StreamState, relay_report};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, TlsFiles};
use crate::material::Material;
use crate::node::NodeRelay;

/// Largest update accepted: a snapshot carries every stream of the node (a few KiB each).
pub const MAX_UPDATE_BYTES: usize = 256 * 1024 * 1024;
/// The name the relay asks for in its TLS handshake (the pin, not the name, is checked).
const SERVER_NAME: &str = "scistream-operator";

/// Where the channel goes and who we are.
#[derive(Debug, Clone)]
pub struct Options {
    /// The operator's relay-config address (`host:port`; a name is resolved at each dial,
    /// so a Service's DNS name follows the Service).
    pub address: String,
    /// The Gateway and node this relay serves.
    pub gateway: String,
    /// The node.
    pub node: String,
    /// Our certificate and key, and the operator's certificate pinned.
    pub identity: TlsFiles,
}

/// Why a call ended.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Our identity or the pin could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Dialling or TLS failed.
    #[error("cannot reach the operator at {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The call failed or was refused.
    #[error("the operator ended the call: {0}")]
    Status(#[from] tonic::Status),
    /// The operator closed the call.
    #[error("the operator closed the call")]
    Closed,
}

/// The generation of each stream running, as the operator sent it.
pub type Generations = BTreeMap<String, String>;

/// Keeps the channel until `stop`: dials, applies, dials again after a loss.
pub async fn run(node: Arc<NodeRelay>, options: Options, stop: CancellationToken) {
    let mut generations = Generations::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let call = tokio::select! {
            () = stop.cancelled() => return,
            r = call(&node, &options, &mut generations) => r,
        };
        match call {
            Ok(updates) if updates > 0 => backoff = Duration::from_millis(100),
            Ok(_) => {}
            Err(e) => {
                warn!(error = %crate::report(&e), retry_in_ms = backoff.as_millis() as u64, "configuration channel lost; every stream keeps relaying")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            // Backoff between dials (bounded): not a synchronisation.
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One call: Hello, then every update applied and answered. Returns how many updates it
/// applied once the operator ends the call without error.
pub async fn call(node: &NodeRelay, options: &Options, generations: &mut Generations) -> Result<u64, ChannelError> {
    let channel = dial(options).await?;
    let mut client = RelayConfigClient::new(channel).max_decoding_message_size(MAX_UPDATE_BYTES);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = Hello {
        gateway: options.gateway.clone(),
        node: options.node.clone(),
        streams: generations.keys().map(|id| state(node, generations, id, String::new())).collect(),
    };
    let _ = tx.send(RelayReport { report: Some(relay_report::Report::Hello(hello)) }).await;
    let mut updates = client.sync(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    info!(operator = %options.address, running = generations.len(), "configuration channel open");
    let mut applied = 0;
    while let Some(update) = updates.message().await? {
        let answer = apply(node, generations, update).await;
        applied += 1;
        if tx.send(RelayReport { report: Some(relay_report::Report::Applied(answer)) }).await.is_err() {
            return Err(ChannelError::Closed);
        }
    }
    Ok(applied)
}

async fn dial(options: &Options) -> Result<tonic::transport::Channel, ChannelError> {
    let mut tls = Arc::unwrap_or_clone(crate::tls::client_config(&options.identity)?);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    // The data-phase record layer is not ours here: rustls keeps the secrets.
    tls.enable_secret_extraction = false;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let address = options.address.clone();
    let connect = tower::service_fn(move |_: tonic::transport::Uri| {
        let (connector, address) = (connector.clone(), address.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(address.as_str()).await?;
            // Small messages both ways: without it, Nagle and delayed ACKs add 40 ms to some.
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_static("http://scistream-operator")
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_with_connector(connect)
        .await
        .map_err(|source| ChannelError::Connect { address: options.address.clone(), source })
}

/// Applies one update: removals first (their ports may be the new streams' ones), then each
/// stream sent, each on its own account (a refused one refuses nothing else). Streams sent at
/// the generation running, and running without a refusal, are left untouched.
pub async fn apply(node: &NodeRelay, generations: &mut Generations, update: RelayUpdate) -> Applied {
    let sent: Vec<&str> = update.streams.iter().map(|s| s.stream_id.as_str()).collect();
    let removed: Vec<String> = if update.snapshot {
        node.streams().into_iter().filter(|id| !sent.contains(&id.as_str())).collect()
    } else {
        update.removed.clone()
    };
    let mut states = Vec::new();
    for id in removed {
        let grace = node.stream(&id).map(|r| Duration::from_secs(r.config().drain_seconds));
        if let Some(detached) = node.detach(&id).await {
            tokio::spawn(detached.drain(grace.unwrap_or_default()));
        }
        generations.remove(&id);
        states.push(StreamState { stream_id: id, removed: true, ..StreamState::default() });
    }
    for stream in update.streams {
        let id = stream.stream_id.clone();
        let unchanged = generations.get(&id) == Some(&stream.generation)
            && node.stream(&id).is_some()
            && node.refusal(&id).is_none();
        let error = if unchanged {
            String::new()
        } else {
            match start(node, stream.config, stream.files, &id).await {
                Ok(()) => {
                    generations.insert(id.clone(), stream.generation);
                    String::new()
                }
                Err(why) => why,
            }
        };
        states.push(state(node, generations, &id, error));
    }
    Applied { version: update.version, streams: states }
}

async fn start(
    node: &NodeRelay,
    config: String,
    files: std::collections::HashMap<String, Vec<u8>>,
    id: &str,
) -> Result<(), String> {
    let config = Config::parse(&config).map_err(|e| crate::report(&e))?;
    if config.stream_id != id {
        return Err(format!("streamId: the config says {:?} but was sent as stream {id:?}", config.stream_id));
    }
    let material = Material::sent(files.into_iter().map(|(path, contents)| (path.into(), contents)));
    node.apply_with(config, &material).await.map(|_| ()).map_err(|e| crate::report(&e))
}

fn state(node: &NodeRelay, generations: &Generations, id: &str, error: String) -> StreamState {
    let relay = node.stream(id);
    StreamState {
        stream_id: id.to_owned(),
        generation: if relay.is_some() { generations.get(id).cloned().unwrap_or_default() } else { String::new() },
        ready: relay.as_ref().is_some_and(|r| r.readiness().is_ready()),
        error,
        listeners: relay
            .map(|r| r.readiness().listeners().iter().map(|(_, b)| b.to_string()).collect())
            .unwrap_or_default(),
        removed: false,
    }
}
