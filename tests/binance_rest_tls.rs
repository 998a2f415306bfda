//! RestClient over real TLS on 127.0.0.1, as it talks to Binance: orders and cancels on
//! the direct pool's kept-alive connections, other requests on hyper-util's pooled client.
//! The server's certificate comes from a CA made here, trusted only by clients built
//! with `RestClient::with_root_certificates`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mmd::binance::rest::{OrderRef, RestClient, RestError, RestSettings};
use mmd::binance::sign::{HmacSigner, Signer};
use parking_lot::Mutex;
use rest_support::{idle_line, order, read_head};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tls_support::Pki;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Notify, mpsc};

mod rest_support;
mod tls_support;

const KEY: &str = "test-api-key";
const SECRET: &[u8] = b"test-secret";
const SERVER_TIME: u64 = 1_767_225_600_000;

/// A fresh CA and a leaf it signed for `localhost` and `127.0.0.1` (the server here
/// takes them from memory; the files go with the directory).
fn pki() -> Pki {
    tls_support::pki(tempfile::tempdir().unwrap().path())
}

/// What the server does once it has answered a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterAnswer {
    KeepAlive,
    /// Ends the connection (close_notify, then the TCP shutdown, as a server's idle
    /// timeout does) when the test calls `close_next`: the client has put it back idle
    /// by then, so the close reaches an idle connection, never one mid-exchange.
    CloseWhenTold,
}

/// A raw HTTP/1.1-over-TLS server: answers `GET /api/v3/time` with `SERVER_TIME` and any
/// other request with an order whose id counts the requests, and keeps each request head.
struct TlsServer {
    url: String,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    /// Completed TLS handshakes, each with the ALPN protocol it agreed on.
    handshakes: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    heads: Arc<Mutex<Vec<String>>>,
    close: Arc<Notify>,
    closed: mpsc::UnboundedReceiver<()>,
}

impl TlsServer {
    /// Has the connection that answered last closed (see `AfterAnswer::CloseWhenTold`)
    /// and returns once the server has sent its close_notify and FIN.
    async fn close_next(&mut self) {
        self.close.notify_one();
        tokio::time::timeout(Duration::from_secs(5), self.closed.recv())
            .await
            .expect("the server closes the connection")
            .unwrap();
    }

    fn handshakes(&self) -> usize {
        self.handshakes.lock().len()
    }

    fn host(&self) -> &str {
        self.url.trim_start_matches("https://")
    }

    /// One connection, made without ALPN (the client asks for neither h2 nor anything
    /// else, so HTTP/1.1), carried `orders` signed orders and then one signed cancel.
    fn assert_one_connection_carried(&self, orders: usize) {
        assert_eq!(self.connections.load(Ordering::SeqCst), 1);
        assert_eq!(*self.handshakes.lock(), vec![None]);
        let heads = self.heads.lock().clone();
        assert_eq!(heads.len(), orders + 1);
        for h in &heads[..orders] {
            assert_signed_head(h, "POST /api/v3/order?symbol=BTCUSDT&", self.host());
        }
        assert_signed_head(
            &heads[orders],
            "DELETE /api/v3/order?symbol=BTCUSDT&",
            self.host(),
        );
    }
}

/// The servers' TLS setup: the leaf and its CA, TLS 1.2 and 1.3 (rustls's defaults).
fn server_config(pki: &Pki) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.leaf.clone(), pki.ca.clone()],
            PrivateKeyDer::Pkcs8(pki.leaf_key.clone_key()),
        )
        .unwrap()
}

