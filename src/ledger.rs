//! The persistent ledger: every order event and fill, appended to SQLite (WAL).
//!
//! The ledger is the daemon's memory across restarts. It is not the source of
//! truth (the exchange is): on start the daemon reads the last stored trade id per
//! symbol and asks the exchange for everything after it, so a `kill -9` between a
//! fill and its write loses nothing; the (symbol, trade id) primary key makes a
//! replayed fill a no-op, so nothing is counted twice.
//!
//! Decimals are stored as TEXT: exact, and readable with the sqlite3 shell.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;

use crate::binance::types::Side;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger {path}: cannot create its directory: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("ledger: corrupt value {value:?} in column {column}")]
    Corrupt { column: &'static str, value: String },
    #[error("ledger schema version {found} is newer than this binary understands ({supported})")]
    TooNew { found: i64, supported: i64 },
}

pub type Result<T> = std::result::Result<T, LedgerError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerFill {
    pub symbol: String,
    pub trade_id: i64,
    pub order_id: u64,
    pub client_order_id: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    pub is_maker: bool,
    pub time_ms: u64,
}

/// One step in an order's life, as the daemon saw it (placement, ack, cancel, fill, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEventRecord {
    pub time_ms: u64,
    pub symbol: String,
    pub client_order_id: String,
    pub order_id: Option<u64>,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    /// The order's state after the event (e.g. "NEW", "CANCELED", "UNKNOWN").
    pub state: String,
    /// What happened, free text for operators (e.g. "placed", "cancel: drifted").
    pub detail: String,
}

/// Fill totals for one symbol, in exact decimals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FillTotals {
    pub fills: u64,
    pub base_bought: Decimal,
    pub base_sold: Decimal,
    pub quote_spent: Decimal,
    pub quote_received: Decimal,
    pub commissions: BTreeMap<String, Decimal>,
}

