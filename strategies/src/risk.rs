//! The risk layer between strategy and order manager. Every desired quote passes through
//! [`check`]; no strategy can bypass it because the daemon only ever places `allowed` quotes.
//!
//! Limits are judged against the worst case: the desired set is treated as the complete set of
//! resting orders after the diff (live orders that are not desired get cancelled), and every
//! order on a side is assumed to fill. A quote is refused when it would take the position or
//! exposure past a limit *and* further from zero than it already is, so orders that reduce an
//! over-limit position are always allowed.

use crate::exact::{self, Fixed, Wide};
use crate::params::{self, Check};
use crate::{Decimal, LiveOrder, MarketSnapshot, Quote, Side, StrategyError};
use serde::{Deserialize, Deserializer};
use std::cmp::Ordering;

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
    check_with(limits, state, input, desired, decision, true);
}

/// [`check_into`], on integers where they are exact when `exact` is set.
fn check_with(
    limits: &RiskLimits,
    state: &mut RiskState,
    input: &RiskInput<'_>,
    desired: &[Quote],
    decision: &mut RiskDecision,
    exact: bool,
) {
    decision.allowed.clear();
    decision.refused.clear();
    decision.kill = None;
    decision.newly_killed = false;
    let mut newly_killed = false;
    if state.killed.is_none()
        && let Some(limit) = limits.max_daily_loss
        && exact::cmp(input.daily_pnl, -limit) != Ordering::Greater
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
    let sorted = desired.is_sorted_by_key(key);
    // Only the quote-exposure limit values the position at a mark.
    let mark = if limits.max_quote_exposure.is_some() {
        input.market.mid().or(input.market.last)
    } else {
        None
    };
    let position = input.position_base;
    // The integer path settles every quote before it records anything, so where it declines
    // the Decimal loop starts from a clean decision.
    if sorted {
        if exact && all_allowed_exact(limits, position, desired).is_some() {
            // One quote at a time: `extend_from_slice` calls memcpy for these few bytes.
            for q in desired {
                decision.allowed.push(q.clone());
            }
            return;
        }
        let done =
            exact && check_exact(limits, state, position, mark, desired.iter(), decision).is_some();
        if !done {
            check_decimal(limits, state, position, mark, desired.iter(), decision);
        }
    } else {
        let mut v: Vec<&Quote> = desired.iter().collect();
        v.sort_by_key(|q| key(q));
        let order = v.iter().copied();
        let done =
            exact && check_exact(limits, state, position, mark, order.clone(), decision).is_some();
        if !done {
            check_decimal(limits, state, position, mark, order, decision);
        }
    }
}

/// ±1 × x, as the product would give it (a zero product is the plain zero).
fn signed(side: Side, x: Decimal) -> Decimal {
    if x.is_zero() {
        Decimal::ZERO
    } else {
        match side {
            Side::Buy => x,
            Side::Sell => -x,
        }
    }
}

/// The running sums of one side as the Decimal code keeps them (base and quote value of the
/// allowed quotes), rebuilt from `allowed` for a refusal's `would_be`: the same Decimal
/// operations in the same order, so the same value and scale.
fn replayed(allowed: &[Quote], side: Side, value: bool) -> (Decimal, Decimal) {
    let (mut base, mut quote) = (Decimal::ZERO, Decimal::ZERO);
    for q in allowed.iter().filter(|q| q.side == side) {
        base += signed(side, q.qty);
        if value {
            quote += signed(side, q.price * q.qty);
        }
    }
    (base, quote)
}

/// Quotes per decision the integer path takes (any real configuration); more go to Decimal.
const EXACT_QUOTES: usize = 16;

#[derive(Clone, Copy)]
enum Outcome {
    Allowed,
    MaxOpenOrders,
    MaxBasePosition,
    MaxQuoteExposure,
}

