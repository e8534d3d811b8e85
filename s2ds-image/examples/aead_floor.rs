//! The cipher's floor for a TLS pair, for `bench/bench.sh`: the CPU that
//! AES-128-GCM (aws-lc, the suite the pair negotiates) needs to seal and then
//! open every byte once, in TLS 1.3 records as our record layer makes them
//! (16 KiB of plaintext plus the content type byte, the 5-byte header as
//! associated data, the nonce from the sequence number), in place, on one
//! thread. No sockets: what a TLS pair cannot avoid whatever it does.
//!
//! Besides, the cost of one plain copy of every byte (`copy`, 16 KiB at a
//! time between two 1 MiB buffers): a TLS relay in userspace copies each byte
//! twice (socket to userspace, userspace to socket), which kernel TLS and
//! splice avoid; the benchmark shows that floor too.
//!
//! `aead_floor GIB` prints `seal S open S copy S` (CPU seconds per GiB of
//! each, from this thread's scheduler statistics).

use std::time::Duration;

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Plaintext per record, as our record layer fills them.
const RECORD: usize = 16 * 1024;
const TAG: usize = 16;

/// CPU time of this thread so far (`/proc/thread-self/schedstat`: nanoseconds on CPU first).
fn thread_cpu() -> anyhow::Result<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns = s.split_whitespace().next().and_then(|f| f.parse().ok());
    ns.map(Duration::from_nanos).ok_or_else(|| anyhow::anyhow!("unreadable schedstat: {s:?}"))
}

fn nonce(iv: &[u8; NONCE_LEN], seq: u64) -> Nonce {
    let mut n = *iv;
    for (b, s) in n[NONCE_LEN - 8..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    Nonce::assume_unique_for_key(n)
}

fn header(len: usize) -> anyhow::Result<[u8; 5]> {
    let [hi, lo] = u16::try_from(len)?.to_be_bytes();
    Ok([0x17, 0x03, 0x03, hi, lo])
}

fn main() -> anyhow::Result<()> {
    let gib: u64 = std::env::args().nth(1).map_or(Ok(1), |a| a.parse())?;
    let key = |b: u8| LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[b; 16]).expect("a 16-byte AES-128 key"));
    let (sealer, opener, iv) = (key(7), key(7), [9u8; NONCE_LEN]);
    let records = gib * (1 << 30) / RECORD as u64;
    let inner = RECORD + 1;
    let hdr = header(inner + TAG)?;
    let (mut seal, mut open) = (Duration::ZERO, Duration::ZERO);
    // Records are sealed and opened in batches of 64 (1 MiB), so that the
    // clock is read rarely and each record is opened about as warm as a
    // relay would have it. Opening leaves the plaintext in place for the
    // next batch to seal again.
    let mut batch_buf = vec![0x5au8; 64 * (inner + TAG)];
    for batch in 0..records.div_ceil(64) {
        let t0 = thread_cpu()?;
        for (i, r) in batch_buf.chunks_mut(inner + TAG).enumerate() {
            r[RECORD] = 0x17;
            let (body, tail) = r.split_at_mut(inner);
            let tag = sealer
                .seal_in_place_separate_tag(nonce(&iv, batch * 64 + i as u64), Aad::from(&hdr[..]), body)
                .map_err(|_| anyhow::anyhow!("seal failed"))?;
            tail.copy_from_slice(tag.as_ref());
        }
        let t1 = thread_cpu()?;
        for (i, r) in batch_buf.chunks_mut(inner + TAG).enumerate() {
            let plain = opener
                .open_in_place(nonce(&iv, batch * 64 + i as u64), Aad::from(&hdr[..]), r)
                .map_err(|_| anyhow::anyhow!("open failed"))?;
            std::hint::black_box(plain);
        }
        let t2 = thread_cpu()?;
        seal += t1 - t0;
        open += t2 - t1;
    }
    let mut other = vec![0u8; batch_buf.len()];
    let t0 = thread_cpu()?;
    for _ in 0..records.div_ceil(64) {
        for (to, from) in other.chunks_mut(RECORD).zip(batch_buf.chunks(RECORD)) {
            to.copy_from_slice(from);
        }
        std::hint::black_box(&mut other);
    }
    let copy = thread_cpu()? - t0;
    let per = |d: Duration| d.as_secs_f64() / gib as f64;
    println!("seal {:.4} open {:.4} copy {:.4}", per(seal), per(open), per(copy));
    Ok(())
}
