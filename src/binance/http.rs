//! The REST client's HTTP connections, wrapped so that the moment a request's bytes reach
//! the socket can be timed.
//!
//! tick-to-request ends when an order request is written, not when it is handed to the
//! HTTP client: hyper writes it later, from its connection task, and on one thread only
//! after the task that handed it over yields. A client that hides its connections (as
//! reqwest does) cannot be timed there, hence hyper-util's client with this connector.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use parking_lot::Mutex;

/// When a watched request's bytes were handed to a write that took them, if they were.
#[derive(Debug)]
pub struct WriteStamp {
    /// Bytes of the request line no other request has (the end of its signed query).
    key: Box<[u8]>,
    written: OnceLock<Instant>,
}

impl WriteStamp {
    pub fn written(&self) -> Option<Instant> {
        self.written.get().copied()
    }
}

/// The requests being watched, shared by every connection of one client. Connections are
/// picked by the pool, so a write is matched to its request by its bytes; a request that
/// ends unwritten (refused connection, timeout) drops its stamp and is skipped.
#[derive(Clone, Default)]
pub struct Writes {
    waiting: Arc<Mutex<Vec<Weak<WriteStamp>>>>,
}

impl Writes {
    /// Watches the request whose request line contains `key`; keep the returned stamp
    /// alive until the request has finished.
    pub fn watch(&self, key: &[u8]) -> Arc<WriteStamp> {
        let stamp = Arc::new(WriteStamp {
            key: key.into(),
            written: OnceLock::new(),
        });
        self.waiting.lock().push(Arc::downgrade(&stamp));
        stamp
    }

    fn on_write(&self, handed: Instant, written: &[u8]) {
        let mut waiting = self.waiting.lock();
        if waiting.is_empty() {
            return;
        }
        let mut matched = false;
        waiting.retain(|w| {
            let Some(stamp) = w.upgrade() else {
                return false;
            };
            if !matched && memchr::memmem::find(written, &stamp.key).is_some() {
                matched = true;
                let _ = stamp.written.set(handed);
                return false;
            }
            true
        });
    }
}

/// Wraps a connector (TLS included) so that its connections report their writes.
#[derive(Clone)]
pub struct Stamping<C> {
    inner: C,
    writes: Writes,
}

impl<C> Stamping<C> {
    pub fn new(inner: C, writes: Writes) -> Self {
        Self { inner, writes }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for Stamping<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = StampedIo<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let writes = self.writes.clone();
        Box::pin(async move {
            let io = connecting.await.map_err(Into::into)?;
            Ok(StampedIo { io, writes })
        })
    }
}

/// A connection above TLS: tokio-rustls encrypts and writes to the socket inside the same
/// `poll_write`. A write is stamped when the finished request is handed to it, kept only
/// if the write took the bytes: the symmetric end of tick-to-request, which starts once
/// the frame's read has returned. The write syscall itself is left out as the read is;
/// on loopback (`mmd bench`) it also runs the receiving side's TCP processing and
/// wake-up, tens of microseconds that a network would not charge to the sender.
pub struct StampedIo<T> {
    io: T,
    writes: Writes,
}

impl<T: Read + Unpin> Read for StampedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for StampedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let handed = Instant::now();
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.writes.on_write(handed, &buf[..n]);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let handed = Instant::now();
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            // hyper puts the whole head (request line included) in the first buffer.
            if let Some(head) = bufs.iter().find(|b| !b.is_empty()) {
                self.writes.on_write(handed, &head[..n.min(head.len())]);
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for StampedIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_stamps_the_request_it_carries_and_no_other() {
        let writes = Writes::default();
        let a = writes.watch(b"signature=aaaa");
        let b = writes.watch(b"signature=bbbb");
        writes.on_write(
            Instant::now(),
            b"DELETE /api/v3/order?x=1&signature=bbbb HTTP/1.1\r\n",
        );
        assert!(a.written().is_none());
        assert!(b.written().is_some());
        drop(a);
        writes.on_write(Instant::now(), b"GET /api/v3/time HTTP/1.1\r\n");
        assert!(
            writes.waiting.lock().is_empty(),
            "dropped stamps are forgotten"
        );
    }
}
