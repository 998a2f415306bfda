//! The exchange state: symbols and their books, orders, accounts, trades, listen keys,
//! connections, and the fan-out of user and market events.
//!
//! Everything here is synchronous and lives behind one mutex: an operation mutates the
//! state and hands its events to the connections' channels before the lock is released,
//! so every subscriber sees events in exactly the order the state changed.

use super::accounts::{BalanceError, Balances};
use super::auth::KeyVerifier;
use super::book::{Book, Fill, MARKET_OWNER, OrderId, Owner, Resting, Side};
use super::config::{SimConfig, SymbolConfig};
use super::price_process::{self, PriceRng};
use super::stats::StatsCounters;
use super::wire::*;
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc};

/// A Binance-style error: HTTP status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub http: u16,
    pub code: i32,
    pub msg: String,
}

impl ApiError {
    pub fn new(http: u16, code: i32, msg: impl Into<String>) -> Self {
        Self {
            http,
            code,
            msg: msg.into(),
        }
    }
    pub fn bad(code: i32, msg: impl Into<String>) -> Self {
        Self::new(400, code, msg)
    }
    pub fn mandatory(param: &str) -> Self {
        Self::bad(
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }
    pub fn illegal(param: &str, range: &str) -> Self {
        Self::bad(
            -1100,
            format!("Illegal characters found in parameter '{param}'; legal range is '{range}'."),
        )
    }
    pub fn filter(name: &str) -> Self {
        Self::bad(-1013, format!("Filter failure: {name}"))
    }
    pub fn insufficient() -> Self {
        Self::bad(
            -2010,
            "Account has insufficient balance for requested action.",
        )
    }
    pub fn invalid_symbol() -> Self {
        Self::bad(-1121, "Invalid symbol.")
    }
    pub fn unknown_order_cancel() -> Self {
        Self::bad(-2011, "Unknown order sent.")
    }
    pub fn no_such_order() -> Self {
        Self::bad(-2013, "Order does not exist.")
    }
    pub fn body(&self) -> String {
        serde_json::to_string(&ErrorBody {
            code: self.code,
            msg: &self.msg,
        })
        .unwrap_or_default()
    }
}

/// Server clock: wall time plus an injectable skew.
#[derive(Debug, Default)]
pub struct Clock {
    skew_ms: AtomicI64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (wall + self.skew_ms.load(Ordering::Relaxed)).max(0) as u64
    }
    pub fn set_skew_ms(&self, skew: i64) {
        self.skew_ms.store(skew, Ordering::Relaxed);
    }
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
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
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "LIMIT" => OrderType::Limit,
            "LIMIT_MAKER" => OrderType::LimitMaker,
            "MARKET" => OrderType::Market,
            _ => return None,
        })
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
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "GTC" => TimeInForce::Gtc,
            "IOC" => TimeInForce::Ioc,
            "FOK" => TimeInForce::Fok,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Canceled => "CANCELED",
            OrderStatus::Expired => "EXPIRED",
        }
    }
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespType {
    Ack,
    Result,
    Full,
}

/// A validated-shape new-order request (values still unchecked against filters).
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: Option<TimeInForce>,
    pub quantity: Option<Decimal>,
    pub price: Option<Decimal>,
    pub client_order_id: Option<String>,
    pub resp_type: Option<RespType>,
}

#[derive(Debug, Clone)]
struct Order {
    symbol: u32,
    order_id: OrderId,
    owner: Owner,
    client_order_id: String,
    side: Side,
    order_type: OrderType,
    tif: TimeInForce,
    price: Decimal,
    orig_qty: Decimal,
    executed_qty: Decimal,
    cum_quote: Decimal,
    status: OrderStatus,
    time: u64,
    update_time: u64,
    /// Amount of the spend asset still locked for this order.
    locked: Decimal,
}

/// One fill of an account, as the tests' end-of-run checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRecord {
    pub symbol: String,
    pub id: u64,
    pub order_id: u64,
    pub client_order_id: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    pub quote_qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    pub is_maker: bool,
    pub time: u64,
}

/// An open order, as the tests' end-of-run checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub symbol: String,
    pub order_id: u64,
    pub client_order_id: String,
    pub side: Side,
    pub order_type: String,
    pub time_in_force: String,
    pub price: Decimal,
    pub orig_qty: Decimal,
    pub executed_qty: Decimal,
    pub cummulative_quote_qty: Decimal,
    pub status: String,
    pub time: u64,
    pub update_time: u64,
}

/// A user-data event, serialized once in its unwrapped (listen-key) form.
#[derive(Debug)]
pub struct UserEvent {
    pub kind: &'static str,
    pub json: String,
}

pub type UserSink = mpsc::UnboundedSender<Arc<UserEvent>>;

/// A top-of-book change, ready to send as `<symbol>@bookTicker`.
#[derive(Debug)]
pub struct BookTickerMsg {
    pub symbol: u32,
    pub json: String,
}

/// What a connection is, for targeted faults and lifecycle messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnKind {
    Market,
    User { account: u32, listen_key: String },
    WsApi,
}

/// Orders from the exchange (or the fault injector) to one connection task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnCtl {
    /// Drop the TCP connection without a close frame.
    Abort,
    /// Send `serverShutdown`, then close.
    ServerShutdown,
    /// Send `listenKeyExpired` for this key, then close.
    ListenKeyExpired(String),
    /// The exchange restarted: drop the connection.
    Restart,
    /// Send a deliberately broken frame.
    Inject(super::faults::FrameKind),
}

struct ConnEntry {
    kind: ConnKind,
    ctl: mpsc::UnboundedSender<ConnCtl>,
}

struct Account {
    api_key: String,
    verifier: KeyVerifier,
    balances: Balances,
    update_time: u64,
    trades: Vec<TradeRecord>,
    sinks: Vec<(u64, UserSink)>,
    listen_key: Option<(String, Instant)>,
}

/// Best bid and best ask (price ticks, quantity), as last published.
type TopOfBook = (Option<(i64, Decimal)>, Option<(i64, Decimal)>);

pub(crate) struct SymbolState {
    pub cfg: SymbolConfig,
    /// Configured symbols get synthetic liquidity and taker flow; fillers only a ticker.
    pub active: bool,
    pub status: String,
    pub book: Book,
    pub lower: String,
    next_order_id: u64,
    next_trade_id: u64,
    pub mid: f64,
    rng: PriceRng,
    synthetic: Vec<OrderId>,
    book_update_id: u64,
    last_top: TopOfBook,
    // 24h ticker statistics (since start).
    open: Decimal,
    high: Decimal,
    low: Decimal,
    last: Decimal,
    last_qty: Decimal,
    volume: Decimal,
    quote_volume: Decimal,
    first_trade_id: i64,
    last_trade_id: i64,
    trade_count: u64,
}

impl SymbolState {
    pub fn price(&self, ticks: i64) -> Decimal {
        Decimal::from(ticks) * self.cfg.tick_size
    }

    /// Best bid, its size, best ask, its size; zeros for an empty side (as Binance shows it).
    fn touch(&self) -> (Decimal, Decimal, Decimal, Decimal) {
        let (b, bq) = self
            .book
            .best_bid()
            .map(|(p, q)| (self.price(p), q))
            .unwrap_or_default();
        let (a, aq) = self
            .book
            .best_ask()
            .map(|(p, q)| (self.price(p), q))
            .unwrap_or_default();
        (b, bq, a, aq)
    }

    fn record_trade_stats(&mut self, price: Decimal, qty: Decimal, id: u64) {
        if self.trade_count == 0 {
            self.first_trade_id = id as i64;
        }
        self.last_trade_id = id as i64;
        self.trade_count += 1;
        self.last = price;
        self.last_qty = qty;
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.volume += qty;
        self.quote_volume += price * qty;
    }
}

pub struct Exchange {
    pub(crate) cfg: Arc<SimConfig>,
    pub(crate) clock: Arc<Clock>,
    pub(crate) stats: Arc<StatsCounters>,
    pub(crate) symbols: Vec<SymbolState>,
    symbol_index: HashMap<String, u32>,
    accounts: Vec<Account>,
    account_index: HashMap<String, u32>,
    orders: HashMap<(u32, OrderId), Order>,
    /// Open orders by (owner, symbol, id): queries never scan the order history.
    open_index: std::collections::BTreeSet<(Owner, u32, OrderId)>,
    client_ids: HashMap<(Owner, u32, String), OrderId>,
    listen_keys: HashMap<String, u32>,
    next_exec_id: u64,
    id_rng: PriceRng,
    conns: HashMap<u64, ConnEntry>,
    next_conn_id: u64,
    book_tx: broadcast::Sender<Arc<BookTickerMsg>>,
    pub(crate) frozen: Arc<AtomicBool>,
    fills_scratch: Vec<Fill>,
    /// Recorded (symbol, mid) lines replayed instead of the random walk.
    replay: Vec<(String, f64)>,
    replay_pos: usize,
}

/// What a fill did to the taker, for the FULL response.
struct TakerFill {
    price: Decimal,
    qty: Decimal,
    commission: Decimal,
    commission_asset: String,
    trade_id: u64,
}

