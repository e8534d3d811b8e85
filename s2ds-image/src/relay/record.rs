//! A TLS 1.3 record layer of our own for the data phase, after rustls has
//! done the handshake (RFC 8446 section 5).
//!
//! rustls's `kernel` API (meant for kTLS) hands over the traffic secrets and
//! sequence numbers once the handshake is complete and keeps computing new
//! secrets for key updates; everything else is here: records are sealed and
//! opened in place with aws-lc-rs, so that plaintext read from a socket goes
//! into its record's slot and is sealed there, and a received record is
//! opened where it landed and written out from there. No byte is copied in
//! userspace.
//!
//! Post-handshake messages, alerts and the key schedule are
//! [`super::control`]'s, shared with the kernel TLS path. Before the
//! confidentiality limit of the cipher suite, we update our sending keys on
//! our own.
//!
//! Where rustls's record layer and ours could differ, ours follows rustls
//! (`tests/differential.rs` holds both to the same inputs); where rustls
//! departs from RFC 8446, ours follows the RFC, and that test lists each
//! such case.
//!
//! Pure logic: buffers in, buffers out, no I/O.

use std::fmt;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

pub use super::control::{Control, Event, KEY_UPDATE_MESSAGE, Kernel, Tickets};

/// Record header: type, legacy version, length.
pub const HEADER: usize = 5;
/// AEAD tag.
pub const TAG: usize = 16;
/// Most plaintext in one record.
pub const MAX_PLAINTEXT: usize = 16384;
/// What a record adds to its plaintext: header, inner content type, tag.
pub const OVERHEAD: usize = HEADER + 1 + TAG;
/// Room for one full record.
pub const SLOT: usize = MAX_PLAINTEXT + OVERHEAD;
/// Longest record a peer may send (2^14 + 256 bytes after the header).
pub const MAX_RECORD: usize = HEADER + MAX_PLAINTEXT + 256;
/// Room for one control record (alert, KeyUpdate).
pub const CONTROL_ROOM: usize = 64;

// Record (content) types.
const CHANGE_CIPHER_SPEC: u8 = 20;
/// Alerts.
pub const ALERT: u8 = 21;
/// Handshake messages (after the handshake: KeyUpdate, NewSessionTicket).
pub const HANDSHAKE: u8 = 22;
/// Application data.
pub const APPLICATION_DATA: u8 = 23;
/// Alert descriptions (RFC 8446 section 6).
pub mod alert {
    /// Orderly end of the sender's direction.
    pub const CLOSE_NOTIFY: u8 = 0;
    /// A message that is not allowed here.
    pub const UNEXPECTED_MESSAGE: u8 = 10;
    /// A record failed authentication.
    pub const BAD_RECORD_MAC: u8 = 20;
    /// A record longer than allowed.
    pub const RECORD_OVERFLOW: u8 = 22;
    /// A field with a value out of range.
    pub const ILLEGAL_PARAMETER: u8 = 47;
    /// A message that cannot be parsed.
    pub const DECODE_ERROR: u8 = 50;
    /// Our own failure.
    pub const INTERNAL_ERROR: u8 = 80;
    /// The sender is cancelling (followed by close_notify).
    pub const USER_CANCELED: u8 = 90;
}

/// A record-layer failure, with the alert to send to the peer (if any).
#[derive(Debug)]
pub enum RecordError {
    /// The peer broke the protocol; `alert` says how.
    Protocol {
        /// Alert description to send.
        alert: u8,
        /// What was wrong.
        what: String,
    },
    /// The peer sent a fatal alert.
    PeerAlert(u8),
    /// rustls refused a key update or a ticket.
    Rustls(rustls::Error),
}

impl RecordError {
    pub(crate) fn protocol(alert: u8, what: impl Into<String>) -> Self {
        Self::Protocol { alert, what: what.into() }
    }

