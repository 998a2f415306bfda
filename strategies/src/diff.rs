//! Desired quotes vs live orders -> the smallest set of place/cancel actions.
//!
//! Live orders are matched to desired quotes by (side, level). A match within the refresh
//! tolerance is left alone so it keeps its queue position; everything else is cancelled and
//! re-placed. Cancels come first in the output so the balance they free is available to the
//! places that follow.

use crate::exact::{self, Fixed, Wide};
use crate::{Decimal, LiveOrder, MarketSnapshot, Quote, RefreshPolicy, Side, bps};
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// No desired quote on this side and level any more.
    NotDesired,
    /// The desired price moved beyond the refresh tolerance.
    Repriced,
    /// The desired size shrank below what is resting.
    Resized,
    /// The market moved so the order now sits closer to the mid than `min_spread_bps`.
    InsideMinSpread,
    /// Older than `max_order_age_ms`.
    Aged,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::NotDesired => "not_desired",
            CancelReason::Repriced => "repriced",
            CancelReason::Resized => "resized",
            CancelReason::InsideMinSpread => "inside_min_spread",
            CancelReason::Aged => "aged",
        }
    }
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Place(Quote),
    Cancel { id: u64, reason: CancelReason },
}

/// Whether an order at `price` sits closer to the mid than `min_distance` (= min spread × mid).
/// Compared as distance < bps·mid: no division on the hot path.
fn inside_min_spread(side: Side, price: Decimal, mid: Decimal, min_distance: Decimal) -> bool {
    let distance = match side {
        Side::Buy => mid - price,
        Side::Sell => price - mid,
    };
    distance < min_distance
}

/// `tolerance` is the refresh tolerance as a fraction (bps already applied).
fn within_tolerance(live: Decimal, desired: Decimal, tolerance: Decimal) -> bool {
    if desired.is_zero() {
        return live == desired;
    }
    (live - desired).abs() <= tolerance * desired.abs()
}

/// The min-spread test of one decision, with the mid and min distance read once. For grid
/// prices Decimal's min distance and order distance are exact, so its comparison is the exact
/// one, which integers give without Decimal's out-of-line calls; anything else takes the
/// Decimal test.
enum MinSpread {
    Exact { mid: Fixed, min_distance: Wide },
    Decimal { mid: Decimal, min_distance: Decimal },
}

impl MinSpread {
    fn new(mid: Decimal, min_spread_bps: Decimal) -> MinSpread {
        let exact = Fixed::of(mid).and_then(|mid_f| {
            let min_distance = Wide::product(Fixed::of(min_spread_bps)?.bps()?, mid_f)?;
            Some(MinSpread::Exact {
                mid: mid_f,
                min_distance,
            })
        });
        exact.unwrap_or_else(|| MinSpread::Decimal {
            mid,
            min_distance: bps(min_spread_bps) * mid,
        })
    }

    fn inside(&self, side: Side, price: Decimal, mid: Decimal, min_spread_bps: Decimal) -> bool {
        match *self {
            MinSpread::Exact {
                mid: mid_f,
                min_distance,
            } => {
                let distance = Fixed::of(price).and_then(|p| match side {
                    Side::Buy => Wide::difference(mid_f, p),
                    Side::Sell => Wide::difference(p, mid_f),
                });
                match distance.and_then(|d| d.cmp(min_distance)) {
                    Some(o) => o == Ordering::Less,
                    None => inside_min_spread(side, price, mid, bps(min_spread_bps) * mid),
                }
            }
            MinSpread::Decimal { mid, min_distance } => {
                inside_min_spread(side, price, mid, min_distance)
            }
        }
    }
}

/// [`within_tolerance`] on integers when the prices sit on a grid: |live − desired| against
/// tolerance × |desired|, both exact, so the same answer Decimal gives. `tolerance` is the
/// policy's, bps applied; `None` when Decimal would not hold it exactly.
fn within_tolerance_exact(
    live: Decimal,
    desired: Decimal,
    tolerance: Option<Fixed>,
) -> Option<bool> {
    let (l, d) = (Fixed::of(live)?, Fixed::of(desired)?);
    if d.m == 0 {
        return Some(l.m == 0);
    }
    let distance = Wide::difference(l, d)?.abs();
    let allowed = Wide::product(tolerance?, Fixed { m: d.m.abs(), ..d })?;
    Some(distance.cmp(allowed)? != Ordering::Greater)
}

