//! REST handlers: Binance Spot paths, parameters, statuses, error codes and rate-limit
//! headers. One dispatcher owns the whole pipeline (rate limit, faults, auth, endpoint),
//! so every response, error or not, carries the same headers and Binance-style JSON.

use super::Shared;
use super::auth::{self, Params};
use super::book::Side;
use super::config::Dialect;
use super::exchange::{ApiError, NewOrder, OrderType, RespType, TimeInForce};
use super::faults::{FaultCommand, RestAction};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Request-weight and order-count windows, Binance style (fixed clock windows).
#[derive(Default)]
pub struct RateLimiter {
    inner: Mutex<LimiterState>,
}

#[derive(Default)]
struct LimiterState {
    minute: u64,
    weight: u32,
    /// Requests received while limited; past the threshold the client is banned (418).
    strikes: u32,
    banned_until: Option<Instant>,
    orders: HashMap<u32, OrderWindows>,
}

#[derive(Default, Clone, Copy)]
struct OrderWindows {
    ten_s: u64,
    count_10s: u32,
    day: u64,
    count_1d: u32,
}

enum Gate {
    Pass { used_weight: u32 },
    Limited { retry_after: u64, used_weight: u32 },
    Banned { until_ms: u64, retry_after: u64 },
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RateLimiter {
    fn gate(&self, weight: u32, limit: u32, forced: Option<Instant>, sh: &Shared) -> Gate {
        let now_ms = wall_ms();
        let minute = now_ms / 60_000;
        let mut s = self.inner.lock();
        if minute != s.minute {
            s.minute = minute;
            s.weight = 0;
        }
        let now = Instant::now();
        if let Some(until) = s.banned_until {
            if until > now {
                let left = until - now;
                return Gate::Banned {
                    until_ms: now_ms + left.as_millis() as u64,
                    retry_after: secs_rounded_up(left),
                };
            }
            s.banned_until = None;
            s.strikes = 0;
        }
        let over_weight = s.weight + weight > limit;
        let limited_for = match forced {
            Some(until) => Some(until.saturating_duration_since(now)),
            None if over_weight => Some(Duration::from_millis(60_000 - now_ms % 60_000)),
            None => None,
        };
        if let Some(left) = limited_for {
            s.strikes += 1;
            if s.strikes > sh.cfg.rate_limits.requests_before_ban {
                let ban = sh.cfg.rate_limits.ban_duration;
                s.banned_until = Some(now + ban);
                return Gate::Banned {
                    until_ms: now_ms + ban.as_millis() as u64,
                    retry_after: secs_rounded_up(ban),
                };
            }
            return Gate::Limited {
                retry_after: secs_rounded_up(left),
                used_weight: s.weight,
            };
        }
        s.strikes = 0;
        s.weight += weight;
        Gate::Pass {
            used_weight: s.weight,
        }
    }

    /// Counts one new order; Err(interval) if a window is full.
    fn count_order(&self, account: u32, per_10s: u32, per_day: u32) -> Result<(), &'static str> {
        let now = wall_ms();
        let mut s = self.inner.lock();
        let w = s.orders.entry(account).or_default();
        if w.ten_s != now / 10_000 {
            w.ten_s = now / 10_000;
            w.count_10s = 0;
        }
        if w.day != now / 86_400_000 {
            w.day = now / 86_400_000;
            w.count_1d = 0;
        }
        if w.count_10s >= per_10s {
            return Err("10 SECOND");
        }
        if w.count_1d >= per_day {
            return Err("1 DAY");
        }
        w.count_10s += 1;
        w.count_1d += 1;
        Ok(())
    }

    /// Same gate as REST, for the WebSocket API: Err((status, message, retry-after seconds)).
    pub(crate) fn gate_pub(
        &self,
        weight: u32,
        limit: u32,
        forced: Option<Instant>,
        sh: &Shared,
    ) -> Result<u32, (u16, String, u64)> {
        match self.gate(weight, limit, forced, sh) {
            Gate::Pass { used_weight } => Ok(used_weight),
            Gate::Limited { retry_after, .. } => Err((
                429,
                format!(
                    "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
                ),
                retry_after,
            )),
            Gate::Banned {
                until_ms,
                retry_after,
            } => Err((
                418,
                format!(
                    "Way too much request weight used; IP banned until {until_ms}. Please use WebSocket Streams for live updates to avoid bans."
                ),
                retry_after,
            )),
        }
    }

