//! The data phase over a real rustls handshake, in memory: the two ends
//! exchange bytes through `Vec`s cut at awkward places.

use super::*;
use crate::config::{PeerPin, TlsFiles};
use crate::relay::record::{MAX_RECORD, alert};
use crate::relay::tls::{Phase, Session, TlsState};
use rustls::client::UnbufferedClientConnection;
use rustls::kernel::KernelConnection;
use rustls::server::UnbufferedServerConnection;

type Client = DataPhase<KernelConnection<rustls::client::ClientConnectionData>>;
type Server = DataPhase<KernelConnection<rustls::server::ServerConnectionData>>;

const SIZE: usize = 64 * 1024;

fn files(
    dir: &std::path::Path,
    me: &rcgen::CertifiedKey<rcgen::KeyPair>,
    peer: &rcgen::CertifiedKey<rcgen::KeyPair>,
    name: &str,
) -> TlsFiles {
    let w = |n: &str, s: String| {
        let p = dir.join(format!("{name}-{n}"));
        std::fs::write(&p, s).unwrap();
        p
    };
    TlsFiles {
        cert_file: w("c.pem", me.cert.pem()),
        key_file: w("k.pem", me.signing_key.serialize_pem()),
        peer: PeerPin::CertFile(w("p.pem", peer.cert.pem())),
        kernel_tls: true,
        record_layer: crate::config::RecordLayer::S2ds,
    }
}

/// Moves everything queued in `from.tx` into `to.rx`.
fn shuttle(from: &mut Window, to: &mut Window) {
    to.push(from.data());
    from.consume(from.len());
}

/// Client and server configs pinning each other's fresh certificate.
fn configs() -> (std::sync::Arc<rustls::ClientConfig>, std::sync::Arc<rustls::ServerConfig>) {
    crate::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
    let s = rcgen::generate_simple_self_signed(vec!["server".into()]).unwrap();
    let ccfg = crate::tls::client_config(&files(dir.path(), &c, &s, "c")).unwrap();
    let scfg = crate::tls::server_config(&files(dir.path(), &s, &c, "s")).unwrap();
    (ccfg, scfg)
}

/// A client and a server after a real handshake.
fn pair() -> (Client, Server) {
    let (ccfg, scfg) = configs();
    let name = rustls::pki_types::ServerName::try_from("server").unwrap();
    let mut cl = TlsState::new(UnbufferedClientConnection::new(ccfg, name).unwrap(), SIZE);
    let mut sv = TlsState::new(UnbufferedServerConnection::new(scfg).unwrap(), SIZE);
    for _ in 0..10 {
        cl.pump(|_| {}).unwrap();
        shuttle(&mut cl.tx, &mut sv.rx);
        sv.pump(|_| {}).unwrap();
        shuttle(&mut sv.tx, &mut cl.rx);
        if !cl.is_handshaking() && !sv.is_handshaking() {
            return (user(cl), user(sv));
        }
    }
    panic!("handshake did not complete");
}

/// The data phase in userspace (kernel TLS not asked for).
fn user<S: Session>(st: TlsState<S>) -> DataPhase<S::Kernel> {
    match st.into_phase(-1).unwrap() {
        Phase::User(d) => *d,
        Phase::Kernel(_) => panic!("kernel TLS without being asked"),
    }
}

/// Deterministic chunk sizes.
struct Chunks(u64);
impl Chunks {
    fn next(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + (self.0 % max as u64) as usize
    }
}

/// Feeds `src` through `from` to `to` in uneven pieces (reads, network
/// transfers and writes all cut short) and returns what `to` delivered.
fn transfer<A: Kernel, B: Kernel>(from: &mut DataPhase<A>, to: &mut DataPhase<B>, src: &[u8], seed: u64) -> Vec<u8> {
    let (mut at, mut out, mut cut) = (0, Vec::new(), Chunks(seed));
    for _ in 0..100_000 {
        if at < src.len() && from.wants_plaintext() {
            let max = cut.next(3 * MAX_PLAINTEXT);
            let n = from
                .read_plaintext(max, |iov| {
                    let mut n = 0;
                    for b in iov.iter_mut() {
                        let k = b.len().min(src.len() - at - n);
                        b[..k].copy_from_slice(&src[at + n..at + n + k]);
                        n += k;
                    }
                    Ok(n)
                })
                .unwrap();
            at += n;
        }
        // The network delivers part of what was sent.
        let k = from.tx.len().min(cut.next(40_000)).min(to.rx.free());
        if to.wants_ciphertext() {
            to.rx.push(&from.tx.data()[..k]);
            from.tx.consume(k);
        }
        to.open_records().unwrap();
        let limit = cut.next(50_000);
        to.write_plaintext(|iov| {
            let mut n = 0;
            for b in iov {
                let k = b.len().min(limit - n);
                out.extend_from_slice(&b[..k]);
                n += k;
            }
            Ok(n)
        })
        .unwrap();
        if at == src.len() && from.tx.is_empty() && !to.has_plaintext() {
            return out;
        }
    }
    panic!("transfer did not finish");
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
}

