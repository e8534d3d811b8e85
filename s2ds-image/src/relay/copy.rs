//! Userspace bidirectional copy with half-close and rate limiting.
//!
//! Each direction owns one buffer of `buffer_bytes`, allocated once per
//! connection; nothing else is buffered. A direction reads at most the
//! granted number of rate tokens, writes everything it read, flushes (TLS
//! streams keep records in rustls until flushed), and on EOF shuts down the
//! write half of the other side while the reverse direction keeps flowing.

use std::io;

use prometheus_client::metrics::counter::Counter;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::RelayOptions;
use crate::ratelimit::RateLimiter;

/// Relays between `a` (accepted side) and `b` (target side) until both
/// directions have seen EOF, or one fails. Returns bytes a->b and b->a.
pub async fn bidirectional<A, B>(a: A, b: B, opts: &RelayOptions) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    tokio::try_join!(
        one_way(ar, bw, opts.buffer_bytes, &opts.limiter),
        one_way(br, aw, opts.buffer_bytes, &opts.limiter),
    )
}

/// Copies `r` to `w` until EOF, then shuts `w` down (half-close).
pub async fn one_way<R, W>(mut r: R, mut w: W, size: usize, limiter: &RateLimiter) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; size];
    let mut total = 0u64;
    loop {
        let grant = limiter.take(size).await;
        let (n, err) = read_available(&mut r, &mut buf[..grant]).await;
        limiter.give_back(grant - n);
        if n > 0 {
            w.write_all(&buf[..n]).await?;
            w.flush().await?;
            total += n as u64;
        }
        if let Some(e) = err {
            return Err(e);
        }
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
    }
}

/// Reads until `buf` is full or the next read would block (at least one
/// read completes first). Batching many small reads (TLS records are at
/// most 16 KiB of plaintext) into one large write saves syscalls. An error
/// that follows some data is returned alongside it, so the data is written
/// before the error closes the connection; `(0, None)` is EOF.
async fn read_available<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut rb = ReadBuf::new(buf);
    std::future::poll_fn(|cx| {
        loop {
            let before = rb.filled().len();
            if rb.remaining() == 0 {
                return Poll::Ready((before, None));
            }
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().len() > before => continue,
                // EOF: report what we have; the next call sees EOF again.
                Poll::Ready(Ok(())) => return Poll::Ready((before, None)),
                Poll::Ready(Err(e)) => return Poll::Ready((before, Some(e))),
                Poll::Pending if before > 0 => return Poll::Ready((before, None)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// The splice fallback: copies between two shared TCP sockets (the other
/// direction uses the same sockets concurrently), counting into `counter`.
pub async fn one_way_tcp(
    src: &TcpStream,
    dst: &TcpStream,
    size: usize,
    limiter: &RateLimiter,
    counter: &Counter,
) -> io::Result<u64> {
    let mut buf = vec![0u8; size];
    let mut total = 0u64;
    loop {
        let grant = limiter.take(size).await;
        let n = loop {
            src.readable().await?;
            match src.try_read(&mut buf[..grant]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        limiter.give_back(grant - n);
        if n == 0 {
            socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write)?;
            return Ok(total);
        }
        let mut off = 0;
        while off < n {
            dst.writable().await?;
            match dst.try_write(&buf[off..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => off += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        counter.inc_by(n as u64);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn copies_and_half_closes_both_ways() {
        let limiter = Arc::new(RateLimiter::new(None, Default::default()));
        let opts = RelayOptions { buffer_bytes: 4096, limiter };
        let (mut client, a) = tokio::io::duplex(1024);
        let (b, mut target) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move { bidirectional(a, b, &opts).await });
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&d2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        target.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data, "client->target intact, EOF propagated");
        target.write_all(b"reply after half-close").await.unwrap();
        target.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
        assert_eq!(relay.await.unwrap().unwrap(), (100_000, 22));
    }
}