impl Exchange {
    pub fn new(cfg: Arc<SimConfig>, clock: Arc<Clock>, stats: Arc<StatsCounters>) -> Self {
        let (book_tx, _) = broadcast::channel(4096);
        let mut ex = Exchange {
            symbols: Vec::new(),
            symbol_index: HashMap::new(),
            accounts: Vec::new(),
            account_index: HashMap::new(),
            orders: HashMap::new(),
            open_index: Default::default(),
            client_ids: HashMap::new(),
            listen_keys: HashMap::new(),
            next_exec_id: 1,
            id_rng: price_process::rng(cfg.seed, u64::MAX),
            conns: HashMap::new(),
            next_conn_id: 1,
            book_tx,
            frozen: Arc::new(AtomicBool::new(false)),
            fills_scratch: Vec::new(),
            replay: Vec::new(),
            replay_pos: 0,
            cfg: cfg.clone(),
            clock,
            stats,
        };
        for s in &cfg.symbols {
            ex.add_symbol(s.clone(), true);
        }
        for (i, s) in price_process::filler_symbols(cfg.extra_symbols, cfg.seed)
            .into_iter()
            .enumerate()
        {
            if !ex.symbol_index.contains_key(&s.symbol) {
                ex.add_symbol(s, false);
            }
            let _ = i;
        }
        for a in &cfg.accounts {
            ex.add_account(&a.api_key, &a.api_secret, &a.balances);
        }
        ex.seed_liquidity();
        ex
    }

    fn add_symbol(&mut self, cfg: SymbolConfig, active: bool) {
        let idx = self.symbols.len() as u32;
        let mid = price_process::to_f64(cfg.initial_price);
        let rng = price_process::rng(self.cfg.seed, idx as u64);
        self.symbol_index.insert(cfg.symbol.clone(), idx);
        self.symbols.push(SymbolState {
            lower: cfg.symbol.to_lowercase(),
            status: cfg.status.clone(),
            book: Book::new(),
            next_order_id: 1,
            next_trade_id: 1,
            mid,
            rng,
            synthetic: Vec::new(),
            book_update_id: 1,
            last_top: (None, None),
            open: cfg.initial_price,
            high: cfg.initial_price,
            low: cfg.initial_price,
            last: cfg.initial_price,
            last_qty: Decimal::ZERO,
            volume: Decimal::ZERO,
            quote_volume: Decimal::ZERO,
            first_trade_id: -1,
            last_trade_id: -1,
            trade_count: 0,
            active,
            cfg,
        });
    }

    pub fn add_account(
        &mut self,
        api_key: &str,
        secret: &str,
        balances: &BTreeMap<String, Decimal>,
    ) {
        if self.account_index.contains_key(api_key) {
            return;
        }
        let idx = self.accounts.len() as u32;
        self.account_index.insert(api_key.to_string(), idx);
        self.accounts.push(Account {
            api_key: api_key.to_string(),
            verifier: KeyVerifier::from_secret(secret).unwrap_or_else(|e| {
                // Configs are validated before start; a bad key added at run time
                // falls back to HMAC and never verifies an Ed25519 signature.
                tracing::error!(api_key, %e, "sim account key");
                KeyVerifier::Hmac(crate::binance::sign::HmacSigner::new(secret.as_bytes()))
            }),
            balances: Balances::new(balances),
            update_time: self.clock.now_ms(),
            trades: Vec::new(),
            sinks: Vec::new(),
            listen_key: None,
        });
    }

    /// Replaces the random walk with recorded mids (see `price_process::load_replay`).
    pub fn set_replay(&mut self, lines: Vec<(String, f64)>) {
        self.replay = lines;
        self.replay_pos = 0;
    }

    pub fn book_ticker_receiver(&self) -> broadcast::Receiver<Arc<BookTickerMsg>> {
        self.book_tx.subscribe()
    }

    pub fn account_of(&self, api_key: &str) -> Option<u32> {
        self.account_index.get(api_key).copied()
    }

    pub fn verifier(&self, account: u32) -> &KeyVerifier {
        &self.accounts[account as usize].verifier
    }

    pub fn symbol_of(&self, symbol: &str) -> Option<u32> {
        self.symbol_index.get(symbol).copied()
    }

    pub fn symbol_by_lower(&self, lower: &str) -> Option<u32> {
        self.symbols
            .iter()
            .position(|s| s.lower == lower)
            .map(|i| i as u32)
    }

    pub fn symbol_name(&self, idx: u32) -> &str {
        &self.symbols[idx as usize].cfg.symbol
    }

    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    pub fn set_symbol_status(&mut self, symbol: &str, status: &str) -> bool {
        match self.symbol_of(symbol) {
            Some(i) => {
                self.symbols[i as usize].status = status.to_string();
                true
            }
            None => false,
        }
    }

    // ---------------------------------------------------------------- connections

    pub fn register_conn(&mut self, kind: ConnKind, ctl: mpsc::UnboundedSender<ConnCtl>) -> u64 {
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        self.conns.insert(id, ConnEntry { kind, ctl });
        StatsCounters::inc(&self.stats.connections_opened);
        id
    }