/// The limits of [`check_decimal`] on integers, at one scale for base quantities and one for
/// quote values, each the largest its operands use. While every sum and product the Decimal
/// code forms is exact (under 2^96 at that scale, 28 places at most; grid values always are),
/// each comparison Decimal makes is the exact one, which the integers give without Decimal's
/// calls. The outcomes are settled before anything is recorded, so an input outside that
/// range (`None`) leaves the whole decision to Decimal. A refusal's `would_be` is the Decimal
/// sum replayed from the quotes allowed before it, as [`check_decimal`] formed it.
fn check_exact<'q>(
    limits: &RiskLimits,
    state: &mut RiskState,
    position: Decimal,
    mark: Option<Decimal>,
    order: impl Iterator<Item = &'q Quote> + Clone,
    decision: &mut RiskDecision,
) -> Option<()> {
    let position_f = Fixed::of(position)?;
    let base_limit = match limits.max_base_position {
        Some(limit) => {
            let limit_f = Fixed::of(limit)?;
            let scale = order
                .clone()
                .fold(position_f.scale.max(limit_f.scale), |s, q| {
                    s.max(q.qty.scale())
                });
            Some((position_f.at(scale)?, limit_f.at(scale)?, scale))
        }
        None => None,
    };
    let mark_f = match mark {
        Some(mark) => Some(Fixed::of(mark)?),
        None => None,
    };
    let value_limit = match limits.max_quote_exposure {
        Some(limit) => {
            let limit_f = Fixed::of(limit)?;
            let scale = order.clone().fold(limit_f.scale, |s, q| {
                let mark_scale = mark.map_or(q.price.scale(), |m| m.scale());
                s.max(position_f.scale + mark_scale)
                    .max(q.price.scale() + q.qty.scale())
            });
            Some((Wide::from(limit_f).at(scale)?, scale))
        }
        None => None,
    };

    let mut outcomes = [Outcome::Allowed; EXACT_QUOTES];
    let mut count = [0u32; 2];
    let mut base = [0i128; 2];
    let mut value = [0i128; 2];
    for (i, q) in order.clone().enumerate() {
        let outcome = outcomes.get_mut(i)?;
        let s = q.side as usize;
        if limits
            .max_open_orders_per_side
            .is_some_and(|limit| count[s] >= limit)
        {
            *outcome = Outcome::MaxOpenOrders;
            continue;
        }
        let mut qty = 0;
        if let Some((position, limit, scale)) = base_limit {
            qty = signed_int(q.side, Fixed::of(q.qty)?.at(scale)?);
            let before = sum(position, base[s])?;
            let after = sum(before, qty)?;
            sum(base[s], qty)?;
            if breaches(before, after, limit) {
                *outcome = Outcome::MaxBasePosition;
                continue;
            }
        }
        let mut notional = 0;
        if let Some((limit, scale)) = value_limit {
            let price = Fixed::of(q.price)?;
            let held = Wide::product(position_f, mark_f.unwrap_or(price))?.at(scale)?;
            notional = signed_int(q.side, Wide::product(price, Fixed::of(q.qty)?)?.at(scale)?);
            let before = sum(held, value[s])?;
            let after = sum(before, notional)?;
            sum(value[s], notional)?;
            if breaches(before, after, limit) {
                *outcome = Outcome::MaxQuoteExposure;
                continue;
            }
        }
        count[s] += 1;
        base[s] += qty;
        value[s] += notional;
    }

    let allowed = &mut decision.allowed;
    let refused = &mut decision.refused;
    for (q, outcome) in order.zip(outcomes) {
        let refusal = match outcome {
            Outcome::Allowed => {
                allowed.push(q.clone());
                continue;
            }
            Outcome::MaxOpenOrders => Refusal::MaxOpenOrders {
                limit: limits.max_open_orders_per_side.unwrap_or_default(),
            },
            Outcome::MaxBasePosition => Refusal::MaxBasePosition {
                would_be: position + replayed(allowed, q.side, false).0 + signed(q.side, q.qty),
                limit: limits.max_base_position.unwrap_or_default(),
            },
            Outcome::MaxQuoteExposure => {
                let held = position * mark.unwrap_or(q.price);
                let before = held + replayed(allowed, q.side, true).1;
                Refusal::MaxQuoteExposure {
                    would_be: before + signed(q.side, q.price * q.qty),
                    limit: limits.max_quote_exposure.unwrap_or_default(),
                }
            }
        };
        state.refusals[refusal.index()] += 1;
        refused.push((q.clone(), refusal));
    }
    Some(())
}