#[test]
fn bytes_cross_both_ways_whole_and_in_order() {
    let (mut c, mut s) = pair();
    let up = data(3 * 1024 * 1024 + 17);
    assert_eq!(transfer(&mut c, &mut s, &up, 1), up);
    let down = data(2 * 1024 * 1024 + 5);
    assert_eq!(transfer(&mut s, &mut c, &down, 2), down);
    assert_eq!((c.encrypted, s.decrypted), (up.len() as u64, up.len() as u64));
    assert_eq!((s.encrypted, c.decrypted), (down.len() as u64, down.len() as u64));
}

#[test]
fn key_updates_at_the_limit_are_followed_by_the_peer() {
    let (mut c, mut s) = pair();
    // Update the client's sending keys every 5 records, the server's every 2.
    c.records_mut().set_rekey_every(5);
    s.records_mut().set_rekey_every(2);
    let up = data(1024 * 1024);
    assert_eq!(transfer(&mut c, &mut s, &up, 3), up);
    assert!(c.records_mut().tx_seq() < 16, "the client's keys were updated (seq {})", c.records_mut().tx_seq());
    let down = data(512 * 1024);
    assert_eq!(transfer(&mut s, &mut c, &down, 4), down);
    assert!(s.records_mut().tx_seq() < 16);
}

#[test]
fn close_notify_ends_the_direction_and_later_records_are_ignored() {
    let (mut c, mut s) = pair();
    let n = c.read_plaintext(1000, |iov| Ok(copy_into(iov, b"last words"))).unwrap();
    assert_eq!(n, 10);
    assert_eq!(c.read_plaintext(1000, |_| Ok(0)).unwrap(), 0, "EOF");
    assert!(c.plain_eof && c.close_sent);
    shuttle(&mut c.tx, &mut s.rx);
    // Anything after close_notify (even garbage) is never opened.
    s.rx.push(&[23, 3, 3, 0, 40]);
    assert_eq!(s.open_records().unwrap(), 10);
    assert!(s.peer_closed && !s.wants_ciphertext());
    let mut got = Vec::new();
    s.write_plaintext(|iov| {
        Ok(iov
            .iter()
            .map(|b| {
                got.extend_from_slice(b);
                b.len()
            })
            .sum())
    })
    .unwrap();
    assert_eq!(got, b"last words");
}

fn copy_into(iov: &mut [IoSliceMut<'_>], src: &[u8]) -> usize {
    let k = iov[0].len().min(src.len());
    iov[0][..k].copy_from_slice(&src[..k]);
    k
}

#[test]
fn a_tampered_record_is_refused_and_answered_with_an_alert() {
    let (mut c, mut s) = pair();
    c.read_plaintext(1000, |iov| Ok(copy_into(iov, b"payload"))).unwrap();
    let at = c.tx.len() - 3;
    c.tx.data_mut()[at] ^= 1;
    shuttle(&mut c.tx, &mut s.rx);
    let e = s.open_records().unwrap_err();
    assert_eq!(e.alert(), Some(alert::BAD_RECORD_MAC), "{e}");
    s.queue_alert(&e);
    shuttle(&mut s.tx, &mut c.rx);
    match c.open_records() {
        Err(RecordError::PeerAlert(a)) => assert_eq!(a, alert::BAD_RECORD_MAC),
        other => panic!("expected the peer's alert, got {other:?}"),
    }
}

#[test]
fn unwritten_plaintext_stops_reading_ciphertext() {
    let (mut c, mut s) = pair();
    let src = data(4 * SIZE);
    let mut at = 0;
    // Nothing is written out of the server: its receive queue fills and then refuses more.
    for _ in 0..1000 {
        if c.wants_plaintext() && at < src.len() {
            at += c.read_plaintext(usize::MAX, |iov| Ok(copy_into(iov, &src[at..]))).unwrap();
        }
        let k = c.tx.len().min(s.rx.free());
        if !s.wants_ciphertext() || k == 0 {
            break;
        }
        s.rx.push(&c.tx.data()[..k]);
        c.tx.consume(k);
        s.open_records().unwrap();
    }
    assert!(!s.wants_ciphertext(), "the server keeps reading while nothing leaves");
    assert!(s.rx.len() <= SIZE.max(2 * MAX_RECORD));
    assert!(s.has_plaintext());
}

mod malformed {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever arrives in place of records (with or without a plausible
        /// header), nothing is delivered, nothing panics, and an error names
        /// the alert to send.
        #[test]
        fn arbitrary_bytes_deliver_nothing(mut bytes in prop::collection::vec(any::<u8>(), 0..40_000), header: bool) {
            let (_c, mut s) = pair();
            if header && bytes.len() >= HEADER {
                let len = u16::try_from((bytes.len() - HEADER).min(MAX_RECORD - HEADER)).unwrap_or(0);
                bytes[..HEADER].copy_from_slice(&[23, 3, 3, len.to_be_bytes()[0], len.to_be_bytes()[1]]);
            }
            s.rx.push(&bytes);
            match s.open_records() {
                Ok(n) => prop_assert_eq!(n, 0),
                Err(e) => prop_assert!(e.alert().is_some(), "{}", e),
            }
            prop_assert!(!s.has_plaintext() && !s.peer_closed);
        }
    }
}

#[path = "handoff_tests.rs"]
mod handoff;
