use super::*;
use crate::relay::control::KEY_UPDATE;

fn cipher(secrets: fn([u8; 32], [u8; NONCE_LEN]) -> ConnectionTrafficSecrets, seq: u64) -> Cipher {
    Cipher::new(seq, &secrets([7; 32], [9; NONCE_LEN])).unwrap()
}

fn aes256(key: [u8; 32], iv: [u8; NONCE_LEN]) -> ConnectionTrafficSecrets {
    ConnectionTrafficSecrets::Aes256Gcm { key: key.into(), iv: iv.into() }
}

fn chacha(key: [u8; 32], iv: [u8; NONCE_LEN]) -> ConnectionTrafficSecrets {
    ConnectionTrafficSecrets::Chacha20Poly1305 { key: key.into(), iv: iv.into() }
}

fn sealed(c: &mut Cipher, plain: &[u8], inner: u8) -> Vec<u8> {
    let mut slot = vec![0; plain.len() + OVERHEAD];
    slot[HEADER..HEADER + plain.len()].copy_from_slice(plain);
    let n = c.seal(&mut slot, plain.len(), inner).unwrap();
    assert_eq!(n, slot.len());
    slot
}

#[test]
fn records_round_trip_in_place_for_each_aead() {
    for suite in [aes256, chacha] {
        let (mut tx, mut rx) = (cipher(suite, 5), cipher(suite, 5));
        for len in [0, 1, 1000, MAX_PLAINTEXT] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut rec = sealed(&mut tx, &plain, APPLICATION_DATA);
            assert_eq!(record_len(&rec).unwrap(), Some(rec.len()));
            assert_eq!(&rec[..3], &[APPLICATION_DATA, 3, 3]);
            assert!(len == 0 || rec[HEADER..HEADER + len] != plain[..], "sealed in place");
            assert_eq!(rx.open(&mut rec).unwrap(), (APPLICATION_DATA, len));
            assert_eq!(&rec[HEADER..HEADER + len], &plain[..]);
        }
        assert_eq!((tx.seq(), rx.seq()), (9, 9));
    }
}

#[test]
fn padding_is_stripped_and_the_sequence_must_match() {
    let (mut tx, mut rx) = (cipher(aes256, 0), cipher(aes256, 0));
    // "ab", inner type 23, then zero padding: sealed as 5 bytes with a 0 last byte.
    let mut rec = sealed(&mut tx, b"ab\x17\0\0", 0);
    assert_eq!(rx.open(&mut rec).unwrap(), (APPLICATION_DATA, 2));
    let mut zeros = sealed(&mut tx, &[0; 4], 0);
    let e = rx.open(&mut zeros).unwrap_err();
    assert_eq!(e.alert(), Some(alert::UNEXPECTED_MESSAGE), "{e}");
    // Out of order: the receiver expects sequence 2, this record is sealed with 3.
    let _skipped = sealed(&mut tx, b"x", APPLICATION_DATA);
    let mut late = sealed(&mut tx, b"y", APPLICATION_DATA);
    assert_eq!(rx.open(&mut late).unwrap_err().alert(), Some(alert::BAD_RECORD_MAC));
}

#[test]
fn a_changed_byte_fails_authentication() {
    for at in [0, 3, HEADER, HEADER + 10, HEADER + 20 + 1 + TAG - 1] {
        let (mut tx, mut rx) = (cipher(aes256, 0), cipher(aes256, 0));
        let mut rec = sealed(&mut tx, &[1; 20], APPLICATION_DATA);
        rec[at] ^= 0x40;
        let e = rx.open(&mut rec).unwrap_err();
        assert_eq!(e.alert(), Some(alert::BAD_RECORD_MAC), "byte {at}: {e}");
    }
}

