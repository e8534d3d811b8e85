//! The data phase on rustls's own record layer (`tls.recordLayer: rustls`):
//! the connection stays a tokio-rustls stream after its handshake, and
//! bytes are copied through it with one buffer per direction.
//!
//! The conservative path: rustls seals, opens, follows and answers key
//! updates and handles alerts itself, at the cost of the copies our record
//! layer avoids (the benchmark shows both). The guarantees are the other
//! relays': rate tokens taken before reading, half-close both ways (the
//! plain side's EOF becomes close_notify then a TCP write shutdown;
//! close_notify becomes a write shutdown of the plain socket), and a TLS
//! stream that ends without close_notify (or fails) is an error, so the
//! caller resets both connections.

use std::io;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RelayOptions;
use super::copy::write_all;

/// Relays between `tls` and the plain socket `plain` until both directions
/// are closed; counts plaintext from TLS into `from_tls` and from the plain
/// side into `from_plain`. Returns the bytes each way (from TLS, to TLS).
pub async fn relay<T: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut T,
    plain: &TcpStream,
    opts: &RelayOptions,
    from_tls: &Counter,
    from_plain: &Counter,
) -> io::Result<(u64, u64)> {
    let (mut rx, mut tx) = tokio::io::split(tls);
    tokio::try_join!(
        from_tls_to_plain(&mut rx, plain, opts, from_tls),
        from_plain_to_tls(plain, &mut tx, opts, from_plain),
    )
}

async fn from_tls_to_plain<R: AsyncRead + Unpin>(
    rx: &mut R,
    plain: &TcpStream,
    opts: &RelayOptions,
    counter: &Counter,
) -> io::Result<u64> {
    let mut buf = vec![0u8; opts.buffer_bytes];
    let mut total = 0u64;
    loop {
        let grant = opts.limiter.take(buf.len()).await;
        // Ok(0) only after close_notify; a TCP end without it is an error (UnexpectedEof).
        let n = match rx.read(&mut buf[..grant]).await {
            Ok(n) => n,
            Err(e) => {
                opts.limiter.give_back(grant);
                return Err(e);
            }
        };
        opts.limiter.give_back(grant - n);
        if n == 0 {
            socket2::SockRef::from(plain).shutdown(std::net::Shutdown::Write)?;
            return Ok(total);
        }
        write_all(plain, &buf[..n]).await?;
        counter.inc_by(n as u64);
        total += n as u64;
    }
}

async fn from_plain_to_tls<W: AsyncWrite + Unpin>(
    plain: &TcpStream,
    tx: &mut W,
    opts: &RelayOptions,
    counter: &Counter,
) -> io::Result<u64> {
    let mut buf = vec![0u8; opts.buffer_bytes];
    let mut total = 0u64;
    loop {
        let grant = opts.limiter.take(buf.len()).await;
        let n = loop {
            plain.readable().await?;
            match plain.try_read(&mut buf[..grant]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    opts.limiter.give_back(grant);
                    return Err(e);
                }
            }
        };
        opts.limiter.give_back(grant - n);
        if n == 0 {
            // close_notify, then the TCP write shutdown.
            tx.shutdown().await?;
            return Ok(total);
        }
        tx.write_all(&buf[..n]).await?;
        tx.flush().await?;
        counter.inc_by(n as u64);
        total += n as u64;
    }
}