    pub(crate) fn count_order_pub(
        &self,
        account: u32,
        per_10s: u32,
        per_day: u32,
    ) -> Result<(), &'static str> {
        self.count_order(account, per_10s, per_day)
    }

    pub(crate) fn order_counts_pub(&self, account: u32) -> (u32, u32) {
        self.order_counts(account)
    }

    pub(crate) fn used_weight(&self) -> u32 {
        let s = self.inner.lock();
        if s.minute == wall_ms() / 60_000 {
            s.weight
        } else {
            0
        }
    }

    fn order_counts(&self, account: u32) -> (u32, u32) {
        let now = wall_ms();
        let s = self.inner.lock();
        match s.orders.get(&account) {
            Some(w) => (
                if w.ten_s == now / 10_000 {
                    w.count_10s
                } else {
                    0
                },
                if w.day == now / 86_400_000 {
                    w.count_1d
                } else {
                    0
                },
            ),
            None => (0, 0),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Ping,
    Time,
    ExchangeInfo,
    Depth,
    BookTicker,
    PriceTicker,
    NewOrder,
    TestOrder,
    CancelOrder,
    QueryOrder,
    CancelOpenOrders,
    OpenOrders,
    Account,
    MyTrades,
    ListenKeyNew,
    ListenKeyKeepalive,
    ListenKeyClose,
}

fn route(method: &Method, path: &str) -> Result<Endpoint, StatusCode> {
    use Endpoint::*;
    let path = path.trim_end_matches('/');
    let by_method = |opts: &[(Method, Endpoint)]| {
        opts.iter()
            .find(|(m, _)| m == method)
            .map(|(_, e)| *e)
            .ok_or(StatusCode::METHOD_NOT_ALLOWED)
    };
    match path {
        "/api/v3/ping" => by_method(&[(Method::GET, Ping)]),
        "/api/v3/time" => by_method(&[(Method::GET, Time)]),
        "/api/v3/exchangeInfo" => by_method(&[(Method::GET, ExchangeInfo)]),
        "/api/v3/depth" => by_method(&[(Method::GET, Depth)]),
        "/api/v3/ticker/bookTicker" => by_method(&[(Method::GET, BookTicker)]),
        "/api/v3/ticker/price" => by_method(&[(Method::GET, PriceTicker)]),
        "/api/v3/order" => by_method(&[
            (Method::POST, NewOrder),
            (Method::DELETE, CancelOrder),
            (Method::GET, QueryOrder),
        ]),
        "/api/v3/order/test" => by_method(&[(Method::POST, TestOrder)]),
        "/api/v3/openOrders" => by_method(&[
            (Method::GET, OpenOrders),
            (Method::DELETE, CancelOpenOrders),
        ]),
        "/api/v3/account" => by_method(&[(Method::GET, Account)]),
        "/api/v3/myTrades" => by_method(&[(Method::GET, MyTrades)]),
        "/api/v3/userDataStream" => by_method(&[
            (Method::POST, ListenKeyNew),
            (Method::PUT, ListenKeyKeepalive),
            (Method::DELETE, ListenKeyClose),
        ]),
        _ => Err(StatusCode::NOT_FOUND),
    }
}

/// `symbol=X` or `symbols=["X","Y"]` (exchangeInfo, tickers); None when neither is given.
fn symbol_list(params: &Params) -> Result<Option<Vec<String>>, ApiError> {
    match (params.get("symbol"), params.get("symbols")) {
        (Some(s), _) => Ok(Some(vec![s.to_string()])),
        (None, Some(list)) => serde_json::from_str::<Vec<String>>(list)
            .map(Some)
            .map_err(|_| ApiError::illegal("symbols", "JSON array of symbols")),
        _ => Ok(None),
    }
}

fn weight(ep: Endpoint, params: &Params) -> u32 {
    use Endpoint::*;
    match ep {
        Ping | Time | NewOrder | TestOrder | CancelOrder | CancelOpenOrders => 1,
        ListenKeyNew | ListenKeyKeepalive | ListenKeyClose => 2,
        QueryOrder => 4,
        Depth => match params
            .get("limit")
            .and_then(|l| l.parse::<u32>().ok())
            .unwrap_or(100)
        {
            0..=100 => 5,
            101..=500 => 25,
            501..=1000 => 50,
            _ => 250,
        },
        BookTicker | PriceTicker => {
            if params.get("symbol").is_some() {
                2
            } else {
                4
            }
        }
        OpenOrders => {
            if params.get("symbol").is_some() {
                6
            } else {
                80
            }
        }
        ExchangeInfo | Account | MyTrades => 20,
    }
}

const SIGNED_COMMON: [&str; 3] = ["recvWindow", "timestamp", "signature"];

fn allowed(ep: Endpoint) -> &'static [&'static str] {
    use Endpoint::*;
    match ep {
        Ping | Time | ListenKeyNew => &[],
        Depth => &["symbol", "limit"],
        BookTicker | PriceTicker => &["symbol", "symbols"],
        ExchangeInfo => &[
            "symbol",
            "symbols",
            "permissions",
            "showPermissionSets",
            "symbolStatus",
        ],
        NewOrder | TestOrder => &[
            "symbol",
            "side",
            "type",
            "timeInForce",
            "quantity",
            "price",
            "newClientOrderId",
            "newOrderRespType",
            "selfTradePreventionMode",
            "computeCommissionRates",
        ],
        CancelOrder => &[
            "symbol",
            "orderId",
            "origClientOrderId",
            "newClientOrderId",
            "cancelRestrictions",
        ],
        QueryOrder => &["symbol", "orderId", "origClientOrderId"],
        CancelOpenOrders | OpenOrders => &["symbol"],
        Account => &["omitZeroBalances"],
        MyTrades => &[
            "symbol",
            "orderId",
            "startTime",
            "endTime",
            "fromId",
            "limit",
        ],
        ListenKeyKeepalive | ListenKeyClose => &["listenKey"],
    }
}

