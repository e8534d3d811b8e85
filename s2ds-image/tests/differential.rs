//! Our TLS 1.3 record layer against rustls's own, on the same inputs.
//!
//! - Interop: application data and key updates both ways between our record
//!   layer and rustls's (the buffered `Connection` that tokio-rustls wraps),
//!   in both roles: identical plaintext.
//! - Differential: a peer's record stream (`s2ds::relay::check::script`:
//!   data, key updates whole and split, tickets, every alert level and
//!   description, raw handshake bytes, other inner types, padding,
//!   corrupted bytes (bad MAC), records in the clear, oversized and short
//!   records, truncation) goes once to rustls and once to our receiver, each
//!   after a real handshake, cut into pieces anywhere: both must deliver the
//!   same plaintext and end the same way, with the same alert. The script's
//!   own expectation (what the fuzz targets hold our layer to) must agree
//!   with rustls as well.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConnection, Connection, ServerConnection};
use s2ds::config::{PeerPin, TlsFiles};
use s2ds::relay::check::script::{self, Cause, Crafted, Kind, Op, Shown};
use s2ds::relay::check::{Cuts, End, Outcome, receive};
use s2ds::relay::data::DataPhase;
use s2ds::relay::record::{Kernel, alert};
use s2ds::relay::tls::{Phase, Session, TlsState};

const SIZE: usize = 64 * 1024;

struct Configs {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

/// Both ends' configs (ours, pinning each other's fresh certificate).
fn configs() -> Configs {
    s2ds::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let id = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        let (cert, key) = (dir.path().join(format!("{name}.crt")), dir.path().join(format!("{name}.key")));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    };
    let (c, s) = (id("client"), id("server"));
    let files = |me: &(std::path::PathBuf, std::path::PathBuf), peer: &std::path::PathBuf| TlsFiles {
        cert_file: me.0.clone(),
        key_file: me.1.clone(),
        peer: PeerPin::CertFile(peer.clone()),
        kernel_tls: false,
        record_layer: s2ds::config::RecordLayer::S2ds,
    };
    Configs {
        client: s2ds::tls::client_config(&files(&c, &s.0)).unwrap(),
        server: s2ds::tls::server_config(&files(&s, &c.0)).unwrap(),
    }
}

fn name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("server").unwrap()
}

/// Completes a handshake between our end `ours` and rustls's `theirs`,
/// then hands our end to our record layer.
fn handshake<S: Session>(mut ours: TlsState<S>, theirs: &mut Connection) -> DataPhase<S::Kernel> {
    for _ in 0..20 {
        ours.pump(|_| {}).unwrap();
        // An empty read would tell rustls the stream ended.
        if !ours.tx.is_empty() {
            theirs.read_tls(&mut ours.tx.data()).unwrap();
            ours.tx.consume(ours.tx.len());
        }
        theirs.process_new_packets().unwrap();
        let mut out = Vec::new();
        theirs.write_tls(&mut out).unwrap();
        ours.rx.push(&out);
        if !ours.is_handshaking() && !theirs.is_handshaking() && ours.rx.is_empty() {
            return user(ours);
        }
    }
    panic!("handshake did not complete");
}

fn user<S: Session>(st: TlsState<S>) -> DataPhase<S::Kernel> {
    match st.into_phase(-1).unwrap() {
        Phase::User(d) => *d,
        Phase::Kernel(_) => panic!("kernel TLS without being asked"),
    }
}

/// Our client with rustls's server, or our server with rustls's client.
fn ours_and_rustls(cfg: &Configs, our_client: bool) -> (Box<dyn AnyPhase>, Connection) {
    if our_client {
        let mut theirs = Connection::Server(ServerConnection::new(cfg.server.clone()).unwrap());
        let ours = TlsState::new(UnbufferedClientConnection::new(cfg.client.clone(), name()).unwrap(), SIZE);
        (Box::new(handshake(ours, &mut theirs)), theirs)
    } else {
        let mut theirs = Connection::Client(ClientConnection::new(cfg.client.clone(), name()).unwrap());
        let ours = TlsState::new(UnbufferedServerConnection::new(cfg.server.clone()).unwrap(), SIZE);
        (Box::new(handshake(ours, &mut theirs)), theirs)
    }
}

