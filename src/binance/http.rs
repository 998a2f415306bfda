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

/// The order path's own HTTP/1.1 connections, driven by the request's task.
///
/// With hyper-util's pooled client a request is handed to the connection's task, which
/// writes it only once every task queued before it has run (on one thread: the other
/// requests of the same market frame, each signed and built first). Here the task that
/// sends a request polls its connection itself, so the bytes are written in the same
/// poll that built them. Each connection carries one request at a time and goes back to
/// the idle list once its response has been read (keep-alive); an idle connection the
/// server has closed is noticed when it is next taken, and a request that a reused
/// connection closed before writing is sent once more on a new connection (as
/// hyper-util's client retries it).
pub struct DirectPool<C>
where
    C: tower_service::Service<Uri>,
    C::Response: Read + Write + Unpin,
{
    connector: Stamping<C>,
    /// The scheme and authority connections are opened to.
    target: Uri,
    idle: Mutex<Vec<Idle<StampedIo<C::Response>>>>,
    idle_timeout: std::time::Duration,
}

type DirectBody = http_body_util::Empty<bytes::Bytes>;

struct Idle<T: Read + Write + Unpin> {
    send: hyper::client::conn::http1::SendRequest<DirectBody>,
    conn: hyper::client::conn::http1::Connection<T, DirectBody>,
    since: Instant,
}

impl<T: Read + Write + Unpin> Idle<T> {
    fn expired(&self, idle_timeout: std::time::Duration) -> bool {
        self.since.elapsed() >= idle_timeout
    }
}

/// How a direct exchange on one connection failed.
enum Failed {
    // Boxed: only failures pay for the returned request.
    Send(Box<hyper::client::conn::TrySendError<http::Request<DirectBody>>>),
    Body(hyper::Error),
}

/// Why a direct exchange failed.
#[derive(Debug)]
pub enum DirectError {
    /// No connection could be opened (the request was not sent).
    Connect(BoxError),
    /// The request or its response failed on an open connection.
    Http(hyper::Error),
}

impl<C> DirectPool<C>
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    pub fn new(connector: Stamping<C>, target: Uri, idle_timeout: std::time::Duration) -> Self {
        Self {
            connector,
            target,
            idle: Mutex::new(Vec::new()),
            idle_timeout,
        }
    }

    /// Sends `req` (origin-form URI, with its Host header) and reads the whole response.
    pub async fn exchange(
        &self,
        mut req: http::Request<DirectBody>,
    ) -> Result<(http::response::Parts, bytes::Bytes), DirectError> {
        loop {
            let (mut c, reused) = match self.take_idle().await {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            let mut closed = false;
            let sent = c.send.try_send_request(req);
            let outcome = drive(&mut c.conn, &mut closed, async {
                let resp = sent.await.map_err(|e| Failed::Send(Box::new(e)))?;
                let (parts, body) = resp.into_parts();
                use http_body_util::BodyExt as _;
                match body.collect().await {
                    Ok(b) => Ok((parts, b.to_bytes())),
                    Err(e) => Err(Failed::Body(e)),
                }
            })
            .await;
            match outcome {
                Ok(done) => {
                    self.put_back(c, closed).await;
                    return Ok(done);
                }
                Err(Failed::Body(e)) => return Err(DirectError::Http(e)),
                Err(Failed::Send(mut e)) => match e.take_message() {
                    // The reused connection was closed before the request was written
                    // (the server ended a keep-alive connection): a new one gets it.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(DirectError::Http(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<Idle<StampedIo<C::Response>>, DirectError> {
        use tower_service::Service as _;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(DirectError::Connect)?;
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(DirectError::Connect)?;
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(DirectError::Http)?;
        Ok(Idle {
            send,
            conn,
            since: Instant::now(),
        })
    }

    /// The most recently used idle connection that is still open and ready.
    async fn take_idle(&self) -> Option<Idle<StampedIo<C::Response>>> {
        loop {
            let mut c = self.idle.lock().pop()?;
            if c.expired(self.idle_timeout) {
                continue;
            }
            // Polling the connection reads what the server sent while it was idle: a
            // close ends it here instead of failing the request.
            let usable = std::future::poll_fn(|cx| {
                if Pin::new(&mut c.conn).poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                Poll::Ready(matches!(c.send.poll_ready(cx), Poll::Ready(Ok(()))))
            })
            .await;
            if usable {
                return Some(c);
            }
        }
    }

    /// Keeps a connection whose exchange is complete, unless it has closed.
    async fn put_back(&self, mut c: Idle<StampedIo<C::Response>>, mut closed: bool) {
        if !closed {
            // One more poll lets the connection finish the response and turn idle.
            std::future::poll_fn(|cx| {
                if Pin::new(&mut c.conn).poll(cx).is_ready() {
                    closed = true;
                }
                Poll::Ready(())
            })
            .await;
        }
        if closed || c.send.is_closed() {
            return;
        }
        c.since = Instant::now();
        let mut idle = self.idle.lock();
        // Connections are taken from the top: after a burst, the ones below it would
        // otherwise stay open (and hold their buffers) until a burst as large reaches them.
        idle.retain(|c| !c.expired(self.idle_timeout));
        idle.push(c);
    }
}

/// Polls `conn` (first, so that a request just queued on it is written at once) and `f`
/// until `f` is done. `closed` is set once the connection has ended.
async fn drive<T, F>(
    conn: &mut hyper::client::conn::http1::Connection<T, DirectBody>,
    closed: &mut bool,
    f: F,
) -> F::Output
where
    T: Read + Write + Unpin,
    F: Future,
{
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        if !*closed && Pin::new(&mut *conn).poll(cx).is_ready() {
            // An error is also handed to the request waiting on it.
            *closed = true;
        }
        f.as_mut().poll(cx)
    })
    .await
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