    /// The alert that tells the peer why we stop.
    pub fn alert(&self) -> Option<u8> {
        match self {
            Self::Protocol { alert, .. } => Some(*alert),
            Self::PeerAlert(_) => None,
            Self::Rustls(_) => Some(alert::INTERNAL_ERROR),
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol { alert, what } => write!(f, "TLS record layer: {what} (alert {alert})"),
            Self::PeerAlert(a) => write!(f, "the TLS peer sent fatal alert {a}"),
            Self::Rustls(e) => write!(f, "TLS key schedule: {e}"),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<RecordError> for std::io::Error {
    fn from(e: RecordError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// One direction's AEAD key, IV and sequence number.
pub struct Cipher {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Cipher {
    /// The cipher for secrets rustls extracted or derived.
    pub fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<Self, RecordError> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(RecordError::protocol(alert::INTERNAL_ERROR, "negotiated AEAD not supported")),
        };
        let bad = || RecordError::protocol(alert::INTERNAL_ERROR, "traffic secret of the wrong length");
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| bad())?;
        let iv: [u8; NONCE_LEN] = iv.as_ref().try_into().map_err(|_| bad())?;
        Ok(Self { key: LessSafeKey::new(key), iv, seq })
    }

    /// Records sealed or opened with this key so far (plus the start).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        let mut n = self.iv;
        for (b, s) in n[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| RecordError::protocol(alert::INTERNAL_ERROR, "record sequence number exhausted"))?;
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Seals the record laid out in `slot`: `len` bytes of plaintext at
    /// `slot[HEADER..]`, room for [`OVERHEAD`] more. Writes the header, the
    /// inner type and the tag; returns the record's length.
    pub fn seal(&mut self, slot: &mut [u8], len: usize, inner: u8) -> Result<usize, RecordError> {
        if len > MAX_PLAINTEXT {
            return Err(RecordError::protocol(alert::INTERNAL_ERROR, "record slot too small"));
        }
        self.seal_padded(slot, len, inner, 0)
    }

    /// [`Self::seal`] with `padding` zero bytes after the inner type and no
    /// limit but the header's: the checks and the fuzz targets
    /// ([`super::check`]) craft what a peer may send, oversized included.
    #[doc(hidden)]
    pub fn seal_padded(
        &mut self,
        slot: &mut [u8],
        len: usize,
        inner: u8,
        padding: usize,
    ) -> Result<usize, RecordError> {
        let inner_len = len + 1 + padding;
        let total = HEADER + inner_len + TAG;
        let body = u16::try_from(inner_len + TAG)
            .ok()
            .filter(|_| slot.len() >= total)
            .ok_or_else(|| RecordError::protocol(alert::INTERNAL_ERROR, "record slot too small"))?;
        let [hi, lo] = body.to_be_bytes();
        slot[..HEADER].copy_from_slice(&[APPLICATION_DATA, 3, 3, hi, lo]);
        slot[HEADER + len] = inner;
        slot[HEADER + len + 1..HEADER + inner_len].fill(0);
        let nonce = self.next_nonce()?;
        let (header, rest) = slot.split_at_mut(HEADER);
        let (body, tail) = rest.split_at_mut(inner_len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&header[..]), body)
            .map_err(|_| RecordError::protocol(alert::INTERNAL_ERROR, "sealing failed"))?;
        tail[..TAG].copy_from_slice(tag.as_ref());
        Ok(total)
    }

    /// Opens a complete record (header included) in place; returns its inner
    /// content type and plaintext length (the plaintext starts at
    /// `record[HEADER..]`).
    pub fn open(&mut self, record: &mut [u8]) -> Result<(u8, usize), RecordError> {
        let nonce = self.next_nonce()?;
        let (header, body) = record.split_at_mut(HEADER);
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(&header[..]), body)
            .map_err(|_| RecordError::protocol(alert::BAD_RECORD_MAC, "a record failed authentication"))?;
        // Content, type and padding together: at most 2^14 + 1 bytes (RFC 8446 section 5.4).
        if plain.len() > MAX_PLAINTEXT + 1 {
            return Err(RecordError::protocol(alert::RECORD_OVERFLOW, "record plaintext over 2^14 + 1 bytes"));
        }
        // The inner content type is the last non-zero byte; zeros after it are padding.
        let Some(end) = plain.iter().rposition(|b| *b != 0) else {
            return Err(RecordError::protocol(alert::UNEXPECTED_MESSAGE, "a record without content type"));
        };
        Ok((plain[end], end))
    }
}

/// The length the record header `h` (at least [`HEADER`] bytes) gives its body.
pub fn body_len(h: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([h[3], h[4]]))
}

/// The length of the record at the front of `buf`, once its header is
/// there; checks the type and the length limit.
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(h) = buf.get(..HEADER) else {
        return Ok(None);
    };
    if h[0] != APPLICATION_DATA {
        let what = if h[0] == CHANGE_CIPHER_SPEC { "change_cipher_spec" } else { "a non-encrypted record" };
        return Err(RecordError::protocol(alert::UNEXPECTED_MESSAGE, format!("{what} after the handshake")));
    }
    let len = body_len(h);
    if HEADER + len > MAX_RECORD {
        return Err(RecordError::protocol(alert::RECORD_OVERFLOW, format!("record of {len} bytes")));
    }
    // Too short to hold a tag and a content type: it cannot authenticate.
    if len <= TAG {
        return Err(RecordError::protocol(alert::BAD_RECORD_MAC, format!("record of {len} bytes")));
    }
    Ok(Some(HEADER + len))
}

/// What one opened record carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Application data: this many bytes at `record[HEADER..]`.
    Data(usize),
    /// A control message, handled (nothing to deliver).
    Control,
    /// close_notify: the peer's direction is complete.
    Closed,
}

/// The data phase of one TLS connection: both ciphers and the key schedule.
pub struct RecordLayer<K> {
    ctl: Control<K>,
    rx: Cipher,
    tx: Cipher,
    tx_limit: u64,
}

impl<K: Kernel> RecordLayer<K> {
    /// The record layer for secrets that rustls extracted.
    pub fn new(kernel: K, secrets: &rustls::ExtractedSecrets) -> Result<Self, RecordError> {
        let ctl = Control::new(kernel);
        let tx = Cipher::new(secrets.tx.0, &secrets.tx.1)?;
        Ok(Self {
            rx: Cipher::new(secrets.rx.0, &secrets.rx.1)?,
            tx_limit: tx.seq.saturating_add(ctl.rekey_every()),
            tx,
            ctl,
        })
    }