/// Our two ends after a real handshake (client, server).
fn ours_and_ours(cfg: &Configs) -> (Box<dyn AnyPhase>, Box<dyn AnyPhase>) {
    let mut cl = TlsState::new(UnbufferedClientConnection::new(cfg.client.clone(), name()).unwrap(), SIZE);
    let mut sv = TlsState::new(UnbufferedServerConnection::new(cfg.server.clone()).unwrap(), SIZE);
    for _ in 0..20 {
        cl.pump(|_| {}).unwrap();
        sv.rx.push(cl.tx.data());
        cl.tx.consume(cl.tx.len());
        sv.pump(|_| {}).unwrap();
        cl.rx.push(sv.tx.data());
        sv.tx.consume(sv.tx.len());
        if !cl.is_handshaking() && !sv.is_handshaking() && cl.tx.is_empty() && sv.tx.is_empty() {
            return (Box::new(user(cl)), Box::new(user(sv)));
        }
    }
    panic!("handshake did not complete");
}

/// Our data phase of either role, for crafting and receiving.
trait AnyPhase {
    fn craft(&mut self, ops: &[Op], receiver_is_client: bool) -> Crafted;
    fn receive(&mut self, wire: &[u8], cuts: &[u8]) -> Outcome;
}

impl<K: Kernel + 'static> AnyPhase for DataPhase<K> {
    fn craft(&mut self, ops: &[Op], receiver_is_client: bool) -> Crafted {
        script::craft(ops, self.records_mut(), receiver_is_client)
    }
    fn receive(&mut self, wire: &[u8], cuts: &[u8]) -> Outcome {
        receive(self, wire, &mut Cuts::new(cuts))
    }
}

/// Feeds `wire` to rustls in pieces cut by `cuts`, reading its plaintext
/// as it comes; on an error, the alert rustls sends is opened by `sender`
/// (our end, which holds the keys rustls sends with).
fn rustls_receives(theirs: &mut Connection, sender: &mut dyn AnyPhase, wire: &[u8], cuts: &[u8]) -> Outcome {
    let mut cuts = Cuts::new(cuts);
    let (mut data, mut at, mut buf) = (Vec::new(), 0, vec![0u8; 64 * 1024]);
    let mut failed = None;
    for _ in 0..4 * (wire.len() + 16) {
        let n = cuts.next_size().min(wire.len() - at);
        let fed = theirs.read_tls(&mut &wire[at..at + n]).unwrap_or(0);
        at += fed;
        if let Err(e) = theirs.process_new_packets() {
            failed = Some(e);
        }
        // After an error rustls still hands out the plaintext it had, then
        // reports an unexpected EOF; the error is what counts.
        loop {
            match theirs.reader().read(&mut buf) {
                Ok(k) if k > 0 => data.extend_from_slice(&buf[..k]),
                _ if failed.is_some() => break,
                Ok(_) => return Outcome { data, end: End::Closed },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Outcome { data, end: End::Truncated };
                }
                Err(e) => panic!("rustls reader: {e}"),
            }
        }
        if let Some(e) = failed {
            return Outcome { data, end: rustls_end(theirs, sender, &e) };
        }
        if at == wire.len() {
            // The end of the stream.
            theirs.read_tls(&mut &[][..]).unwrap();
            if let Err(e) = theirs.process_new_packets() {
                return Outcome { data, end: rustls_end(theirs, sender, &e) };
            }
            return match theirs.reader().read(&mut buf) {
                Ok(0) => Outcome { data, end: End::Closed },
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Outcome { data, end: End::Truncated },
                other => panic!("rustls after EOF: {other:?}"),
            };
        }
    }
    panic!("rustls stopped making progress");
}

/// How rustls ended after error `e`: the alert it sends, or the peer's.
fn rustls_end(theirs: &mut Connection, sender: &mut dyn AnyPhase, e: &rustls::Error) -> End {
    let mut out = Vec::new();
    while theirs.wants_write() {
        theirs.write_tls(&mut out).unwrap();
    }
    if out.is_empty() {
        return match e {
            rustls::Error::AlertReceived(d) => End::PeerAlert(u8::from(*d)),
            _ => End::Silent,
        };
    }
    match sender.receive(&out, &[]).end {
        End::PeerAlert(a) => End::Alert(a),
        other => panic!("rustls sent something other than a fatal alert ({other:?}) after {e}"),
    }
}

