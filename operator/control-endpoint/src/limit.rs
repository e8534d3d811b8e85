//! The message size limit, answered with `RESOURCE_EXHAUSTED` as the protocol asks (tonic's
//! own `max_decoding_message_size` answers `OUT_OF_RANGE`).
//!
//! [`MessageLimit`] wraps the tonic service and its request body in [`LimitedBody`], which
//! reads each gRPC frame header (1 flag byte, 4 bytes of big-endian length) as the bytes
//! stream in and fails the body with a [`tonic::Status`] as soon as a header declares a
//! message over the limit, before the message is buffered. tonic passes a `Status` found in a
//! body error through unchanged, so the client gets `RESOURCE_EXHAUSTED`. tonic's own limit
//! stays set to the same value as a backstop (it would see the header only after us).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tonic::{codegen::Service, server::NamedService};

/// Boxed error of a [`LimitedBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Length of a gRPC frame header (compression flag and message length).
const HEADER: usize = 5;

/// Follows the gRPC framing of a byte stream, chunk by chunk (pure; fuzzed).
#[derive(Clone, Debug)]
pub struct FrameScanner {
    limit: usize,
    header: [u8; HEADER],
    have: usize,
    skip: u64,
}

impl FrameScanner {
    /// A scanner refusing messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit, header: [0; HEADER], have: 0, skip: 0 }
    }

    /// Feeds the next chunk of the body; `Err(length)` when a frame header in it declares a
    /// message longer than the limit.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), u64> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(data.len(), |s| s.min(data.len()));
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (HEADER - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == HEADER {
                self.have = 0;
                let len =
                    u64::from(u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]));
                if len > self.limit as u64 {
                    return Err(len);
                }
                self.skip = len;
            }
        }
        Ok(())
    }
}

/// The status a too-long message gets.
pub fn too_long(length: u64, limit: usize) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "the message is {length} bytes, over this endpoint's limit of {limit} bytes; send fewer or shorter \
         listeners"
    ))
}

/// A request body that enforces the limit on every frame (see the module docs).
pub struct LimitedBody<B> {
    inner: B,
    scanner: FrameScanner,
    failed: bool,
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref()
            && let Err(length) = self.scanner.feed(data)
        {
            self.failed = true;
            let status = too_long(length, self.scanner.limit);
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A tonic service whose requests are limited to `limit` bytes per message.
#[derive(Clone, Debug)]
pub struct MessageLimit<S> {
    inner: S,
    limit: usize,
}

impl<S> MessageLimit<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }
}

impl<S: NamedService> NamedService for MessageLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for MessageLimit<S>
where
    S: Service<http::Request<LimitedBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limit = self.limit;
        self.inner.call(request.map(|inner| LimitedBody { inner, scanner: FrameScanner::new(limit), failed: false }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut f = vec![0];
        f.extend(len.to_be_bytes());
        f.extend(std::iter::repeat_n(b'x', len as usize));
        f
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_chunking() {
        let body: Vec<u8> = [frame(10), frame(0), frame(100)].concat();
        for chunk in [1, 2, 3, 5, 7, 64, body.len()] {
            let mut s = FrameScanner::new(100);
            for c in body.chunks(chunk) {
                assert_eq!(s.feed(c), Ok(()), "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn a_longer_message_is_refused_at_its_header() {
        for chunk in [1, 2, 4, 5, 6, 50] {
            let mut s = FrameScanner::new(100);
            let header = &frame(101)[..HEADER];
            let body: Vec<u8> = [frame(20), header.to_vec()].concat();
            let results: Vec<_> = body.chunks(chunk).map(|c| s.feed(c)).collect();
            assert_eq!(results.last(), Some(&Err(101)), "chunks of {chunk}: {results:?}");
            assert!(results[..results.len() - 1].iter().all(Result::is_ok), "chunks of {chunk}");
        }
        assert_eq!(FrameScanner::new(0).feed(&[0, 0xff, 0xff, 0xff, 0xff]), Err(u64::from(u32::MAX)));
    }

    #[test]
    fn the_status_is_resource_exhausted() {
        let s = too_long(70_000, 65_536);
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().contains("70000") && s.message().contains("65536"), "{}", s.message());
    }
}
