//! Binance Spot wire types, as the daemon reads them.
//!
//! Tolerant where Binance is inconsistent across eras (`C` is `null` in 2019-2022
//! payloads and `""` since; conditional fields come and go), strict where a wrong
//! value would cost money (prices and quantities are exact decimals, sides and
//! statuses are enums). Unknown enum values map to `Unknown` instead of failing the
//! whole frame, so a new Binance status does not blind the daemon.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

/// `X` in executionReport, `status` in REST order responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    New,
    PendingNew,
    PartiallyFilled,
    Filled,
    Canceled,
    PendingCancel,
    Rejected,
    Expired,
    ExpiredInMatch,
    #[serde(other)]
    Unknown,
}

impl OrderStatus {
    /// No further fills can happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled
                | OrderStatus::Canceled
                | OrderStatus::Rejected
                | OrderStatus::Expired
                | OrderStatus::ExpiredInMatch
        )
    }
}

/// `x` in executionReport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecType {
    New,
    Canceled,
    Replaced,
    Rejected,
    Trade,
    Expired,
    TradePrevention,
    Amendment,
    #[serde(other)]
    Unknown,
}

/// `C` was `null` in older payloads and is `""` now; both mean "none".
fn empty_string_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.is_empty()))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExecutionReport {
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "c")]
    pub client_order_id: String,
    #[serde(rename = "S")]
    pub side: Side,
    #[serde(rename = "o")]
    pub order_type: String,
    #[serde(rename = "f")]
    pub time_in_force: String,
    #[serde(rename = "q")]
    pub orig_qty: Decimal,
    #[serde(rename = "p")]
    pub price: Decimal,
    /// On a cancel, `c` is the cancel request's id and `C` the order's original id.
    #[serde(rename = "C", default, deserialize_with = "empty_string_as_none")]
    pub orig_client_order_id: Option<String>,
    #[serde(rename = "x")]
    pub exec_type: ExecType,
    #[serde(rename = "X")]
    pub status: OrderStatus,
    #[serde(rename = "r")]
    pub reject_reason: String,
    #[serde(rename = "i")]
    pub order_id: u64,
    #[serde(rename = "l")]
    pub last_qty: Decimal,
    #[serde(rename = "z")]
    pub cum_qty: Decimal,
    #[serde(rename = "L")]
    pub last_price: Decimal,
    #[serde(rename = "n")]
    pub commission: Decimal,
    /// `null` when there is no commission.
    #[serde(rename = "N")]
    pub commission_asset: Option<String>,
    #[serde(rename = "T")]
    pub transaction_time: u64,
    /// -1 when the event is not a trade.
    #[serde(rename = "t")]
    pub trade_id: i64,
    /// Execution id: unique per event of a symbol; absent (or "Ignore") in old payloads.
    #[serde(rename = "I", default)]
    pub execution_id: Option<u64>,
    #[serde(rename = "w", default)]
    pub is_working: bool,
    #[serde(rename = "m")]
    pub is_maker: bool,
    #[serde(rename = "Z", default)]
    pub cum_quote_qty: Option<Decimal>,
    /// Expiry reason, since 2026-03-26.
    #[serde(rename = "eR", default)]
    pub expiry_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WireBalance {
    #[serde(rename = "a")]
    pub asset: String,
    #[serde(rename = "f")]
    pub free: Decimal,
    #[serde(rename = "l")]
    pub locked: Decimal,
}

/// `outboundAccountPosition`: only the assets that changed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountPosition {
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "u")]
    pub last_update: u64,
    #[serde(rename = "B")]
    pub balances: Vec<WireBalance>,
}

/// 2018-era `outboundAccountInfo`: a full balance snapshot (removed from Spot in 2021,
/// still sent by the simulator's legacy mode and some compatible venues).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountInfo {
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "u", default)]
    pub last_update: Option<u64>,
    #[serde(rename = "B")]
    pub balances: Vec<WireBalance>,
}