/// Where rustls departs from RFC 8446 and ours follows the RFC: the cause
/// of the end, what rustls does, and why ours differs. Everything else must
/// be identical: the plaintext always, and the end (alert included).
fn known_difference(cause: Cause, rustls: End, ours: End) -> Option<&'static str> {
    use End::{Alert, Silent};
    const UNEXPECTED: u8 = alert::UNEXPECTED_MESSAGE;
    Some(match (cause, rustls, ours) {
        (Cause::Clear, Alert(alert::BAD_RECORD_MAC | alert::DECODE_ERROR), Alert(UNEXPECTED)) => {
            "a record in the clear or of an unknown type: rustls tries to decrypt it or refuses the type as \
             undecodable; RFC 8446 section 5 says unexpected_message"
        }
        (Cause::OuterType, _, Alert(UNEXPECTED)) => {
            "a protected record whose outer type byte was changed (23 to another): RFC 8446 section 5.2 \
             authenticates that byte and requires 23; rustls builds its additional data with 23 whatever the \
             header says, so it opens the record and goes on (or, for type 22 last in the stream, holds it to \
             join the next and sees the stream end)"
        }
        (Cause::InnerType, Alert(alert::DECODE_ERROR), Alert(UNEXPECTED)) => {
            "an unknown inner content type: rustls decode_error; RFC 8446 section 5 says unexpected_message"
        }
        (Cause::NoContentType, Silent, Alert(UNEXPECTED)) => {
            "a record of padding only: rustls stops without an alert; RFC 8446 section 5.4 says unexpected_message"
        }
        (Cause::Interleaved, Silent, Alert(UNEXPECTED)) => {
            "a split handshake message interrupted: rustls stops without an alert; RFC 8446 section 5.1, \
             unexpected_message"
        }
        (Cause::HandshakeType, Alert(alert::DECODE_ERROR), Alert(UNEXPECTED)) => {
            "a handshake message that is never allowed after the handshake: rustls parses it first and says \
             decode_error when it is malformed; ours refuses it unread"
        }
        (Cause::HandshakeLength, Silent, Alert(alert::DECODE_ERROR)) => {
            "a post-handshake message over 64 KiB: rustls stops without an alert"
        }
        (Cause::Oversized, Alert(alert::BAD_RECORD_MAC), Alert(alert::RECORD_OVERFLOW)) => {
            "a tampered record over 2^14 + 256 bytes: ours refuses it from its header (RFC 8446 section 5.2); \
             rustls reads records up to 2^14 + 2048 bytes and decrypts first"
        }
        (Cause::EmptyHandshake, _, Alert(UNEXPECTED)) => {
            "an empty handshake record: rustls skips it; RFC 8446 section 5.1 forbids sending it"
        }
        (Cause::Limit, Silent, Alert(UNEXPECTED)) => {
            "past a limit (empty records, key updates, warning alerts): rustls stops without an alert"
        }
        _ => return None,
    })
}

/// One script both ways: rustls receiving, ours receiving; ours against
/// rustls (up to the known differences) and against the script's own
/// expectation (exactly: the fuzz targets hold ours to it).
fn compare(cfg: &Configs, ops: &[Op], receiver_is_client: bool, cuts: &[u8]) -> Result<Option<&'static str>, String> {
    let (mut sender, mut theirs) = ours_and_rustls(cfg, !receiver_is_client);
    let crafted = sender.craft(ops, receiver_is_client);
    let rustls = rustls_receives(&mut theirs, sender.as_mut(), &crafted.wire, cuts);
    let (mut c, mut s) = ours_and_ours(cfg);
    let (from, to) = if receiver_is_client { (&mut s, &mut c) } else { (&mut c, &mut s) };
    let wire = from.craft(ops, receiver_is_client).wire;
    let ours = to.receive(&wire, cuts);
    let known = crafted.cause.and_then(|c| known_difference(c, rustls.end, ours.end));
    // rustls goes on past an empty handshake record or a changed outer type:
    // only what came before it compares.
    let same_data = if matches!(crafted.cause, Some(Cause::EmptyHandshake | Cause::OuterType)) {
        rustls.data.starts_with(&ours.data)
    } else {
        rustls.data == ours.data
    };
    if ours != crafted.expected || !same_data || (rustls.end != ours.end && known.is_none()) {
        let show = |o: &Outcome| format!("{:?} after {} bytes", o.end, o.data.len());
        return Err(format!(
            "receiver client={receiver_is_client}: rustls {}, ours {}, script {} ({:?}); ops {}",
            show(&rustls),
            show(&ours),
            show(&crafted.expected),
            crafted.cause,
            Shown(ops)
        ));
    }
    Ok(if rustls.end == ours.end { None } else { known })
}

fn op(kind: Kind) -> Op {
    Op { kind, corrupt: None }
}

fn data(len: usize) -> Op {
    op(Kind::Data { len, padding: 0 })
}

