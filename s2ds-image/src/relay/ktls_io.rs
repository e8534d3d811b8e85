//! The data phase over kernel TLS ([`super::ktls`]): both directions are
//! spliced like plain TCP ([`super::splice::spliced`]), with hooks for what
//! the kernel leaves to us. Receiving: a splice that meets a non-data
//! record answers `EINVAL`; once the pipe is empty the record is read with
//! `recvmsg` and handed to [`Control`] (KeyUpdate: new receive keys to the
//! kernel; NewSessionTicket: to rustls; close_notify: the direction is
//! complete; other alerts end the connection); a TCP end of stream without
//! close_notify is a truncation. Sending: our KeyUpdate before the
//! confidentiality limit or when the peer asks for one, close_notify at the
//! end.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::copy::write_all;
use super::ktls::{self, TxBudget};
use super::record::{ALERT, Control, Event, HANDSHAKE, KEY_UPDATE_MESSAGE, Kernel, RecordError, alert};
use super::splice::{Hooks, Outcome, Pipe, spliced};
use crate::ratelimit::RateLimiter;

/// The key schedule, shared by the two directions (locked only between
/// awaits, to act on a control record or to update keys).
type Shared<K> = Mutex<Control<K>>;

fn lock<K>(ctl: &Shared<K>) -> io::Result<std::sync::MutexGuard<'_, Control<K>>> {
    ctl.lock().map_err(|_| io::Error::other("kernel TLS key schedule poisoned"))
}

/// Sends one control record, waiting for room.
async fn send_record(sock: &TcpStream, typ: u8, data: &[u8]) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let n = sock.async_io(Interest::WRITABLE, || ktls::send_record(fd, typ, data)).await?;
    if n == data.len() { Ok(()) } else { Err(io::Error::other("kernel TLS took part of a control record")) }
}

/// Sending direction (plaintext in, the kernel seals): key updates and close_notify.
struct Seal<'a, K> {
    ctl: &'a Shared<K>,
    budget: TxBudget,
    due: bool,
    info_len: usize,
}

impl<K: Kernel> Hooks for Seal<'_, K> {
    const FALLBACK: bool = false;

    async fn before_write(&mut self, dst: &TcpStream) -> io::Result<()> {
        if !self.due && !lock(self.ctl)?.update_requested() {
            return Ok(());
        }
        // The KeyUpdate goes out under the old key; everything after it under the new one.
        send_record(dst, HANDSHAKE, &KEY_UPDATE_MESSAGE).await?;
        let (every, (seq, secrets)) = {
            let mut c = lock(self.ctl)?;
            (c.rekey_every(), c.next_tx()?)
        };
        let mut info = ktls::crypto_info(&secrets, seq)?;
        self.info_len = info.len();
        ktls::set_keys(dst.as_raw_fd(), ktls::TX, &mut info)?;
        (self.budget, self.due) = (TxBudget::new(seq, every), false);
        Ok(())
    }

    fn wrote(&mut self, dst: &TcpStream, n: usize) -> io::Result<()> {
        if self.budget.sent(n) {
            self.due = self.budget.exact(ktls::tx_seq(dst.as_raw_fd(), self.info_len)?);
        }
        Ok(())
    }

    async fn finish(&mut self, dst: &TcpStream) -> io::Result<()> {
        send_record(dst, ALERT, &[1, alert::CLOSE_NOTIFY]).await
    }
}

/// Receiving direction (the kernel opens, plaintext out): control records.
struct Open<'a, K> {
    ctl: &'a Shared<K>,
    counter: &'a Counter,
    /// The next record is read with `recvmsg`: a splice met a control
    /// record, or a post-handshake message is split and its next part must
    /// come as one (only this direction feeds `Control::record`, so this is
    /// known after each control record without asking it again).
    pending: bool,
    closed: bool,
}

impl<K: Kernel> Hooks for Open<'_, K> {
    const FALLBACK: bool = false;

    fn control_pending(&self) -> bool {
        self.pending
    }

    fn read_failed(&mut self, e: io::Error) -> io::Result<()> {
        match e.raw_os_error() {
            // Splice cannot carry a non-data record: the next one is a control record.
            Some(libc::EINVAL) => {
                self.pending = true;
                Ok(())
            }
            Some(libc::EBADMSG) => Err(RecordError::Protocol {
                alert: alert::BAD_RECORD_MAC,
                what: "a record failed authentication (kernel TLS)".into(),
            }
            .into()),
            _ => Err(e),
        }
    }

    async fn control(&mut self, src: &TcpStream, dst: &TcpStream) -> io::Result<bool> {
        let fd = src.as_raw_fd();
        let mut buf = vec![0u8; ktls::RECORD_ROOM];
        let (typ, n) = src.async_io(Interest::READABLE, || ktls::recv_record(fd, &mut buf)).await?;
        if n == 0 && typ == super::record::APPLICATION_DATA {
            self.eof()?;
            return Ok(true);
        }
        let event = {
            let mut c = lock(self.ctl)?;
            let event = c.record(typ, &buf[..n]);
            self.pending = c.mid_message();
            event
        };
        match event {
            Ok(Event::Data) => {
                write_all(dst, &buf[..n]).await?;
                self.counter.inc_by(n as u64);
            }
            Ok(Event::Handled) => {}
            Ok(Event::Closed) => self.closed = true,
            Ok(Event::RxKey(seq, secrets)) => {
                ktls::set_keys(fd, ktls::RX, &mut ktls::crypto_info(&secrets, seq)?)?;
            }
            Err(e) => {
                if let Some(a) = e.alert() {
                    let _ = ktls::send_record(fd, ALERT, &[2, a]);
                }
                return Err(e.into());
            }
        }
        Ok(self.closed)
    }

    fn eof(&mut self) -> io::Result<()> {
        if self.closed {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the TLS peer closed the connection without close_notify (truncated)",
            ))
        }
    }
}

/// Keys installed in the kernel for one connection, ready to relay.
pub struct Engaged<K> {
    /// What rustls keeps doing: key schedule, tickets.
    pub ctl: Control<K>,
    /// The first sequence number of our current send key.
    pub tx_seq: u64,
    /// The length of the send key's `crypto_info`.
    pub info_len: usize,
}

/// Relays between the kernel-TLS socket `tls` and the plain socket `plain`
/// until both directions are complete. Returns plaintext bytes received
/// (decrypted by the kernel) and sent.
pub async fn relay<K: Kernel>(
    engaged: Engaged<K>,
    tls: &TcpStream,
    plain: &TcpStream,
    buffer: usize,
    limiter: &RateLimiter,
    from_tls: &Counter,
    from_plain: &Counter,
) -> io::Result<(u64, u64)> {
    let (pipe_in, pipe_out) = (Pipe::new(buffer)?, Pipe::new(buffer)?);
    let every = engaged.ctl.rekey_every();
    let ctl = Mutex::new(engaged.ctl);
    let mut open = Open { ctl: &ctl, counter: from_tls, pending: false, closed: false };
    let mut seal =
        Seal { ctl: &ctl, budget: TxBudget::new(engaged.tx_seq, every), due: false, info_len: engaged.info_len };
    let (down, up) = tokio::try_join!(
        spliced(tls, plain, &pipe_in, limiter, from_tls, &mut open),
        spliced(plain, tls, &pipe_out, limiter, from_plain, &mut seal),
    )?;
    match (down, up) {
        (Outcome::Done(d), Outcome::Done(u)) => Ok((d, u)),
        _ => Err(io::Error::other("kernel TLS refused splice")),
    }
}
