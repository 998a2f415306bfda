//! The engine core: owns all trading state, takes one input at a time and returns the
//! commands to execute. No awaits, no sockets, no clock: `now_ms` is passed in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use rust_decimal::Decimal;
use strategies::risk::{RiskInput, RiskLimits, RiskState};
use strategies::{Balances, Context, LiveOrder, MarketSnapshot, Strategy};
use tracing::{debug, error, info, warn};

use super::io::{
    Command, ConnectReason, Input, MarketSetup, NOT_LISTED, PlaceOrder, Record, Rehearsal,
    RestFailure, ResyncReason, Snapshot, Stream,
};
use super::orders::{ClientIdGen, Order, OrderBook, OrderState, Source, Trigger};
use super::reconcile::{Balance, BalanceBook, Delta, TradeDedup};
use crate::binance::types::{
    ExecType, ExecutionReport, MarketEvent, OrderResponse, OrderStatus, RestBookTicker, Side,
    UserEvent,
};
use crate::config::OrphanPolicy;
use crate::metrics::{self, Metrics};

/// How long a market the exchange reports closed waits before quoting is tried again.
const MARKET_CLOSED_PAUSE_MS: u64 = 10_000;

/// A symbol the exchange no longer lists is asked about on every this many status checks.
const DELISTED_CHECK_EVERY: u32 = 10;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub prefix: String,
    pub run_id: String,
    pub stale_after_ms: u64,
    /// How long a finished order is remembered when one side never confirms it.
    pub linger_ms: u64,
    /// How long an account event waits for late executionReports before it is judged.
    pub balance_grace_ms: u64,
    /// Pause before querying an order whose outcome is unknown (and between queries).
    pub query_delay_ms: u64,
    pub resync_interval_ms: u64,
    pub orphan_policy: OrphanPolicy,
    /// LIMIT_MAKER (never take).
    pub post_only: bool,
    /// How often the mid of each market is recorded in the ledger (for the report).
    pub mark_interval_ms: u64,
    /// How often the symbols' trading status is checked in exchangeInfo.
    pub status_check_interval_ms: u64,
}

impl EngineSettings {
    pub fn new(prefix: &str, run_id: &str) -> Self {
        EngineSettings {
            prefix: prefix.to_owned(),
            run_id: run_id.to_owned(),
            stale_after_ms: 10_000,
            linger_ms: 30_000,
            balance_grace_ms: 1_500,
            query_delay_ms: 500,
            resync_interval_ms: 300_000,
            orphan_policy: OrphanPolicy::Cancel,
            post_only: true,
            mark_interval_ms: 5_000,
            status_check_interval_ms: 30_000,
        }
    }
}

struct Market {
    setup: MarketSetup,
    strategy: Box<dyn Strategy>,
    limits: RiskLimits,
    risk: RiskState,
    tracker: strategies::pnl::PositionTracker,
    snapshot: Option<MarketSnapshot>,
    last_data_ms: Option<u64>,
    /// The market frame not yet answered by an order (tick-to-order).
    pending_tick: Option<Instant>,
    stale: bool,
    /// Removed by SIGHUP: cancel its orders, then drop it.
    removing: bool,
    /// Stopped by the kill switch.
    killed: bool,
    /// No new orders before this (after a rejection).
    paused_until_ms: u64,
    /// The exchange says the symbol is not TRADING: orders off, no quoting.
    halted: bool,
    /// Not listed at all: left out of most status checks (see `DELISTED_CHECK_EVERY`).
    not_listed: bool,
    /// Buffers a requote reuses: at 10 Hz every allocation on the way to an order
    /// request is a cold one.
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    live: Vec<LiveOrder>,
    desired: Vec<strategies::Quote>,
    decision: strategies::risk::RiskDecision,
    actions: Vec<strategies::diff::Action>,
}

impl Market {
    /// Not quoting, whatever the market does: being removed, stopped by the kill switch,
    /// not trading at the exchange, or paused after a rejection.
    fn held(&self, now_ms: u64) -> bool {
        self.removing || self.killed || self.halted || now_ms < self.paused_until_ms
    }

