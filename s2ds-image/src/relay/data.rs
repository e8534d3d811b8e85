//! The data phase of a TLS connection: the queues around our record layer.
//!
//! - Ciphertext arrives in `rx`. Complete records are opened in place; the
//!   plaintext of each stays where it is and leaves from there in gathered
//!   writes (`pending` lists the ranges). Bytes of `rx` are released once
//!   everything before them has been written.
//! - Plaintext from the plain side is read in one scattered read straight
//!   into record slots at the end of `tx`, sealed there and written out.
//!
//! Bounded memory: each queue has its nominal size (a KeyUpdate or an alert
//! may add one small record). No I/O here: the caller passes the read or
//! write as a closure.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};

use super::record::{
    CONTROL_ROOM, HEADER, Kernel, MAX_PLAINTEXT, Opened, RecordError, RecordLayer, SLOT, alert, record_len,
    slots_capacity,
};
use super::window::Window;

/// Most buffers in one gathered write or scattered read.
pub const MAX_IOV: usize = 64;

/// Queues and record layer of one connection after its handshake.
pub struct DataPhase<K> {
    rec: RecordLayer<K>,
    /// Received ciphertext; its first `opened` bytes are opened records.
    pub rx: Window,
    opened: usize,
    /// Plaintext not yet written: ranges of `rx`, relative to its front.
    pending: VecDeque<(usize, usize)>,
    pending_len: usize,
    /// Plaintext rustls decrypted with the end of the handshake; goes first.
    early: Window,
    /// Ciphertext to send.
    pub tx: Window,
    size: usize,
    /// close_notify received.
    pub peer_closed: bool,
    /// The plain side reached EOF.
    pub plain_eof: bool,
    /// close_notify queued in `tx`.
    pub close_sent: bool,
    /// Plaintext bytes opened / sealed so far.
    pub decrypted: u64,
    /// See `decrypted`.
    pub encrypted: u64,
}

impl<K: Kernel> DataPhase<K> {
    /// Takes over the queues of the handshake, made with `size` bytes each
    /// ([`super::tls::TlsState::new`] sets the floor): `rx` (records not
    /// processed yet), `tx` (empty) and `early` (plaintext already decrypted).
    pub fn new(rec: RecordLayer<K>, rx: Window, tx: Window, early: Window, size: usize) -> Self {
        let decrypted = early.len() as u64;
        Self {
            rec,
            rx,
            opened: 0,
            pending: VecDeque::new(),
            pending_len: 0,
            early,
            tx,
            size,
            peer_closed: false,
            plain_eof: false,
            close_sent: false,
            decrypted,
            encrypted: 0,
        }
    }

    /// The record layer (tests adjust its key-update limit).
    pub fn records_mut(&mut self) -> &mut RecordLayer<K> {
        &mut self.rec
    }

    /// True when reading more ciphertext may make progress.
    pub fn wants_ciphertext(&self) -> bool {
        !self.peer_closed && self.pending_len < self.size && self.rx.free() > 0
    }

    /// Opens every complete record in `rx`; returns the plaintext bytes
    /// that became ready to write.
    pub fn open_records(&mut self) -> Result<usize, RecordError> {
        let mut ready = 0;
        while !self.peer_closed {
            let data = self.rx.data_mut();
            let Some(len) = record_len(&data[self.opened..])? else {
                break;
            };
            let Some(record) = data.get_mut(self.opened..self.opened + len) else {
                break;
            };
            match self.rec.open(record)? {
                Opened::Data(n) if n > 0 => {
                    let start = self.opened + HEADER;
                    self.pending.push_back((start, start + n));
                    self.pending_len += n;
                    ready += n;
                }
                Opened::Closed => self.peer_closed = true,
                Opened::Data(_) | Opened::Control => {}
            }
            self.opened += len;
        }
        // After close_notify, anything else the peer sent is ignored (it is
        // never opened, and no more is read).
        self.decrypted += ready as u64;
        self.release();
        Ok(ready)
    }

