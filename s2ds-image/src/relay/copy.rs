//! Userspace copy, the fallback of [`super::splice`] when the kernel refuses
//! splice: one buffer of `buffer_bytes` per direction, allocated once per
//! connection. A direction reads at most the granted number of rate tokens,
//! writes everything it read, and on EOF shuts down the write half of the
//! other side while the reverse direction keeps flowing.

use std::io;

use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;

use crate::ratelimit::RateLimiter;

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
        write_all(dst, &buf[..n]).await?;
        counter.inc_by(n as u64);
        total += n as u64;
    }
}

/// Writes all of `data` to a socket that other tasks may share (no
/// `AsyncWrite` needed), waiting for room as often as it takes.
pub async fn write_all(sock: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        sock.writable().await?;
        match sock.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => data = &data[m..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tcp_pair as pair;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_and_half_closes_both_ways() {
        let limiter = Arc::new(RateLimiter::new(None, Default::default()));
        let (mut client, a) = pair().await;
        let (b, mut target) = pair().await;
        let (up, down) = (Counter::default(), Counter::default());
        let (l2, up2, down2) = (limiter.clone(), up.clone(), down.clone());
        let relay = tokio::spawn(async move {
            tokio::try_join!(one_way_tcp(&a, &b, 4096, &l2, &up2), one_way_tcp(&b, &a, 4096, &l2, &down2))
        });
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
        assert_eq!((up.get(), down.get()), (100_000, 22));
    }
}