fn is_signed(ep: Endpoint) -> bool {
    use Endpoint::*;
    matches!(
        ep,
        NewOrder
            | TestOrder
            | CancelOrder
            | QueryOrder
            | CancelOpenOrders
            | OpenOrders
            | Account
            | MyTrades
    )
}

fn json_response(status: u16, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.http, e.body())
}

fn set_header(r: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(name, v);
    }
}

/// Fallback handler: every REST path goes through here.
pub(crate) async fn dispatch(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::bad(
                -1000,
                "Request body too large or unreadable.",
            ));
        }
    };
    let body = match std::str::from_utf8(&body) {
        Ok(b) => b.to_string(),
        Err(_) => {
            return error_response(&ApiError::bad(
                -1100,
                "Illegal characters found in a parameter.",
            ));
        }
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    super::stats::StatsCounters::inc(&sh.stats.rest_requests);
    let ep = match route(&parts.method, &path) {
        Ok(ep) => ep,
        Err(code) => {
            let e = ApiError::new(
                code.as_u16(),
                -1000,
                format!("Unknown endpoint {} {path}", parts.method),
            );
            return error_response(&e);
        }
    };
    let params = match Params::parse(&query, &body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let w = weight(ep, &params);
    let gate = sh.limiter.gate(
        w,
        sh.cfg.rate_limits.weight_per_minute,
        sh.faults.forced_rate_limit(),
        &sh,
    );
    let used_weight = match gate {
        Gate::Banned {
            until_ms,
            retry_after,
        } => {
            let e = ApiError::new(
                418,
                -1003,
                format!(
                    "Way too much request weight used; IP banned until {until_ms}. Please use WebSocket Streams for live updates to avoid bans."
                ),
            );
            let mut r = error_response(&e);
            set_header(&mut r, "retry-after", retry_after.to_string());
            return r;
        }
        Gate::Limited {
            retry_after,
            used_weight,
        } => {
            let e = ApiError::new(
                429,
                -1003,
                format!(
                    "Too much request weight used; current limit is {} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
                    sh.cfg.rate_limits.weight_per_minute
                ),
            );
            let mut r = error_response(&e);
            set_header(&mut r, "retry-after", retry_after.to_string());
            set_header(&mut r, "x-mbx-used-weight-1m", used_weight.to_string());
            return r;
        }
        Gate::Pass { used_weight } => used_weight,
    };
    let fault = sh.faults.rest_fault(parts.method.as_str(), &path);
    let api_key = parts
        .headers
        .get("x-mbx-apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let run = |sh: &Arc<Shared>| {
        handle(
            sh,
            ep,
            &params,
            &query,
            &body,
            api_key.as_deref(),
            &parts.headers,
        )
    };
    let (result, account) = match &fault {
        Some(hit) if hit.after_apply => {
            let out = run(&sh);
            fault_response(hit.action.clone()).await;
            (Err(fault_error(&hit.action)), out.1)
        }
        Some(hit) => {
            fault_response(hit.action.clone()).await;
            (Err(fault_error(&hit.action)), None)
        }
        None => run(&sh),
    };
    let mut r = match result {
        Ok(body) => json_response(200, body),
        Err(e) => error_response(&e),
    };
    set_header(&mut r, "x-mbx-used-weight-1m", used_weight.to_string());
    set_header(&mut r, "x-mbx-used-weight", used_weight.to_string());
    if let Some(a) = account {
        let (c10, c1d) = sh.limiter.order_counts(a);
        set_header(&mut r, "x-mbx-order-count-10s", c10.to_string());
        set_header(&mut r, "x-mbx-order-count-1d", c1d.to_string());
    }
    r
}

async fn fault_response(action: RestAction) {
    if let RestAction::Hang { duration } = action {
        tokio::time::sleep(duration).await;
    }
}

fn fault_error(action: &RestAction) -> ApiError {
    match action {
        RestAction::Fail { status } if *status == 500 => ApiError::new(
            500,
            -1000,
            "An unknown error occurred while processing the request.",
        ),
        RestAction::Fail { status } => ApiError::new(
            *status,
            -1007,
            "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
        ),
        RestAction::Hang { .. } => ApiError::new(
            503,
            -1007,
            "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
        ),
    }
}

/// Runs one endpoint. Returns the body or a Binance error, and the account if authenticated.
fn handle(
    sh: &Arc<Shared>,
    ep: Endpoint,
    params: &Params,
    query: &str,
    body: &str,
    api_key: Option<&str>,
    _headers: &HeaderMap,
) -> (Result<String, ApiError>, Option<u32>) {
    use Endpoint::*;
    let mut allowed_params: Vec<&str> = allowed(ep).to_vec();
    if is_signed(ep) {
        allowed_params.extend(SIGNED_COMMON);
    }
    let now = sh.clock.now_ms();
    let mut ex = sh.exchange.lock();
    // Listen-key endpoints: API key only, no signature.
    if matches!(ep, ListenKeyNew | ListenKeyKeepalive | ListenKeyClose) {
        if sh.cfg.dialect == Dialect::Y2026 {
            return (
                Err(ApiError::new(
                    410,
                    -1000,
                    "This endpoint has been retired. Use userDataStream.subscribe on the WebSocket API.",
                )),
                None,
            );
        }
        let account = match auth::account_for_key(&ex, api_key) {
            Ok(a) => a,
            Err(e) => return (Err(e), None),
        };
        let r = (|| {
            params.only(&allowed_params)?;
            match ep {
                ListenKeyNew => {
                    let key = ex.create_listen_key(account);
                    Ok(serde_json::json!({ "listenKey": key }).to_string())
                }
                ListenKeyKeepalive => {
                    let key = params.required("listenKey")?;
                    ex.keepalive_listen_key(account, key)
                        .map(|_| "{}".to_string())
                }
                _ => {
                    let key = params.required("listenKey")?;
                    ex.delete_listen_key(account, key).map(|_| "{}".to_string())
                }
            }
        })();
        return (r, Some(account));
    }
    if !is_signed(ep) {
        let r = (|| {
            params.only(&allowed_params)?;
            match ep {
                Ping => Ok("{}".to_string()),
                Time => Ok(serde_json::json!({ "serverTime": now }).to_string()),
                Depth => {
                    let symbol = params.required("symbol")?;
                    let limit = params.u64_opt("limit")?.unwrap_or(100).clamp(1, 5000) as usize;
                    ex.depth_json(symbol, limit)
                }
                BookTicker | PriceTicker => {
                    let book = ep == BookTicker;
                    match (params.get("symbol"), params.get("symbols")) {
                        (Some(_), Some(_)) => Err(ApiError::bad(
                            -1128,
                            "Combination of optional parameters invalid.",
                        )),
                        (Some(s), None) => ex.ticker_json(Some(s), book),
                        (None, Some(_)) => {
                            ex.tickers_json(symbol_list(params)?.as_deref().unwrap_or(&[]), book)
                        }
                        (None, None) => ex.ticker_json(None, book),
                    }
                }
                _ => ex.exchange_info_json(symbol_list(params)?.as_deref()),
            }
        })();
        return (r, None);
    }
    let account = match auth::check_signed(
        &ex,
        api_key,
        query,
        body,
        params,
        now,
        sh.cfg.default_recv_window_ms,
        sh.cfg.max_recv_window_ms,
    ) {
        Ok(a) => a,
        Err(e) => return (Err(e), None),
    };
    let r = (|| {
        params.only(&allowed_params)?;
        match ep {
            NewOrder | TestOrder => {
                let req = parse_new_order(params)?;
                if ep == TestOrder {
                    return ex.test_order(account, &req).map(|_| "{}".to_string());
                }
                let rl = &sh.cfg.rate_limits;
                if let Err(interval) =
                    sh.limiter
                        .count_order(account, rl.orders_per_10s, rl.orders_per_day)
                {
                    let limit = if interval.starts_with("10") {
                        rl.orders_per_10s
                    } else {
                        rl.orders_per_day
                    };
                    return Err(ApiError::new(
                        429,
                        -1015,
                        format!(
                            "Too many new orders; current limit is {limit} orders per {interval}."
                        ),
                    ));
                }
                ex.place_order(account, &req)
            }
            CancelOrder => {
                if let Some(r) = params.get("cancelRestrictions")
                    && r != "ONLY_NEW"
                    && r != "ONLY_PARTIALLY_FILLED"
                {
                    return Err(ApiError::bad(-1145, "Invalid cancelRestrictions"));
                }
                let symbol = params.required("symbol")?;
                let order_id = params.u64_opt("orderId")?;
                let new_coid = params.get("newClientOrderId");
                if let Some(c) = new_coid {
                    check_client_order_id("newClientOrderId", c)?;
                }
                ex.cancel_order(
                    account,
                    symbol,
                    order_id,
                    params.get("origClientOrderId"),
                    new_coid,
                )
            }
            QueryOrder => {
                let symbol = params.required("symbol")?;
                let order_id = params.u64_opt("orderId")?;
                ex.query_order(account, symbol, order_id, params.get("origClientOrderId"))
            }
            CancelOpenOrders => {
                let symbol = params.required("symbol")?;
                ex.cancel_all(account, symbol)
            }
            OpenOrders => ex.open_orders_json(account, params.get("symbol")),
            Account => Ok(ex.account_json(account)),
            MyTrades => {
                let symbol = params.required("symbol")?;
                let limit = params.u64_opt("limit")?.unwrap_or(500).clamp(1, 1000) as usize;
                ex.my_trades_json(
                    account,
                    symbol,
                    params.u64_opt("fromId")?,
                    params.u64_opt("startTime")?,
                    params.u64_opt("endTime")?,
                    params.u64_opt("orderId")?,
                    limit,
                )
            }
            _ => Err(ApiError::new(500, -1000, "unrouted endpoint")),
        }
    })();
    (r, Some(account))
}

fn check_client_order_id(param: &str, c: &str) -> Result<(), ApiError> {
    let ok = !c.is_empty()
        && c.len() <= 36
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::illegal(param, "^[\\.A-Z\\:/a-z0-9_-]{1,36}$"))
    }
}

