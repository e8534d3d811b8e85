//! The fuzz targets' bodies: `fuzz/fuzz_targets/*.rs` call these with
//! libFuzzer's input, and `tests/fuzz_corpus.rs` with every file of the
//! checked-in corpus. Each panics on a finding.

use std::io;

use super::super::data::DataPhase;
use super::super::record::{Kernel, MAX_PLAINTEXT};
use super::{Cuts, layer, phase, receive, script};

/// Splits `data` at its first byte: a flags byte, then `n` bytes of cut
/// sizes (n from the flags), then the rest.
fn split(data: &[u8]) -> (u8, &[u8], &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return (0, &[], &[]);
    };
    let n = usize::from(flags >> 3).min(rest.len());
    let (cuts, rest) = rest.split_at(n);
    (flags, cuts, rest)
}

/// Arbitrary bytes in place of a peer's records (seeds are sealed streams,
/// which mutations split, duplicate, truncate and corrupt): our receiver
/// must not panic or spin, must deliver no more bytes than it received,
/// and must reach the same outcome whether the bytes come all at once or
/// in pieces cut anywhere (headers split included).
pub fn records(data: &[u8]) {
    let (flags, cuts, stream) = split(data);
    let client = flags & 1 == 1;
    let whole = receive(&mut phase(client, 0), stream, &mut Cuts::new(&[]));
    let pieces = receive(&mut phase(client, 0), stream, &mut Cuts::new(cuts));
    assert!(whole.data.len() <= stream.len(), "delivered more than received");
    assert_eq!(whole, pieces, "the outcome depends on how the bytes were cut");
}

/// A peer's record stream from [`script::decode`], sealed with the right
/// keys: our receiver must deliver exactly what the script says, end as it
/// says (alert included), whatever the cuts.
pub fn sequence(data: &[u8]) {
    let (flags, cuts, rest) = split(data);
    let client = flags & 1 == 1;
    let ops = script::decode(rest);
    let script::Crafted { wire, expected, .. } = script::craft(&ops, &mut layer(!client), client);
    let got = receive(&mut phase(client, 0), &wire, &mut Cuts::new(cuts));
    let shown = script::Shown(&ops);
    assert_eq!(got.end, expected.end, "client {client}, ops {shown}");
    let (g, e) = (got.data.len(), expected.data.len());
    assert!(got.data == expected.data, "delivered {g} bytes, expected {e}; client {client}, ops {shown}");
}

/// The parameters of one [`duplex`] run, from fuzz bytes.
struct Duplex {
    /// Bytes each end sends (client, server).
    lens: [usize; 2],
    /// Records between key updates of each end.
    rekey: [u64; 2],
    /// Queue size beyond the two-record minimum.
    extra: usize,
}

impl Duplex {
    fn decode(b: &[u8]) -> Self {
        let at = |i: usize| usize::from(b.get(i).copied().unwrap_or(0));
        Self {
            // Up to three records' worth each way: enough for slots, key
            // updates and wrap-around, cheap enough for many runs a second.
            lens: [(at(0) << 8 | at(1)) % (3 * MAX_PLAINTEXT), (at(2) << 8 | at(3)) % (3 * MAX_PLAINTEXT)],
            rekey: [1 + at(4) as u64 % 40, 1 + at(5) as u64 % 40],
            extra: at(6) * 97,
        }
    }
}

/// Two of our ends talk to each other in both directions at once, every
/// read and write cut short, each updating its keys every few records: each
/// side receives exactly what the other sent, then close_notify.
pub fn duplex(data: &[u8]) {
    let (_, cuts, rest) = split(data);
    let p = Duplex::decode(rest);
    let mut ends = [phase(true, p.extra), phase(false, p.extra)];
    for (e, r) in ends.iter_mut().zip(p.rekey) {
        e.records_mut().set_rekey_every(r);
    }
    let sources: [Vec<u8>; 2] = [0, 1].map(|i| (0..p.lens[i]).map(|k| ((k * (3 + i)) >> 2) as u8).collect());
    let mut sent = [0usize; 2];
    let mut got: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut cuts = Cuts::new(cuts);
    let bound = 64 * (p.lens[0] + p.lens[1] + 4 * MAX_PLAINTEXT);
    for turn in 0.. {
        assert!(turn < bound, "no end after {turn} turns: sent {sent:?} got {:?}", got.each_ref().map(Vec::len));
        if ends.iter().all(|e| e.peer_closed && !e.has_plaintext()) && ends.iter().all(|e| e.tx.is_empty()) {
            break;
        }
        for i in 0..2 {
            let (a, b) = if i == 0 { (0, 1) } else { (1, 0) };
            let [x, y] = &mut ends;
            let (from, to) = if a == 0 { (x, y) } else { (y, x) };
            send(from, &sources[a], &mut sent[a], &mut cuts);
            carry(from, to, &mut cuts);
            if let Err(e) = to.open_records() {
                panic!("end {b} refused what end {a} sealed: {e}");
            }
            drain(to, &mut got[b], &mut cuts);
        }
    }
    assert!(got[1] == sources[0], "server got {} of {} bytes", got[1].len(), sources[0].len());
    assert!(got[0] == sources[1], "client got {} of {} bytes", got[0].len(), sources[1].len());
}

/// Reads plaintext from `src` (past `sent`) into `d`'s record slots; EOF
/// once all is sent (close_notify).
fn send<K: Kernel>(d: &mut DataPhase<K>, src: &[u8], sent: &mut usize, cuts: &mut Cuts<'_>) {
    if !d.wants_plaintext() {
        return;
    }
    // Reads of 64 bytes and more (the carries and writes are cut finer).
    let max = cuts.next_size().saturating_mul(64);
    let r = d.read_plaintext(max, |iov| {
        let mut n = 0;
        for b in iov.iter_mut() {
            let k = b.len().min(src.len() - *sent - n);
            b[..k].copy_from_slice(&src[*sent + n..*sent + n + k]);
            n += k;
        }
        Ok(n)
    });
    match r {
        Ok(n) => *sent += n,
        Err(e) => panic!("sealing failed: {e}"),
    }
}

/// Moves ciphertext from `from`'s send queue into `to`'s receive queue.
fn carry<A: Kernel, B: Kernel>(from: &mut DataPhase<A>, to: &mut DataPhase<B>, cuts: &mut Cuts<'_>) {
    if !to.wants_ciphertext() {
        return;
    }
    let space = to.rx.space_mut();
    let n = cuts.next_size().min(from.tx.len()).min(space.len());
    space[..n].copy_from_slice(&from.tx.data()[..n]);
    to.rx.commit(n);
    from.tx.consume(n);
}

/// Takes `d`'s waiting plaintext into `out`, in cut pieces.
fn drain<K: Kernel>(d: &mut DataPhase<K>, out: &mut Vec<u8>, cuts: &mut Cuts<'_>) {
    while d.has_plaintext() {
        let mut room = cuts.next_size();
        let _ = d.write_plaintext(|iov| {
            let mut n = 0;
            for b in iov {
                let k = b.len().min(room);
                out.extend_from_slice(&b[..k]);
                (n, room) = (n + k, room - k);
            }
            Ok::<_, io::Error>(n)
        });
    }
}

/// A sealed stream (for seed corpora): `ops` from the end that is not
/// `client`, and what that receiver must make of it.
pub fn sealed_stream(ops: &[u8], client: bool) -> script::Crafted {
    script::craft(&script::decode(ops), &mut layer(!client), client)
}
