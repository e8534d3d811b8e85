//! Kernel TLS (the `tls` ULP): after rustls's handshake, the kernel seals
//! and opens the records, so that both TLS legs can be spliced like plain
//! TCP (encryption fused with the socket copy, no plaintext in userspace).
//!
//! What stays in userspace is what [`super::record::Control`] does for our
//! own record layer: the kernel hands every non-data record up (it answers
//! `EINVAL` to a splice that meets one; `recvmsg` returns it with its type
//! in a control message), and we act on it: KeyUpdate (new receive keys go
//! to the kernel with `TLS_RX`; the kernel pauses decryption until they
//! do), NewSessionTicket, alerts. Our own KeyUpdates go out as handshake
//! records through `sendmsg`, followed by the new keys (`TLS_TX`).
//!
//! Used only where a run-time probe ([`support`]) shows that the kernel
//! offers the ULP *and* accepts new keys on a live connection (TLS 1.3 key
//! updates, Linux 6.14 and later): without that, a connection could not
//! outlive the cipher's confidentiality limit or follow a peer's key
//! update. Elsewhere our own record layer runs, as it does on the machines
//! this was written on (no `tls` module), so the kernel path has not been
//! exercised there: the pure parts (key encoding, record budget) are
//! unit-tested, the socket calls follow the kernel's documentation
//! (`Documentation/networking/tls.rst`).
//!
//! The module has `unsafe`: `setsockopt`, `getsockopt`, `sendmsg` and
//! `recvmsg` on descriptors borrowed for the duration of the call.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use rustls::ConnectionTrafficSecrets;

use super::record::{MAX_PLAINTEXT, RecordError, alert};

/// Our receive keys (`setsockopt(SOL_TLS, TLS_RX)`).
pub const RX: libc::c_int = libc::TLS_RX;
/// Our send keys (`setsockopt(SOL_TLS, TLS_TX)`).
pub const TX: libc::c_int = libc::TLS_TX;

/// The kernel's `tls12_crypto_info_*` structure for TLS 1.3 with these
/// secrets, the record sequence number starting at `seq`: version and
/// cipher (native-endian u16s), then the per-record IV part, the key, the
/// salt (the IV's first 4 bytes for AES-GCM) and the sequence number
/// (big-endian), without padding.
pub fn crypto_info(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Vec<u8>, RecordError> {
    let unsupported = || RecordError::Protocol { alert: alert::INTERNAL_ERROR, what: "AEAD without kernel TLS".into() };
    let (cipher, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (libc::TLS_CIPHER_AES_GCM_128, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (libc::TLS_CIPHER_AES_GCM_256, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (libc::TLS_CIPHER_CHACHA20_POLY1305, key, iv),
        _ => return Err(unsupported()),
    };
    encode(cipher, key.as_ref(), iv.as_ref(), seq)
}

/// [`crypto_info`] from raw parts (`iv` is the full 12-byte TLS 1.3 IV).
pub fn encode(cipher: u16, key: &[u8], iv: &[u8], seq: u64) -> Result<Vec<u8>, RecordError> {
    let bad = |what: &str| RecordError::Protocol { alert: alert::INTERNAL_ERROR, what: what.into() };
    let (key_len, salt_len) = match cipher {
        libc::TLS_CIPHER_AES_GCM_128 => (16, 4),
        libc::TLS_CIPHER_AES_GCM_256 => (32, 4),
        libc::TLS_CIPHER_CHACHA20_POLY1305 => (32, 0),
        _ => return Err(bad("cipher without kernel TLS")),
    };
    if key.len() != key_len || iv.len() != 12 {
        return Err(bad("traffic secret of the wrong length"));
    }
    let (salt, explicit) = iv.split_at(salt_len);
    let mut out = Vec::with_capacity(4 + explicit.len() + key_len + salt_len + 8);
    out.extend_from_slice(&libc::TLS_1_3_VERSION.to_ne_bytes());
    out.extend_from_slice(&cipher.to_ne_bytes());
    out.extend_from_slice(explicit);
    out.extend_from_slice(key);
    out.extend_from_slice(salt);
    out.extend_from_slice(&seq.to_be_bytes());
    Ok(out)
}

/// The record sequence number at the end of a `crypto_info` the kernel
/// returned (`getsockopt(SOL_TLS, TLS_TX)`).
pub fn seq_of(info: &[u8]) -> Option<u64> {
    let tail = info.len().checked_sub(8).and_then(|at| info.get(at..))?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

/// When our send key must change: the kernel counts the records it seals,
/// we keep an upper bound on that count from what we hand it (a write of
/// `n` bytes makes at most `ceil(n / 2^14)` records, plus one that an
/// earlier write left open) and ask the kernel for the exact count only
/// when the bound reaches the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxBudget {
    bound: u64,
    limit: u64,
}

impl TxBudget {
    /// A send key whose sequence starts at `seq`, to be replaced after
    /// `every` records.
    pub fn new(seq: u64, every: u64) -> Self {
        Self { bound: seq, limit: seq.saturating_add(every) }
    }

    /// After handing `n` bytes to the kernel: true when the exact count
    /// should be read (the bound reached the limit).
    pub fn sent(&mut self, n: usize) -> bool {
        let records = u64::try_from(n.div_ceil(MAX_PLAINTEXT)).unwrap_or(u64::MAX).saturating_add(1);
        self.bound = self.bound.saturating_add(records);
        self.bound >= self.limit
    }

    /// The exact count from the kernel: true when the key must change now.
    pub fn exact(&mut self, seq: u64) -> bool {
        self.bound = seq;
        seq >= self.limit
    }
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn setsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is valid for `len` bytes for the duration of the call; the kernel copies it.
    cvt(unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), len) })
}

