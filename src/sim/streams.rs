//! WebSocket market streams (`/ws/<stream>`, `/stream?streams=a/b`) and the listen-key
//! user data stream (`/ws/<listenKey>`), with Binance's connection lifecycle: server
//! pings, pong timeout, forced close at `max_connection_age`, `listenKeyExpired`.

use super::Shared;
use super::config::Dialect;
use super::exchange::{ConnCtl, ConnKind, UserEvent};
use super::stats::StatsCounters;
use super::wire::{BareEvent, ListenKeyExpired};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// One market stream a connection is subscribed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MarketStream {
    TickerArr,
    Ticker(u32),
    BookTicker(u32),
}

/// Every symbol's 24hrTicker of one ticker interval.
pub struct TickerBatch {
    pub arr: String,
    pub per_symbol: Vec<String>,
}

fn parse_stream(sh: &Shared, name: &str) -> Result<MarketStream, String> {
    if name == "!ticker@arr" {
        if sh.cfg.dialect == Dialect::Y2026 {
            return Err("Invalid request: stream !ticker@arr is no longer available".into());
        }
        return Ok(MarketStream::TickerArr);
    }
    let (sym, kind) = name
        .rsplit_once('@')
        .ok_or_else(|| format!("Invalid request: unknown stream {name}"))?;
    let ex = sh.exchange.lock();
    let idx = ex
        .symbol_by_lower(sym)
        .ok_or_else(|| format!("Invalid request: unknown symbol in stream {name}"))?;
    match kind {
        "ticker" => Ok(MarketStream::Ticker(idx)),
        "bookTicker" | "bookticker" => Ok(MarketStream::BookTicker(idx)),
        _ => Err(format!("Invalid request: unsupported stream {name}")),
    }
}

fn bad_request(msg: &str) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        serde_json::json!({"code": -1100, "msg": msg}).to_string(),
    )
        .into_response()
}

/// `/ws/<stream>` or `/ws/<listenKey>`.
pub(crate) async fn ws_raw(
    State(sh): State<Arc<Shared>>,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let account = sh.exchange.lock().listen_key_account(&name);
    if let Some(account) = account {
        if sh.cfg.dialect == Dialect::Y2026 {
            return bad_request("listenKey streams are retired; use the WebSocket API");
        }
        return upgrade_user(sh, ws, account, name, false);
    }
    if !name.contains('@') && name.len() >= 32 {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            serde_json::json!({"code": -1125, "msg": "This listenKey does not exist."}).to_string(),
        )
            .into_response();
    }
    let streams: Result<Vec<(String, MarketStream)>, String> = name
        .split('/')
        .map(|n| parse_stream(&sh, n).map(|s| (n.to_string(), s)))
        .collect();
    match streams {
        Ok(streams) => ws
            .on_upgrade(move |socket| market_conn(sh, socket, streams, false))
            .into_response(),
        Err(e) => bad_request(&e),
    }
}

