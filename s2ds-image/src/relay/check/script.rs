//! A peer's record stream as operations, crafted into sealed bytes along
//! with what a receiver must make of them.
//!
//! [`craft`] plays the peer: it seals each operation's record with the
//! peer's current key (and moves to the next key where the receiver will,
//! after a complete KeyUpdate) and, record by record, judges what the
//! receiver does: deliver, follow a key update, close, or stop with an
//! alert. The judgement reads RFC 8446 as rustls applies it (rustls is the
//! reference of `tests/differential.rs`, which checks these expectations
//! against it); it is written apart from [`super::super::record`] on
//! purpose, so that the fuzz targets compare two readings.

use super::super::record::{
    ALERT, APPLICATION_DATA, HANDSHAKE, HEADER, Kernel, MAX_PLAINTEXT, MAX_RECORD, RecordLayer, TAG, alert,
};
use super::{End, Outcome};

/// One record the peer sends, possibly with one byte changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// What the record holds.
    pub kind: Kind,
    /// A byte of the op's first record XORed with a non-zero value after
    /// sealing: its type byte or a byte of its body (see `corrupt_at`).
    pub corrupt: Option<(usize, u8)>,
}

/// What one record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `len` bytes of application data, then `padding` zeros.
    Data { len: usize, padding: usize },
    /// A KeyUpdate with this request byte (0 and 1 are valid).
    KeyUpdate { request: u8 },
    /// A KeyUpdate (update_not_requested) split over two records after
    /// byte `at` (1 to 4) of the message.
    SplitKeyUpdate { at: usize },
    /// A well-formed NewSessionTicket with a ticket of `len` bytes.
    Ticket { len: usize },
    /// An alert of this level and description.
    Alert { level: u8, description: u8 },
    /// Handshake-type content, as given (messages, fragments, garbage).
    Handshake(Vec<u8>),
    /// `len` bytes under an inner type that is not allowed here.
    Other { inner: u8, len: usize },
    /// Only zeros inside: no content type at all.
    PaddingOnly { len: usize },
    /// A record sent in the clear with this outer type (not 23).
    Plain { typ: u8, len: usize },
    /// A sealed record of 2^14 bytes of data and 240 + `extra` bytes of
    /// padding: over 2^14 + 256 bytes after the header.
    Oversized { extra: u16 },
    /// A protected record too short to hold a tag (`len` <= 16).
    Short { len: usize },
    /// The peer stops here (what follows is not sent).
    Stop,
}

/// Inner types that are never allowed after the handshake.
const OTHER_INNER: [u8; 5] = [20, 24, 25, 99, 255];
/// Outer types of records sent in the clear.
const CLEAR_TYPES: [u8; 5] = [20, 21, 22, 24, 0x80];

/// Most operations one input decodes to.
const MAX_OPS: usize = 128;

/// Reads fuzz bytes.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
}

/// Decodes operations from fuzz bytes (any bytes decode; most choices take
/// one to four bytes, so mutations move between nearby scripts).
pub fn decode(bytes: &[u8]) -> Vec<Op> {
    let mut b = Bytes(bytes);
    let mut ops = Vec::new();
    while !b.0.is_empty() && ops.len() < MAX_OPS {
        let tag = b.u8();
        let kind = match tag % 16 {
            // Mostly short records (cheap to seal, so a fuzzer runs more
            // inputs), some up to the limit and past it.
            0..=3 => Kind::Data { len: usize::from(b.u8()), padding: usize::from(b.u8() / 4) },
            4 => Kind::Data { len: usize::from(b.u16()) % (MAX_PLAINTEXT + 64), padding: usize::from(b.u8() / 4) },
            5 => Kind::Data { len: 0, padding: 0 },
            6 => Kind::KeyUpdate { request: b.u8() % 4 },
            7 => Kind::SplitKeyUpdate { at: 1 + usize::from(b.u8() % 4) },
            8 => Kind::Ticket { len: 1 + usize::from(b.u8()) },
            9 => Kind::Alert { level: b.u8() % 4, description: b.u8() },
            10 => {
                let n = usize::from(b.u8() % 24);
                Kind::Handshake((0..n).map(|_| b.u8()).collect())
            }
            11 => Kind::Other { inner: OTHER_INNER[usize::from(b.u8()) % OTHER_INNER.len()], len: usize::from(b.u8()) },
            12 => Kind::PaddingOnly { len: usize::from(b.u8()) },
            13 => Kind::Plain { typ: CLEAR_TYPES[usize::from(b.u8()) % CLEAR_TYPES.len()], len: usize::from(b.u8()) },
            14 if tag & 0x10 == 0 => Kind::Oversized { extra: b.u16() % 1024 },
            14 => Kind::Short { len: usize::from(b.u8() % (TAG as u8 + 1)) },
            _ => Kind::Stop,
        };
        // One record in eight is corrupted.
        let corrupt = (tag >= 0xe0).then(|| (usize::from(b.u16()), b.u8() | 1));
        ops.push(Op { kind, corrupt });
    }
    ops
}