/// Attaches the `tls` ULP to a connected TCP socket.
pub fn attach(fd: RawFd) -> io::Result<()> {
    setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls")
}

/// Installs keys for one direction ([`RX`] or [`TX`]); a second call on the
/// same direction is a key update.
pub fn set_keys(fd: RawFd, direction: libc::c_int, info: &mut [u8]) -> io::Result<()> {
    let r = setsockopt(fd, libc::SOL_TLS, direction, info);
    info.fill(0);
    r
}

/// The kernel's record sequence number for our sending direction;
/// `info_len` is the length of the `crypto_info` installed (the kernel
/// answers only a buffer of exactly that size).
pub fn tx_seq(fd: RawFd, info_len: usize) -> io::Result<u64> {
    let mut buf = [0u8; 64];
    let mut len = libc::socklen_t::try_from(info_len.min(buf.len())).unwrap_or(0);
    // SAFETY: `buf` is writable for `len` bytes and `len` is a valid socklen_t the kernel updates.
    cvt(unsafe { libc::getsockopt(fd, libc::SOL_TLS, TX, buf.as_mut_ptr().cast(), &mut len) })?;
    let got = buf.get(..usize::try_from(len).unwrap_or(0)).unwrap_or_default();
    let seq = seq_of(got).ok_or_else(|| io::Error::other("kernel TLS returned a short crypto_info"));
    buf.fill(0);
    seq
}

/// Room for one control message carrying the record type (a byte),
/// aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 32]);