    /// How old the market data is (from the epoch when there is none: always stale).
    fn data_age(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_data_ms.unwrap_or(0))
    }

    /// The market's state as the engine quotes from it: from a stream frame or a REST seed.
    fn take_snapshot(&mut self, snap: MarketSnapshot, now_ms: u64) {
        self.strategy.on_market(&snap);
        self.snapshot = Some(snap);
        self.last_data_ms = Some(now_ms);
    }

    fn new(setup: MarketSetup) -> Result<Self, String> {
        let strategy = crate::config::build_strategy(&setup.config).map_err(|e| e.to_string())?;
        let limits = crate::config::risk_limits(&setup.config).map_err(|e| e.to_string())?;
        Ok(Market {
            setup,
            strategy,
            limits,
            risk: RiskState::new(),
            tracker: strategies::pnl::PositionTracker::new(),
            snapshot: None,
            last_data_ms: None,
            pending_tick: None,
            stale: false,
            removing: false,
            killed: false,
            paused_until_ms: 0,
            halted: false,
            not_listed: false,
            scratch: Scratch::default(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping {
        /// Symbols whose open orders are not yet confirmed gone.
        pending: BTreeSet<String>,
        attempts: BTreeMap<String, u32>,
    },
    Done,
}

/// Our own orders of a market, as a decision sees them.
struct OwnOrders {
    /// A new bid at or above one of our asks (or an ask at or below one of our bids) would
    /// trade with ourselves, and a post-only order would be rejected: such a quote waits
    /// until the old order is gone.
    min_ask: Option<Decimal>,
    max_bid: Option<Decimal>,
    /// Per side (buy, sell): funds locked in orders being canceled are not free yet.
    canceling: [bool; 2],
}

/// Whether a decision is acted on or only rehearsed ([`Engine::rehearse`]).
#[derive(Clone, Copy)]
enum Take {
    Real,
    Rehearsal,
}

/// One market's decision into `sc`: the strategy's quotes, the risk check and, unless the
/// kill switch fired, the diff against what rests. A rehearsal decides on copies of the
/// strategy, the risk state and the position tracker: only `sc` changes.
#[allow(clippy::too_many_arguments)]
fn decide(
    m: &mut Market,
    orders: &OrderBook,
    balances: &BalanceBook,
    symbol: &str,
    snap: &MarketSnapshot,
    now: u64,
    sc: &mut Scratch,
    take: Take,
) -> OwnOrders {
    let (base, quote) = (&m.setup.base_asset, &m.setup.quote_asset);
    let b = balances.balance(base);
    let q = balances.balance(quote);
    let balances = Balances {
        base_free: b.map(|x| x.free).unwrap_or_default(),
        base_locked: b.map(|x| x.locked).unwrap_or_default(),
        quote_free: q.map(|x| x.free).unwrap_or_default(),
        quote_locked: q.map(|x| x.locked).unwrap_or_default(),
    };
    sc.live.clear();
    let mut own = OwnOrders {
        min_ask: None,
        max_bid: None,
        canceling: [false; 2],
    };
    for o in orders.open_of_symbol(symbol) {
        match o.side {
            Side::Sell => own.min_ask = Some(own.min_ask.map_or(o.price, |a| a.min(o.price))),
            Side::Buy => own.max_bid = Some(own.max_bid.map_or(o.price, |b| b.max(o.price))),
        }
        if o.state == OrderState::PendingCancel {
            own.canceling[side_index(to_strat_side(o.side))] = true;
        }
        if matches!(
            o.state,
            OrderState::PendingNew
                | OrderState::Unknown
                | OrderState::New
                | OrderState::PartiallyFilled
        ) {
            sc.live.push(LiveOrder {
                id: o.handle,
                side: to_strat_side(o.side),
                price: o.price,
                qty: o.remaining(),
                placed_ms: o.placed_ms,
                level: o.level,
            });
        }
    }
    let ctx = Context {
        now_ms: now,
        rules: &m.setup.rules,
        market: snap,
        balances: &balances,
        live: &sc.live,
    };
    let (mut understudy, mut tracker_copy, mut risk_copy);
    let (strategy, tracker, risk) = match take {
        Take::Real => (&mut m.strategy, &mut m.tracker, &mut m.risk),
        Take::Rehearsal => {
            understudy = m.strategy.fork();
            tracker_copy = m.tracker.clone();
            risk_copy = m.risk.clone();
            (&mut understudy, &mut tracker_copy, &mut risk_copy)
        }
    };
    strategy.quotes_into(&ctx, &mut sc.desired);
    let mark = snap.mid().or(snap.last).unwrap_or_default();
    let daily_pnl = tracker.daily_pnl(now, mark);
    strategies::risk::check_into(
        &m.limits,
        risk,
        &RiskInput {
            now_ms: now,
            market: snap,
            position_base: tracker.position(),
            daily_pnl,
            live: &sc.live,
        },
        &sc.desired,
        &mut sc.decision,
    );
    if sc.decision.kill.is_none() {
        strategies::diff::diff_into(
            &sc.decision.allowed,
            &sc.live,
            &strategy.refresh_policy(),
            snap.mid(),
            now,
            &mut sc.actions,
        );
    }
    own
}

pub struct Engine {
    s: EngineSettings,
    markets: BTreeMap<String, Market>,
    /// Base and quote asset of every symbol ever configured (fills of removed markets).
    assets: BTreeMap<String, (String, String)>,
    orders: OrderBook,
    trades: TradeDedup,
    balances: BalanceBook,
    ids: ClientIdGen,
    next_handle: u64,
    /// The market whose decision is rehearsed next (an index into `markets`).
    rehearsal_turn: usize,
    metrics: Arc<Metrics>,
    phase: Phase,
    user_live: bool,
    market_live: bool,
    /// The startup resync is done: quoting may begin.
    synced: bool,
    resync_in_flight: Option<(ResyncReason, u64)>,
    /// Placements sent whose answer has not come back (client id → symbol): at shutdown
    /// such an order may reach the book after the cancel-all, so a market is not done
    /// until they are answered.
    placing: BTreeMap<String, String>,
    resync_wanted: Option<ResyncReason>,
    resync_not_before_ms: u64,
    last_resync_ms: u64,
    /// Symbols whose trade history has been seeded (their trade ids before this run are known).
    seeded: HashSet<String>,
    seed_request: HashSet<String>,
    /// When each market was first quoted (from the ledger): the account's trades since
    /// then are ours, even with none in the ledger yet.
    history_start_ms: HashMap<String, u64>,
    /// Open-order counts as last set in the metrics: only changes are written (setting
    /// 2 gauges per market after every input dominated the loop at 100 markets).
    published_open: HashMap<String, [Option<usize>; 2]>,
    /// The balance gauges last published (exact representation), per asset.
    published_balances: HashMap<String, ([u8; 16], [u8; 16])>,
    rest_blocked_until_ms: u64,
    last_mark_ms: u64,
    last_status_check_ms: u64,
    /// Status checks since the last one that asked about the delisted symbols too.
    status_checks_since_delisted: u32,
    now_ms: u64,
    out: Vec<Command>,
    /// Placements whose log line, counter and record wait for their requests' write.
    placed_unannounced: Vec<String>,
    /// The open-order gauges wait for the requests of the last input to be written.
    gauges_due: bool,
}

fn to_strat_side(s: Side) -> strategies::Side {
    match s {
        Side::Buy => strategies::Side::Buy,
        Side::Sell => strategies::Side::Sell,
    }
}

fn side_index(s: strategies::Side) -> usize {
    match s {
        strategies::Side::Buy => 0,
        strategies::Side::Sell => 1,
    }
}

fn to_wire_side(s: strategies::Side) -> Side {
    match s {
        strategies::Side::Buy => Side::Buy,
        strategies::Side::Sell => Side::Sell,
    }
}

impl Engine {
    pub fn new(
        settings: EngineSettings,
        markets: Vec<MarketSetup>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut e = Engine {
            ids: ClientIdGen::new(&settings.prefix, &settings.run_id),
            s: settings,
            markets: BTreeMap::new(),
            assets: BTreeMap::new(),
            orders: OrderBook::default(),
            trades: TradeDedup::default(),
            balances: BalanceBook::default(),
            next_handle: 1,
            rehearsal_turn: 0,
            metrics,
            phase: Phase::Running,
            user_live: false,
            market_live: false,
            synced: false,
            resync_in_flight: None,
            placing: BTreeMap::new(),
            resync_wanted: None,
            resync_not_before_ms: 0,
            last_resync_ms: 0,
            seeded: HashSet::new(),
            seed_request: HashSet::new(),
            history_start_ms: HashMap::new(),
            published_open: HashMap::new(),
            published_balances: HashMap::new(),
            rest_blocked_until_ms: 0,
            last_mark_ms: 0,
            last_status_check_ms: 0,
            status_checks_since_delisted: 0,
            now_ms: 0,
            out: Vec::new(),
            placed_unannounced: Vec::new(),
            gauges_due: false,
        };
        for m in markets {
            e.add_market(m)?;
        }
        Ok(e)
    }

    fn add_market(&mut self, setup: MarketSetup) -> Result<(), String> {
        let symbol = setup.config.symbol.clone();
        self.assets.insert(
            symbol.clone(),
            (setup.base_asset.clone(), setup.quote_asset.clone()),
        );
        let m = Market::new(setup).map_err(|e| format!("{symbol}: {e}"))?;
        self.metrics.set_gauge(
            metrics::POSITION_BASE,
            &[("symbol", &symbol)],
            Decimal::ZERO,
        );
        self.markets.insert(symbol, m);
        Ok(())
    }

    /// Trade ids the ledger already holds (last per symbol): the startup resync counts
    /// every trade after them, so fills made while the daemon was down are not lost.
    pub fn seed_trade_ids(&mut self, last: impl IntoIterator<Item = (String, i64)>) {
        for (symbol, id) in last {
            self.trades.mark_seen(&symbol, id);
            self.seeded.insert(symbol);
        }
    }

    /// When each market was first quoted, as the ledger remembers it. Without it, a
    /// market with no fill in the ledger treats every trade before its first resync as
    /// history: after a kill -9 before the first fill was written, those fills were lost.
    pub fn seed_history_starts(&mut self, starts: impl IntoIterator<Item = (String, u64)>) {
        self.history_start_ms.extend(starts);
    }

    pub fn symbols(&self) -> Vec<String> {
        self.markets.keys().cloned().collect()
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    pub fn orders(&self) -> &OrderBook {
        &self.orders
    }

    pub fn position(&self, symbol: &str) -> Option<Decimal> {
        self.markets.get(symbol).map(|m| m.tracker.position())
    }

    pub fn balance(&self, asset: &str) -> Option<&Balance> {
        self.balances.balance(asset)
    }

    pub fn fill_count(&self, symbol: &str) -> Option<u64> {
        self.markets.get(symbol).map(|m| m.tracker.fill_count())
    }

    /// The one entry point: an input in, the commands to execute out.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Vec<Command> {
        self.now_ms = now_ms;
        self.note_refusals(&input);
        match input {
            Input::Market { event, received } => self.on_market(event, received),
            Input::MarketSeed(tickers) => self.on_market_seed(tickers),
            Input::User(ev) => self.on_user(ev),
            Input::StreamUp { stream, reason } => self.on_stream_up(stream, reason),
            Input::StreamDown { stream, reason } => {
                warn!(event = "disconnect", stream = stream.as_str(), reason = %reason, "stream down");
                match stream {
                    Stream::User => self.user_live = false,
                    Stream::Market => self.market_live = false,
                }
            }
            Input::Keepalive { ok, error } => {
                let result = if ok { "ok" } else { "error" };
                self.metrics.inc(metrics::KEEPALIVES, &[("result", result)]);
                if ok {
                    info!(event = "keepalive", result, "listen key kept alive");
                } else {
                    warn!(
                        event = "keepalive",
                        result,
                        reason = error.as_deref().unwrap_or(""),
                        "listen key keepalive failed"
                    );
                }
            }
            Input::ListenKeyCreated { changed } => {
                self.metrics.inc(metrics::LISTEN_KEYS_CREATED, &[]);
                info!(event = "listen_key", changed, "listen key obtained");
            }
            Input::Placed { client_id, result } => self.on_placed(&client_id, result),
            Input::Canceled { client_id, result } => self.on_cancel_result(&client_id, result),
            Input::Queried { client_id, result } => self.on_queried(&client_id, result),
            Input::CanceledAll { symbol, result } => self.on_canceled_all(&symbol, result),
            Input::OpenOrdersChecked { symbol, result } => {
                self.on_open_orders_checked(&symbol, result)
            }
            Input::Resynced { reason, result } => self.on_resynced(reason, result),
            Input::RestBlocked { until_ms, banned } => {
                self.rest_blocked_until_ms = self.rest_blocked_until_ms.max(until_ms);
                if banned {
                    error!(
                        event = "rate_limit",
                        until_ms,
                        "IP BANNED by the exchange (418): no REST requests until the ban ends; orders stay as they are"
                    );
                } else {
                    warn!(
                        event = "rate_limit",
                        until_ms, "rate limited (429): pausing REST until Retry-After"
                    );
                }
            }
            Input::Tick => self.on_tick(),
            Input::SymbolStatus(list) => self.on_symbol_status(list),
            Input::Shutdown => self.on_shutdown(),
            Input::Reload(setups) => self.on_reload(setups),
        }
        // An input that sends order requests publishes its gauges after they are written
        // (labels and values are formatted per change); any other input at once.
        if self
            .out
            .iter()
            .any(|c| matches!(c, Command::Place(_) | Command::Cancel { .. }))
        {
            self.gauges_due = true;
        } else {
            self.publish_gauges();
        }
        std::mem::take(&mut self.out)
    }

    /// A request the exchange (or our own budget) refused before executing: nothing is sent
    /// until the wait is over, and a rejected placement pauses its market a moment. Never
    /// retry in a tight loop.
    fn note_refusals(&mut self, input: &Input) {
        let failure = match input {
            Input::Placed { result: Err(f), .. }
            | Input::Canceled { result: Err(f), .. }
            | Input::Queried { result: Err(f), .. } => f,
            Input::CanceledAll { result: Err(f), .. }
            | Input::OpenOrdersChecked { result: Err(f), .. } => f,
            Input::Resynced { result: Err(f), .. } => f,
            _ => return,
        };
        match failure {
            RestFailure::NotSent { retry_after_ms, .. } => {
                let until = self.now_ms + (*retry_after_ms).max(100);
                self.rest_blocked_until_ms = self.rest_blocked_until_ms.max(until);
            }
            RestFailure::Rejected { msg, .. } => {
                if let Input::Placed { client_id, .. } = input
                    && let Some(symbol) = self.orders.get(client_id).map(|o| o.symbol.clone())
                    && let Some(m) = self.markets.get_mut(&symbol)
                {
                    // The symbol stopped trading (BREAK, HALT, CANCEL_ONLY): take our orders
                    // off and look again later, rather than knock on a closed door.
                    if msg.to_ascii_lowercase().contains("market is closed") {
                        m.paused_until_ms = self.now_ms + MARKET_CLOSED_PAUSE_MS;
                        error!(event = "market_closed", symbol = %symbol, "the exchange says the market is closed: orders canceled, quoting paused");
                        self.cancel_symbol_orders(&symbol, "market_closed");
                    } else {
                        m.paused_until_ms = self.now_ms + 1_000;
                    }
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ market data

    fn on_market(&mut self, event: MarketEvent, received: Instant) {
        let (symbol, snap) = match event {
            MarketEvent::Ticker(t) => (
                t.symbol,
                MarketSnapshot {
                    best_bid: t.best_bid,
                    best_bid_qty: t.best_bid_qty,
                    best_ask: t.best_ask,
                    best_ask_qty: t.best_ask_qty,
                    last: Some(t.last_price),
                    ts_ms: self.now_ms,
                },
            ),
            MarketEvent::BookTicker(b) => {
                let last = self
                    .markets
                    .get(&b.symbol)
                    .and_then(|m| m.snapshot.as_ref())
                    .and_then(|s| s.last);
                (
                    b.symbol,
                    MarketSnapshot {
                        best_bid: b.best_bid,
                        best_bid_qty: b.best_bid_qty,
                        best_ask: b.best_ask,
                        best_ask_qty: b.best_ask_qty,
                        last,
                        ts_ms: self.now_ms,
                    },
                )
            }
            MarketEvent::ServerShutdown { .. } => {
                info!(
                    event = "server_shutdown",
                    stream = "market",
                    "exchange announced a market stream shutdown"
                );
                return;
            }
        };
        let Some(m) = self.markets.get_mut(&symbol) else {
            return;
        };
        m.take_snapshot(snap, self.now_ms);
        m.pending_tick = Some(received);
        self.requote(&symbol);
    }

    fn on_market_seed(&mut self, tickers: Vec<RestBookTicker>) {
        for t in tickers {
            let Some(m) = self.markets.get_mut(&t.symbol) else {
                continue;
            };
            if m.snapshot.is_some() {
                continue;
            }
            let snap = MarketSnapshot {
                best_bid: t.bid_price,
                best_bid_qty: t.bid_qty,
                best_ask: t.ask_price,
                best_ask_qty: t.ask_qty,
                last: None,
                ts_ms: self.now_ms,
            };
            info!(event = "market_seeded", symbol = %t.symbol, bid = %t.bid_price, ask = %t.ask_price, "best bid/ask from REST: quoting need not wait for the first stream frame");
            m.take_snapshot(snap, self.now_ms);
            self.requote(&t.symbol);
        }
    }

    // ------------------------------------------------------------ quoting

    fn may_send(&self) -> bool {
        self.phase == Phase::Running
            && self.synced
            && self.user_live
            && self.now_ms >= self.rest_blocked_until_ms
    }

    /// Rehearses the decision of one market (each in turn) without acting on it, so that
    /// the hot path's code and data are in the CPU's caches when the next tick comes:
    /// after 100 ms without one, a decision took 20-30 times its warm cost (`mmd bench`).
    /// Changes nothing but scratch buffers (see `decide`): no command, log line, metric or
    /// state. Returns a quote of the decision, for the caller to rehearse building its
    /// signed request.
    pub fn rehearse(&mut self, now_ms: u64) -> Option<Rehearsal> {
        if !self.may_send() || self.markets.is_empty() {
            return None;
        }
        self.rehearsal_turn = (self.rehearsal_turn + 1) % self.markets.len();
        let (symbol, m) = self.markets.iter_mut().nth(self.rehearsal_turn)?;
        if m.held(now_ms) || m.stale {
            return None;
        }
        if m.data_age(now_ms) > self.s.stale_after_ms {
            return None;
        }
        let snap = m.snapshot.clone().filter(|s| s.is_two_sided())?;
        let mut sc = std::mem::take(&mut m.scratch);
        decide(
            m,
            &self.orders,
            &self.balances,
            symbol,
            &snap,
            now_ms,
            &mut sc,
            Take::Rehearsal,
        );
        let rehearsal = sc.decision.allowed.first().map(|q| Rehearsal {
            symbol: symbol.clone(),
            side: to_wire_side(q.side),
            price: q.price,
            qty: q.qty,
            post_only: self.s.post_only,
        });
        sc.actions.clear();
        m.scratch = sc;
        rehearsal
    }

    fn requote(&mut self, symbol: &str) {
        if !self.may_send() {
            return;
        }
        let now = self.now_ms;
        let stale_after = self.s.stale_after_ms;
        let Some(m) = self.markets.get_mut(symbol) else {
            return;
        };
        if m.held(now) {
            return;
        }
        let Some(snap) = m.snapshot.clone() else {
            return;
        };
        // A one-sided or crossed book has no fair price: keep what rests and wait for a
        // proper book instead of canceling everything on one odd frame.
        if !snap.is_two_sided() {
            return;
        }
        let age = m.data_age(now);
        if age > stale_after {
            if !m.stale {
                m.stale = true;
                warn!(
                    event = "stale",
                    symbol,
                    age_ms = age,
                    "market data stale: canceling quotes until fresh data arrives"
                );
            }
            self.cancel_symbol_orders(symbol, "stale");
            return;
        }
        if m.stale {
            m.stale = false;
            info!(
                event = "fresh",
                symbol, "market data fresh again: quoting resumes"
            );
        }
        let mut sc = std::mem::take(&mut m.scratch);
        let own = decide(
            m,
            &self.orders,
            &self.balances,
            symbol,
            &snap,
            now,
            &mut sc,
            Take::Real,
        );
        if let Some(kill) = &sc.decision.kill {
            if sc.decision.newly_killed {
                error!(event = "kill_switch", symbol, reason = %kill, "KILL SWITCH: market stopped, all its orders canceled; restart or SIGHUP to resume");
            }
            m.killed = true;
            m.scratch = sc;
            self.cancel_symbol_orders(symbol, "kill_switch");
            return;
        }
        for (q, r) in &sc.decision.refused {
            debug!(event = "risk_refusal", symbol, side = %q.side, price = %q.price, qty = %q.qty, reason = %r, kind = r.kind(), "quote refused by risk");
        }
        let tick = m.pending_tick;
        let mut placed_any = false;
        for a in sc.actions.drain(..) {
            match a {
                strategies::diff::Action::Cancel { id, reason } => {
                    let Some(o) = self.orders.open_of_symbol(symbol).find(|o| o.handle == id)
                    else {
                        continue;
                    };
                    // An order whose placement is unanswered is canceled once it is known.
                    if matches!(o.state, OrderState::PendingNew | OrderState::Unknown) {
                        continue;
                    }
                    let cid = o.client_id.clone();
                    self.send_cancel(cid, reason.as_str());
                }
                strategies::diff::Action::Place(q) => {
                    // Funds locked in orders being canceled are not free yet: wait for them,
                    // rather than have the exchange reject for insufficient balance.
                    if own.canceling[side_index(q.side)] {
                        continue;
                    }
                    let crosses_own = match q.side {
                        strategies::Side::Buy => own.min_ask.is_some_and(|a| q.price >= a),
                        strategies::Side::Sell => own.max_bid.is_some_and(|b| q.price <= b),
                    };
                    if crosses_own {
                        continue;
                    }
                    self.place(symbol, q, if placed_any { None } else { tick });
                    placed_any = true;
                }
            }
        }
        if let Some(m) = self.markets.get_mut(symbol) {
            m.scratch = sc;
            if placed_any {
                m.pending_tick = None;
            }
        }
    }

    /// The order book and the client id are settled before the request exists (an answer
    /// may come right after it); the log line, the counter and the ledger record wait
    /// until the request is written ([`Self::after_requests`]).
    fn place(&mut self, symbol: &str, q: strategies::Quote, tick: Option<Instant>) {
        let client_id = self.ids.next(symbol);
        let handle = self.next_handle;
        self.next_handle += 1;
        let side = to_wire_side(q.side);
        let order = Order::new(
            client_id.clone(),
            symbol.to_owned(),
            side,
            q.price,
            q.qty,
            q.level,
            handle,
            self.now_ms,
        );
        self.orders.insert(order);
        self.placing.insert(client_id.clone(), symbol.to_owned());
        self.placed_unannounced.push(client_id.clone());
        self.out.push(Command::Place(PlaceOrder {
            symbol: symbol.to_owned(),
            client_id,
            side,
            price: q.price,
            qty: q.qty,
            post_only: self.s.post_only,
            tick_received: tick,
        }));
    }

    /// Whether [`Self::after_requests`] has work.
    pub fn has_after_requests(&self) -> bool {
        !self.placed_unannounced.is_empty() || self.gauges_due
    }

    /// What the last input's placements left for after their requests are written: the
    /// `quote_placed` log line, the placed-orders counter and the ledger's order record,
    /// all read from the order book (nothing else has happened to these orders since).
    pub fn after_requests(&mut self) -> Vec<Command> {
        let placed = std::mem::take(&mut self.placed_unannounced);
        for cid in &placed {
            self.record_order(cid, "placed");
            if let Some(o) = self.orders.get(cid) {
                self.metrics.inc(
                    metrics::ORDERS_PLACED,
                    &[("symbol", o.symbol.as_str()), ("side", o.side.as_str())],
                );
                info!(event = "quote_placed", symbol = o.symbol.as_str(), side = o.side.as_str(), price = %o.price, qty = %o.qty, quote_level = o.level, client_order_id = %cid, "placing quote");
            }
        }
        // Hand the (emptied) buffer back for the next input.
        self.placed_unannounced = placed;
        self.placed_unannounced.clear();
        if std::mem::take(&mut self.gauges_due) {
            self.publish_gauges();
        }
        std::mem::take(&mut self.out)
    }

    /// Takes the client id owned: it becomes the command's, and every caller has a copy
    /// of its own already (one allocation less per cancel).
    fn send_cancel(&mut self, client_id: String, reason: &str) {
        let Some(o) = self.orders.get_mut(&client_id) else {
            return;
        };
        if o.state.is_terminal() || o.cancel_in_flight {
            return;
        }
        o.apply(Trigger::CancelSent, Source::Rest, None, self.now_ms);
        o.cancel_in_flight = true;
        debug!(event = "cancel_sent", symbol = %o.symbol, client_order_id = %client_id, reason, "canceling");
        self.out.push(Command::Cancel {
            symbol: o.symbol.clone(),
            client_id,
        });
    }

    /// Cancels every order of a symbol that may rest (stale data, kill switch, removal).
    fn cancel_symbol_orders(&mut self, symbol: &str, reason: &str) {
        let ids: Vec<String> = self
            .orders
            .open_of_symbol(symbol)
            .filter(|o| !o.cancel_in_flight)
            .map(|o| o.client_id.clone())
            .collect();
        for id in ids {
            self.send_cancel(id, reason);
        }
    }

    // ------------------------------------------------------------ user stream

    fn on_user(&mut self, ev: UserEvent) {
        match ev {
            UserEvent::ExecutionReport(er) => self.on_execution_report(*er),
            UserEvent::AccountPosition(p) => {
                for b in &p.balances {
                    self.observe_balance(&b.asset, b.free, b.locked, p.last_update);
                }
                let changed: Vec<&str> = p.balances.iter().map(|b| b.asset.as_str()).collect();
                self.after_balances(Some(&changed));
            }
            UserEvent::AccountInfo(p) => {
                let t = p.last_update.unwrap_or(p.event_time);
                for b in p.balances {
                    self.observe_balance(&b.asset, b.free, b.locked, t);
                }
                // The whole account (hundreds of assets on a real one): checking each
                // market against that list would cost more than telling every market.
                self.after_balances(None);
            }
            UserEvent::BalanceUpdate(u) => {
                info!(event = "balance_update", asset = %u.asset, delta = %u.delta, "balance changed outside trading");
                self.balances.add_delta(Delta {
                    asset: u.asset,
                    amount: u.delta,
                    time_ms: u.clear_time,
                });
            }
            UserEvent::ListenKeyExpired { .. } => {
                warn!(
                    event = "listen_key_expired",
                    "listen key expired: a new one is being obtained"
                );
            }
            UserEvent::EventStreamTerminated { .. } => {
                warn!(
                    event = "stream_terminated",
                    "user data subscription terminated"
                );
            }
            UserEvent::ServerShutdown { .. } => {
                info!(
                    event = "server_shutdown",
                    stream = "user",
                    "exchange announced a user stream shutdown"
                );
            }
            UserEvent::Other { event_type } => {
                debug!(event = "user_other", event_type, "user event ignored");
            }
        }
    }

    fn observe_balance(&mut self, asset: &str, free: Decimal, locked: Decimal, time_ms: u64) {
        self.balances
            .observe(asset, Balance { free, locked }, time_ms, self.now_ms);
    }

    /// Tells the gauges and the strategies about new balances. `changed` is the assets an
    /// account event carried (None after a resync: all of them). Only those can hold a new
    /// balance (`observe` changes its own asset alone), so only their gauges and the
    /// markets trading them are told: telling all 100 markets of a 100-market config on
    /// every event (two balance lookups each, ~30 µs per event, ~120 events/s) was the
    /// engine's largest cost there.
    fn after_balances(&mut self, changed: Option<&[&str]>) {
        self.publish_balances(changed);
        // The changed assets' balances, looked up once (the quote asset of every market).
        let fresh: Vec<(&str, Option<Balance>)> = changed
            .unwrap_or_default()
            .iter()
            .map(|a| (*a, self.balances.balance(a).cloned()))
            .collect();
        let balances = &self.balances;
        let balance_of = |asset: &str| match fresh.iter().find(|(a, _)| *a == asset) {
            Some((_, b)) => b.clone(),
            None => balances.balance(asset).cloned(),
        };
        let touched = |asset: &str| changed.is_none_or(|c| c.contains(&asset));
        for m in self.markets.values_mut() {
            let (base, quote) = (&m.setup.base_asset, &m.setup.quote_asset);
            if !touched(base) && !touched(quote) {
                continue;
            }
            let b = balance_of(base);
            let q = balance_of(quote);
            m.strategy.on_balances(&Balances {
                base_free: b.as_ref().map(|x| x.free).unwrap_or_default(),
                base_locked: b.as_ref().map(|x| x.locked).unwrap_or_default(),
                quote_free: q.as_ref().map(|x| x.free).unwrap_or_default(),
                quote_locked: q.as_ref().map(|x| x.locked).unwrap_or_default(),
            });
        }
    }

    fn publish_balances(&mut self, changed: Option<&[&str]>) {
        // Unchanged values (same digits, same scale) are skipped: the exposition is the
        // same, and rendering a decimal and inserting a gauge is most of the cost.
        let mut publish = |asset: &str, b: &Balance| {
            let exact = (b.free.serialize(), b.locked.serialize());
            if self.published_balances.get(asset) == Some(&exact) {
                return;
            }
            self.published_balances.insert(asset.to_owned(), exact);
            self.metrics.set_gauge(
                metrics::BALANCE,
                &[("asset", asset), ("state", "free")],
                b.free,
            );
            self.metrics.set_gauge(
                metrics::BALANCE,
                &[("asset", asset), ("state", "locked")],
                b.locked,
            );
        };
        match changed {
            None => {
                for (asset, b) in self.balances.balances() {
                    publish(asset, b);
                }
            }
            Some(assets) => {
                for asset in assets {
                    if let Some(b) = self.balances.balance(asset) {
                        publish(asset, b);
                    }
                }
            }
        }
    }

    fn on_execution_report(&mut self, er: ExecutionReport) {
        // On a cancel, `c` is the cancel request's id and `C` the order's own.
        let cid = match (&er.orig_client_order_id, er.exec_type) {
            (Some(orig), ExecType::Canceled) => orig.clone(),
            _ => er.client_order_id.clone(),
        };
        let cid = if self.orders.get(&cid).is_some() {
            Some(cid)
        } else {
            self.orders
                .client_id_of(&er.symbol, er.order_id)
                .map(str::to_owned)
                .or_else(|| ClientIdGen::is_ours(&self.s.prefix, &cid).then_some(cid))
        };
        let cid_for_fill = cid.clone().unwrap_or_else(|| er.client_order_id.clone());
        if er.exec_type == ExecType::Trade && er.trade_id >= 0 && er.last_qty > Decimal::ZERO {
            self.on_fill(
                &er.symbol,
                er.trade_id,
                er.side,
                er.last_price,
                er.last_qty,
                er.commission,
                er.commission_asset.as_deref(),
                er.transaction_time,
                "stream",
                (er.order_id, &cid_for_fill, er.is_maker),
            );
        }
        let Some(cid) = cid else {
            return; // someone else's order on this account
        };
        let symbol = er.symbol.clone();
        if self.orders.get(&cid).is_none() {
            // Ours (by prefix) but not tracked: left by an earlier run, or forgotten. If it
            // may still rest, track it and cancel it: never leave it ignored.
            if !er.status.is_final() && self.markets.contains_key(&symbol) {
                warn!(event = "stray_order", symbol = %symbol, client_order_id = %cid, "our prefix but not tracked: canceling");
                self.track_foreign(&cid, &symbol, er.side, er.price, er.orig_qty, er.cum_qty);
                self.orders.set_exchange_id(&cid, er.order_id);
                self.send_cancel(cid, "stray");
            }
            return;
        }
        self.orders.set_exchange_id(&cid, er.order_id);
        let now = self.now_ms;
        let Some(o) = self.orders.get_mut(&cid) else {
            return;
        };
        if let Some(x) = er.execution_id
            && !o.first_sight_of_exec(x)
        {
            return;
        }
        if let Some(trigger) = Trigger::from_status(er.status) {
            let applied = o.apply(trigger, Source::Stream, Some(er.cum_qty), now);
            if applied.changed() {
                let reject_code =
                    (er.status == OrderStatus::Rejected).then(|| er.reject_reason.clone());
                self.after_transition(&cid, applied.from, applied.to, reject_code.as_deref());
            }
        }
        self.requote(&symbol);
    }

    /// Adopted orders take the levels they would have had: per symbol and side, the one
    /// closest to the other side is level 0. The diff then keeps or reprices them.
    fn assign_adopted_levels(&mut self, adopted: &[String]) {
        let mut groups: BTreeMap<(String, bool), Vec<(Decimal, String)>> = BTreeMap::new();
        for cid in adopted {
            if let Some(o) = self.orders.get(cid) {
                groups
                    .entry((o.symbol.clone(), o.side == Side::Buy))
                    .or_default()
                    .push((o.price, cid.clone()));
            }
        }
        for ((_, is_bid), mut v) in groups {
            v.sort();
            if is_bid {
                v.reverse();
            }
            for (level, (_, cid)) in v.into_iter().enumerate() {
                if let Some(o) = self.orders.get_mut(&cid) {
                    o.level = level as u32;
                }
            }
        }
    }

    fn track_foreign(
        &mut self,
        cid: &str,
        symbol: &str,
        side: Side,
        price: Decimal,
        qty: Decimal,
        cum: Decimal,
    ) {
        let handle = self.next_handle;
        self.next_handle += 1;
        let mut o = Order::new(
            cid.to_owned(),
            symbol.to_owned(),
            side,
            price,
            qty,
            u32::MAX,
            handle,
            self.now_ms,
        );
        o.apply(Trigger::Accepted, Source::Rest, Some(cum), self.now_ms);
        self.orders.insert(o);
    }

    fn after_transition(
        &mut self,
        cid: &str,
        from: OrderState,
        to: OrderState,
        reject_code: Option<&str>,
    ) {
        self.record_order(cid, from.as_str());
        let Some(o) = self.orders.get(cid) else {
            return;
        };
        let symbol = o.symbol.clone();
        match to {
            OrderState::Canceled => {
                self.metrics
                    .inc(metrics::ORDERS_CANCELED, &[("symbol", &symbol)]);
                info!(event = "quote_canceled", symbol = %symbol, side = o.side.as_str(), price = %o.price, client_order_id = %cid, "quote canceled");
            }
            OrderState::Rejected => {
                if let Some(code) = reject_code {
                    self.metrics.inc(
                        metrics::ORDERS_REJECTED,
                        &[("symbol", &symbol), ("code", code)],
                    );
                    warn!(event = "order_rejected", symbol = %symbol, client_order_id = %cid, code, "order rejected");
                }
            }
            OrderState::Expired => {
                info!(event = "order_expired", symbol = %symbol, client_order_id = %cid, "order expired");
            }
            _ => {
                debug!(event = "order_state", symbol = %symbol, client_order_id = %cid, from = from.as_str(), to = to.as_str())
            }
        }
    }

    fn record_order(&mut self, cid: &str, detail: &str) {
        let Some(o) = self.orders.get(cid) else {
            return;
        };
        let rec = crate::ledger::OrderEventRecord {
            time_ms: self.now_ms,
            symbol: o.symbol.clone(),
            client_order_id: cid.to_owned(),
            order_id: o.order_id,
            side: o.side,
            price: o.price,
            qty: o.qty,
            state: o.state.as_str().to_owned(),
            detail: if detail == "placed" {
                detail.to_owned()
            } else {
                format!("from {detail}")
            },
        };
        self.out.push(Command::Record(Record::Order(rec)));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_fill(
        &mut self,
        symbol: &str,
        trade_id: i64,
        side: Side,
        price: Decimal,
        qty: Decimal,
        commission: Decimal,
        commission_asset: Option<&str>,
        time_ms: u64,
        source: &str,
        order: (u64, &str, bool),
    ) -> bool {
        if !self.trades.first_sight(symbol, trade_id) {
            return false;
        }
        let (order_id, client_id, is_maker) = order;
        let client_id = if client_id.is_empty() {
            self.orders
                .client_id_of(symbol, order_id)
                .unwrap_or_default()
                .to_owned()
        } else {
            client_id.to_owned()
        };
        self.out
            .push(Command::Record(Record::Fill(crate::ledger::LedgerFill {
                symbol: symbol.to_owned(),
                trade_id,
                order_id,
                client_order_id: client_id,
                side,
                price,
                qty,
                commission,
                commission_asset: commission_asset.unwrap_or_default().to_owned(),
                is_maker,
                time_ms,
            })));
        let Some((base, quote)) = self.assets.get(symbol).cloned() else {
            return false;
        };
        let (dbase, dquote) = match side {
            Side::Buy => (qty, -qty * price),
            Side::Sell => (-qty, qty * price),
        };
        self.balances.add_delta(Delta {
            asset: base.clone(),
            amount: dbase,
            time_ms,
        });
        self.balances.add_delta(Delta {
            asset: quote.clone(),
            amount: dquote,
            time_ms,
        });
        let mut fee_quote = Decimal::ZERO;
        if let Some(asset) = commission_asset
            && !commission.is_zero()
        {
            self.balances.add_delta(Delta {
                asset: asset.to_owned(),
                amount: -commission,
                time_ms,
            });
            if asset == quote {
                fee_quote = commission;
            } else if asset == base {
                fee_quote = commission * price;
            }
        }
        self.metrics.inc(
            metrics::FILLS,
            &[("symbol", symbol), ("side", side.as_str())],
        );
        if let Some(m) = self.markets.get_mut(symbol) {
            // A fill on our bid means the asks came down to its price (and vice versa): until
            // the next market frame says otherwise, the book is at least that far through,
            // so the next quote on that side goes behind it instead of arriving crossed.
            if source == "stream"
                && let Some(snap) = m.snapshot.as_mut()
            {
                match side {
                    Side::Buy if snap.best_ask.is_zero() || price < snap.best_ask => {
                        snap.best_ask = price;
                        snap.best_bid = snap.best_bid.min(price);
                    }
                    Side::Sell if price > snap.best_bid => {
                        snap.best_bid = price;
                        if !snap.best_ask.is_zero() {
                            snap.best_ask = snap.best_ask.max(price);
                        }
                    }
                    _ => {}
                }
            }
            let fill = strategies::Fill {
                side: to_strat_side(side),
                price,
                qty,
                fee_quote,
                ts_ms: time_ms,
            };
            m.tracker.on_fill(&fill);
            m.strategy.on_fill(&fill);
            let position = m.tracker.position();
            let mark = m.snapshot.as_ref().and_then(|s| s.mid()).unwrap_or(price);
            self.metrics
                .set_gauge(metrics::POSITION_BASE, &[("symbol", symbol)], position);
            info!(
                event = "fill", symbol, side = side.as_str(), price = %price, qty = %qty, trade_id,
                fee = %commission, source, position = %position,
                realized_pnl = %m.tracker.realized(), equity = %m.tracker.equity(mark),
                "fill"
            );
        }
        true
    }

    // ------------------------------------------------------------ REST results

    fn on_placed(&mut self, cid: &str, result: Result<OrderResponse, RestFailure>) {
        if let Some(symbol) = self.placing.remove(cid)
            && matches!(&self.phase, Phase::Stopping { pending, .. } if pending.contains(&symbol))
        {
            // Answered after the stop began: the order may rest now; cancel-all again.
            self.out.push(Command::CancelAll { symbol });
        }
        let now = self.now_ms;
        let Some(o) = self.orders.get(cid) else {
            return;
        };
        let (symbol, side) = (o.symbol.clone(), o.side);
        match result {
            Ok(resp) => {
                self.orders.set_exchange_id(cid, resp.order_id);
                let trigger = resp
                    .status
                    .and_then(Trigger::from_status)
                    .unwrap_or(Trigger::Accepted);
                let time = resp.transact_time.unwrap_or(now);
                for f in &resp.fills {
                    self.on_fill(
                        &symbol,
                        f.trade_id,
                        side,
                        f.price,
                        f.qty,
                        f.commission,
                        Some(&f.commission_asset),
                        time,
                        "rest",
                        (resp.order_id, cid, false),
                    );
                }
                self.apply_rest(cid, trigger, resp.executed_qty, None);
            }
            Err(RestFailure::Rejected { code, msg })
            | Err(RestFailure::UnknownOrder { code, msg }) => {
                info!(event = "rejection_reason", symbol = %symbol, client_order_id = %cid, code, reason = %msg, "why the exchange rejected it");
                self.apply_rest(cid, Trigger::Rejected, None, Some(&code.to_string()));
            }
            Err(RestFailure::OutcomeUnknown(why)) => {
                warn!(event = "order_unknown", symbol = %symbol, client_order_id = %cid, reason = %why, "placement outcome unknown: will query, never re-place");
                if let Some(o) = self.orders.get_mut(cid) {
                    o.apply(Trigger::PlaceOutcomeUnknown, Source::Rest, None, now);
                    o.query_due = true;
                    o.next_query_ms = now + self.s.query_delay_ms;
                }
            }
            Err(RestFailure::NotSent { reason, .. }) => {
                info!(event = "order_not_sent", symbol = %symbol, client_order_id = %cid, reason = %reason, "placement not sent");
                self.apply_rest(cid, Trigger::NotFound, None, None);
            }
        }
        self.requote(&symbol);
    }

    fn apply_rest(
        &mut self,
        cid: &str,
        trigger: Trigger,
        cum: Option<Decimal>,
        reject_code: Option<&str>,
    ) {
        let now = self.now_ms;
        let Some(o) = self.orders.get_mut(cid) else {
            return;
        };
        let applied = o.apply(trigger, Source::Rest, cum, now);
        if applied.changed() {
            self.after_transition(cid, applied.from, applied.to, reject_code);
        }
    }

    fn on_cancel_result(&mut self, cid: &str, result: Result<OrderResponse, RestFailure>) {
        let now = self.now_ms;
        let Some(o) = self.orders.get_mut(cid) else {
            return;
        };
        o.cancel_in_flight = false;
        let symbol = o.symbol.clone();
        match result {
            Ok(resp) => {
                let trigger = resp
                    .status
                    .and_then(Trigger::from_status)
                    .unwrap_or(Trigger::Canceled);
                self.apply_rest(cid, trigger, resp.executed_qty, None);
            }
            Err(e) => {
                // -2011 may mean "already filled" or "not yet arrived": only a query can tell.
                // A 5xx or a timeout is rarer and worth an operator's eye.
                if matches!(e, RestFailure::OutcomeUnknown(_)) {
                    warn!(event = "cancel_unknown", symbol = %symbol, client_order_id = %cid, reason = %e, "cancel outcome unknown: will query");
                } else {
                    debug!(event = "cancel_inconclusive", symbol = %symbol, client_order_id = %cid, reason = %e);
                }
                o.apply(Trigger::CancelInconclusive, Source::Rest, None, now);
                if !o.state.is_terminal() {
                    o.query_due = true;
                    o.next_query_ms = now + self.s.query_delay_ms;
                }
            }
        }
        self.requote(&symbol);
    }

    fn on_queried(&mut self, cid: &str, result: Result<OrderResponse, RestFailure>) {
        let now = self.now_ms;
        let delay = self.s.query_delay_ms;
        let Some(o) = self.orders.get_mut(cid) else {
            return;
        };
        o.query_in_flight = false;
        let symbol = o.symbol.clone();
        match result {
            Ok(resp) => {
                o.query_due = false;
                let seen_before = o.cum_qty;
                self.orders.set_exchange_id(cid, resp.order_id);
                if let Some(trigger) = resp.status.and_then(Trigger::from_status) {
                    self.apply_rest(cid, trigger, resp.executed_qty, None);
                }
                if resp.executed_qty.is_some_and(|x| x > seen_before) {
                    // The exchange filled more than the stream told us: fetch the trades.
                    self.request_resync(ResyncReason::MissingFills);
                }
                let still_open = matches!(
                    resp.status,
                    Some(OrderStatus::New | OrderStatus::PartiallyFilled)
                );
                if still_open
                    && let Some(o) = self.orders.get(cid)
                    && o.state == OrderState::PendingCancel
                {
                    self.resend_cancel(cid);
                }
            }
            Err(RestFailure::UnknownOrder { .. }) => {
                o.not_found_count += 1;
                // A placement that timed out may still be on its way: ask twice, a pause apart.
                if o.not_found_count >= 2 {
                    o.query_due = false;
                    self.apply_rest(cid, Trigger::NotFound, None, None);
                    info!(event = "order_not_found", symbol = %symbol, client_order_id = %cid, "the exchange never saw this order");
                } else {
                    o.next_query_ms = now + delay * 2;
                }
            }
            Err(e) => {
                debug!(event = "query_failed", symbol = %symbol, client_order_id = %cid, reason = %e);
                o.next_query_ms = now + delay * 2;
            }
        }
        self.requote(&symbol);
    }

    fn resend_cancel(&mut self, cid: &str) {
        if let Some(o) = self.orders.get_mut(cid)
            && !o.cancel_in_flight
        {
            o.cancel_in_flight = true;
            self.out.push(Command::Cancel {
                symbol: o.symbol.clone(),
                client_id: cid.to_owned(),
            });
        }
    }

    // ------------------------------------------------------------ resync

    fn request_resync(&mut self, reason: ResyncReason) {
        if self.resync_in_flight.is_some()
            || self.now_ms < self.resync_not_before_ms.max(self.rest_blocked_until_ms)
        {
            self.resync_wanted.get_or_insert(reason);
            return;
        }
        let mut trades_from = Vec::new();
        self.seed_request.clear();
        for symbol in self.markets.keys() {
            if self.seeded.contains(symbol) {
                let from = self.trades.last_trade_id(symbol).map_or(0, |t| t + 1);
                trades_from.push((symbol.clone(), Some(from)));
            } else {
                self.seed_request.insert(symbol.clone());
                trades_from.push((symbol.clone(), None));
            }
        }
        self.metrics
            .inc(metrics::RESYNCS, &[("reason", reason.as_str())]);
        info!(
            event = "resync",
            reason = reason.as_str(),
            "resync: account, open orders, trades"
        );
        self.resync_in_flight = Some((reason, self.now_ms));
        self.out.push(Command::Resync {
            reason,
            trades_from,
        });
    }

    fn on_resynced(&mut self, reason: ResyncReason, result: Result<Snapshot, RestFailure>) {
        let started = self.resync_in_flight.take().map_or(self.now_ms, |(_, t)| t);
        let snap = match result {
            Ok(s) => s,
            Err(e) => {
                warn!(event = "resync_failed", reason = reason.as_str(), error = %e, "resync failed: retrying");
                self.resync_not_before_ms = self.now_ms + 1_000;
                self.resync_wanted
                    .get_or_insert(if reason == ResyncReason::Startup {
                        reason
                    } else {
                        ResyncReason::Retry
                    });
                return;
            }
        };
        self.last_resync_ms = self.now_ms;
        self.balances.reset(
            snap.account.balances.iter().map(|b| {
                (
                    b.asset.clone(),
                    Balance {
                        free: b.free,
                        locked: b.locked,
                    },
                )
            }),
            snap.as_of_ms,
            self.now_ms,
        );
        self.publish_balances(None);
        for (symbol, mut trades) in snap.trades {
            trades.sort_by_key(|t| t.id);
            if self.seed_request.contains(&symbol) {
                // Trades before the market was first quoted are history, not ours; those
                // since are recovered below like any missed fill.
                let since = self.history_start_ms.get(&symbol).copied();
                let seen = &mut self.trades;
                trades.retain(|t| {
                    let ours = since.is_some_and(|s| t.time >= s);
                    if !ours {
                        seen.mark_seen(&symbol, t.id);
                    }
                    ours
                });
                self.seeded.insert(symbol.clone());
            }
            for t in trades {
                let side = if t.is_buyer { Side::Buy } else { Side::Sell };
                if self.on_fill(
                    &symbol,
                    t.id,
                    side,
                    t.price,
                    t.qty,
                    t.commission,
                    Some(&t.commission_asset),
                    t.time,
                    "resync",
                    (t.order_id, "", t.is_maker),
                ) {
                    info!(event = "fill_recovered", symbol = %symbol, trade_id = t.id, "fill recovered by resync");
                }
            }
        }
        let mut adopted: Vec<String> = Vec::new();
        let mut listed: HashSet<String> = HashSet::new();
        let mut resynced_symbols: HashSet<String> = HashSet::new();
        for (symbol, open) in snap.open_orders {
            resynced_symbols.insert(symbol.clone());
            for o in open {
                listed.insert(o.client_order_id.clone());
                if self.orders.get(&o.client_order_id).is_some() {
                    self.orders.set_exchange_id(&o.client_order_id, o.order_id);
                    if let Some(t) = o.status.and_then(Trigger::from_status) {
                        self.apply_rest(&o.client_order_id, t, o.executed_qty, None);
                    }
                    continue;
                }
                if !ClientIdGen::is_ours(&self.s.prefix, &o.client_order_id) {
                    debug!(event = "foreign_order", symbol = %symbol, client_order_id = %o.client_order_id, "not ours: left alone");
                    continue;
                }
                let side = o.side.unwrap_or(Side::Buy);
                let price = o.price.unwrap_or_default();
                let qty = o.orig_qty.unwrap_or_default();
                let cum = o.executed_qty.unwrap_or_default();
                self.track_foreign(&o.client_order_id, &symbol, side, price, qty, cum);
                self.orders.set_exchange_id(&o.client_order_id, o.order_id);
                if reason == ResyncReason::Startup && self.s.orphan_policy == OrphanPolicy::Adopt {
                    info!(event = "orphan_adopted", symbol = %symbol, client_order_id = %o.client_order_id, "order of an earlier run adopted");
                    adopted.push(o.client_order_id.clone());
                } else {
                    warn!(event = "orphan_canceled", symbol = %symbol, client_order_id = %o.client_order_id, "order of an earlier run (our prefix): canceling");
                    self.send_cancel(o.client_order_id.clone(), "orphan");
                }
            }
        }
        self.assign_adopted_levels(&adopted);
        // Orders we think may rest but the exchange does not list: they finished while we
        // were not looking. A query tells how (filled or canceled).
        let now = self.now_ms;
        let missing: Vec<String> = self
            .orders
            .iter()
            .filter(|o| {
                resynced_symbols.contains(&o.symbol)
                    && !listed.contains(&o.client_id)
                    && matches!(
                        o.state,
                        OrderState::New
                            | OrderState::PartiallyFilled
                            | OrderState::PendingCancel
                            | OrderState::Unknown
                    )
                    && o.placed_ms < started
            })
            .map(|o| o.client_id.clone())
            .collect();
        for cid in missing {
            if let Some(o) = self.orders.get_mut(&cid) {
                o.query_due = true;
                o.next_query_ms = now;
            }
        }
        if reason == ResyncReason::Startup && !self.synced {
            self.synced = true;
            info!(
                event = "synced",
                markets = self.markets.len(),
                "state synced with the exchange: quoting starts"
            );
        }
        if let Some(r) = self.resync_wanted.take() {
            self.request_resync(r);
        }
        self.after_balances(None);
        for s in self.symbols() {
            self.requote(&s);
        }
    }

    // ------------------------------------------------------------ streams and timers

    fn on_stream_up(&mut self, stream: Stream, reason: ConnectReason) {
        self.metrics.inc(
            metrics::WS_CONNECTS,
            &[("stream", stream.as_str()), ("reason", reason.as_str())],
        );
        info!(
            event = "connect",
            stream = stream.as_str(),
            reason = reason.as_str(),
            "stream connected"
        );
        match stream {
            Stream::Market => self.market_live = true,
            Stream::User => {
                self.user_live = true;
                if self.phase != Phase::Running {
                    return;
                }
                // Fills made while the stream was down come back through myTrades, once.
                let r = if self.synced {
                    ResyncReason::Reconnect
                } else {
                    ResyncReason::Startup
                };
                if !self.synced && self.resync_in_flight.is_some() {
                    return;
                }
                self.request_resync(r);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = self.now_ms;
        for m in self.balances.judge(now, self.s.balance_grace_ms) {
            warn!(
                event = "reconcile_mismatch", asset = %m.asset, exchange = %m.exchange_total,
                expected = %m.expected_total, at_ms = m.at_ms,
                "balance change not explained by our fills: resyncing"
            );
            self.metrics.inc(metrics::RECONCILE_MISMATCHES, &[]);
            self.request_resync(ResyncReason::Mismatch);
        }
        if self.phase == Phase::Running {
            if let Some(r) = self.resync_wanted
                && self.resync_in_flight.is_none()
                && now >= self.resync_not_before_ms.max(self.rest_blocked_until_ms)
            {
                self.resync_wanted = None;
                self.request_resync(r);
            }
            if self.synced && now.saturating_sub(self.last_resync_ms) >= self.s.resync_interval_ms {
                self.request_resync(ResyncReason::Periodic);
            }
        }
        if now >= self.rest_blocked_until_ms {
            let due: Vec<String> = self
                .orders
                .iter()
                .filter(|o| {
                    o.query_due
                        && !o.query_in_flight
                        && !o.cancel_in_flight
                        && now >= o.next_query_ms
                })
                .map(|o| o.client_id.clone())
                .collect();
            for cid in due {
                if let Some(o) = self.orders.get_mut(&cid) {
                    o.query_in_flight = true;
                    o.next_query_ms = now + self.s.query_delay_ms;
                    self.out.push(Command::Query {
                        symbol: o.symbol.clone(),
                        client_id: cid,
                    });
                }
            }
        }
        for o in self.orders.forget_finished(now, self.s.linger_ms) {
            debug!(event = "order_forgotten", client_order_id = %o.client_id, state = o.state.as_str());
        }
        // Markets removed by SIGHUP go once nothing of theirs may rest.
        let gone: Vec<String> = self
            .markets
            .iter()
            .filter(|(s, m)| m.removing && self.orders.open_of_symbol(s).next().is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for s in gone {
            self.markets.remove(&s);
            self.metrics
                .remove_gauges_with(metrics::OPEN_ORDERS, "symbol", &s);
            self.published_open.remove(&s);
            info!(event = "market_removed", symbol = %s, "market stopped and removed");
        }
        for m in self.markets.values_mut() {
            m.strategy.on_timer(now);
        }
        if self.phase == Phase::Running
            && self.synced
            && now >= self.rest_blocked_until_ms
            && now.saturating_sub(self.last_status_check_ms) >= self.s.status_check_interval_ms
        {
            self.last_status_check_ms = now;
            // A delisted symbol in the request makes Binance refuse it whole (-1121) and the
            // client falls back to the full exchangeInfo: several MB at every check (30 s by
            // default) for as long as the operator keeps the market configured. Such a
            // symbol is rarely relisted soon, so it is asked about every 10th check.
            self.status_checks_since_delisted += 1;
            let with_delisted = self.status_checks_since_delisted >= DELISTED_CHECK_EVERY;
            if with_delisted {
                self.status_checks_since_delisted = 0;
            }
            let symbols: Vec<String> = self
                .markets
                .iter()
                .filter(|(_, m)| with_delisted || !m.not_listed)
                .map(|(s, _)| s.clone())
                .collect();
            // None left to ask: an empty list would fetch every symbol instead.
            if !symbols.is_empty() {
                self.out.push(Command::CheckSymbols { symbols });
            }
        }
        if now.saturating_sub(self.last_mark_ms) >= self.s.mark_interval_ms {
            self.last_mark_ms = now;
            for (symbol, m) in &self.markets {
                if let Some(mid) = m.snapshot.as_ref().and_then(|s| s.mid()) {
                    self.out.push(Command::Record(Record::Mark {
                        symbol: symbol.clone(),
                        mark: crate::ledger::Mark { time_ms: now, mid },
                    }));
                }
            }
        }
        for s in self.symbols() {
            self.requote(&s);
        }
        if let Phase::Stopping { pending, .. } = &self.phase
            && pending.is_empty()
        {
            self.finish();
        }
        self.publish_health();
    }

    fn publish_gauges(&mut self) {
        // This runs after every input: only the symbols whose orders may have changed
        // (or never published) are counted, through the per-symbol index of open orders.
        // Scanning every order (finished ones linger 30 s) for every market after every
        // input was the engine's top CPU cost at 100 markets.
        // `published_open` holds only configured markets (removed together in on_tick),
        // so equal sizes mean every market has been published once.
        let touched = self.orders.take_touched();
        let symbols: Vec<String> = match touched {
            Some(t) if self.published_open.len() == self.markets.len() => t
                .into_iter()
                .filter(|s| self.markets.contains_key(s))
                .collect(),
            _ => self.markets.keys().cloned().collect(),
        };
        for symbol in &symbols {
            let mut counts = [0usize; 2];
            for o in self.orders.open_of_symbol(symbol) {
                counts[o.side as usize] += 1;
            }
            for side in [Side::Buy, Side::Sell] {
                let n = counts[side as usize];
                let slot = side as usize;
                if let Some(last) = self.published_open.get_mut(symbol.as_str()) {
                    if last[slot] == Some(n) {
                        continue;
                    }
                    last[slot] = Some(n);
                } else {
                    let mut last = [None; 2];
                    last[slot] = Some(n);
                    self.published_open.insert(symbol.clone(), last);
                }
                self.metrics.set_gauge(
                    metrics::OPEN_ORDERS,
                    &[("symbol", symbol), ("side", side.as_str())],
                    n,
                );
            }
        }
    }

    fn publish_health(&self) {
        let now = self.now_ms;
        self.metrics.set_health(metrics::Health {
            market_stream_live: self.market_live,
            user_stream_live: self.user_live,
            stopping: self.phase != Phase::Running,
            data_age_ms: self
                .markets
                .iter()
                .filter(|(_, m)| !m.removing)
                .map(|(s, m)| (s.clone(), m.last_data_ms.map(|t| now.saturating_sub(t))))
                .collect(),
            stale_after_ms: self.s.stale_after_ms,
            open_orders: self.orders.iter().filter(|o| o.state.may_be_open()).count(),
        });
    }

    fn on_symbol_status(&mut self, list: Vec<(String, String)>) {
        for (symbol, status) in list {
            let Some(m) = self.markets.get_mut(&symbol) else {
                continue;
            };
            m.not_listed = status == NOT_LISTED;
            let trading = status == "TRADING";
            if !trading && !m.halted {
                m.halted = true;
                error!(event = "market_halted", symbol = %symbol, status = %status, "the exchange stopped trading this symbol: orders canceled, quoting paused until it trades again");
                self.cancel_symbol_orders(&symbol, "market_halted");
            } else if trading && m.halted {
                m.halted = false;
                info!(event = "market_resumed", symbol = %symbol, "the symbol trades again: quoting resumes");
            }
        }
    }

    // ------------------------------------------------------------ shutdown and reload

    fn on_shutdown(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        info!(
            event = "stopping",
            "stopping: quoting stops, canceling all open orders"
        );
        let symbols: BTreeSet<String> = self.markets.keys().cloned().collect();
        let now = self.now_ms;
        for o in self.orders.iter_mut() {
            if o.state.may_be_open() {
                o.apply(Trigger::CancelSent, Source::Rest, None, now);
            }
        }
        for s in &symbols {
            self.out.push(Command::CancelAll { symbol: s.clone() });
        }
        self.phase = Phase::Stopping {
            attempts: symbols.iter().map(|s| (s.clone(), 0)).collect(),
            pending: symbols,
        };
        self.publish_health();
        if matches!(&self.phase, Phase::Stopping { pending, .. } if pending.is_empty()) {
            self.finish();
        }
    }

    fn on_canceled_all(&mut self, symbol: &str, result: Result<Vec<OrderResponse>, RestFailure>) {
        match result {
            Ok(list) => {
                for r in list {
                    let cid = r
                        .orig_client_order_id
                        .clone()
                        .unwrap_or(r.client_order_id.clone());
                    if self.orders.get(&cid).is_some() {
                        self.apply_rest(&cid, Trigger::Canceled, r.executed_qty, None);
                    }
                }
            }
            Err(e) => {
                warn!(event = "cancel_all_failed", symbol, error = %e, "cancel all failed: checking open orders")
            }
        }
        if matches!(self.phase, Phase::Stopping { .. }) {
            self.out.push(Command::CheckOpenOrders {
                symbol: symbol.to_owned(),
            });
        }
    }

    fn on_open_orders_checked(
        &mut self,
        symbol: &str,
        result: Result<Vec<OrderResponse>, RestFailure>,
    ) {
        let prefix = self.s.prefix.clone();
        let Phase::Stopping { pending, attempts } = &mut self.phase else {
            return;
        };
        let n = attempts.entry(symbol.to_owned()).or_default();
        *n += 1;
        match result {
            Ok(list) => {
                let ours: Vec<&OrderResponse> = list
                    .iter()
                    .filter(|o| ClientIdGen::is_ours(&prefix, &o.client_order_id))
                    .collect();
                if ours.is_empty() && self.placing.values().any(|s| s == symbol) {
                    // A placement still on its way could land after this check: wait
                    // for its answer (on_placed cancels again).
                    debug!(event = "stop_waits_for_placement", symbol);
                } else if ours.is_empty() {
                    pending.remove(symbol);
                    info!(
                        event = "stopped_market",
                        symbol, "no open orders of ours left"
                    );
                } else if *n >= 3 {
                    pending.remove(symbol);
                    error!(
                        event = "orders_left",
                        symbol,
                        count = ours.len(),
                        "open orders remain after 3 attempts"
                    );
                } else {
                    self.out.push(Command::CancelAll {
                        symbol: symbol.to_owned(),
                    });
                }
            }
            Err(e) => {
                if *n >= 3 {
                    pending.remove(symbol);
                    error!(event = "orders_unconfirmed", symbol, error = %e, "could not confirm open orders are gone");
                } else {
                    self.out.push(Command::CancelAll {
                        symbol: symbol.to_owned(),
                    });
                }
            }
        }
        if let Phase::Stopping { pending, .. } = &self.phase
            && pending.is_empty()
        {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        info!(event = "stopped", "all markets stopped");
        self.out.push(Command::Exit { code: 0 });
    }

    fn on_reload(&mut self, setups: Vec<MarketSetup>) {
        if self.phase != Phase::Running {
            return;
        }
        let new: BTreeMap<String, MarketSetup> = setups
            .into_iter()
            .map(|s| (s.config.symbol.clone(), s))
            .collect();
        let removed: Vec<String> = self
            .markets
            .keys()
            .filter(|s| !new.contains_key(*s))
            .cloned()
            .collect();
        for s in removed {
            if let Some(m) = self.markets.get_mut(&s)
                && !m.removing
            {
                m.removing = true;
                info!(event = "market_removing", symbol = %s, "market removed from config: canceling its orders");
                self.cancel_symbol_orders(&s, "market_removed");
            }
        }
        for (symbol, setup) in new {
            match self.markets.get_mut(&symbol) {
                Some(m) if m.setup.config == setup.config && !m.removing => {
                    if m.killed {
                        m.killed = false;
                        m.risk.resume();
                        info!(event = "market_resumed", symbol = %symbol, "kill switch reset by reload");
                    }
                }
                Some(m) => match Market::new(setup.clone()) {
                    Ok(fresh) => {
                        m.strategy = fresh.strategy;
                        m.limits = fresh.limits;
                        m.risk = RiskState::new();
                        m.setup = setup;
                        m.killed = false;
                        m.removing = false;
                        if let Some(s) = &m.snapshot {
                            m.strategy.on_market(s);
                        }
                        info!(event = "market_changed", symbol = %symbol, "market parameters changed: applied on the next quote");
                    }
                    Err(e) => {
                        error!(event = "reload_refused", symbol = %symbol, error = %e, "invalid market: keeping the running one")
                    }
                },
                None => match self.add_market(setup.clone()) {
                    Ok(()) => {
                        self.history_start_ms
                            .entry(symbol.clone())
                            .or_insert(self.now_ms);
                        info!(event = "market_added", symbol = %symbol, "market added");
                        // Its trades from now on are ours even before its history is seeded.
                        self.history_start_ms
                            .entry(symbol.clone())
                            .or_insert(self.now_ms);
                        self.out.push(Command::Record(Record::Market {
                            symbol: symbol.clone(),
                            base_asset: setup.base_asset,
                            quote_asset: setup.quote_asset,
                        }));
                    }
                    Err(e) => {
                        error!(event = "reload_refused", symbol = %symbol, error = %e, "invalid market refused")
                    }
                },
            }
        }
        self.out.push(Command::SetMarketSymbols(self.symbols()));
        // New markets need their trade history seeded before their fills count.
        if self.markets.keys().any(|s| !self.seeded.contains(s)) {
            self.request_resync(ResyncReason::Periodic);
        }
    }
}