/// Parses the new-order parameters (shared with the WebSocket API's `order.place`).
pub(crate) fn parse_new_order(params: &Params) -> Result<NewOrder, ApiError> {
    let symbol = params.required("symbol")?.to_string();
    let side = match params.required("side")? {
        "BUY" => Side::Buy,
        "SELL" => Side::Sell,
        _ => return Err(ApiError::bad(-1117, "Invalid side.")),
    };
    let order_type = OrderType::parse(params.required("type")?)
        .ok_or_else(|| ApiError::bad(-1116, "Invalid orderType."))?;
    let time_in_force = match params.get("timeInForce") {
        None => None,
        Some(t) => Some(
            TimeInForce::parse(t).ok_or_else(|| ApiError::bad(-1115, "Invalid timeInForce."))?,
        ),
    };
    let resp_type = match params.get("newOrderRespType") {
        None => None,
        Some("ACK") => Some(RespType::Ack),
        Some("RESULT") => Some(RespType::Result),
        Some("FULL") => Some(RespType::Full),
        Some(_) => return Err(ApiError::mandatory("newOrderRespType")),
    };
    if let Some(m) = params.get("selfTradePreventionMode")
        && m != "NONE"
    {
        return Err(ApiError::bad(
            -1013,
            "This symbol does not allow the specified self-trade prevention mode.",
        ));
    }
    if let Some(c) = params.get("newClientOrderId") {
        check_client_order_id("newClientOrderId", c)?;
    }
    Ok(NewOrder {
        symbol,
        side,
        order_type,
        time_in_force,
        quantity: params.decimal_opt("quantity")?,
        price: params.decimal_opt("price")?,
        client_order_id: params.get("newClientOrderId").map(str::to_string),
        resp_type,
    })
}