/// The bytes [`decode`] reads as `ops` (for seed corpora), for ops in
/// the ranges `decode` produces.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        let mut args = Vec::new();
        let tag: u8 = match &op.kind {
            Kind::Data { len: 0, padding: 0 } => 5,
            Kind::Data { len, padding } if *len < 256 => {
                (0, args.extend_from_slice(&[*len as u8, (*padding * 4) as u8])).0
            }
            Kind::Data { len, padding } => {
                args.extend_from_slice(&(*len as u16).to_be_bytes());
                args.push((*padding * 4) as u8);
                4
            }
            Kind::KeyUpdate { request } => (6, args.push(*request)).0,
            Kind::SplitKeyUpdate { at } => (7, args.push((*at - 1) as u8)).0,
            Kind::Ticket { len } => (8, args.push((*len - 1) as u8)).0,
            Kind::Alert { level, description } => (9, args.extend_from_slice(&[*level, *description])).0,
            Kind::Handshake(content) => {
                args.push(content.len() as u8);
                args.extend_from_slice(content);
                10
            }
            Kind::Other { inner, len } => {
                let i = OTHER_INNER.iter().position(|t| t == inner).unwrap_or(0);
                (11, args.extend_from_slice(&[i as u8, *len as u8])).0
            }
            Kind::PaddingOnly { len } => (12, args.push(*len as u8)).0,
            Kind::Plain { typ, len } => {
                let i = CLEAR_TYPES.iter().position(|t| t == typ).unwrap_or(0);
                (13, args.extend_from_slice(&[i as u8, *len as u8])).0
            }
            Kind::Oversized { extra } => (14, args.extend_from_slice(&extra.to_be_bytes())).0,
            Kind::Short { len } => (0x1e, args.push(*len as u8)).0,
            Kind::Stop => 15,
        };
        match op.corrupt {
            // Corrupted ops have tags from 0xe0 (Short keeps its 0x10 bit).
            Some((at, xor)) => {
                out.push(0xe0 | tag);
                out.extend_from_slice(&args);
                out.extend_from_slice(&(at as u16).to_be_bytes());
                out.push(xor);
            }
            None => {
                out.push(tag);
                out.extend_from_slice(&args);
            }
        }
    }
    out
}

/// Content of `len` application-data bytes starting at stream offset `off`.
fn pattern(off: usize, len: usize) -> Vec<u8> {
    (off..off + len).map(|i| (i.wrapping_mul(31) >> 3) as u8 ^ (i >> 11) as u8).collect()
}

/// A well-formed NewSessionTicket body with a ticket of `len` bytes.
fn ticket(len: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 0x1c, 0x20, 1, 2, 3, 4, 4, 9, 9, 9, 9];
    b.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    b.extend((0..len).map(|i| i as u8));
    b.extend_from_slice(&[0, 0]);
    b
}

/// True for a NewSessionTicket body rustls parses: lifetime, age_add,
/// nonce<0..255>, ticket<1..2^16-1>, extensions<0..2^16-2>, nothing more.
pub fn ticket_well_formed(body: &[u8]) -> bool {
    let Some(&nonce) = body.get(8) else { return false };
    let at = 9 + usize::from(nonce);
    let Some(t) = body.get(at..at + 2) else { return false };
    let t = usize::from(u16::from_be_bytes([t[0], t[1]]));
    let at = at + 2 + t;
    let Some(e) = body.get(at..at + 2) else { return false };
    let e = usize::from(u16::from_be_bytes([e[0], e[1]]));
    // Extensions must parse too: ours are always empty.
    t > 0 && e == 0 && body.len() == at + 2
}