pub fn diff(
    desired: &[Quote],
    live: &[LiveOrder],
    policy: &RefreshPolicy,
    market: &MarketSnapshot,
    now_ms: u64,
) -> Vec<Action> {
    let mut out = Vec::new();
    diff_into(desired, live, policy, market.mid(), now_ms, &mut out);
    out
}

/// Which desired quotes a live order already covers: a bit set for up to 64 quotes (every
/// real configuration), a vector beyond.
struct Matched {
    bits: u64,
    spill: Vec<bool>,
}

impl Matched {
    fn new(n: usize) -> Self {
        Matched {
            bits: 0,
            spill: if n > 64 { vec![false; n] } else { Vec::new() },
        }
    }

    fn get(&self, i: usize) -> bool {
        if self.spill.is_empty() {
            self.bits & (1 << i) != 0
        } else {
            self.spill[i]
        }
    }

    fn set(&mut self, i: usize) {
        if self.spill.is_empty() {
            self.bits |= 1 << i;
        } else {
            self.spill[i] = true;
        }
    }
}

/// [`diff`] into the caller's buffer (cleared first), with the market's mid already computed
/// (`market.mid()`), for a hot loop that reuses both.
pub fn diff_into(
    desired: &[Quote],
    live: &[LiveOrder],
    policy: &RefreshPolicy,
    mid: Option<Decimal>,
    now_ms: u64,
    out: &mut Vec<Action>,
) {
    let tolerance = Fixed::of(policy.tolerance_bps).and_then(Fixed::bps);
    let min_spread = mid.map(|mid| (mid, MinSpread::new(mid, policy.min_spread_bps)));
    diff_with(
        desired,
        live,
        policy,
        now_ms,
        out,
        Tests {
            inside_min_spread: |order: &LiveOrder| {
                min_spread.as_ref().is_some_and(|(mid, m)| {
                    m.inside(order.side, order.price, *mid, policy.min_spread_bps)
                })
            },
            within_tolerance: |live: Decimal, desired: Decimal| {
                within_tolerance_exact(live, desired, tolerance)
                    .unwrap_or_else(|| within_tolerance(live, desired, bps(policy.tolerance_bps)))
            },
            larger: |live: Decimal, desired: Decimal| {
                exact::cmp(live, desired) == Ordering::Greater
            },
        },
    );
}

/// The three price and size tests the diff makes of each live order: integer ones in
/// [`diff_into`], the Decimal ones they must reproduce in the tests.
struct Tests<I, W, L> {
    inside_min_spread: I,
    within_tolerance: W,
    larger: L,
}

fn diff_with<I, W, L>(
    desired: &[Quote],
    live: &[LiveOrder],
    policy: &RefreshPolicy,
    now_ms: u64,
    out: &mut Vec<Action>,
    tests: Tests<I, W, L>,
) where
    I: Fn(&LiveOrder) -> bool,
    W: Fn(Decimal, Decimal) -> bool,
    L: Fn(Decimal, Decimal) -> bool,
{
    out.clear();
    let mut matched = Matched::new(desired.len());
    for order in live {
        let aged = policy
            .max_order_age_ms
            .is_some_and(|max| now_ms.saturating_sub(order.placed_ms) >= max);
        if aged {
            out.push(Action::Cancel {
                id: order.id,
                reason: CancelReason::Aged,
            });
            continue;
        }
        if (tests.inside_min_spread)(order) {
            out.push(Action::Cancel {
                id: order.id,
                reason: CancelReason::InsideMinSpread,
            });
            continue;
        }
        let slot = desired
            .iter()
            .enumerate()
            .position(|(i, q)| !matched.get(i) && q.side == order.side && q.level == order.level);
        let reason = match slot {
            None => CancelReason::NotDesired,
            Some(i) => {
                // The slot is consumed either way: kept, or replaced by this desired quote.
                let q = &desired[i];
                if !(tests.within_tolerance)(order.price, q.price) {
                    CancelReason::Repriced
                } else if (tests.larger)(order.qty, q.qty) {
                    CancelReason::Resized
                } else {
                    matched.set(i);
                    continue;
                }
            }
        };
        out.push(Action::Cancel {
            id: order.id,
            reason,
        });
    }
    for (i, q) in desired.iter().enumerate() {
        if !matched.get(i) {
            out.push(Action::Place(q.clone()));
        }
    }
}

