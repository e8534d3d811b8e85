//! The applications at both ends of a stream, for the demo and the suite: a producer that
//! serves a deterministic pseudo-random byte stream on every accepted connection and a
//! consumer that reads each of its connections to the end. Both hash what they moved
//! (SHA-256), so integrity is checked from the two ends, not assumed from the middle.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Bytes and digest of one connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Transfer {
    /// Bytes moved.
    pub bytes: u64,
    /// SHA-256 of those bytes, hex.
    pub sha256: String,
}

/// Deterministic, fast pseudo-random bytes (xorshift64*), different per `seed`.
pub struct Pattern(u64);

impl Pattern {
    /// A pattern for `seed`.
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const CHUNK: usize = 256 * 1024;

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The payload of one connection: `bytes` of pattern `seed`, generated chunk by chunk and
/// hashed as it goes.
struct Payload {
    pattern: Pattern,
    hasher: Sha256,
    buf: Vec<u8>,
    bytes: u64,
    left: u64,
}

impl Payload {
    fn new(bytes: u64, seed: u64) -> Payload {
        Payload { pattern: Pattern::new(seed), hasher: Sha256::new(), buf: vec![0u8; CHUNK], bytes, left: bytes }
    }

    /// The next chunk, or `None` at the end.
    fn next_chunk(&mut self) -> Option<&[u8]> {
        if self.left == 0 {
            return None;
        }
        let n = usize::try_from(self.left.min(CHUNK as u64)).unwrap_or(CHUNK);
        self.pattern.fill(&mut self.buf[..n]);
        self.hasher.update(&self.buf[..n]);
        self.left -= n as u64;
        Some(&self.buf[..n])
    }

    fn finish(self) -> Transfer {
        Transfer { bytes: self.bytes, sha256: hex(&self.hasher.finalize()) }
    }
}

/// Sends `bytes` of pattern `seed` on `conn`, then closes its write side (half-close: the
/// stream's end is an EOF the relays must carry through).
pub async fn send(mut conn: TcpStream, bytes: u64, seed: u64) -> std::io::Result<Transfer> {
    let mut payload = Payload::new(bytes, seed);
    while let Some(chunk) = payload.next_chunk() {
        conn.write_all(chunk).await?;
    }
    conn.shutdown().await?;
    Ok(payload.finish())
}

/// What [`send`] reports for `bytes` of pattern `seed`, computed without a connection (so a
/// consumer can verify a payload on its own).
pub fn expected(bytes: u64, seed: u64) -> Transfer {
    let mut payload = Payload::new(bytes, seed);
    while payload.next_chunk().is_some() {}
    payload.finish()
}

/// Reads `conn` to EOF, hashing.
pub async fn receive(mut conn: TcpStream) -> std::io::Result<Transfer> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(Transfer { bytes, sha256: hex(&hasher.finalize()) })
}

/// The producer application: accepts `connections` connections (over all `listeners`) and
/// serves `bytes_per_connection` on each, a distinct pattern per connection: the `i`-th
/// accepted gets pattern `first_seed + i`.
pub async fn produce(
    listeners: Vec<TcpListener>,
    connections: usize,
    bytes_per_connection: u64,
    first_seed: u64,
    deadline: Duration,
) -> std::io::Result<Vec<Transfer>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(connections.max(1));
    // A JoinSet: the listeners are closed however this ends (done, failed, or dropped).
    let mut acceptors = tokio::task::JoinSet::new();
    for listener in listeners {
        let tx = tx.clone();
        acceptors.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut senders = Vec::new();
    let started = Instant::now();
    for seed in 0..connections as u64 {
        let left = deadline.saturating_sub(started.elapsed());
        let conn = tokio::time::timeout(left, rx.recv())
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("only {seed} of {connections} connections arrived"),
                )
            })?
            .ok_or_else(|| std::io::Error::other("listeners closed"))?;
        senders.push(tokio::spawn(send(conn, bytes_per_connection, first_seed + seed)));
    }
    acceptors.abort_all();
    let mut out = Vec::new();
    for s in senders {
        out.push(s.await.map_err(std::io::Error::other)??);
    }
    out.sort();
    Ok(out)
}

/// The consumer application: one connection per entry of `connect` (each a future that opens
/// it), all read in parallel.
pub async fn consume<F, Fut>(targets: usize, connect: F) -> std::io::Result<Vec<Transfer>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = std::io::Result<TcpStream>> + Send + 'static,
{
    let mut readers = Vec::new();
    for i in 0..targets {
        let conn = connect(i);
        readers.push(tokio::spawn(async move { receive(conn.await?).await }));
    }
    let mut out = Vec::new();
    for r in readers {
        out.push(r.await.map_err(std::io::Error::other)??);
    }
    out.sort();
    Ok(out)
}