    /// True when decrypted plaintext waits to be written.
    pub fn has_plaintext(&self) -> bool {
        !self.early.is_empty() || self.pending_len > 0
    }

    /// Offers the waiting plaintext to `write` (a gathered write); returns
    /// what it took.
    pub fn write_plaintext(&mut self, write: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>) -> io::Result<usize> {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut k = 0;
        if !self.early.is_empty() {
            iov[0] = IoSlice::new(self.early.data());
            k = 1;
        }
        let data = self.rx.data();
        for &(s, e) in self.pending.iter().take(MAX_IOV - k) {
            iov[k] = IoSlice::new(&data[s..e]);
            k += 1;
        }
        let mut n = write(&iov[..k])?;
        let written = n;
        let from_early = n.min(self.early.len());
        self.early.consume(from_early);
        n -= from_early;
        while n > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let take = n.min(front.1 - front.0);
            front.0 += take;
            n -= take;
            self.pending_len -= take;
            if front.0 == front.1 {
                self.pending.pop_front();
            }
        }
        self.release();
        Ok(written)
    }

    /// Drops from `rx` the records whose plaintext is all written.
    fn release(&mut self) {
        let done = self.pending.front().map_or(self.opened, |r| r.0);
        if done == 0 {
            return;
        }
        self.rx.consume(done);
        self.opened -= done;
        for r in &mut self.pending {
            *r = (r.0 - done, r.1 - done);
        }
    }

    /// True when reading plaintext may make progress.
    pub fn wants_plaintext(&self) -> bool {
        !self.plain_eof && self.tx.free() >= SLOT + CONTROL_ROOM
    }

    /// Reads at most `max` bytes of plaintext with `read` (a scattered read
    /// into record slots at the end of `tx`) and seals them there. A
    /// KeyUpdate that is due goes first. Returns what `read` returned
    /// (0 is EOF, which queues close_notify).
    pub fn read_plaintext(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut [IoSliceMut<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.rec.key_update_due() {
            self.tx.reserve(CONTROL_ROOM);
            let n = self.rec.seal_key_update(self.tx.space_mut())?;
            self.tx.commit(n);
        }
        let space = self.tx.space_mut();
        let room = space.len().saturating_sub(CONTROL_ROOM);
        let mut want = slots_capacity(room).min(max).min(MAX_IOV * MAX_PLAINTEXT);
        if want == 0 {
            return Err(io::Error::other("TLS relay: no room for plaintext (internal error)"));
        }
        let mut iov: [IoSliceMut<'_>; MAX_IOV] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
        let mut k = 0;
        for slot in space[..room].chunks_mut(SLOT) {
            if want == 0 {
                break;
            }
            let take = want.min(MAX_PLAINTEXT);
            iov[k] = IoSliceMut::new(&mut slot[HEADER..HEADER + take]);
            (k, want) = (k + 1, want - take);
        }
        let n = read(&mut iov[..k])?;
        let sealed = self.rec.seal_slots(space, n)?;
        self.tx.commit(sealed);
        if n == 0 {
            self.plain_eof = true;
            self.queue_close_notify()?;
        }
        self.encrypted += n as u64;
        Ok(n)
    }

    fn queue_close_notify(&mut self) -> Result<(), RecordError> {
        self.tx.reserve(CONTROL_ROOM);
        let n = self.rec.seal_alert(self.tx.space_mut(), alert::CLOSE_NOTIFY)?;
        self.tx.commit(n);
        self.close_sent = true;
        Ok(())
    }

    /// Queues the alert that tells the peer why the connection ends (best
    /// effort: nothing is queued if sealing fails).
    pub fn queue_alert(&mut self, e: &RecordError) {
        if let Some(a) = e.alert() {
            self.tx.reserve(CONTROL_ROOM);
            if let Ok(n) = self.rec.seal_alert(self.tx.space_mut(), a) {
                self.tx.commit(n);
            }
        }
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
