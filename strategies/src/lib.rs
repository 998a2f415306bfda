//! Pure quoting models for mmd.
//!
//! Events in, decisions out: the daemon feeds market snapshots, fills, balances and timer ticks
//! into a [`Strategy`] and asks it for [`DesiredQuotes`]; the [`risk`] layer filters them and
//! [`diff`] turns them into place/cancel actions against the live orders. Nothing here reads a
//! clock, touches a socket or parses exchange JSON, so the same code runs live, in the simulator
//! and in backtests. Money is [`Decimal`] throughout.

pub use rust_decimal::Decimal;

pub mod avellaneda;
pub mod diff;
mod exact;
mod params;
pub mod pnl;
pub mod quantize;
pub mod risk;
pub mod spread;

use serde::Deserializer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exchange's trading filters for one symbol (PRICE_FILTER, LOT_SIZE, NOTIONAL/MIN_NOTIONAL).
/// A zero `tick_size` or `step_size` means the filter is disabled, as Binance reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolRules {
    pub tick_size: Decimal,
    pub step_size: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    pub min_notional: Decimal,
    pub max_notional: Option<Decimal>,
}

/// Top of book plus the last trade price. A zero best bid or best ask means that side is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketSnapshot {
    pub best_bid: Decimal,
    pub best_bid_qty: Decimal,
    pub best_ask: Decimal,
    pub best_ask_qty: Decimal,
    pub last: Option<Decimal>,
    pub ts_ms: u64,
}

impl MarketSnapshot {
    /// The mid price, only when both sides are present and not crossed.
    pub fn mid(&self) -> Option<Decimal> {
        let (bid, ask) = (self.best_bid, self.best_ask);
        // Two prices of one scale (a book's always are) with 64-bit mantissas: Decimal's sum
        // is the mantissas' sum and its product by 0.5 that sum × 5 one place further, both
        // exact; the same value and scale without its three compares, add and multiply.
        if bid.scale() == ask.scale()
            && bid.scale() < Decimal::MAX_SCALE
            && let (Ok(b), Ok(a)) = (i64::try_from(bid.mantissa()), i64::try_from(ask.mantissa()))
        {
            if !(b > 0 && a > 0 && b < a) {
                return None;
            }
            let m = (i128::from(b) + i128::from(a)) * 5;
            return Some(
                exact::Wide {
                    m,
                    scale: bid.scale() + 1,
                }
                .to_decimal(),
            );
        }
        if self.is_two_sided() {
            // × 0.5 is exact and, unlike ÷ 2, stays off Decimal's slow division path.
            Some((self.best_bid + self.best_ask) * HALF)
        } else {
            None
        }
    }

    /// Both sides present and bid below ask: the only state in which quoting makes sense.
    pub fn is_two_sided(&self) -> bool {
        self.best_bid > Decimal::ZERO
            && self.best_ask > Decimal::ZERO
            && self.best_bid < self.best_ask
    }