/// Why a receiver stops, for the cases where rustls answers differently
/// from RFC 8446 and ours follows the RFC (`tests/differential.rs` lists
/// them); `Other` covers every case where both must answer alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A record in the clear, or of an unknown outer type.
    Clear,
    /// A protected record whose outer type byte was changed.
    OuterType,
    /// An inner content type that is not allowed after the handshake.
    InnerType,
    /// Only zeros inside: no content type.
    NoContentType,
    /// A split handshake message interrupted by another record type.
    Interleaved,
    /// A handshake message other than KeyUpdate or (to a client)
    /// NewSessionTicket: refused unread.
    HandshakeType,
    /// A post-handshake message longer than 64 KiB.
    HandshakeLength,
    /// A record longer than 2^14 + 256 bytes after its header.
    Oversized,
    /// A handshake record with nothing in it.
    EmptyHandshake,
    /// Past a limit: empty records, key updates, warning alerts.
    Limit,
    /// Anything else.
    Other,
}

/// A crafted stream and what the receiver must make of it.
#[derive(Debug, Clone)]
pub struct Crafted {
    /// The bytes on the wire.
    pub wire: Vec<u8>,
    /// What the receiver delivers and how it ends.
    pub expected: Outcome,
    /// Why it ends, when it ends before the stream does.
    pub cause: Option<Cause>,
}

/// The receiver's state as the judgement follows it.
struct Receiver {
    client: bool,
    out: Outcome,
    /// A handshake message split across records.
    partial: Vec<u8>,
    /// Application data sent so far (offsets for [`pattern`]).
    sent: usize,
    empty_records: u8,
    key_updates_left: u8,
    warnings_left: u8,
}

/// What one record did.
enum Judged {
    /// Fine; `true` when the peer's next records are under a new key.
    Go(bool),
    /// The receiver's side is over.
    Over(End, Cause),
}

fn refuse(alert: u8, cause: Cause) -> Judged {
    Judged::Over(End::Alert(alert), cause)
}

impl Receiver {
    fn new(client: bool) -> Self {
        Self {
            client,
            out: Outcome { data: Vec::new(), end: End::Truncated },
            partial: Vec::new(),
            sent: 0,
            empty_records: 0,
            key_updates_left: 32,
            warnings_left: 4,
        }
    }

    /// An intact record of inner type `inner` with `content` and `padding`.
    fn record(&mut self, inner: u8, content: &[u8], padding: usize) -> Judged {
        if content.len() + 1 + padding > MAX_PLAINTEXT + 1 {
            return refuse(alert::RECORD_OVERFLOW, Cause::Other);
        }
        if inner == 0 {
            return refuse(alert::UNEXPECTED_MESSAGE, Cause::NoContentType);
        }
        if inner != HANDSHAKE && !self.partial.is_empty() {
            return refuse(alert::UNEXPECTED_MESSAGE, Cause::Interleaved);
        }
        if !content.is_empty() {
            self.empty_records = 0;
        } else if self.empty_records == 32 {
            return refuse(alert::UNEXPECTED_MESSAGE, Cause::Limit);
        } else {
            self.empty_records += 1;
        }
        match inner {
            APPLICATION_DATA => {
                self.key_updates_left = 32;
                self.out.data.extend_from_slice(content);
                Judged::Go(false)
            }
            ALERT => match content {
                [1 | 2, alert::CLOSE_NOTIFY] => Judged::Over(End::Closed, Cause::Other),
                [1, _] if self.warnings_left == 0 => refuse(alert::UNEXPECTED_MESSAGE, Cause::Limit),
                [1, alert::USER_CANCELED] => {
                    self.warnings_left -= 1;
                    Judged::Go(false)
                }
                [1, _] => refuse(alert::DECODE_ERROR, Cause::Other),
                [2, d] => Judged::Over(End::PeerAlert(*d), Cause::Other),
                [_, _] => refuse(alert::ILLEGAL_PARAMETER, Cause::Other),
                _ => refuse(alert::DECODE_ERROR, Cause::Other),
            },
            HANDSHAKE if content.is_empty() => refuse(alert::UNEXPECTED_MESSAGE, Cause::EmptyHandshake),
            HANDSHAKE => self.handshake(content),
            _ => refuse(alert::UNEXPECTED_MESSAGE, Cause::InnerType),
        }
    }