// ------------------------------------------------------------------ admin endpoints

pub(crate) async fn admin_faults(
    State(sh): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Response {
    let cmd: FaultCommand = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return json_response(400, serde_json::json!({"error": e.to_string()}).to_string());
        }
    };
    match sh.faults.apply(cmd) {
        Ok(()) => json_response(200, "{}".into()),
        Err(e) => json_response(400, serde_json::json!({"error": e.to_string()}).to_string()),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositBody {
    api_key: String,
    asset: String,
    delta: Decimal,
}

pub(crate) async fn admin_deposit(
    State(sh): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Response {
    let d: DepositBody = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return json_response(400, serde_json::json!({"error": e.to_string()}).to_string());
        }
    };
    match sh.deposit(&d.api_key, &d.asset, d.delta) {
        Ok(()) => json_response(200, "{}".into()),
        Err(e) => json_response(400, serde_json::json!({"error": e.to_string()}).to_string()),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MarketBody {
    #[serde(default)]
    frozen: Option<bool>,
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

pub(crate) async fn admin_market(
    State(sh): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Response {
    let m: MarketBody = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return json_response(400, serde_json::json!({"error": e.to_string()}).to_string());
        }
    };
    if let Some(f) = m.frozen {
        sh.exchange
            .lock()
            .frozen
            .store(f, std::sync::atomic::Ordering::Relaxed);
    }
    if let (Some(s), Some(st)) = (m.symbol, m.status)
        && !sh.exchange.lock().set_symbol_status(&s, &st)
    {
        return json_response(
            400,
            serde_json::json!({"error": "unknown symbol"}).to_string(),
        );
    }
    json_response(200, "{}".into())
}

pub(crate) async fn admin_stats(State(sh): State<Arc<Shared>>) -> impl IntoResponse {
    json_response(
        200,
        serde_json::to_string(&sh.stats.snapshot()).unwrap_or_default(),
    )
}

/// Retry-After is whole seconds: round up, so a client that waits exactly as told is
/// never early (rounding 1.9 s down to 1 s would earn an honest client a 418).
fn secs_rounded_up(d: std::time::Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}
