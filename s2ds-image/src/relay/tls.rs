//! Mutual-TLS relaying with rustls's unbuffered API: one TLS socket, one
//! plain socket, four byte queues, no copy that can be avoided.
//!
//! Ciphertext is read from the socket straight into `rx` and decrypted there
//! in place; each record's plaintext is appended to `down` and leaves in
//! large writes to the plain socket. Plaintext read from the plain socket
//! into `up` is encrypted into `tx` and leaves in large writes to the TLS
//! socket. (The buffered rustls API, through tokio-rustls, copied every
//! received byte three or four times: 4 KiB reads into its deframer, the
//! deframer's compaction and two plaintext buffers.)
//!
//! This module is the state machine, without I/O; [`super::tls_io`] drives it
//! with sockets. Guarantees are those of the other relays: no loss or
//! reordering, independent directions (a stalled reader on one side never
//! stops the other direction), half-close both ways (plain EOF becomes
//! close_notify then a TCP write shutdown; close_notify becomes a write
//! shutdown of the plain socket; a TCP EOF without close_notify is a
//! truncation, reported as an error), bounded memory (`down` exceeds its
//! size by at most what `rx` holds, when records must be decrypted so that
//! the other direction can encrypt).

use std::io;
use std::ops::DerefMut;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedConnectionCommon, UnbufferedStatus, WriteTraffic,
};

use super::window::Window;

/// Largest TLS record on the wire (2^14 bytes of plaintext, 256 of
/// expansion, 5 of header).
pub const MAX_RECORD: usize = 16384 + 256 + 5;
/// Bytes a TLS 1.3 AEAD record adds to its plaintext (header, content
/// type, tag).
const RECORD_OVERHEAD: usize = 5 + 1 + 16;
/// Plaintext per full record.
const RECORD_PLAINTEXT: usize = 16384;
/// Room kept for a close_notify alert.
const ALERT_ROOM: usize = 64;

/// A client or server unbuffered connection.
pub trait Session: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Send {
    /// Client or server connection data.
    type Data;
    /// `process_tls_records` of this role.
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Session for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Session for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// A rustls error as an I/O error (so that [`crate::tls::is_pin_mismatch`]
/// can classify it).
pub fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// How a pass over the received records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    /// No complete record is left in `rx`: more input is needed.
    Starved,
    /// Stopped early because `down` is full.
    DownFull,
}

/// One TLS connection and its queues.
pub struct TlsState<S> {
    conn: S,
    /// Ciphertext received, not yet processed.
    pub rx: Window,
    /// Ciphertext to send.
    pub tx: Window,
    /// Plaintext from the plain side, to encrypt.
    pub up: Window,
    /// Decrypted plaintext for the plain side.
    pub down: Window,
    size: usize,
    /// close_notify received.
    pub peer_closed: bool,
    /// The plain side reached EOF: close_notify follows the last of `up`.
    pub plain_eof: bool,
    /// close_notify queued in `tx`.
    pub close_sent: bool,
    /// Plaintext bytes decrypted / encrypted so far.
    pub decrypted: u64,
    /// See `decrypted`.
    pub encrypted: u64,
}

impl<S: Session> TlsState<S> {
    /// Queues of `size` bytes each (at least two records).
    pub fn new(conn: S, size: usize) -> Self {
        let size = size.max(2 * MAX_RECORD);
        Self {
            conn,
            rx: Window::new(size),
            tx: Window::new(size),
            up: Window::new(size),
            // One record over: the record that crosses `size` lands without growing.
            down: Window::new(size + MAX_RECORD),
            size,
            peer_closed: false,
            plain_eof: false,
            close_sent: false,
            decrypted: 0,
            encrypted: 0,
        }
    }

    /// Nominal size of each queue.
    pub fn size(&self) -> usize {
        self.size
    }

    /// True while the handshake is in progress.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True when encrypting can make progress now: plaintext or a pending
    /// close_notify, and room in `tx`.
    pub fn can_encrypt(&self) -> bool {
        let pending = !self.up.is_empty() || (self.plain_eof && !self.close_sent);
        pending && self.tx.free() >= RECORD_OVERHEAD + ALERT_ROOM
    }