    /// Handshake bytes: whole messages are acted on, a split one waits.
    fn handshake(&mut self, content: &[u8]) -> Judged {
        self.partial.extend_from_slice(content);
        let mut rekey = false;
        while let [typ, a, b, c, ..] = self.partial[..] {
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if len > 64 * 1024 {
                return refuse(alert::DECODE_ERROR, Cause::HandshakeLength);
            }
            if self.partial.len() < 4 + len {
                break;
            }
            let body: Vec<u8> = self.partial.drain(..4 + len).skip(4).collect();
            match (typ, &body[..]) {
                // A KeyUpdate must end its record: what follows would be under the old key.
                (24, [_]) if !self.partial.is_empty() => return refuse(alert::UNEXPECTED_MESSAGE, Cause::Other),
                (24, [_]) if self.key_updates_left == 0 => return refuse(alert::UNEXPECTED_MESSAGE, Cause::Limit),
                (24, [0 | 1]) => (rekey, self.key_updates_left) = (true, self.key_updates_left - 1),
                (24, [_]) => return refuse(alert::ILLEGAL_PARAMETER, Cause::Other),
                (24, _) => return refuse(alert::DECODE_ERROR, Cause::Other),
                (4, _) if !self.client => return refuse(alert::UNEXPECTED_MESSAGE, Cause::HandshakeType),
                (4, b) if ticket_well_formed(b) => {}
                (4, _) => return refuse(alert::DECODE_ERROR, Cause::Other),
                _ => return refuse(alert::UNEXPECTED_MESSAGE, Cause::HandshakeType),
            }
        }
        Judged::Go(rekey)
    }
}

/// Where a corruption at `at` lands in a record of `len` bytes: its type
/// byte or its body (the version bytes are left alone: rustls ignores them
/// where RFC 8446 authenticates them; `tests/differential.rs` shows both;
/// the length bytes would change the framing).
fn corrupt_at(at: usize, len: usize) -> usize {
    let at = at % (len - 4);
    if at >= 1 { at + 4 } else { at }
}

/// The records one operation sends: inner type, content, padding.
type Records = Vec<(u8, Vec<u8>, usize)>;

/// The records of `kind`, or the raw bytes it puts on the wire with the
/// receiver's verdict on them.
fn records_of(kind: &Kind, sent: usize) -> Result<Records, (Vec<u8>, Judged)> {
    let header = |typ: u8, len: usize| vec![typ, 3, 3, (len >> 8) as u8, len as u8];
    Ok(match kind {
        Kind::Stop => Vec::new(),
        Kind::Plain { typ, len } => {
            let mut raw = header(*typ, *len);
            raw.extend(std::iter::repeat_n(0x42, *len));
            return Err((raw, refuse(alert::UNEXPECTED_MESSAGE, Cause::Clear)));
        }
        Kind::Short { len } => {
            let mut raw = header(APPLICATION_DATA, *len);
            raw.extend(std::iter::repeat_n(0x17, *len));
            return Err((raw, refuse(alert::BAD_RECORD_MAC, Cause::Other)));
        }
        Kind::Oversized { extra } => vec![(APPLICATION_DATA, pattern(sent, MAX_PLAINTEXT), 240 + usize::from(*extra))],
        Kind::Data { len, padding } => vec![(APPLICATION_DATA, pattern(sent, *len), *padding)],
        Kind::KeyUpdate { request } => vec![(HANDSHAKE, vec![24, 0, 0, 1, *request], 0)],
        Kind::SplitKeyUpdate { at } => {
            let m = [24, 0, 0, 1, 0];
            vec![(HANDSHAKE, m[..*at].to_vec(), 0), (HANDSHAKE, m[*at..].to_vec(), 0)]
        }
        Kind::Ticket { len } => {
            let body = ticket(*len);
            let mut m = vec![4, 0, (body.len() >> 8) as u8, body.len() as u8];
            m.extend_from_slice(&body);
            vec![(HANDSHAKE, m, 0)]
        }
        Kind::Alert { level, description } => vec![(ALERT, vec![*level, *description], 0)],
        Kind::Handshake(content) => vec![(HANDSHAKE, content.clone(), 0)],
        Kind::Other { inner, len } => vec![(*inner, vec![0x33; *len], 0)],
        Kind::PaddingOnly { len } => vec![(0, Vec::new(), *len)],
    })
}

