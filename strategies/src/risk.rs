//! The risk layer between strategy and order manager. Every desired quote passes through
//! [`check`]; no strategy can bypass it because the daemon only ever places `allowed` quotes.
//!
//! Limits are judged against the worst case: the desired set is treated as the complete set of
//! resting orders after the diff (live orders that are not desired get cancelled), and every
//! order on a side is assumed to fill. A quote is refused when it would take the position or
//! exposure past a limit *and* further from zero than it already is, so orders that reduce an
//! over-limit position are always allowed.

use crate::params::{self, Check};
use crate::{Decimal, LiveOrder, MarketSnapshot, Quote, Side, StrategyError};
use serde::{Deserialize, Deserializer};

/// The market file's `[risk]` table. Every limit is optional; an absent limit is not enforced.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RiskLimits {
    /// Largest absolute base position (from our fills) any order may lead to.
    #[serde(default)]
    pub max_base_position: Option<Decimal>,
    /// Largest absolute quote value of the worst-case position (position at the mid plus every
    /// order on one side filled at its price).
    #[serde(default)]
    pub max_quote_exposure: Option<Decimal>,
    #[serde(default)]
    pub max_open_orders_per_side: Option<u32>,
    /// Kill switch: once the day's equity change reaches −max_daily_loss, the market is stopped
    /// until [`RiskState::resume`] (operator restart or SIGHUP).
    #[serde(default)]
    pub max_daily_loss: Option<Decimal>,
    /// Stale-data guard, e.g. "10s": with older market data nothing is allowed (so the diff
    /// cancels everything) until fresh data arrives.
    #[serde(
        default,
        rename = "stale_after",
        deserialize_with = "params::opt_duration_ms"
    )]
    pub stale_after_ms: Option<u64>,
}

const TABLE: &str = "risk";

impl RiskLimits {
    /// Deserialize and validate a `[risk]` table.
    pub fn from_table<'de, D: Deserializer<'de>>(de: D) -> Result<Self, StrategyError> {
        let limits: RiskLimits = params::deserialize(TABLE, de)?;
        limits.validate()?;
        Ok(limits)
    }

    pub fn validate(&self) -> Result<(), StrategyError> {
        let c = Check { table: TABLE };
        if let Some(v) = self.max_base_position {
            c.positive("max_base_position", v)?;
        }
        if let Some(v) = self.max_quote_exposure {
            c.positive("max_quote_exposure", v)?;
        }
        if let Some(v) = self.max_open_orders_per_side {
            c.positive_int("max_open_orders_per_side", u64::from(v))?;
        }
        if let Some(v) = self.max_daily_loss {
            c.positive("max_daily_loss", v)?;
        }
        if let Some(v) = self.stale_after_ms {
            c.positive_int("stale_after", v)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum KillReason {
    DailyLoss { loss: Decimal, limit: Decimal },
}

impl std::fmt::Display for KillReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillReason::DailyLoss { loss, limit } => {
                write!(f, "daily loss {loss} reached max_daily_loss {limit}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Killed,
    StaleData { age_ms: u64, limit_ms: u64 },
    MaxBasePosition { would_be: Decimal, limit: Decimal },
    MaxQuoteExposure { would_be: Decimal, limit: Decimal },
    MaxOpenOrders { limit: u32 },
}

impl Refusal {
    /// A stable label for metrics and counters.
    pub fn kind(&self) -> &'static str {
        REFUSAL_KINDS[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            Refusal::Killed => 0,
            Refusal::StaleData { .. } => 1,
            Refusal::MaxBasePosition { .. } => 2,
            Refusal::MaxQuoteExposure { .. } => 3,
            Refusal::MaxOpenOrders { .. } => 4,
        }
    }
}

pub const REFUSAL_KINDS: [&str; 5] = [
    "killed",
    "stale_data",
    "max_base_position",
    "max_quote_exposure",
    "max_open_orders_per_side",
];

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Killed => f.write_str("market stopped by the kill switch"),
            Refusal::StaleData { age_ms, limit_ms } => {
                write!(
                    f,
                    "market data is {age_ms} ms old (stale_after {limit_ms} ms)"
                )
            }
            Refusal::MaxBasePosition { would_be, limit } => {
                write!(
                    f,
                    "base position would reach {would_be} (max_base_position {limit})"
                )
            }
            Refusal::MaxQuoteExposure { would_be, limit } => {
                write!(
                    f,
                    "quote exposure would reach {would_be} (max_quote_exposure {limit})"
                )
            }
            Refusal::MaxOpenOrders { limit } => {
                write!(f, "more than {limit} open orders on this side")
            }
        }
    }
}

