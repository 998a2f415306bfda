//! Market and user streams against a small Binance-like server on 127.0.0.1
//! (axum WebSockets + listen-key REST + WebSocket API), with short timings:
//! rotation before the server's cutoff with no gap and no duplicate, reconnect
//! after drops and dead (silent) connections, serverShutdown, live SUBSCRIBE,
//! listen-key keepalive failure / expiry, and the WebSocket API transport with
//! HMAC and Ed25519 keys.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use mmd::binance::decode::SymbolSet;
use mmd::binance::market::{MarketMode, spawn_market_stream};
use mmd::binance::rest::{RestClient, RestSettings};
use mmd::binance::sign::{Ed25519Signer, HmacSigner, Signer, ws_api_payload};
use mmd::binance::stream::{ConnectReason, StreamEvent, StreamKind, StreamSettings};
use mmd::binance::types::{MarketEvent, UserEvent};
use mmd::binance::user_stream::spawn_user_stream;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};

const KEY: &str = "stream-test-key";
const SECRET: &[u8] = b"stream-test-secret";
const ED25519_SEED: [u8; 32] = [7u8; 32];

#[derive(Clone, Debug)]
enum Control {
    Close(usize),
    Freeze(usize),
    Send(usize, String),
}

struct Hub {
    ticks: broadcast::Sender<u64>,
    control: broadcast::Sender<Control>,
    conns: AtomicUsize,
    cutoff: Duration,
    paths: Mutex<Vec<String>>,
    client_msgs: Mutex<Vec<String>>,
    key: Mutex<String>,
    key_serial: AtomicUsize,
    fail_next_put: AtomicUsize,
    deleted: Mutex<Vec<String>>,
}

fn ticker_arr(n: u64) -> String {
    let one = |s: &str| {
        format!(
            r#"{{"e":"24hrTicker","E":{n},"s":"{s}","p":"0.1","P":"1.0","w":"1","x":"1","c":"1.5","Q":"1","b":"1.4","B":"2","a":"1.6","A":"3","o":"1","h":"2","l":"1","v":"10","q":"10","O":0,"C":1,"F":0,"L":1,"n":2}}"#
        )
    };
    format!("[{},{},{}]", one("AAAUSDT"), one("BTCUSDT"), one("ZZZUSDT"))
}

fn book_ticker(stream: &str, n: u64) -> String {
    let symbol = stream.split('@').next().unwrap().to_uppercase();
    format!(
        r#"{{"stream":"{stream}","data":{{"u":{n},"s":"{symbol}","b":"1.00","B":"1","a":"1.01","A":"1"}}}}"#
    )
}

