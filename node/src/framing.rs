//! Watches the bytes of one HTTP/1.1 connection for a request framed two ways.
//!
//! A request with both `Content-Length` and `Transfer-Encoding` is the classic request-smuggling
//! shape: a proxy in front of the node may frame it by one header and the node by the other.
//! hyper reads such a request by its transfer coding, drops `Content-Length` before any handler
//! sees it, and closes the connection after the answer (RFC 9112 §6.3), so nothing smuggled after
//! the body is ever read as a request. The node goes further and refuses the request itself
//! (`400 malformed_request`): since the handler cannot see the dropped header, [`Watched`] reads
//! the same bytes hyper reads, follows the framing of every request on the connection
//! (`Content-Length` bodies, chunked bodies and their trailers), and records the ordinal of the
//! first request whose head carries both headers; the connection's service refuses that request.
//!
//! The watcher gives up (and never flags anything) on what hyper refuses by itself: a head or a
//! chunk line over its limit, a length that does not parse, a transfer coding other than
//! `chunked`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head watched (hyper's own limit is larger; a longer head is refused there).
const MAX_HEAD: usize = 64 << 10;
/// Largest chunk-size or trailer line watched.
const MAX_LINE: usize = 4 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head (into `line`/`head`).
    Head,
    /// Skipping a `Content-Length` body: bytes left.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data: bytes left, then its CRLF.
    ChunkData(u64),
    /// Reading the line ending after chunk data.
    ChunkEnd,
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// Not following any more (a request framed two ways was found, or something hyper refuses).
    Done,
}

/// The framing watcher of one connection: feed it every byte read, in order.
pub struct FramingWatch {
    state: State,
    /// The current line.
    line: Vec<u8>,
    /// Bytes of the current head so far.
    head_len: usize,
    /// Whether the current head has a `Content-Length`, and its value if it parses.
    content_length: Option<Option<u64>>,
    /// Whether the current head has a `Transfer-Encoding`, and whether it ends in `chunked`.
    transfer_encoding: Option<bool>,
    /// Whether a non-empty line of the current head was seen (leading empty lines are skipped).
    started: bool,
    /// Request heads completed so far.
    heads: u64,
    /// Ordinal (from 1) of the first request framed two ways; 0 if none.
    conflict: Arc<AtomicU64>,
}

impl FramingWatch {
    /// A watcher reporting into `conflict`.
    pub fn new(conflict: Arc<AtomicU64>) -> Self {
        FramingWatch {
            state: State::Head,
            line: Vec::new(),
            head_len: 0,
            content_length: None,
            transfer_encoding: None,
            started: false,
            heads: 0,
            conflict,
        }
    }