#[test]
fn record_headers_are_checked_before_any_decryption() {
    assert!(record_len(&[23, 3, 3]).unwrap().is_none(), "incomplete header");
    let e = record_len(&[22, 3, 3, 0, 40]).unwrap_err();
    assert!(e.to_string().contains("non-encrypted"), "{e}");
    let e = record_len(&[20, 3, 3, 0, 1]).unwrap_err();
    assert!(e.to_string().contains("change_cipher_spec"), "{e}");
    let too_long = u16::try_from(MAX_PLAINTEXT + 257).unwrap().to_be_bytes();
    let e = record_len(&[23, 3, 3, too_long[0], too_long[1]]).unwrap_err();
    assert_eq!(e.alert(), Some(alert::RECORD_OVERFLOW));
    assert_eq!(record_len(&[23, 3, 3, 0, 16]).unwrap_err().alert(), Some(alert::BAD_RECORD_MAC));
    assert_eq!(record_len(&[23, 3, 3, 0, 17]).unwrap(), Some(22));
}

#[test]
fn plaintext_fits_whole_and_short_slots() {
    assert_eq!(slots_capacity(0), 0);
    assert_eq!(slots_capacity(OVERHEAD), 0);
    assert_eq!(slots_capacity(OVERHEAD + 10), 10);
    assert_eq!(slots_capacity(2 * SLOT), 2 * MAX_PLAINTEXT);
    assert_eq!(slots_capacity(SLOT + 5), MAX_PLAINTEXT);
}

/// A key schedule for tests: generation `g` has key and IV bytes all `g`.
struct Generations {
    rx: u8,
    tx: u8,
}

fn generation(g: u8) -> ConnectionTrafficSecrets {
    aes256([g; 32], [g; NONCE_LEN])
}

impl Kernel for Generations {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.tx += 1;
        Ok((0, generation(self.tx)))
    }
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.rx += 1;
        Ok((0, generation(self.rx)))
    }
    fn new_session_ticket(&mut self, _body: &[u8]) -> Result<(), RecordError> {
        Ok(())
    }
    fn confidentiality_limit(&self) -> u64 {
        1 << 24
    }
}

fn layer() -> RecordLayer<Generations> {
    let secrets = rustls::ExtractedSecrets { tx: (0, generation(100)), rx: (0, generation(0)) };
    RecordLayer::new(Generations { rx: 0, tx: 100 }, &secrets).unwrap()
}

#[test]
fn a_key_update_split_over_two_records_is_followed() {
    let mut rec = layer();
    let mut peer = Cipher::new(0, &generation(0)).unwrap();
    let mut first = sealed(&mut peer, &[KEY_UPDATE, 0], HANDSHAKE);
    assert_eq!(rec.open(&mut first).unwrap(), Opened::Control);
    // Application data may not interrupt a handshake message.
    let mut inner = layer();
    let mut p2 = Cipher::new(0, &generation(0)).unwrap();
    let mut a = sealed(&mut p2, &[KEY_UPDATE, 0], HANDSHAKE);
    inner.open(&mut a).unwrap();
    let mut b = sealed(&mut p2, b"data", APPLICATION_DATA);
    assert_eq!(inner.open(&mut b).unwrap_err().alert(), Some(alert::UNEXPECTED_MESSAGE));
    // The rest of the message (update requested) completes it: new receive keys, and ours are due.
    let mut second = sealed(&mut peer, &[0, 1, 1], HANDSHAKE);
    assert_eq!(rec.open(&mut second).unwrap(), Opened::Control);
    assert!(rec.key_update_due());
    let mut next = Cipher::new(0, &generation(1)).unwrap();
    let mut data = sealed(&mut next, b"under the new key", APPLICATION_DATA);
    assert_eq!(rec.open(&mut data).unwrap(), Opened::Data(17));
    // Our answer is sealed with our current key, then we move to the next.
    let mut out = [0u8; CONTROL_ROOM];
    let n = rec.seal_key_update(&mut out).unwrap();
    let mut ours = Cipher::new(0, &generation(100)).unwrap();
    assert_eq!(ours.open(&mut out[..n]).unwrap(), (HANDSHAKE, 5));
    assert_eq!(&out[HEADER..HEADER + 5], &[KEY_UPDATE, 0, 0, 1, 0]);
    assert!(!rec.key_update_due());
    let mut slot = [0u8; 64];
    slot[HEADER..HEADER + 2].copy_from_slice(b"ok");
    let n = rec.seal_slots(&mut slot, 2).unwrap();
    let mut after = Cipher::new(0, &generation(101)).unwrap();
    assert_eq!(after.open(&mut slot[..n]).unwrap(), (APPLICATION_DATA, 2));
}