/// Our data phase of either role, for the interop test.
trait Duplex {
    fn send(&mut self, src: &[u8], sent: &mut usize) -> usize;
    fn take_tx(&mut self) -> Vec<u8>;
    fn give_rx(&mut self, bytes: &[u8]) -> Vec<u8>;
    fn closed(&self) -> bool;
    fn rekey_every(&mut self, records: u64);
}

impl<K: Kernel> Duplex for DataPhase<K> {
    fn send(&mut self, src: &[u8], sent: &mut usize) -> usize {
        if !self.wants_plaintext() {
            return 0;
        }
        let n = self
            .read_plaintext(usize::MAX, |iov| {
                let mut n = 0;
                for b in iov.iter_mut() {
                    let k = b.len().min(src.len() - *sent - n);
                    b[..k].copy_from_slice(&src[*sent + n..*sent + n + k]);
                    n += k;
                }
                Ok(n)
            })
            .unwrap();
        *sent += n;
        n
    }
    fn take_tx(&mut self) -> Vec<u8> {
        let out = self.tx.data().to_vec();
        self.tx.consume(out.len());
        out
    }
    fn give_rx(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.rx.push(bytes);
        self.open_records().unwrap();
        let mut out = Vec::new();
        while self.has_plaintext() {
            self.write_plaintext(|iov| {
                iov.iter().for_each(|b| out.extend_from_slice(b));
                Ok::<_, std::io::Error>(iov.iter().map(|b| b.len()).sum())
            })
            .unwrap();
        }
        out
    }
    fn closed(&self) -> bool {
        self.peer_closed
    }
    fn rekey_every(&mut self, records: u64) {
        self.records_mut().set_rekey_every(records);
    }
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * seed) >> 3) as u8).collect()
}

