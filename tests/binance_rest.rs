//! RestClient against a small scripted Binance-like HTTP server on 127.0.0.1:
//! signatures are verified server-side, clock skew produces a real -1021, and
//! 418/429/410/5xx/timeouts come over the socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, Response, Uri};
use mmd::binance::rest::{OrderRef, RestClient, RestError, RestSettings};
use mmd::binance::sign::{HmacSigner, Signer};
use parking_lot::Mutex;
use rest_support::{idle_line, order, read_head};
use rust_decimal_macros::dec;

mod rest_support;

const KEY: &str = "test-api-key";
const SECRET: &[u8] = b"test-secret";

#[derive(Clone, Debug)]
enum Scripted {
    Status(u16, Vec<(&'static str, String)>, String),
    Sleep(Duration),
}

#[derive(Default)]
struct Server {
    /// Server clock minus local clock, ms.
    skew_ms: AtomicI64,
    hits: AtomicUsize,
    script: Mutex<VecDeque<Scripted>>,
    used_weight: AtomicUsize,
    last_query: Mutex<Option<String>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn reply(status: u16, headers: &[(&str, String)], body: String) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

fn error(status: u16, code: i64, msg: &str) -> Response<Body> {
    reply(status, &[], format!(r#"{{"code":{code},"msg":"{msg}"}}"#))
}

async fn handle(
    State(s): State<Arc<Server>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let query = query.unwrap_or_default();
    *s.last_query.lock() = Some(query.clone());
    let scripted = s.script.lock().pop_front();
    match scripted {
        Some(Scripted::Status(code, h, body)) => return reply(code, &h, body),
        Some(Scripted::Sleep(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let server_now = now_ms() + s.skew_ms.load(Ordering::SeqCst);
    let weight = s.used_weight.fetch_add(1, Ordering::SeqCst) + 1;
    let usage = vec![("x-mbx-used-weight-1m", weight.to_string())];
    let path = uri.path();
    if path == "/api/v3/time" {
        return reply(200, &usage, format!(r#"{{"serverTime":{server_now}}}"#));
    }
    if path == "/api/v3/exchangeInfo" {
        return reply(
            200,
            &usage,
            r#"{"serverTime":1,"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":50}],"symbols":[]}"#.into(),
        );
    }
    if headers.get("x-mbx-apikey").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return error(401, -2014, "API-key format invalid.");
    }
    if path == "/api/v3/userDataStream" {
        return reply(200, &usage, r#"{"listenKey":"lk-1"}"#.into());
    }
    // Signed: the signature covers everything before `&signature=`, as sent.
    let Some((payload, sig)) = query.rsplit_once("&signature=") else {
        return error(400, -1102, "Mandatory parameter 'signature' was not sent.");
    };
    if !HmacSigner::new(SECRET).verify_hex(payload.as_bytes(), sig) {
        return error(400, -1022, "Signature for this request is not valid.");
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(payload.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let ts: i64 = get("timestamp").unwrap().parse().unwrap();
    let window: i64 = get("recvWindow").unwrap().parse().unwrap();
    if (ts - server_now).abs() > window {
        return error(
            400,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        );
    }
    match (method.as_str(), path) {
        ("POST", "/api/v3/order") => {
            let symbol = get("symbol").unwrap();
            let body = serde_json::json!({
                "symbol": symbol, "orderId": 7, "orderListId": -1,
                "clientOrderId": get("newClientOrderId").unwrap(),
                "transactTime": server_now,
                "price": get("price").unwrap_or_default(),
                "origQty": get("quantity").unwrap(), "executedQty": "0",
                "cummulativeQuoteQty": "0", "status": "NEW", "timeInForce": "GTC",
                "type": get("type").unwrap(), "side": get("side").unwrap(),
            });
            let mut h = usage.clone();
            h.push(("x-mbx-order-count-10s", "1".into()));
            h.push(("x-mbx-order-count-1d", "1".into()));
            reply(200, &h, body.to_string())
        }
        ("DELETE", "/api/v3/order") => {
            let body = serde_json::json!({
                "symbol": get("symbol").unwrap(), "orderId": 7, "orderListId": -1,
                "clientOrderId": "cancel-1",
                "origClientOrderId": get("origClientOrderId").unwrap(),
                "transactTime": server_now, "price": "52000", "origQty": "0.01",
                "executedQty": "0", "cummulativeQuoteQty": "0", "status": "CANCELED",
                "timeInForce": "GTC", "type": "LIMIT", "side": "SELL",
            });
            reply(200, &usage, body.to_string())
        }
        ("DELETE", "/api/v3/openOrders") => error(400, -2011, "Unknown order sent."),
        ("GET", "/api/v3/account") => reply(
            200,
            &usage,
            r#"{"updateTime":1,"balances":[{"asset":"BTC","free":"1.00000000","locked":"0.5"}]}"#
                .into(),
        ),
        ("GET", "/api/v3/order") => error(400, -2013, "Order does not exist."),
        _ => error(404, 0, "not found"),
    }
}

async fn start() -> (Arc<Server>, String) {
    let state = Arc::new(Server::default());
    let app = Router::new().fallback(handle).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, format!("http://{addr}"))
}

fn client(url: &str) -> RestClient {
    RestClient::new(RestSettings {
        base_url: url.into(),
        api_key: Some(KEY.into()),
        signer: Some(Signer::Hmac(HmacSigner::new(SECRET))),
        recv_window: Duration::from_secs(5),
        timeout: Duration::from_millis(500),
    })
    .unwrap()
}

#[tokio::test]
async fn signed_order_with_non_ascii_symbol_is_accepted() {
    let (srv, url) = start().await;
    let c = client(&url);
    let resp = c.place_order(&order("１２３４５６")).await.unwrap();
    assert_eq!(resp.symbol, "１２３４５６");
    assert_eq!(resp.orig_qty, Some(dec!(0.01)));
    let q = srv.last_query.lock().clone().unwrap();
    assert!(q.starts_with("symbol=%EF%BC%91"), "{q}");
    let st = c.rate_limit_status();
    assert_eq!((st.orders_10s, st.used_weight_1m), (1, 1));
    let acct = c.account().await.unwrap();
    assert_eq!(acct.balances[0].locked, dec!(0.5));
}

#[tokio::test]
async fn clock_skew_gives_minus_1021_then_resync_and_one_retry() {
    let (srv, url) = start().await;
    srv.skew_ms.store(600_000, Ordering::SeqCst);
    let c = client(&url);
    c.place_order(&order("BTCUSDT")).await.unwrap();
    // order (rejected) + time + order (accepted)
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);
    assert!((c.time_offset_ms() - 600_000).abs() < 1_000);
}

#[tokio::test]
async fn rate_limited_429_blocks_until_retry_after_without_sending() {
    let (srv, url) = start().await;
    srv.script.lock().push_back(Scripted::Status(
        429,
        vec![("retry-after", "1".into())],
        r#"{"code":-1003,"msg":"Too many requests."}"#.into(),
    ));
    let c = client(&url);
    let e = c.account().await.unwrap_err();
    assert!(
        matches!(e, RestError::RateLimited { retry_after } if retry_after == Duration::from_secs(1))
    );
    let e = c.account().await.unwrap_err();
    assert!(matches!(e, RestError::RateLimited { .. }), "{e:?}");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    assert!(c.rate_limit_status().rate_limited_for.is_some());
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    c.account().await.unwrap();
}

#[tokio::test]
async fn ip_ban_418_stops_all_rest_even_cancels() {
    let (srv, url) = start().await;
    srv.script.lock().push_back(Scripted::Status(
        418,
        vec![("retry-after", "120".into())],
        r#"{"code":-1003,"msg":"Way too much request weight used; IP banned until 1."}"#.into(),
    ));
    let c = client(&url);
    assert!(matches!(c.time().await, Err(RestError::IpBanned { .. })));
    assert!(matches!(
        c.cancel_open_orders("BTCUSDT").await,
        Err(RestError::IpBanned { .. })
    ));
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    assert!(c.rate_limit_status().banned_for.unwrap() > Duration::from_secs(100));
}

#[tokio::test]
async fn listen_key_410_tells_the_operator_to_switch() {
    let (srv, url) = start().await;
    srv.script
        .lock()
        .push_back(Scripted::Status(410, vec![], String::new()));
    let c = client(&url);
    let e = c.create_listen_key().await.unwrap_err();
    assert_eq!(e, RestError::ListenKeyRetired);
    assert!(e.to_string().contains("user_stream = \"ws-api\""));
    assert_eq!(c.create_listen_key().await.unwrap(), "lk-1");
    c.keepalive_listen_key("lk-1").await.unwrap();
    c.delete_listen_key("lk-1").await.unwrap();
}

/// Scripts the next request's answer to come after the client's timeout, and the one
/// after it to be a 503.
fn late_then_busy(srv: &Server) {
    let mut script = srv.script.lock();
    script.push_back(Scripted::Sleep(Duration::from_millis(1_500)));
    script.push_back(Scripted::Status(503, vec![], "busy".into()));
}

#[tokio::test]
async fn timeouts_and_5xx_leave_the_outcome_unknown_api_errors_do_not() {
    let (srv, url) = start().await;
    late_then_busy(&srv);
    let c = client(&url);
    let e = c.place_order(&order("BTCUSDT")).await.unwrap_err();
    assert_eq!(e, RestError::Timeout);
    assert!(e.outcome_unknown());
    let e = c.place_order(&order("BTCUSDT")).await.unwrap_err();
    assert_eq!(e, RestError::Server { http_status: 503 });
    assert!(e.outcome_unknown());
    let e = c
        .query_order("BTCUSDT", &OrderRef::ClientOrderId("x".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(-2013));
    assert!(!e.outcome_unknown());
    // Nothing open: Binance's -2011 on DELETE openOrders is an empty result.
    assert!(c.cancel_open_orders("BTCUSDT").await.unwrap().is_empty());
}

#[tokio::test]
async fn budget_from_exchange_info_throttles_before_the_limit() {
    let (srv, url) = start().await;
    let c = client(&url);
    c.exchange_info().await.unwrap(); // limit 50/min; exchangeInfo itself weighs 20
    srv.used_weight.store(40, Ordering::SeqCst);
    c.time().await.unwrap(); // header now says 41 used; 90% of 50 is 45
    let mut sent = 0;
    let err = loop {
        match c.time().await {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 10);
    };
    assert!(matches!(err, RestError::Throttled { wait } if wait <= Duration::from_secs(60)));
    assert_eq!(sent, 4);
    // A cancel may still use the reserved headroom.
    assert!(c.cancel_open_orders("BTCUSDT").await.is_ok());
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2 + 4 + 1);
}

#[tokio::test]
async fn connection_refused_is_a_transport_error_without_secrets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = client(&format!("http://{addr}"));
    let e = c.account().await.unwrap_err();
    assert!(matches!(e, RestError::Transport(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        !text.contains("signature") && !text.contains("test-secret"),
        "{text}"
    );
}

/// A raw HTTP/1.1 server: answers every request with an order, keeps the connection
/// alive or closes it after `per_connection` answers, and keeps each request's head.
struct RawServer {
    url: String,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn raw_server(per_connection: usize) -> RawServer {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (conns, hs) = (connections.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            conns.fetch_add(1, Ordering::SeqCst);
            let hs = hs.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for _ in 0..per_connection {
                    let Some(head) = read_head(&mut sock, &mut buf).await else {
                        return;
                    };
                    hs.lock().push(head);
                    let body = r#"{"symbol":"BTCUSDT","orderId":7,"clientOrderId":"mmd-1","status":"NEW"}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-mbx-used-weight-1m: 300\r\nx-mbx-order-count-10s: 50\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
                // Ends the kept-alive connection, as a server's idle timeout does.
                let _ = sock.shutdown().await;
            });
        }
    });
    RawServer {
        url,
        connections,
        heads,
    }
}

#[tokio::test]
async fn orders_and_cancels_reuse_one_kept_alive_connection() {
    let srv = raw_server(usize::MAX).await;
    let c = client(&srv.url);
    for _ in 0..3 {
        let r = c.place_order(&order("BTCUSDT")).await.unwrap();
        assert_eq!(r.order_id, 7);
    }
    c.cancel_order("BTCUSDT", &OrderRef::ClientOrderId("mmd-1".into()))
        .await
        .unwrap();
    assert_eq!(srv.connections.load(Ordering::SeqCst), 1);
    let heads = srv.heads.lock().clone();
    assert_eq!(heads.len(), 4);
    let host = srv.url.trim_start_matches("http://");
    for h in &heads[..3] {
        assert!(h.starts_with("POST /api/v3/order?symbol=BTCUSDT&"), "{h}");
    }
    assert!(heads[3].starts_with("DELETE /api/v3/order?symbol=BTCUSDT&"));
    for h in &heads {
        let lower = h.to_ascii_lowercase();
        assert!(lower.contains(&format!("\r\nhost: {host}\r\n")), "{h}");
        assert!(
            lower.contains(&format!("\r\nx-mbx-apikey: {KEY}\r\n")),
            "{h}"
        );
        assert!(h.contains("&signature="), "{h}");
    }
    // The rate-limit headers of the answers are kept, as for every other request.
    let st = c.rate_limit_status();
    assert!(st.orders_10s >= 50 && st.used_weight_1m >= 300, "{st:?}");
}

#[tokio::test]
async fn an_order_after_the_server_closed_the_kept_alive_connection_goes_on_a_new_one() {
    let srv = raw_server(1).await;
    let c = client(&srv.url);
    c.place_order(&order("BTCUSDT")).await.unwrap();
    // The server's close reaches the idle connection before the next order.
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.place_order(&order("BTCUSDT")).await.unwrap();
    c.cancel_order("BTCUSDT", &OrderRef::ClientOrderId("mmd-1".into()))
        .await
        .unwrap();
    assert_eq!(srv.connections.load(Ordering::SeqCst), 3);
    assert_eq!(srv.heads.lock().len(), 3, "each request was sent once");
}

#[tokio::test]
async fn an_order_to_a_closed_port_is_a_connect_error_without_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = client(&format!("http://{port}"));
    let e = c.place_order(&order("BTCUSDT")).await.unwrap_err();
    match &e {
        RestError::Transport(m) => {
            assert!(m.starts_with("connect: "), "{m}");
            assert!(!m.contains("signature") && !m.contains("BTCUSDT"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.outcome_unknown());
}

#[tokio::test]
async fn a_rehearsed_order_is_built_as_the_real_one_and_never_sent() {
    let srv = raw_server(usize::MAX).await;
    let c = client(&srv.url);
    c.keep_order_lines(1);
    idle_line(&c).await;
    let rehearsed = c.rehearse_order(&order("BTCUSDT"));
    // Nothing reaches the server, and the line stays idle for the real order.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(srv.heads.lock().is_empty());
    assert_eq!(c.idle_order_lines(), 1);
    let w = c
        .place_order_now(&order("BTCUSDT"))
        .unwrap()
        .expect("the line is idle");
    c.written_response(w).await.unwrap();
    let heads = srv.heads.lock().clone();
    assert_eq!(heads.len(), 1);
    // The same head but for the timestamp and the signature, which are as long.
    assert_eq!(rehearsed, heads[0].len(), "{}", heads[0]);
}

#[tokio::test]
async fn orders_written_now_are_signed_answered_and_counted_on_one_line() {
    let (srv, url) = start().await;
    let c = client(&url);
    // No line yet: nothing is sent, no budget is used, the caller goes the async way.
    assert!(c.place_order_now(&order("BTCUSDT")).unwrap().is_none());
    assert_eq!(srv.hits.load(Ordering::SeqCst), 0);
    c.keep_order_lines(1);
    idle_line(&c).await;
    for _ in 0..2 {
        let w = c
            .place_order_now(&order("１２３"))
            .unwrap()
            .expect("an idle line");
        assert!(w.at.elapsed() < Duration::from_secs(5));
        // The server checks the API key, the timestamp and the signature over the
        // percent-encoded query: any of them wrong is an error here.
        let r = c.written_response(w).await.unwrap();
        assert_eq!(
            (r.symbol.as_str(), r.client_order_id.as_str()),
            ("１２３", "mmd-1")
        );
    }
    let w = c
        .cancel_order_now("BTCUSDT", &OrderRef::ClientOrderId("mmd-1".into()))
        .unwrap()
        .expect("the line is idle again");
    let r = c.written_response(w).await.unwrap();
    assert_eq!(r.status, Some(mmd::binance::types::OrderStatus::Canceled));
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);
    let q = srv.last_query.lock().clone().unwrap();
    assert!(
        q.starts_with("symbol=BTCUSDT&origClientOrderId=mmd-1&"),
        "{q}"
    );
    // The two orders count against the budget (the miss before the line opened does
    // not), and the answers' weight headers reach it, as the async path's do.
    let st = c.rate_limit_status();
    assert_eq!((st.orders_10s, st.used_weight_1m), (2, 3));
    assert_eq!(c.idle_order_lines(), 1, "one line carried all three");
}

#[tokio::test]
async fn a_written_order_refused_for_its_timestamp_is_resent_once_after_a_resync() {
    let (srv, url) = start().await;
    srv.skew_ms.store(600_000, Ordering::SeqCst);
    let c = client(&url);
    c.keep_order_lines(1);
    idle_line(&c).await;
    let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
    c.written_response(w).await.unwrap();
    // order (rejected, -1021) + time + order (accepted)
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);
    assert!((c.time_offset_ms() - 600_000).abs() < 1_000);
}

#[tokio::test]
async fn a_written_order_left_unanswered_times_out_unknown_and_the_line_is_replaced() {
    let (srv, url) = start().await;
    late_then_busy(&srv);
    let c = client(&url);
    c.keep_order_lines(1);
    idle_line(&c).await;
    let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
    let e = c.written_response(w).await.unwrap_err();
    assert_eq!(e, RestError::Timeout);
    assert!(e.outcome_unknown());
    // The late answer is never read as the next request's: that line is gone and a new
    // one carries the next order.
    idle_line(&c).await;
    let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
    let e = c.written_response(w).await.unwrap_err();
    assert_eq!(e, RestError::Server { http_status: 503 });
    assert!(e.outcome_unknown());
    idle_line(&c).await;
    let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
    assert_eq!(c.written_response(w).await.unwrap().order_id, 7);
}

#[tokio::test]
async fn a_written_order_refused_by_the_budget_is_not_sent() {
    let (srv, url) = start().await;
    srv.script.lock().push_back(Scripted::Status(
        429,
        vec![("retry-after", "30".into())],
        r#"{"code":-1003,"msg":"Too many requests."}"#.into(),
    ));
    let c = client(&url);
    c.keep_order_lines(1);
    idle_line(&c).await;
    let w = c.place_order_now(&order("BTCUSDT")).unwrap().unwrap();
    let e = c.written_response(w).await.unwrap_err();
    assert_eq!(
        e,
        RestError::RateLimited {
            retry_after: Duration::from_secs(30)
        }
    );
    idle_line(&c).await;
    let e = c.place_order_now(&order("BTCUSDT")).err().expect("refused");
    assert!(matches!(e, RestError::RateLimited { .. }), "{e:?}");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_line_the_server_closed_is_replaced_and_no_request_is_lost() {
    let srv = raw_server(1).await;
    let c = client(&srv.url);
    c.keep_order_lines(1);
    for round in 1..=3 {
        // No pause after the server's close: a line it closed a moment ago may still be
        // listed idle, and must be passed over (None: nothing sent) rather than carry
        // the order into a closed socket.
        let w = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                idle_line(&c).await;
                if let Some(w) = c.place_order_now(&order("BTCUSDT")).unwrap() {
                    break w;
                }
            }
        })
        .await
        .expect("a line takes the order");
        assert_eq!(c.written_response(w).await.unwrap().order_id, 7);
        assert_eq!(srv.heads.lock().len(), round);
    }
    assert_eq!(srv.connections.load(Ordering::SeqCst), 3);
    let heads = srv.heads.lock().clone();
    let host = srv.url.trim_start_matches("http://");
    for h in &heads {
        assert!(h.starts_with("POST /api/v3/order?symbol=BTCUSDT&"), "{h}");
        let lower = h.to_ascii_lowercase();
        assert!(lower.contains(&format!("\r\nhost: {host}\r\n")), "{h}");
        assert!(lower.contains("\r\ncontent-length: 0\r\n"), "{h}");
    }
}