/// `/stream?streams=a/b/c` (combined: `{"stream":..,"data":..}`).
pub(crate) async fn ws_combined(
    State(sh): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let names: Vec<String> = q
        .get("streams")
        .map(|s| {
            s.split('/')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if names.len() == 1 {
        let account = sh.exchange.lock().listen_key_account(&names[0]);
        if let Some(account) = account {
            if sh.cfg.dialect == Dialect::Y2026 {
                return bad_request("listenKey streams are retired; use the WebSocket API");
            }
            let key = names[0].clone();
            return upgrade_user(sh, ws, account, key, true);
        }
    }
    let streams: Result<Vec<(String, MarketStream)>, String> = names
        .iter()
        .map(|n| parse_stream(&sh, n).map(|s| (n.clone(), s)))
        .collect();
    match streams {
        Ok(streams) => ws
            .on_upgrade(move |socket| market_conn(sh, socket, streams, true))
            .into_response(),
        Err(e) => bad_request(&e),
    }
}

fn wrap(combined: bool, stream: &str, data: &str) -> String {
    if combined {
        format!("{{\"stream\":\"{stream}\",\"data\":{data}}}")
    } else {
        data.to_string()
    }
}

pub(crate) fn server_shutdown_json(now: u64) -> String {
    serde_json::to_string(&BareEvent {
        e: "serverShutdown",
        event_time: now,
    })
    .unwrap_or_default()
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Sends one text frame; false if the socket is gone.
async fn send_text<S>(tx: &mut S, text: String) -> bool
where
    S: SinkExt<Message> + Unpin,
{
    tx.send(Message::Text(text.into())).await.is_ok()
}

pub(crate) async fn send_injected<S>(tx: &mut S, kind: super::faults::FrameKind, now: u64) -> bool
where
    S: SinkExt<Message> + Unpin,
{
    match kind.text(now) {
        Some(t) => tx.send(Message::Text(t.into())).await.is_ok(),
        None => tx
            .send(Message::Binary(vec![0xde, 0xad, 0xbe, 0xef, 0x00].into()))
            .await
            .is_ok(),
    }
}

/// Lifecycle timers shared by every connection kind.
pub(crate) struct Lifecycle {
    pub deadline: tokio::time::Instant,
    pub ping: tokio::time::Interval,
    pub last_pong: Instant,
    pub pong_timeout: Duration,
}

impl Lifecycle {
    pub fn new(sh: &Shared) -> Self {
        let mut ping = tokio::time::interval(sh.cfg.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        Self {
            deadline: tokio::time::Instant::now() + sh.cfg.max_connection_age,
            ping,
            last_pong: Instant::now(),
            pong_timeout: sh.cfg.pong_timeout,
        }
    }
}

async fn market_conn(
    sh: Arc<Shared>,
    socket: WebSocket,
    mut streams: Vec<(String, MarketStream)>,
    combined: bool,
) {
    let (mut tx, mut rx) = socket.split();
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let (conn_id, mut book_rx) = {
        let mut ex = sh.exchange.lock();
        (
            ex.register_conn(ConnKind::Market, ctl_tx),
            ex.book_ticker_receiver(),
        )
    };
    let mut tick_rx = sh.tickers.subscribe();
    let mut life = Lifecycle::new(&sh);
    let mut shutdown = sh.shutdown.subscribe();
    let mut msg_times: Vec<Instant> = Vec::new();
    let reason: &'static str = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(life.deadline) => {
                if sh.cfg.dialect == Dialect::Y2026 {
                    let ev = server_shutdown_json(sh.clock.now_ms());
                    let _ = send_text(&mut tx, wrap(combined, "!serverShutdown", &ev)).await;
                }
                let _ = tx.send(close_frame(1000, "max connection age")).await;
                break "max_age";
            }
            _ = life.ping.tick() => {
                if life.last_pong.elapsed() > life.pong_timeout {
                    break "pong_timeout";
                }
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break "error";
                }
            }
            _ = shutdown.changed() => {
                let _ = tx.send(close_frame(1001, "server shutting down")).await;
                break "shutdown";
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Pong(_))) => life.last_pong = Instant::now(),
                Some(Ok(Message::Ping(_))) => life.last_pong = Instant::now(),
                Some(Ok(Message::Text(t))) => {
                    // Binance: at most 5 incoming messages per second per connection.
                    let now = Instant::now();
                    msg_times.retain(|t| now.duration_since(*t) < Duration::from_secs(1));
                    msg_times.push(now);
                    if msg_times.len() > 5 {
                        let _ = tx.send(close_frame(1008, "too many messages")).await;
                        break "too_many_messages";
                    }
                    let reply = handle_control(&sh, &t, &mut streams);
                    if !send_text(&mut tx, reply).await {
                        break "error";
                    }
                }
                Some(Ok(Message::Binary(_))) => {}
                Some(Ok(Message::Close(_))) | None => break "client",
                Some(Err(_)) => break "error",
            },
            batch = tick_rx.recv() => match batch {
                Ok(batch) => {
                    for (name, s) in &streams {
                        let data = match s {
                            MarketStream::TickerArr => &batch.arr,
                            MarketStream::Ticker(i) => match batch.per_symbol.get(*i as usize) {
                                Some(d) => d,
                                None => continue,
                            },
                            MarketStream::BookTicker(_) => continue,
                        };
                        StatsCounters::inc(&sh.stats.market_events_sent);
                        if !send_text(&mut tx, wrap(combined, name, data)).await {
                            break;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break "shutdown",
            },
            bt = book_rx.recv() => match bt {
                Ok(bt) => {
                    if let Some((name, _)) = streams.iter().find(|(_, s)| *s == MarketStream::BookTicker(bt.symbol)) {
                        StatsCounters::inc(&sh.stats.market_events_sent);
                        if !send_text(&mut tx, wrap(combined, name, &bt.json)).await {
                            break "error";
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break "shutdown",
            },
            ctl = ctl_rx.recv() => match ctl {
                Some(ConnCtl::Abort) | None => break "fault_abort",
                Some(ConnCtl::Restart) => break "restart",
                Some(ConnCtl::ServerShutdown) => {
                    let ev = server_shutdown_json(sh.clock.now_ms());
                    let _ = send_text(&mut tx, wrap(combined, "!serverShutdown", &ev)).await;
                    let _ = tx.send(close_frame(1001, "server shutdown")).await;
                    break "server_shutdown";
                }
                Some(ConnCtl::ListenKeyExpired(_)) => {}
                Some(ConnCtl::Inject(kind)) => {
                    if !send_injected(&mut tx, kind, sh.clock.now_ms()).await {
                        break "error";
                    }
                }
            },
        }
    };
    sh.exchange.lock().unregister_conn(conn_id);
    sh.stats.connection_closed(reason);
}

/// SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS on a market connection.
fn handle_control(sh: &Shared, text: &str, streams: &mut Vec<(String, MarketStream)>) -> String {
    #[derive(serde::Deserialize)]
    struct Req {
        method: String,
        #[serde(default)]
        params: Vec<String>,
        id: serde_json::Value,
    }
    let req: Req = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            return serde_json::json!({"error": {"code": 3, "msg": format!("Invalid JSON: {e}")}, "id": null})
                .to_string();
        }
    };
    let err = |msg: String| {
        serde_json::json!({"error": {"code": 2, "msg": msg}, "id": req.id}).to_string()
    };
    match req.method.as_str() {
        "SUBSCRIBE" => {
            let mut add = Vec::new();
            for n in &req.params {
                match parse_stream(sh, n) {
                    Ok(s) => add.push((n.clone(), s)),
                    Err(e) => return err(e),
                }
            }
            for (n, s) in add {
                if !streams.iter().any(|(_, x)| *x == s) {
                    streams.push((n, s));
                }
            }
            serde_json::json!({"result": null, "id": req.id}).to_string()
        }
        "UNSUBSCRIBE" => {
            streams.retain(|(n, _)| !req.params.contains(n));
            serde_json::json!({"result": null, "id": req.id}).to_string()
        }
        "LIST_SUBSCRIPTIONS" => {
            let names: Vec<&String> = streams.iter().map(|(n, _)| n).collect();
            serde_json::json!({"result": names, "id": req.id}).to_string()
        }
        other => err(format!("Invalid request: unknown method {other}")),
    }
}

/// Applies the user-event faults (delay, duplicate, reorder) in front of a socket.
pub(crate) struct UserEventShaper<T> {
    held: Option<(T, tokio::time::Instant)>,
}

impl<T: Clone> UserEventShaper<T> {
    pub fn new() -> Self {
        Self { held: None }
    }

    /// Frames to send now for `ev`, in order.
    pub async fn shape(&mut self, sh: &Shared, ev: T) -> Vec<T> {
        let plan = sh.faults.user_event_plan();
        if let Some(d) = plan.delay {
            tokio::time::sleep(d).await;
        }
        let mut out = Vec::new();
        if plan.reorder && self.held.is_none() {
            // Hold this one back and send it after the next event (or after 250 ms).
            self.held = Some((ev, tokio::time::Instant::now() + Duration::from_millis(250)));
            return out;
        }
        out.push(ev.clone());
        if plan.duplicate {
            out.push(ev);
        }
        if let Some((h, _)) = self.held.take() {
            out.push(h);
        }
        out
    }

    pub fn held_deadline(&self) -> Option<tokio::time::Instant> {
        self.held.as_ref().map(|(_, t)| *t)
    }

    pub fn release(&mut self) -> Option<T> {
        self.held.take().map(|(e, _)| e)
    }
}

/// Subscribes the connection to the account's events *before* the handshake answers, as
/// Binance does: a client that switches to a new connection as soon as it is open, then
/// closes the old one, must not lose the events in between.
fn upgrade_user(
    sh: Arc<Shared>,
    ws: WebSocketUpgrade,
    account: u32,
    listen_key: String,
    combined: bool,
) -> Response {
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let conn_id = {
        let mut ex = sh.exchange.lock();
        let id = ex.register_conn(
            ConnKind::User {
                account,
                listen_key: listen_key.clone(),
            },
            ctl_tx,
        );
        ex.add_user_sink(account, id, ev_tx);
        id
    };
    let on_fail = sh.clone();
    ws.on_failed_upgrade(move |_| {
        on_fail.exchange.lock().unregister_conn(conn_id);
        on_fail.stats.connection_closed("handshake_failed");
    })
    .on_upgrade(move |socket| user_conn(sh, socket, listen_key, combined, conn_id, ctl_rx, ev_rx))
    .into_response()
}

async fn user_conn(
    sh: Arc<Shared>,
    socket: WebSocket,
    listen_key: String,
    combined: bool,
    conn_id: u64,
    mut ctl_rx: mpsc::UnboundedReceiver<ConnCtl>,
    mut ev_rx: mpsc::UnboundedReceiver<Arc<UserEvent>>,
) {
    let (mut tx, mut rx) = socket.split();
    let mut life = Lifecycle::new(&sh);
    let mut shutdown = sh.shutdown.subscribe();
    let mut shaper = UserEventShaper::<Arc<UserEvent>>::new();
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let reason: &'static str = 'conn: loop {
        tokio::select! {
            _ = tokio::time::sleep_until(life.deadline) => {
                if sh.cfg.dialect == Dialect::Y2026 {
                    let ev = server_shutdown_json(sh.clock.now_ms());
                    let _ = send_text(&mut tx, wrap(combined, "!serverShutdown", &ev)).await;
                }
                let _ = tx.send(close_frame(1000, "max connection age")).await;
                break "max_age";
            }
            _ = life.ping.tick() => {
                if life.last_pong.elapsed() > life.pong_timeout {
                    break "pong_timeout";
                }
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break "error";
                }
            }
            _ = shutdown.changed() => {
                let _ = tx.send(close_frame(1001, "server shutting down")).await;
                break "shutdown";
            }
            _ = tokio::time::sleep_until(shaper.held_deadline().unwrap_or(far)), if shaper.held_deadline().is_some() => {
                if let Some(ev) = shaper.release() {
                    StatsCounters::inc(&sh.stats.user_events_sent);
                    if !send_text(&mut tx, wrap(combined, &listen_key, &ev.json)).await {
                        break "error";
                    }
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Pong(_))) | Some(Ok(Message::Ping(_))) => life.last_pong = Instant::now(),
                Some(Ok(Message::Text(_))) | Some(Ok(Message::Binary(_))) => {}
                Some(Ok(Message::Close(_))) | None => break "client",
                Some(Err(_)) => break "error",
            },
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break "shutdown" };
                for out in shaper.shape(&sh, ev).await {
                    StatsCounters::inc(&sh.stats.user_events_sent);
                    if !send_text(&mut tx, wrap(combined, &listen_key, &out.json)).await {
                        break 'conn "error";
                    }
                }
            }
            ctl = ctl_rx.recv() => match ctl {
                Some(ConnCtl::Abort) | None => break "fault_abort",
                Some(ConnCtl::Restart) => break "restart",
                Some(ConnCtl::ServerShutdown) => {
                    let ev = server_shutdown_json(sh.clock.now_ms());
                    let _ = send_text(&mut tx, wrap(combined, "!serverShutdown", &ev)).await;
                    let _ = tx.send(close_frame(1001, "server shutdown")).await;
                    break "server_shutdown";
                }
                Some(ConnCtl::ListenKeyExpired(key)) => {
                    let ev = serde_json::to_string(&ListenKeyExpired {
                        e: "listenKeyExpired",
                        event_time: sh.clock.now_ms(),
                        listen_key: &key,
                    })
                    .unwrap_or_default();
                    StatsCounters::inc(&sh.stats.user_events_sent);
                    let _ = send_text(&mut tx, wrap(combined, &listen_key, &ev)).await;
                    let _ = tx.send(close_frame(1000, "listen key expired")).await;
                    break "listen_key_expired";
                }
                Some(ConnCtl::Inject(kind)) => {
                    if !send_injected(&mut tx, kind, sh.clock.now_ms()).await {
                        break "error";
                    }
                }
            },
        }
    };
    sh.exchange.lock().unregister_conn(conn_id);
    sh.stats.connection_closed(reason);
}