    /// A fresh id from the connection id space (for WebSocket-API subscription sinks).
    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        id
    }

    pub fn api_key_of(&self, account: u32) -> &str {
        &self.accounts[account as usize].api_key
    }

    pub fn unregister_conn(&mut self, id: u64) {
        self.conns.remove(&id);
        for a in &mut self.accounts {
            a.sinks.retain(|(c, _)| *c != id);
        }
    }

    /// Sends `ctl` to every connection `pick` selects; returns how many.
    pub fn signal_conns(&self, pick: impl Fn(&ConnKind) -> bool, ctl: ConnCtl) -> usize {
        let mut n = 0;
        for c in self.conns.values() {
            if pick(&c.kind) && c.ctl.send(ctl.clone()).is_ok() {
                n += 1;
            }
        }
        n
    }

    pub fn add_user_sink(&mut self, account: u32, conn: u64, sink: UserSink) {
        self.accounts[account as usize].sinks.push((conn, sink));
    }

    pub fn remove_user_sink(&mut self, account: u32, conn: u64) {
        self.accounts[account as usize]
            .sinks
            .retain(|(c, _)| *c != conn);
    }

    fn emit(&self, owner: Owner, kind: &'static str, json: String) {
        if owner == MARKET_OWNER {
            return;
        }
        let acct = &self.accounts[owner as usize];
        if acct.sinks.is_empty() {
            return;
        }
        let ev = Arc::new(UserEvent { kind, json });
        for (_, sink) in &acct.sinks {
            let _ = sink.send(ev.clone());
        }
    }

    // ---------------------------------------------------------------- listen keys

    /// POST /api/v3/userDataStream: the account's active key, extended, or a new one.
    pub fn create_listen_key(&mut self, account: u32) -> String {
        let validity = self.cfg.listen_key_validity;
        let now = Instant::now();
        let acct = &mut self.accounts[account as usize];
        if let Some((key, exp)) = &mut acct.listen_key
            && *exp > now
        {
            *exp = now + validity;
            return key.clone();
        }
        let key = price_process::random_alnum(&mut self.id_rng, 60);
        if let Some((old, _)) = acct.listen_key.take() {
            self.listen_keys.remove(&old);
        }
        acct.listen_key = Some((key.clone(), now + validity));
        self.listen_keys.insert(key.clone(), account);
        StatsCounters::inc(&self.stats.listen_keys_created);
        key
    }

    fn live_key_account(&self, key: &str) -> Option<u32> {
        let acct = *self.listen_keys.get(key)?;
        match &self.accounts[acct as usize].listen_key {
            Some((k, exp)) if k == key && *exp > Instant::now() => Some(acct),
            _ => None,
        }
    }

    /// PUT: extends a live key of `account`.
    pub fn keepalive_listen_key(&mut self, account: u32, key: &str) -> Result<(), ApiError> {
        match self.live_key_account(key) {
            Some(a) if a == account => {
                let validity = self.cfg.listen_key_validity;
                if let Some((_, exp)) = &mut self.accounts[a as usize].listen_key {
                    *exp = Instant::now() + validity;
                }
                StatsCounters::inc(&self.stats.keepalives);
                Ok(())
            }
            _ => Err(ApiError::bad(-1125, "This listenKey does not exist.")),
        }
    }

    /// DELETE: closes the key and its streams.
    pub fn delete_listen_key(&mut self, account: u32, key: &str) -> Result<(), ApiError> {
        match self.listen_keys.get(key) {
            Some(&a) if a == account => {
                self.listen_keys.remove(key);
                self.accounts[a as usize].listen_key = None;
                self.signal_conns(
                    |k| matches!(k, ConnKind::User { listen_key, .. } if listen_key == key),
                    ConnCtl::Abort,
                );
                Ok(())
            }
            _ => Err(ApiError::bad(-1125, "This listenKey does not exist.")),
        }
    }

    /// The account whose live key this is (for `/ws/<listenKey>`).
    pub fn listen_key_account(&self, key: &str) -> Option<u32> {
        self.live_key_account(key)
    }

    pub fn listen_keys_of(&self, account: u32) -> Vec<String> {
        match &self.accounts[account as usize].listen_key {
            Some((k, exp)) if *exp > Instant::now() => vec![k.clone()],
            _ => Vec::new(),
        }
    }

    /// Expires keys now (fault injection) or those past their validity.
    pub fn expire_listen_keys(&mut self, force: impl Fn(&str, u32) -> bool) -> usize {
        let now = Instant::now();
        let due: Vec<(String, u32)> = self
            .accounts
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let (k, exp) = a.listen_key.as_ref()?;
                (*exp <= now || force(k, i as u32)).then(|| (k.clone(), i as u32))
            })
            .collect();
        for (key, acct) in &due {
            self.listen_keys.remove(key);
            self.accounts[*acct as usize].listen_key = None;
            StatsCounters::inc(&self.stats.listen_keys_expired);
            self.signal_conns(
                |k| matches!(k, ConnKind::User { listen_key, .. } if listen_key == key),
                ConnCtl::ListenKeyExpired(key.clone()),
            );
        }
        due.len()
    }

    /// Forgets keys without telling anyone (fault injection): connections stay open and
    /// keep delivering, but keepalives answer -1125.
    pub fn forget_listen_keys(&mut self, pick: impl Fn(u32) -> bool) -> usize {
        let mut n = 0;
        for (i, a) in self.accounts.iter_mut().enumerate() {
            if pick(i as u32)
                && let Some((key, _)) = a.listen_key.take()
            {
                self.listen_keys.remove(&key);
                n += 1;
            }
        }
        n
    }

    // ---------------------------------------------------------------- orders

    fn next_exec(&mut self) -> u64 {
        let id = self.next_exec_id;
        self.next_exec_id += 1;
        id
    }

    fn validate_filters(
        s: &SymbolState,
        order_type: OrderType,
        price: Option<Decimal>,
        qty: Decimal,
    ) -> Result<(), ApiError> {
        let c = &s.cfg;
        if let Some(p) = price
            && (p < c.min_price || p > c.max_price || !(p % c.tick_size).is_zero())
        {
            return Err(ApiError::filter("PRICE_FILTER"));
        }
        if qty < c.min_qty || qty > c.max_qty || !(qty % c.step_size).is_zero() {
            return Err(ApiError::filter("LOT_SIZE"));
        }
        if order_type != OrderType::Market
            && let Some(p) = price
        {
            let notional = p * qty;
            if notional < c.min_notional || notional > c.max_notional {
                return Err(ApiError::filter("NOTIONAL"));
            }
        }
        Ok(())
    }

    fn commission(amount: Decimal, rate: Decimal) -> Decimal {
        (amount * rate).round_dp_with_strategy(8, RoundingStrategy::ToZero)
    }

    /// Validates an order fully (POST /api/v3/order/test does only this).
    pub fn test_order(&self, account: u32, req: &NewOrder) -> Result<(), ApiError> {
        self.check_new_order(account, req).map(|_| ())
    }

    /// Returns (symbol index, price ticks, qty, tif) after every check that precedes matching.
    fn check_new_order(
        &self,
        account: u32,
        req: &NewOrder,
    ) -> Result<(u32, i64, Decimal, TimeInForce), ApiError> {
        let sym = self
            .symbol_of(&req.symbol)
            .ok_or_else(ApiError::invalid_symbol)?;
        let s = &self.symbols[sym as usize];
        let tif = match req.order_type {
            OrderType::Limit => req
                .time_in_force
                .ok_or_else(|| ApiError::mandatory("timeInForce"))?,
            _ => {
                if req.time_in_force.is_some() {
                    return Err(ApiError::bad(
                        -1106,
                        "Parameter 'timeInForce' sent when not required.",
                    ));
                }
                TimeInForce::Gtc
            }
        };
        let qty = req
            .quantity
            .ok_or_else(|| ApiError::mandatory("quantity"))?;
        let price = match req.order_type {
            OrderType::Market => {
                if req.price.is_some() {
                    return Err(ApiError::bad(
                        -1106,
                        "Parameter 'price' sent when not required.",
                    ));
                }
                None
            }
            _ => Some(req.price.ok_or_else(|| ApiError::mandatory("price"))?),
        };
        if qty <= Decimal::ZERO {
            return Err(ApiError::bad(-1013, "Invalid quantity."));
        }
        if let Some(p) = price
            && p <= Decimal::ZERO
        {
            return Err(ApiError::bad(-1013, "Invalid price."));
        }
        Self::validate_filters(s, req.order_type, price, qty)?;
        if s.status != "TRADING" {
            return Err(ApiError::bad(-2010, "Market is closed."));
        }
        if let Some(coid) = &req.client_order_id
            && let Some(id) = self.client_ids.get(&(account, sym, coid.clone())).copied()
            && self
                .orders
                .get(&(sym, id))
                .is_some_and(|o| o.status.is_open())
        {
            return Err(ApiError::bad(-2010, "Duplicate order sent."));
        }
        let ticks = match price {
            Some(p) => (p / s.cfg.tick_size)
                .trunc()
                .try_into()
                .map_err(|_| ApiError::filter("PRICE_FILTER"))?,
            None => 0,
        };
        if req.order_type == OrderType::LimitMaker && s.book.would_cross(req.side, ticks) {
            return Err(ApiError::bad(
                -2010,
                "Order would immediately match and take.",
            ));
        }
        // Balance: what the order must be able to pay.
        let bal = &self.accounts[account as usize].balances;
        let (asset, need) = match (req.side, price) {
            (Side::Buy, Some(p)) => (&s.cfg.quote, p * qty),
            (Side::Buy, None) => {
                let cost: Decimal = s
                    .book
                    .sweep_plan(Side::Buy, None, qty)
                    .iter()
                    .map(|(t, q)| s.price(*t) * q)
                    .sum();
                (&s.cfg.quote, cost)
            }
            (Side::Sell, _) => (&s.cfg.base, qty),
        };
        if bal.get(asset).free < need {
            return Err(ApiError::insufficient());
        }
        Ok((sym, ticks, qty, tif))
    }

    /// Places an order: validation, locking, matching, events. Returns the JSON response.
    pub fn place_order(&mut self, account: u32, req: &NewOrder) -> Result<String, ApiError> {
        let (sym, ticks, qty, tif) = self.check_new_order(account, req)?;
        let now = self.clock.now_ms();
        let s = &mut self.symbols[sym as usize];
        let order_id = s.next_order_id;
        s.next_order_id += 1;
        let price = if req.order_type == OrderType::Market {
            Decimal::ZERO
        } else {
            s.price(ticks)
        };
        let (base, quote) = (s.cfg.base.clone(), s.cfg.quote.clone());
        let lock = match (req.side, req.order_type) {
            (Side::Buy, OrderType::Market) => s
                .book
                .sweep_plan(Side::Buy, None, qty)
                .iter()
                .map(|(t, q)| s.price(*t) * q)
                .sum(),
            (Side::Buy, _) => price * qty,
            (Side::Sell, _) => qty,
        };
        let coid = match &req.client_order_id {
            Some(c) => c.clone(),
            None => price_process::client_order_id(&mut self.id_rng),
        };
        let lock_asset = if req.side == Side::Buy { &quote } else { &base };
        self.accounts[account as usize]
            .balances
            .lock(lock_asset, lock)
            .map_err(|_| ApiError::insufficient())?;
        let order = Order {
            symbol: sym,
            order_id,
            owner: account,
            client_order_id: coid.clone(),
            side: req.side,
            order_type: req.order_type,
            tif,
            price,
            orig_qty: qty,
            executed_qty: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            status: OrderStatus::New,
            time: now,
            update_time: now,
            locked: lock,
        };
        self.orders.insert((sym, order_id), order);
        self.open_index.insert((account, sym, order_id));
        self.client_ids
            .insert((account, sym, coid.clone()), order_id);
        StatsCounters::inc(&self.stats.orders_placed);
        self.report(sym, order_id, "NEW", None, now, None);

        let limit = (req.order_type != OrderType::Market).then_some(ticks);
        let fok_short = tif == TimeInForce::Fok
            && self.symbols[sym as usize]
                .book
                .available(req.side, limit, qty)
                < qty;
        let mut taker_fills = Vec::new();
        let left = if fok_short {
            qty
        } else {
            self.run_match(
                sym,
                account,
                Some(order_id),
                req.side,
                limit,
                qty,
                now,
                &mut taker_fills,
            )
        };
        let rests = req.order_type != OrderType::Market && tif == TimeInForce::Gtc;
        if left > Decimal::ZERO {
            if rests {
                self.symbols[sym as usize].book.insert(
                    req.side,
                    ticks,
                    Resting {
                        id: order_id,
                        owner: account,
                        qty: left,
                    },
                );
            } else {
                self.finish_order(sym, order_id, OrderStatus::Expired, now, None);
            }
        }
        self.publish_top(sym);
        self.flush_account_updates(now);
        let o = &self.orders[&(sym, order_id)];
        let resp_type = req.resp_type.unwrap_or(match req.order_type {
            OrderType::Limit | OrderType::Market => RespType::Full,
            OrderType::LimitMaker => RespType::Ack,
        });
        let symbol = &self.symbols[sym as usize].cfg.symbol;
        let json = match resp_type {
            RespType::Ack => serde_json::to_string(&OrderAck {
                symbol,
                order_id,
                order_list_id: -1,
                client_order_id: &o.client_order_id,
                transact_time: now,
            }),
            RespType::Result | RespType::Full => {
                let fills = (resp_type == RespType::Full).then(|| {
                    taker_fills
                        .iter()
                        .map(|f| OrderFillJson {
                            price: D8(f.price),
                            qty: D8(f.qty),
                            commission: D8(f.commission),
                            commission_asset: &f.commission_asset,
                            trade_id: f.trade_id,
                        })
                        .collect()
                });
                serde_json::to_string(&self.order_result(o, now, fills))
            }
        };
        json.map_err(|e| ApiError::new(500, -1000, format!("serialization failed: {e}")))
    }

    fn order_result<'a>(
        &'a self,
        o: &'a Order,
        now: u64,
        fills: Option<Vec<OrderFillJson<'a>>>,
    ) -> OrderResult<'a> {
        OrderResult {
            symbol: &self.symbols[o.symbol as usize].cfg.symbol,
            order_id: o.order_id,
            order_list_id: -1,
            client_order_id: &o.client_order_id,
            transact_time: now,
            price: D8(o.price),
            orig_qty: D8(o.orig_qty),
            executed_qty: D8(o.executed_qty),
            orig_quote_order_qty: D8(Decimal::ZERO),
            cummulative_quote_qty: D8(o.cum_quote),
            status: o.status.as_str(),
            time_in_force: o.tif.as_str(),
            order_type: o.order_type.as_str(),
            side: o.side.as_str(),
            working_time: o.time,
            self_trade_prevention_mode: "NONE",
            fills,
        }
    }

    /// Matches a taker (user order or the synthetic market) and settles every fill.
    #[allow(clippy::too_many_arguments)]
    fn run_match(
        &mut self,
        sym: u32,
        taker_owner: Owner,
        taker_order: Option<OrderId>,
        side: Side,
        limit: Option<i64>,
        qty: Decimal,
        now: u64,
        taker_fills: &mut Vec<TakerFill>,
    ) -> Decimal {
        let mut fills = std::mem::take(&mut self.fills_scratch);
        fills.clear();
        let left = self.symbols[sym as usize]
            .book
            .match_incoming(side, limit, qty, &mut fills);
        let (maker_fee, taker_fee) = (self.cfg.maker_fee, self.cfg.taker_fee);
        for f in &fills {
            let s = &mut self.symbols[sym as usize];
            let trade_id = s.next_trade_id;
            s.next_trade_id += 1;
            let price = s.price(f.price_ticks);
            s.record_trade_stats(price, f.qty, trade_id);
            StatsCounters::inc(&self.stats.trades);
            if f.maker_owner != MARKET_OWNER {
                let (c, asset) = self.settle_fill(
                    sym, f.maker_id, price, f.qty, maker_fee, true, trade_id, now,
                );
                let _ = (c, asset);
            }
            if taker_owner != MARKET_OWNER
                && let Some(tid) = taker_order
            {
                let (commission, commission_asset) =
                    self.settle_fill(sym, tid, price, f.qty, taker_fee, false, trade_id, now);
                taker_fills.push(TakerFill {
                    price,
                    qty: f.qty,
                    commission,
                    commission_asset,
                    trade_id,
                });
            }
        }
        self.fills_scratch = fills;
        left
    }

    /// Applies one fill to a user order: balances, order state, trade record, executionReport.
    #[allow(clippy::too_many_arguments)]
    fn settle_fill(
        &mut self,
        sym: u32,
        order_id: OrderId,
        price: Decimal,
        qty: Decimal,
        fee: Decimal,
        is_maker: bool,
        trade_id: u64,
        now: u64,
    ) -> (Decimal, String) {
        let s = &self.symbols[sym as usize];
        let (base, quote, symbol) = (
            s.cfg.base.clone(),
            s.cfg.quote.clone(),
            s.cfg.symbol.clone(),
        );
        let Some(o) = self.orders.get_mut(&(sym, order_id)) else {
            tracing::error!(order_id, "fill for an order the exchange does not know");
            return (Decimal::ZERO, String::new());
        };
        let quote_qty = price * qty;
        let acct = &mut self.accounts[o.owner as usize];
        let (spent, spent_asset, received, received_asset) = match o.side {
            Side::Buy => (quote_qty, &quote, qty, &base),
            Side::Sell => (qty, &base, quote_qty, &quote),
        };
        let commission = Self::commission(received, fee);
        let mut result: Result<(), BalanceError> = acct.balances.spend_locked(spent_asset, spent);
        o.locked -= spent;
        if o.side == Side::Buy && o.order_type != OrderType::Market {
            // Locked at the limit price, filled at the maker's (better or equal) price.
            let refund = (o.price - price) * qty;
            if !refund.is_zero() {
                result = result.and(acct.balances.unlock(&quote, refund));
                o.locked -= refund;
            }
        }
        result = result.and(acct.balances.credit(received_asset, received - commission));
        if let Err(e) = result {
            tracing::error!(%e, order_id, "balance invariant broken on fill");
        }
        acct.update_time = now;
        o.executed_qty += qty;
        o.cum_quote += quote_qty;
        o.update_time = now;
        let filled = o.executed_qty == o.orig_qty;
        o.status = if filled {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        if filled {
            self.open_index.remove(&(o.owner, sym, order_id));
        }
        if filled && !o.locked.is_zero() {
            let rest = o.locked;
            let _ = acct.balances.unlock(spent_asset, rest);
            o.locked = Decimal::ZERO;
        }
        acct.trades.push(TradeRecord {
            symbol,
            id: trade_id,
            order_id,
            client_order_id: o.client_order_id.clone(),
            side: o.side,
            price,
            qty,
            quote_qty,
            commission,
            commission_asset: received_asset.clone(),
            is_maker,
            time: now,
        });
        let asset = received_asset.clone();
        self.report(
            sym,
            order_id,
            "TRADE",
            Some((qty, price, commission, &asset, trade_id, is_maker)),
            now,
            None,
        );
        (commission, asset)
    }

    /// Ends an open order (cancel or expiry): releases its lock, removes it from the book.
    fn finish_order(
        &mut self,
        sym: u32,
        order_id: OrderId,
        status: OrderStatus,
        now: u64,
        cancel_ids: Option<(&str, &str)>,
    ) {
        self.symbols[sym as usize].book.cancel(order_id);
        let s = &self.symbols[sym as usize];
        let (base, quote) = (s.cfg.base.clone(), s.cfg.quote.clone());
        let Some(o) = self.orders.get_mut(&(sym, order_id)) else {
            return;
        };
        let asset = if o.side == Side::Buy { quote } else { base };
        let acct = &mut self.accounts[o.owner as usize];
        if !o.locked.is_zero() {
            if let Err(e) = acct.balances.unlock(&asset, o.locked) {
                tracing::error!(%e, order_id, "balance invariant broken on unlock");
            }
            o.locked = Decimal::ZERO;
        }
        acct.update_time = now;
        o.status = status;
        o.update_time = now;
        self.open_index.remove(&(o.owner, sym, order_id));
        let x = if status == OrderStatus::Canceled {
            "CANCELED"
        } else {
            "EXPIRED"
        };
        self.report(sym, order_id, x, None, now, cancel_ids);
    }

    /// Emits an executionReport for the order's current state.
    fn report(
        &mut self,
        sym: u32,
        order_id: OrderId,
        exec_type: &'static str,
        trade: Option<(Decimal, Decimal, Decimal, &str, u64, bool)>,
        now: u64,
        cancel_ids: Option<(&str, &str)>,
    ) {
        let exec_id = self.next_exec();
        let Some(o) = self.orders.get(&(sym, order_id)) else {
            return;
        };
        if self.accounts[o.owner as usize].sinks.is_empty() {
            return;
        }
        let s = &self.symbols[sym as usize];
        let (c, orig) = cancel_ids.unwrap_or((&o.client_order_id, ""));
        let (l, lp, n, nasset, t, m) = match trade {
            Some((q, p, n, a, t, m)) => (q, p, fmt8(n), Some(a), t as i64, m),
            None => (
                Decimal::ZERO,
                Decimal::ZERO,
                "0".to_string(),
                None,
                -1,
                false,
            ),
        };
        let on_book = o.status.is_open() && s.book.contains(order_id);
        let rep = ExecutionReport {
            e: "executionReport",
            event_time: now,
            s: &s.cfg.symbol,
            c,
            side: o.side.as_str(),
            o: o.order_type.as_str(),
            f: o.tif.as_str(),
            q: D8(o.orig_qty),
            p: D8(o.price),
            stop_price: D8(Decimal::ZERO),
            iceberg_qty: D8(Decimal::ZERO),
            g: -1,
            orig_client_order_id: orig,
            x: exec_type,
            status: o.status.as_str(),
            r: "NONE",
            i: order_id,
            l: D8(l),
            z: D8(o.executed_qty),
            last_price: D8(lp),
            n,
            commission_asset: nasset,
            transaction_time: now,
            t,
            execution_id: exec_id,
            w: on_book || (exec_type == "NEW" && o.order_type != OrderType::Market),
            m,
            ignore: false,
            creation_time: o.time,
            cum_quote: D8(o.cum_quote),
            last_quote: D8(l * lp),
            quote_order_qty: D8(Decimal::ZERO),
            working_time: o.time,
            stp_mode: "NONE",
        };
        let json = serde_json::to_string(&rep).unwrap_or_default();
        let owner = o.owner;
        self.emit(owner, "executionReport", json);
    }

    /// Sends outboundAccountPosition (and the legacy snapshot) for every account whose
    /// balances changed since the last flush.
    fn flush_account_updates(&mut self, now: u64) {
        let legacy = self.cfg.legacy_account_info;
        let (maker, taker) = (
            commission_bps(self.cfg.maker_fee),
            commission_bps(self.cfg.taker_fee),
        );
        for i in 0..self.accounts.len() {
            let changed = self.accounts[i].balances.take_changed();
            if changed.is_empty() || self.accounts[i].sinks.is_empty() {
                continue;
            }
            let a = &self.accounts[i];
            let pos = OutboundAccountPosition {
                e: "outboundAccountPosition",
                event_time: now,
                u: a.update_time,
                balances: changed
                    .iter()
                    .map(|asset| {
                        let b = a.balances.get(asset);
                        AssetBalance {
                            a: asset,
                            f: D8(b.free),
                            l: D8(b.locked),
                        }
                    })
                    .collect(),
            };
            let json = serde_json::to_string(&pos).unwrap_or_default();
            let legacy_json = legacy.then(|| {
                serde_json::to_string(&OutboundAccountInfo {
                    e: "outboundAccountInfo",
                    event_time: now,
                    m: maker,
                    t: taker,
                    b: 0,
                    s: 0,
                    can_trade: true,
                    can_withdraw: true,
                    can_deposit: true,
                    u: a.update_time,
                    balances: a
                        .balances
                        .all()
                        .iter()
                        .map(|(asset, b)| AssetBalance {
                            a: asset,
                            f: D8(b.free),
                            l: D8(b.locked),
                        })
                        .collect(),
                    permissions: ["SPOT"],
                })
                .unwrap_or_default()
            });
            self.emit(i as u32, "outboundAccountPosition", json);
            if let Some(j) = legacy_json {
                self.emit(i as u32, "outboundAccountInfo", j);
            }
        }
    }

    fn find_order(
        &self,
        account: u32,
        sym: u32,
        order_id: Option<u64>,
        orig_client_order_id: Option<&str>,
    ) -> Result<Option<OrderId>, ApiError> {
        let by_coid = orig_client_order_id
            .and_then(|c| self.client_ids.get(&(account, sym, c.to_string())).copied());
        match (order_id, orig_client_order_id) {
            (None, None) => Err(ApiError::bad(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )),
            (Some(id), Some(c)) => match self.orders.get(&(sym, id)) {
                Some(o) if o.owner == account => {
                    if o.client_order_id == c {
                        Ok(Some(id))
                    } else {
                        Err(ApiError::bad(
                            -2039,
                            "Client order ID is not correct for this order ID.",
                        ))
                    }
                }
                _ => Ok(None),
            },
            (Some(id), None) => Ok(self
                .orders
                .get(&(sym, id))
                .filter(|o| o.owner == account)
                .map(|_| id)),
            (None, Some(_)) => Ok(by_coid),
        }
    }

    /// DELETE /api/v3/order.
    pub fn cancel_order(
        &mut self,
        account: u32,
        symbol: &str,
        order_id: Option<u64>,
        orig_client_order_id: Option<&str>,
        new_client_order_id: Option<&str>,
    ) -> Result<String, ApiError> {
        let sym = self
            .symbol_of(symbol)
            .ok_or_else(ApiError::invalid_symbol)?;
        let id = self
            .find_order(account, sym, order_id, orig_client_order_id)?
            .ok_or_else(ApiError::unknown_order_cancel)?;
        if !self.orders[&(sym, id)].status.is_open() {
            return Err(ApiError::unknown_order_cancel());
        }
        let now = self.clock.now_ms();
        let json = self.cancel_one(sym, id, new_client_order_id, now);
        self.publish_top(sym);
        self.flush_account_updates(now);
        Ok(serde_json::to_string(&json).unwrap_or_default())
    }

    fn cancel_one(
        &mut self,
        sym: u32,
        id: OrderId,
        new_client_order_id: Option<&str>,
        now: u64,
    ) -> serde_json::Value {
        let cancel_id = new_client_order_id
            .map(str::to_string)
            .unwrap_or_else(|| price_process::client_order_id(&mut self.id_rng));
        let orig = self.orders[&(sym, id)].client_order_id.clone();
        self.finish_order(
            sym,
            id,
            OrderStatus::Canceled,
            now,
            Some((&cancel_id, &orig)),
        );
        StatsCounters::inc(&self.stats.orders_canceled);
        let o = &self.orders[&(sym, id)];
        serde_json::to_value(CancelResult {
            symbol: &self.symbols[sym as usize].cfg.symbol,
            orig_client_order_id: &orig,
            order_id: id,
            order_list_id: -1,
            client_order_id: &cancel_id,
            transact_time: now,
            price: D8(o.price),
            orig_qty: D8(o.orig_qty),
            executed_qty: D8(o.executed_qty),
            orig_quote_order_qty: D8(Decimal::ZERO),
            cummulative_quote_qty: D8(o.cum_quote),
            status: o.status.as_str(),
            time_in_force: o.tif.as_str(),
            order_type: o.order_type.as_str(),
            side: o.side.as_str(),
            self_trade_prevention_mode: "NONE",
        })
        .unwrap_or_default()
    }

    /// DELETE /api/v3/openOrders: cancels every open order of the account on the symbol.
    pub fn cancel_all(&mut self, account: u32, symbol: &str) -> Result<String, ApiError> {
        let sym = self
            .symbol_of(symbol)
            .ok_or_else(ApiError::invalid_symbol)?;
        let mut ids: Vec<OrderId> = self
            .open_index
            .range((account, sym, 0)..=(account, sym, OrderId::MAX))
            .map(|(_, _, id)| *id)
            .collect();
        if ids.is_empty() {
            return Err(ApiError::unknown_order_cancel());
        }
        ids.sort_unstable();
        let now = self.clock.now_ms();
        let out: Vec<serde_json::Value> = ids
            .into_iter()
            .map(|id| self.cancel_one(sym, id, None, now))
            .collect();
        self.publish_top(sym);
        self.flush_account_updates(now);
        Ok(serde_json::to_string(&out).unwrap_or_default())
    }

    fn query_json<'a>(&'a self, o: &'a Order) -> QueryOrder<'a> {
        QueryOrder {
            symbol: &self.symbols[o.symbol as usize].cfg.symbol,
            order_id: o.order_id,
            order_list_id: -1,
            client_order_id: &o.client_order_id,
            price: D8(o.price),
            orig_qty: D8(o.orig_qty),
            executed_qty: D8(o.executed_qty),
            cummulative_quote_qty: D8(o.cum_quote),
            status: o.status.as_str(),
            time_in_force: o.tif.as_str(),
            order_type: o.order_type.as_str(),
            side: o.side.as_str(),
            stop_price: D8(Decimal::ZERO),
            iceberg_qty: D8(Decimal::ZERO),
            time: o.time,
            update_time: o.update_time,
            is_working: true,
            working_time: o.time,
            orig_quote_order_qty: D8(Decimal::ZERO),
            self_trade_prevention_mode: "NONE",
        }
    }

    /// GET /api/v3/order.
    pub fn query_order(
        &self,
        account: u32,
        symbol: &str,
        order_id: Option<u64>,
        orig_client_order_id: Option<&str>,
    ) -> Result<String, ApiError> {
        let sym = self
            .symbol_of(symbol)
            .ok_or_else(ApiError::invalid_symbol)?;
        let id = self
            .find_order(account, sym, order_id, orig_client_order_id)?
            .ok_or_else(ApiError::no_such_order)?;
        let o = &self.orders[&(sym, id)];
        Ok(serde_json::to_string(&self.query_json(o)).unwrap_or_default())
    }

    fn open_orders_of(&self, account: u32, sym: Option<u32>) -> Vec<&Order> {
        let range = match sym {
            Some(s) => (account, s, 0)..=(account, s, OrderId::MAX),
            None => (account, 0, 0)..=(account, u32::MAX, OrderId::MAX),
        };
        self.open_index
            .range(range)
            .filter_map(|(_, s, id)| self.orders.get(&(*s, *id)))
            .collect()
    }

    /// GET /api/v3/openOrders.
    pub fn open_orders_json(&self, account: u32, symbol: Option<&str>) -> Result<String, ApiError> {
        let sym = match symbol {
            Some(s) => Some(self.symbol_of(s).ok_or_else(ApiError::invalid_symbol)?),
            None => None,
        };
        let v: Vec<QueryOrder> = self
            .open_orders_of(account, sym)
            .into_iter()
            .map(|o| self.query_json(o))
            .collect();
        Ok(serde_json::to_string(&v).unwrap_or_default())
    }

    /// GET /api/v3/account.
    pub fn account_json(&self, account: u32) -> String {
        let a = &self.accounts[account as usize];
        let info = AccountInfo {
            maker_commission: commission_bps(self.cfg.maker_fee),
            taker_commission: commission_bps(self.cfg.taker_fee),
            buyer_commission: 0,
            seller_commission: 0,
            commission_rates: CommissionRates {
                maker: D8(self.cfg.maker_fee),
                taker: D8(self.cfg.taker_fee),
                buyer: D8(Decimal::ZERO),
                seller: D8(Decimal::ZERO),
            },
            can_trade: true,
            can_withdraw: true,
            can_deposit: true,
            brokered: false,
            require_self_trade_prevention: false,
            prevent_sor: false,
            update_time: a.update_time,
            account_type: "SPOT",
            balances: a
                .balances
                .all()
                .iter()
                .map(|(asset, b)| AccountBalanceJson {
                    asset,
                    free: D8(b.free),
                    locked: D8(b.locked),
                })
                .collect(),
            permissions: ["SPOT"],
            uid: 354937868 + account as u64,
        };
        serde_json::to_string(&info).unwrap_or_default()
    }

    /// GET /api/v3/myTrades.
    #[allow(clippy::too_many_arguments)]
    pub fn my_trades_json(
        &self,
        account: u32,
        symbol: &str,
        from_id: Option<u64>,
        start_time: Option<u64>,
        end_time: Option<u64>,
        order_id: Option<u64>,
        limit: usize,
    ) -> Result<String, ApiError> {
        self.symbol_of(symbol)
            .ok_or_else(ApiError::invalid_symbol)?;
        let a = &self.accounts[account as usize];
        let matching: Vec<&TradeRecord> = a
            .trades
            .iter()
            .filter(|t| t.symbol == symbol)
            .filter(|t| from_id.is_none_or(|f| t.id >= f))
            .filter(|t| start_time.is_none_or(|s| t.time >= s))
            .filter(|t| end_time.is_none_or(|e| t.time <= e))
            .filter(|t| order_id.is_none_or(|o| t.order_id == o))
            .collect();
        // Binance: with fromId or startTime the oldest matching trades, otherwise the most recent.
        let skip = if from_id.is_none() && start_time.is_none() {
            matching.len().saturating_sub(limit)
        } else {
            0
        };
        let v: Vec<MyTrade> = matching
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|t| MyTrade {
                symbol: &t.symbol,
                id: t.id,
                order_id: t.order_id,
                order_list_id: -1,
                price: D8(t.price),
                qty: D8(t.qty),
                quote_qty: D8(t.quote_qty),
                commission: D8(t.commission),
                commission_asset: &t.commission_asset,
                time: t.time,
                is_buyer: t.side == Side::Buy,
                is_maker: t.is_maker,
                is_best_match: true,
            })
            .collect();
        Ok(serde_json::to_string(&v).unwrap_or_default())
    }

    /// Deposit (positive) or withdrawal (negative): balanceUpdate + account events.
    pub fn deposit(&mut self, account: u32, asset: &str, delta: Decimal) -> Result<(), ApiError> {
        let now = self.clock.now_ms();
        let acct = &mut self.accounts[account as usize];
        let r = if delta >= Decimal::ZERO {
            acct.balances.credit(asset, delta)
        } else {
            acct.balances.spend_free(asset, -delta)
        };
        r.map_err(|_| ApiError::insufficient())?;
        acct.update_time = now;
        let json = serde_json::to_string(&BalanceUpdate {
            e: "balanceUpdate",
            event_time: now,
            a: asset,
            d: D8(delta),
            clear_time: now,
        })
        .unwrap_or_default();
        self.emit(account, "balanceUpdate", json);
        self.flush_account_updates(now);
        Ok(())
    }

    /// The exchange restarts: every order and listen key is forgotten, locked funds are
    /// released, every connection is dropped. Balances and trade history survive.
    pub fn restart(&mut self) {
        for s in &mut self.symbols {
            s.book.clear();
            s.synthetic.clear();
        }
        self.orders.clear();
        self.open_index.clear();
        self.client_ids.clear();
        self.listen_keys.clear();
        for a in &mut self.accounts {
            a.balances.release_all_locks();
            a.balances.take_changed();
            a.listen_key = None;
            a.sinks.clear();
        }
        self.signal_conns(|_| true, ConnCtl::Restart);
        self.seed_liquidity();
    }

    // ---------------------------------------------------------------- market data

    /// Sends `<symbol>@bookTicker` if the top of book changed.
    fn publish_top(&mut self, sym: u32) {
        let s = &mut self.symbols[sym as usize];
        let top = (s.book.best_bid(), s.book.best_ask());
        if top == s.last_top {
            return;
        }
        s.last_top = top;
        s.book_update_id += 1;
        if self.book_tx.receiver_count() == 0 {
            return;
        }
        let (b, bq) = top.0.map(|(p, q)| (s.price(p), q)).unwrap_or_default();
        let (a, aq) = top.1.map(|(p, q)| (s.price(p), q)).unwrap_or_default();
        let json = serde_json::to_string(&BookTicker {
            u: s.book_update_id,
            s: &s.cfg.symbol,
            b: D8(b),
            bid_qty: D8(bq),
            a: D8(a),
            ask_qty: D8(aq),
        })
        .unwrap_or_default();
        let _ = self
            .book_tx
            .send(Arc::new(BookTickerMsg { symbol: sym, json }));
    }

    /// Replaces the synthetic liquidity of `sym` around its current mid. A synthetic order
    /// that crosses a resting order trades with it first (the market moved through it).
    fn repost_liquidity(&mut self, sym: u32, now: u64) {
        let m = &self.cfg.market;
        let (spread_ticks, depth, level_notional) =
            (m.spread_ticks, m.depth_levels, m.level_notional);
        let s = &mut self.symbols[sym as usize];
        let tick = price_process::to_f64(s.cfg.tick_size);
        let lo = price_process::to_f64(s.cfg.min_price).max(tick) * 10.0;
        let hi = price_process::to_f64(s.cfg.max_price) / 10.0;
        s.mid = s.mid.clamp(lo, hi.max(lo));
        let mid_ticks = (s.mid / tick).round() as i64;
        let spread = spread_ticks.max(1) as i64;
        let best_bid = mid_ticks - spread / 2;
        let best_ask = best_bid + spread;
        let level_qty =
            price_process::qty_for_notional(level_notional, s.mid, s.cfg.step_size, s.cfg.min_qty);
        for id in std::mem::take(&mut s.synthetic) {
            s.book.cancel(id);
        }
        let mut to_post = Vec::new();
        for i in 0..depth as i64 {
            to_post.push((Side::Sell, best_ask + i));
            to_post.push((Side::Buy, (best_bid - i).max(1)));
        }
        let mut sink = Vec::new();
        for (side, ticks) in to_post {
            let left = self.run_match(
                sym,
                MARKET_OWNER,
                None,
                side,
                Some(ticks),
                level_qty,
                now,
                &mut sink,
            );
            if left > Decimal::ZERO {
                let s = &mut self.symbols[sym as usize];
                let id = s.next_order_id;
                s.next_order_id += 1;
                s.book.insert(
                    side,
                    ticks,
                    Resting {
                        id,
                        owner: MARKET_OWNER,
                        qty: left,
                    },
                );
                s.synthetic.push(id);
            }
        }
        self.publish_top(sym);
    }

    /// Posts the synthetic liquidity of every active symbol (at start and after a restart).
    fn seed_liquidity(&mut self) {
        let now = self.clock.now_ms();
        for sym in 0..self.symbols.len() as u32 {
            if self.symbols[sym as usize].active {
                self.repost_liquidity(sym, now);
            }
        }
    }

    /// One step of the rest of the market for every active symbol: the mid walks, synthetic
    /// liquidity is re-posted around it (trading through any resting order it crosses), and
    /// taker flow sweeps the book.
    pub fn market_step(&mut self, dt: Duration) {
        if self.frozen.load(Ordering::Relaxed) {
            return;
        }
        let now = self.clock.now_ms();
        let m = self.cfg.market.clone();
        let replaying = !self.replay.is_empty();
        if replaying {
            // One recorded line per tick, looping at the end of the file.
            let (symbol, mid) = &self.replay[self.replay_pos % self.replay.len()];
            self.replay_pos += 1;
            if let Some(i) = self.symbol_index.get(symbol) {
                self.symbols[*i as usize].mid = *mid;
            }
        }
        for sym in 0..self.symbols.len() as u32 {
            let s = &mut self.symbols[sym as usize];
            if !s.active || s.status != "TRADING" {
                continue;
            }
            if !replaying {
                s.mid = price_process::walk(&mut s.rng, s.mid, m.volatility, dt);
            }
            self.repost_liquidity(sym, now);
            let s = &mut self.symbols[sym as usize];
            let takers = price_process::poisson(&mut s.rng, m.taker_rate * dt.as_secs_f64());
            for _ in 0..takers {
                let s = &mut self.symbols[sym as usize];
                let tick = price_process::to_f64(s.cfg.tick_size);
                let (side, limit) =
                    price_process::taker_limit(&mut s.rng, s.mid, tick, m.taker_reach_bps);
                let qty = price_process::qty_for_notional(
                    m.taker_notional,
                    s.mid,
                    s.cfg.step_size,
                    s.cfg.min_qty,
                );
                let mut sink = Vec::new();
                self.run_match(
                    sym,
                    MARKET_OWNER,
                    None,
                    side,
                    Some(limit.max(1)),
                    qty,
                    now,
                    &mut sink,
                );
                // The rest of the market refills the touch at once: a taker sweeps
                // through the book (and any quote within its reach) but never leaves
                // a side empty for the tickers to see.
                self.repost_liquidity(sym, now);
            }
            self.publish_top(sym);
        }
        self.flush_account_updates(now);
    }

    /// Builds every symbol's 24hrTicker (walking the fillers' prices first).
    pub fn ticker_snapshot(&mut self, dt: Duration) -> Vec<(u32, String)> {
        let now = self.clock.now_ms();
        let frozen = self.frozen.load(Ordering::Relaxed);
        let vol = self.cfg.market.volatility;
        let mut out = Vec::with_capacity(self.symbols.len());
        for (i, s) in self.symbols.iter_mut().enumerate() {
            if !s.active && !frozen {
                s.mid = price_process::walk(&mut s.rng, s.mid, vol, dt);
                let p = price_process::round_to(s.mid, s.cfg.tick_size);
                if p > Decimal::ZERO {
                    let q = s.cfg.step_size * Decimal::from(1 + (s.trade_count % 7));
                    let id = s.next_trade_id;
                    s.next_trade_id += 1;
                    s.record_trade_stats(p, q, id);
                }
            }
            let (bid, bid_q, ask, ask_q) = if s.active {
                s.touch()
            } else {
                (
                    s.last - s.cfg.tick_size,
                    s.cfg.min_qty,
                    s.last + s.cfg.tick_size,
                    s.cfg.min_qty,
                )
            };
            let change = s.last - s.open;
            let pct = if s.open.is_zero() {
                Decimal::ZERO
            } else {
                (change * Decimal::ONE_HUNDRED / s.open).round_dp(3)
            };
            let wavg = if s.volume.is_zero() {
                s.last
            } else {
                (s.quote_volume / s.volume).round_dp(8)
            };
            let t = Ticker24h {
                e: "24hrTicker",
                event_time: now,
                s: &s.cfg.symbol,
                p: D8(change),
                pct: format!("{:.3}", pct),
                w: D8(wavg),
                x: D8(s.open),
                c: D8(s.last),
                last_qty: D8(s.last_qty),
                b: D8(bid),
                bid_qty: D8(bid_q),
                a: D8(ask),
                ask_qty: D8(ask_q),
                o: D8(s.open),
                h: D8(s.high),
                l: D8(s.low),
                v: D8(s.volume),
                q: D8(s.quote_volume.round_dp(8)),
                open_time: now.saturating_sub(86_400_000),
                close_time: now,
                first_id: s.first_trade_id,
                last_id: s.last_trade_id,
                n: s.trade_count,
            };
            out.push((i as u32, serde_json::to_string(&t).unwrap_or_default()));
        }
        out
    }

    /// GET /api/v3/depth: the order book, `limit` levels a side.
    pub fn depth_json(&self, symbol: &str, limit: usize) -> Result<String, ApiError> {
        let sym = self
            .symbol_of(symbol)
            .ok_or_else(ApiError::invalid_symbol)?;
        let s = &self.symbols[sym as usize];
        let side = |side| -> Vec<[String; 2]> {
            s.book
                .levels(side, limit)
                .into_iter()
                .map(|(p, q)| [fmt8(s.price(p)), fmt8(q)])
                .collect()
        };
        Ok(serde_json::json!({
            "lastUpdateId": s.book_update_id,
            "bids": side(Side::Buy),
            "asks": side(Side::Sell),
        })
        .to_string())
    }

    /// GET /api/v3/ticker/bookTicker and /api/v3/ticker/price: one object for a symbol,
    /// an array of every symbol without one.
    pub fn ticker_json(&self, symbol: Option<&str>, book: bool) -> Result<String, ApiError> {
        match symbol {
            Some(name) => Ok(self.ticker_values(&[name], book)?.remove(0).to_string()),
            None => Ok(serde_json::Value::Array(
                self.symbols
                    .iter()
                    .map(|s| Self::ticker_value(s, book))
                    .collect(),
            )
            .to_string()),
        }
    }

    /// The same endpoints with `symbols=[...]`: an array in the order asked; one unknown
    /// symbol fails the whole request, as at Binance.
    pub fn tickers_json(&self, names: &[String], book: bool) -> Result<String, ApiError> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(serde_json::Value::Array(self.ticker_values(&names, book)?).to_string())
    }

    fn ticker_values(
        &self,
        names: &[&str],
        book: bool,
    ) -> Result<Vec<serde_json::Value>, ApiError> {
        names
            .iter()
            .map(|name| {
                let sym = self.symbol_of(name).ok_or_else(ApiError::invalid_symbol)?;
                Ok(Self::ticker_value(&self.symbols[sym as usize], book))
            })
            .collect()
    }

    fn ticker_value(s: &SymbolState, book: bool) -> serde_json::Value {
        if book {
            let (b, bq, a, aq) = s.touch();
            serde_json::json!({"symbol": s.cfg.symbol, "bidPrice": fmt8(b), "bidQty": fmt8(bq),
                               "askPrice": fmt8(a), "askQty": fmt8(aq)})
        } else {
            serde_json::json!({"symbol": s.cfg.symbol, "price": fmt8(s.last)})
        }
    }

    /// GET /api/v3/exchangeInfo.
    pub fn exchange_info_json(&self, symbols: Option<&[String]>) -> Result<String, ApiError> {
        let rl = &self.cfg.rate_limits;
        let list: Vec<&SymbolState> = match symbols {
            None => self.symbols.iter().collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    self.symbol_of(n)
                        .map(|i| &self.symbols[i as usize])
                        .ok_or_else(ApiError::invalid_symbol)
                })
                .collect::<Result<_, _>>()?,
        };
        let syms: Vec<serde_json::Value> = list
            .iter()
            .map(|s| {
                let c = &s.cfg;
                serde_json::json!({
                    "symbol": c.symbol,
                    "status": s.status,
                    "baseAsset": c.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": c.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                    "icebergAllowed": false,
                    "ocoAllowed": false,
                    "otoAllowed": false,
                    "opoAllowed": false,
                    "quoteOrderQtyMarketAllowed": false,
                    "allowTrailingStop": false,
                    "cancelReplaceAllowed": false,
                    "amendAllowed": false,
                    "pegInstructionsAllowed": false,
                    "isSpotTradingAllowed": true,
                    "isMarginTradingAllowed": false,
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": fmt8(c.min_price),
                         "maxPrice": fmt8(c.max_price), "tickSize": fmt8(c.tick_size)},
                        {"filterType": "LOT_SIZE", "minQty": fmt8(c.min_qty),
                         "maxQty": fmt8(c.max_qty), "stepSize": fmt8(c.step_size)},
                        {"filterType": "NOTIONAL", "minNotional": fmt8(c.min_notional),
                         "applyMinToMarket": false, "maxNotional": fmt8(c.max_notional),
                         "applyMaxToMarket": false, "avgPriceMins": 5},
                        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200}
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "NONE",
                    "allowedSelfTradePreventionModes": ["NONE"]
                })
            })
            .collect();
        let v = serde_json::json!({
            "timezone": "UTC",
            "serverTime": self.clock.now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": rl.weight_per_minute},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": rl.orders_per_10s},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": rl.orders_per_day},
                {"rateLimitType": "CONNECTIONS", "interval": "MINUTE", "intervalNum": 5, "limit": 300}
            ],
            "exchangeFilters": [],
            "symbols": syms,
            "sors": []
        });
        Ok(v.to_string())
    }

    // ---------------------------------------------------------------- snapshots for tests

    pub fn balances_of(&self, account: u32) -> BTreeMap<String, (Decimal, Decimal)> {
        self.accounts[account as usize]
            .balances
            .all()
            .iter()
            .map(|(a, b)| (a.clone(), (b.free, b.locked)))
            .collect()
    }

    /// The client order id of every order the account placed since the last restart.
    pub fn client_order_ids_of(&self, account: u32) -> Vec<String> {
        let mut ids: Vec<String> = self
            .client_ids
            .keys()
            .filter(|(owner, _, _)| *owner == account)
            .map(|(_, _, id)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn trades_of(&self, account: u32) -> Vec<TradeRecord> {
        self.accounts[account as usize].trades.clone()
    }

    pub fn open_order_records(&self, account: u32) -> Vec<OrderRecord> {
        self.open_orders_of(account, None)
            .into_iter()
            .map(|o| OrderRecord {
                symbol: self.symbols[o.symbol as usize].cfg.symbol.clone(),
                order_id: o.order_id,
                client_order_id: o.client_order_id.clone(),
                side: o.side,
                order_type: o.order_type.as_str().to_string(),
                time_in_force: o.tif.as_str().to_string(),
                price: o.price,
                orig_qty: o.orig_qty,
                executed_qty: o.executed_qty,
                cummulative_quote_qty: o.cum_quote,
                status: o.status.as_str().to_string(),
                time: o.time,
                update_time: o.update_time,
            })
            .collect()
    }

    /// Every invariant the tests rely on; Err names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        for s in &self.symbols {
            s.book
                .check_invariants()
                .map_err(|e| format!("{}: {e}", s.cfg.symbol))?;
        }
        let mut expected_locked: Vec<BTreeMap<String, Decimal>> =
            vec![BTreeMap::new(); self.accounts.len()];
        let open_count = self.orders.values().filter(|o| o.status.is_open()).count();
        if open_count != self.open_index.len() {
            return Err(format!(
                "open index has {} orders, {open_count} are open",
                self.open_index.len()
            ));
        }
        for o in self.orders.values() {
            if o.status.is_open() && !self.open_index.contains(&(o.owner, o.symbol, o.order_id)) {
                return Err(format!("open order {} missing from the index", o.order_id));
            }
            if o.locked < Decimal::ZERO {
                return Err(format!("order {} locked {}", o.order_id, o.locked));
            }
            if o.status.is_open() && o.locked <= Decimal::ZERO {
                return Err(format!("open order {} has no lock", o.order_id));
            }
            let s = &self.symbols[o.symbol as usize];
            let asset = if o.side == Side::Buy {
                &s.cfg.quote
            } else {
                &s.cfg.base
            };
            *expected_locked[o.owner as usize]
                .entry(asset.clone())
                .or_default() += o.locked;
        }
        for (i, a) in self.accounts.iter().enumerate() {
            for (asset, b) in a.balances.all() {
                if b.free < Decimal::ZERO || b.locked < Decimal::ZERO {
                    return Err(format!("{} {asset} negative: {b:?}", a.api_key));
                }
                let want = expected_locked[i].get(asset).copied().unwrap_or_default();
                if b.locked != want {
                    return Err(format!(
                        "{} {asset} locked {} but open orders lock {want}",
                        a.api_key, b.locked
                    ));
                }
            }
        }
        Ok(())
    }
}