/// [`check_exact`]'s answer where it allows every quote of a decision (in order) without a
/// quote-exposure limit, the common case, without recording outcomes to replay: `None` when
/// a quote would be refused or the integers decline, and [`check_exact`] then decides. The
/// quantities must share one scale (a strategy's quotes on one step do) at or above the
/// position's and the limit's: the mantissas are then the aligned values, and each side's
/// running sum of at most [`EXACT_QUOTES`] i64 mantissas stays far inside Decimal's range,
/// so only the position after each quote needs the range check.
fn all_allowed_exact(limits: &RiskLimits, position: Decimal, desired: &[Quote]) -> Option<()> {
    if limits.max_quote_exposure.is_some() || desired.len() > EXACT_QUOTES {
        return None;
    }
    let max_open = limits.max_open_orders_per_side.unwrap_or(u32::MAX);
    let scale = desired.first().map_or(0, |q| q.qty.scale());
    let base_limit = match limits.max_base_position {
        Some(limit) => Some((
            Fixed::of(position)?.at(scale)?,
            Fixed::of(limit)?.at(scale)?,
        )),
        None => None,
    };
    let mut count = [0u32; 2];
    // Per side, the position with that side's quotes so far.
    let mut held = [base_limit.map_or(0, |(position, _)| position); 2];
    for q in desired {
        let s = q.side as usize;
        if count[s] >= max_open {
            return None;
        }
        if let Some((_, limit)) = base_limit {
            if q.qty.scale() != scale {
                return None;
            }
            let before = held[s];
            let after = before + signed_int(q.side, i128::from(Fixed::of(q.qty)?.m));
            if !exact::fits_u(after.unsigned_abs()) || breaches(before, after, limit) {
                return None;
            }
            held[s] = after;
        }
        count[s] += 1;
    }
    Some(())
}

/// `a + b` when Decimal's sum of the same values is exact.
fn sum(a: i128, b: i128) -> Option<i128> {
    let m = a + b;
    exact::fits_u(m.unsigned_abs()).then_some(m)
}

fn signed_int(side: Side, x: i128) -> i128 {
    match side {
        Side::Buy => x,
        Side::Sell => -x,
    }
}

/// Whether `after` breaches `limit` while moving away from zero.
fn breaches(before: i128, after: i128, limit: i128) -> bool {
    // Every amount is under 2^96: abs cannot overflow.
    let after = after.abs();
    after > limit && after > before.abs()
}