    /// Size-weighted mid: leans toward the side with less displayed size, which is the side
    /// more likely to be traded through next. Falls back to the mid when both sizes are zero.
    pub fn microprice(&self) -> Option<Decimal> {
        let mid = self.mid()?;
        let total = self.best_bid_qty + self.best_ask_qty;
        if total <= Decimal::ZERO {
            return Some(mid);
        }
        Some((self.best_bid * self.best_ask_qty + self.best_ask * self.best_bid_qty) / total)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fill {
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    /// Commission valued in the quote asset.
    pub fee_quote: Decimal,
    pub ts_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Balances {
    pub base_free: Decimal,
    pub base_locked: Decimal,
    pub quote_free: Decimal,
    pub quote_locked: Decimal,
}

impl Balances {
    pub fn base_total(&self) -> Decimal {
        self.base_free + self.base_locked
    }

    pub fn quote_total(&self) -> Decimal {
        self.quote_free + self.quote_locked
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LiveOrder {
    /// Daemon-local handle.
    pub id: u64,
    pub side: Side,
    pub price: Decimal,
    /// Remaining (unfilled) quantity.
    pub qty: Decimal,
    pub placed_ms: u64,
    pub level: u32,
}

pub struct Context<'a> {
    pub now_ms: u64,
    pub rules: &'a SymbolRules,
    pub market: &'a MarketSnapshot,
    pub balances: &'a Balances,
    pub live: &'a [LiveOrder],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    /// 0 is the level closest to the reference price.
    pub level: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredQuotes {
    pub quotes: Vec<Quote>,
}

impl DesiredQuotes {
    pub fn side(&self, side: Side) -> impl Iterator<Item = &Quote> {
        self.quotes.iter().filter(move |q| q.side == side)
    }
}

/// How the order diff treats live orders of this strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshPolicy {
    /// A live order whose price is within this distance of the desired price is left alone.
    pub tolerance_bps: Decimal,
    /// Live orders older than this are cancelled and re-placed.
    pub max_order_age_ms: Option<u64>,
    /// A live order closer to the mid than this is cancelled.
    pub min_spread_bps: Decimal,
}

pub trait Strategy: Send {
    fn name(&self) -> &'static str;
    fn on_market(&mut self, snapshot: &MarketSnapshot);
    fn on_fill(&mut self, fill: &Fill);
    fn on_balances(&mut self, balances: &Balances);
    fn on_timer(&mut self, now_ms: u64);
    /// The full set of orders the strategy wants resting, already quantized
    /// (see [`quantize::finalize`]).
    fn quotes(&mut self, ctx: &Context<'_>) -> DesiredQuotes;
    /// [`Strategy::quotes`] into the caller's buffer, which a hot loop (the backtest) reuses
    /// instead of allocating per decision. Same quotes, same order.
    fn quotes_into(&mut self, ctx: &Context<'_>, out: &mut Vec<Quote>) {
        *out = self.quotes(ctx).quotes;
    }
    fn refresh_policy(&self) -> RefreshPolicy;
    /// A copy of the strategy as it is now, for a decision that is only rehearsed (the
    /// daemon keeps its hot path warm between sparse ticks): whatever the rehearsal
    /// changes in the copy, an estimator's sample or a cache, goes with the copy.
    fn fork(&self) -> Box<dyn Strategy>;
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StrategyError {
    #[error("unknown strategy `{name}`; known strategies: {known}")]
    UnknownStrategy { name: String, known: String },
    /// The parameter table did not deserialize: unknown key, wrong type, malformed value.
    #[error("[{table}] `{key}`: {reason}")]
    Params {
        table: String,
        key: String,
        reason: String,
    },
    /// The value deserialized but is out of range.
    #[error("[{table}] `{key}`: {reason}")]
    Invalid {
        table: String,
        key: &'static str,
        reason: String,
    },
}

impl StrategyError {
    /// The offending key, for callers that want to report it separately.
    pub fn key(&self) -> Option<&str> {
        match self {
            StrategyError::UnknownStrategy { .. } => Some("name"),
            StrategyError::Params { key, .. } => Some(key),
            StrategyError::Invalid { key, .. } => Some(key),
        }
    }
}

const STRATEGY_NAMES: &[&str] = &[spread::NAME, avellaneda::NAME];

pub fn strategy_names() -> &'static [&'static str] {
    STRATEGY_NAMES
}

/// Build a strategy by name from its parameter table (the daemon passes a `toml::Value`).
/// The table may carry the `name` key itself, as the market file's `[strategy]` table does.
pub fn build<'de, D: Deserializer<'de>>(
    name: &str,
    params: D,
) -> Result<Box<dyn Strategy>, StrategyError> {
    match name {
        spread::NAME => {
            let p: spread::SpreadParams = params::deserialize(spread::NAME, params)?;
            Ok(Box::new(spread::SpreadStrategy::new(p)?))
        }
        avellaneda::NAME => {
            let p: avellaneda::AvellanedaParams = params::deserialize(avellaneda::NAME, params)?;
            Ok(Box::new(avellaneda::AvellanedaStrategy::new(p)?))
        }
        other => Err(StrategyError::UnknownStrategy {
            name: other.to_string(),
            known: STRATEGY_NAMES.join(", "),
        }),
    }
}

const HALF: Decimal = Decimal::from_parts(5, 0, 0, false, 1);

/// One basis point, 0.0001.
pub(crate) const BPS: Decimal = Decimal::from_parts(1, 0, 0, false, 4);

/// Basis points as a fraction: 10 bps = 0.001. A multiplication, not a division: this sits on
/// the quoting hot path and Decimal division is several times slower.
pub(crate) fn bps(x: Decimal) -> Decimal {
    x * BPS
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The integer mid is Decimal's `(bid + ask) × 0.5`, value and scale.
        #[test]
        fn mid_is_the_decimal_mid(
            bid in exact::arb::decimal(),
            ask in exact::arb::decimal(),
            grid in (1i64..100_000_000, 0i64..1_000, 0u32..=27),
        ) {
            let (b, spread, scale) = grid;
            for (best_bid, best_ask) in [
                (bid, ask),
                (Decimal::new(b, scale), Decimal::new(b + spread, scale)),
            ] {
                let m = MarketSnapshot {
                    best_bid,
                    best_bid_qty: Decimal::ONE,
                    best_ask,
                    best_ask_qty: Decimal::ONE,
                    last: None,
                    ts_ms: 0,
                };
                // Past Decimal's range the sum overflows (and `mid` panics as it always did).
                let Some(sum) = best_bid.checked_add(best_ask) else { continue };
                let decimal = m.is_two_sided().then(|| sum * HALF);
                let bits = |d: Option<Decimal>| d.map(|d| (d.mantissa(), d.scale()));
                proptest::prop_assert_eq!(bits(m.mid()), bits(decimal));
            }
        }
    }

    #[test]
    fn unknown_strategy_lists_the_known_ones() {
        let table: toml::Value = toml::from_str("order_qty = 1").unwrap();
        let err = build("sprd", table).err().unwrap();
        assert_eq!(
            err.to_string(),
            "unknown strategy `sprd`; known strategies: spread, avellaneda"
        );
        assert_eq!(strategy_names(), &["spread", "avellaneda"]);
    }

    #[test]
    fn microprice_leans_toward_the_thin_side() {
        let m = MarketSnapshot {
            best_bid: Decimal::from(100),
            best_bid_qty: Decimal::from(9),
            best_ask: Decimal::from(102),
            best_ask_qty: Decimal::from(1),
            last: None,
            ts_ms: 0,
        };
        // (100 * 1 + 102 * 9) / 10 = 101.8
        assert_eq!(m.microprice(), Some(Decimal::new(1018, 1)));
        let crossed = MarketSnapshot {
            best_ask: Decimal::from(100),
            ..m
        };
        assert_eq!(crossed.mid(), None);
    }
}