async fn tls_server(pki: &Pki, after: AfterAnswer) -> TlsServer {
    let mut config = server_config(pki);
    // Offered so that a client offering h2 would get it: the handshakes then show which
    // protocol the client asked for.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let close = Arc::new(Notify::new());
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let (conns, shakes, hs, close_rx) = (
        connections.clone(),
        handshakes.clone(),
        heads.clone(),
        close.clone(),
    );
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            conns.fetch_add(1, Ordering::SeqCst);
            let (acceptor, shakes, hs, close_rx, closed_tx) = (
                acceptor.clone(),
                shakes.clone(),
                hs.clone(),
                close_rx.clone(),
                closed_tx.clone(),
            );
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                shakes
                    .lock()
                    .push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                let mut buf = Vec::new();
                loop {
                    let Some(head) = read_head(&mut tls, &mut buf).await else {
                        return;
                    };
                    let body = if head.starts_with("GET /api/v3/time ") {
                        format!(r#"{{"serverTime":{SERVER_TIME}}}"#)
                    } else {
                        let id = hs.lock().len() + 1;
                        format!(
                            r#"{{"symbol":"BTCUSDT","orderId":{id},"clientOrderId":"mmd-1","status":"NEW"}}"#
                        )
                    };
                    hs.lock().push(head);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(resp.as_bytes()).await.is_err() || tls.flush().await.is_err() {
                        return;
                    }
                    if after == AfterAnswer::CloseWhenTold {
                        close_rx.notified().await;
                        // close_notify, then FIN.
                        let _ = tls.shutdown().await;
                        drop(tls);
                        let _ = closed_tx.send(());
                        return;
                    }
                }
            });
        }
    });
    TlsServer {
        url,
        connections,
        handshakes,
        heads,
        close,
        closed,
    }
}

fn settings(url: &str) -> RestSettings {
    RestSettings {
        base_url: url.into(),
        api_key: Some(KEY.into()),
        signer: Some(Signer::Hmac(HmacSigner::new(SECRET))),
        recv_window: Duration::from_secs(5),
        // A TLS handshake in an unoptimised build on a loaded test machine, with room.
        timeout: Duration::from_secs(2),
    }
}

fn trusting(url: &str, ca: &CertificateDer<'static>) -> RestClient {
    RestClient::with_root_certificates(settings(url), vec![ca.clone()]).unwrap()
}

fn cancel() -> OrderRef {
    OrderRef::ClientOrderId("mmd-1".into())
}

/// Asserts what every order-path request head carries.
fn assert_signed_head(head: &str, request_line: &str, host: &str) {
    assert!(head.starts_with(request_line), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains(&format!("\r\nhost: {host}\r\n")), "{head}");
    assert!(
        lower.contains(&format!("\r\nx-mbx-apikey: {KEY}\r\n")),
        "{head}"
    );
    assert!(head.contains("&signature="), "{head}");
}

#[tokio::test]
async fn orders_and_a_cancel_share_one_kept_alive_tls_connection() {
    let pki = pki();
    let srv = tls_server(&pki, AfterAnswer::KeepAlive).await;
    let c = trusting(&srv.url, &pki.ca);
    for id in 1..=3 {
        let r = c.place_order(&order("BTCUSDT")).await.unwrap();
        assert_eq!(r.order_id, id);
    }
    let r = c.cancel_order("BTCUSDT", &cancel()).await.unwrap();
    assert_eq!(r.order_id, 4);
    srv.assert_one_connection_carried(3);
}

#[tokio::test]
async fn an_order_after_the_server_closed_the_idle_tls_connection_goes_on_a_new_one() {
    let pki = pki();
    let mut srv = tls_server(&pki, AfterAnswer::CloseWhenTold).await;
    let c = trusting(&srv.url, &pki.ca);
    assert_eq!(c.place_order(&order("BTCUSDT")).await.unwrap().order_id, 1);
    srv.close_next().await;
    // The close has been sent, and the runtime polls its sockets before it resumes this
    // test; loopback normally delivers within the server's shutdown call. The pause is
    // margin for a loaded kernel that delivers later: the client has no hook to say it
    // has read the close, and a request written before it would be lost with it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.place_order(&order("BTCUSDT")).await.unwrap().order_id, 2);
    srv.close_next().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = c.cancel_order("BTCUSDT", &cancel()).await.unwrap();
    assert_eq!(r.order_id, 3);
    assert_eq!(srv.connections.load(Ordering::SeqCst), 3);
    assert_eq!(srv.handshakes(), 3);
    let heads = srv.heads.lock().clone();
    assert_eq!(heads.len(), 3, "each request was sent once: {heads:?}");
    assert_signed_head(&heads[0], "POST /api/v3/order?", srv.host());
    assert_signed_head(&heads[1], "POST /api/v3/order?", srv.host());
    assert_signed_head(&heads[2], "DELETE /api/v3/order?", srv.host());
}

