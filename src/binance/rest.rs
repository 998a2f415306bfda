//! Binance Spot REST client: signed requests, server-time offset, rate-limit budget.
//!
//! Every method returns at once with a [`RestError`] rather than waiting for a
//! budget or a ban to pass: the event loop decides what to do later, nothing here
//! sleeps or retries in a loop. The only retry is one re-signed attempt after a
//! -1021 (timestamp outside recvWindow), right after re-syncing the clock offset.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, HeaderMap};
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use parking_lot::Mutex;
use rust_decimal::Decimal;
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;

use http::Method;

use super::http::{DirectError, DirectPool, Stamping, Writes};
use super::order_line::{Answer, LineError, OrderLines};
use super::ratelimit::{Cost, RateLimitStatus, RateLimiter, Refusal, RequestClass};
use super::sign::{Signer, percent_encode, rest_payload};
use super::types::{
    Account, ApiErrorBody, CanceledOpenOrder, ExchangeInfo, ListenKey, MyTrade, OrderResponse,
    RestBookTicker, ServerTime, Side,
};

/// Binance's `symbols=["A","B"]` parameter.
fn symbols_param(symbols: &[String]) -> Result<(&'static str, String), RestError> {
    serde_json::to_string(symbols)
        .map(|list| ("symbols", list))
        .map_err(|e| RestError::Decode(format!("symbols: {e}")))
}

#[derive(Clone)]
pub struct RestSettings {
    /// e.g. `https://api.binance.com` (no trailing slash needed).
    pub base_url: String,
    pub api_key: Option<String>,
    pub signer: Option<Signer>,
    pub recv_window: Duration,
    /// Per-request timeout (connect + send + full response).
    pub timeout: Duration,
}

impl std::fmt::Debug for RestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("signer", &self.signer)
            .field("recv_window", &self.recv_window)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderType {
    Limit,
    LimitMaker,
    Market,
}

impl OrderType {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Limit => "LIMIT",
            OrderType::LimitMaker => "LIMIT_MAKER",
            OrderType::Market => "MARKET",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
}

impl TimeInForce {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "GTC",
            TimeInForce::Ioc => "IOC",
            TimeInForce::Fok => "FOK",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespType {
    Ack,
    Result,
    Full,
}

impl RespType {
    pub fn as_str(self) -> &'static str {
        match self {
            RespType::Ack => "ACK",
            RespType::Result => "RESULT",
            RespType::Full => "FULL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: Option<TimeInForce>,
    pub qty: Decimal,
    pub price: Option<Decimal>,
    pub client_order_id: String,
    pub resp_type: RespType,
}

impl NewOrder {
    /// Request parameters in Binance's documented order (shared with the WS API).
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("symbol", self.symbol.clone()),
            ("side", self.side.as_str().to_owned()),
            ("type", self.order_type.as_str().to_owned()),
        ];
        if let Some(tif) = self.time_in_force {
            p.push(("timeInForce", tif.as_str().to_owned()));
        }
        p.push(("quantity", self.qty.normalize().to_string()));
        if let Some(price) = self.price {
            p.push(("price", price.normalize().to_string()));
        }
        p.push(("newClientOrderId", self.client_order_id.clone()));
        p.push(("newOrderRespType", self.resp_type.as_str().to_owned()));
        p
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderRef {
    OrderId(u64),
    ClientOrderId(String),
}

impl OrderRef {
    fn param(&self) -> (&'static str, String) {
        match self {
            OrderRef::OrderId(id) => ("orderId", id.to_string()),
            OrderRef::ClientOrderId(id) => ("origClientOrderId", id.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    #[error("Binance API error {code} (HTTP {http_status}): {msg}")]
    Api {
        http_status: u16,
        code: i64,
        msg: String,
    },
    #[error("rate limited by Binance (HTTP 429): no requests for {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("IP BANNED by Binance (HTTP 418): no REST requests for {retry_after:?}")]
    IpBanned { retry_after: Duration },
    #[error("Binance server error (HTTP {http_status})")]
    Server { http_status: u16 },
    #[error("request timed out")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(String),
    #[error("could not decode the response: {0}")]
    Decode(String),
    #[error(
        "the listen-key endpoints answer 410 Gone (retired on Binance Spot on 2026-02-20): \
         set [exchange] user_stream = \"ws-api\""
    )]
    ListenKeyRetired,
    #[error("client-side rate budget exhausted: next request possible in {wait:?}")]
    Throttled { wait: Duration },
}

impl RestError {
    /// The request may have reached the matching engine: an order placed or
    /// canceled this way may or may not exist, and must be resolved by a query.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            RestError::Timeout | RestError::Server { .. } | RestError::Transport(_)
        )
    }

