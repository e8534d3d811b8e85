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

/// Sends `bytes` of pattern `seed` on `conn`, then closes its write side (half-close: the
/// stream's end is an EOF the relays must carry through).
pub async fn send(mut conn: TcpStream, bytes: u64, seed: u64) -> std::io::Result<Transfer> {
    let mut pattern = Pattern::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        pattern.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        conn.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    conn.shutdown().await?;
    Ok(Transfer { bytes, sha256: hex(&hasher.finalize()) })
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
/// serves `bytes_per_connection` on each, a distinct pattern per connection.
pub async fn produce(
    listeners: Vec<TcpListener>,
    connections: usize,
    bytes_per_connection: u64,
    deadline: Duration,
) -> std::io::Result<Vec<Transfer>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(connections.max(1));
    let mut acceptors = Vec::new();
    for listener in listeners {
        let tx = tx.clone();
        acceptors.push(tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
        }));
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
        senders.push(tokio::spawn(send(conn, bytes_per_connection, seed + 1)));
    }
    for a in acceptors {
        a.abort();
    }
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
        let producer = tokio::spawn(produce(vec![listener], 3, 3_000_001, Duration::from_secs(10)));
        let received = consume(3, move |_| TcpStream::connect(addr)).await.unwrap();
        let sent = producer.await.unwrap().unwrap();
        assert_eq!(sent, received);
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|t| t.bytes == 3_000_001));
        assert_ne!(sent[0].sha256, sent[1].sha256, "each connection carries its own data");
    }
}
