use super::*;

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
    assert_eq!(record_len(&[23, 3, 3, 0, 16]).unwrap_err().alert(), Some(alert::DECODE_ERROR));
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