/// Seals the records of `ops` with `peer` (the other end's record layer)
/// and judges what a receiver that is a client (`client`) or a server makes
/// of them, record by record.
pub fn craft<K: Kernel>(ops: &[Op], peer: &mut RecordLayer<K>, client: bool) -> Crafted {
    let mut wire = Vec::new();
    let mut r = Receiver::new(client);
    for op in ops {
        if op.kind == Kind::Stop {
            break;
        }
        let (start, delivered) = (wire.len(), r.out.data.len());
        let (records, mut verdict) = match records_of(&op.kind, r.sent) {
            Ok(records) => (records, None),
            Err((raw, judged)) => {
                wire.extend_from_slice(&raw);
                (Vec::new(), Some(judged))
            }
        };
        for (inner, content, padding) in &records {
            let at = wire.len();
            if peer.seal_any(&mut wire, *inner, content, *padding).is_err() {
                verdict = Some(refuse(alert::INTERNAL_ERROR, Cause::Other));
                break;
            }
            // Longer than 2^14 + 256 after the header: refused from the header alone.
            let judged = if wire.len() - at > MAX_RECORD {
                refuse(alert::RECORD_OVERFLOW, Cause::Oversized)
            } else {
                r.record(*inner, content, *padding)
            };
            match judged {
                Judged::Go(rekey) => {
                    if *inner == APPLICATION_DATA {
                        r.sent += content.len();
                    }
                    // The peer moves to its next key after a complete KeyUpdate.
                    if rekey && peer.next_tx_key().is_err() {
                        verdict = Some(refuse(alert::INTERNAL_ERROR, Cause::Other));
                        break;
                    }
                }
                over => {
                    verdict = Some(over);
                    break;
                }
            }
        }
        // The first record of the op is hit: the receiver cannot read past
        // it, whatever the op would have done.
        if let Some((at, xor)) = op.corrupt
            && !records.is_empty()
            && wire.len() - start > HEADER + TAG
        {
            let len = record_len(&wire[start..]);
            let pos = start + corrupt_at(at, len);
            wire[pos] ^= xor;
            // The header is read first: its type, then its length.
            verdict = Some(if pos == start {
                refuse(alert::UNEXPECTED_MESSAGE, Cause::OuterType)
            } else if len > MAX_RECORD {
                refuse(alert::RECORD_OVERFLOW, Cause::Oversized)
            } else {
                refuse(alert::BAD_RECORD_MAC, Cause::Other)
            });
            r.out.data.truncate(delivered);
        }
        if let Some(Judged::Over(end, cause)) = verdict {
            r.out.end = end;
            return Crafted { wire, expected: r.out, cause: Some(cause) };
        }
    }
    Crafted { wire, expected: r.out, cause: None }
}

/// The length of the record at the front of `wire` (from its header).
fn record_len(wire: &[u8]) -> usize {
    HEADER + usize::from(u16::from_be_bytes([wire[3], wire[4]]))
}

/// Operations as a short text for failure messages (the first 24).
pub struct Shown<'a>(pub &'a [Op]);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for op in self.0.iter().take(24) {
            write!(f, "{:?}{} ", op.kind, op.corrupt.map(|c| format!("!{c:?}")).unwrap_or_default())?;
        }
        if self.0.len() > 24 {
            write!(f, "... ({} ops)", self.0.len())?;
        }
        Ok(())
    }
}
