//! The tls-client -> tls-server pair through the real binary: integrity,
//! half-close over TLS, and pinning; and every pairing of the two record
//! layers of the data phase (ours and rustls's, `tls.recordLayer`), which
//! puts our record layer against rustls's in both roles.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1 << 20;

fn tls_yaml(mode: &str, me: &Identity, peer_line: &str, target: SocketAddr) -> String {
    format!(
        "streamId: tls-test\nmode: {mode}\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\n\
         metricsAddress: 127.0.0.1:0\ndrainSeconds: 5\ntls:\n  certFile: {}\n  keyFile: {}\n{peer_line}\n",
        me.cert.display(),
        me.key.display()
    )
}

/// Starts producer side (tls-server -> target) and consumer side
/// (tls-client -> producer side). Returns both and the consumer's listener.
async fn pair(dir: &Path, target: SocketAddr) -> (S2ds, S2ds, SocketAddr) {
    pair_on(dir, target, "", "").await
}

/// [`pair`] with `client_extra` and `server_extra` added to the `tls:`
/// sections of the consumer's and the producer's relay.
async fn pair_on(dir: &Path, target: SocketAddr, client_extra: &str, server_extra: &str) -> (S2ds, S2ds, SocketAddr) {
    let producer = identity(dir, "producer");
    let consumer = identity(dir, "consumer");
    let server = S2ds::start(
        dir,
        "server",
        &tls_yaml(
            "tls-server",
            &producer,
            &format!("{server_extra}  peerCertFile: {}", consumer.cert.display()),
            target,
        ),
    )
    .await;
    let server_addr = server.listeners().await[0];
    let client = S2ds::start(
        dir,
        "client",
        &tls_yaml(
            "tls-client",
            &consumer,
            &format!("{client_extra}  peerFingerprintSha256: \"{}\"", producer.fingerprint),
            server_addr,
        ),
    )
    .await;
    let addr = client.listeners().await[0];
    (server, client, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_the_tls_pair_with_parallel_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (target, mut rx) = sink_target(11, 64 * MIB).await;
    let (server, client, addr) = pair(dir.path(), target).await;
    transfer_checked(addr, &mut rx, 4, 192 * MIB, 64 * MIB, 11).await;
    assert_eq!(server.metric("s2ds_tls_handshake_failures_total").await, 0.0);
    let up = client
        .metric("s2ds_bytes_total{stream=\"tls-test\",listener=\"127.0.0.1:0\",direction=\"client_to_target\"}")
        .await;
    assert_eq!(up as u64, 4 * 192 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_over_tls_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_server, _client, addr) = pair(dir.path(), l.local_addr().unwrap()).await;

    half_close_both_ways(addr, &l).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_peer_certificate_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (target, mut rx) = sink_target(5, 100).await;
    let producer = identity(dir.path(), "producer");
    let consumer = identity(dir.path(), "consumer");
    let intruder = identity(dir.path(), "intruder");
    // The server pins `consumer`; the intruder's client relay pins the
    // server correctly but presents its own certificate.
    let server = S2ds::start(
        dir.path(),
        "server",
        &tls_yaml("tls-server", &producer, &format!("  peerCertFile: {}", consumer.cert.display()), target),
    )
    .await;
    let server_addr = server.listeners().await[0];
    let bad_client = S2ds::start(
        dir.path(),
        "bad",
        &tls_yaml(
            "tls-client",
            &intruder,
            &format!("  peerFingerprintSha256: \"{}\"", producer.fingerprint),
            server_addr,
        ),
    )
    .await;
    let refused = refusal_after(bad_client.listeners().await[0], b"should never arrive").await;
    assert!(!matches!(refused, Ok(n) if n > 0), "nothing comes back through a refused pin: {refused:?}");
    server
        .wait_metric("s2ds_connections_refused_total{stream=\"tls-test\",listener=\"127.0.0.1:0\",reason=\"peer-cert-mismatch\"}", 1.0)
        .await;
    assert!(server.metric("s2ds_tls_handshake_failures_total").await >= 1.0);

    // A client relay that pins the wrong server certificate refuses it.
    let wrong_pin = S2ds::start(
        dir.path(),
        "wrongpin",
        &tls_yaml("tls-client", &consumer, &format!("  peerCertFile: {}", intruder.cert.display()), server_addr),
    )
    .await;
    let refused = refusal_after(wrong_pin.listeners().await[0], b"").await;
    assert!(!matches!(refused, Ok(n) if n > 0), "nothing comes back through a wrong pin: {refused:?}");
    wrong_pin
        .wait_metric("s2ds_connections_refused_total{stream=\"tls-test\",listener=\"127.0.0.1:0\",reason=\"peer-cert-mismatch\"}", 1.0)
        .await;

    // A plain TCP client speaking no TLS at all is a handshake failure.
    let mut c = TcpStream::connect(server_addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let _ = c.read_to_end(&mut Vec::new()).await;
    server
        .wait_metric(
            "s2ds_connections_refused_total{stream=\"tls-test\",listener=\"127.0.0.1:0\",reason=\"tls-handshake\"}",
            1.0,
        )
        .await;

    // Nothing reached the target, and the right client still works.
    assert!(rx.try_recv().is_err());
    let good = S2ds::start(
        dir.path(),
        "good",
        &tls_yaml(
            "tls-client",
            &consumer,
            &format!("  peerFingerprintSha256: \"{}\"", producer.fingerprint),
            server_addr,
        ),
    )
    .await;
    transfer_checked(good.listeners().await[0], &mut rx, 1, 1000, 100, 5).await;
}

/// Our record layer against rustls's, in both roles, and rustls's against
/// itself, through the real binaries: the same bytes both ways over
/// parallel connections (SHA-256 checked), counted alike, and half-close
/// both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pairing_of_record_layers_carries_the_same_bytes_and_half_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, rustls) = (Layer::Ours.tls_line(), Layer::Rustls.tls_line());
    for (i, (c, s)) in [(rustls, rustls), (ours, rustls), (rustls, ours)].into_iter().enumerate() {
        let what = format!("consumer side {c:?}, producer side {s:?}");
        let sub = |name: &str| {
            let d = dir.path().join(format!("{i}-{name}"));
            std::fs::create_dir(&d).unwrap();
            d
        };
        let (target, mut rx) = sink_target(21, 24 * MIB).await;
        let (server, client, addr) = pair_on(&sub("data"), target, c, s).await;
        for (relay, line) in [(&client, c), (&server, s)] {
            let on_rustls =
                relay.log_contains("record layer carries the data phase of TLS connections (tls.recordLayer: rustls)");
            assert_eq!(on_rustls, line == rustls, "{what}: the relay says which record layer it uses");
        }
        transfer_checked(addr, &mut rx, 3, 24 * MIB, 24 * MIB, 21).await;
        for relay in [&client, &server] {
            for direction in ["client_to_target", "target_to_client"] {
                let metric = format!(
                    "s2ds_bytes_total{{stream=\"tls-test\",listener=\"127.0.0.1:0\",direction=\"{direction}\"}}"
                );
                assert_eq!(relay.metric(&metric).await as u64, 3 * 24 * MIB, "{what}: {direction} counted");
            }
        }
        assert_eq!(server.metric("s2ds_tls_handshake_failures_total").await, 0.0, "{what}");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_server, _client, addr) = pair_on(&sub("half-close"), l.local_addr().unwrap(), c, s).await;
        half_close_both_ways(addr, &l).await;
    }
}