/// Per-market risk state the daemon keeps alongside the strategy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RiskState {
    killed: Option<KillReason>,
    refusals: [u64; REFUSAL_KINDS.len()],
}

impl RiskState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn killed(&self) -> Option<&KillReason> {
        self.killed.as_ref()
    }

    /// Operator action (restart or SIGHUP): lift the kill switch.
    pub fn resume(&mut self) {
        self.killed = None;
    }

    /// Refusals so far, by kind.
    pub fn refusal_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REFUSAL_KINDS
            .iter()
            .copied()
            .zip(self.refusals.iter().copied())
    }

    pub fn refusal_count(&self, kind: &str) -> u64 {
        REFUSAL_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.refusals[i])
    }
}

/// What the risk layer needs to know about the market right now.
#[derive(Debug, Clone)]
pub struct RiskInput<'a> {
    pub now_ms: u64,
    pub market: &'a MarketSnapshot,
    /// Signed base position from our fills ([`crate::pnl::PositionTracker::position`]).
    pub position_base: Decimal,
    /// Equity change today ([`crate::pnl::PositionTracker::daily_pnl`]); negative is a loss.
    pub daily_pnl: Decimal,
    /// Orders resting now; not used for the worst case (the desired set replaces them) but
    /// kept so callers can pass one context everywhere.
    pub live: &'a [LiveOrder],
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RiskDecision {
    pub allowed: Vec<Quote>,
    pub refused: Vec<(Quote, Refusal)>,
    /// Set while the market is killed: the daemon cancels everything and stops the market.
    pub kill: Option<KillReason>,
    /// True only on the call that tripped the kill switch, so it is logged loudly once.
    pub newly_killed: bool,
}

fn refuse_all(
    state: &mut RiskState,
    desired: &[Quote],
    refusal: Refusal,
    out: &mut Vec<(Quote, Refusal)>,
) {
    state.refusals[refusal.index()] += desired.len() as u64;
    out.extend(desired.iter().map(|q| (q.clone(), refusal.clone())));
}

pub fn check(
    limits: &RiskLimits,
    state: &mut RiskState,
    input: &RiskInput<'_>,
    desired: &[Quote],
) -> RiskDecision {
    let mut decision = RiskDecision::default();
    check_into(limits, state, input, desired, &mut decision);
    decision
}