/// The diff on Decimal tests only, as it was before the integer ones: what they must
/// reproduce exactly.
#[cfg(test)]
fn diff_into_decimal(
    desired: &[Quote],
    live: &[LiveOrder],
    policy: &RefreshPolicy,
    mid: Option<Decimal>,
    now_ms: u64,
    out: &mut Vec<Action>,
) {
    let tolerance = bps(policy.tolerance_bps);
    let min_distance = mid.map(|mid| bps(policy.min_spread_bps) * mid);
    diff_with(
        desired,
        live,
        policy,
        now_ms,
        out,
        Tests {
            inside_min_spread: |order: &LiveOrder| match (mid, min_distance) {
                (Some(mid), Some(min_distance)) => {
                    inside_min_spread(order.side, order.price, mid, min_distance)
                }
                _ => false,
            },
            within_tolerance: |live: Decimal, desired: Decimal| {
                within_tolerance(live, desired, tolerance)
            },
            larger: |live: Decimal, desired: Decimal| live > desired,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn market() -> MarketSnapshot {
        // mid 100.00
        MarketSnapshot {
            best_bid: dec!(99.99),
            best_bid_qty: dec!(1),
            best_ask: dec!(100.01),
            best_ask_qty: dec!(1),
            last: None,
            ts_ms: 0,
        }
    }

    fn policy() -> RefreshPolicy {
        RefreshPolicy {
            tolerance_bps: dec!(2),
            max_order_age_ms: Some(60_000),
            min_spread_bps: dec!(5),
        }
    }

    fn quote(side: Side, price: Decimal, level: u32) -> Quote {
        Quote {
            side,
            price,
            qty: dec!(1),
            level,
        }
    }

    fn live(id: u64, side: Side, price: Decimal, level: u32, placed_ms: u64) -> LiveOrder {
        LiveOrder {
            id,
            side,
            price,
            qty: dec!(1),
            placed_ms,
            level,
        }
    }

    #[test]
    fn empty_book_places_everything() {
        let desired = [
            quote(Side::Buy, dec!(99.90), 0),
            quote(Side::Sell, dec!(100.10), 0),
        ];
        let actions = diff(&desired, &[], &policy(), &market(), 0);
        assert_eq!(
            actions,
            vec![
                Action::Place(desired[0].clone()),
                Action::Place(desired[1].clone())
            ]
        );
    }

    #[test]
    fn within_tolerance_is_kept_beyond_is_replaced() {
        // 2 bps of 99.90 = 0.01998: 99.88 is 0.02 away (replace), 99.89 is 0.01 away (keep).
        let desired = [
            quote(Side::Buy, dec!(99.90), 0),
            quote(Side::Sell, dec!(100.10), 0),
        ];
        let live_orders = [
            live(1, Side::Buy, dec!(99.89), 0, 0),
            live(2, Side::Sell, dec!(100.13), 0, 0),
        ];
        let actions = diff(&desired, &live_orders, &policy(), &market(), 1_000);
        assert_eq!(
            actions,
            vec![
                Action::Cancel {
                    id: 2,
                    reason: CancelReason::Repriced
                },
                Action::Place(desired[1].clone()),
            ]
        );
    }

    #[test]
    fn aged_and_inside_min_spread_orders_are_cancelled() {
        let desired = [
            quote(Side::Buy, dec!(99.90), 0),
            quote(Side::Sell, dec!(100.10), 0),
        ];
        // Ask at 100.04 is 4 bps from the 100.00 mid: inside the 5 bps minimum.
        let live_orders = [
            live(1, Side::Buy, dec!(99.90), 0, 0),
            live(2, Side::Sell, dec!(100.04), 0, 50_000),
        ];
        let actions = diff(&desired, &live_orders, &policy(), &market(), 60_000);
        assert_eq!(
            actions,
            vec![
                Action::Cancel {
                    id: 1,
                    reason: CancelReason::Aged
                },
                Action::Cancel {
                    id: 2,
                    reason: CancelReason::InsideMinSpread
                },
                Action::Place(desired[0].clone()),
                Action::Place(desired[1].clone()),
            ]
        );
    }

    #[test]
    fn undesired_duplicates_and_oversized_orders_are_cancelled() {
        let mut small = quote(Side::Buy, dec!(99.90), 0);
        small.qty = dec!(0.5);
        let desired = [small.clone()];
        let live_orders = [
            live(1, Side::Buy, dec!(99.90), 0, 0),
            live(2, Side::Sell, dec!(100.10), 0, 0),
        ];
        let actions = diff(&desired, &live_orders, &policy(), &market(), 0);
        assert_eq!(
            actions,
            vec![
                Action::Cancel {
                    id: 1,
                    reason: CancelReason::Resized
                },
                Action::Cancel {
                    id: 2,
                    reason: CancelReason::NotDesired
                },
                Action::Place(small),
            ]
        );

        // Two live orders on the same slot: the second one has nothing left to match.
        let desired = [quote(Side::Buy, dec!(99.90), 0)];
        let live_orders = [
            live(1, Side::Buy, dec!(99.90), 0, 0),
            live(2, Side::Buy, dec!(99.90), 0, 0),
        ];
        let actions = diff(&desired, &live_orders, &policy(), &market(), 0);
        assert_eq!(
            actions,
            vec![Action::Cancel {
                id: 2,
                reason: CancelReason::NotDesired
            }]
        );
    }

    #[test]
    fn partially_filled_order_at_the_right_price_is_kept() {
        let desired = [quote(Side::Buy, dec!(99.90), 0)];
        let mut partial = live(1, Side::Buy, dec!(99.90), 0, 0);
        partial.qty = dec!(0.4);
        assert!(diff(&desired, &[partial], &policy(), &market(), 0).is_empty());
    }

    mod exact_paths {
        use super::super::*;
        use crate::exact::arb::{decimal, negative_zero, price, qty};
        use proptest::prelude::*;
        use rust_decimal_macros::dec;

        type DiffInto =
            fn(&[Quote], &[LiveOrder], &RefreshPolicy, Option<Decimal>, u64, &mut Vec<Action>);

        fn side() -> impl Strategy<Value = Side> {
            prop_oneof![Just(Side::Buy), Just(Side::Sell)]
        }

        fn bps_value() -> impl Strategy<Value = Decimal> {
            prop_oneof![
                4 => (0i64..=2_000, 0u32..=2).prop_map(|(m, s)| Decimal::new(m, s)),
                1 => Just(Decimal::ZERO),
                1 => decimal(),
            ]
        }

        fn policy() -> impl Strategy<Value = RefreshPolicy> {
            (bps_value(), bps_value(), proptest::option::of(0u64..100)).prop_map(
                |(tolerance_bps, min_spread_bps, max_order_age_ms)| RefreshPolicy {
                    tolerance_bps,
                    max_order_age_ms,
                    min_spread_bps,
                },
            )
        }

        /// A live order near a desired quote, on its slot or another, by a few grid units in
        /// either direction (which lands ties and near-ties on the tolerance).
        fn live_near(desired: Vec<Quote>) -> impl Strategy<Value = (Vec<Quote>, Vec<LiveOrder>)> {
            let n = desired.len().max(1);
            let order = (
                0..n,
                -30i64..=30,
                0u32..=3,
                prop_oneof![Just(None), qty().prop_map(Some)],
                side(),
                0u32..3,
                any::<bool>(),
                price(),
                0u64..200,
            );
            proptest::collection::vec(order, 0..6).prop_map(move |orders| {
                let live = orders
                    .into_iter()
                    .enumerate()
                    .map(
                        |(id, (i, units, dp, qty, side, level, free, p, placed_ms))| match desired
                            .get(i)
                            .filter(|_| !free)
                        {
                            Some(q) => LiveOrder {
                                id: id as u64,
                                side: q.side,
                                price: q
                                    .price
                                    .checked_add(Decimal::new(units, dp))
                                    .unwrap_or(q.price),
                                qty: qty.unwrap_or(q.qty),
                                placed_ms,
                                level: q.level,
                            },
                            None => LiveOrder {
                                id: id as u64,
                                side,
                                price: p,
                                qty: qty.unwrap_or(Decimal::ONE),
                                placed_ms,
                                level,
                            },
                        },
                    )
                    .collect();
                (desired.clone(), live)
            })
        }

        fn book() -> impl Strategy<Value = (Vec<Quote>, Vec<LiveOrder>)> {
            let quote =
                (side(), price(), qty(), 0u32..3).prop_map(|(side, price, qty, level)| Quote {
                    side,
                    price,
                    qty,
                    level,
                });
            proptest::collection::vec(quote, 0..6).prop_flat_map(live_near)
        }

        fn mid() -> impl Strategy<Value = Option<Decimal>> {
            prop_oneof![
                6 => (5_999_000i64..6_001_000, 2u32..=3).prop_map(|(m, s)| {
                    Some(Decimal::new(if s == 3 { m * 10 + 5 } else { m }, s))
                }),
                1 => Just(None),
                1 => decimal().prop_map(Some),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn diff_is_the_decimal_diff(
                (desired, live) in book(),
                policy in policy(),
                mid in mid(),
                now_ms in 0u64..300,
            ) {
                // Past Decimal's range both must panic (overflow) alike.
                let run = |f: DiffInto| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut out = Vec::new();
                        f(&desired, &live, &policy, mid, now_ms, &mut out);
                        out
                    }))
                    .ok()
                };
                prop_assert_eq!(run(diff_into), run(diff_into_decimal));
            }

            #[test]
            fn tolerance_ties_and_near_ties_match_decimal(
                desired in price(),
                tolerance_bps in bps_value(),
                nudge in -2i64..=2,
                dp in 0u32..=8,
                sign in any::<bool>(),
            ) {
                let tolerance = bps(tolerance_bps);
                let edge = tolerance.checked_mul(desired.abs()).unwrap_or(Decimal::ZERO);
                let edge = if sign { -edge } else { edge };
                let Some(live) = desired
                    .checked_add(edge)
                    .and_then(|l| l.checked_add(Decimal::new(nudge, dp)))
                else {
                    return Ok(());
                };
                let fast = Fixed::of(tolerance_bps).and_then(Fixed::bps);
                if let Some(ours) = within_tolerance_exact(live, desired, fast) {
                    prop_assert_eq!(ours, within_tolerance(live, desired, tolerance));
                }
            }

            #[test]
            fn min_spread_ties_match_decimal(
                mid in mid(),
                min_spread_bps in bps_value(),
                side in side(),
                nudge in -2i64..=2,
                dp in 0u32..=8,
            ) {
                let Some(mid) = mid else { return Ok(()) };
                let Some(min_distance) = bps(min_spread_bps).checked_mul(mid) else {
                    return Ok(());
                };
                let edge = match side {
                    Side::Buy => mid.checked_sub(min_distance),
                    Side::Sell => mid.checked_add(min_distance),
                };
                let Some(price) = edge.and_then(|e| e.checked_add(Decimal::new(nudge, dp))) else {
                    return Ok(());
                };
                let ours = MinSpread::new(mid, min_spread_bps).inside(side, price, mid, min_spread_bps);
                prop_assert_eq!(ours, inside_min_spread(side, price, mid, min_distance));
            }
        }

        #[test]
        fn zeros_of_either_sign_are_equal() {
            let z = negative_zero(3);
            let tol = Fixed::of(dec!(2)).and_then(Fixed::bps);
            assert_eq!(within_tolerance_exact(z, Decimal::ZERO, tol), Some(true));
            assert_eq!(within_tolerance_exact(Decimal::ZERO, z, tol), Some(true));
            assert_eq!(within_tolerance_exact(dec!(0.01), z, tol), Some(false));
        }

        #[test]
        fn an_exact_tie_is_within_tolerance() {
            // 2 bps of 100.00 is exactly 0.02.
            let tol = Fixed::of(dec!(2)).and_then(Fixed::bps);
            assert_eq!(
                within_tolerance_exact(dec!(100.02), dec!(100.00), tol),
                Some(true)
            );
            assert_eq!(
                within_tolerance_exact(dec!(99.98), dec!(100), tol),
                Some(true)
            );
            assert_eq!(
                within_tolerance_exact(dec!(100.021), dec!(100), tol),
                Some(false)
            );
        }
    }
}