#[test]
fn a_key_update_must_end_its_record_and_be_well_formed() {
    for (msg, alert) in [
        (&[KEY_UPDATE, 0, 0, 1, 0, KEY_UPDATE][..], alert::UNEXPECTED_MESSAGE),
        (&[KEY_UPDATE, 0, 0, 1, 2][..], alert::ILLEGAL_PARAMETER),
        (&[KEY_UPDATE, 0, 0, 2, 0, 0][..], alert::DECODE_ERROR),
        (&[1, 0, 0, 0][..], alert::UNEXPECTED_MESSAGE),
        (&[KEY_UPDATE, 0xff, 0, 0][..], alert::DECODE_ERROR),
    ] {
        let mut rec = layer();
        let mut peer = Cipher::new(0, &generation(0)).unwrap();
        let mut r = sealed(&mut peer, msg, HANDSHAKE);
        assert_eq!(rec.open(&mut r).unwrap_err().alert(), Some(alert), "{msg:?}");
    }
}

#[test]
fn alerts_close_cancel_or_end() {
    let mut rec = layer();
    let mut peer = Cipher::new(0, &generation(0)).unwrap();
    assert_eq!(rec.open(&mut sealed(&mut peer, &[1, alert::USER_CANCELED], ALERT)).unwrap(), Opened::Control);
    assert_eq!(rec.open(&mut sealed(&mut peer, &[1, alert::CLOSE_NOTIFY], ALERT)).unwrap(), Opened::Closed);
    assert!(matches!(rec.open(&mut sealed(&mut peer, &[2, 40], ALERT)), Err(RecordError::PeerAlert(40))));
    let mut rec = layer();
    let mut peer = Cipher::new(0, &generation(0)).unwrap();
    let e = rec.open(&mut sealed(&mut peer, &[2], ALERT)).unwrap_err();
    assert_eq!(e.alert(), Some(alert::DECODE_ERROR));
}

#[test]
fn a_peer_is_refused_past_rustls_limits() {
    let expect_refusal = |records: &[(u8, &[u8])], at: usize| {
        let mut rec = layer();
        let (mut g, mut peer) = (0u8, Cipher::new(0, &generation(0)).unwrap());
        for (i, (inner, content)) in records.iter().enumerate() {
            let r = rec.open(&mut sealed(&mut peer, content, *inner));
            if i == at {
                assert_eq!(r.unwrap_err().alert(), Some(alert::UNEXPECTED_MESSAGE), "record {i}");
                return;
            }
            assert!(r.is_ok(), "record {i}: {:?}", r.err().map(|e| e.to_string()));
            if *inner == HANDSHAKE {
                g += 1;
                peer = Cipher::new(0, &generation(g)).unwrap();
            }
        }
        panic!("not refused");
    };
    let empty: (u8, &[u8]) = (APPLICATION_DATA, &[]);
    let data: (u8, &[u8]) = (APPLICATION_DATA, b"x");
    let cancel: (u8, &[u8]) = (ALERT, &[1, alert::USER_CANCELED]);
    let update: (u8, &[u8]) = (HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0]);
    // 32 empty records in a row are fine, the 33rd is not; data resets the count.
    expect_refusal(&[vec![empty; 32], vec![data], vec![empty; 33]].concat(), 65);
    // 4 warning alerts in all.
    expect_refusal(&[vec![cancel; 2], vec![data], vec![cancel; 3]].concat(), 5);
    // 32 key updates without application data between them.
    expect_refusal(&[vec![update; 32], vec![empty], vec![update; 33]].concat(), 65);
}

