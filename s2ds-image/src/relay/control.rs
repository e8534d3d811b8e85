//! What happens after the handshake besides application data, for both
//! record layers: ours ([`super::record`]) and the kernel's
//! ([`super::ktls_io`], which hands control records to userspace).
//!
//! - KeyUpdate: our receive keys follow the peer's; a request makes us
//!   update ours before the next record we send. rustls keeps the key
//!   schedule ([`Kernel`]).
//! - NewSessionTicket: a client passes it to rustls; a server refuses it.
//! - Alerts: close_notify ends the peer's direction; a warning
//!   user_canceled is ignored; any other alert ends the connection.
//! - Limits, as rustls's (which take them from BoringSSL): 32 empty records
//!   in a row, 32 key updates without application data between them, 4
//!   warning alerts. Past them the peer is refused (rustls stops silently;
//!   we say unexpected_message).

use rustls::ConnectionTrafficSecrets;
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;

use super::record::{ALERT, APPLICATION_DATA, HANDSHAKE, RecordError, alert};

const NEW_SESSION_TICKET: u8 = 4;
pub(crate) const KEY_UPDATE: u8 = 24;
/// Longest post-handshake message we accept (a NewSessionTicket is far shorter).
const MAX_HANDSHAKE_MESSAGE: usize = 64 * 1024;
/// Our sending keys are updated this many records before the limit.
const LIMIT_MARGIN: u64 = 1 << 16;
/// Empty records in a row a peer may send (rustls: `ALLOWED_CONSECUTIVE_EMPTY_FRAGMENTS_MAX`).
const MAX_EMPTY_RECORDS: u8 = 32;
/// Key updates without application data between them (rustls, after BoringSSL's `kMaxKeyUpdates`).
const MAX_KEY_UPDATES: u8 = 32;
/// Warning alerts a peer may send in all (rustls, after BoringSSL's `kMaxWarningAlerts`).
const MAX_WARNINGS: u8 = 4;

fn unexpected(what: impl Into<String>) -> RecordError {
    RecordError::protocol(alert::UNEXPECTED_MESSAGE, what)
}

/// What rustls keeps doing after the handshake (see [`KernelConnection`]).
pub trait Kernel: Send {
    /// New secrets for our direction (after we send a KeyUpdate).
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
    /// New secrets for the peer's direction (after it sent a KeyUpdate).
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
    /// A NewSessionTicket body from the peer.
    fn new_session_ticket(&mut self, body: &[u8]) -> Result<(), RecordError>;
    /// Records that one key may seal.
    fn confidentiality_limit(&self) -> u64;
}

/// The one thing that differs between the roles: who may receive tickets.
pub trait Tickets {
    /// A NewSessionTicket body from the peer.
    fn ticket(&mut self, body: &[u8]) -> Result<(), RecordError>;
}

impl Tickets for KernelConnection<ClientConnectionData> {
    fn ticket(&mut self, body: &[u8]) -> Result<(), RecordError> {
        self.handle_new_session_ticket(body).map_err(|e| match e {
            // As rustls answers a ticket it cannot parse.
            rustls::Error::InvalidMessage(_) => {
                RecordError::protocol(alert::DECODE_ERROR, "malformed NewSessionTicket")
            }
            e => RecordError::Rustls(e),
        })
    }
}

impl Tickets for KernelConnection<ServerConnectionData> {
    fn ticket(&mut self, _body: &[u8]) -> Result<(), RecordError> {
        Err(RecordError::protocol(alert::UNEXPECTED_MESSAGE, "a client sent a NewSessionTicket"))
    }
}

impl<D> Kernel for KernelConnection<D>
where
    KernelConnection<D>: Tickets + Send,
{
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_tx_secret()
    }
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_rx_secret()
    }
    fn new_session_ticket(&mut self, body: &[u8]) -> Result<(), RecordError> {
        self.ticket(body)
    }
    fn confidentiality_limit(&self) -> u64 {
        match self.negotiated_cipher_suite() {
            rustls::SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            rustls::SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        }
    }
}

/// What a received record meant, after [`Control::record`].
pub enum Event {
    /// Application data, to deliver.
    Data,
    /// A control message, handled (nothing to deliver).
    Handled,
    /// close_notify: the peer's direction is complete.
    Closed,
    /// A KeyUpdate: the peer's next records are under these secrets.
    RxKey(u64, ConnectionTrafficSecrets),
}

/// Post-handshake messages and the key schedule after the handshake, for
/// both record layers: ours ([`RecordLayer`]) and the kernel's
/// ([`super::ktls`]), which hands control records to userspace.
pub struct Control<K> {
    kernel: K,
    /// A post-handshake message split across records.
    partial: Vec<u8>,
    /// The peer asked for a KeyUpdate from us.
    update_requested: bool,
    /// Records one sending key may seal, with a margin.
    rekey_every: u64,
    /// Consecutive records with nothing in them.
    empty_records: u8,
    /// Key updates the peer may still send before its next application data.
    key_updates_left: u8,
    /// Warning alerts (user_canceled) the peer may still send.
    warnings_left: u8,
}