    /// Binance's error code, if the server answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            RestError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<Refusal> for RestError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Throttled { wait } => RestError::Throttled { wait },
            Refusal::RateLimited { retry_after } => RestError::RateLimited { retry_after },
            Refusal::IpBanned { retry_after } => RestError::IpBanned { retry_after },
        }
    }
}

/// -1021: "Timestamp for this request is outside of the recvWindow."
const TIMESTAMP_OUTSIDE_RECV_WINDOW: i64 = -1021;
/// -2011: cancel rejected; on DELETE openOrders it means "nothing to cancel".
const CANCEL_REJECTED: i64 = -2011;
/// Order lines open at most; requests beyond them take the async path.
const MAX_ORDER_LINES: usize = 32;
const ORDER_PATH: &str = "/api/v3/order";
/// Binance does not always send Retry-After; a minute is its longest window.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    None,
    ApiKey,
    Signed,
}

type HttpClient =
    hyper_util::client::legacy::Client<Stamping<HttpsConnector<HttpConnector>>, Empty<Bytes>>;

struct Inner {
    http: HttpClient,
    /// Orders and cancels: connections their own task writes to (see `DirectPool`).
    direct: DirectPool<HttpsConnector<HttpConnector>>,
    /// The Host header and path prefix of `base_url`, for the direct connections'
    /// origin-form requests (hyper-util's client derives both from the absolute URL).
    host: http::HeaderValue,
    path_prefix: String,
    /// Order and cancel requests waiting to be written (see `binance::http`).
    writes: Writes,
    /// Orders and cancels written by the task that decided them (see `order_line`).
    lines: OrderLines,
    timeout: Duration,
    base_url: String,
    api_key: Option<String>,
    signer: Option<Signer>,
    recv_window_ms: u64,
    /// server time - local time, in ms.
    offset_ms: AtomicI64,
    limiter: Mutex<RateLimiter>,
}