/// Sends `data` as one record of type `typ` (alert, handshake).
pub fn send_record(fd: RawFd, typ: u8, data: &[u8]) -> io::Result<usize> {
    let mut cbuf = CmsgBuf([0; 32]);
    let mut iov = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
    // SAFETY: zeroed msghdr is a valid empty message; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(1) };
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` (<= 32) writable, aligned bytes, so the first header
    // fits; CMSG_DATA points inside it, one byte after the header.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_TLS;
        (*c).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = typ;
    }
    // SAFETY: `msg` and everything it points to are valid for the call; the kernel only reads.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Receives one record (at most `buf.len()` bytes of it): its type and
/// length. `(APPLICATION_DATA, 0)` at end of stream.
pub fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    let mut cbuf = CmsgBuf([0; 32]);
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: zeroed msghdr is a valid empty message; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len() as _;
    // SAFETY: `msg` points to writable buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("kernel TLS record type truncated"));
    }
    let mut typ = super::record::APPLICATION_DATA;
    // SAFETY: the kernel filled `msg_controllen` bytes of `cbuf`; the CMSG_* walk stays inside them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE {
                typ = *libc::CMSG_DATA(c);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((typ, n))
}

/// Room for the longest record plaintext the kernel may hand up.
pub const RECORD_ROOM: usize = MAX_PLAINTEXT + 256;

/// Whether kernel TLS can carry our connections here: `Ok` if the `tls`
/// ULP attaches and takes new keys on a live connection in both directions
/// (probed once, on a loopback connection), otherwise why not.
pub fn support() -> &'static Result<(), String> {
    static SUPPORT: OnceLock<Result<(), String>> = OnceLock::new();
    SUPPORT.get_or_init(probe)
}

fn probe() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("probe socket: {e}"))?;
    let addr = l.local_addr().map_err(|e| format!("probe socket: {e}"))?;
    let c = std::net::TcpStream::connect(addr).map_err(|e| format!("probe connection: {e}"))?;
    let (s, _) = l.accept().map_err(|e| format!("probe connection: {e}"))?;
    let key = |b: u8| encode(libc::TLS_CIPHER_AES_GCM_128, &[b; 16], &[b; 12], 0).map_err(|e| e.to_string());
    for (sock, direction, name) in [(&c, TX, "send"), (&s, RX, "receive")] {
        attach(sock.as_raw_fd()).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => "the kernel has no tls ULP (module tls not loaded or not built)".to_string(),
            _ => format!("attaching the tls ULP: {e}"),
        })?;
        set_keys(sock.as_raw_fd(), direction, &mut key(1)?).map_err(|e| format!("{name} keys: {e}"))?;
        set_keys(sock.as_raw_fd(), direction, &mut key(2)?)
            .map_err(|e| format!("{name} key update refused ({e}): TLS 1.3 key updates need Linux 6.14 or later"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn iv() -> [u8; 12] {
        std::array::from_fn(|i| 0xa0 + i as u8)
    }

    #[test]
    fn aes_256_gcm_layout_matches_the_kernel_struct() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let s = ConnectionTrafficSecrets::Aes256Gcm { key: AeadKey::from(key), iv: Iv::new(iv()) };
        let info = crypto_info(&s, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(info.len(), std::mem::size_of::<libc::tls12_crypto_info_aes_gcm_256>());
        assert_eq!(info[..2], 0x0304u16.to_ne_bytes());
        assert_eq!(info[2..4], 52u16.to_ne_bytes());
        assert_eq!(info[4..12], iv()[4..], "explicit IV part: the last 8 bytes");
        assert_eq!(info[12..44], key);
        assert_eq!(info[44..48], iv()[..4], "salt: the first 4 bytes");
        assert_eq!(info[48..], [1, 2, 3, 4, 5, 6, 7, 8], "sequence number, big-endian");
        assert_eq!(seq_of(&info), Some(0x0102_0304_0506_0708));
    }

    #[test]
    fn aes_128_and_chacha_have_their_kernel_sizes() {
        let a = encode(libc::TLS_CIPHER_AES_GCM_128, &[7; 16], &iv(), 9).unwrap();
        assert_eq!(a.len(), std::mem::size_of::<libc::tls12_crypto_info_aes_gcm_128>());
        assert_eq!((&a[4..12], &a[28..32]), (&iv()[4..], &iv()[..4]));
        let c = encode(libc::TLS_CIPHER_CHACHA20_POLY1305, &[7; 32], &iv(), 9).unwrap();
        assert_eq!(c.len(), std::mem::size_of::<libc::tls12_crypto_info_chacha20_poly1305>());
        assert_eq!(c[4..16], iv(), "ChaCha20: the whole IV, no salt");
        assert_eq!(seq_of(&c), Some(9));
    }

    #[test]
    fn wrong_lengths_and_ciphers_are_refused() {
        assert!(encode(libc::TLS_CIPHER_AES_GCM_128, &[0; 32], &iv(), 0).is_err());
        assert!(encode(libc::TLS_CIPHER_AES_GCM_256, &[0; 32], &[0; 8], 0).is_err());
        assert!(encode(libc::TLS_CIPHER_AES_CCM_128, &[0; 16], &iv(), 0).is_err());
        assert_eq!(seq_of(&[0; 7]), None);
    }

    #[test]
    fn the_budget_asks_for_the_exact_count_before_the_limit_and_only_then() {
        let mut b = TxBudget::new(10, 100);
        // 40 writes of one full record each: bound 10 + 40 * 2 = 90, below the limit.
        assert!((0..40).all(|_| !b.sent(MAX_PLAINTEXT)));
        assert!(!b.sent(5 * MAX_PLAINTEXT), "90 + 6 = 96");
        assert!(b.sent(13 * MAX_PLAINTEXT), "96 + 14 = 110: the limit");
        // The kernel's exact count is lower: keep going from there.
        assert!(!b.exact(60));
        assert!(!b.sent(1));
        assert!(b.exact(110), "the limit itself means: change the key");
        let mut z = TxBudget::new(0, 3);
        assert!(!z.sent(0));
        assert!(z.sent(1), "even empty writes are counted: at most one open record each");
    }

    #[test]
    fn the_probe_answers_and_explains() {
        // On a kernel with the tls module this is Ok; on one without, the reason names it.
        match support() {
            Ok(()) => {}
            Err(why) => assert!(why.contains("tls"), "{why}"),
        }
        assert!(std::ptr::eq(support(), support()), "probed once");
    }
}