    /// Follows `bytes`, the next bytes of the connection.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Done => return,
                State::Body(left) | State::ChunkData(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::Head | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let (taken, line_done) = match bytes.iter().position(|&b| b == b'\n') {
                        Some(i) => (i + 1, true),
                        None => (bytes.len(), false),
                    };
                    self.line.extend_from_slice(&bytes[..taken]);
                    bytes = &bytes[taken..];
                    if self.state == State::Head {
                        self.head_len += taken;
                    }
                    let limit = if self.state == State::Head { MAX_HEAD } else { MAX_LINE };
                    if self.line.len() > limit || self.head_len > MAX_HEAD {
                        self.state = State::Done;
                        return;
                    }
                    if line_done {
                        let line = std::mem::take(&mut self.line);
                        self.on_line(trim_eol(&line));
                    }
                }
            }
        }
    }

    fn on_line(&mut self, line: &[u8]) {
        match self.state {
            State::Head if line.is_empty() && !self.started => self.head_len = 0,
            State::Head if line.is_empty() => self.end_of_head(),
            State::Head => {
                let first = !self.started;
                self.started = true;
                if !first {
                    self.header(line);
                }
            }
            State::ChunkSize => {
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                match std::str::from_utf8(size).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok()) {
                    Some(0) => self.state = State::Trailers,
                    Some(n) => self.state = State::ChunkData(n),
                    None => self.state = State::Done,
                }
            }
            State::ChunkEnd => self.state = if line.is_empty() { State::ChunkSize } else { State::Done },
            State::Trailers if line.is_empty() => self.next_head(),
            _ => {}
        }
    }

    fn header(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|&b| b == b':') else { return };
        let name = &line[..colon];
        let value = std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
        if name.eq_ignore_ascii_case(b"content-length") {
            self.content_length = Some(value.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let chunked =
                value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            self.transfer_encoding = Some(chunked);
        }
    }

    fn end_of_head(&mut self) {
        self.heads += 1;
        match (self.content_length, self.transfer_encoding) {
            (Some(_), Some(_)) => {
                let _ = self.conflict.compare_exchange(0, self.heads, Ordering::SeqCst, Ordering::SeqCst);
                // hyper closes the connection after this request: nothing after it matters.
                self.state = State::Done;
            }
            (None, Some(true)) => self.reset(State::ChunkSize),
            // hyper refuses these itself.
            (None, Some(false)) | (Some(None), None) => self.state = State::Done,
            (Some(Some(n)), None) if n > 0 => self.reset(State::Body(n)),
            _ => self.next_head(),
        }
    }

    fn next_head(&mut self) {
        self.reset(State::Head);
    }

    fn reset(&mut self, state: State) {
        self.state = state;
        self.head_len = 0;
        self.content_length = None;
        self.transfer_encoding = None;
        self.started = false;
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A connection whose incoming bytes pass through a [`FramingWatch`] on their way to hyper.
pub struct Watched<S> {
    inner: S,
    watch: FramingWatch,
}

impl<S> Watched<S> {
    /// Wraps `inner`, reporting into `conflict`.
    pub fn new(inner: S, conflict: Arc<AtomicU64>) -> Self {
        Watched { inner, watch: FramingWatch::new(conflict) }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            this.watch.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conflict ordinal after feeding `stream` in pieces of `step` bytes.
    fn conflict(stream: &[u8], step: usize) -> u64 {
        let flag = Arc::new(AtomicU64::new(0));
        let mut w = FramingWatch::new(flag.clone());
        for piece in stream.chunks(step) {
            w.feed(piece);
        }
        flag.load(Ordering::SeqCst)
    }

    fn every_split(stream: &[u8]) -> Vec<u64> {
        let mut seen: Vec<u64> =
            [1, 2, 3, 7, 64, stream.len()].iter().map(|&s| conflict(stream, s)).collect();
        seen.dedup();
        seen
    }

    #[test]
    fn both_headers_in_either_order_are_flagged_on_their_request() {
        let cl_te = b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let te_cl = b"POST /v1/apps HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n0\r\n\r\n";
        assert_eq!(every_split(cl_te), [1]);
        assert_eq!(every_split(te_cl), [1]);
        // Bare LF line endings, as hyper also accepts.
        assert_eq!(
            every_split(b"POST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n0\n\n"),
            [1]
        );
    }

    #[test]
    fn earlier_requests_on_the_connection_are_followed_through_their_bodies() {
        // A GET, a POST with a Content-Length body that looks like a smuggling head, a chunked
        // POST whose data and trailer look like one too, then the real conflict: request 4.
        let mut s = b"\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let fake = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        s.extend_from_slice(
            format!("POST /v1/apps HTTP/1.1\r\nContent-Length: {}\r\n\r\n", fake.len()).as_bytes(),
        );
        s.extend_from_slice(fake);
        s.extend_from_slice(b"POST /v1/apps HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        s.extend_from_slice(format!("{:x};ext=1\r\n", fake.len()).as_bytes());
        s.extend_from_slice(fake);
        s.extend_from_slice(b"\r\n0\r\nX-Trailer: Content-Length: 5\r\n\r\n");
        assert_eq!(every_split(&s), [0], "no conflict yet");
        s.extend_from_slice(
            b"POST /v1/keys HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(every_split(&s), [4]);
    }

    #[test]
    fn what_hyper_refuses_itself_stops_the_watch() {
        // A non-chunked coding, an unparseable length alone, an oversized head: the watch stops,
        // so a later request is never flagged.
        assert_eq!(conflict(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 5), 0);
        // An unparseable length beside a transfer coding is still framed two ways.
        assert_eq!(
            conflict(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n", 5),
            1
        );
        assert_eq!(conflict(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 9), 0);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        big.extend_from_slice(b"\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(conflict(&big, 4096), 0);
    }

    proptest::proptest! {
        /// Any bytes, in any pieces: no panic, and the verdict does not depend on how the bytes
        /// were split (as they arrive is up to the network).
        #[test]
        fn any_bytes_in_any_pieces(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            step in 1usize..50,
        ) {
            let mut stream = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec();
            stream.extend_from_slice(&bytes);
            proptest::prop_assert_eq!(conflict(&stream, step), conflict(&stream, stream.len()));
        }
    }
}
