//! A slow or silent client must not hold a connection by sending nothing, or by trickling
//! its request head.
//!
//! hyper's `header_read_timeout` also runs while a keep-alive connection is idle between
//! requests, so it is set to the (long) idle timeout; this wrapper adds the short deadline.
//! The first one runs from accept (a connection that sends nothing is closed after
//! `header_read_timeout`); later ones run from the first byte of each new request head. Each
//! stops at the blank line that ends the head. Once the connection becomes a tunnel
//! (`CONNECT`), its switch is turned off: the bytes that follow are not HTTP heads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct HeadDeadline<T> {
    inner: T,
    limit: Duration,
    /// Some while a request head is being read.
    timer: Option<Pin<Box<Sleep>>>,
    /// Last bytes seen, to find `\r\n\r\n` across reads.
    tail: [u8; 3],
    in_head: bool,
    /// False after a head completed, until the response starts: the request body that
    /// follows is not a head.
    armed: bool,
    /// Turned off when the connection becomes a tunnel.
    on: Arc<AtomicBool>,
}

impl<T> HeadDeadline<T> {
    /// Wraps a connection accepted at `accepted`: the first head is due `limit` after it.
    pub fn new(inner: T, limit: Duration, on: Arc<AtomicBool>, accepted: Instant) -> Self {
        Self {
            inner,
            limit,
            timer: Some(Box::pin(tokio::time::sleep_until(accepted + limit))),
            tail: [0; 3],
            in_head: true,
            armed: true,
            on,
        }
    }

    fn scan(&mut self, data: &[u8]) {
        for &b in data {
            if !self.in_head {
                if !self.armed {
                    return;
                }
                if b == b'\r' || b == b'\n' {
                    continue;
                }
                self.in_head = true;
                self.timer = Some(Box::pin(tokio::time::sleep_until(
                    Instant::now() + self.limit,
                )));
                self.tail = [0; 3];
            }
            if self.tail == [b'\r', b'\n', b'\r'] && b == b'\n' {
                // The head is complete; the body (if any) is not under this deadline.
                self.in_head = false;
                self.armed = false;
                self.timer = None;
                self.tail = [0; 3];
                continue;
            }
            self.tail = [self.tail[1], self.tail[2], b];
        }
    }
}

impl<T> HeadDeadline<T> {
    /// A final (non-1xx) response head is being written: the next bytes read start a
    /// new request head.
    fn rearm(&mut self, out: &[u8]) {
        if !self.armed && out.len() > 9 && out.starts_with(b"HTTP/1.") && out[9] != b'1' {
            self.armed = true;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timer.is_some() && !this.on.load(Ordering::Relaxed) {
            this.timer = None;
            this.in_head = false;
            this.armed = false;
        }
        if let Some(t) = this.timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received in time",
                )));
            }
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            if !this.on.load(Ordering::Relaxed) {
                this.armed = false;
                return res;
            }
            this.scan(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.rearm(buf);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.rearm(first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Closes a connection on which nothing has been read or written for `idle`: h2
/// connections and tunnels, which have no request heads to time.
pub struct IdleTimeout<T> {
    inner: T,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = this.last + this.idle;
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
