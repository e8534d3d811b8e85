//! Checks of our TLS 1.3 record layer that the fuzz targets
//! (`s2ds-image/fuzz`), the corpus test (`tests/fuzz_corpus.rs`) and the
//! differential test against rustls (`tests/differential.rs`) share.
//!
//! - [`script`]: a peer's record stream described as operations (data, key
//!   updates whole or split, tickets, alerts of any level and description,
//!   raw handshake bytes, other inner types, padding, corrupted bytes,
//!   unencrypted, oversized and short records, an early end), crafted into
//!   bytes sealed with the right keys, together with what a receiver must do
//!   with them (delivered plaintext, and how it ends). The expectation is a
//!   second, independent reading of RFC 8446 as rustls applies it: the
//!   differential test holds it against rustls's own record layer.
//! - [`receive`]: our receive path ([`DataPhase`]) fed a byte stream in
//!   pieces of any size, so record headers arrive split anywhere.
//! - [`targets`]: the fuzz targets' bodies (`records`, `sequence`, `duplex`).
//!
//! Keys come from [`Mock`], a deterministic key schedule: no handshake per
//! input, so a fuzzer runs thousands of inputs a second.
#![doc(hidden)]

pub mod cases;
pub mod script;
pub mod targets;

use std::io;

use aws_lc_rs::aead::NONCE_LEN;
use rustls::ConnectionTrafficSecrets;

use super::data::DataPhase;
use super::record::{Kernel, MAX_RECORD, RecordError, RecordLayer, alert};
use super::window::Window;

/// How a receiver's side of the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// close_notify: the peer's direction is complete.
    Closed,
    /// The stream ended without close_notify.
    Truncated,
    /// The receiver stops and tells the peer why with this alert.
    Alert(u8),
    /// The peer sent this fatal alert; nothing is sent back.
    PeerAlert(u8),
    /// The receiver stops without an alert (rustls does for a few
    /// violations; ours never does: see `tests/differential.rs`).
    Silent,
}

/// What a receiver delivered and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The application data delivered, in order.
    pub data: Vec<u8>,
    /// How it ended.
    pub end: End,
}

impl End {
    /// The end a record-layer error means.
    pub fn of(e: &RecordError) -> Self {
        match e {
            RecordError::PeerAlert(a) => Self::PeerAlert(*a),
            e => Self::Alert(e.alert().unwrap_or(alert::INTERNAL_ERROR)),
        }
    }
}

/// The traffic secrets of generation `g` of one direction.
pub fn secrets(from_client: bool, g: u8) -> ConnectionTrafficSecrets {
    let d = if from_client { 0xC1 } else { 0x5E };
    ConnectionTrafficSecrets::Aes256Gcm { key: [g ^ d; 32].into(), iv: [g.wrapping_mul(3) ^ d; NONCE_LEN].into() }
}

/// A deterministic key schedule in place of rustls's: generation `g` of a
/// direction is [`secrets`]`(direction, g)`. A client accepts well-formed
/// tickets, as rustls does; a server refuses them.
#[derive(Debug)]
pub struct Mock {
    client: bool,
    rx: u8,
    tx: u8,
}

impl Mock {
    /// The schedule of one end, at generation 0 both ways.
    pub fn new(client: bool) -> Self {
        Self { client, rx: 0, tx: 0 }
    }
}

impl Kernel for Mock {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.tx = self.tx.wrapping_add(1);
        Ok((0, secrets(self.client, self.tx)))
    }
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.rx = self.rx.wrapping_add(1);
        Ok((0, secrets(!self.client, self.rx)))
    }
    fn new_session_ticket(&mut self, body: &[u8]) -> Result<(), RecordError> {
        if !self.client {
            Err(RecordError::protocol(alert::UNEXPECTED_MESSAGE, "a client sent a NewSessionTicket"))
        } else if script::ticket_well_formed(body) {
            Ok(())
        } else {
            Err(RecordError::protocol(alert::DECODE_ERROR, "malformed NewSessionTicket"))
        }
    }
    fn confidentiality_limit(&self) -> u64 {
        1 << 24
    }
}

/// One end's record layer over [`Mock`] keys at generation 0.
pub fn layer(client: bool) -> RecordLayer<Mock> {
    let s = rustls::ExtractedSecrets { tx: (0, secrets(client, 0)), rx: (0, secrets(!client, 0)) };
    // The secrets are well-formed AES-256-GCM keys by construction.
    RecordLayer::new(Mock::new(client), &s).expect("mock secrets are valid")
}

/// One end's data phase over [`Mock`] keys, with queues of `size` bytes
/// (at least two records, as [`super::tls::TlsState::new`] makes them).
pub fn phase(client: bool, size: usize) -> DataPhase<Mock> {
    let size = size.max(2 * MAX_RECORD);
    DataPhase::new(layer(client), Window::new(size), Window::new(size), Window::new(0), size)
}

/// Sizes of reads and writes, from fuzz bytes: small ones (1-128 bytes,
/// so that headers split anywhere) and large ones (up to 64 KiB); without
/// bytes, everything at once.
#[derive(Debug, Clone)]
pub struct Cuts<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cuts<'a> {
    /// Sizes drawn from `bytes` in turn.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// The next size (at least 1).
    pub fn next_size(&mut self) -> usize {
        let Some(&b) = self.bytes.get(self.at % self.bytes.len().max(1)) else {
            return usize::MAX;
        };
        self.at += 1;
        if b < 0x80 { 1 + usize::from(b) } else { 1 + usize::from(b & 0x7f) * 512 }
    }
}

/// Feeds `stream` (a peer's records) to our receiving data phase `d` in
/// pieces cut by `cuts`, taking the plaintext out in pieces cut the same
/// way, until the stream is exhausted or the receiver stops. Panics if it
/// stops making progress (a livelock is a finding).
pub fn receive<K: Kernel>(d: &mut DataPhase<K>, stream: &[u8], cuts: &mut Cuts<'_>) -> Outcome {
    let mut data = Vec::new();
    let mut at = 0;
    // Each turn feeds or drains at least one byte, or ends.
    for _ in 0..4 * (stream.len() + 16) {
        let mut progress = false;
        if at < stream.len() && d.wants_ciphertext() {
            let space = d.rx.space_mut();
            let n = cuts.next_size().min(stream.len() - at).min(space.len());
            space[..n].copy_from_slice(&stream[at..at + n]);
            d.rx.commit(n);
            at += n;
            progress |= n > 0;
        }
        let opened = d.open_records();
        // Records opened before a bad one were authenticated: they are
        // delivered (a reset follows them in the relay).
        while d.has_plaintext() {
            let mut room = cuts.next_size();
            let taken = d.write_plaintext(|iov| {
                let mut n = 0;
                for b in iov {
                    let k = b.len().min(room);
                    data.extend_from_slice(&b[..k]);
                    (n, room) = (n + k, room - k);
                }
                Ok::<_, io::Error>(n)
            });
            progress |= matches!(taken, Ok(n) if n > 0);
        }
        if let Err(e) = opened {
            return Outcome { data, end: End::of(&e) };
        }
        if d.peer_closed {
            return Outcome { data, end: End::Closed };
        }
        if at == stream.len() && !progress {
            return Outcome { data, end: End::Truncated };
        }
    }
    panic!("the receiver stopped making progress at byte {at} of {}", stream.len());
}