/// A mid price sample, for unrealized PnL and the report's chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub time_ms: u64,
    pub mid: Decimal,
}

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fills (
    symbol           TEXT    NOT NULL,
    trade_id         INTEGER NOT NULL,
    order_id         INTEGER NOT NULL,
    client_order_id  TEXT    NOT NULL,
    side             TEXT    NOT NULL CHECK (side IN ('BUY', 'SELL')),
    price            TEXT    NOT NULL,
    qty              TEXT    NOT NULL,
    commission       TEXT    NOT NULL,
    commission_asset TEXT    NOT NULL,
    is_maker         INTEGER NOT NULL,
    time_ms          INTEGER NOT NULL,
    PRIMARY KEY (symbol, trade_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fills_by_time ON fills (time_ms);
CREATE TABLE IF NOT EXISTS order_events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms          INTEGER NOT NULL,
    symbol           TEXT    NOT NULL,
    client_order_id  TEXT    NOT NULL,
    order_id         INTEGER,
    side             TEXT    NOT NULL,
    price            TEXT    NOT NULL,
    qty              TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    detail           TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS order_events_by_coid ON order_events (client_order_id);
CREATE TABLE IF NOT EXISTS marks (
    symbol  TEXT    NOT NULL,
    time_ms INTEGER NOT NULL,
    mid     TEXT    NOT NULL,
    PRIMARY KEY (symbol, time_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS markets (
    symbol      TEXT PRIMARY KEY,
    base_asset  TEXT NOT NULL,
    quote_asset TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS market_history (
    symbol   TEXT PRIMARY KEY,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    started_ms INTEGER PRIMARY KEY,
    stopped_ms INTEGER
);
";

pub struct Ledger {
    conn: Connection,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

fn side_str(side: Side) -> &'static str {
    side.as_str()
}

fn parse_side(s: String) -> Result<Side> {
    match s.as_str() {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        _ => Err(LedgerError::Corrupt {
            column: "side",
            value: s,
        }),
    }
}

fn parse_dec(column: &'static str, s: String) -> Result<Decimal> {
    Decimal::from_str(&s).map_err(|_| LedgerError::Corrupt { column, value: s })
}

/// SQLite page cache of the ledger connection, in KiB.
const LEDGER_CACHE_KIB: i64 = 256;

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, in WAL mode.
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::Dir {
                path: shown.clone(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| LedgerError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::init(conn).map_err(|e| match e {
            LedgerError::Sql(source) => LedgerError::Open {
                path: shown,
                source,
            },
            other => other,
        })
    }

    /// A ledger that lives only as long as the process: for backtests and tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        // WAL + NORMAL: a committed write survives a process crash (kill -9); only a
        // power loss can drop the last transactions, and those are re-fetched from
        // the exchange's trade list on the next start.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The daemon appends and rarely reads back: SQLite's default 2 MB page cache only
        // grew the daemon's RSS by 2 MB over its first ~20 minutes, as the file reached
        // that size (the hour-long soak). The kernel's page cache serves the rare reads.
        conn.pragma_update(None, "cache_size", -LEDGER_CACHE_KIB)?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self { conn })
    }

    /// Runs `f` inside one transaction: the ledger thread writes the records queued at
    /// one moment with one commit (WAL append, file locks, checkpoints) rather than one
    /// each. A record is durable once its batch commits, as it was once its own
    /// statement committed; `f`'s own write errors are its to handle.
    pub fn batch<T>(&self, f: impl FnOnce(&Self) -> T) -> Result<T> {
        let tx = self.conn.unchecked_transaction()?;
        let out = f(self);
        tx.commit()?;
        Ok(out)
    }

    /// Appends a fill. Returns false when that (symbol, trade id) was already recorded,
    /// which is how replays after a reconnect or restart stay exactly-once.
    pub fn record_fill(&self, fill: &LedgerFill) -> Result<bool> {
        // Cached statements: the ledger thread parsed each INSERT's SQL again on every
        // record (hundreds a second at 100 markets).
        const SQL: &str = "INSERT OR IGNORE INTO fills (symbol, trade_id, order_id, client_order_id, side, price, qty,
                 commission, commission_asset, is_maker, time_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
        let inserted = self.conn.prepare_cached(SQL)?.execute(params![
            fill.symbol,
            fill.trade_id,
            fill.order_id as i64,
            fill.client_order_id,
            side_str(fill.side),
            fill.price.to_string(),
            fill.qty.to_string(),
            fill.commission.to_string(),
            fill.commission_asset,
            fill.is_maker,
            fill.time_ms as i64,
        ])?;
        Ok(inserted == 1)
    }

    pub fn record_order_event(&self, ev: &OrderEventRecord) -> Result<()> {
        const SQL: &str = "INSERT INTO order_events (time_ms, symbol, client_order_id, order_id, side, price, qty, state, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
        self.conn.prepare_cached(SQL)?.execute(params![
            ev.time_ms as i64,
            ev.symbol,
            ev.client_order_id,
            ev.order_id.map(|id| id as i64),
            side_str(ev.side),
            ev.price.to_string(),
            ev.qty.to_string(),
            ev.state,
            ev.detail,
        ])?;
        Ok(())
    }

    pub fn record_mark(&self, symbol: &str, mark: Mark) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO marks (symbol, time_ms, mid) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![symbol, mark.time_ms as i64, mark.mid.to_string()])?;
        Ok(())
    }

    /// Remembers a symbol's assets, so reports can value commissions in quote.
    pub fn record_market(&self, symbol: &str, base_asset: &str, quote_asset: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT OR REPLACE INTO markets (symbol, base_asset, quote_asset) VALUES (?1, ?2, ?3)")?.execute(params![symbol, base_asset, quote_asset])?;
        Ok(())
    }

    /// Remembers when the daemon first quoted `symbol` (kept on later calls): trades of
    /// the account in that symbol from then on are the daemon's, even if none reached
    /// the ledger before a crash.
    pub fn record_market_since(&self, symbol: &str, since_ms: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO market_history (symbol, since_ms) VALUES (?1, ?2)",
            )?
            .execute(params![symbol, since_ms as i64])?;
        Ok(())
    }

    /// When the daemon first quoted `symbol`, if it ever did.
    pub fn market_since(&self, symbol: &str) -> Result<Option<u64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT since_ms FROM market_history WHERE symbol = ?1",
                params![symbol],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v as u64))
    }

    /// (base asset, quote asset) of a symbol the daemon has traded.
    pub fn market_assets(&self, symbol: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT base_asset, quote_asset FROM markets WHERE symbol = ?1",
                params![symbol],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn record_run_start(&self, started_ms: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO runs (started_ms) VALUES (?1)",
            params![started_ms as i64],
        )?;
        Ok(())
    }

    pub fn record_run_stop(&self, started_ms: u64, stopped_ms: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET stopped_ms = ?2 WHERE started_ms = ?1",
            params![started_ms as i64, stopped_ms as i64],
        )?;
        Ok(())
    }

    /// The highest trade id stored for `symbol`: the `fromId` for the next myTrades call is this + 1.
    pub fn last_trade_id(&self, symbol: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT MAX(trade_id) FROM fills WHERE symbol = ?1",
                params![symbol],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Fills in time order, optionally for one symbol and from a time on.
    pub fn fills(&self, symbol: Option<&str>, since_ms: Option<u64>) -> Result<Vec<LedgerFill>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT symbol, trade_id, order_id, client_order_id, side, price, qty, commission,
                    commission_asset, is_maker, time_ms
             FROM fills
             WHERE (?1 IS NULL OR symbol = ?1) AND time_ms >= ?2
             ORDER BY time_ms, symbol, trade_id",
        )?;
        let rows = stmt.query_map(params![symbol, since_ms.unwrap_or(0) as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, bool>(9)?,
                r.get::<_, i64>(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                symbol,
                trade_id,
                order_id,
                coid,
                side,
                price,
                qty,
                commission,
                asset,
                maker,
                time,
            ) = row?;
            out.push(LedgerFill {
                symbol,
                trade_id,
                order_id: order_id as u64,
                client_order_id: coid,
                side: parse_side(side)?,
                price: parse_dec("price", price)?,
                qty: parse_dec("qty", qty)?,
                commission: parse_dec("commission", commission)?,
                commission_asset: asset,
                is_maker: maker,
                time_ms: time as u64,
            });
        }
        Ok(out)
    }

    /// Exact totals over every stored fill of `symbol`.
    pub fn totals(&self, symbol: &str) -> Result<FillTotals> {
        let mut t = FillTotals::default();
        for f in self.fills(Some(symbol), None)? {
            t.fills += 1;
            let quote = f.price * f.qty;
            match f.side {
                Side::Buy => {
                    t.base_bought += f.qty;
                    t.quote_spent += quote;
                }
                Side::Sell => {
                    t.base_sold += f.qty;
                    t.quote_received += quote;
                }
            }
            *t.commissions.entry(f.commission_asset).or_default() += f.commission;
        }
        Ok(t)
    }

    /// Symbols with at least one fill or mark.
    pub fn symbols(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT symbol FROM fills UNION SELECT symbol FROM marks ORDER BY symbol",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn marks(&self, symbol: &str, since_ms: Option<u64>) -> Result<Vec<Mark>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT time_ms, mid FROM marks WHERE symbol = ?1 AND time_ms >= ?2 ORDER BY time_ms",
        )?;
        let rows = stmt.query_map(params![symbol, since_ms.unwrap_or(0) as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (t, mid) = row?;
            out.push(Mark {
                time_ms: t as u64,
                mid: parse_dec("mid", mid)?,
            });
        }
        Ok(out)
    }

    /// Order events of one client order id, oldest first.
    pub fn order_history(&self, client_order_id: &str) -> Result<Vec<OrderEventRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT time_ms, symbol, client_order_id, order_id, side, price, qty, state, detail
             FROM order_events WHERE client_order_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![client_order_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (time, symbol, coid, order_id, side, price, qty, state, detail) = row?;
            out.push(OrderEventRecord {
                time_ms: time as u64,
                symbol,
                client_order_id: coid,
                order_id: order_id.map(|id| id as u64),
                side: parse_side(side)?,
                price: parse_dec("price", price)?,
                qty: parse_dec("qty", qty)?,
                state,
                detail,
            });
        }
        Ok(out)
    }

    /// Total time the daemon ran, over every recorded run. A run without a recorded
    /// stop counts up to the next run's start, or up to `now_ms` if it is the last.
    pub fn uptime_ms(&self, now_ms: u64) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT started_ms, stopped_ms FROM runs ORDER BY started_ms")?;
        let runs: Vec<(i64, Option<i64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut total = 0u64;
        for (i, (start, stop)) in runs.iter().enumerate() {
            // A run that never recorded its stop (crash, kill -9) ended at the latest
            // when the next one started.
            let end = stop
                .map(|s| s as u64)
                .or_else(|| runs.get(i + 1).map(|(next, _)| *next as u64))
                .unwrap_or(now_ms);
            total += end.saturating_sub(*start as u64);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn fill(trade_id: i64, side: Side, price: Decimal, qty: Decimal) -> LedgerFill {
        LedgerFill {
            symbol: "BTCUSDT".into(),
            trade_id,
            order_id: 7,
            client_order_id: "mmd_x_0_1".into(),
            side,
            price,
            qty,
            commission: dec!(0.00000100),
            commission_asset: "BTC".into(),
            is_maker: true,
            time_ms: 1_000 + trade_id as u64,
        }
    }

    #[test]
    fn replayed_fill_is_recorded_once_and_totals_are_exact() {
        let l = Ledger::open_in_memory().unwrap();
        assert!(
            l.record_fill(&fill(1, Side::Buy, dec!(100.01), dec!(0.001)))
                .unwrap()
        );
        assert!(
            !l.record_fill(&fill(1, Side::Buy, dec!(100.01), dec!(0.001)))
                .unwrap()
        );
        assert!(
            l.record_fill(&fill(2, Side::Sell, dec!(100.03), dec!(0.002)))
                .unwrap()
        );
        let t = l.totals("BTCUSDT").unwrap();
        assert_eq!(t.fills, 2);
        assert_eq!(t.base_bought, dec!(0.001));
        assert_eq!(t.quote_spent, dec!(0.10001));
        assert_eq!(t.quote_received, dec!(0.20006));
        assert_eq!(t.commissions["BTC"], dec!(0.00000200));
        assert_eq!(l.last_trade_id("BTCUSDT").unwrap(), Some(2));
        assert_eq!(l.last_trade_id("ETHUSDT").unwrap(), None);
    }

    #[test]
    fn survives_reopen_and_keeps_order_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/mmd.sqlite");
        {
            let l = Ledger::open(&path).unwrap();
            l.record_fill(&fill(5, Side::Buy, dec!(1), dec!(2)))
                .unwrap();
            l.record_order_event(&OrderEventRecord {
                time_ms: 1,
                symbol: "BTCUSDT".into(),
                client_order_id: "c1".into(),
                order_id: None,
                side: Side::Buy,
                price: dec!(1),
                qty: dec!(2),
                state: "PENDING_NEW".into(),
                detail: "placed".into(),
            })
            .unwrap();
            l.record_mark(
                "BTCUSDT",
                Mark {
                    time_ms: 3,
                    mid: dec!(1.5),
                },
            )
            .unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.last_trade_id("BTCUSDT").unwrap(), Some(5));
        assert_eq!(l.order_history("c1").unwrap()[0].state, "PENDING_NEW");
        assert_eq!(l.marks("BTCUSDT", None).unwrap()[0].mid, dec!(1.5));
        assert_eq!(l.symbols().unwrap(), vec!["BTCUSDT".to_string()]);
    }

    #[test]
    fn uptime_counts_crashed_runs_up_to_the_next_start() {
        let l = Ledger::open_in_memory().unwrap();
        l.record_run_start(1_000).unwrap();
        // crashed: no stop recorded
        l.record_run_start(5_000).unwrap();
        l.record_run_stop(5_000, 6_000).unwrap();
        assert_eq!(l.uptime_ms(10_000).unwrap(), 4_000 + 1_000);
    }

    #[test]
    fn market_since_keeps_the_first_start() {
        let l = Ledger::open_in_memory().unwrap();
        assert_eq!(l.market_since("BTCUSDT").unwrap(), None);
        l.record_market_since("BTCUSDT", 1_000).unwrap();
        l.record_market_since("BTCUSDT", 9_000).unwrap();
        assert_eq!(l.market_since("BTCUSDT").unwrap(), Some(1_000));
    }

    #[test]
    fn corrupt_value_is_an_error_not_a_panic() {
        let l = Ledger::open_in_memory().unwrap();
        l.conn
            .execute(
                "INSERT INTO marks (symbol, time_ms, mid) VALUES ('X', 1, 'not-a-number')",
                [],
            )
            .unwrap();
        assert!(matches!(
            l.marks("X", None),
            Err(LedgerError::Corrupt { column: "mid", .. })
        ));
    }
}
