//! The TLS handshake, with rustls's unbuffered API: ciphertext is read
//! straight into `rx` and processed there, handshake messages to send are
//! encoded into `tx`. Once the handshake is complete, rustls hands over the
//! traffic secrets ([`TlsState::into_phase`]) and our own record layer
//! ([`super::record`], [`super::data`]) carries the data: rustls's record
//! layer would copy every byte once more on each side (it seals into a
//! fresh `Vec` and hands decrypted plaintext over by copy).
//!
//! This module is the state machine, without I/O; [`super::tls_io`] drives it
//! with sockets.

use std::io;
use std::ops::DerefMut;
use std::os::fd::RawFd;

use rustls::ExtractedSecrets;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedConnectionCommon, UnbufferedStatus};

use super::data::DataPhase;
use super::ktls;
use super::ktls_io::Engaged;
use super::record::{CONTROL_ROOM, Control, HEADER, Kernel, MAX_RECORD, RecordLayer, body_len};
use super::window::Window;

/// A client or server unbuffered connection.
pub trait Session: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Send {
    /// Client or server connection data.
    type Data;
    /// What is left of the connection after the handshake.
    type Kernel: Kernel;
    /// `process_tls_records` of this role.
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// `dangerous_into_kernel_connection` of this role.
    fn into_kernel(self) -> Result<(ExtractedSecrets, Self::Kernel), rustls::Error>;
}

impl Session for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    type Kernel = KernelConnection<ServerConnectionData>;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Self::Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection()
    }
}

impl Session for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    type Kernel = KernelConnection<ClientConnectionData>;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Self::Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection()
    }
}

/// A rustls error as an I/O error (so that [`crate::tls::is_pin_mismatch`]
/// can classify it).
pub fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// One TLS connection during its handshake, and its queues.
pub struct TlsState<S> {
    conn: S,
    /// Ciphertext received, not yet processed.
    pub rx: Window,
    /// Ciphertext to send.
    pub tx: Window,
    /// Application data that came with the end of the handshake.
    pub down: Window,
    size: usize,
    /// The peer closed during the handshake.
    pub peer_closed: bool,
    /// Hand the data phase to kernel TLS if it can take it: the handshake
    /// is then read one record at a time, so that nothing past its last
    /// record leaves the socket (the kernel must see every later record).
    pub kernel_tls: bool,
}

/// Who carries the data phase.
pub enum Phase<K> {
    /// Our record layer, in userspace.
    User(Box<DataPhase<K>>),
    /// The kernel, with its keys installed.
    Kernel(Engaged<K>),
}

impl<S: Session> TlsState<S> {
    /// Receive and send queues of `size` bytes each (at least two records).
    pub fn new(conn: S, size: usize) -> Self {
        let size = size.max(2 * MAX_RECORD);
        Self {
            conn,
            rx: Window::new(size),
            tx: Window::new(size),
            down: Window::new(0),
            size,
            peer_closed: false,
            kernel_tls: false,
        }
    }

    /// The size of each queue (and of each pipe with kernel TLS).
    pub fn size(&self) -> usize {
        self.size
    }

    /// True while the handshake is in progress.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Processes received records: handshake messages (answers go to `tx`),
    /// application data that follows the handshake (to `down`, counted into
    /// `on_plaintext`), alerts. Returns when no complete record is left or
    /// the connection can send application data.
    pub fn pump(&mut self, mut on_plaintext: impl FnMut(usize)) -> io::Result<()> {
        loop {
            let Self { conn, rx, tx, down, peer_closed, .. } = self;
            let UnbufferedStatus { mut discard, state } = conn.process(rx.data_mut());
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    rx.consume(discard);
                    return Err(tls_error(e));
                }
            };
            let mut done = false;
            match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        down.push(record.payload);
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
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => done = true,
                ConnectionState::PeerClosed => *peer_closed = true,
                ConnectionState::Closed => (*peer_closed, done) = (true, true),
                other => return Err(io::Error::other(format!("unexpected TLS state {other:?}"))),
            }
            rx.consume(discard);
            if done {
                return Ok(());
            }
        }
    }

    /// After an error, encodes the alert rustls queued for the peer (if
    /// any) into `tx`, for a best-effort send.
    pub fn encode_alert(&mut self) {
        let Self { conn, rx, tx, .. } = self;
        if let Ok(ConnectionState::EncodeTlsData(mut e)) = conn.process(rx.data_mut()).state {
            tx.reserve(CONTROL_ROOM);
            if let Ok(n) = e.encode(tx.space_mut()) {
                tx.commit(n);
            }
        }
    }

    /// Where the next handshake read goes: all free space, or with
    /// [`Self::kernel_tls`] no further than the end of the current record.
    pub fn read_space(&mut self) -> &mut [u8] {
        let have = self.rx.len();
        let need = match self.rx.data().get(..HEADER) {
            _ if !self.kernel_tls => usize::MAX,
            None => HEADER - have,
            Some(h) => (HEADER + body_len(h)).saturating_sub(have).max(1),
        };
        let space = self.rx.space_mut();
        let n = need.min(space.len());
        &mut space[..n]
    }

    /// Hands the connection over, once the handshake is complete and its
    /// last messages are sent (`tx` empty), to kernel TLS on `sock` if
    /// [`Self::kernel_tls`] and nothing past the handshake was read, else
    /// (or if the kernel refuses the keys) to our record layer.
    pub fn into_phase(self, sock: RawFd) -> io::Result<Phase<S::Kernel>> {
        let clean = self.rx.is_empty() && self.down.is_empty() && !self.peer_closed;
        let kernel_tls = self.kernel_tls && clean;
        let (secrets, kernel) = self.conn.into_kernel().map_err(tls_error)?;
        let engaged = if kernel_tls { engage(sock, &secrets)? } else { None };
        if let Some(info_len) = engaged {
            return Ok(Phase::Kernel(Engaged { ctl: Control::new(kernel), tx_seq: secrets.tx.0, info_len }));
        }
        let rec = RecordLayer::new(kernel, &secrets)?;
        let mut data = DataPhase::new(rec, self.rx, self.tx, self.down, self.size);
        data.peer_closed = self.peer_closed;
        Ok(Phase::User(Box::new(data)))
    }
}

/// Installs the traffic keys in the kernel; returns the length of the send
/// keys' `crypto_info`. `None` (the socket still plain TCP) if the ULP or
/// the send keys are refused; an error if only the receive keys are (the
/// send direction is the kernel's by then).
fn engage(sock: RawFd, secrets: &rustls::ExtractedSecrets) -> io::Result<Option<usize>> {
    let (Ok(mut tx), Ok(mut rx)) =
        (ktls::crypto_info(&secrets.tx.1, secrets.tx.0), ktls::crypto_info(&secrets.rx.1, secrets.rx.0))
    else {
        return Ok(None);
    };
    let info_len = tx.len();
    if let Err(e) = ktls::attach(sock).and_then(|()| ktls::set_keys(sock, ktls::TX, &mut tx)) {
        tx.fill(0);
        rx.fill(0);
        tracing::debug!(error = %e, "kernel TLS refused this connection; TLS is relayed in userspace");
        return Ok(None);
    }
    ktls::set_keys(sock, ktls::RX, &mut rx).map_err(|e| io::Error::other(format!("kernel TLS receive keys: {e}")))?;
    Ok(Some(info_len))
}
