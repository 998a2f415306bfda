//! Desired quotes vs live orders -> the smallest set of place/cancel actions.
//!
//! Live orders are matched to desired quotes by (side, level). A match within the refresh
//! tolerance is left alone so it keeps its queue position; everything else is cancelled and
//! re-placed. Cancels come first in the output so the balance they free is available to the
//! places that follow.

use crate::{Decimal, LiveOrder, MarketSnapshot, Quote, RefreshPolicy, Side, bps};

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

/// Whether the order sits closer to the mid than `min_spread_bps` on its passive side (or has
/// drifted past the mid). Compared as distance < bps·mid: no division on the hot path.
/// Whether an order at `price` sits closer to the mid than `min_distance` (= min spread × mid).
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
    out.clear();
    let tolerance = bps(policy.tolerance_bps);
    let min_distance = mid.map(|mid| bps(policy.min_spread_bps) * mid);
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
        if let (Some(mid), Some(min_distance)) = (mid, min_distance)
            && inside_min_spread(order.side, order.price, mid, min_distance)
        {
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
                if !within_tolerance(order.price, q.price, tolerance) {
                    CancelReason::Repriced
                } else if order.qty > q.qty {
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
}