/// Application data both ways between our record layer and rustls's, each
/// side updating its keys many times (ours every 3 records on its own;
/// rustls every 64 KiB, asking us to update ours too), then close_notify
/// both ways: each side reads exactly what the other wrote.
#[test]
fn data_and_key_updates_both_ways_with_rustls_in_both_roles() {
    let cfg = configs();
    for our_client in [true, false] {
        let (ours_any, mut theirs) = duplex_with_rustls(&cfg, our_client);
        let mut ours = ours_any;
        ours.rekey_every(3);
        let (to_them, to_us) = (pattern(3 << 20, 7), pattern(2 << 20, 13));
        let (mut sent, mut their_sent) = (0, 0);
        let (mut they_got, mut we_got) = (Vec::new(), Vec::new());
        let mut buf = vec![0u8; 1 << 16];
        let mut their_eof = false;
        for _ in 0..100_000 {
            ours.send(&to_them, &mut sent);
            let wire = ours.take_tx();
            let mut rest = &wire[..];
            // rustls takes at most a few records per read_tls.
            loop {
                if !rest.is_empty() {
                    theirs.read_tls(&mut rest).unwrap();
                }
                theirs.process_new_packets().unwrap();
                loop {
                    match theirs.reader().read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => they_got.extend_from_slice(&buf[..k]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("rustls read: {e}"),
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
            if their_sent < to_us.len() {
                let k = (to_us.len() - their_sent).min(64 * 1024);
                theirs.writer().write_all(&to_us[their_sent..their_sent + k]).unwrap();
                their_sent += k;
                theirs.refresh_traffic_keys().unwrap();
            } else if !their_eof {
                theirs.send_close_notify();
                their_eof = true;
            }
            let mut out = Vec::new();
            while theirs.wants_write() {
                theirs.write_tls(&mut out).unwrap();
            }
            we_got.extend(ours.give_rx(&out));
            if ours.closed()
                && their_eof
                && they_got.len() == to_them.len()
                && theirs.process_new_packets().unwrap().peer_has_closed()
            {
                break;
            }
        }
        assert!(
            they_got == to_them,
            "our client {our_client}: rustls read {} of {} bytes",
            they_got.len(),
            to_them.len()
        );
        assert!(we_got == to_us, "our client {our_client}: we read {} of {} bytes", we_got.len(), to_us.len());
        assert!(ours.closed());
    }
}

/// Our end (boxed as [`Duplex`]) after a handshake with rustls.
fn duplex_with_rustls(cfg: &Configs, our_client: bool) -> (Box<dyn Duplex>, Connection) {
    if our_client {
        let mut theirs = Connection::Server(ServerConnection::new(cfg.server.clone()).unwrap());
        let ours = TlsState::new(UnbufferedClientConnection::new(cfg.client.clone(), name()).unwrap(), SIZE);
        (Box::new(handshake(ours, &mut theirs)), theirs)
    } else {
        let mut theirs = Connection::Client(ClientConnection::new(cfg.client.clone(), name()).unwrap());
        let ours = TlsState::new(UnbufferedServerConnection::new(cfg.server.clone()).unwrap(), SIZE);
        (Box::new(handshake(ours, &mut theirs)), theirs)
    }
}

/// Every alert description at every level, after some data, both roles.
#[test]
fn every_alert_is_handled_as_rustls_handles_it() {
    let cfg = configs();
    let mut failures = Vec::new();
    for level in 0..4u8 {
        for description in (0..=255u8).step_by(1) {
            let ops = [data(100), op(Kind::Alert { level, description }), data(10)];
            for client in [false, true] {
                if let Err(e) = compare(&cfg, &ops, client, &[]) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

/// Compares every case in both roles, whole and cut into pieces; prints the
/// known differences met (each once) and fails on any other.
fn check_all(cases: &[Vec<Op>]) {
    let cfg = configs();
    let (mut failures, mut known) = (Vec::new(), std::collections::BTreeSet::new());
    for ops in cases {
        for client in [false, true] {
            for cuts in [&[][..], &[0, 2, 6, 200, 1, 0x81, 4][..]] {
                match compare(&cfg, ops, client, cuts) {
                    Ok(k) => known.extend(k),
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    for k in &known {
        eprintln!("known difference: {k}");
    }
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

/// Each kind of record a peer may send, in the positions that matter
/// (`s2ds::relay::check::cases`, which also seed the fuzz corpora).
#[test]
fn every_kind_of_record_is_handled_as_rustls_handles_it() {
    check_all(&s2ds::relay::check::cases::all());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

    /// Random scripts (the fuzz target `sequence`'s input space), whole and
    /// cut anywhere, both roles.
    #[test]
    fn random_record_streams_are_handled_as_rustls_handles_them(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        cuts in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
        client: bool,
    ) {
        let cfg = configs();
        let ops = script::decode(&bytes);
        if let Err(e) = compare(&cfg, &ops, client, &cuts) {
            proptest::prop_assert!(false, "{}", e);
        }
    }
}

/// The version bytes of a record header: RFC 8446 section 5.2 authenticates
/// them (they are part of the additional data), so ours refuses a changed
/// one as bad_record_mac. rustls builds the additional data from the values
/// it expects instead: it refuses a changed major byte as undecodable and
/// accepts a changed minor byte. Plaintext before it is the same.
#[test]
fn changed_version_bytes_fail_authentication_in_ours() {
    let cfg = configs();
    for (byte, rustls_end) in [(1, Some(End::Alert(alert::DECODE_ERROR))), (2, None)] {
        let ops = [data(3), data(50), op(Kind::Alert { level: 1, description: 0 })];
        let (mut sender, mut theirs) = ours_and_rustls(&cfg, true);
        let mut wire = sender.craft(&ops, false).wire;
        let second = 5 + 3 + 1 + 16;
        wire[second + byte] ^= 0x41;
        let rustls = rustls_receives(&mut theirs, sender.as_mut(), &wire, &[]);
        let (mut c, mut s) = ours_and_ours(&cfg);
        let mut wire = c.craft(&ops, false).wire;
        wire[second + byte] ^= 0x41;
        let ours = s.receive(&wire, &[]);
        assert_eq!(ours, Outcome { data: rustls.data[..3].to_vec(), end: End::Alert(alert::BAD_RECORD_MAC) });
        match rustls_end {
            Some(end) => assert_eq!(rustls.end, end, "byte {byte}"),
            None => assert_eq!((rustls.data.len(), rustls.end), (53, End::Closed), "byte {byte}"),
        }
    }
}

/// A stream cut inside a record (header or body): both see a truncation
/// after the same plaintext.
#[test]
fn a_stream_cut_inside_a_record_is_truncated_in_both() {
    let cfg = configs();
    let ops = [data(1000), data(2000), op(Kind::Alert { level: 1, description: 0 })];
    for cut in [1, 3, 5, 6, 100, 2000] {
        let (mut sender, mut theirs) = ours_and_rustls(&cfg, true);
        let wire = sender.craft(&ops, false).wire;
        let first = 5 + 1000 + 1 + 16;
        let rustls = rustls_receives(&mut theirs, sender.as_mut(), &wire[..first + cut], &[]);
        let (mut c, mut s) = ours_and_ours(&cfg);
        let wire = c.craft(&ops, false).wire;
        let ours = s.receive(&wire[..first + cut], &[3]);
        assert_eq!(rustls, ours, "cut {cut} bytes into the second record");
        assert_eq!((ours.data.len(), ours.end), (1000, End::Truncated));
    }
}