    /// Processes received records: handshake messages (answers go to `tx`),
    /// application data (to `down`, counted into `on_plaintext`), alerts.
    /// Stops when no complete record is left, or when `down` is full unless
    /// `encrypt` asks to reach the state that encrypts `up` into `tx` (and
    /// queues close_notify after the plain side's EOF).
    pub fn pump(&mut self, encrypt: bool, mut on_plaintext: impl FnMut(usize)) -> io::Result<Pumped> {
        let size = self.size;
        loop {
            if !encrypt && self.down.len() >= size {
                return Ok(Pumped::DownFull);
            }
            let Self { conn, rx, tx, up, down, peer_closed, plain_eof, close_sent, decrypted, encrypted, .. } = self;
            let UnbufferedStatus { mut discard, state } = conn.process(rx.data_mut());
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    rx.consume(discard);
                    return Err(tls_error(e));
                }
            };
            let mut outcome = None;
            match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        down.push(record.payload);
                        *decrypted += record.payload.len() as u64;
                        on_plaintext(record.payload.len());
                    }
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    let mut room = 4096;
                    loop {
                        tx.reserve(room);
                        match e.encode(tx.space_mut()) {
                            Ok(n) => break tx.commit(n),
                            Err(EncodeError::InsufficientSize(s)) if s.required_size > room => {
                                room = s.required_size;
                            }
                            Err(e) => return Err(io::Error::other(format!("cannot encode a TLS message: {e}"))),
                        }
                    }
                }
                // The encoded records are in `tx`, ahead of anything queued later.
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::BlockedHandshake => outcome = Some(Pumped::Starved),
                ConnectionState::PeerClosed => *peer_closed = true,
                ConnectionState::Closed => {
                    *peer_closed = true;
                    outcome = Some(Pumped::Starved);
                }
                ConnectionState::WriteTraffic(mut w) => {
                    if encrypt {
                        *encrypted += encrypt_into(&mut w, up, tx)?;
                        if up.is_empty() && *plain_eof && !*close_sent {
                            tx.reserve(ALERT_ROOM);
                            let n = w
                                .queue_close_notify(tx.space_mut())
                                .map_err(|e| io::Error::other(format!("cannot encode close_notify: {e}")))?;
                            tx.commit(n);
                            *close_sent = true;
                        }
                    }
                    outcome = Some(Pumped::Starved);
                }
                other => return Err(io::Error::other(format!("unexpected TLS state {other:?}"))),
            }
            rx.consume(discard);
            if let Some(p) = outcome {
                return Ok(p);
            }
        }
    }

    /// After an error, encodes the alert rustls queued for the peer (if
    /// any) into `tx`, for a best-effort send.
    pub fn encode_alert(&mut self) {
        let Self { conn, rx, tx, .. } = self;
        if let Ok(ConnectionState::EncodeTlsData(mut e)) = conn.process(rx.data_mut()).state {
            tx.reserve(ALERT_ROOM);
            if let Ok(n) = e.encode(tx.space_mut()) {
                tx.commit(n);
            }
        }
    }
}

/// Encrypts as much of `up` as fits into `tx`; returns the plaintext bytes
/// consumed.
fn encrypt_into<D>(w: &mut WriteTraffic<'_, D>, up: &mut Window, tx: &mut Window) -> io::Result<u64> {
    let mut done = 0u64;
    while !up.is_empty() {
        let space = tx.space_mut();
        let fit = fit_plaintext(space.len().saturating_sub(ALERT_ROOM)).min(up.len());
        if fit == 0 {
            break;
        }
        match w.encrypt(&up.data()[..fit], space) {
            Ok(n) => {
                tx.commit(n);
                up.consume(fit);
                done += fit as u64;
            }
            // The estimate was short (pending handshake records also go first): wait for room.
            Err(EncryptError::InsufficientSize(_)) => break,
            Err(e) => return Err(io::Error::other(format!("cannot encrypt: {e}"))),
        }
    }
    Ok(done)
}

/// The most plaintext whose records fit in `free` bytes of ciphertext.
pub fn fit_plaintext(free: usize) -> usize {
    let per = RECORD_PLAINTEXT + RECORD_OVERHEAD;
    (free / per) * RECORD_PLAINTEXT + (free % per).saturating_sub(RECORD_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_fits_whole_and_partial_records() {
        assert_eq!(fit_plaintext(0), 0);
        assert_eq!(fit_plaintext(RECORD_OVERHEAD), 0);
        assert_eq!(fit_plaintext(RECORD_OVERHEAD + 10), 10);
        assert_eq!(fit_plaintext(2 * (RECORD_PLAINTEXT + RECORD_OVERHEAD)), 2 * RECORD_PLAINTEXT);
        assert_eq!(fit_plaintext(RECORD_PLAINTEXT + RECORD_OVERHEAD + 5), RECORD_PLAINTEXT);
    }
}
