//! Order lines: kept-alive HTTP/1.1 connections (TLS or plain) on which the task that
//! decided an order or cancel writes its request itself, before the call returns.
//!
//! Through hyper, a request became an `http::Request` on the engine's task, was handed to
//! another task, encoded there and written: tens of microseconds between a market frame
//! and its order on this project's machines, most of the tick-to-request figure (README,
//! performance). Here the caller hands over the finished request head and it is written
//! (encrypted first, with TLS) by a non-blocking write in the same call: nothing waits,
//! so the event loop is never held up by a slow socket. What the write did not take is
//! written by the line's task once the socket is writable.
//!
//! A line carries one request at a time. Its task reads the responses, hands each to the
//! request's receiver, then puts the line back idle. When no line is idle the caller
//! goes the async way (the REST client's other connections) and one more line is opened
//! for next time, up to a limit. Lines ended by the server, an error or a timeout are
//! replaced while fewer than the number asked to be kept are open.

use std::io::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

/// A whole response, as the REST client interprets it.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Why a written request got no response.
#[derive(Debug)]
pub(crate) enum LineError {
    /// The line ended before the whole response arrived: the request may have been
    /// executed.
    Ended(String),
    /// No whole response within the request's timeout (the line is closed: a late
    /// answer must not be read as the next request's).
    TimedOut,
}

pub(crate) type Answer = oneshot::Receiver<Result<RawResponse, LineError>>;

/// A request written (at least handed to the socket in part) on a line.
pub(crate) struct Written {
    /// When its bytes were handed to the write.
    pub at: Instant,
    pub answer: Answer,
}

pub(crate) struct OrderLines {
    shared: Arc<Shared>,
}

struct Shared {
    /// `host:port` to connect to.
    addr: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    idle: Mutex<Vec<Arc<Line>>>,
    /// Lines open or being opened.
    count: AtomicUsize,
    /// Lines replaced when they end (see [`OrderLines::keep`]).
    keep: AtomicUsize,
    max_lines: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// Ends every line's task when the lines are dropped.
    dropped: CancellationToken,
}

struct Line {
    tcp: TcpStream,
    tls: Option<Mutex<rustls::ClientConnection>>,
    state: Mutex<State>,
    /// Wakes the line's task: a request was written (its deadline runs) or bytes wait.
    wake: Notify,
}

#[derive(Default)]
struct State {
    waiting: Option<Waiting>,
    /// A plain line's request bytes the non-blocking write did not take.
    unsent: Vec<u8>,
    ended: bool,
}

struct Waiting {
    deadline: Instant,
    answer: oneshot::Sender<Result<RawResponse, LineError>>,
}

/// `std::io` over a tokio socket's non-blocking calls, for rustls.
struct Try<'a>(&'a TcpStream);