/// An order or cancel written on an order line: see [`RestClient::place_order_now`].
pub struct WrittenRequest {
    /// When its bytes were handed to the socket's write: where tick-to-request ends.
    pub at: Instant,
    answer: Answer,
    method: Method,
    cost: Cost,
    params: Vec<(&'static str, String)>,
}

/// Cheap to clone; all clones share the connection pool, clock offset and budget.
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn retry_after(h: &HeaderMap) -> Duration {
    header_u64(h, "retry-after")
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

fn cost(weight: u32) -> Cost {
    Cost {
        weight,
        order: false,
        class: RequestClass::Normal,
    }
}

impl RestClient {
    /// Trusts webpki's roots (Mozilla's list) and nothing else.
    pub fn new(settings: RestSettings) -> Result<Self, RestError> {
        Self::with_tls_config(settings, Self::tls_config(&[])?)
    }

    /// `new`, also trusting `roots`: for tests against a loopback TLS server, whose
    /// self-made certificate no public root signs. Nothing in the daemon calls it.
    #[doc(hidden)]
    pub fn with_root_certificates(
        settings: RestSettings,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, RestError> {
        Self::with_tls_config(settings, Self::tls_config(&roots)?)
    }

    fn tls_config(
        roots: &[CertificateDer<'static>],
    ) -> Result<Arc<rustls::ClientConfig>, RestError> {
        crate::tls::client_config(roots).map_err(|e| RestError::Transport(format!("root {e}")))
    }

    /// On the daemon's one client TLS configuration ([`crate::tls::client_config`]),
    /// which its WebSocket connections use too.
    pub fn with_tls_config(
        settings: RestSettings,
        tls_config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, RestError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(settings.timeout));
        // HTTP/1.1 only: one request per connection at a time, so a write is one request.
        // No ALPN is offered (tests/binance_rest_tls.rs pins it); reqwest used to offer h2,
        // and requests and their order are the same either way.
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(&tls_config))
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let writes = Writes::default();
        let idle_timeout = Duration::from_secs(50);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(idle_timeout)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(Stamping::new(tls.clone(), writes.clone()));
        let base_url = settings.base_url.trim_end_matches('/').to_owned();
        let target: http::Uri = base_url
            .parse()
            .map_err(|e| RestError::Transport(format!("rest_url {base_url}: {e}")))?;
        let host = target
            .host()
            .ok_or_else(|| RestError::Transport(format!("rest_url {base_url}: no host")))?;
        let default_port = match target.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        };
        let host = match target.port_u16() {
            Some(port) if Some(port) != default_port => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        let host = http::HeaderValue::try_from(host)
            .map_err(|e| RestError::Transport(format!("rest_url {base_url}: {e}")))?;
        let path_prefix = target.path().trim_end_matches('/').to_owned();
        let lines = OrderLines::new(
            &target,
            tls_config,
            MAX_ORDER_LINES,
            idle_timeout,
            settings.timeout,
        )
        .map_err(|e| RestError::Transport(format!("rest_url {base_url}: {e}")))?;
        let direct = DirectPool::new(Stamping::new(tls, writes.clone()), target, idle_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                direct,
                host,
                path_prefix,
                writes,
                lines,
                timeout: settings.timeout,
                base_url,
                api_key: settings.api_key,
                signer: settings.signer,
                recv_window_ms: settings.recv_window.as_millis() as u64,
                offset_ms: AtomicI64::new(0),
                limiter: Mutex::new(RateLimiter::default()),
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Current estimate of server time, ms since the epoch.
    pub fn server_time_ms(&self) -> u64 {
        (local_ms() + self.inner.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    pub fn time_offset_ms(&self) -> i64 {
        self.inner.offset_ms.load(Ordering::Relaxed)
    }

    pub fn rate_limit_status(&self) -> RateLimitStatus {
        self.inner.limiter.lock().status(self.server_time_ms())
    }

    /// Adopts exchangeInfo's rate limits (done by [`Self::exchange_info`] too).
    pub fn apply_rate_limits(&self, info: &ExchangeInfo) {
        self.inner
            .limiter
            .lock()
            .apply_exchange_limits(&info.rate_limits);
    }

    /// This process's fraction of the account's rate limits (shards sharing one account).
    pub fn set_rate_limit_share(&self, share: rust_decimal::Decimal) {
        self.inner.limiter.lock().set_share(share);
    }

    pub fn api_key(&self) -> Option<&str> {
        self.inner.api_key.as_deref()
    }

    pub fn signer(&self) -> Option<&Signer> {
        self.inner.signer.as_ref()
    }

    // ------------------------------------------------------------ endpoints

    pub async fn time(&self) -> Result<ServerTime, RestError> {
        // Unsigned, so never subject to the -1021 retry in `call`.
        self.send(Method::GET, "/api/v3/time", Auth::None, cost(1), &[], None)
            .await
    }

    /// Measures the server-time offset and keeps it. The server read its clock
    /// somewhere inside our round trip; assuming it did so at the very end makes
    /// our estimate lag by at most one round trip and never run ahead: Binance
    /// rejects timestamps from the future, while a recvWindow of seconds absorbs
    /// a lag of milliseconds.
    pub async fn sync_time(&self) -> Result<i64, RestError> {
        let t = self.time().await?;
        let received = local_ms();
        let offset = t.server_time as i64 - received;
        self.inner.offset_ms.store(offset, Ordering::Relaxed);
        Ok(offset)
    }

    /// Every symbol the exchange lists: several MB on Binance Spot.
    pub async fn exchange_info(&self) -> Result<ExchangeInfo, RestError> {
        self.exchange_info_request(&[]).await
    }

    /// Only `symbols` (same weight, a few KB instead of several MB, which the status check
    /// used to download and parse every 30 s). Binance refuses the whole request with -1121
    /// when one of them is no longer listed; the full list then says which.
    pub async fn exchange_info_for(&self, symbols: &[String]) -> Result<ExchangeInfo, RestError> {
        if symbols.is_empty() {
            return self.exchange_info().await;
        }
        match self.exchange_info_request(&[symbols_param(symbols)?]).await {
            Err(RestError::Api { code: -1121, .. }) => self.exchange_info().await,
            other => other,
        }
    }

    async fn exchange_info_request(
        &self,
        params: &[(&str, String)],
    ) -> Result<ExchangeInfo, RestError> {
        let info: ExchangeInfo = self
            .call(
                Method::GET,
                "/api/v3/exchangeInfo",
                Auth::None,
                cost(20),
                params,
            )
            .await?;
        self.apply_rate_limits(&info);
        Ok(info)
    }

    /// The best bid and ask of `symbols`, in one request (weight 4 for any number).
    pub async fn book_tickers(&self, symbols: &[String]) -> Result<Vec<RestBookTicker>, RestError> {
        self.call(
            Method::GET,
            "/api/v3/ticker/bookTicker",
            Auth::None,
            cost(4),
            &[symbols_param(symbols)?],
        )
        .await
    }

    pub async fn account(&self) -> Result<Account, RestError> {
        self.call(Method::GET, "/api/v3/account", Auth::Signed, cost(20), &[])
            .await
    }

    pub async fn open_orders(&self, symbol: Option<&str>) -> Result<Vec<OrderResponse>, RestError> {
        let mut params = Vec::new();
        if let Some(s) = symbol {
            params.push(("symbol", s.to_owned()));
        }
        let weight = if symbol.is_some() { 6 } else { 80 };
        self.call(
            Method::GET,
            "/api/v3/openOrders",
            Auth::Signed,
            cost(weight),
            &params,
        )
        .await
    }

    pub async fn place_order(&self, order: &NewOrder) -> Result<OrderResponse, RestError> {
        self.submit_order(order, None).await
    }

    /// `place_order`, then `on_send` with the moment the request's bytes were written to
    /// the connection (the end point of tick-to-order), once the request has finished;
    /// not called if they never were.
    pub async fn place_order_noting_send(
        &self,
        order: &NewOrder,
        on_send: &(dyn Fn(Instant) + Sync),
    ) -> Result<OrderResponse, RestError> {
        self.submit_order(order, Some(on_send)).await
    }

    async fn submit_order(
        &self,
        order: &NewOrder,
        on_send: Option<&(dyn Fn(Instant) + Sync)>,
    ) -> Result<OrderResponse, RestError> {
        self.call_noting_send(
            Method::POST,
            "/api/v3/order",
            Auth::Signed,
            order_cost(),
            &order.params(),
            on_send,
        )
        .await
    }

    pub async fn cancel_order(
        &self,
        symbol: &str,
        order: &OrderRef,
    ) -> Result<OrderResponse, RestError> {
        self.submit_cancel(symbol, order, None).await
    }

    /// `cancel_order`, then `on_send` with the moment its bytes were written, as
    /// [`Self::place_order_noting_send`] (a cancel is often the first request a market
    /// frame causes).
    pub async fn cancel_order_noting_send(
        &self,
        symbol: &str,
        order: &OrderRef,
        on_send: &(dyn Fn(Instant) + Sync),
    ) -> Result<OrderResponse, RestError> {
        self.submit_cancel(symbol, order, Some(on_send)).await
    }

    async fn submit_cancel(
        &self,
        symbol: &str,
        order: &OrderRef,
        on_send: Option<&(dyn Fn(Instant) + Sync)>,
    ) -> Result<OrderResponse, RestError> {
        let params = [("symbol", symbol.to_owned()), order.param()];
        self.call_noting_send(
            Method::DELETE,
            "/api/v3/order",
            Auth::Signed,
            cancel_cost(),
            &params,
            on_send,
        )
        .await
    }

    /// Cancels every open order of `symbol`. Binance answers -2011 when there is
    /// nothing to cancel; that is reported as an empty list.
    pub async fn cancel_open_orders(
        &self,
        symbol: &str,
    ) -> Result<Vec<CanceledOpenOrder>, RestError> {
        let params = [("symbol", symbol.to_owned())];
        match self
            .call(
                Method::DELETE,
                "/api/v3/openOrders",
                Auth::Signed,
                cancel_cost(),
                &params,
            )
            .await
        {
            Err(RestError::Api {
                code: CANCEL_REJECTED,
                ..
            }) => Ok(Vec::new()),
            other => other,
        }
    }

    pub async fn query_order(
        &self,
        symbol: &str,
        order: &OrderRef,
    ) -> Result<OrderResponse, RestError> {
        let params = [("symbol", symbol.to_owned()), order.param()];
        self.call(Method::GET, "/api/v3/order", Auth::Signed, cost(4), &params)
            .await
    }

    /// Trades of `symbol` with id >= `from_id` (oldest first), at most `limit` (≤ 1000).
    pub async fn my_trades(
        &self,
        symbol: &str,
        from_id: Option<i64>,
        limit: u16,
    ) -> Result<Vec<MyTrade>, RestError> {
        let mut params = vec![("symbol", symbol.to_owned())];
        if let Some(id) = from_id {
            params.push(("fromId", id.to_string()));
        }
        params.push(("limit", limit.clamp(1, 1000).to_string()));
        self.call(
            Method::GET,
            "/api/v3/myTrades",
            Auth::Signed,
            cost(20),
            &params,
        )
        .await
    }

    pub async fn create_listen_key(&self) -> Result<String, RestError> {
        let k: ListenKey = self
            .call(
                Method::POST,
                "/api/v3/userDataStream",
                Auth::ApiKey,
                cost(2),
                &[],
            )
            .await?;
        Ok(k.listen_key)
    }

    pub async fn keepalive_listen_key(&self, key: &str) -> Result<(), RestError> {
        let _: serde::de::IgnoredAny = self
            .call(
                Method::PUT,
                "/api/v3/userDataStream",
                Auth::ApiKey,
                cost(2),
                &[("listenKey", key.to_owned())],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_listen_key(&self, key: &str) -> Result<(), RestError> {
        let c = Cost {
            weight: 2,
            order: false,
            class: RequestClass::Cancel,
        };
        let _: serde::de::IgnoredAny = self
            .call(
                Method::DELETE,
                "/api/v3/userDataStream",
                Auth::ApiKey,
                c,
                &[("listenKey", key.to_owned())],
            )
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------ machinery

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        auth: Auth,
        cost: Cost,
        params: &[(&str, String)],
    ) -> Result<T, RestError> {
        self.call_noting_send(method, path, auth, cost, params, None)
            .await
    }

    /// `on_send` sees only the first attempt: a -1021 retry is not a new tick's order.
    async fn call_noting_send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        auth: Auth,
        cost: Cost,
        params: &[(&str, String)],
        on_send: Option<&(dyn Fn(Instant) + Sync)>,
    ) -> Result<T, RestError> {
        match self
            .send(method.clone(), path, auth, cost, params, on_send)
            .await
        {
            Err(RestError::Api {
                code: TIMESTAMP_OUTSIDE_RECV_WINDOW,
                ..
            }) if auth == Auth::Signed => self.resend_after_1021(method, path, cost, params).await,
            other => other,
        }
    }

    async fn resend_after_1021<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        cost: Cost,
        params: &[(&str, String)],
    ) -> Result<T, RestError> {
        tracing::warn!(
            path,
            offset_ms = self.time_offset_ms(),
            "timestamp outside recvWindow (-1021): re-syncing server time and retrying once"
        );
        self.sync_time().await?;
        self.send(method, path, Auth::Signed, cost, params, None)
            .await
    }

    /// Signs the order or cancel and writes it on an idle order line now (see
    /// `order_line`). Ok(None): no line is idle, nothing was sent and no budget used.
    fn write_now(
        &self,
        method: Method,
        cost: Cost,
        params: Vec<(&'static str, String)>,
    ) -> Result<Option<WrittenRequest>, RestError> {
        let inner = &*self.inner;
        if !inner.lines.has_idle() {
            return Ok(None);
        }
        let key = self.order_line_key()?;
        inner
            .limiter
            .lock()
            .try_acquire(cost, self.server_time_ms())?;
        let head = self.order_head(&method, key, &params)?;
        // The line may turn out to have ended just now: then the budget taken above is
        // spent without a request (counted once more when the async path sends it), a
        // conservative miscount that the next response's headers correct.
        Ok(inner
            .lines
            .write_now(&head, inner.timeout)
            .map(|w| WrittenRequest {
                at: w.at,
                answer: w.answer,
                method,
                cost,
                params,
            }))
    }

    fn order_line_key(&self) -> Result<&str, RestError> {
        let key = self.inner.api_key.as_deref().ok_or_else(|| {
            RestError::Transport("endpoint needs an API key but none is configured".into())
        })?;
        // hyper refuses such a header value; this head is written by hand.
        if key.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(RestError::Transport(
                "the API key holds a line break".into(),
            ));
        }
        Ok(key)
    }

    /// The signed request's bytes, as an order line writes them.
    fn order_head(
        &self,
        method: &Method,
        key: &str,
        params: &[(&'static str, String)],
    ) -> Result<Vec<u8>, RestError> {
        let inner = &*self.inner;
        let query = self.query_string(Auth::Signed, params)?;
        let mut head = Vec::with_capacity(160 + query.len() + key.len());
        for part in [
            method.as_str(),
            " ",
            &inner.path_prefix,
            ORDER_PATH,
            "?",
            &query,
            " HTTP/1.1\r\nhost: ",
        ] {
            head.extend_from_slice(part.as_bytes());
        }
        head.extend_from_slice(inner.host.as_bytes());
        for part in ["\r\naccept: */*\r\nx-mbx-apikey: ", key] {
            head.extend_from_slice(part.as_bytes());
        }
        if *method == Method::POST {
            head.extend_from_slice(b"\r\ncontent-length: 0");
        }
        head.extend_from_slice(b"\r\n\r\n");
        Ok(head)
    }

    /// Builds and signs `order`'s request as [`Self::place_order_now`] would, and drops it:
    /// nothing is sent and no request budget is taken. Keeps the signing path warm between
    /// sparse ticks (the engine's rehearsal). The request's length, or 0 when it could
    /// not be built (as the real placement would then fail).
    pub fn rehearse_order(&self, order: &NewOrder) -> usize {
        self.order_line_key()
            .and_then(|key| self.order_head(&Method::POST, key, &order.params()))
            .map_or(0, |head| std::hint::black_box(head).len())
    }

    /// Keeps `n` order lines open, so that the first order after a quiet spell finds one
    /// (at most 32). Inside the runtime only.
    pub fn keep_order_lines(&self, n: usize) {
        self.inner.lines.keep(n);
    }

    /// Order lines open and idle now.
    pub fn idle_order_lines(&self) -> usize {
        self.inner.lines.idle()
    }

    /// `place_order`, signed and written on an idle order line before this returns.
    /// Ok(None) when no line is idle: nothing was sent; `place_order` sends it.
    pub fn place_order_now(&self, order: &NewOrder) -> Result<Option<WrittenRequest>, RestError> {
        self.write_now(Method::POST, order_cost(), order.params())
    }

    /// `cancel_order`, written now as [`Self::place_order_now`].
    pub fn cancel_order_now(
        &self,
        symbol: &str,
        order: &OrderRef,
    ) -> Result<Option<WrittenRequest>, RestError> {
        let params = vec![("symbol", symbol.to_owned()), order.param()];
        self.write_now(Method::DELETE, cancel_cost(), params)
    }

    /// The outcome of a written order or cancel, as `place_order` / `cancel_order`
    /// return it (after a -1021, re-signed and sent once more the async way).
    pub async fn written_response(&self, w: WrittenRequest) -> Result<OrderResponse, RestError> {
        let raw = match w.answer.await {
            Ok(Ok(raw)) => raw,
            Ok(Err(LineError::TimedOut)) => return Err(RestError::Timeout),
            Ok(Err(LineError::Ended(why))) => return Err(RestError::Transport(why)),
            Err(_) => return Err(RestError::Transport("the order line ended".into())),
        };
        let now = self.observe_headers(&raw.headers);
        match self.interpret(ORDER_PATH, raw.status, &raw.headers, now, &raw.body) {
            Err(RestError::Api {
                code: TIMESTAMP_OUTSIDE_RECV_WINDOW,
                ..
            }) => {
                self.resend_after_1021(w.method, ORDER_PATH, w.cost, &w.params)
                    .await
            }
            other => other,
        }
    }

    fn query_string(&self, auth: Auth, params: &[(&str, String)]) -> Result<String, RestError> {
        let mut query = rest_payload(params.iter().map(|(k, v)| (*k, v.as_str())));
        if auth == Auth::Signed {
            let signer = self.inner.signer.as_ref().ok_or_else(|| {
                RestError::Transport("signed endpoint called without an API secret/key".into())
            })?;
            if !query.is_empty() {
                query.push('&');
            }
            use std::fmt::Write;
            let _ = write!(
                query,
                "recvWindow={}&timestamp={}",
                self.inner.recv_window_ms,
                self.server_time_ms()
            );
            // The signature covers the percent-encoded payload (Binance since
            // 2026-01-15); base64 Ed25519 signatures need encoding themselves.
            let signature = signer.sign(query.as_bytes());
            let _ = write!(query, "&signature={}", percent_encode(&signature));
        }
        Ok(query)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        auth: Auth,
        cost: Cost,
        params: &[(&str, String)],
        on_send: Option<&(dyn Fn(Instant) + Sync)>,
    ) -> Result<T, RestError> {
        self.inner
            .limiter
            .lock()
            .try_acquire(cost, self.server_time_ms())?;
        let query = self.query_string(auth, params)?;
        // Orders and cancels go out on connections this task writes to itself; the
        // rest through hyper-util's pooled client. Same request, headers and handling.
        let direct = path == "/api/v3/order" && method != Method::GET;
        let base = if direct {
            self.inner.path_prefix.as_str()
        } else {
            self.inner.base_url.as_str()
        };
        let mut url = String::with_capacity(base.len() + path.len() + 1 + query.len());
        url.push_str(base);
        url.push_str(path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        // The end of a signed query is its signature: no other request line has it. Only
        // probed requests (orders, cancels) are watched; the others pay nothing.
        let stamp = on_send.map(|_| {
            self.inner
                .writes
                .watch(&url.as_bytes()[url.len().saturating_sub(24)..])
        });
        // The URL carries the signed query; keep it out of errors.
        let uri = http::Uri::try_from(url)
            .map_err(|e| RestError::Transport(format!("{path}: invalid request URL: {e}")))?;
        // As reqwest sent it (its one default header).
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(ACCEPT, "*/*");
        if auth != Auth::None {
            let key = self.inner.api_key.as_deref().ok_or_else(|| {
                RestError::Transport("endpoint needs an API key but none is configured".into())
            })?;
            req = req.header("X-MBX-APIKEY", key);
        }
        if direct {
            req = req.header(http::header::HOST, self.inner.host.clone());
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| RestError::Transport(format!("{path}: {e}")))?;
        let started = Instant::now();
        // One deadline for connect, send and the whole response, as reqwest's `timeout`.
        let exchange = tokio::time::timeout(self.inner.timeout, async {
            let (parts, body) = if direct {
                self.inner.direct.exchange(req).await.map_err(|e| match e {
                    DirectError::Connect(e) => transport_error(&*e, true),
                    DirectError::Http(e) => transport_error(&e, false),
                })?
            } else {
                let resp = self.inner.http.request(req).await.map_err(|e| {
                    let connect = e.is_connect();
                    transport_error(&e, connect)
                })?;
                let (parts, body) = resp.into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|e| transport_error(&e, false))?
                    .to_bytes();
                (parts, body)
            };
            let now = self.observe_headers(&parts.headers);
            Ok::<_, RestError>((parts.status.as_u16(), parts.headers, now, body))
        })
        .await;
        if let (Some(on_send), Some(sent)) = (on_send, stamp.and_then(|s| s.written())) {
            on_send(sent);
        }
        let (status, headers, now, body) = exchange.map_err(|_| RestError::Timeout)??;
        tracing::trace!(path, status, elapsed = ?started.elapsed(), "REST response");
        self.interpret(path, status, &headers, now, &body)
    }

    /// The limiter learns the exchange's counts from a response's headers; returns now
    /// (server time).
    fn observe_headers(&self, headers: &HeaderMap) -> u64 {
        let now = self.server_time_ms();
        self.inner.limiter.lock().observe_headers(
            now,
            header_u64(headers, "x-mbx-used-weight-1m"),
            header_u64(headers, "x-mbx-order-count-10s"),
            header_u64(headers, "x-mbx-order-count-1d"),
        );
        now
    }

    /// A whole response as the endpoint's value or its error.
    fn interpret<T: DeserializeOwned>(
        &self,
        path: &str,
        status: u16,
        headers: &HeaderMap,
        now: u64,
        body: &[u8],
    ) -> Result<T, RestError> {
        match status {
            200..=299 => serde_json::from_slice(body).map_err(|e| {
                RestError::Decode(format!(
                    "{path}: {e}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ))
            }),
            418 => {
                let wait = retry_after(headers);
                self.inner.limiter.lock().on_banned(now, wait);
                tracing::error!(
                    path,
                    retry_after = ?wait,
                    "IP BANNED by Binance (HTTP 418): all REST requests stop until the ban ends; \
                     nothing is canceled blindly"
                );
                Err(RestError::IpBanned { retry_after: wait })
            }
            429 => {
                let wait = retry_after(headers);
                self.inner.limiter.lock().on_rate_limited(now, wait);
                tracing::error!(path, retry_after = ?wait, "rate limited by Binance (HTTP 429): pausing REST");
                Err(RestError::RateLimited { retry_after: wait })
            }
            410 if path.contains("userDataStream") => {
                tracing::error!("{}", RestError::ListenKeyRetired);
                Err(RestError::ListenKeyRetired)
            }
            500..=599 => Err(RestError::Server {
                http_status: status,
            }),
            _ => Err(match serde_json::from_slice::<ApiErrorBody>(body) {
                Ok(e) => RestError::Api {
                    http_status: status,
                    code: e.code,
                    msg: e.msg,
                },
                Err(_) => RestError::Api {
                    http_status: status,
                    code: 0,
                    msg: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                },
            }),
        }
    }
}

fn order_cost() -> Cost {
    Cost {
        weight: 1,
        order: true,
        class: RequestClass::Normal,
    }
}

fn cancel_cost() -> Cost {
    Cost {
        weight: 1,
        order: false,
        class: RequestClass::Cancel,
    }
}

/// hyper's errors never carry the URL (and with it the signed query).
fn transport_error(e: &(dyn std::error::Error + 'static), connect: bool) -> RestError {
    let mut msg = String::new();
    if connect {
        msg.push_str("connect: ");
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return RestError::Timeout;
        }
        if !msg.is_empty() && !msg.ends_with(": ") {
            msg.push_str(": ");
        }
        msg.push_str(&s.to_string());
        src = s.source();
    }
    RestError::Transport(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn new_order_params_are_normalized_and_ordered() {
        let o = NewOrder {
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            order_type: OrderType::LimitMaker,
            time_in_force: None,
            qty: dec!(0.00100000),
            price: Some(dec!(65000.10)),
            client_order_id: "mmd-BTCUSDT-1".into(),
            resp_type: RespType::Result,
        };
        let p: Vec<String> = o.params().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            p.join("&"),
            "symbol=BTCUSDT&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=65000.1&newClientOrderId=mmd-BTCUSDT-1&newOrderRespType=RESULT"
        );
    }

    #[test]
    fn outcome_unknown_only_when_the_request_may_have_landed() {
        assert!(RestError::Timeout.outcome_unknown());
        assert!(RestError::Server { http_status: 503 }.outcome_unknown());
        assert!(RestError::Transport("reset".into()).outcome_unknown());
        assert!(
            !RestError::Api {
                http_status: 400,
                code: -2010,
                msg: String::new()
            }
            .outcome_unknown()
        );
        assert!(
            !RestError::Throttled {
                wait: Duration::from_secs(1)
            }
            .outcome_unknown()
        );
        assert!(RestError::ListenKeyRetired.to_string().contains("ws-api"));
    }

    #[test]
    fn settings_debug_hides_the_key() {
        let s = RestSettings {
            base_url: "http://x".into(),
            api_key: Some("SECRETKEY".into()),
            signer: Some(Signer::Hmac(super::super::sign::HmacSigner::new(b"s3cr3t"))),
            recv_window: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        };
        let d = format!("{s:?}");
        assert!(!d.contains("SECRETKEY") && !d.contains("s3cr3t"), "{d}");
    }
}