/// The limits on Decimals, for decisions outside the integer range of [`ExactQuotes`].
fn check_decimal<'q>(
    limits: &RiskLimits,
    state: &mut RiskState,
    position: Decimal,
    mark: Option<Decimal>,
    order: impl Iterator<Item = &'q Quote>,
    decision: &mut RiskDecision,
) {
    let allowed = &mut decision.allowed;
    let refused = &mut decision.refused;
    // Per side: orders accepted, base they add (signed), quote value they add (signed).
    let mut count = [0u32; 2];
    let mut base = [Decimal::ZERO; 2];
    let mut value = [Decimal::ZERO; 2];
    for q in order {
        let s = q.side as usize;
        let signed = |x: Decimal| signed(q.side, x);
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

/// The check with the Decimal loop only: what the integer path must reproduce exactly. The
/// loop is the one the integer path falls back to, unchanged from before that path existed.
#[cfg(test)]
fn check_into_decimal(
    limits: &RiskLimits,
    state: &mut RiskState,
    input: &RiskInput<'_>,
    desired: &[Quote],
    decision: &mut RiskDecision,
) {
    check_with(limits, state, input, desired, decision, false);
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

    mod exact_paths {
        use super::*;
        use crate::exact::arb::{decimal, negative_zero, price, qty};
        use proptest::prelude::*;

        fn limit() -> impl Strategy<Value = Option<Decimal>> {
            prop_oneof![
                2 => Just(None),
                4 => (1i64..2_000, 0u32..=3).prop_map(|(m, s)| Some(Decimal::new(m, s))),
                1 => decimal().prop_map(Some),
            ]
        }

        fn limits() -> impl Strategy<Value = RiskLimits> {
            (
                limit(),
                prop_oneof![
                    limit(),
                    (1i64..200_000, 0u32..=2).prop_map(|(m, s)| Some(Decimal::new(m, s))),
                ],
                proptest::option::of(0u32..5),
                limit(),
                proptest::option::of(0u64..50),
            )
                .prop_map(|(base, exposure, orders, loss, stale)| RiskLimits {
                    max_base_position: base,
                    max_quote_exposure: exposure,
                    max_open_orders_per_side: orders,
                    max_daily_loss: loss,
                    stale_after_ms: stale,
                })
        }

        fn side() -> impl Strategy<Value = Side> {
            prop_oneof![Just(Side::Buy), Just(Side::Sell)]
        }

        /// Positions and PnL near the limits' sizes, both signs, both zeros.
        fn amount() -> impl Strategy<Value = Decimal> {
            prop_oneof![
                4 => (-3_000i64..3_000, 0u32..=5).prop_map(|(m, s)| Decimal::new(m, s)),
                1 => (0u32..6).prop_map(negative_zero),
                1 => decimal(),
            ]
        }

        fn market() -> impl Strategy<Value = MarketSnapshot> {
            (
                prop_oneof![5 => price(), 1 => Just(Decimal::ZERO)],
                prop_oneof![5 => price(), 1 => Just(Decimal::ZERO)],
                proptest::option::of(price()),
                0u64..60,
            )
                .prop_map(|(bid, ask, last, ts_ms)| MarketSnapshot {
                    best_bid: bid.min(ask),
                    best_bid_qty: Decimal::ONE,
                    best_ask: bid.max(ask),
                    best_ask_qty: Decimal::ONE,
                    last,
                    ts_ms,
                })
        }

        fn quotes() -> impl Strategy<Value = Vec<Quote>> {
            let quote =
                (side(), price(), qty(), 0u32..4).prop_map(|(side, price, qty, level)| Quote {
                    side,
                    price,
                    qty,
                    level,
                });
            (proptest::collection::vec(quote, 0..8), any::<bool>()).prop_map(|(mut v, sort)| {
                if sort {
                    v.sort_by_key(|q| (q.side, q.level));
                }
                v
            })
        }

        /// Every Decimal of a decision with its scale and sign bits, not just its value.
        fn bits(d: &RiskDecision) -> String {
            let raw = |x: &Decimal| format!("{x}/{:?}", x.serialize());
            let refusal = |r: &Refusal| match r {
                Refusal::MaxBasePosition { would_be, limit }
                | Refusal::MaxQuoteExposure { would_be, limit } => {
                    format!("{} {} {}", r.kind(), raw(would_be), raw(limit))
                }
                other => format!("{other:?}"),
            };
            let kill = d
                .kill
                .as_ref()
                .map(|KillReason::DailyLoss { loss, limit }| {
                    format!("{} {}", raw(loss), raw(limit))
                });
            format!(
                "{:?} {:?} {:?} {}",
                d.allowed,
                d.refused
                    .iter()
                    .map(|(q, r)| format!("{q:?} {}", refusal(r)))
                    .collect::<Vec<_>>(),
                kill,
                d.newly_killed
            )
        }

        type CheckInto =
            fn(&RiskLimits, &mut RiskState, &RiskInput<'_>, &[Quote], &mut RiskDecision);

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn check_is_the_decimal_check(
                limits in limits(),
                killed in any::<bool>(),
                market in market(),
                position_base in amount(),
                daily_pnl in amount(),
                now_ms in 0u64..120,
                desired in quotes(),
                tie in 0u8..3,
                common in 0u8..3,
            ) {
                let mut limits = limits;
                let mut desired = desired;
                // The common case the integer path shortcuts: no exposure limit (1, 2), and
                // every quantity at one scale (2).
                if common > 0 {
                    limits.max_quote_exposure = None;
                }
                if common == 2 {
                    let scale = desired.iter().map(|q| q.qty.scale()).max().unwrap_or(0);
                    for q in &mut desired {
                        q.qty.rescale(scale);
                    }
                }
                // Put a limit exactly where the first quote lands, to test the ties.
                if let Some(q) = desired.first() {
                    let signed = |x: Decimal| if q.side == Side::Buy { Some(x) } else { Some(-x) };
                    if tie == 1 {
                        limits.max_base_position = signed(q.qty)
                            .and_then(|x| position_base.checked_add(x))
                            .map(|x| x.abs());
                    } else if tie == 2 {
                        let mid = market.is_two_sided().then(|| {
                            market.best_bid.checked_add(market.best_ask)?.checked_mul(dec!(0.5))
                        });
                        // An overflowing mid makes both codes panic: any limit will do.
                        let mark = match mid {
                            Some(mid) => mid.unwrap_or(Decimal::ZERO),
                            None => market.last.unwrap_or(q.price),
                        };
                        limits.max_quote_exposure = position_base
                            .checked_mul(mark)
                            .zip(q.price.checked_mul(q.qty).and_then(signed))
                            .and_then(|(held, notional)| held.checked_add(notional))
                            .map(|x| x.abs());
                    }
                }
                let input = RiskInput {
                    now_ms,
                    market: &market,
                    position_base,
                    daily_pnl,
                    live: &[],
                };
                let mut start = RiskState::new();
                if killed {
                    start.killed = Some(KillReason::DailyLoss {
                        loss: Decimal::ONE,
                        limit: Decimal::ONE,
                    });
                }
                // Past Decimal's range the old code panics (overflow) on sums no limit reads,
                // which the new code does not form; wherever the old code answers, the new
                // one must give the same answer.
                let run = |f: CheckInto| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut state = start.clone();
                        let mut decision = RiskDecision::default();
                        // Twice: the second run reuses the vectors, as the backtest does.
                        f(&limits, &mut state, &input, &desired, &mut decision);
                        f(&limits, &mut state, &input, &desired, &mut decision);
                        (bits(&decision), state)
                    }))
                    .ok()
                };
                if let Some(theirs) = run(check_into_decimal) {
                    prop_assert_eq!(run(check_into), Some(theirs));
                }
            }
        }

        #[test]
        fn a_refused_would_be_keeps_the_decimal_scale() {
            let limits = RiskLimits {
                max_base_position: Some(dec!(0.5)),
                max_quote_exposure: Some(dec!(30)),
                ..Default::default()
            };
            let m = MarketSnapshot {
                best_bid: dec!(59.99),
                best_bid_qty: dec!(1),
                best_ask: dec!(60.01),
                best_ask_qty: dec!(1),
                last: None,
                ts_ms: 0,
            };
            let input = RiskInput {
                now_ms: 0,
                market: &m,
                position_base: dec!(0.4900),
                daily_pnl: dec!(0),
                live: &[],
            };
            let desired = [
                q(Side::Buy, dec!(59.98), dec!(0.010), 0),
                q(Side::Buy, dec!(59.97), dec!(0.01), 1),
                q(Side::Sell, dec!(60.02), dec!(0.99), 0),
            ];
            let mut ours = RiskDecision::default();
            let mut theirs = RiskDecision::default();
            check_into(&limits, &mut RiskState::new(), &input, &desired, &mut ours);
            check_into_decimal(
                &limits,
                &mut RiskState::new(),
                &input,
                &desired,
                &mut theirs,
            );
            assert_eq!(bits(&ours), bits(&theirs));
            assert_eq!(
                ours.refused[0].1,
                Refusal::MaxBasePosition {
                    would_be: dec!(0.5100),
                    limit: dec!(0.5)
                }
            );
            assert!(bits(&ours).contains("0.5100"), "{}", bits(&ours));
        }
    }
}
