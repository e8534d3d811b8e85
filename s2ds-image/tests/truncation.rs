//! A cut stream must never look complete (issue #24): whatever ends a
//! relayed connection other than a real end of data from the other side (the
//! drain deadline, the relay killed, a peer that resets, a TLS peer that
//! vanishes) must reach both applications as a reset, and a real end of data
//! as a FIN with every byte before it.
//!
//! The TLS pair's cases hold for both record layers of the data phase
//! (ours and rustls's, `tls.recordLayer`).
//!
//! Both applications read all the time, as a careful application would: the
//! producer keeps writing and reading, the consumer reads. The first thing
//! each sees decides: `Eof` (a clean end) or `Reset`.

#[macro_use]
mod common;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;
/// Longest a scenario may take to end after its fault.
const BOUND: Duration = Duration::from_secs(20);
/// Most bytes the producer writes (a bound on the load loop besides time).
const MAX_BYTES: u64 = 64 << 30;
/// The relays' rate: enough to be mid-transfer at every fault, and little
/// enough CPU to leave the rest of the suite's timing alone.
const RATE: &str = "rateBitsPerSecond: 2000000000\n";

/// How an application's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// A clean end of stream (FIN), after this many bytes.
    Eof(u64),
    /// ECONNRESET.
    Reset,
    /// Another error.
    Other(io::ErrorKind),
    /// Nothing within the bound.
    Hung,
}

fn classify(e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::ConnectionReset => End::Reset,
        k => End::Other(k),
    }
}

/// The producer application on one accepted connection: writes generated
/// data without end (or `total` bytes, then a FIN) while reading; the first
/// event on either half is the end it saw.
async fn produce(mut s: TcpStream, total: Option<u64>) -> End {
    let (mut r, mut w) = s.split();
    let (mut g, mut buf, mut rbuf) = (Gen::new(1), vec![0u8; 128 * 1024], [0u8; 4096]);
    let deadline = tokio::time::Instant::now() + BOUND + BOUND;
    let (mut sent, mut shut) = (0u64, false);
    loop {
        let limit = total.unwrap_or(MAX_BYTES);
        if sent >= limit && !shut {
            if let Err(e) = w.shutdown().await {
                return classify(&e);
            }
            shut = true;
        }
        g.fill(&mut buf);
        let n = usize::try_from((limit - sent.min(limit)).min(buf.len() as u64)).unwrap();
        tokio::select! {
            r = r.read(&mut rbuf) => match r {
                Ok(0) => return End::Eof(sent),
                Ok(_) => {}
                Err(e) => return classify(&e),
            },
            w = w.write(&buf[..n]), if n > 0 => match w {
                Ok(k) => sent += k as u64,
                Err(e) => return classify(&e),
            },
            () = tokio::time::sleep_until(deadline) => return End::Hung,
        }
    }
}

/// The consumer application: reads from `addr` until the connection ends;
/// once `before` bytes have arrived, `fault` runs (once).
async fn consume<F: Future<Output = ()>>(addr: SocketAddr, before: u64, fault: F) -> End {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut got, mut fault) = (0u64, Some(Box::pin(fault)));
    let deadline = Instant::now() + BOUND + BOUND;
    loop {
        if got >= before
            && let Some(f) = fault.take()
        {
            f.await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Err(_) => return End::Hung,
            Ok(Ok(0)) => return End::Eof(got),
            Ok(Ok(n)) => got += n as u64,
            Ok(Err(e)) => return classify(&e),
        }
    }
}

/// Runs a transfer from a producer on `l` through the relays at `addr` to a
/// consumer; `fault` runs once the consumer has 4 MiB. Returns how the
/// consumer's and the producer's connections ended.
async fn cut<F: Future<Output = ()>>(l: TcpListener, addr: SocketAddr, fault: F) -> (End, End) {
    let producer = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        produce(s, None).await
    });
    let consumer = consume(addr, 4 * MIB, fault).await;
    let producer = tokio::time::timeout(BOUND + BOUND, producer).await.map_or(End::Hung, Result::unwrap);
    (consumer, producer)
}

fn plain_yaml(target: SocketAddr) -> String {
    format!(
        "streamId: cut\nmode: plain\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\n\
         metricsAddress: 127.0.0.1:0\ndrainSeconds: 1\n{RATE}"
    )
}

fn tls_yaml(mode: &str, layer: Layer, me: &Identity, peer: &Identity, target: SocketAddr) -> String {
    format!(
        "streamId: cut\nmode: {mode}\nlisteners: [127.0.0.1:0]\ntargets: ['{target}']\n\
         metricsAddress: 127.0.0.1:0\ndrainSeconds: 1\n{RATE}tls:\n{}  certFile: {}\n  keyFile: {}\n  peerCertFile: {}\n",
        layer.tls_line(),
        me.cert.display(),
        me.key.display(),
        peer.cert.display()
    )
}

/// The producer's listener, and a plain relay in front of it.
async fn plain_relay(dir: &Path) -> (TcpListener, S2ds) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = S2ds::start(dir, "plain", &plain_yaml(l.local_addr().unwrap())).await;
    (l, relay)
}