/// The producer application for repeated connections: every connection accepted on any of
/// `listeners` is served the same payload, `bytes` of pattern `seed`, so the consumer can
/// verify each connection on its own against [`expected`]. Returns, in accept order, what
/// each of the first `connections` connections carried: the transfer when the whole payload
/// was sent, else the error that cut it short.
pub async fn serve(
    listeners: Vec<TcpListener>,
    connections: usize,
    bytes: u64,
    seed: u64,
    deadline: Duration,
) -> std::io::Result<Vec<Result<Transfer, String>>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(connections.max(1));
    // A JoinSet: the listeners are closed however this ends (done, failed, or dropped).
    let mut acceptors = tokio::task::JoinSet::new();
    for listener in listeners {
        let tx = tx.clone();
        acceptors.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let started = Instant::now();
    let mut senders: Vec<tokio::task::JoinHandle<Result<Transfer, String>>> = Vec::new();
    for accepted in 0..connections {
        let left = deadline.saturating_sub(started.elapsed());
        let conn = match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(conn)) => conn,
            Ok(None) => break,
            Err(_) => {
                for s in &senders {
                    s.abort();
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("only {accepted} of {connections} connections arrived"),
                ));
            }
        };
        senders.push(tokio::spawn(async move { send(conn, bytes, seed).await.map_err(|e| e.to_string()) }));
    }
    acceptors.abort_all();
    let mut out = Vec::new();
    for s in senders {
        out.push(s.await.map_err(std::io::Error::other)?);
    }
    Ok(out)
}

/// The consumer application for many short connections: `count` connections, at most
/// `concurrency` open at a time, each opened by `connect(i)` and read to the end. Returns
/// what each carried, in order of `i`.
pub async fn fetch_many<F, Fut>(count: usize, concurrency: usize, connect: F) -> std::io::Result<Vec<Transfer>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = std::io::Result<TcpStream>>,
{
    use futures::{StreamExt as _, TryStreamExt as _};
    let connect = &connect;
    futures::stream::iter(0..count)
        .map(|i| async move { receive(connect(i).await?).await })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_per_seed_and_repeat_per_seed() {
        let (mut a, mut b, mut c) = (Pattern::new(1), Pattern::new(2), Pattern::new(1));
        let (mut x, mut y, mut z) = ([0u8; 64], [0u8; 64], [0u8; 64]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_ne!(x, y);
        assert_eq!(x, z);
    }

    #[tokio::test]
    async fn direct_transfer_hashes_agree_at_both_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let producer = tokio::spawn(produce(vec![listener], 3, 3_000_001, 1, Duration::from_secs(10)));
        let received = consume(3, move |_| TcpStream::connect(addr)).await.unwrap();
        let sent = producer.await.unwrap().unwrap();
        assert_eq!(sent, received);
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|t| t.bytes == 3_000_001));
        assert_ne!(sent[0].sha256, sent[1].sha256, "each connection carries its own data");
    }

    /// A producer given up on (its future dropped, as a timed-out round does) frees its
    /// listening ports at once, so the next round can listen on them again.
    #[tokio::test]
    async fn a_dropped_producer_frees_its_ports() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let waiting = produce(vec![listener], 1, 1, 1, Duration::from_secs(600));
        // Nobody connects: the producer waits until it is dropped.
        assert!(tokio::time::timeout(Duration::from_millis(200), waiting).await.is_err());
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = TcpListener::bind(addr).await {
            assert!(Instant::now() < deadline, "{addr} still held after the producer was dropped: {e}");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn served_connections_each_carry_the_expected_payload() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let producer = tokio::spawn(serve(vec![listener], 5, 300_001, 7, Duration::from_secs(10)));
        let received = fetch_many(5, 2, |_| TcpStream::connect(addr)).await.unwrap();
        let served = producer.await.unwrap().unwrap();
        let want = expected(300_001, 7);
        assert_eq!(received, vec![want.clone(); 5]);
        assert_eq!(served, vec![Ok(want.clone()); 5]);
        assert_ne!(want, expected(300_001, 8));
    }

    #[tokio::test]
    async fn a_connection_dropped_by_the_consumer_is_reported_cut_short() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = 64 << 20;
        let producer = tokio::spawn(serve(vec![listener], 2, bytes, 3, Duration::from_secs(20)));
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut part = vec![0u8; 1 << 20];
        first.read_exact(&mut part).await.unwrap();
        drop(first);
        let second = receive(TcpStream::connect(addr).await.unwrap()).await.unwrap();
        assert_eq!(second, expected(bytes, 3));
        let served = producer.await.unwrap().unwrap();
        assert!(served[0].is_err(), "{served:?}");
        assert_eq!(served[1], Ok(second));
    }
}