#[test]
fn padding_counts_toward_the_plaintext_limit() {
    let (mut tx, mut rx) = (cipher(aes256, 0), cipher(aes256, 0));
    let mut slot = vec![0; MAX_RECORD];
    let n = tx.seal_padded(&mut slot, MAX_PLAINTEXT - 10, APPLICATION_DATA, 10).unwrap();
    assert_eq!(rx.open(&mut slot[..n]).unwrap(), (APPLICATION_DATA, MAX_PLAINTEXT - 10));
    let n = tx.seal_padded(&mut slot, MAX_PLAINTEXT - 10, APPLICATION_DATA, 11).unwrap();
    assert_eq!(rx.open(&mut slot[..n]).unwrap_err().alert(), Some(alert::RECORD_OVERFLOW));
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = (u8, Vec<u8>)> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|c| (APPLICATION_DATA, c)),
            2 => prop::collection::vec(any::<u8>(), 1..40).prop_map(|c| (HANDSHAKE, c)),
            2 => (0u8..3).prop_map(|r| (HANDSHAKE, vec![KEY_UPDATE, 0, 0, 1, r])),
            1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(|c| (ALERT, c)),
            1 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..40)),
        ]
    }

    proptest! {
        /// Application data interleaved with key updates: every record opens,
        /// under the key that the updates before it lead to.
        #[test]
        fn data_across_any_number_of_key_updates(records in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300).prop_map(|c| (APPLICATION_DATA, c)),
                (0u8..2).prop_map(|r| (HANDSHAKE, vec![KEY_UPDATE, 0, 0, 1, r])),
            ],
            1..60,
        )) {
            let mut rec = layer();
            let (mut g, mut peer) = (0u8, Cipher::new(0, &generation(0)).unwrap());
            let mut requested = false;
            for (inner, content) in records {
                let mut r = sealed(&mut peer, &content, inner);
                let opened = rec.open(&mut r);
                if inner == HANDSHAKE {
                    prop_assert_eq!(opened.unwrap(), Opened::Control);
                    requested |= content[4] == 1;
                    g += 1;
                    peer = Cipher::new(0, &generation(g)).unwrap();
                } else {
                    prop_assert_eq!(opened.unwrap(), Opened::Data(content.len()));
                    prop_assert_eq!(&r[HEADER..HEADER + content.len()], &content[..]);
                }
            }
            prop_assert_eq!(rec.key_update_due(), requested);
        }

        /// Any sequence of well-sealed records with arbitrary inner types and
        /// contents: no panic, application data delivered exactly, key
        /// updates followed, and the first bad one ends it with an alert.
        #[test]
        fn sealed_records_of_any_content(records in prop::collection::vec(record(), 1..40)) {
            let mut rec = layer();
            let (mut g, mut peer) = (0u8, Cipher::new(0, &generation(0)).unwrap());
            for (inner, content) in records {
                let mut r = sealed(&mut peer, &content, inner);
                // What the receiver sees: the last non-zero byte is the type, zeros after it padding.
                let mut full = content.clone();
                full.push(inner);
                let seen = full.iter().rposition(|b| *b != 0).map(|end| (full[end], full[..end].to_vec()));
                match rec.open(&mut r) {
                    Ok(Opened::Data(n)) => {
                        let (t, body) = seen.unwrap_or_default();
                        prop_assert_eq!(t, APPLICATION_DATA);
                        prop_assert_eq!(&r[HEADER..HEADER + n], &body[..]);
                    }
                    Ok(Opened::Closed) => {
                        let (t, body) = seen.unwrap_or_default();
                        prop_assert_eq!((t, body.get(1)), (ALERT, Some(&alert::CLOSE_NOTIFY)));
                        break;
                    }
                    Ok(Opened::Control) => {
                        if let Some((HANDSHAKE, [KEY_UPDATE, 0, 0, 1, 0 | 1])) = seen.as_ref().map(|(t, b)| (*t, &b[..])) {
                            g += 1;
                            peer = Cipher::new(0, &generation(g)).unwrap();
                        }
                    }
                    Err(e) => {
                        prop_assert!(e.alert().is_some() || matches!(e, RecordError::PeerAlert(_)), "{}", e);
                        break;
                    }
                }
            }
        }
    }
}
