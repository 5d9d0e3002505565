//! A byte-level guard against `Content-Length` + `Transfer-Encoding` request smuggling.
//!
//! hyper resolves a request carrying both headers the RFC 9112 way (chunked wins, the length
//! is dropped, the connection closes afterwards), so by the time the proxy sees the request
//! the conflict is gone. Our contract is stricter — refuse such a request with 400 and never
//! forward it — so [`GuardedIo`] watches the raw HTTP/1 bytes as hyper reads them and raises a
//! per-connection flag when a header block names both. The proxy checks (and clears) the
//! flag before forwarding each HTTP/1 request; hyper parses a head only after its final
//! empty line has been read, so the flag is always raised before that request is handled.
//! Only what hyper's server reads is scanned: the balancer's own HTTP/1.1 server
//! ([`crate::downstream`]) parses the framing headers itself and hands every request with a
//! `Transfer-Encoding` to hyper, from the first byte of its head.
//!
//! The scanner is a tiny state machine over line starts: it keeps at most 24 bytes of a
//! header name, allocates nothing and never looks back; header values are skipped with a
//! SIMD search for the line's end. It cannot tell a body from a head,
//! so a body that itself contains a header block with both names flags the next request on
//! that connection: a false 400 for a client sending HTTP-looking bodies, never a missed
//! smuggling attempt. h2 connections (recognised by the preface) are not scanned.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const MAX_NAME: usize = 24;
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Finds header blocks that carry both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    name: [u8; MAX_NAME],
    name_len: usize,
    in_name: bool,
    line_empty: bool,
    saw_length: bool,
    saw_encoding: bool,
    started: bool,
    disabled: bool,
}

impl Default for HeadScanner {
    fn default() -> Self {
        Self {
            name: [0; MAX_NAME],
            name_len: 0,
            in_name: true,
            line_empty: true,
            saw_length: false,
            saw_encoding: false,
            started: false,
            disabled: false,
        }
    }
}

impl HeadScanner {
    /// Feeds bytes in stream order; true when a block with both headers just ended.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        if !self.started && !bytes.is_empty() {
            self.started = true;
            let n = bytes.len().min(H2_PREFACE_START.len());
            if bytes.get(..n) == H2_PREFACE_START.get(..n) && n == H2_PREFACE_START.len() {
                self.disabled = true;
            }
        }
        if self.disabled {
            return false;
        }
        let mut found = false;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if !self.in_name && b != b'\n' {
                // In a value (or past a name too long to matter), only the line's end counts
                // and the line is already known not to be empty: jump to it.
                match memchr::memchr(b'\n', bytes.get(i..).unwrap_or_default()) {
                    Some(n) => {
                        i += n;
                        continue;
                    }
                    None => break,
                }
            }
            i += 1;
            match b {
                b'\n' => {
                    if self.line_empty {
                        found |= self.saw_length && self.saw_encoding;
                        self.saw_length = false;
                        self.saw_encoding = false;
                    }
                    self.in_name = true;
                    self.name_len = 0;
                    self.line_empty = true;
                }
                b'\r' => {}
                _ => {
                    self.line_empty = false;
                    if !self.in_name {
                        continue;
                    }
                    if b == b':' {
                        let name = self.name.get(..self.name_len).unwrap_or_default();
                        if name == b"content-length" {
                            self.saw_length = true;
                        } else if name == b"transfer-encoding" {
                            self.saw_encoding = true;
                        }
                        self.in_name = false;
                    } else if self.name_len == 0 && !matches!(b, b'c' | b'C' | b't' | b'T') {
                        // Neither name of interest starts so: skip the rest of the line.
                        self.in_name = false;
                    } else if let Some(slot) = self.name.get_mut(self.name_len) {
                        *slot = b.to_ascii_lowercase();
                        self.name_len += 1;
                    } else {
                        self.in_name = false;
                    }
                }
            }
        }
        found
    }
}

/// An I/O wrapper that scans what is read and raises `flag` on an ambiguous head.
#[derive(Debug)]
pub struct GuardedIo<T> {
    inner: T,
    scanner: HeadScanner,
    flag: Arc<AtomicBool>,
}

impl<T> GuardedIo<T> {
    /// Wraps `inner`; `flag` is shared with the connection's request handler.
    pub fn new(inner: T, flag: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            scanner: HeadScanner::default(),
            flag,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && let Some(new) = buf.filled().get(before..)
            && this.scanner.feed(new)
        {
            this.flag.store(true, Ordering::Release);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_split(data: &[u8], at: usize) -> bool {
        let mut s = HeadScanner::default();
        let (a, b) = data.split_at(at);
        s.feed(a) | s.feed(b)
    }

    #[test]
    fn flags_both_headers_in_one_block_in_any_order_and_split() {
        let cl_te = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let te_cl = b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\ncontent-length: 3\r\n\r\n";
        for at in 0..cl_te.len() {
            assert!(scan_split(cl_te, at), "split at {at}");
        }
        for at in 0..te_cl.len() {
            assert!(scan_split(te_cl, at), "split at {at}");
        }
    }

    #[test]
    fn ignores_normal_requests_and_separate_blocks() {
        let mut s = HeadScanner::default();
        assert!(!s.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"));
        assert!(
            !s.feed(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
        );
        assert!(
            !s.feed(b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
        );
    }

    #[test]
    fn h2_connections_are_not_scanned() {
        let mut s = HeadScanner::default();
        assert!(!s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!s.feed(b"\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"));
    }
}
