//! The shared quantizer every strategy passes its quotes through.
//!
//! Rounding always moves a quote away from the mid (bids down, asks up) so quantization never
//! tightens a spread the strategy chose; quantities round down so we never offer more than asked.
//! Quotes the exchange would reject (below min qty / min notional) are dropped rather than
//! bumped up, because bumping would exceed the size the strategy and risk layer agreed on.

use rust_decimal::RoundingStrategy;

use crate::{Balances, Context, Decimal, DesiredQuotes, MarketSnapshot, Quote, Side, SymbolRules};

/// `Some(dp)` when `step` is 10^-dp (0.01, 0.001, 1, ...), as nearly every Binance tick and
/// step is: rounding to decimal places then needs no division.
pub(crate) fn decimal_places_of(step: Decimal) -> Option<u32> {
    // Already normalized (as a parsed "0.01" is): no need to build a normalized copy.
    if step.mantissa() == 1 {
        return Some(step.scale());
    }
    let n = step.normalize();
    (n.mantissa() == 1).then(|| n.scale())
}

/// `x.round_dp_with_strategy(dp, strategy)`, bit for bit (value, scale and sign), on integer
/// arithmetic for the strategies the hot path uses: the library's general routine divides and
/// multiplies its 96-bit limbs in loops and was 7% of a backtest. Zero, and other strategies,
/// take the library's routine.
pub fn round_dp(x: Decimal, dp: u32, strategy: RoundingStrategy) -> Decimal {
    let scale = x.scale();
    if scale <= dp || x.is_zero() {
        return x.round_dp_with_strategy(dp, strategy);
    }
    let negative = x.is_sign_negative();
    let magnitude = x.mantissa().unsigned_abs();
    let power = 10u128.pow(scale - dp);
    let (mut q, r) = if magnitude <= u128::from(u64::MAX) && power <= u128::from(u64::MAX) {
        let (m, p) = (magnitude as u64, power as u64);
        (u128::from(m / p), u128::from(m % p))
    } else {
        (magnitude / power, magnitude % power)
    };
    let up = match strategy {
        RoundingStrategy::ToNegativeInfinity => negative && r != 0,
        RoundingStrategy::ToPositiveInfinity => !negative && r != 0,
        RoundingStrategy::MidpointNearestEven => {
            let half = power / 2;
            r > half || (r == half && q & 1 == 1)
        }
        _ => return x.round_dp_with_strategy(dp, strategy),
    };
    if up {
        q += 1;
    }
    // q <= |mantissa| / 10 + 1 < 2^96: it fits the three limbs.
    Decimal::from_parts(q as u32, (q >> 32) as u32, (q >> 64) as u32, negative, dp)
}

/// Round down to a multiple of `step`; a zero step means "no grid".
pub fn floor_to(x: Decimal, step: Decimal) -> Decimal {
    if step <= Decimal::ZERO {
        return x;
    }
    match decimal_places_of(step) {
        Some(dp) => round_dp(x, dp, RoundingStrategy::ToNegativeInfinity),
        None => (x / step).floor() * step,
    }
}

/// Round up to a multiple of `step`; a zero step means "no grid".
pub fn ceil_to(x: Decimal, step: Decimal) -> Decimal {
    if step <= Decimal::ZERO {
        return x;
    }
    match decimal_places_of(step) {
        Some(dp) => round_dp(x, dp, RoundingStrategy::ToPositiveInfinity),
        None => (x / step).ceil() * step,
    }
}

/// The largest grid price strictly below `p`, or `None` without a grid.
pub fn tick_below(p: Decimal, tick: Decimal) -> Option<Decimal> {
    (tick > Decimal::ZERO).then(|| ceil_to(p, tick) - tick)
}

/// The smallest grid price strictly above `p`, or `None` without a grid.
pub fn tick_above(p: Decimal, tick: Decimal) -> Option<Decimal> {
    (tick > Decimal::ZERO).then(|| floor_to(p, tick) + tick)
}

/// Whether `x` lies on the grid of `step` (always true for a disabled grid).
pub fn on_grid(x: Decimal, step: Decimal) -> bool {
    step <= Decimal::ZERO || (x % step).is_zero()
}