/// `balanceUpdate`: a deposit, withdrawal or transfer outside trading.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BalanceUpdate {
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "a")]
    pub asset: String,
    #[serde(rename = "d")]
    pub delta: Decimal,
    #[serde(rename = "T")]
    pub clear_time: u64,
}

/// Everything the user data stream can deliver, in either transport's envelope
/// (bare on `/ws/<listenKey>`, `{"subscriptionId":n,"event":{..}}` on the WebSocket API).
#[derive(Debug, Clone, PartialEq)]
pub enum UserEvent {
    ExecutionReport(Box<ExecutionReport>),
    AccountPosition(AccountPosition),
    AccountInfo(AccountInfo),
    BalanceUpdate(BalanceUpdate),
    ListenKeyExpired {
        event_time: u64,
        listen_key: String,
    },
    EventStreamTerminated {
        event_time: u64,
    },
    ServerShutdown {
        event_time: u64,
    },
    /// Known but irrelevant to market making (listStatus, externalLockUpdate) or new.
    Other {
        event_type: String,
    },
}

/// `24hrTicker`: the element of `!ticker@arr` and the `<symbol>@ticker` payload.
/// Only the fields the daemon uses; the rest are skipped without allocation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ticker {
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "c")]
    pub last_price: Decimal,
    #[serde(rename = "b")]
    pub best_bid: Decimal,
    #[serde(rename = "B")]
    pub best_bid_qty: Decimal,
    #[serde(rename = "a")]
    pub best_ask: Decimal,
    #[serde(rename = "A")]
    pub best_ask_qty: Decimal,
}

/// `<symbol>@bookTicker`: no event type, no event time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BookTicker {
    #[serde(rename = "u")]
    pub update_id: u64,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "b")]
    pub best_bid: Decimal,
    #[serde(rename = "B")]
    pub best_bid_qty: Decimal,
    #[serde(rename = "a")]
    pub best_ask: Decimal,
    #[serde(rename = "A")]
    pub best_ask_qty: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MarketEvent {
    Ticker(Ticker),
    BookTicker(BookTicker),
    ServerShutdown { event_time: u64 },
}

// ---------------------------------------------------------------- REST

/// Binance's error body: `{"code":-1021,"msg":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ApiErrorBody {
    pub code: i64,
    pub msg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTime {
    pub server_time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub rate_limit_type: String,
    pub interval: String,
    pub interval_num: u64,
    pub limit: u64,
}

