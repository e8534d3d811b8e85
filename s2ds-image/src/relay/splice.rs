//! Zero-copy TCP-to-TCP relay with `splice(2)` through a sized pipe.
//!
//! Per direction: take rate tokens, splice at most that many bytes from the
//! source socket into an empty pipe, then splice the pipe out to the
//! destination socket until it is empty again. The pipe is the only buffer
//! (its size is set with `F_SETPIPE_SZ`), so memory stays bounded and the
//! payload never enters userspace. On EOF the destination's write half is
//! shut down. If the kernel refuses splice for these descriptors (`EINVAL`,
//! `ENOSYS`) before any byte moved, or a pipe cannot be created, the
//! direction falls back to [`super::copy::one_way_tcp`].
//!
//! The module has `unsafe`: three libc calls on file descriptors we own or
//! borrow for the duration of the call.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{DirectionCounters, RelayOptions, copy};
use crate::ratelimit::RateLimiter;

/// A non-blocking, close-on-exec pipe.
#[derive(Debug)]
pub struct Pipe {
    pub(super) read: OwnedFd,
    pub(super) write: OwnedFd,
    size: usize,
}

impl Pipe {
    /// Creates a pipe and asks for `size` bytes of capacity; if the kernel
    /// refuses (above `/proc/sys/fs/pipe-max-size` for an unprivileged
    /// user), the default capacity is kept and reported by [`Pipe::size`].
    pub fn new(size: usize) -> io::Result<Self> {
        let mut fds: [RawFd; 2] = [-1, -1];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int argument.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        let size = if got > 0 {
            usize::try_from(got).unwrap_or(size)
        } else {
            warn_once_pipe_size(size);
            // SAFETY: as above; F_GETPIPE_SZ takes no argument.
            let cur = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            usize::try_from(cur).ok().filter(|c| *c > 0).unwrap_or(64 * 1024)
        };
        Ok(Self { read, write, size })
    }

    /// The pipe's capacity in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

fn warn_once_pipe_size(size: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(size, "F_SETPIPE_SZ refused; using the default pipe size (raise fs.pipe-max-size)");
    }
}

/// One non-blocking splice of at most `len` bytes.
pub(super) fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed
    // from a live TcpStream or Pipe); null offsets are allowed for pipes and
    // sockets; splice does not touch our memory.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP))
}

/// What a spliced direction does besides moving bytes: nothing for plain
/// TCP (`()`); for kernel TLS ([`super::ktls_io`]) the control records, key
/// updates and close_notify around the spliced data.
pub(super) trait Hooks: Send {
    /// True for plain TCP: a direction that cannot splice falls back to a copy.
    const FALLBACK: bool;
    /// A control step must run before the source is read again.
    fn control_pending(&self) -> bool {
        false
    }
    /// A read splice failed with `e`: handled (a control step is now
    /// pending), or the direction's error.
    fn read_failed(&mut self, e: io::Error) -> io::Result<()> {
        Err(e)
    }
    /// Runs the pending control step (the pipe is empty: what it held came
    /// first); true when the source's stream is complete.
    fn control(&mut self, _src: &TcpStream, _dst: &TcpStream) -> impl Future<Output = io::Result<bool>> + Send {
        async { Ok(false) }
    }
    /// The source reached end of stream: fine, or an error (a truncation).
    fn eof(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Before bytes go to the destination.
    fn before_write(&mut self, _dst: &TcpStream) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }
    /// `n` bytes went to the destination.
    fn wrote(&mut self, _dst: &TcpStream, _n: usize) -> io::Result<()> {
        Ok(())
    }
    /// Everything is out; before the destination's write half is shut down.
    fn finish(&mut self, _dst: &TcpStream) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }
}

impl Hooks for () {
    const FALLBACK: bool = true;
}

/// Outcome of one spliced direction.
pub(super) enum Outcome {
    Done(u64),
    /// Splice is not possible here; nothing was moved yet.
    Unsupported,
}

/// Relays between two TCP sockets with splice in both directions (each
/// falling back to a userspace copy independently). Returns bytes a->b and
/// b->a.
pub async fn bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    opts: &RelayOptions,
    counters: &DirectionCounters,
) -> io::Result<(u64, u64)> {
    tokio::try_join!(one_way(a, b, opts, &counters.to_target), one_way(b, a, opts, &counters.to_client),)
}

async fn one_way(src: &TcpStream, dst: &TcpStream, opts: &RelayOptions, counter: &Counter) -> io::Result<u64> {
    match Pipe::new(opts.buffer_bytes) {
        Ok(pipe) => match spliced(src, dst, &pipe, &opts.limiter, counter, &mut ()).await? {
            Outcome::Done(n) => return Ok(n),
            Outcome::Unsupported => fallback_note("splice refused by the kernel"),
        },
        Err(e) => fallback_note(&format!("cannot create a pipe: {e}")),
    }
    copy::one_way_tcp(src, dst, opts.buffer_bytes, &opts.limiter, counter).await
}

fn fallback_note(why: &str) {
    static NOTED: AtomicBool = AtomicBool::new(false);
    if !NOTED.swap(true, Ordering::Relaxed) {
        tracing::warn!(why, "falling back to a userspace copy for plain relaying");
    }
}