/// Quantize one quote, or `None` if it cannot be placed as a post-only order.
pub fn quantize_quote(q: &Quote, rules: &SymbolRules, market: &MarketSnapshot) -> Option<Quote> {
    let price = match q.side {
        Side::Buy => {
            let p = floor_to(q.price, rules.tick_size);
            if market.best_ask > Decimal::ZERO && p >= market.best_ask {
                tick_below(market.best_ask, rules.tick_size)?
            } else {
                p
            }
        }
        Side::Sell => {
            let p = ceil_to(q.price, rules.tick_size);
            if market.best_bid > Decimal::ZERO && p <= market.best_bid {
                tick_above(market.best_bid, rules.tick_size)?
            } else {
                p
            }
        }
    };
    if price <= Decimal::ZERO {
        return None;
    }
    let mut qty = floor_to(q.qty, rules.step_size);
    if rules.max_qty > Decimal::ZERO && qty > rules.max_qty {
        qty = floor_to(rules.max_qty, rules.step_size);
    }
    if let Some(max_notional) = rules.max_notional
        && price * qty > max_notional
    {
        qty = floor_to(max_notional / price, rules.step_size);
    }
    if qty <= Decimal::ZERO || qty < rules.min_qty || price * qty < rules.min_notional {
        return None;
    }
    Some(Quote {
        side: q.side,
        price,
        qty,
        level: q.level,
    })
}

/// Quantize every quote, then drop any bid at or above our own lowest ask so that,
/// whatever the strategy produced, our bids stay strictly below our asks.
pub fn quantize(quotes: &[Quote], rules: &SymbolRules, market: &MarketSnapshot) -> Vec<Quote> {
    let mut out = quotes.to_vec();
    quantize_in_place(&mut out, rules, market);
    out
}

/// [`quantize`] on the caller's buffer: the same quotes in the same order, no allocation.
pub fn quantize_in_place(out: &mut Vec<Quote>, rules: &SymbolRules, market: &MarketSnapshot) {
    out.retain_mut(|q| match quantize_quote(q, rules, market) {
        Some(quantized) => {
            *q = quantized;
            true
        }
        None => false,
    });
    let lowest_ask = out
        .iter()
        .filter(|q| q.side == Side::Sell)
        .map(|q| q.price)
        .min();
    if let Some(lowest_ask) = lowest_ask {
        out.retain(|q| q.side == Side::Sell || q.price < lowest_ask);
    }
}

/// Shrink quotes so that, level by level from the closest, asks never offer more base than we
/// hold and bids never commit more quote than we hold. Locked balances count as available
/// because they are locked in our own live orders, which the new quotes replace.
pub fn cap_to_balances(quotes: &mut Vec<Quote>, balances: &Balances) {
    quotes.sort_by_key(|q| (q.side, q.level));
    let mut base_left = balances.base_total().max(Decimal::ZERO);
    let mut quote_left = balances.quote_total().max(Decimal::ZERO);
    for q in quotes.iter_mut() {
        match q.side {
            Side::Sell => {
                q.qty = q.qty.min(base_left).max(Decimal::ZERO);
                base_left -= q.qty;
            }
            Side::Buy => {
                if q.price > Decimal::ZERO && q.price * q.qty > quote_left {
                    q.qty = (quote_left / q.price).max(Decimal::ZERO);
                }
                quote_left -= q.price * q.qty;
            }
        }
    }
    quotes.retain(|q| q.qty > Decimal::ZERO);
}

/// What every strategy does last: fit the quotes to our balances, then to the exchange's grid.
pub fn finalize(mut quotes: Vec<Quote>, ctx: &Context<'_>) -> DesiredQuotes {
    finalize_in_place(&mut quotes, ctx);
    DesiredQuotes { quotes }
}