impl io::Write for Try<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Read for Try<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl OrderLines {
    /// Lines to `target` (`http://` or `https://`, whose TLS is `tls`), none open yet.
    pub(crate) fn new(
        target: &http::Uri,
        tls: Arc<rustls::ClientConfig>,
        max_lines: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let host = target.host().ok_or("no host")?;
        let secure = match target.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("scheme {other:?}: http or https only")),
        };
        let port = target.port_u16().unwrap_or(if secure { 443 } else { 80 });
        // An IPv6 literal keeps its brackets in the URI: they go in `addr`, not the name.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tls = if secure {
            let name = ServerName::try_from(bare.to_owned()).map_err(|e| e.to_string())?;
            Some((tls, name))
        } else {
            None
        };
        Ok(Self {
            shared: Arc::new(Shared {
                addr: format!("{host}:{port}"),
                tls,
                idle: Mutex::new(Vec::new()),
                count: AtomicUsize::new(0),
                keep: AtomicUsize::new(0),
                max_lines,
                idle_timeout,
                connect_timeout,
                dropped: CancellationToken::new(),
            }),
        })
    }

    /// Keeps `n` lines open (at most the limit): opens the missing ones now and replaces
    /// those that end, so that the first order after a quiet spell finds one. Must be
    /// called inside a tokio runtime.
    pub(crate) fn keep(&self, n: usize) {
        let n = n.min(self.shared.max_lines);
        self.shared.keep.store(n, Ordering::Relaxed);
        while self.shared.count.load(Ordering::Relaxed) < n {
            if !open_one(&self.shared) {
                break;
            }
        }
    }

    /// Whether a line is idle now (it may still turn out to have ended).
    pub(crate) fn has_idle(&self) -> bool {
        !self.shared.idle.lock().is_empty()
    }

    pub(crate) fn idle(&self) -> usize {
        self.shared.idle.lock().len()
    }

    /// Writes `request` (a whole HTTP/1.1 request) on an idle line now. None when no
    /// line is idle, or none took any of the bytes: nothing was sent, and one more line
    /// is opened for next time.
    pub(crate) fn write_now(&self, request: &[u8], timeout: Duration) -> Option<Written> {
        loop {
            let Some(line) = self.shared.idle.lock().pop() else {
                open_one(&self.shared);
                return None;
            };
            let mut state = line.state.lock();
            if state.ended {
                continue;
            }
            if !line.quiet() {
                // Closed by the server (or sent something unasked) since its last
                // answer, and its task has not read that yet: a request written now
                // would be lost with it, its outcome unknown. Its task ends it.
                state.ended = true;
                drop(state);
                line.wake.notify_one();
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let at = Instant::now();
            match line.write(&mut state, request) {
                Ok(()) => {
                    state.waiting = Some(Waiting {
                        deadline: at + timeout,
                        answer: tx,
                    });
                    drop(state);
                    line.wake.notify_one();
                    return Some(Written { at, answer: rx });
                }
                Err(e) => {
                    tracing::debug!(event = "order_line_failed", error = %e, "order line write failed before sending: next line");
                    state.ended = true;
                    drop(state);
                    line.wake.notify_one();
                }
            }
        }
    }
}

impl Drop for OrderLines {
    fn drop(&mut self) {
        self.shared.dropped.cancel();
    }
}

/// Opens one more line in the background unless the limit is reached.
fn open_one(shared: &Arc<Shared>) -> bool {
    if shared.dropped.is_cancelled() {
        return false;
    }
    let reserved = shared
        .count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < shared.max_lines).then_some(n + 1)
        })
        .is_ok();
    if !reserved {
        return false;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let opened = tokio::select! {
            r = tokio::time::timeout(shared.connect_timeout, connect(&shared)) => {
                r.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            }
            _ = shared.dropped.cancelled() => Err(io::Error::other("dropped")),
        };
        match opened {
            Ok(line) => {
                let line = Arc::new(line);
                shared.idle.lock().push(line.clone());
                run(&shared, &line).await;
                end(&shared, &line);
            }
            Err(e) => {
                tracing::debug!(event = "order_line_connect_failed", error = %e, "order line not opened");
                shared.count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    });
    true
}

async fn connect(shared: &Shared) -> io::Result<Line> {
    let tcp = TcpStream::connect(&shared.addr).await?;
    tcp.set_nodelay(true)?;
    let (tcp, tls) = match &shared.tls {
        None => (tcp, None),
        Some((config, name)) => {
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), tcp)
                .await?;
            let (tcp, conn) = stream.into_inner();
            (tcp, Some(Mutex::new(conn)))
        }
    };
    Ok(Line {
        tcp,
        tls,
        state: Mutex::new(State::default()),
        wake: Notify::new(),
    })
}

/// Marks `line` ended, answers a request still waiting, and replaces the line if fewer
/// than the kept number remain.
fn end(shared: &Arc<Shared>, line: &Arc<Line>) {
    let waiting = {
        let mut state = line.state.lock();
        state.ended = true;
        state.waiting.take()
    };
    if let Some(w) = waiting {
        let _ = w.answer.send(Err(LineError::Ended(
            "the connection ended before the whole response".into(),
        )));
    }
    shared.idle.lock().retain(|l| !Arc::ptr_eq(l, line));
    let left = shared.count.fetch_sub(1, Ordering::Relaxed) - 1;
    if left < shared.keep.load(Ordering::Relaxed) {
        open_one(shared);
    }
}