fn commission_bps(rate: Decimal) -> u32 {
    (rate * Decimal::from(10_000))
        .trunc()
        .try_into()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::AccountConfig;
    use rand::{RngExt, SeedableRng};
    use rust_decimal_macros::dec;

    fn exchange(accounts: usize) -> Exchange {
        let cfg = SimConfig {
            extra_symbols: 0,
            accounts: (0..accounts)
                .map(|i| AccountConfig {
                    api_key: format!("key{i}"),
                    api_secret: format!("secret{i}"),
                    ..AccountConfig::default()
                })
                .collect(),
            ..SimConfig::default()
        };
        Exchange::new(
            Arc::new(cfg),
            Arc::new(Clock::default()),
            Arc::new(StatsCounters::default()),
        )
    }

    fn limit(symbol: &str, side: Side, price: Decimal, qty: Decimal, tif: TimeInForce) -> NewOrder {
        NewOrder {
            symbol: symbol.into(),
            side,
            order_type: OrderType::Limit,
            time_in_force: Some(tif),
            quantity: Some(qty),
            price: Some(price),
            client_order_id: None,
            resp_type: Some(RespType::Full),
        }
    }

    #[test]
    fn limit_orders_match_and_settle_exactly() {
        let mut ex = exchange(2);
        ex.place_order(
            0,
            &limit(
                "BTCUSDT",
                Side::Sell,
                dec!(60000),
                dec!(0.1),
                TimeInForce::Gtc,
            ),
        )
        .unwrap();
        assert_eq!(ex.balances_of(0)["BTC"], (dec!(0.9), dec!(0.1)));
        let resp = ex
            .place_order(
                1,
                &limit(
                    "BTCUSDT",
                    Side::Buy,
                    dec!(60010),
                    dec!(0.04),
                    TimeInForce::Gtc,
                ),
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["status"], "FILLED");
        assert_eq!(v["fills"][0]["price"], "60000.00000000");
        assert_eq!(v["fills"][0]["commission"], "0.00004000");
        // Buyer paid 2400 at the maker's price (the 0.4 USDT difference was refunded).
        assert_eq!(ex.balances_of(1)["USDT"], (dec!(97600), dec!(0)));
        assert_eq!(ex.balances_of(1)["BTC"], (dec!(1.03996), dec!(0)));
        // Seller: 2400 minus 0.1% maker fee.
        assert_eq!(ex.balances_of(0)["USDT"], (dec!(102397.6), dec!(0)));
        assert_eq!(ex.balances_of(0)["BTC"], (dec!(0.9), dec!(0.06)));
        ex.check_invariants().unwrap();
    }

    #[test]
    fn limit_maker_that_would_take_is_rejected() {
        let mut ex = exchange(1);
        ex.place_order(
            0,
            &limit(
                "BTCUSDT",
                Side::Sell,
                dec!(60000),
                dec!(0.1),
                TimeInForce::Gtc,
            ),
        )
        .unwrap();
        let mut req = limit(
            "BTCUSDT",
            Side::Buy,
            dec!(60000),
            dec!(0.01),
            TimeInForce::Gtc,
        );
        req.order_type = OrderType::LimitMaker;
        req.time_in_force = None;
        let e = ex.place_order(0, &req).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-2010, "Order would immediately match and take.")
        );
    }

    #[test]
    fn filters_and_balance_errors() {
        let mut ex = exchange(1);
        let e = ex
            .place_order(
                0,
                &limit(
                    "BTCUSDT",
                    Side::Buy,
                    dec!(60000.001),
                    dec!(0.1),
                    TimeInForce::Gtc,
                ),
            )
            .unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-1013, "Filter failure: PRICE_FILTER")
        );
        let e = ex
            .place_order(
                0,
                &limit(
                    "BTCUSDT",
                    Side::Buy,
                    dec!(60000),
                    dec!(0.000001),
                    TimeInForce::Gtc,
                ),
            )
            .unwrap_err();
        assert_eq!(e.msg, "Filter failure: LOT_SIZE");
        let e = ex
            .place_order(
                0,
                &limit(
                    "BTCUSDT",
                    Side::Buy,
                    dec!(100),
                    dec!(0.01),
                    TimeInForce::Gtc,
                ),
            )
            .unwrap_err();
        assert_eq!(e.msg, "Filter failure: NOTIONAL");
        let e = ex
            .place_order(
                0,
                &limit("BTCUSDT", Side::Buy, dec!(60000), dec!(2), TimeInForce::Gtc),
            )
            .unwrap_err();
        assert_eq!(e.code, -2010);
        let e = ex
            .cancel_order(0, "BTCUSDT", Some(999), None, None)
            .unwrap_err();
        assert_eq!(e.code, -2011);
        let e = ex.query_order(0, "BTCUSDT", Some(999), None).unwrap_err();
        assert_eq!(e.code, -2013);
        assert_eq!(ex.cancel_all(0, "NOPE").unwrap_err().code, -1121);
    }

    /// 10,000 random place / cancel / market moves: for every asset free + locked ==
    /// initial + fills - commissions exactly, nothing negative, the book never crossed.
    #[test]
    fn random_operations_keep_balances_exact() {
        let mut ex = exchange(2);
        let initial = ex.balances_of(0);
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(1234);
        let symbols = ["BTCUSDT", "ETHUSDT"];
        for step in 0..10_000 {
            let account = rng.random_range(0..2u32);
            let sym = symbols[rng.random_range(0..2)];
            let si = ex.symbol_of(sym).unwrap() as usize;
            let tick = ex.symbols[si].cfg.tick_size;
            let mid = price_process::round_to(ex.symbols[si].mid, tick);
            match rng.random_range(0..10) {
                0..=4 => {
                    let side = if rng.random::<bool>() {
                        Side::Buy
                    } else {
                        Side::Sell
                    };
                    let offset = Decimal::from(rng.random_range(-30i64..30)) * tick;
                    let qty =
                        ex.symbols[si].cfg.step_size * Decimal::from(rng.random_range(1..5000u32));
                    let mut req = limit(sym, side, mid + offset, qty, TimeInForce::Gtc);
                    match rng.random_range(0..6) {
                        0 => req.time_in_force = Some(TimeInForce::Ioc),
                        1 => req.time_in_force = Some(TimeInForce::Fok),
                        2 => {
                            req.order_type = OrderType::LimitMaker;
                            req.time_in_force = None;
                        }
                        3 => {
                            req.order_type = OrderType::Market;
                            req.time_in_force = None;
                            req.price = None;
                        }
                        _ => {}
                    }
                    let _ = ex.place_order(account, &req);
                }
                5..=7 => {
                    let open = ex.open_order_records(account);
                    if !open.is_empty() {
                        let o = &open[rng.random_range(0..open.len())];
                        ex.cancel_order(account, &o.symbol, Some(o.order_id), None, None)
                            .unwrap();
                    }
                }
                _ => ex.market_step(Duration::from_millis(100)),
            }
            for s in &ex.symbols {
                if let (Some((b, _)), Some((a, _))) = (s.book.best_bid(), s.book.best_ask()) {
                    assert!(b < a, "step {step}: {} crossed {b} >= {a}", s.cfg.symbol);
                }
            }
            for acct in 0..2 {
                for (asset, (free, locked)) in ex.balances_of(acct) {
                    assert!(
                        free >= Decimal::ZERO && locked >= Decimal::ZERO,
                        "step {step}: {asset}"
                    );
                }
            }
            if step % 50 == 0
                && let Err(e) = ex.check_invariants()
            {
                panic!("step {step}: {e}");
            }
        }
        ex.check_invariants().unwrap();
        let mut total_trades = 0;
        for account in 0..2u32 {
            let mut expected = initial
                .iter()
                .map(|(a, (f, _))| (a.clone(), *f))
                .collect::<BTreeMap<_, _>>();
            for t in ex.trades_of(account) {
                let s = &ex.symbols[ex.symbol_of(&t.symbol).unwrap() as usize].cfg;
                let (base, quote) = (s.base.clone(), s.quote.clone());
                let (recv, pay, recv_amt, pay_amt) = match t.side {
                    Side::Buy => (base, quote, t.qty, t.price * t.qty),
                    Side::Sell => (quote, base, t.price * t.qty, t.qty),
                };
                assert_eq!(t.commission_asset, recv);
                *expected.entry(recv).or_default() += recv_amt - t.commission;
                *expected.entry(pay).or_default() -= pay_amt;
                total_trades += 1;
            }
            for (asset, (free, locked)) in ex.balances_of(account) {
                assert!(free >= Decimal::ZERO && locked >= Decimal::ZERO);
                assert_eq!(free + locked, expected[&asset], "account {account} {asset}");
            }
        }
        assert!(total_trades > 100, "only {total_trades} fills");
    }

    #[test]
    fn same_seed_same_market() {
        let run = || {
            let mut ex = exchange(1);
            ex.place_order(
                0,
                &limit(
                    "BTCUSDT",
                    Side::Buy,
                    dec!(59990),
                    dec!(0.01),
                    TimeInForce::Gtc,
                ),
            )
            .unwrap();
            for _ in 0..2000 {
                ex.market_step(Duration::from_millis(100));
            }
            (
                ex.symbols[0].mid,
                ex.trades_of(0)
                    .iter()
                    .map(|t| (t.id, t.price, t.qty))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(run(), run());
    }
}