/// [`check`] into the caller's decision, whose vectors a hot loop (the backtest) reuses.
pub fn check_into(
    limits: &RiskLimits,
    state: &mut RiskState,
    input: &RiskInput<'_>,
    desired: &[Quote],
    decision: &mut RiskDecision,
) {
    decision.allowed.clear();
    decision.refused.clear();
    decision.kill = None;
    decision.newly_killed = false;
    let mut newly_killed = false;
    if state.killed.is_none()
        && let Some(limit) = limits.max_daily_loss
        && input.daily_pnl <= -limit
    {
        state.killed = Some(KillReason::DailyLoss {
            loss: -input.daily_pnl,
            limit,
        });
        newly_killed = true;
    }
    if let Some(reason) = &state.killed {
        decision.kill = Some(reason.clone());
        decision.newly_killed = newly_killed;
        refuse_all(state, desired, Refusal::Killed, &mut decision.refused);
        return;
    }
    if let Some(limit_ms) = limits.stale_after_ms {
        let age_ms = input.now_ms.saturating_sub(input.market.ts_ms);
        if age_ms > limit_ms {
            refuse_all(
                state,
                desired,
                Refusal::StaleData { age_ms, limit_ms },
                &mut decision.refused,
            );
            return;
        }
    }

    let key = |q: &Quote| (q.side, q.level);
    // Strategies hand over their quotes already in (side, level) order (the balance cap sorts
    // them); a stable sort would leave them as they are, so only other orders need one.
    let sorted_copy: Vec<&Quote>;
    let order: &mut dyn Iterator<Item = &Quote> = if desired.is_sorted_by_key(key) {
        &mut desired.iter()
    } else {
        let mut v: Vec<&Quote> = desired.iter().collect();
        v.sort_by_key(|q| key(q));
        sorted_copy = v;
        &mut sorted_copy.iter().copied()
    };
    let position = input.position_base;
    // Only the quote-exposure limit values the position at a mark.
    let mark = if limits.max_quote_exposure.is_some() {
        input.market.mid().or(input.market.last)
    } else {
        None
    };
    let allowed = &mut decision.allowed;
    let refused = &mut decision.refused;
    // Per side: orders accepted, base they add (signed), quote value they add (signed).
    let mut count = [0u32; 2];
    let mut base = [Decimal::ZERO; 2];
    let mut value = [Decimal::ZERO; 2];
    for q in order {
        let s = q.side as usize;
        // ±1 × x, as the product would give it (a zero product is the plain zero).
        let signed = |x: Decimal| {
            if x.is_zero() {
                Decimal::ZERO
            } else {
                match q.side {
                    Side::Buy => x,
                    Side::Sell => -x,
                }
            }
        };
        let refusal = if limits
            .max_open_orders_per_side
            .is_some_and(|limit| count[s] >= limit)
        {
            Some(Refusal::MaxOpenOrders {
                limit: limits.max_open_orders_per_side.unwrap_or_default(),
            })
        } else {
            let before = position + base[s];
            let after = before + signed(q.qty);
            let position_refusal = limits.max_base_position.and_then(|limit| {
                (after.abs() > limit && after.abs() > before.abs()).then_some(
                    Refusal::MaxBasePosition {
                        would_be: after,
                        limit,
                    },
                )
            });
            position_refusal.or_else(|| {
                let limit = limits.max_quote_exposure?;
                let held = position * mark.unwrap_or(q.price);
                let before = held + value[s];
                let after = before + signed(q.price * q.qty);
                (after.abs() > limit && after.abs() > before.abs()).then_some(
                    Refusal::MaxQuoteExposure {
                        would_be: after,
                        limit,
                    },
                )
            })
        };
        match refusal {
            Some(r) => {
                state.refusals[r.index()] += 1;
                refused.push((q.clone(), r));
            }
            None => {
                count[s] += 1;
                base[s] += signed(q.qty);
                // Read only by the quote-exposure limit.
                if limits.max_quote_exposure.is_some() {
                    value[s] += signed(q.price * q.qty);
                }
                allowed.push(q.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn market(ts_ms: u64) -> MarketSnapshot {
        MarketSnapshot {
            best_bid: dec!(99),
            best_bid_qty: dec!(1),
            best_ask: dec!(101),
            best_ask_qty: dec!(1),
            last: None,
            ts_ms,
        }
    }

    fn q(side: Side, price: Decimal, qty: Decimal, level: u32) -> Quote {
        Quote {
            side,
            price,
            qty,
            level,
        }
    }

    fn input(m: &MarketSnapshot, position: Decimal, daily_pnl: Decimal) -> RiskInput<'_> {
        RiskInput {
            now_ms: m.ts_ms,
            market: m,
            position_base: position,
            daily_pnl,
            live: &[],
        }
    }

    #[test]
    fn base_position_limit_refuses_only_increasing_orders() {
        let limits = RiskLimits {
            max_base_position: Some(dec!(2)),
            ..Default::default()
        };
        let mut state = RiskState::new();
        let m = market(0);
        let desired = [
            q(Side::Buy, dec!(99), dec!(1), 0),
            q(Side::Buy, dec!(98), dec!(1), 1),
            q(Side::Sell, dec!(101), dec!(1), 0),
            q(Side::Sell, dec!(102), dec!(5), 1),
        ];
        // Long 1.5: first bid -> 2.5 > 2 refused, second bid refused too (still 2.5);
        // asks: 0.5, then -4.5 refused.
        let d = check(
            &limits,
            &mut state,
            &input(&m, dec!(1.5), dec!(0)),
            &desired,
        );
        assert_eq!(d.allowed, vec![desired[2].clone()]);
        assert_eq!(d.refused.len(), 3);
        assert_eq!(
            d.refused[0].1,
            Refusal::MaxBasePosition {
                would_be: dec!(2.5),
                limit: dec!(2)
            }
        );
        assert_eq!(state.refusal_count("max_base_position"), 3);

        // Already past the limit (long 3): selling is still allowed, it reduces the position.
        let d = check(
            &limits,
            &mut state,
            &input(&m, dec!(3), dec!(0)),
            &desired[2..3],
        );
        assert_eq!(d.allowed.len(), 1);
    }

    #[test]
    fn quote_exposure_counts_the_position_at_the_mid() {
        let limits = RiskLimits {
            max_quote_exposure: Some(dec!(300)),
            ..Default::default()
        };
        let mut state = RiskState::new();
        let m = market(0);
        // Long 1 at mid 100 = 100 held. Bid 99 x 2 -> 298 ok; bid 98 x 1 -> 396 refused.
        let desired = [
            q(Side::Buy, dec!(99), dec!(2), 0),
            q(Side::Buy, dec!(98), dec!(1), 1),
            q(Side::Sell, dec!(101), dec!(4), 0),
        ];
        let d = check(&limits, &mut state, &input(&m, dec!(1), dec!(0)), &desired);
        // Ask 101 x 4: 100 - 404 = -304 -> refused.
        assert_eq!(d.allowed, vec![desired[0].clone()]);
        assert_eq!(
            d.refused[0].1,
            Refusal::MaxQuoteExposure {
                would_be: dec!(396),
                limit: dec!(300)
            }
        );
        assert_eq!(
            d.refused[1].1,
            Refusal::MaxQuoteExposure {
                would_be: dec!(-304),
                limit: dec!(300)
            }
        );
    }

    #[test]
    fn open_orders_per_side_keeps_the_closest_levels() {
        let limits = RiskLimits {
            max_open_orders_per_side: Some(1),
            ..Default::default()
        };
        let mut state = RiskState::new();
        let m = market(0);
        let desired = [
            q(Side::Buy, dec!(98), dec!(1), 1),
            q(Side::Buy, dec!(99), dec!(1), 0),
        ];
        let d = check(&limits, &mut state, &input(&m, dec!(0), dec!(0)), &desired);
        assert_eq!(d.allowed, vec![desired[1].clone()]);
        assert_eq!(d.refused[0].1, Refusal::MaxOpenOrders { limit: 1 });
    }

    #[test]
    fn daily_loss_kills_until_resumed() {
        let limits = RiskLimits {
            max_daily_loss: Some(dec!(50)),
            ..Default::default()
        };
        let mut state = RiskState::new();
        let m = market(0);
        let desired = [q(Side::Buy, dec!(99), dec!(1), 0)];
        let d = check(
            &limits,
            &mut state,
            &input(&m, dec!(0), dec!(-49.99)),
            &desired,
        );
        assert_eq!(d.allowed.len(), 1);
        let d = check(
            &limits,
            &mut state,
            &input(&m, dec!(0), dec!(-50)),
            &desired,
        );
        assert!(d.allowed.is_empty());
        assert!(d.newly_killed);
        let reason = KillReason::DailyLoss {
            loss: dec!(50),
            limit: dec!(50),
        };
        assert_eq!(d.kill, Some(reason.clone()));
        assert_eq!(
            reason.to_string(),
            "daily loss 50 reached max_daily_loss 50"
        );
        // Recovering PnL does not lift the switch; only the operator does.
        let d = check(&limits, &mut state, &input(&m, dec!(0), dec!(10)), &desired);
        assert!(d.allowed.is_empty() && !d.newly_killed && d.kill.is_some());
        assert_eq!(state.refusal_count("killed"), 2);
        state.resume();
        let d = check(&limits, &mut state, &input(&m, dec!(0), dec!(10)), &desired);
        assert_eq!(d.allowed.len(), 1);
    }

    #[test]
    fn stale_market_data_allows_nothing() {
        let limits = RiskLimits {
            stale_after_ms: Some(10_000),
            ..Default::default()
        };
        let mut state = RiskState::new();
        let m = market(1_000);
        let desired = [q(Side::Buy, dec!(99), dec!(1), 0)];
        let mut inp = input(&m, dec!(0), dec!(0));
        inp.now_ms = 11_000;
        assert_eq!(check(&limits, &mut state, &inp, &desired).allowed.len(), 1);
        inp.now_ms = 11_001;
        let d = check(&limits, &mut state, &inp, &desired);
        assert!(d.allowed.is_empty());
        assert_eq!(
            d.refused[0].1.to_string(),
            "market data is 10001 ms old (stale_after 10000 ms)"
        );
    }

    #[test]
    fn risk_table_rejects_unknown_keys_and_bad_values() {
        let table: toml::Value = toml::from_str(
            "max_base_position = \"0.05\"\nmax_daily_loss = 100\nstale_after = \"10s\"",
        )
        .unwrap();
        let limits = RiskLimits::from_table(table).unwrap();
        assert_eq!(limits.max_base_position, Some(dec!(0.05)));
        assert_eq!(limits.max_daily_loss, Some(dec!(100)));
        assert_eq!(limits.stale_after_ms, Some(10_000));

        let table: toml::Value = toml::from_str("max_base_positon = \"1\"").unwrap();
        let err = RiskLimits::from_table(table).unwrap_err();
        assert_eq!(err.key(), Some("max_base_positon"));
        assert!(err.to_string().contains("unknown field"), "{err}");

        let table: toml::Value = toml::from_str("max_daily_loss = \"-5\"").unwrap();
        let err = RiskLimits::from_table(table).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[risk] `max_daily_loss`: must be greater than zero (got -5)"
        );
    }
}
