//! What flows into the engine core (inputs) and out of it (commands). Plain data: the
//! core never awaits; the runner turns commands into requests and feeds the results back.

use std::time::Instant;

use rust_decimal::Decimal;

use crate::binance::types::{
    Account, MarketEvent, MyTrade, OrderResponse, RestBookTicker, Side, UserEvent,
};
use crate::config::MarketConfig;

// The stream layer's own names: the engine labels metrics and logs with them as they are.
pub use crate::binance::stream::{ConnectReason, StreamKind as Stream};

/// A REST failure, classified by what it means for the order it concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestFailure {
    /// The exchange answered and refused: nothing happened.
    Rejected { code: i64, msg: String },
    /// -2011 on cancel / -2013 on query: the exchange does not know the order (as addressed).
    UnknownOrder { code: i64, msg: String },
    /// Timeout, 5xx, transport error after sending: it may or may not have happened.
    OutcomeUnknown(String),
    /// Not sent (client throttle), or refused before execution (429/418): nothing may be
    /// sent for `retry_after_ms`.
    NotSent { reason: String, retry_after_ms: u64 },
}

impl std::fmt::Display for RestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestFailure::Rejected { code, msg } => write!(f, "rejected {code}: {msg}"),
            RestFailure::UnknownOrder { code, msg } => write!(f, "unknown order {code}: {msg}"),
            RestFailure::OutcomeUnknown(m) => write!(f, "outcome unknown: {m}"),
            RestFailure::NotSent { reason, .. } => write!(f, "not sent: {reason}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResyncReason {
    Startup,
    Reconnect,
    Mismatch,
    Periodic,
    /// A query showed fills we have not seen.
    MissingFills,
    Retry,
}

impl ResyncReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::Startup => "startup",
            ResyncReason::Reconnect => "reconnect",
            ResyncReason::Mismatch => "mismatch",
            ResyncReason::Periodic => "periodic",
            ResyncReason::MissingFills => "missing_fills",
            ResyncReason::Retry => "retry",
        }
    }
}

/// The REST view of the account: balances, open orders and trades since our last trade id.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub account: Account,
    /// Exchange time the balances reflect (account updateTime, or the request time).
    pub as_of_ms: u64,
    pub open_orders: Vec<(String, Vec<OrderResponse>)>,
    pub trades: Vec<(String, Vec<MyTrade>)>,
}

/// A market as it starts: its config plus what exchangeInfo says about its symbol.
#[derive(Debug, Clone)]
pub struct MarketSetup {
    pub config: MarketConfig,
    pub base_asset: String,
    pub quote_asset: String,
    pub rules: strategies::SymbolRules,
}

/// The status of a symbol the exchange no longer lists at all.
pub const NOT_LISTED: &str = "NOT_LISTED";

#[derive(Debug)]
pub enum Input {
    Market {
        event: MarketEvent,
        received: Instant,
    },
    User(UserEvent),
    StreamUp {
        stream: Stream,
        reason: ConnectReason,
    },
    StreamDown {
        stream: Stream,
        reason: String,
    },
    Keepalive {
        ok: bool,
        error: Option<String>,
    },
    ListenKeyCreated {
        changed: bool,
    },
    Placed {
        client_id: String,
        result: Result<OrderResponse, RestFailure>,
    },
    Canceled {
        client_id: String,
        result: Result<OrderResponse, RestFailure>,
    },
    Queried {
        client_id: String,
        result: Result<OrderResponse, RestFailure>,
    },
    CanceledAll {
        symbol: String,
        result: Result<Vec<OrderResponse>, RestFailure>,
    },
    OpenOrdersChecked {
        symbol: String,
        result: Result<Vec<OrderResponse>, RestFailure>,
    },
    Resynced {
        reason: ResyncReason,
        result: Result<Snapshot, RestFailure>,
    },
    /// REST is refused until this local time (429 Retry-After / 418 ban).
    RestBlocked {
        until_ms: u64,
        banned: bool,
    },
    Tick,
    /// Best bid and ask from REST when markets start: the first quote need not wait for
    /// the first stream frame (up to a second on `!ticker@arr`). A market that already
    /// has stream data ignores it: the stream is never older than a REST answer sent
    /// before it.
    MarketSeed(Vec<RestBookTicker>),
    /// Trading status per symbol, from exchangeInfo (TRADING, BREAK, HALT, CANCEL_ONLY, ...,
    /// or [`NOT_LISTED`]).
    SymbolStatus(Vec<(String, String)>),
    Shutdown,
    /// SIGHUP: the new set of markets, already validated and looked up at the exchange.
    Reload(Vec<MarketSetup>),
}

/// A quote of a rehearsed decision ([`super::Engine::rehearse`]): its order request is
/// built and signed as a placement's would be, then dropped. Never sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Rehearsal {
    pub symbol: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    pub post_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    pub symbol: String,
    pub client_id: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    /// LIMIT_MAKER: never takes liquidity.
    pub post_only: bool,
    /// When the market frame that led to this order was read off the socket.
    pub tick_received: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Place(PlaceOrder),
    Cancel {
        symbol: String,
        client_id: String,
    },
    Query {
        symbol: String,
        client_id: String,
    },
    CancelAll {
        symbol: String,
    },
    CheckOpenOrders {
        symbol: String,
    },
    /// Account, openOrders and myTrades (from the given trade id, per symbol).
    Resync {
        reason: ResyncReason,
        trades_from: Vec<(String, Option<i64>)>,
    },
    /// Ask exchangeInfo for these (the configured) symbols' trading status.
    CheckSymbols {
        symbols: Vec<String>,
    },
    /// Market symbols changed (SIGHUP): the market stream must follow.
    SetMarketSymbols(Vec<String>),
    /// Append to the ledger (a writer thread does the IO).
    Record(Record),
    /// Everything is done: close streams (deleting the listen key) and exit.
    Exit {
        code: i32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Fill(crate::ledger::LedgerFill),
    Order(crate::ledger::OrderEventRecord),
    Mark {
        symbol: String,
        mark: crate::ledger::Mark,
    },
    /// A market's assets, so reports can value it.
    Market {
        symbol: String,
        base_asset: String,
        quote_asset: String,
    },
}