/// The producer's listener, the producer-side relay (tls-server) and the
/// consumer-side relay (tls-client) in front of it, both on `layer`.
async fn tls_pair(dir: &Path, layer: Layer) -> (TcpListener, S2ds, S2ds) {
    init();
    let (producer, consumer) = (identity(dir, "producer"), identity(dir, "consumer"));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server =
        S2ds::start(dir, "server", &tls_yaml("tls-server", layer, &producer, &consumer, l.local_addr().unwrap())).await;
    let client =
        S2ds::start(dir, "client", &tls_yaml("tls-client", layer, &consumer, &producer, server.listeners().await[0]))
            .await;
    (l, server, client)
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_drain_deadline_resets_both_applications() {
    let dir = tempfile::tempdir().unwrap();
    let (l, relay) = plain_relay(dir.path()).await;
    let addr = relay.listeners().await[0];
    let ends = cut(l, addr, async { relay.signal(SIGTERM) }).await;
    assert_eq!(ends, (End::Reset, End::Reset), "(consumer, producer) after the drain deadline");
    // The report is logged once the aborted connection is gone, which the
    // applications may see first: wait for it rather than race it.
    wait_until("the drain report", BOUND, || relay.log_contains("aborted=1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_relay_killed_resets_both_applications() {
    let dir = tempfile::tempdir().unwrap();
    let (l, relay) = plain_relay(dir.path()).await;
    let addr = relay.listeners().await[0];
    let ends = cut(l, addr, async { relay.signal(SIGKILL) }).await;
    assert_eq!(ends, (End::Reset, End::Reset), "(consumer, producer) after SIGKILL of the relay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_producer_reset_reaches_the_consumer_as_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (l, relay) = plain_relay(dir.path()).await;
    let addr = relay.listeners().await[0];
    let producer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut g = Gen::new(2);
        let mut buf = vec![0u8; 512 << 10];
        for _ in 0..16 {
            g.fill(&mut buf);
            s.write_all(&buf).await.unwrap();
        }
        // The producer fails: its connection ends with a reset.
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    });
    let consumer = consume(addr, u64::MAX, async {}).await;
    producer.await.unwrap();
    assert_eq!(consumer, End::Reset, "a producer's reset must not reach the consumer as a clean end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_consumer_reset_reaches_the_producer_as_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (l, relay) = plain_relay(dir.path()).await;
    let addr = relay.listeners().await[0];
    let producer = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        produce(s, None).await
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.read_exact(&mut vec![0u8; 4 << 20]).await.unwrap();
    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);
    let end = tokio::time::timeout(BOUND, producer).await.map_or(End::Hung, Result::unwrap);
    assert_eq!(end, End::Reset, "a consumer's reset must reach the producer");
}

async fn tls_pair_drain_deadline_resets_both_applications(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let (l, server, client) = tls_pair(dir.path(), layer).await;
    let addr = client.listeners().await[0];
    let ends = cut(l, addr, async {
        server.signal(SIGTERM);
        client.signal(SIGTERM);
    })
    .await;
    assert_eq!(ends, (End::Reset, End::Reset), "(consumer, producer) after both relays' drain deadline");
}

async fn tls_pair_producer_relay_killed_resets_both_applications(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let (l, server, client) = tls_pair(dir.path(), layer).await;
    let addr = client.listeners().await[0];
    let ends = cut(l, addr, async { server.signal(SIGKILL) }).await;
    assert_eq!(ends, (End::Reset, End::Reset), "(consumer, producer) after SIGKILL of the producer's relay");
}

async fn tls_pair_consumer_relay_killed_resets_both_applications(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let (l, _server, client) = tls_pair(dir.path(), layer).await;
    let addr = client.listeners().await[0];
    let ends = cut(l, addr, async { client.signal(SIGKILL) }).await;
    assert_eq!(ends, (End::Reset, End::Reset), "(consumer, producer) after SIGKILL of the consumer's relay");
}

for_each_layer!(
    tls_pair_drain_deadline_resets_both_applications,
    tls_pair_producer_relay_killed_resets_both_applications,
    tls_pair_consumer_relay_killed_resets_both_applications,
    a_real_end_of_data_arrives_whole_as_a_fin,
);

/// The contrast: a real end of data arrives whole, as a FIN, through each
/// relay (the reset-on-close is lifted only then).
async fn a_real_end_of_data_arrives_whole_as_a_fin(layer: Layer) {
    let dir = tempfile::tempdir().unwrap();
    let (pl, plain) = plain_relay(dir.path()).await;
    let (tl, _server, client) = tls_pair(dir.path(), layer).await;
    for (l, addr) in [(pl, plain.listeners().await[0]), (tl, client.listeners().await[0])] {
        let total = 64 * MIB + 12_345;
        let producer = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            produce(s, Some(total)).await
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (n, _) = recv(&mut c).await;
        assert_eq!(n, total, "every byte before the FIN");
        c.shutdown().await.unwrap();
        let end = tokio::time::timeout(BOUND, producer).await.map_or(End::Hung, Result::unwrap);
        assert_eq!(end, End::Eof(total), "the consumer's FIN reaches the producer as one");
    }
}