    /// Updates our sending keys every `records` records (tests use a small
    /// number to exercise key updates).
    pub fn set_rekey_every(&mut self, records: u64) {
        self.ctl.set_rekey_every(records);
        self.tx_limit = self.tx.seq.saturating_add(self.ctl.rekey_every());
    }

    /// Records sealed with the current sending key's sequence.
    pub fn tx_seq(&self) -> u64 {
        self.tx.seq
    }

    /// Opens `record`, complete (its length from [`record_len`]), and acts
    /// on control messages.
    pub fn open(&mut self, record: &mut [u8]) -> Result<Opened, RecordError> {
        let (inner, len) = self.rx.open(record)?;
        Ok(match self.ctl.record(inner, &record[HEADER..HEADER + len])? {
            Event::Data => Opened::Data(len),
            Event::Handled => Opened::Control,
            Event::Closed => Opened::Closed,
            Event::RxKey(seq, secrets) => {
                self.rx = Cipher::new(seq, &secrets)?;
                Opened::Control
            }
        })
    }

    /// True when a KeyUpdate of ours must precede the next data record.
    pub fn key_update_due(&self) -> bool {
        self.ctl.update_requested() || self.tx.seq >= self.tx_limit
    }

    /// Writes a KeyUpdate record (update_not_requested) into `out` (at
    /// least [`CONTROL_ROOM`] bytes) and switches to the new sending key;
    /// returns the record's length.
    pub fn seal_key_update(&mut self, out: &mut [u8]) -> Result<usize, RecordError> {
        out.get_mut(HEADER..HEADER + KEY_UPDATE_MESSAGE.len())
            .ok_or_else(|| RecordError::protocol(alert::INTERNAL_ERROR, "no room for a KeyUpdate"))?
            .copy_from_slice(&KEY_UPDATE_MESSAGE);
        let n = self.tx.seal(out, KEY_UPDATE_MESSAGE.len(), HANDSHAKE)?;
        self.next_tx_key()?;
        Ok(n)
    }

    /// Writes an alert record into `out` (at least [`CONTROL_ROOM`] bytes).
    pub fn seal_alert(&mut self, out: &mut [u8], description: u8) -> Result<usize, RecordError> {
        let level = if description == alert::CLOSE_NOTIFY { 1 } else { 2 };
        out.get_mut(HEADER..HEADER + 2)
            .ok_or_else(|| RecordError::protocol(alert::INTERNAL_ERROR, "no room for an alert"))?
            .copy_from_slice(&[level, description]);
        self.tx.seal(out, 2, ALERT)
    }

    /// Appends a record of inner type `inner` holding `content` and
    /// `padding` zeros, sealed with our current key, to `out`: anything a
    /// peer may send, for the checks and fuzz targets ([`super::check`]).
    #[doc(hidden)]
    pub fn seal_any(
        &mut self,
        out: &mut Vec<u8>,
        inner: u8,
        content: &[u8],
        padding: usize,
    ) -> Result<(), RecordError> {
        let at = out.len();
        out.resize(at + HEADER + content.len() + 1 + padding + TAG, 0);
        out[at + HEADER..at + HEADER + content.len()].copy_from_slice(content);
        let n = self.tx.seal_padded(&mut out[at..], content.len(), inner, padding)?;
        out.truncate(at + n);
        Ok(())
    }

    /// Moves to our next sending key, as after sending a KeyUpdate (the
    /// checks send theirs with [`Self::seal_any`]).
    #[doc(hidden)]
    pub fn next_tx_key(&mut self) -> Result<(), RecordError> {
        let (seq, secrets) = self.ctl.next_tx()?;
        self.tx = Cipher::new(seq, &secrets)?;
        self.tx_limit = seq.saturating_add(self.ctl.rekey_every());
        Ok(())
    }

    /// Seals `n` bytes of plaintext laid out in [`SLOT`]-sized slots of
    /// `space` (each holding [`MAX_PLAINTEXT`] bytes at offset [`HEADER`];
    /// only the last may be short). Returns the length of the records, which
    /// are contiguous from the start of `space`.
    pub fn seal_slots(&mut self, space: &mut [u8], n: usize) -> Result<usize, RecordError> {
        let mut out = 0;
        for (slot, start) in space.chunks_mut(SLOT).zip((0..n).step_by(MAX_PLAINTEXT)) {
            out += self.tx.seal(slot, (n - start).min(MAX_PLAINTEXT), APPLICATION_DATA)?;
        }
        Ok(out)
    }
}

/// The most plaintext that [`RecordLayer::seal_slots`] can seal in `free`
/// bytes: full slots, then a short one.
pub fn slots_capacity(free: usize) -> usize {
    (free / SLOT) * MAX_PLAINTEXT + (free % SLOT).saturating_sub(OVERHEAD)
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