#[tokio::test]
async fn an_order_to_a_server_with_an_untrusted_certificate_is_a_connect_error_without_the_url() {
    let pki = pki();
    let srv = tls_server(&pki, AfterAnswer::KeepAlive).await;
    // The daemon's own constructor: webpki's roots only, which did not sign the test CA.
    let c = RestClient::new(settings(&srv.url)).unwrap();
    let e = c.place_order(&order("BTCUSDT")).await.unwrap_err();
    // The whole message, so neither the signed query nor the symbol is in it.
    assert_eq!(
        e,
        RestError::Transport("connect: invalid peer certificate: UnknownIssuer".into())
    );
    assert!(e.outcome_unknown());
    // The pooled client's TLS path refuses it too; hyper-util's error adds its own words.
    let e = c.time().await.unwrap_err();
    assert_eq!(
        e,
        RestError::Transport(
            "connect: client error (Connect): invalid peer certificate: UnknownIssuer".into()
        )
    );
    // An added root widens trust by that root only: this one has the test CA's name but
    // another key, so it is found as the issuer and its signature check fails.
    let other_ca = self::pki().ca;
    let elsewhere = trusting(&srv.url, &other_ca);
    assert_eq!(
        elsewhere.place_order(&order("BTCUSDT")).await.unwrap_err(),
        RestError::Transport("connect: invalid peer certificate: BadSignature".into())
    );
    assert_eq!(srv.connections.load(Ordering::SeqCst), 3);
    assert_eq!(srv.handshakes(), 0);
    assert!(srv.heads.lock().is_empty());
}