impl<K: Kernel> Control<K> {
    /// Control over what rustls left after the handshake.
    pub fn new(kernel: K) -> Self {
        let rekey_every = kernel.confidentiality_limit().saturating_sub(LIMIT_MARGIN).max(1);
        Self {
            kernel,
            partial: Vec::new(),
            update_requested: false,
            rekey_every,
            empty_records: 0,
            key_updates_left: MAX_KEY_UPDATES,
            warnings_left: MAX_WARNINGS,
        }
    }

    /// Acts on one opened record of inner type `inner` and plaintext `plain`.
    pub fn record(&mut self, inner: u8, plain: &[u8]) -> Result<Event, RecordError> {
        if inner != HANDSHAKE && !self.partial.is_empty() {
            return Err(unexpected("a handshake message interrupted by another record type"));
        }
        if !plain.is_empty() {
            self.empty_records = 0;
        } else if self.empty_records == MAX_EMPTY_RECORDS {
            return Err(unexpected("too many empty records in a row"));
        } else {
            self.empty_records += 1;
        }
        match inner {
            APPLICATION_DATA => {
                self.key_updates_left = MAX_KEY_UPDATES;
                Ok(Event::Data)
            }
            // RFC 8446 section 5.1: no zero-length handshake fragments (rustls skips them).
            HANDSHAKE if plain.is_empty() => Err(unexpected("an empty handshake record")),
            HANDSHAKE => self.handshake(plain),
            ALERT => self.alert(plain),
            t => Err(unexpected(format!("record of inner type {t} here"))),
        }
    }

    /// As rustls: TLS 1.3 has no warnings but user_canceled (and
    /// close_notify, whatever its level), and an unknown level is refused.
    fn alert(&mut self, plain: &[u8]) -> Result<Event, RecordError> {
        match plain {
            [1 | 2, alert::CLOSE_NOTIFY] => Ok(Event::Closed),
            [1, _] if self.warnings_left == 0 => Err(unexpected("too many warning alerts")),
            [1, alert::USER_CANCELED] => {
                self.warnings_left -= 1;
                Ok(Event::Handled)
            }
            [1, _] => Err(RecordError::protocol(alert::DECODE_ERROR, "a warning alert other than user_canceled")),
            [2, a] => Err(RecordError::PeerAlert(*a)),
            [_, _] => Err(RecordError::protocol(alert::ILLEGAL_PARAMETER, "an alert of unknown level")),
            _ => Err(RecordError::protocol(alert::DECODE_ERROR, "malformed alert")),
        }
    }

    /// True while a post-handshake message is split across records (the
    /// next record must carry the rest of it).
    pub fn mid_message(&self) -> bool {
        !self.partial.is_empty()
    }

    fn handshake(&mut self, bytes: &[u8]) -> Result<Event, RecordError> {
        self.partial.extend_from_slice(bytes);
        let mut at = 0;
        let mut event = Event::Handled;
        while let [typ, a, b, c, ..] = self.partial[at..] {
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if len > MAX_HANDSHAKE_MESSAGE {
                return Err(RecordError::protocol(alert::DECODE_ERROR, "post-handshake message too long"));
            }
            let Some(body) = self.partial.get(at + 4..at + 4 + len) else {
                break;
            };
            match (typ, body) {
                (KEY_UPDATE, [request]) => {
                    // A KeyUpdate must end its record: later bytes would be under the old key.
                    if at + 4 + len != self.partial.len() {
                        return Err(unexpected("KeyUpdate not at a record boundary"));
                    }
                    if self.key_updates_left == 0 {
                        return Err(unexpected("too many key updates without application data"));
                    }
                    self.key_updates_left -= 1;
                    match request {
                        0 => {}
                        1 => self.update_requested = true,
                        _ => return Err(RecordError::protocol(alert::ILLEGAL_PARAMETER, "KeyUpdate request value")),
                    }
                    let (seq, secrets) = self.kernel.update_rx().map_err(RecordError::Rustls)?;
                    event = Event::RxKey(seq, secrets);
                }
                (KEY_UPDATE, _) => return Err(RecordError::protocol(alert::DECODE_ERROR, "KeyUpdate length")),
                (NEW_SESSION_TICKET, body) => self.kernel.new_session_ticket(body)?,
                (t, _) => return Err(unexpected(format!("handshake message {t} after the handshake"))),
            }
            at += 4 + len;
        }
        self.partial.drain(..at);
        Ok(event)
    }

    /// True when the peer asked for a KeyUpdate that we have not sent yet.
    pub fn update_requested(&self) -> bool {
        self.update_requested
    }

    /// Records one sending key may seal before we update it.
    pub fn rekey_every(&self) -> u64 {
        self.rekey_every
    }

    /// Updates our sending keys every `records` records (tests).
    pub fn set_rekey_every(&mut self, records: u64) {
        self.rekey_every = records.max(1);
    }

    /// After our KeyUpdate is sealed under the old key: the new sending
    /// secrets and their first sequence number.
    pub fn next_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), RecordError> {
        let next = self.kernel.update_tx().map_err(RecordError::Rustls)?;
        self.update_requested = false;
        Ok(next)
    }
}

/// The KeyUpdate message we send (update_not_requested).
pub const KEY_UPDATE_MESSAGE: [u8; 5] = [KEY_UPDATE, 0, 0, 1, 0];
