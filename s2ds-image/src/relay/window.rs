//! A byte queue over one contiguous buffer: bytes are appended at the end
//! and consumed from the front; the unread bytes are moved back to the
//! start only when the free tail gets short, so a queue that is drained as
//! fast as it fills never copies.

/// Unread bytes are `buf[start..end]`.
#[derive(Debug)]
pub struct Window {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Window {
    /// A queue of `capacity` bytes (it grows only through [`Window::push`]).
    pub fn new(capacity: usize) -> Self {
        Self { buf: vec![0; capacity], start: 0, end: 0 }
    }

    /// Unread bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Unread bytes, mutable (TLS records are decrypted in place).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Number of unread bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when nothing is unread.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes that can still be appended without growing.
    pub fn free(&self) -> usize {
        self.buf.len() - self.len()
    }

    /// Drops `n` bytes from the front (all of them when `n` exceeds the length).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Room to append into (commit what was written with [`Window::commit`]).
    /// Moves the unread bytes to the front first when that at least doubles
    /// the room.
    pub fn space_mut(&mut self) -> &mut [u8] {
        let tail = self.buf.len() - self.end;
        if self.start > 0 && 2 * tail <= self.free() {
            self.compact();
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`Window::space_mut`] as written.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Makes [`Window::space_mut`] at least `n` bytes long, moving the
    /// unread bytes to the front and then growing the buffer if needed.
    pub fn reserve(&mut self, n: usize) {
        if self.buf.len() - self.end < n {
            self.compact();
            if self.buf.len() - self.end < n {
                self.buf.resize(self.end + n, 0);
            }
        }
    }

    /// Appends `bytes`, growing the buffer if they do not fit.
    pub fn push(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        (self.start, self.end) = (0, self.end - self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_consumes_and_resets_when_drained() {
        let mut w = Window::new(8);
        w.space_mut()[..5].copy_from_slice(b"hello");
        w.commit(5);
        assert_eq!(w.data(), b"hello");
        w.consume(2);
        assert_eq!((w.data(), w.free()), (&b"llo"[..], 5));
        w.consume(10);
        assert!(w.is_empty());
        assert_eq!(w.space_mut().len(), 8, "a drained queue starts over at the front");
    }

    #[test]
    fn compacts_only_when_the_tail_is_short() {
        let mut w = Window::new(8);
        w.push(b"abcdefg");
        w.consume(1);
        // Tail 1 byte, free 2: moving "bcdefg" to the front doubles the room.
        assert_eq!(w.space_mut().len(), 2);
        assert_eq!(w.data(), b"bcdefg");
        let mut w = Window::new(8);
        w.push(b"ab");
        w.consume(1);
        // Tail 6 of 7 free: no copy.
        assert_eq!(w.space_mut().len(), 6);
    }

    #[test]
    fn push_grows_past_the_capacity_keeping_order() {
        let mut w = Window::new(4);
        w.push(b"abc");
        w.consume(1);
        w.push(b"defgh");
        assert_eq!(w.data(), b"bcdefgh");
    }

    #[test]
    fn commit_never_passes_the_end() {
        let mut w = Window::new(4);
        let _ = w.space_mut();
        w.commit(9);
        assert_eq!(w.len(), 4);
    }
}
