//! The WebSocket API (`/ws-api/v3`), the 2026 way to get user data and (optionally) to
//! trade: `session.logon` / `session.status` / `session.logout`, `userDataStream.subscribe`,
//! `userDataStream.subscribe.signature`, `userDataStream.unsubscribe`,
//! `session.subscriptions`, `order.place`, `order.cancel`, `openOrders.cancelAll`, `ping`,
//! `time`. User events arrive wrapped as `{"subscriptionId":N,"event":{..}}`;
//! `eventStreamTerminated` ends a subscription; `serverShutdown` announces a close.

use super::Shared;
use super::auth::KeyVerifier;
use super::auth::{self, Params};
use super::exchange::{ApiError, ConnCtl, ConnKind, UserEvent};
use super::stats::StatsCounters;
use super::streams::{Lifecycle, UserEventShaper, send_injected};
use super::wire::BareEvent;
use crate::binance::sign::ws_api_payload;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub(crate) async fn ws_api(State(sh): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| ws_api_conn(sh, socket))
}

/// True if `signature` signs the params (minus `signature`) sorted by name, raw UTF-8
/// (HMAC hex, or Ed25519 base64 for an Ed25519 account).
pub fn ws_signature_ok(verifier: &KeyVerifier, params: &Params, signature: &str) -> bool {
    let payload = ws_api_payload(params.iter().filter(|(k, _)| *k != "signature"));
    verifier.verify(payload.as_bytes(), signature)
}

/// JSON params object → ordered string pairs (numbers and bools as their JSON text).
fn params_of(v: &Value) -> Result<Params, ApiError> {
    let mut list = Vec::new();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(ApiError::bad(
                            -1102,
                            format!(
                                "Mandatory parameter '{k}' was not sent, was empty/null, or malformed."
                            ),
                        ));
                    }
                };
                list.push((k.clone(), s));
            }
        }
        _ => {
            return Err(ApiError::bad(
                -1102,
                "A mandatory parameter was not sent, was empty/null, or malformed.",
            ));
        }
    }
    Ok(Params::from_pairs(list))
}

struct Session {
    account: Option<u32>,
    authorized_since: u64,
    connected_since: u64,
    /// (subscription id, account, sink id in the exchange)
    subs: Vec<(u64, u32, u64)>,
    next_sub: u64,
}

type Tagged = (u64, Arc<UserEvent>);

fn wrapped(sub: u64, json: &str) -> String {
    format!("{{\"subscriptionId\":{sub},\"event\":{json}}}")
}

fn shutdown_event(now: u64) -> String {
    let ev = serde_json::to_string(&BareEvent {
        e: "serverShutdown",
        event_time: now,
    })
    .unwrap_or_default();
    format!("{{\"event\":{ev}}}")
}