/// [`finalize`] on the caller's buffer.
pub fn finalize_in_place(quotes: &mut Vec<Quote>, ctx: &Context<'_>) {
    cap_to_balances(quotes, ctx.balances);
    quantize_in_place(quotes, ctx.rules, ctx.market);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn rules() -> SymbolRules {
        SymbolRules {
            tick_size: dec!(0.01),
            step_size: dec!(0.001),
            min_qty: dec!(0.001),
            max_qty: dec!(100),
            min_notional: dec!(5),
            max_notional: None,
        }
    }

    fn market(bid: Decimal, ask: Decimal) -> MarketSnapshot {
        MarketSnapshot {
            best_bid: bid,
            best_bid_qty: dec!(1),
            best_ask: ask,
            best_ask_qty: dec!(1),
            last: None,
            ts_ms: 0,
        }
    }

    fn q(side: Side, price: Decimal, qty: Decimal) -> Quote {
        Quote {
            side,
            price,
            qty,
            level: 0,
        }
    }

    proptest::proptest! {
        /// The integer rounding is the library's, bit for bit: value, scale and sign.
        #[test]
        fn round_dp_matches_the_library(
            lo: u32,
            mid: u32,
            hi in proptest::prop_oneof![proptest::strategy::Just(0u32), proptest::prelude::any::<u32>()],
            negative: bool,
            scale in 0u32..=28,
            dp in 0u32..=28,
        ) {
            let mid = if hi == 0 && lo % 3 == 0 { 0 } else { mid };
            let x = Decimal::from_parts(lo, mid, hi, negative, scale);
            for strategy in [
                RoundingStrategy::ToNegativeInfinity,
                RoundingStrategy::ToPositiveInfinity,
                RoundingStrategy::MidpointNearestEven,
            ] {
                let ours = round_dp(x, dp, strategy);
                let theirs = x.round_dp_with_strategy(dp, strategy);
                proptest::prop_assert_eq!(ours.serialize(), theirs.serialize(), "{} {} {:?}", x, dp, strategy);
            }
        }
    }

    #[test]
    fn round_dp_midpoints_and_small_values() {
        for (x, dp) in [
            (dec!(0.125), 2),
            (dec!(0.135), 2),
            (dec!(-0.125), 2),
            (dec!(-0.001), 2),
            (dec!(0.001), 2),
            (dec!(2.5), 0),
            (dec!(3.5), 0),
            (dec!(-2.5), 0),
            (dec!(60000.005), 2),
            (dec!(0.0000000000000000000000000005), 27),
        ] {
            for strategy in [
                RoundingStrategy::ToNegativeInfinity,
                RoundingStrategy::ToPositiveInfinity,
                RoundingStrategy::MidpointNearestEven,
            ] {
                let theirs = x.round_dp_with_strategy(dp, strategy);
                assert_eq!(round_dp(x, dp, strategy).serialize(), theirs.serialize());
            }
        }
    }

    #[test]
    fn rounding_on_decimal_and_other_grids() {
        assert_eq!(floor_to(dec!(1.239), dec!(0.01)), dec!(1.23));
        assert_eq!(ceil_to(dec!(1.231), dec!(0.010000)), dec!(1.24));
        assert_eq!(floor_to(dec!(-1.231), dec!(0.01)), dec!(-1.24));
        assert_eq!(floor_to(dec!(1239), dec!(10)), dec!(1230));
        assert_eq!(ceil_to(dec!(1.26), dec!(0.25)), dec!(1.50));
        assert_eq!(floor_to(dec!(1.26), dec!(0.25)), dec!(1.25));
        assert_eq!(tick_below(dec!(100.05), dec!(0.01)), Some(dec!(100.04)));
        assert_eq!(tick_above(dec!(100.05), dec!(0.05)), Some(dec!(100.10)));
    }

    #[test]
    fn bids_round_down_asks_round_up_qty_down() {
        let m = market(dec!(99.00), dec!(101.00));
        let out = quantize(
            &[
                q(Side::Buy, dec!(99.4567), dec!(0.12345)),
                q(Side::Sell, dec!(100.5412), dec!(0.12399)),
            ],
            &rules(),
            &m,
        );
        assert_eq!(out[0], q(Side::Buy, dec!(99.45), dec!(0.123)));
        assert_eq!(out[1], q(Side::Sell, dec!(100.55), dec!(0.123)));
    }

    #[test]
    fn post_only_safety_moves_crossing_quotes_one_tick_inside() {
        let m = market(dec!(100.00), dec!(100.05));
        let out = quantize(
            &[
                q(Side::Buy, dec!(100.07), dec!(1)),
                q(Side::Sell, dec!(99.98), dec!(1)),
            ],
            &rules(),
            &m,
        );
        // The ask lands one tick above the best bid (100.01), so the bid (clamped to 100.04)
        // would sit above our own ask and is dropped: bid < ask always wins.
        assert_eq!(out, vec![q(Side::Sell, dec!(100.01), dec!(1))]);

        let out = quantize(&[q(Side::Buy, dec!(100.07), dec!(1))], &rules(), &m);
        assert_eq!(out, vec![q(Side::Buy, dec!(100.04), dec!(1))]);
        let out = quantize(&[q(Side::Buy, dec!(100.05), dec!(1))], &rules(), &m);
        assert_eq!(out, vec![q(Side::Buy, dec!(100.04), dec!(1))]);
        let out = quantize(&[q(Side::Sell, dec!(100.00), dec!(1))], &rules(), &m);
        assert_eq!(out, vec![q(Side::Sell, dec!(100.01), dec!(1))]);
    }

    #[test]
    fn below_min_notional_or_min_qty_is_dropped_not_bumped() {
        let m = market(dec!(99), dec!(101));
        // 98 * 0.05 = 4.90 < 5
        assert!(quantize(&[q(Side::Buy, dec!(98), dec!(0.05))], &rules(), &m).is_empty());
        // 0.0009 floors to 0.000
        assert!(quantize(&[q(Side::Sell, dec!(102), dec!(0.0009))], &rules(), &m).is_empty());
        // 98 * 0.052 = 5.096 >= 5
        assert_eq!(
            quantize(&[q(Side::Buy, dec!(98), dec!(0.052))], &rules(), &m).len(),
            1
        );
    }

    #[test]
    fn max_qty_and_max_notional_shrink_the_order() {
        let mut r = rules();
        r.max_notional = Some(dec!(1000));
        let m = market(dec!(99), dec!(101));
        let out = quantize(&[q(Side::Buy, dec!(98), dec!(500))], &r, &m);
        // max_qty 100 -> 9800 notional > 1000 -> floor(1000/98, 0.001) = 10.204
        assert_eq!(out, vec![q(Side::Buy, dec!(98), dec!(10.204))]);
    }

    #[test]
    fn disabled_tick_keeps_price_and_drops_an_unfixable_cross() {
        let mut r = rules();
        r.tick_size = Decimal::ZERO;
        let m = market(dec!(99), dec!(101));
        assert_eq!(
            quantize(&[q(Side::Buy, dec!(98.123456), dec!(1))], &r, &m)[0].price,
            dec!(98.123456)
        );
        assert!(quantize(&[q(Side::Buy, dec!(101), dec!(1))], &r, &m).is_empty());
    }

    #[test]
    fn balances_cap_sizes_level_by_level() {
        let mut quotes = vec![
            Quote {
                side: Side::Sell,
                price: dec!(101),
                qty: dec!(1),
                level: 0,
            },
            Quote {
                side: Side::Sell,
                price: dec!(102),
                qty: dec!(1),
                level: 1,
            },
            Quote {
                side: Side::Buy,
                price: dec!(100),
                qty: dec!(1),
                level: 0,
            },
            Quote {
                side: Side::Buy,
                price: dec!(50),
                qty: dec!(1),
                level: 1,
            },
        ];
        let balances = Balances {
            base_free: dec!(1.0),
            base_locked: dec!(0.5),
            quote_free: dec!(110),
            quote_locked: dec!(0),
        };
        cap_to_balances(&mut quotes, &balances);
        let qty = |side, level| {
            quotes
                .iter()
                .find(|q| q.side == side && q.level == level)
                .map(|q| q.qty)
        };
        assert_eq!(qty(Side::Sell, 0), Some(dec!(1)));
        assert_eq!(qty(Side::Sell, 1), Some(dec!(0.5)));
        assert_eq!(qty(Side::Buy, 0), Some(dec!(1)));
        // 10 quote left at 50 -> 0.2
        assert_eq!(qty(Side::Buy, 1), Some(dec!(0.2)));
    }
}