/// One direction: `src` through `pipe` to `dst`, with `hooks` around it.
pub(super) async fn spliced<H: Hooks>(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    limiter: &RateLimiter,
    counter: &Counter,
    hooks: &mut H,
) -> io::Result<Outcome> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pipe_r, pipe_w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let cap = pipe.size;
    // Bytes in the pipe; rate tokens granted but not yet used; bytes out.
    let (mut in_pipe, mut held, mut total) = (0usize, 0usize, 0u64);
    let mut eof = false;
    // Filling and draining overlap: while the destination is full the
    // pipe keeps absorbing the source, and the reverse.
    loop {
        let mut progress = false;
        // Set when a read splice answered EAGAIN while the pipe held data: the pipe (a fixed
        // number of page buffers, which fragmented input fills before `cap` bytes) may be what
        // is full, so the socket's readiness must not be cleared; drain first, then retry.
        let mut pipe_maybe_full = false;
        if !eof && hooks.control_pending() {
            if in_pipe == 0 {
                eof = hooks.control(src, dst).await?;
                progress = true;
            }
        } else if !eof && in_pipe < cap {
            if held == 0 {
                held = limiter.try_take(cap - in_pipe);
            }
            if held > 0 {
                let want = held.min(cap - in_pipe);
                let read = if in_pipe == 0 {
                    // An empty pipe cannot be the reason for EAGAIN: it is the socket's, and
                    // try_io clears its readiness so that `readable()` waits for new data.
                    src.try_io(Interest::READABLE, || splice(src_fd, pipe_w, want))
                } else {
                    splice(src_fd, pipe_w, want)
                };
                match read {
                    Ok(0) => {
                        hooks.eof()?;
                        (eof, progress) = (true, true);
                    }
                    Ok(n) => (held, in_pipe, progress) = (held - n, in_pipe + n, true),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => pipe_maybe_full = in_pipe > 0,
                    Err(e) if H::FALLBACK && total == 0 && in_pipe == 0 && unsupported(&e) => {
                        limiter.give_back(held);
                        return Ok(Outcome::Unsupported);
                    }
                    Err(e) => {
                        hooks.read_failed(e)?;
                        progress = true;
                    }
                }
            }
        }
        if in_pipe > 0 {
            hooks.before_write(dst).await?;
            match dst.try_io(Interest::WRITABLE, || splice(pipe_r, dst_fd, in_pipe)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => {
                    (in_pipe, total, progress) = (in_pipe - m, total + m as u64, true);
                    counter.inc_by(m as u64);
                    hooks.wrote(dst, m)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if eof && in_pipe == 0 {
            limiter.give_back(held);
            hooks.finish(dst).await?;
            socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write)?;
            return Ok(Outcome::Done(total));
        }
        if progress {
            continue;
        }
        // Reading waits for the socket unless the pipe may be what blocked it; then only the
        // destination can make room (and the pipe holds data, so that branch is enabled).
        let want_read = !eof && in_pipe < cap && !pipe_maybe_full && !hooks.control_pending();
        tokio::select! {
            r = src.readable(), if want_read && held > 0 => r?,
            r = dst.writable(), if in_pipe > 0 => r?,
            n = limiter.take(cap - in_pipe), if want_read && held == 0 => held = n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tcp_pair as pair;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn pipe_size_is_applied() {
        let p = Pipe::new(256 * 1024).unwrap();
        assert!(p.size() >= 64 * 1024);
    }

    #[tokio::test]
    async fn splices_and_half_closes() {
        let (mut client, a) = pair().await;
        let (b, mut target) = pair().await;
        let opts =
            RelayOptions { buffer_bytes: 64 * 1024, limiter: Arc::new(RateLimiter::new(None, Default::default())) };
        let counters = DirectionCounters { to_target: Counter::default(), to_client: Counter::default() };
        let c2 = counters.clone();
        let relay = tokio::spawn(async move { bidirectional(&a, &b, &opts, &c2).await });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let d2 = data.clone();
        let w = tokio::spawn(async move {
            client.write_all(&d2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        target.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
        target.write_all(b"late reply").await.unwrap();
        drop(target);
        assert_eq!(w.await.unwrap(), b"late reply");
        assert_eq!(relay.await.unwrap().unwrap(), (3_000_000, 10));
        assert_eq!(counters.to_target.get(), 3_000_000);
    }

    /// Two chained splice relays carry many small segments. (The stall this guards against
    /// reproduced across network namespaces, not on loopback: the regression test that
    /// catches it is `kind-tests/nodeagent/tests/s2ds.rs::s2ds_carries_megabytes`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chained_relays_carry_megabytes_without_stalling() {
        let opts = Arc::new(RelayOptions {
            buffer_bytes: 64 * 1024,
            limiter: Arc::new(RateLimiter::new(None, Default::default())),
        });
        for round in 0..6 {
            let (mut client, a1) = pair().await;
            let (b1, a2) = pair().await;
            let (b2, mut target) = pair().await;
            let counters = DirectionCounters { to_target: Counter::default(), to_client: Counter::default() };
            let (o1, o2, c1, c2) = (opts.clone(), opts.clone(), counters.clone(), counters.clone());
            let r1 = tokio::spawn(async move { bidirectional(&a1, &b1, &o1, &c1).await });
            let r2 = tokio::spawn(async move { bidirectional(&a2, &b2, &o2, &c2).await });
            let len = 16 * 1024 * 1024;
            let writer = tokio::spawn(async move {
                // Small writes: many small segments, as through a real chain of relays.
                let chunk = vec![7u8; 1500];
                let mut sent = 0;
                while sent < len {
                    client.write_all(&chunk).await.unwrap();
                    sent += chunk.len();
                }
                client.shutdown().await.unwrap();
                sent
            });
            let got = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0usize;
                loop {
                    let n = target.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break total;
                    }
                    total += n;
                }
            })
            .await;
            let sent = writer.await.unwrap();
            assert_eq!(got.unwrap_or_else(|_| panic!("round {round}: the chain stalled")), sent);
            drop(target);
            let _ = (r1.await, r2.await);
        }
    }
}