async fn ws_api_conn(sh: Arc<Shared>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Tagged>();
    let conn_id = sh.exchange.lock().register_conn(ConnKind::WsApi, ctl_tx);
    let mut session = Session {
        account: None,
        authorized_since: 0,
        connected_since: sh.clock.now_ms(),
        subs: Vec::new(),
        next_sub: 0,
    };
    let mut life = Lifecycle::new(&sh);
    let mut shutdown = sh.shutdown.subscribe();
    let mut shaper = UserEventShaper::<Tagged>::new();
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let reason: &'static str = 'conn: loop {
        tokio::select! {
            _ = tokio::time::sleep_until(life.deadline) => {
                let _ = tx.send(Message::Text(shutdown_event(sh.clock.now_ms()).into())).await;
                let _ = tx.send(Message::Close(Some(CloseFrame { code: 1000, reason: "max connection age".into() }))).await;
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
                let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
                break "shutdown";
            }
            _ = tokio::time::sleep_until(shaper.held_deadline().unwrap_or(far)), if shaper.held_deadline().is_some() => {
                if let Some((sub, ev)) = shaper.release() {
                    StatsCounters::inc(&sh.stats.user_events_sent);
                    if tx.send(Message::Text(wrapped(sub, &ev.json).into())).await.is_err() {
                        break "error";
                    }
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Pong(_))) | Some(Ok(Message::Ping(_))) => life.last_pong = Instant::now(),
                Some(Ok(Message::Text(t))) => {
                    let (reply, terminated) = handle_request(&sh, &t, &mut session, conn_id, &ev_tx);
                    if tx.send(Message::Text(reply.into())).await.is_err() {
                        break "error";
                    }
                    for sub in terminated {
                        let ev = serde_json::to_string(&BareEvent { e: "eventStreamTerminated", event_time: sh.clock.now_ms() }).unwrap_or_default();
                        if tx.send(Message::Text(wrapped(sub, &ev).into())).await.is_err() {
                            break 'conn "error";
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let e = json!({"id": null, "status": 400, "error": {"code": -1000, "msg": "Binary frames are not supported."}});
                    if tx.send(Message::Text(e.to_string().into())).await.is_err() {
                        break "error";
                    }
                }
                Some(Ok(Message::Close(_))) | None => break "client",
                Some(Err(_)) => break "error",
            },
            ev = ev_rx.recv() => {
                let Some((sub, ev)) = ev else { break "shutdown" };
                // Events for a subscription that was just closed are dropped.
                if !session.subs.iter().any(|(s, _, _)| *s == sub) {
                    continue;
                }
                for (sub, out) in shaper.shape(&sh, (sub, ev)).await {
                    StatsCounters::inc(&sh.stats.user_events_sent);
                    if tx.send(Message::Text(wrapped(sub, &out.json).into())).await.is_err() {
                        break 'conn "error";
                    }
                }
            }
            ctl = ctl_rx.recv() => match ctl {
                Some(ConnCtl::Abort) | None => break "fault_abort",
                Some(ConnCtl::Restart) => break "restart",
                Some(ConnCtl::ServerShutdown) => {
                    let _ = tx.send(Message::Text(shutdown_event(sh.clock.now_ms()).into())).await;
                    let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutdown".into() }))).await;
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
    {
        let mut ex = sh.exchange.lock();
        for (_, account, sink) in &session.subs {
            ex.remove_user_sink(*account, *sink);
        }
        ex.unregister_conn(conn_id);
    }
    sh.stats.connection_closed(reason);
}

fn rate_limits_json(sh: &Shared, account: Option<u32>, weight_used: u32) -> Value {
    let rl = &sh.cfg.rate_limits;
    let mut v = Vec::new();
    if let Some(a) = account {
        let (c10, c1d) = sh.limiter.order_counts_pub(a);
        v.push(json!({"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": rl.orders_per_10s, "count": c10}));
        v.push(json!({"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": rl.orders_per_day, "count": c1d}));
    }
    v.push(json!({"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": rl.weight_per_minute, "count": weight_used}));
    Value::Array(v)
}

/// Handles one request frame; returns the response text and subscriptions terminated.
fn handle_request(
    sh: &Arc<Shared>,
    text: &str,
    session: &mut Session,
    conn_id: u64,
    ev_tx: &mpsc::UnboundedSender<Tagged>,
) -> (String, Vec<u64>) {
    let req: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            let e = json!({"id": null, "status": 400, "error": {"code": -1000, "msg": "Malformed request."}});
            return (e.to_string(), Vec::new());
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let is_order = matches!(
        method.as_str(),
        "order.place" | "order.cancel" | "openOrders.cancelAll"
    );
    let weight = match method.as_str() {
        "order.place" | "order.cancel" | "openOrders.cancelAll" | "ping" | "time" => 1,
        "session.logon" | "session.status" | "session.logout" | "session.subscriptions" => 2,
        _ => 2,
    };
    let mut terminated = Vec::new();
    let mut order_account = None;
    let gate = sh.limiter.gate_pub(
        weight,
        sh.cfg.rate_limits.weight_per_minute,
        sh.faults.forced_rate_limit(),
        sh,
    );
    let result: Result<Value, ApiError> = match gate {
        Err((status, msg, retry_after)) => {
            let e = json!({"id": id, "status": status, "error": {"code": -1003, "msg": msg,
                "data": {"serverTime": sh.clock.now_ms(), "retryAfter": sh.clock.now_ms() + retry_after * 1000}}});
            return (e.to_string(), terminated);
        }
        Ok(_) => params_of(req.get("params").unwrap_or(&Value::Null)).and_then(|params| {
            dispatch(
                sh,
                &method,
                &params,
                session,
                conn_id,
                ev_tx,
                &mut terminated,
                &mut order_account,
            )
        }),
    };
    let used = sh.limiter.used_weight();
    let mut out = match result {
        Ok(result) => json!({"id": id, "status": 200, "result": result}),
        Err(e) => json!({"id": id, "status": e.http, "error": {"code": e.code, "msg": e.msg}}),
    };
    if is_order {
        out["rateLimits"] = rate_limits_json(sh, order_account, used);
    }
    (out.to_string(), terminated)
}

/// Authenticates a request: signed params (apiKey + signature + timestamp) or the
/// logged-on session (timestamp only).
fn authenticate(
    sh: &Shared,
    params: &Params,
    session_account: Option<u32>,
) -> Result<u32, ApiError> {
    let ex = sh.exchange.lock();
    let now = sh.clock.now_ms();
    let account = match (params.get("signature"), session_account) {
        (Some(sig), _) => {
            let account = auth::account_for_key(&ex, params.get("apiKey"))?;
            auth::check_timestamp(
                params.get("timestamp"),
                params.get("recvWindow"),
                now,
                sh.cfg.default_recv_window_ms,
                sh.cfg.max_recv_window_ms,
            )?;
            if !ws_signature_ok(ex.verifier(account), params, sig) {
                return Err(ApiError::bad(
                    -1022,
                    "Signature for this request is not valid.",
                ));
            }
            account
        }
        (None, Some(account)) => {
            auth::check_timestamp(
                params.get("timestamp"),
                params.get("recvWindow"),
                now,
                sh.cfg.default_recv_window_ms,
                sh.cfg.max_recv_window_ms,
            )?;
            account
        }
        (None, None) => return Err(ApiError::mandatory("signature")),
    };
    Ok(account)
}

fn subscribe(
    sh: &Shared,
    session: &mut Session,
    account: u32,
    ev_tx: &mpsc::UnboundedSender<Tagged>,
) -> Result<Value, ApiError> {
    if session.subs.iter().any(|(_, a, _)| *a == account) {
        return Err(ApiError::bad(
            -2035,
            "User Data Stream subscription already active.",
        ));
    }
    let sub = session.next_sub;
    session.next_sub += 1;
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<UserEvent>>();
    let fwd = ev_tx.clone();
    // Tags this subscription's events on their way into the connection's queue.
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if fwd.send((sub, ev)).is_err() {
                break;
            }
        }
    });
    let sink_id = {
        let mut ex = sh.exchange.lock();
        let id = ex.alloc_id();
        ex.add_user_sink(account, id, tx);
        id
    };
    session.subs.push((sub, account, sink_id));
    Ok(json!({ "subscriptionId": sub }))
}

fn unsubscribe(sh: &Shared, session: &mut Session, which: Option<u64>, terminated: &mut Vec<u64>) {
    let mut ex = sh.exchange.lock();
    session.subs.retain(|(sub, account, sink)| {
        if which.is_none_or(|w| w == *sub) {
            ex.remove_user_sink(*account, *sink);
            terminated.push(*sub);
            false
        } else {
            true
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    sh: &Arc<Shared>,
    method: &str,
    params: &Params,
    session: &mut Session,
    _conn_id: u64,
    ev_tx: &mpsc::UnboundedSender<Tagged>,
    terminated: &mut Vec<u64>,
    order_account: &mut Option<u32>,
) -> Result<Value, ApiError> {
    let now = sh.clock.now_ms();
    let signed = ["apiKey", "signature", "timestamp", "recvWindow"];
    let only = |extra: &[&str]| {
        let mut allowed: Vec<&str> = signed.to_vec();
        allowed.extend_from_slice(extra);
        params.only(&allowed)
    };
    match method {
        "ping" => {
            params.only(&[])?;
            Ok(json!({}))
        }
        "time" => {
            params.only(&[])?;
            Ok(json!({ "serverTime": now }))
        }
        "session.logon" => {
            only(&[])?;
            if params.get("signature").is_none() {
                return Err(ApiError::mandatory("signature"));
            }
            let account = authenticate(sh, params, None)?;
            session.account = Some(account);
            session.authorized_since = now;
            Ok(session_status(sh, session, now))
        }
        "session.status" => {
            params.only(&[])?;
            Ok(session_status(sh, session, now))
        }
        "session.logout" => {
            params.only(&[])?;
            if let Some(account) = session.account.take() {
                let subs: Vec<u64> = session
                    .subs
                    .iter()
                    .filter(|(_, a, _)| *a == account)
                    .map(|(s, _, _)| *s)
                    .collect();
                for s in subs {
                    unsubscribe(sh, session, Some(s), terminated);
                }
            }
            Ok(session_status(sh, session, now))
        }
        "session.subscriptions" => {
            params.only(&[])?;
            Ok(Value::Array(
                session
                    .subs
                    .iter()
                    .map(|(s, _, _)| json!({ "subscriptionId": s }))
                    .collect(),
            ))
        }
        "userDataStream.subscribe" => {
            params.only(&[])?;
            let account = session.account.ok_or_else(|| {
                ApiError::new(
                    401,
                    -2015,
                    "Invalid API-key, IP, or permissions for action.",
                )
            })?;
            subscribe(sh, session, account, ev_tx)
        }
        "userDataStream.subscribe.signature" => {
            only(&[])?;
            if params.get("signature").is_none() {
                return Err(ApiError::mandatory("signature"));
            }
            let account = authenticate(sh, params, None)?;
            subscribe(sh, session, account, ev_tx)
        }
        "userDataStream.unsubscribe" => {
            params.only(&["subscriptionId"])?;
            let which = params.u64_opt("subscriptionId")?;
            if let Some(w) = which
                && !session.subs.iter().any(|(s, _, _)| *s == w)
            {
                return Err(ApiError::bad(
                    -2036,
                    "User Data Stream subscription not active.",
                ));
            }
            unsubscribe(sh, session, which, terminated);
            Ok(json!({}))
        }
        "userDataStream.start" | "userDataStream.ping" | "userDataStream.stop" => {
            Err(ApiError::new(
                410,
                -1000,
                "listenKey management was retired; use userDataStream.subscribe.",
            ))
        }
        "order.place" => {
            only(&[
                "symbol",
                "side",
                "type",
                "timeInForce",
                "quantity",
                "price",
                "newClientOrderId",
                "newOrderRespType",
                "selfTradePreventionMode",
            ])?;
            let account = authenticate(sh, params, session.account)?;
            *order_account = Some(account);
            let req = super::rest::parse_new_order(params)?;
            let rl = &sh.cfg.rate_limits;
            if let Err(interval) =
                sh.limiter
                    .count_order_pub(account, rl.orders_per_10s, rl.orders_per_day)
            {
                let limit = if interval.starts_with("10") {
                    rl.orders_per_10s
                } else {
                    rl.orders_per_day
                };
                return Err(ApiError::new(
                    429,
                    -1015,
                    format!("Too many new orders; current limit is {limit} orders per {interval}."),
                ));
            }
            let body = sh.exchange.lock().place_order(account, &req)?;
            Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
        }
        "order.cancel" => {
            only(&[
                "symbol",
                "orderId",
                "origClientOrderId",
                "newClientOrderId",
                "cancelRestrictions",
            ])?;
            let account = authenticate(sh, params, session.account)?;
            *order_account = Some(account);
            let symbol = params.required("symbol")?;
            let order_id = params.u64_opt("orderId")?;
            let body = sh.exchange.lock().cancel_order(
                account,
                symbol,
                order_id,
                params.get("origClientOrderId"),
                params.get("newClientOrderId"),
            )?;
            Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
        }
        "openOrders.cancelAll" => {
            only(&["symbol"])?;
            let account = authenticate(sh, params, session.account)?;
            *order_account = Some(account);
            let symbol = params.required("symbol")?;
            let body = sh.exchange.lock().cancel_all(account, symbol)?;
            Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
        }
        other => Err(ApiError::bad(-1000, format!("Unknown method '{other}'."))),
    }
}

fn session_status(sh: &Shared, session: &Session, now: u64) -> Value {
    let api_key = session
        .account
        .map(|a| Value::String(sh.exchange.lock().api_key_of(a).to_string()))
        .unwrap_or(Value::Null);
    json!({
        "apiKey": api_key,
        "authorizedSince": if session.account.is_some() { json!(session.authorized_since) } else { Value::Null },
        "connectedSince": session.connected_since,
        "returnRateLimits": false,
        "serverTime": now,
        "userDataStream": !session.subs.is_empty(),
    })
}
