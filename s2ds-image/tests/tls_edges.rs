//! The TLS relay's edges: key updates mid-stream (both roles against rustls), a truncated TLS stream,
//! one direction stalled while the other flows, the rate limiter over TLS.
//! A direct rustls client (tokio-rustls) plays the peer gateway where the
//! test needs control over its TLS session. Each holds for both record
//! layers of the data phase (ours and rustls's, `tls.recordLayer`).

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use s2ds::config::{PeerPin, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;

fn yaml(mode: &str, layer: Layer, me: &Identity, peer: &Identity, target: SocketAddr, extra: &str) -> String {
    format!(
        "streamId: edge\nmode: {mode}\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\n\
         metricsAddress: 127.0.0.1:0\ndrainSeconds: 5\n{extra}tls:\n{}  certFile: {}\n  keyFile: {}\n  peerCertFile: {}\n",
        layer.tls_line(),
        me.cert.display(),
        me.key.display(),
        peer.cert.display()
    )
}

for_each_layer!(
    key_updates_mid_stream_keep_every_byte_in_both_directions,
    the_client_side_follows_a_rustls_server_through_tickets_and_key_updates,
    a_truncated_tls_stream_resets_the_plain_side,
    one_direction_stalled_does_not_stop_the_other,
    rate_limit_holds_over_the_tls_pair,
);

/// Both gateways' identities (producer, consumer), after the process-wide set-up.
fn gateways(dir: &Path) -> (Identity, Identity) {
    init();
    (identity(dir, "producer"), identity(dir, "consumer"))
}

/// TLS files for a direct rustls peer holding `me` and pinning `peer`.
fn files(me: &Identity, peer: &Identity) -> TlsFiles {
    TlsFiles {
        cert_file: me.cert.clone(),
        key_file: me.key.clone(),
        peer: PeerPin::CertFile(peer.cert.clone()),
        kernel_tls: true,
        record_layer: s2ds::config::RecordLayer::S2ds,
    }
}

/// A tls-server relay in front of `target`, and a direct TLS connection to
/// it presenting the consumer's identity.
async fn server_and_direct_client(
    dir: &Path,
    layer: Layer,
    target: SocketAddr,
) -> (S2ds, tokio_rustls::client::TlsStream<TcpStream>) {
    let (producer, consumer) = gateways(dir);
    let server = S2ds::start(dir, "server", &yaml("tls-server", layer, &producer, &consumer, target, "")).await;
    let connector = tokio_rustls::TlsConnector::from(s2ds::tls::client_config(&files(&consumer, &producer)).unwrap());
    let tcp = TcpStream::connect(server.listeners().await[0]).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("producer.s2ds.test").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    (server, tls)
}

/// Writes three batches of 3 MiB over `tls`, each followed by a KeyUpdate
/// that requests the peer's own (`refresh`), then closes (close_notify);
/// returns what was written.
async fn write_with_key_updates<T: AsyncWriteExt + Unpin>(
    tls: &mut T,
    seed: u64,
    refresh: impl Fn(&mut T) -> Result<(), rustls::Error>,
) -> Vec<u8> {
    let (mut sent, mut g) = (Vec::new(), Gen::new(seed));
    for _ in 0..3 {
        for _ in 0..48 {
            let mut chunk = vec![0u8; 64 * 1024];
            g.fill(&mut chunk);
            tls.write_all(&chunk).await.unwrap();
            sent.extend_from_slice(&chunk);
        }
        tls.flush().await.unwrap();
        refresh(tls).unwrap();
    }
    tls.shutdown().await.unwrap();
    sent
}

async fn key_updates_mid_stream_keep_every_byte_in_both_directions(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (server, mut tls) = server_and_direct_client(dir.path(), layer, l.local_addr().unwrap()).await;
    let (mut t, _) = l.accept().await.unwrap();
    let target = tokio::spawn(async move {
        let (n, sha) = recv(&mut t).await;
        // Answer after the client's close_notify: the relay's keys were updated by then.
        let reply = send(&mut t, 77, 8 * MIB).await;
        (n, sha, reply)
    });
    let sent = write_with_key_updates(&mut tls, 1, |t| t.get_mut().1.refresh_traffic_keys()).await;
    let (n, got_sha) = recv(&mut tls).await;
    let (up, up_sha, reply_sha) = target.await.unwrap();
    assert_eq!(up, sent.len() as u64);
    assert_eq!(up_sha, hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &sent)));
    assert_eq!((n, got_sha), (8 * MIB, reply_sha), "the reply crossed the relay's key update intact");
    assert_eq!(server.metric("s2ds_tls_handshake_failures_total").await, 0.0);
}