#[tokio::test]
async fn server_time_goes_over_tls_on_the_pooled_client_apart_from_orders() {
    let pki = pki();
    let srv = tls_server(&pki, AfterAnswer::KeepAlive).await;
    let c = trusting(&srv.url, &pki.ca);
    assert_eq!(c.time().await.unwrap().server_time, SERVER_TIME);
    assert_eq!(srv.handshakes(), 1);
    assert_eq!(c.place_order(&order("BTCUSDT")).await.unwrap().order_id, 2);
    // The order path keeps its own connections: the pooled client's is not lent to it.
    assert_eq!(srv.connections.load(Ordering::SeqCst), 2);
    assert_eq!(*srv.handshakes.lock(), vec![None, None]);
    let heads = srv.heads.lock().clone();
    assert_eq!(heads.len(), 2);
    assert!(
        heads[0].starts_with("GET /api/v3/time HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    let lower = heads[0].to_ascii_lowercase();
    assert!(
        lower.contains(&format!("\r\nhost: {}\r\n", srv.host())),
        "{}",
        heads[0]
    );
    assert!(!lower.contains("x-mbx-apikey"), "{}", heads[0]);
    assert_signed_head(&heads[1], "POST /api/v3/order?", srv.host());
}

#[tokio::test]
async fn orders_written_now_share_one_kept_alive_tls_line() {
    let pki = pki();
    let srv = tls_server(&pki, AfterAnswer::KeepAlive).await;
    let c = trusting(&srv.url, &pki.ca);
    c.keep_order_lines(1);
    idle_line(&c).await;
    for id in 1..=2 {
        let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
        assert_eq!(c.written_response(w).await.unwrap().order_id, id);
    }
    let w = c.cancel_order_now("BTCUSDT", &cancel()).unwrap().unwrap();
    assert_eq!(c.written_response(w).await.unwrap().order_id, 3);
    srv.assert_one_connection_carried(2);
}

#[tokio::test]
async fn a_tls_line_the_server_closed_is_replaced_before_the_next_order() {
    let pki = pki();
    let mut srv = tls_server(&pki, AfterAnswer::CloseWhenTold).await;
    let c = trusting(&srv.url, &pki.ca);
    c.keep_order_lines(1);
    for id in 1..=2 {
        idle_line(&c).await;
        let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
        assert_eq!(c.written_response(w).await.unwrap().order_id, id);
        srv.close_next().await;
        // The line's task reads the close at once and opens the line replacing it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while srv.handshakes() < id as usize + 1 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("a new line");
    }
    assert_eq!(srv.connections.load(Ordering::SeqCst), 3);
    assert_eq!(srv.heads.lock().len(), 2, "each request was sent once");
}

#[tokio::test]
async fn an_order_is_not_written_on_a_line_the_server_has_just_closed() {
    let pki = pki();
    let mut srv = tls_server(&pki, AfterAnswer::CloseWhenTold).await;
    let c = trusting(&srv.url, &pki.ca);
    c.keep_order_lines(1);
    idle_line(&c).await;
    let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
    assert_eq!(c.written_response(w).await.unwrap().order_id, 1);
    srv.close_next().await;
    // At once: the line's task has not read the close yet, and the line is still
    // listed idle. Written on it, the order would be lost with the connection.
    assert!(
        c.place_order_now(&order("BTCUSDT")).unwrap().is_none(),
        "the closed line is passed over: nothing sent"
    );
    idle_line(&c).await;
    let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
    assert_eq!(c.written_response(w).await.unwrap().order_id, 2);
    assert_eq!(srv.connections.load(Ordering::SeqCst), 2);
    assert_eq!(srv.heads.lock().len(), 2, "each request was sent once");
}

/// A TLS 1.3 server on a thread of its own, for one connection, that holds back the
/// session tickets it sends after the handshake until told, then says they are on the
/// wire, and answers one order.
fn late_tickets_server(
    pki: &Pki,
) -> (
    String,
    std::sync::mpsc::Sender<()>,
    std::sync::mpsc::Receiver<()>,
) {
    let config = server_config(pki);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (tell, told) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        // The handshake by hand: its last step, reading the client's Finished, queues
        // the tickets, which stay unwritten.
        while conn.is_handshaking() {
            while conn.is_handshaking() && conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            if !conn.is_handshaking() {
                break;
            }
            if conn.read_tls(&mut sock).unwrap() == 0 {
                return;
            }
            conn.process_new_packets().unwrap();
        }
        // TLS 1.3 (the client and server agree on it) queues its tickets here.
        assert!(conn.wants_write(), "tickets queued");
        if told.recv().is_err() {
            return;
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        let _ = sent_tx.send(());
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = r#"{"symbol":"BTCUSDT","orderId":1,"clientOrderId":"mmd-1","status":"NEW"}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(resp.as_bytes()).unwrap();
        tls.flush().unwrap();
    });
    (url, tell, sent)
}

#[tokio::test]
async fn session_tickets_that_arrive_after_the_handshake_leave_the_line_usable() {
    let pki = pki();
    let (url, tell, sent) = late_tickets_server(&pki);
    let c = trusting(&url, &pki.ca);
    c.keep_order_lines(1);
    idle_line(&c).await;
    // This thread, the runtime's only one, waits while the server sends the tickets:
    // the line's task cannot run, so they are on the socket, unread, when the order is
    // written. The peek before a write took them for an unasked answer and dropped
    // the line; the order went the slow way (the TLS tests failed at random this way).
    tell.send(()).unwrap();
    sent.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let w = c
        .place_order_now(&order("BTCUSDT"))
        .unwrap()
        .expect("the new line is usable");
    assert_eq!(c.written_response(w).await.unwrap().order_id, 1);
}