fn balance_update(n: u64) -> String {
    format!(r#"{{"e":"balanceUpdate","E":{n},"a":"BTC","d":"1.00000000","T":{n}}}"#)
}

enum Kind {
    TickerArr,
    Combined(BTreeSet<String>),
    ListenKey,
    WsApi,
}

async fn serve_socket(mut socket: WebSocket, hub: Arc<Hub>, mut kind: Kind) {
    let idx = hub.conns.fetch_add(1, Ordering::SeqCst);
    let mut ticks = hub.ticks.subscribe();
    let mut control = hub.control.subscribe();
    let cutoff = tokio::time::sleep(hub.cutoff);
    tokio::pin!(cutoff);
    let mut subscription: Option<usize> = None;
    loop {
        tokio::select! {
            _ = &mut cutoff => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            t = ticks.recv() => {
                let Ok(n) = t else { continue };
                let frames: Vec<String> = match &kind {
                    Kind::TickerArr => vec![ticker_arr(n)],
                    Kind::Combined(streams) => streams.iter().map(|s| book_ticker(s, n)).collect(),
                    Kind::ListenKey => vec![balance_update(n)],
                    Kind::WsApi => match subscription {
                        Some(sid) => vec![format!(r#"{{"subscriptionId":{sid},"event":{}}}"#, balance_update(n))],
                        None => vec![],
                    },
                };
                for f in frames {
                    if socket.send(Message::Text(f.into())).await.is_err() {
                        return;
                    }
                }
            }
            c = control.recv() => match c {
                Ok(Control::Close(i)) if i == idx => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Ok(Control::Freeze(i)) if i == idx => {
                    // Neither read (so no pongs) nor write, but keep the TCP socket open.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                Ok(Control::Send(i, text)) if i == idx => {
                    let _ = socket.send(Message::Text(text.into())).await;
                }
                _ => {}
            },
            m = socket.recv() => {
                let Some(Ok(m)) = m else { return };
                let Message::Text(text) = m else { continue };
                hub.client_msgs.lock().push(text.to_string());
                let req: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                match &mut kind {
                    Kind::Combined(streams) => {
                        let params: Vec<String> = serde_json::from_value(req["params"].clone()).unwrap();
                        for p in params {
                            if req["method"] == "SUBSCRIBE" { streams.insert(p); } else { streams.remove(&p); }
                        }
                        let reply = format!(r#"{{"result":null,"id":{}}}"#, req["id"]);
                        let _ = socket.send(Message::Text(reply.into())).await;
                    }
                    Kind::WsApi => {
                        let id = req["id"].clone();
                        let p = &req["params"];
                        let payload = || ws_api_payload([
                            ("apiKey", p["apiKey"].as_str().unwrap_or_default()),
                            ("timestamp", &p["timestamp"].to_string()),
                        ]);
                        let ok = match req["method"].as_str().unwrap() {
                            "userDataStream.subscribe.signature" => {
                                HmacSigner::new(SECRET).verify_hex(payload().as_bytes(), p["signature"].as_str().unwrap())
                            }
                            "session.logon" => Ed25519Signer::from_bytes(&ED25519_SEED)
                                .verify_base64(payload().as_bytes(), p["signature"].as_str().unwrap()),
                            // Only valid after a logon on this connection.
                            "userDataStream.subscribe" => hub.client_msgs.lock().iter().any(|m| m.contains("session.logon")),
                            _ => false,
                        };
                        let reply = if !ok {
                            serde_json::json!({"id": id, "status": 401, "error": {"code": -1022, "msg": "Signature for this request is not valid."}})
                        } else if req["method"] == "session.logon" {
                            serde_json::json!({"id": id, "status": 200, "result": {"apiKey": KEY}})
                        } else {
                            subscription = Some(idx);
                            serde_json::json!({"id": id, "status": 200, "result": {"subscriptionId": idx}})
                        };
                        let _ = socket.send(Message::Text(reply.to_string().into())).await;
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn ws_path(
    ws: WebSocketUpgrade,
    Path(path): Path<String>,
    State(hub): State<Arc<Hub>>,
) -> axum::response::Response {
    hub.paths.lock().push(format!("/ws/{path}"));
    let kind = if path == "!ticker@arr" {
        Kind::TickerArr
    } else if *hub.key.lock() == path {
        Kind::ListenKey
    } else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    ws.on_upgrade(move |s| serve_socket(s, hub, kind))
}

async fn ws_combined(
    ws: WebSocketUpgrade,
    RawQuery(q): RawQuery,
    State(hub): State<Arc<Hub>>,
) -> axum::response::Response {
    let q = q.unwrap_or_default();
    hub.paths.lock().push(format!("/stream?{q}"));
    let streams = q
        .strip_prefix("streams=")
        .map(|s| s.split('/').map(str::to_owned).collect())
        .unwrap_or_default();
    ws.on_upgrade(move |s| serve_socket(s, hub, Kind::Combined(streams)))
}

async fn ws_api(ws: WebSocketUpgrade, State(hub): State<Arc<Hub>>) -> axum::response::Response {
    hub.paths.lock().push("/ws-api/v3".into());
    ws.on_upgrade(move |s| serve_socket(s, hub, Kind::WsApi))
}

async fn listen_key(
    method: Method,
    RawQuery(q): RawQuery,
    State(hub): State<Arc<Hub>>,
) -> axum::response::Response {
    let q = q.unwrap_or_default();
    let given = q.strip_prefix("listenKey=").unwrap_or_default().to_owned();
    match method.as_str() {
        "POST" => {
            let key = hub.key.lock().clone();
            format!(r#"{{"listenKey":"{key}"}}"#).into_response()
        }
        "PUT" => {
            if hub.fail_next_put.load(Ordering::SeqCst) > 0 {
                hub.fail_next_put.fetch_sub(1, Ordering::SeqCst);
                // The key is gone: the next POST hands out a new one.
                let n = hub.key_serial.fetch_add(1, Ordering::SeqCst) + 1;
                *hub.key.lock() = format!("key{n}");
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"code":-1125,"msg":"This listenKey does not exist."}"#,
                )
                    .into_response();
            }
            "{}".into_response()
        }
        "DELETE" => {
            hub.deleted.lock().push(given);
            "{}".into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn start(cutoff: Duration) -> (Arc<Hub>, String) {
    let (ticks, _) = broadcast::channel(4096);
    let (control, _) = broadcast::channel(64);
    let hub = Arc::new(Hub {
        ticks,
        control,
        conns: AtomicUsize::new(0),
        cutoff,
        paths: Mutex::new(Vec::new()),
        client_msgs: Mutex::new(Vec::new()),
        key: Mutex::new("key0".into()),
        key_serial: AtomicUsize::new(0),
        fail_next_put: AtomicUsize::new(0),
        deleted: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/ws/{*path}", get(ws_path))
        .route("/stream", get(ws_combined))
        .route("/ws-api/v3", get(ws_api))
        .route("/api/v3/userDataStream", any(listen_key))
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let ticks = hub.ticks.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut every = tokio::time::interval(Duration::from_millis(5));
        loop {
            every.tick().await;
            n += 1;
            let _ = ticks.send(n);
        }
    });
    (hub, addr.to_string())
}

fn settings(addr: &str, max_age: Duration) -> StreamSettings {
    StreamSettings {
        stream_url: format!("ws://{addr}"),
        ws_api_url: None,
        max_connection_age: max_age,
        reconnect_min_backoff: Duration::from_millis(50),
        reconnect_max_backoff: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(600),
        keepalive_interval: Duration::from_secs(3600),
        tls: mmd::tls::client_config(&[]).unwrap(),
    }
}

fn rest(addr: &str, signer: Signer) -> RestClient {
    RestClient::new(RestSettings {
        base_url: format!("http://{addr}"),
        api_key: Some(KEY.into()),
        signer: Some(signer),
        recv_window: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

/// Everything received during `d`.
async fn collect(rx: &mut mpsc::Receiver<StreamEvent>, d: Duration) -> Vec<StreamEvent> {
    let end = tokio::time::Instant::now() + d;
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(ev);
    }
    out
}

fn connects(evs: &[StreamEvent], stream: StreamKind) -> Vec<ConnectReason> {
    evs.iter()
        .filter_map(|e| match e {
            StreamEvent::Connected { stream: s, reason } if *s == stream => Some(*reason),
            _ => None,
        })
        .collect()
}

fn disconnects(evs: &[StreamEvent]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            StreamEvent::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// The tick numbers carried by market or user events, in arrival order.
fn ticks(evs: &[StreamEvent]) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            StreamEvent::Market {
                event: MarketEvent::Ticker(t),
                ..
            } => Some(t.event_time),
            StreamEvent::Market {
                event: MarketEvent::BookTicker(b),
                ..
            } => Some(b.update_id),
            StreamEvent::User {
                event: UserEvent::BalanceUpdate(b),
                ..
            } => Some(b.event_time),
            _ => None,
        })
        .collect()
}

/// Every tick between the first and the last seen, each exactly once.
fn assert_no_gap_no_dup(seen: &[u64]) {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for n in seen {
        *counts.entry(*n).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    let (lo, hi) = (*seen.iter().min().unwrap(), *seen.iter().max().unwrap());
    let missing: Vec<u64> = (lo..=hi).filter(|n| !counts.contains_key(n)).collect();
    assert!(missing.is_empty(), "missing ticks: {missing:?}");
}

#[tokio::test]
async fn ticker_arr_rotates_before_the_cutoff_without_gap_or_duplicate() {
    let (hub, addr) = start(Duration::from_millis(1_300)).await;
    let (tx, mut rx) = mpsc::channel(100_000);
    let h = spawn_market_stream(
        settings(&addr, Duration::from_secs(1)),
        MarketMode::TickerArr,
        vec!["BTCUSDT".into()],
        tx,
    );
    let evs = collect(&mut rx, Duration::from_millis(3_600)).await;
    h.shutdown().await;
    let reasons = connects(&evs, StreamKind::Market);
    assert_eq!(reasons[0], ConnectReason::Initial);
    assert!(reasons.len() >= 3, "{reasons:?}");
    assert!(
        reasons[1..].iter().all(|r| *r == ConnectReason::Planned),
        "{reasons:?}"
    );
    assert!(disconnects(&evs).is_empty(), "{:?}", disconnects(&evs));
    let seen = ticks(&evs);
    assert!(seen.len() > 400, "{}", seen.len());
    assert_no_gap_no_dup(&seen);
    // Only the wanted symbol was decoded.
    assert!(evs.iter().all(|e| !matches!(e, StreamEvent::Market { event: MarketEvent::Ticker(t), .. } if t.symbol != "BTCUSDT")));
    assert!(hub.paths.lock().iter().all(|p| p == "/ws/!ticker@arr"));
}

#[tokio::test]
async fn dropped_and_silent_connections_reconnect() {
    let (hub, addr) = start(Duration::from_secs(60)).await;
    let (tx, mut rx) = mpsc::channel(100_000);
    let h = spawn_market_stream(
        settings(&addr, Duration::from_secs(60)),
        MarketMode::TickerArr,
        vec!["BTCUSDT".into()],
        tx,
    );
    collect(&mut rx, Duration::from_millis(200)).await;
    let closed_at = Instant::now();
    hub.control.send(Control::Close(0)).unwrap();
    let evs = collect(&mut rx, Duration::from_millis(300)).await;
    assert_eq!(
        connects(&evs, StreamKind::Market),
        vec![ConnectReason::Error]
    );
    assert_eq!(disconnects(&evs).len(), 1);
    // First retry is immediate.
    assert!(closed_at.elapsed() < Duration::from_millis(400));
    // Silent server: no frames, no pongs.
    hub.control.send(Control::Freeze(1)).unwrap();
    let evs = collect(&mut rx, Duration::from_millis(1_500)).await;
    let d = disconnects(&evs);
    assert!(d.iter().any(|r| r.contains("presumed dead")), "{d:?}");
    assert_eq!(
        connects(&evs, StreamKind::Market),
        vec![ConnectReason::Error]
    );
    assert!(!ticks(&evs[evs.len() - 5..]).is_empty(), "data flows again");
    h.shutdown().await;
}

#[tokio::test]
async fn server_shutdown_rotates_early_and_bookticker_subscriptions_change_live() {
    let (hub, addr) = start(Duration::from_secs(60)).await;
    let (tx, mut rx) = mpsc::channel(100_000);
    let h = spawn_market_stream(
        settings(&addr, Duration::from_secs(60)),
        MarketMode::BookTicker,
        vec!["BTCUSDT".into()],
        tx,
    );
    let evs = collect(&mut rx, Duration::from_millis(200)).await;
    assert_eq!(
        connects(&evs, StreamKind::Market),
        vec![ConnectReason::Initial]
    );
    assert_eq!(hub.paths.lock()[0], "/stream?streams=btcusdt@bookTicker");
    h.update_symbols(vec!["BTCUSDT".into(), "ETHUSDT".into()]);
    let evs = collect(&mut rx, Duration::from_millis(300)).await;
    let symbols: BTreeSet<String> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Market {
                event: MarketEvent::BookTicker(b),
                ..
            } => Some(b.symbol.clone()),
            _ => None,
        })
        .collect();
    assert!(symbols.contains("ETHUSDT"), "{symbols:?}");
    let msgs = hub.client_msgs.lock().clone();
    assert_eq!(msgs.len(), 1);
    let m: serde_json::Value = serde_json::from_str(&msgs[0]).unwrap();
    assert_eq!(m["method"], "SUBSCRIBE");
    assert_eq!(m["params"], serde_json::json!(["ethusdt@bookTicker"]));

    hub.control
        .send(Control::Send(
            0,
            r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}"#.into(),
        ))
        .unwrap();
    let evs = collect(&mut rx, Duration::from_millis(500)).await;
    assert_eq!(
        connects(&evs, StreamKind::Market),
        vec![ConnectReason::Planned]
    );
    assert!(disconnects(&evs).is_empty());
    assert!(hub.paths.lock()[1].contains("ethusdt@bookTicker"));
    let per_symbol = |sym: &str| {
        let v: Vec<u64> = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Market {
                    event: MarketEvent::BookTicker(b),
                    ..
                } if b.symbol == sym => Some(b.update_id),
                _ => None,
            })
            .collect();
        v
    };
    assert_no_gap_no_dup(&per_symbol("BTCUSDT"));
    assert_no_gap_no_dup(&per_symbol("ETHUSDT"));
    h.update_symbols(vec!["ETHUSDT".into()]);
    collect(&mut rx, Duration::from_millis(300)).await;
    let evs = collect(&mut rx, Duration::from_millis(200)).await;
    assert!(per_symbol_is_only(&evs, "ETHUSDT"));
    let last: serde_json::Value =
        serde_json::from_str(hub.client_msgs.lock().last().unwrap()).unwrap();
    assert_eq!(last["method"], "UNSUBSCRIBE");
    h.shutdown().await;
}

fn per_symbol_is_only(evs: &[StreamEvent], sym: &str) -> bool {
    let mut any = false;
    for e in evs {
        if let StreamEvent::Market {
            event: MarketEvent::BookTicker(b),
            ..
        } = e
        {
            if b.symbol != sym {
                return false;
            }
            any = true;
        }
    }
    any
}

#[tokio::test]
async fn listen_key_keepalive_failure_expiry_rotation_and_delete() {
    let (hub, addr) = start(Duration::from_millis(1_300)).await;
    let (tx, mut rx) = mpsc::channel(100_000);
    let mut s = settings(&addr, Duration::from_secs(1));
    s.keepalive_interval = Duration::from_millis(700);
    let h = spawn_user_stream(s, rest(&addr, Signer::Hmac(HmacSigner::new(SECRET))), tx);
    let evs = collect(&mut rx, Duration::from_millis(2_500)).await;
    assert!(evs.contains(&StreamEvent::ListenKeyCreated { changed: true }));
    assert!(evs.contains(&StreamEvent::Keepalive {
        ok: true,
        error: None
    }));
    let reasons = connects(&evs, StreamKind::User);
    assert_eq!(reasons[0], ConnectReason::Initial);
    assert!(
        reasons[1..].contains(&ConnectReason::Planned),
        "{reasons:?}"
    );
    assert!(disconnects(&evs).is_empty(), "{:?}", disconnects(&evs));
    assert_no_gap_no_dup(&ticks(&evs));

    // A failed keepalive: POST at once, the key changed, move to it.
    hub.fail_next_put.store(1, Ordering::SeqCst);
    let evs = collect(&mut rx, Duration::from_millis(1_000)).await;
    assert!(evs.iter().any(|e| matches!(e, StreamEvent::Keepalive { ok: false, error: Some(m) } if m.contains("-1125"))), "{evs:?}");
    assert!(evs.contains(&StreamEvent::ListenKeyCreated { changed: true }));
    assert!(connects(&evs, StreamKind::User).contains(&ConnectReason::Expired));
    assert!(hub.paths.lock().iter().any(|p| p == "/ws/key1"));

    // listenKeyExpired on the live connection: new key, reconnect as expiry.
    let n = hub.key_serial.fetch_add(1, Ordering::SeqCst) + 1;
    let old = std::mem::replace(&mut *hub.key.lock(), format!("key{n}"));
    let last_conn = hub.conns.load(Ordering::SeqCst) - 1;
    hub.control
        .send(Control::Send(
            last_conn,
            format!(r#"{{"e":"listenKeyExpired","E":1,"listenKey":"{old}"}}"#),
        ))
        .unwrap();
    let evs = collect(&mut rx, Duration::from_millis(500)).await;
    assert!(
        connects(&evs, StreamKind::User).contains(&ConnectReason::Expired),
        "{evs:?}"
    );
    assert!(hub.paths.lock().iter().any(|p| *p == format!("/ws/key{n}")));
    h.shutdown().await;
    assert_eq!(hub.deleted.lock().as_slice(), [format!("key{n}")]);
}

#[tokio::test]
async fn ws_api_hmac_subscribe_rotation_dedup_and_termination() {
    let (hub, addr) = start(Duration::from_millis(1_300)).await;
    let (tx, mut rx) = mpsc::channel(100_000);
    let mut s = settings(&addr, Duration::from_secs(1));
    s.ws_api_url = Some(format!("ws://{addr}/ws-api/v3"));
    let client = rest(&addr, Signer::Hmac(HmacSigner::new(SECRET)));
    let h = spawn_user_stream(s, client, tx);
    let evs = collect(&mut rx, Duration::from_millis(2_600)).await;
    let reasons = connects(&evs, StreamKind::User);
    assert_eq!(reasons[0], ConnectReason::Initial);
    assert!(
        reasons.len() >= 3 && reasons[1..].iter().all(|r| *r == ConnectReason::Planned),
        "{reasons:?}"
    );
    // Each connection wraps events with its own subscriptionId; dedup still works.
    assert_no_gap_no_dup(&ticks(&evs));
    assert!(
        hub.client_msgs
            .lock()
            .iter()
            .all(|m| m.contains("userDataStream.subscribe.signature"))
    );
    assert!(
        !hub.paths.lock().iter().any(|p| p.starts_with("/ws/")),
        "no listen key used"
    );

    let last_conn = hub.conns.load(Ordering::SeqCst) - 1;
    hub.control
        .send(Control::Send(
            last_conn,
            format!(
                r#"{{"subscriptionId":{last_conn},"event":{{"e":"eventStreamTerminated","E":1}}}}"#
            ),
        ))
        .unwrap();
    let evs = collect(&mut rx, Duration::from_millis(400)).await;
    assert!(
        disconnects(&evs)
            .iter()
            .any(|d| d.contains("eventStreamTerminated")),
        "{evs:?}"
    );
    assert!(connects(&evs, StreamKind::User).contains(&ConnectReason::Error));
    h.shutdown().await;
}

#[tokio::test]
async fn ws_api_ed25519_logs_on_then_subscribes() {
    let (hub, addr) = start(Duration::from_secs(60)).await;
    let (tx, mut rx) = mpsc::channel(100_000);
    let mut s = settings(&addr, Duration::from_secs(60));
    s.ws_api_url = Some(format!("ws://{addr}/ws-api/v3"));
    let client = rest(
        &addr,
        Signer::Ed25519(Ed25519Signer::from_bytes(&ED25519_SEED)),
    );
    let h = spawn_user_stream(s, client, tx);
    let evs = collect(&mut rx, Duration::from_millis(400)).await;
    assert_eq!(
        connects(&evs, StreamKind::User),
        vec![ConnectReason::Initial]
    );
    assert!(ticks(&evs).len() > 10);
    let msgs = hub.client_msgs.lock().clone();
    assert!(
        msgs[0].contains("session.logon") && msgs[1].contains("\"userDataStream.subscribe\""),
        "{msgs:?}"
    );
    h.shutdown().await;

    // A wrong key is refused and reported, never connected.
    let (tx, mut rx) = mpsc::channel(1_000);
    let mut s = settings(&addr, Duration::from_secs(60));
    s.ws_api_url = Some(format!("ws://{addr}/ws-api/v3"));
    let client = rest(&addr, Signer::Hmac(HmacSigner::new(b"wrong")));
    let h = spawn_user_stream(s, client, tx);
    let evs = collect(&mut rx, Duration::from_millis(400)).await;
    assert!(connects(&evs, StreamKind::User).is_empty());
    h.shutdown().await;
    let _ = SymbolSet::default();
}

#[tokio::test]
async fn listen_key_expired_while_disconnected_is_renewed_not_retried_blindly() {
    let (hub, addr) = start(Duration::from_secs(60)).await;
    let (tx, mut rx) = mpsc::channel(100_000);
    let h = spawn_user_stream(
        settings(&addr, Duration::from_secs(60)),
        rest(&addr, Signer::Hmac(HmacSigner::new(SECRET))),
        tx,
    );
    let evs = collect(&mut rx, Duration::from_millis(300)).await;
    assert_eq!(
        connects(&evs, StreamKind::User),
        vec![ConnectReason::Initial]
    );
    // The key dies with the connection: reconnecting to it is refused (400).
    *hub.key.lock() = "key-after-outage".into();
    hub.control.send(Control::Close(0)).unwrap();
    let evs = collect(&mut rx, Duration::from_millis(800)).await;
    assert_eq!(disconnects(&evs).len(), 1, "{evs:?}");
    assert!(
        evs.contains(&StreamEvent::ListenKeyCreated { changed: true }),
        "{evs:?}"
    );
    assert_eq!(
        connects(&evs, StreamKind::User),
        vec![ConnectReason::Expired]
    );
    assert!(hub.paths.lock().iter().any(|p| p == "/ws/key-after-outage"));
    assert!(!ticks(&evs).is_empty());
    h.shutdown().await;
}