/// The other side of the record layer: a tls-client relay facing a rustls
/// server that sends session tickets after the handshake and requests key
/// updates mid-stream.
async fn the_client_side_follows_a_rustls_server_through_tickets_and_key_updates(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let (producer, consumer) = gateways(dir.path());
    let mut cfg = std::sync::Arc::unwrap_or_clone(s2ds::tls::server_config(&files(&producer, &consumer)).unwrap());
    cfg.send_tls13_tickets = 2;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(8);
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = S2ds::start(
        dir.path(),
        "client",
        &yaml("tls-client", layer, &consumer, &producer, l.local_addr().unwrap(), ""),
    )
    .await;
    let peer = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let sent = write_with_key_updates(&mut tls, 5, |t| t.get_mut().1.refresh_traffic_keys()).await;
        // What the application sends next is sealed after the relay's own KeyUpdate.
        let (n, sha) = recv(&mut tls).await;
        (hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &sent)), sent.len() as u64, n, sha)
    });
    let mut app = TcpStream::connect(client.listeners().await[0]).await.unwrap();
    let (down, down_sha) = recv(&mut app).await;
    let up_sha = send(&mut app, 9, 8 * MIB).await;
    let (sent_sha, sent_len, up, peer_sha) = peer.await.unwrap();
    assert_eq!((down, down_sha), (sent_len, sent_sha), "every byte from the server, across its key updates");
    assert_eq!((up, peer_sha), (8 * MIB, up_sha), "every byte to the server, after the relay's key update");
    assert_eq!(client.metric("s2ds_tls_handshake_failures_total").await, 0.0);
}

async fn a_truncated_tls_stream_resets_the_plain_side(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (server, mut tls) = server_and_direct_client(dir.path(), layer, l.local_addr().unwrap()).await;
    let (mut t, _) = l.accept().await.unwrap();
    tls.write_all(b"the first half of a message").await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = [0u8; 27];
    t.read_exact(&mut buf).await.unwrap();
    // The peer's TCP connection ends without close_notify.
    let (tcp, _) = tls.into_inner();
    drop(tcp);
    let end = tokio::time::timeout(Duration::from_secs(10), t.read(&mut [0u8; 64])).await.unwrap();
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "a truncated stream must not look complete to the application"
    );
    // The relay itself is unaffected.
    assert_eq!(server.get("/healthz").await.0, 200);
}

async fn one_direction_stalled_does_not_stop_the_other(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let (producer, consumer) = gateways(dir.path());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = S2ds::start(
        dir.path(),
        "server",
        &yaml("tls-server", layer, &producer, &consumer, l.local_addr().unwrap(), ""),
    )
    .await;
    let client = S2ds::start(
        dir.path(),
        "client",
        &yaml("tls-client", layer, &consumer, &producer, server.listeners().await[0], ""),
    )
    .await;
    let c = TcpStream::connect(client.listeners().await[0]).await.unwrap();
    let (t, _) = l.accept().await.unwrap();
    let (mut cr, mut cw) = c.into_split();
    let (mut tr, mut tw) = t.into_split();
    // The target sends far more than every buffer on the way holds, to a
    // client that does not read yet...
    let down = tokio::spawn(async move { send(&mut tw, 5, 96 * MIB).await });
    // ...while the client's upload must still arrive whole.
    let upload = tokio::spawn(async move { recv(&mut tr).await });
    let (up_sha, (n, sha)) = tokio::time::timeout(Duration::from_secs(30), async {
        let sha = send(&mut cw, 6, 16 * MIB).await;
        (sha, upload.await.unwrap())
    })
    .await
    .expect("the upload stalled behind the unread download");
    assert_eq!((n, sha), (16 * MIB, up_sha));
    let (n, sha) = recv(&mut cr).await;
    assert_eq!((n, sha), (96 * MIB, down.await.unwrap()));
}

async fn rate_limit_holds_over_the_tls_pair(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let (producer, consumer) = gateways(dir.path());
    let (target, mut rx) = sink_target(3, 0).await;
    let server = S2ds::start(dir.path(), "server", &yaml("tls-server", layer, &producer, &consumer, target, "")).await;
    let rate_bits: u64 = 500_000_000;
    let client = S2ds::start(
        dir.path(),
        "client",
        &yaml(
            "tls-client",
            layer,
            &consumer,
            &producer,
            server.listeners().await[0],
            &format!("rateBitsPerSecond: {rate_bits}\n"),
        ),
    )
    .await;
    let start = Instant::now();
    transfer_checked(client.listeners().await[0], &mut rx, 4, 32 * MIB, 0, 3).await;
    let secs = start.elapsed().as_secs_f64();
    let ratio = (128 * MIB * 8) as f64 / secs / rate_bits as f64;
    eprintln!("rate limit over TLS: {ratio:.3} x the limit in {secs:.2} s");
    // The limit is a ceiling, and that is what this checks; how close to it a
    // transfer gets depends on the CPU it is given (on a loaded machine the
    // relays fall short of it: 0.77-0.95 seen), so the floor only shows that
    // the bucket refills (its arithmetic is proptested in `ratelimit`).
    assert!((0.5..=1.05).contains(&ratio), "measured {ratio:.3} x the limit");
}