/// Binance's own exchangeInfo example has `"rateLimits": [{}]`; an empty object is a
/// placeholder, while a partly filled entry is still an error.
fn rate_limits_skipping_placeholders<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<RateLimit>, D::Error> {
    use serde::de::Error;
    let raw: Vec<serde_json::Map<String, serde_json::Value>> = Vec::deserialize(d)?;
    raw.into_iter()
        .filter(|m| !m.is_empty())
        .map(|m| serde_json::from_value(serde_json::Value::Object(m)).map_err(D::Error::custom))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "filterType", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SymbolFilter {
    #[serde(rename_all = "camelCase")]
    PriceFilter {
        min_price: Decimal,
        max_price: Decimal,
        tick_size: Decimal,
    },
    #[serde(rename_all = "camelCase")]
    LotSize {
        min_qty: Decimal,
        max_qty: Decimal,
        step_size: Decimal,
    },
    #[serde(rename_all = "camelCase")]
    Notional {
        min_notional: Decimal,
        max_notional: Decimal,
    },
    #[serde(rename_all = "camelCase")]
    MinNotional { min_notional: Decimal },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymbolInfo {
    pub symbol: String,
    /// TRADING, BREAK, HALT, CANCEL_ONLY, ...
    pub status: String,
    pub base_asset: String,
    pub quote_asset: String,
    #[serde(default)]
    pub filters: Vec<SymbolFilter>,
}

/// `GET /api/v3/ticker/bookTicker`: the best bid and ask now (no update id, unlike the
/// stream's bookTicker).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestBookTicker {
    pub symbol: String,
    pub bid_price: Decimal,
    pub bid_qty: Decimal,
    pub ask_price: Decimal,
    pub ask_qty: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeInfo {
    pub server_time: u64,
    #[serde(default, deserialize_with = "rate_limits_skipping_placeholders")]
    pub rate_limits: Vec<RateLimit>,
    pub symbols: Vec<SymbolInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RestBalance {
    pub asset: String,
    pub free: Decimal,
    pub locked: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    #[serde(default)]
    pub update_time: u64,
    pub balances: Vec<RestBalance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderFill {
    pub price: Decimal,
    pub qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    /// Absent in pre-2019 FULL responses (and some compatible venues): -1, as in
    /// executionReport's `t` for "no trade id".
    #[serde(default = "no_trade_id")]
    pub trade_id: i64,
}

fn no_trade_id() -> i64 {
    -1
}

/// POST /api/v3/order (ACK carries only the ids; RESULT/FULL add state; FULL adds fills),
/// and the order objects of GET /api/v3/order, GET/DELETE openOrders, DELETE order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderResponse {
    pub symbol: String,
    pub order_id: u64,
    pub client_order_id: String,
    /// Only on cancel responses: the original id of the canceled order.
    #[serde(default)]
    pub orig_client_order_id: Option<String>,
    #[serde(default)]
    pub transact_time: Option<u64>,
    #[serde(default)]
    pub price: Option<Decimal>,
    #[serde(default)]
    pub orig_qty: Option<Decimal>,
    #[serde(default)]
    pub executed_qty: Option<Decimal>,
    #[serde(default)]
    pub cummulative_quote_qty: Option<Decimal>,
    #[serde(default)]
    pub status: Option<OrderStatus>,
    #[serde(default)]
    pub time_in_force: Option<String>,
    #[serde(default, rename = "type")]
    pub order_type: Option<String>,
    #[serde(default)]
    pub side: Option<Side>,
    #[serde(default)]
    pub fills: Vec<OrderFill>,
}

/// GET /api/v3/myTrades element.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MyTrade {
    pub symbol: String,
    pub id: i64,
    pub order_id: u64,
    pub price: Decimal,
    pub qty: Decimal,
    pub quote_qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    pub time: u64,
    pub is_buyer: bool,
    pub is_maker: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenKey {
    pub listen_key: String,
}

/// An order-list (OCO/OTO) report, as found among the results of
/// DELETE /api/v3/openOrders and `openOrders.cancelAll`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderListReport {
    pub order_list_id: i64,
    pub symbol: String,
    #[serde(default)]
    pub list_status_type: Option<String>,
    #[serde(default)]
    pub order_reports: Vec<OrderResponse>,
}

/// One element of a cancel-all response: a plain order, or an order list whose
/// member orders were canceled with it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CanceledOpenOrder {
    Order(OrderResponse),
    OrderList(OrderListReport),
}

// ---------------------------------------------------------------- WebSocket API

/// A WebSocket API request frame: `{"id":..,"method":..,"params":{..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsApiRequest {
    pub id: serde_json::Value,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `rateLimits` entries of a WebSocket API response (current usage included).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsApiRateLimit {
    pub rate_limit_type: String,
    pub interval: String,
    pub interval_num: u64,
    pub limit: u64,
    #[serde(default)]
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WsApiError {
    pub code: i64,
    pub msg: String,
    /// e.g. `{"serverTime":..,"retryAfter":..}` on a 418/429.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// A WebSocket API response frame. `result` is kept raw so each caller decodes
/// the type it expects; the legacy `userDataStream.ping/stop` examples call it
/// `response`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsApiResponse {
    #[serde(default)]
    pub id: serde_json::Value,
    pub status: u16,
    #[serde(default, alias = "response")]
    pub result: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub error: Option<WsApiError>,
    #[serde(default)]
    pub rate_limits: Vec<WsApiRateLimit>,
}

/// Result of `userDataStream.subscribe` / `userDataStream.subscribe.signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionResult {
    pub subscription_id: u64,
}