impl Line {
    /// Whether a request written on this idle line now would be answered on it: nothing
    /// has arrived since its last answer but, with TLS, records that carry no data (the
    /// session tickets a TLS 1.3 server sends after the handshake, a key update), which
    /// are processed here. A close or unasked bytes end it.
    fn quiet(&self) -> bool {
        if !self.has_arrivals() {
            return true;
        }
        if self.tls.is_none() {
            return false;
        }
        let mut unasked = Vec::new();
        matches!(self.read(&mut unasked), Ok(true)) && unasked.is_empty()
    }

    /// Whether bytes or a close have arrived. Asks the socket itself (one non-blocking
    /// peek), not the runtime's readiness, which may not have seen a close that arrived
    /// a moment ago.
    #[cfg(unix)]
    fn has_arrivals(&self) -> bool {
        use std::os::fd::AsRawFd as _;
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a valid buffer on a socket this line owns.
        let n = unsafe {
            libc::recv(
                self.tcp.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        !(n < 0 && would_block(&io::Error::last_os_error()))
    }

    /// Elsewhere the runtime's readiness is all there is: its task notices a close.
    #[cfg(not(unix))]
    fn has_arrivals(&self) -> bool {
        false
    }

    /// Hands `request` to the socket; what the non-blocking write does not take is left
    /// for the line's task. An error only when no byte of it can have been sent. (An idle
    /// line's send buffer is empty, its last request answered: a write that takes none
    /// of the bytes does not happen in practice, and the stamp taken before it would
    /// then be early by the wait for the socket.)
    fn write(&self, state: &mut State, request: &[u8]) -> io::Result<()> {
        match &self.tls {
            None => match self.tcp.try_write(request) {
                Ok(n) => {
                    state.unsent.extend_from_slice(&request[n..]);
                    Ok(())
                }
                Err(e) if would_block(&e) => {
                    state.unsent.extend_from_slice(request);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Some(tls) => {
                let mut tls = tls.lock();
                tls.writer().write_all(request)?;
                let mut wrote = false;
                while tls.wants_write() {
                    match tls.write_tls(&mut Try(&self.tcp)) {
                        Ok(0) => break,
                        Ok(_) => wrote = true,
                        Err(e) if would_block(&e) => break,
                        Err(e) if !wrote => return Err(e),
                        Err(_) => break,
                    }
                }
                Ok(())
            }
        }
    }

    fn wants_flush(&self, state: &State) -> bool {
        match &self.tls {
            None => !state.unsent.is_empty(),
            Some(tls) => tls.lock().wants_write(),
        }
    }

    /// Writes what is left of the request; Err ends the line.
    fn flush(&self, state: &mut State) -> io::Result<()> {
        match &self.tls {
            None => {
                while !state.unsent.is_empty() {
                    match self.tcp.try_write(&state.unsent) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            state.unsent.drain(..n);
                        }
                        Err(e) if would_block(&e) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => {
                let mut tls = tls.lock();
                while tls.wants_write() {
                    match tls.write_tls(&mut Try(&self.tcp)) {
                        Ok(_) => {}
                        Err(e) if would_block(&e) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads what the socket has into `received` (decrypted, with TLS). Ok(false) once
    /// the peer has closed.
    fn read(&self, received: &mut Vec<u8>) -> io::Result<bool> {
        match &self.tls {
            None => {
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    match self.tcp.try_read(&mut chunk) {
                        Ok(0) => return Ok(false),
                        Ok(n) => received.extend_from_slice(&chunk[..n]),
                        Err(e) if would_block(&e) => return Ok(true),
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => {
                let mut tls = tls.lock();
                let mut open = true;
                loop {
                    match tls.read_tls(&mut Try(&self.tcp)) {
                        Ok(0) => {
                            open = false;
                            break;
                        }
                        Ok(_) => {
                            tls.process_new_packets().map_err(io::Error::other)?;
                        }
                        Err(e) if would_block(&e) => break,
                        Err(e) => return Err(e),
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    match io::Read::read(&mut tls.reader(), &mut chunk) {
                        Ok(0) => return Ok(false),
                        Ok(n) => received.extend_from_slice(&chunk[..n]),
                        Err(e) if would_block(&e) => return Ok(open),
                        // The peer closed without close_notify: the same as a TCP close here.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// The line's task: reads responses and hands them over, writes what is left of a
/// request, and ends the line on a close, an error, a timeout or a long idle spell.
async fn run(shared: &Arc<Shared>, line: &Arc<Line>) {
    let mut received = Vec::with_capacity(4096);
    let mut idle_since = Instant::now();
    loop {
        let (deadline, flush) = {
            let state = line.state.lock();
            if state.ended {
                return;
            }
            (
                state.waiting.as_ref().map(|w| w.deadline),
                line.wants_flush(&state),
            )
        };
        let wake_at = deadline.unwrap_or(idle_since + shared.idle_timeout);
        tokio::select! {
            r = line.tcp.readable() => {
                if r.is_err() {
                    return;
                }
                let open = match line.read(&mut received) {
                    Ok(open) => open,
                    Err(e) => {
                        tracing::debug!(event = "order_line_ended", error = %e, "order line read failed");
                        return;
                    }
                };
                match answer(line, &mut received, open) {
                    Ok(Some(put_back)) => {
                        if put_back {
                            idle_since = Instant::now();
                            shared.idle.lock().push(line.clone());
                        } else {
                            return;
                        }
                    }
                    Ok(None) if !open => return,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(event = "order_line_ended", error = %e, "order line: bad response");
                        return;
                    }
                }
                // A TLS record read may have queued an answer of its own.
                if line.tls.is_some() {
                    let mut state = line.state.lock();
                    if line.flush(&mut state).is_err() {
                        return;
                    }
                }
            }
            r = line.tcp.writable(), if flush => {
                let mut state = line.state.lock();
                if r.is_err() || line.flush(&mut state).is_err() {
                    return;
                }
            }
            _ = line.wake.notified() => {}
            _ = tokio::time::sleep_until(wake_at.into()) => {
                let mut state = line.state.lock();
                match &state.waiting {
                    Some(w) if Instant::now() >= w.deadline => {
                        let waiting = state.waiting.take();
                        drop(state);
                        if let Some(w) = waiting {
                            let _ = w.answer.send(Err(LineError::TimedOut));
                        }
                        return;
                    }
                    Some(_) => {}
                    None => {
                        drop(state);
                        // Only a line still idle expires: one just taken is in use. A
                        // kept line is replaced by a fresh one (in `end`) before the
                        // server's own idle timeout can close it under a request.
                        let mut idle = shared.idle.lock();
                        if let Some(i) = idle.iter().position(|l| Arc::ptr_eq(l, line)) {
                            idle.swap_remove(i);
                            return;
                        }
                        idle_since = Instant::now();
                    }
                }
            }
            _ = shared.dropped.cancelled() => return,
        }
    }
}

/// Hands a whole response in `received` to the waiting request. Some(true): the line
/// may carry another request; Some(false): it must end (the server closes it); None:
/// the response is not whole yet. `open` is false once the peer has closed, which ends
/// a response that has neither a length nor chunks.
fn answer(line: &Line, received: &mut Vec<u8>, open: bool) -> Result<Option<bool>, String> {
    let Some(parsed) = parse_response(received, open)? else {
        return Ok(None);
    };
    received.drain(..parsed.consumed);
    let waiting = line.state.lock().waiting.take();
    let Some(w) = waiting else {
        return Err(format!(
            "a response (HTTP {}) with no request waiting",
            parsed.response.status
        ));
    };
    let _ = w.answer.send(Ok(parsed.response));
    Ok(Some(!parsed.close && open && received.is_empty()))
}

struct Parsed {
    response: RawResponse,
    consumed: usize,
    close: bool,
}

/// One whole HTTP/1.1 response at the start of `buf`, interim (1xx) responses skipped.
/// None while more bytes are needed.
fn parse_response(buf: &[u8], open: bool) -> Result<Option<Parsed>, String> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(&buf[start..]).map_err(|e| e.to_string())? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Ok(None),
        };
        let status = head.code.unwrap_or(0);
        if (100..200).contains(&status) {
            start += head_len;
            continue;
        }
        let mut map = http::HeaderMap::with_capacity(head.headers.len());
        let mut length = None;
        let mut chunked = false;
        let mut close = head.version == Some(0);
        for h in head.headers.iter() {
            let name =
                http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| e.to_string())?;
            let value = http::HeaderValue::from_bytes(h.value).map_err(|e| e.to_string())?;
            let text = value.to_str().unwrap_or("").to_ascii_lowercase();
            if name == http::header::CONTENT_LENGTH {
                length = Some(
                    text.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("content-length {text:?}"))?,
                );
            } else if name == http::header::TRANSFER_ENCODING {
                chunked = text.split(',').any(|t| t.trim() == "chunked");
            } else if name == http::header::CONNECTION {
                close = text.split(',').any(|t| t.trim() == "close");
            }
            map.append(name, value);
        }
        let body_at = start + head_len;
        let (body, consumed) = if chunked {
            match dechunk(&buf[body_at..])? {
                Some((body, n)) => (body, body_at + n),
                None => return Ok(None),
            }
        } else if let Some(n) = length {
            if buf.len() - body_at < n {
                return Ok(None);
            }
            (buf[body_at..body_at + n].to_vec(), body_at + n)
        } else if open {
            // Neither a length nor chunks: the body runs to the close.
            return Ok(None);
        } else {
            close = true;
            (buf[body_at..].to_vec(), buf.len())
        };
        return Ok(Some(Parsed {
            response: RawResponse {
                status,
                headers: map,
                body: Bytes::from(body),
            },
            consumed,
            close,
        }));
    }
}

/// A chunked body at the start of `buf`: the body and the bytes it took, trailers
/// included; None while more bytes are needed.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[at..])
            .map_err(|_| "bad chunk size".to_string())?
        {
            httparse::Status::Complete(c) => c,
            httparse::Status::Partial => return Ok(None),
        };
        at += size_len;
        if size == 0 {
            // Trailers, if any, then the empty line.
            loop {
                let Some(eol) = memchr::memmem::find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        let size = usize::try_from(size).map_err(|_| "chunk too large".to_string())?;
        if buf.len() - at < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err("chunk without its CRLF".into());
        }
        at += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(buf: &[u8]) -> Parsed {
        parse_response(buf, true)
            .unwrap()
            .expect("a whole response")
    }

    #[test]
    fn a_response_is_whole_only_with_all_of_its_body() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-MBX-USED-WEIGHT-1M: 7\r\n\r\nhello";
        for cut in 0..r.len() {
            assert!(parse_response(&r[..cut], true).unwrap().is_none(), "{cut}");
        }
        let p = whole(r);
        assert_eq!(p.response.status, 200);
        assert_eq!(&p.response.body[..], b"hello");
        assert_eq!(p.consumed, r.len());
        assert_eq!(p.response.headers["x-mbx-used-weight-1m"], "7");
        assert!(!p.close);
    }

    #[test]
    fn chunked_bodies_and_interim_responses_are_read_through() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n{\"co\r\na;x=1\r\nde\":-1013}\r\n0\r\nX-Trailer: 1\r\n\r\nHTTP/1.1";
        let p = whole(r);
        assert_eq!(p.response.status, 400);
        assert_eq!(&p.response.body[..], br#"{"code":-1013}"#);
        assert_eq!(&r[p.consumed..], b"HTTP/1.1");
        assert!(p.close);
        let end = r.len() - 8;
        for cut in 0..end {
            assert!(parse_response(&r[..cut], true).unwrap().is_none(), "{cut}");
        }
    }

    #[test]
    fn a_body_without_length_runs_to_the_close() {
        let r = b"HTTP/1.0 200 OK\r\n\r\n{}";
        assert!(parse_response(r, true).unwrap().is_none());
        let p = parse_response(r, false).unwrap().unwrap();
        assert_eq!(&p.response.body[..], b"{}");
        assert!(p.close);
    }

    #[test]
    fn garbage_is_an_error_not_a_wait() {
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                true
            )
            .is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true).is_err());
    }
}
