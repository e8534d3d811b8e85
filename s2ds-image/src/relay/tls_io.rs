//! Drives the TLS state machines with a TLS socket and a plain socket: the
//! handshake ([`super::tls::TlsState`]), then both directions of the data
//! phase ([`super::data::DataPhase`]) in one task (non-blocking attempts
//! first, then one wait on whatever can unblock a direction).

use std::io;
use std::os::fd::AsRawFd;

use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::copy::write_all;
use super::data::DataPhase;
use super::ktls_io;
use super::record::Kernel;
use super::tls::{Phase, Session, TlsState};
use super::window::Window;
use crate::ratelimit::RateLimiter;

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// After a short read (or write), `sock` has nothing more to give (or no
/// more room) now: clear that readiness without a syscall, as tokio's own
/// `poll_read` does, so that the next attempt waits for the next edge
/// instead of costing a syscall that answers EAGAIN. (An edge that comes
/// later sets it again: the reactor runs only when this task waits.)
fn exhausted(sock: &TcpStream, interest: Interest, asked: usize, got: usize) {
    if got < asked {
        let _ = sock.try_io(interest, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
    }
}

/// Total length of a scatter/gather list.
fn iov_len<B: std::ops::Deref<Target = [u8]>>(iov: &[B]) -> usize {
    iov.iter().map(|b| b.len()).sum()
}

/// Reads into `win` at most `held` rate tokens' worth (if any are held):
/// `Some(0)` at EOF, `Some(n)` after reading (tokens used up), `None` when
/// the socket has nothing now (its readiness is cleared).
fn read_into(sock: &TcpStream, win: &mut Window, held: &mut usize) -> io::Result<Option<usize>> {
    if *held == 0 {
        return Ok(None);
    }
    let space = win.space_mut();
    let want = (*held).min(space.len());
    match sock.try_read(&mut space[..want]) {
        Ok(n) => {
            exhausted(sock, Interest::READABLE, want, n);
            win.commit(n);
            *held -= n;
            Ok(Some(n))
        }
        Err(e) if would_block(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes what `sock` takes now from `win`; true if anything was written.
fn write_from(sock: &TcpStream, win: &mut Window) -> io::Result<bool> {
    match sock.try_write(win.data()) {
        Ok(n) => {
            exhausted(sock, Interest::WRITABLE, win.len(), n);
            win.consume(n);
            Ok(true)
        }
        Err(e) if would_block(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes all of `st.tx` to `sock`.
async fn flush<S: Session>(st: &mut TlsState<S>, sock: &TcpStream) -> io::Result<()> {
    write_all(sock, st.tx.data()).await?;
    st.tx.consume(st.tx.len());
    Ok(())
}

/// Runs the handshake on `sock`. On failure the alert rustls produced is
/// sent if the socket takes it at once. Application data that follows the
/// handshake stays queued for [`relay`] (and is counted into `from_tls`).
pub async fn handshake<S: Session>(st: &mut TlsState<S>, sock: &TcpStream, from_tls: &Counter) -> io::Result<()> {
    loop {
        if let Err(e) = st.pump(|n| {
            from_tls.inc_by(n as u64);
        }) {
            st.encode_alert();
            let _ = sock.try_write(st.tx.data());
            return Err(e);
        }
        flush(st, sock).await?;
        if !st.is_handshaking() {
            return Ok(());
        }
        loop {
            sock.readable().await?;
            match sock.try_read(st.read_space()) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the TLS handshake"));
                }
                Ok(n) => {
                    st.rx.commit(n);
                    break;
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Relays between the TLS socket and the plain socket until both
/// directions are closed, with our record layer (see [`super::data`]).
/// Counts plaintext into `from_tls` (decrypted) and `from_plain` (read
/// from the plain side). Returns the plaintext bytes decrypted and
/// encrypted. On an error (a truncated TLS stream, a reset, a protocol
/// error) the alert for the peer is sent if the socket takes it at once;
/// the caller's sockets reset when dropped after an error
/// ([`crate::connection::reset_on_close`]), so that neither application
/// mistakes a broken stream for a complete one.
pub async fn relay<S: Session>(
    st: TlsState<S>,
    tls: &TcpStream,
    plain: &TcpStream,
    limiter: &RateLimiter,
    from_tls: &Counter,
    from_plain: &Counter,
) -> io::Result<(u64, u64)> {
    let mut tokens = Tokens::default();
    let size = st.size();
    let r = match st.into_phase(tls.as_raw_fd()) {
        Ok(Phase::User(mut d)) => {
            let r = run(&mut d, tls, plain, limiter, &mut tokens, from_tls, from_plain).await;
            r.map(|()| (d.decrypted, d.encrypted))
        }
        Ok(Phase::Kernel(k)) => ktls_io::relay(k, tls, plain, size, limiter, from_tls, from_plain).await,
        Err(e) => Err(e),
    };
    limiter.give_back(tokens.tls + tokens.plain);
    r
}

/// Rate tokens granted but not used yet, per reading side.
#[derive(Default)]
struct Tokens {
    tls: usize,
    plain: usize,
}

async fn run<K: Kernel>(
    d: &mut DataPhase<K>,
    tls: &TcpStream,
    plain: &TcpStream,
    limiter: &RateLimiter,
    held: &mut Tokens,
    from_tls: &Counter,
    from_plain: &Counter,
) -> io::Result<()> {
    let (mut tls_eof, mut plain_shut, mut tls_shut) = (false, false, false);
    loop {
        let mut progress = false;
        // Ciphertext in, while the plaintext it becomes has somewhere to go.
        if !tls_eof && d.wants_ciphertext() {
            if held.tls == 0 {
                held.tls = limiter.try_take(d.rx.free());
            }
            match read_into(tls, &mut d.rx, &mut held.tls)? {
                Some(0) => (tls_eof, progress) = (true, true),
                Some(_) => progress = true,
                None => {}
            }
        }
        match d.open_records() {
            Ok(n) => {
                from_tls.inc_by(n as u64);
                progress |= n > 0;
            }
            Err(e) => {
                d.queue_alert(&e);
                let _ = tls.try_write(d.tx.data());
                return Err(e.into());
            }
        }
        if tls_eof && !d.peer_closed {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the TLS peer closed the connection without close_notify (truncated)",
            ));
        }
        // Plaintext out.
        if d.has_plaintext() {
            match d.write_plaintext(|iov| {
                let n = plain.try_write_vectored(iov)?;
                exhausted(plain, Interest::WRITABLE, iov_len(iov), n);
                Ok(n)
            }) {
                Ok(n) => progress |= n > 0,
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        } else if d.peer_closed && !plain_shut {
            socket2::SockRef::from(plain).shutdown(std::net::Shutdown::Write)?;
            (plain_shut, progress) = (true, true);
        }
        // Plaintext in, read into record slots and sealed there.
        if d.wants_plaintext() {
            if held.plain == 0 {
                held.plain = limiter.try_take(d.tx.free());
            }
            if held.plain > 0 {
                match d.read_plaintext(held.plain, |iov| {
                    let n = plain.try_read_vectored(iov)?;
                    exhausted(plain, Interest::READABLE, iov_len(iov), n);
                    Ok(n)
                }) {
                    Ok(n) => {
                        held.plain -= n;
                        from_plain.inc_by(n as u64);
                        progress = true;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Ciphertext out.
        if !d.tx.is_empty() {
            progress |= write_from(tls, &mut d.tx)?;
        } else if d.close_sent && !tls_shut {
            socket2::SockRef::from(tls).shutdown(std::net::Shutdown::Write)?;
            (tls_shut, progress) = (true, true);
        }
        if plain_shut && tls_shut {
            return Ok(());
        }
        if progress {
            continue;
        }
        let want_tls = !tls_eof && d.wants_ciphertext();
        let want_plain = d.wants_plaintext();
        tokio::select! {
            r = tls.readable(), if want_tls && held.tls > 0 => r?,
            n = limiter.take(d.rx.free()), if want_tls && held.tls == 0 => held.tls = n,
            r = plain.readable(), if want_plain && held.plain > 0 => r?,
            n = limiter.take(d.tx.free()), if want_plain && held.plain == 0 => held.plain = n,
            r = tls.writable(), if !d.tx.is_empty() => r?,
            r = plain.writable(), if d.has_plaintext() => r?,
            else => return Err(io::Error::other("TLS relay has nothing to wait for (internal error)")),
        }
    }
}
