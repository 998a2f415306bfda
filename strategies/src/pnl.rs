//! Position and PnL from our own fills (average-cost method), plus the per-UTC-day equity
//! change the kill switch watches.

use crate::{Decimal, Fill, Side};

const DAY_MS: u64 = 86_400_000;
/// Prices, sizes and PnL up to 1e12: products up to 1e24, so each of the exact computation's
/// roundings (at its 28th significant digit) stays below 1e-3, well inside the floor's unit.
const FLOOR_MAX_MAGNITUDE: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PositionTracker {
    /// Signed base position from fills: positive long, negative short.
    position: Decimal,
    /// Average entry price of the open position (zero when flat).
    avg_cost: Decimal,
    /// Realized PnL in quote, before fees.
    realized: Decimal,
    fees: Decimal,
    volume_base: Decimal,
    volume_quote: Decimal,
    fills: u64,
    /// UTC day index (ms / 86.4e6) the day-start equity belongs to.
    day: Option<u64>,
    day_start_equity: Decimal,
    /// [`Self::daily_pnl_floor`]'s pieces for the current fills and day; `None` once either
    /// changes, rebuilt on the next call.
    floor: Option<DailyPnlFloor>,
}

/// The day's PnL is `constant + (mark − avg_cost) × position` with `constant` = realized −
/// fees − day start; these are its pieces rounded against us to few digits, so a lower bound
/// at any mark costs three narrow operations instead of four on the full-precision average.
#[derive(Debug, Clone, PartialEq)]
struct DailyPnlFloor {
    /// Rounded down to a whole unit, less one more unit: room for the rounding of the exact
    /// computation (at most a few units of its 28th digit, far below one unit here).
    constant: Decimal,
    /// Rounded to 4 places up while long, down while short: (mark − avg) × position can
    /// only shrink.
    avg_cost: Decimal,
}

impl PositionTracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_fill(&mut self, fill: &Fill) {
        // A fill that opens a new UTC day first closes the books on the previous one, valued
        // at this fill's price: the last mark we know at that moment.
        self.roll_day(fill.ts_ms, fill.price);
        let signed = match fill.side {
            Side::Buy => fill.qty,
            Side::Sell => -fill.qty,
        };
        let pos = self.position;
        if pos.is_zero() || pos.is_sign_positive() == signed.is_sign_positive() {
            // Opening or adding: new weighted average cost.
            let new_pos = pos + signed;
            self.avg_cost = (pos.abs() * self.avg_cost + fill.qty * fill.price) / new_pos.abs();
            self.position = new_pos;
        } else {
            // Reducing, possibly through zero into the other direction.
            let closed = fill.qty.min(pos.abs());
            let per_unit = if pos.is_sign_positive() {
                fill.price - self.avg_cost
            } else {
                self.avg_cost - fill.price
            };
            self.realized += per_unit * closed;
            self.position = pos + signed;
            if self.position.is_zero() {
                self.avg_cost = Decimal::ZERO;
            } else if self.position.is_sign_positive() != pos.is_sign_positive() {
                self.avg_cost = fill.price;
            }
        }
        self.fees += fill.fee_quote;
        self.volume_base += fill.qty;
        self.volume_quote += fill.qty * fill.price;
        self.fills += 1;
        self.floor = None;
    }

    pub fn position(&self) -> Decimal {
        self.position
    }

    pub fn avg_cost(&self) -> Decimal {
        self.avg_cost
    }

    /// Realized PnL in quote, before fees.
    pub fn realized(&self) -> Decimal {
        self.realized
    }

    pub fn fees(&self) -> Decimal {
        self.fees
    }

    pub fn volume_base(&self) -> Decimal {
        self.volume_base
    }

    pub fn volume_quote(&self) -> Decimal {
        self.volume_quote
    }

    pub fn fill_count(&self) -> u64 {
        self.fills
    }

    /// PnL of the open position if it were closed at `mark`.
    pub fn unrealized(&self, mark: Decimal) -> Decimal {
        (mark - self.avg_cost) * self.position
    }

    /// Realized + unrealized − fees.
    pub fn equity(&self, mark: Decimal) -> Decimal {
        self.realized + self.unrealized(mark) - self.fees
    }

    /// Equity change since the start of the current UTC day (negative = loss). The first call
    /// in a new day snapshots the day-start equity at `mark`.
    pub fn daily_pnl(&mut self, now_ms: u64, mark: Decimal) -> Decimal {
        self.roll_day(now_ms, mark);
        self.equity(mark) - self.day_start_equity
    }

    /// A lower bound of [`Self::daily_pnl`] at the same moment and mark, far cheaper: for a
    /// caller that only needs to know the day's loss is below a limit (the kill switch).
    /// Rolls the day exactly as `daily_pnl` does. `None` where the pieces are too large for
    /// the bound's one-unit margin to cover the exact computation's rounding.
    pub fn daily_pnl_floor(&mut self, now_ms: u64, mark: Decimal) -> Option<Decimal> {
        self.roll_day(now_ms, mark);
        if self.floor.is_none() {
            self.floor = self.build_floor();
        }
        let f = self.floor.as_ref()?;
        if mark.abs() > FLOOR_MAX_MAGNITUDE {
            return None;
        }
        Some(f.constant + (mark - f.avg_cost) * self.position)
    }

    fn build_floor(&self) -> Option<DailyPnlFloor> {
        use rust_decimal::RoundingStrategy::{ToNegativeInfinity, ToPositiveInfinity};
        let pieces = [
            self.realized,
            self.fees,
            self.day_start_equity,
            self.avg_cost,
            self.position,
        ];
        if pieces.iter().any(|p| p.abs() > FLOOR_MAX_MAGNITUDE) {
            return None;
        }
        let constant = (self.realized - self.fees - self.day_start_equity)
            .round_dp_with_strategy(0, ToNegativeInfinity)
            - Decimal::ONE;
        let against_us = if self.position.is_sign_negative() {
            ToNegativeInfinity
        } else {
            ToPositiveInfinity
        };
        Some(DailyPnlFloor {
            constant,
            avg_cost: self.avg_cost.round_dp_with_strategy(4, against_us),
        })
    }

    fn roll_day(&mut self, now_ms: u64, mark: Decimal) {
        let day = now_ms / DAY_MS;
        if self.day.is_none_or(|d| day > d) {
            self.day = Some(day);
            self.day_start_equity = self.equity(mark);
            self.floor = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn fill(side: Side, price: Decimal, qty: Decimal, fee: Decimal, ts_ms: u64) -> Fill {
        Fill {
            side,
            price,
            qty,
            fee_quote: fee,
            ts_ms,
        }
    }

    #[test]
    fn average_cost_realized_and_unrealized() {
        let mut t = PositionTracker::new();
        t.on_fill(&fill(Side::Buy, dec!(100), dec!(1), dec!(0.1), 0));
        t.on_fill(&fill(Side::Buy, dec!(103), dec!(2), dec!(0.2), 1));
        // avg = (100 + 206) / 3 = 102
        assert_eq!(t.position(), dec!(3));
        assert_eq!(t.avg_cost(), dec!(102));
        assert_eq!(t.unrealized(dec!(101)), dec!(-3));

        t.on_fill(&fill(Side::Sell, dec!(105), dec!(1.5), dec!(0.15), 2));
        // realized (105 - 102) * 1.5 = 4.5, avg unchanged on a reduction
        assert_eq!(t.realized(), dec!(4.5));
        assert_eq!(t.position(), dec!(1.5));
        assert_eq!(t.avg_cost(), dec!(102));

        // Through zero: close 1.5 at 99 (-4.5), open short 0.5 at 99.
        t.on_fill(&fill(Side::Sell, dec!(99), dec!(2), dec!(0.2), 3));
        assert_eq!(t.realized(), dec!(0));
        assert_eq!(t.position(), dec!(-0.5));
        assert_eq!(t.avg_cost(), dec!(99));
        assert_eq!(t.unrealized(dec!(98)), dec!(0.5));

        t.on_fill(&fill(Side::Buy, dec!(97), dec!(0.5), dec!(0.05), 4));
        assert_eq!(t.realized(), dec!(1));
        assert_eq!(t.position(), dec!(0));
        assert_eq!(t.avg_cost(), dec!(0));
        assert_eq!(t.fees(), dec!(0.70));
        assert_eq!(t.equity(dec!(1000)), dec!(0.30));
        assert_eq!(t.fill_count(), 5);
        assert_eq!(t.volume_base(), dec!(7));
        // 100 + 206 + 157.5 + 198 + 48.5
        assert_eq!(t.volume_quote(), dec!(710));
    }

    proptest::proptest! {
        /// The floor is a lower bound of the day's PnL at the same moment and mark, and
        /// taking it rolls the day exactly as the PnL does.
        #[test]
        fn the_daily_pnl_floor_is_below_the_daily_pnl(
            steps in proptest::collection::vec(
                (
                    proptest::bool::ANY,
                    1i64..9_000_000_000,
                    1i64..50_000,
                    0u64..3,
                    1i64..9_000_000_000,
                    0u32..6,
                ),
                1..16,
            ),
        ) {
            let (mut fast, mut exact) = (PositionTracker::new(), PositionTracker::new());
            let mut now_ms = 0u64;
            for (buy, price, qty, half_days, mark, mark_scale) in steps {
                now_ms += half_days * DAY_MS / 2;
                let price = Decimal::new(price, 2);
                let qty = Decimal::new(qty, 4);
                let fill = Fill {
                    side: if buy { Side::Buy } else { Side::Sell },
                    price,
                    qty,
                    fee_quote: price * qty * Decimal::new(1, 3),
                    ts_ms: now_ms,
                };
                fast.on_fill(&fill);
                exact.on_fill(&fill);
                now_ms += half_days * DAY_MS / 3;
                let mark = Decimal::new(mark, mark_scale);
                let floor = fast.daily_pnl_floor(now_ms, mark);
                let daily = exact.daily_pnl(now_ms, mark);
                if let Some(floor) = floor {
                    proptest::prop_assert!(floor <= daily, "{floor} > {daily}");
                }
                proptest::prop_assert_eq!(fast.daily_pnl(now_ms, mark), daily);
            }
        }
    }

    #[test]
    fn daily_pnl_floor_is_close_below() {
        let mut t = PositionTracker::new();
        t.on_fill(&fill(Side::Buy, dec!(100), dec!(3), dec!(0.1), 0));
        t.on_fill(&fill(Side::Buy, dec!(101), dec!(3), dec!(0.1), 1));
        let (floor, daily) = (t.daily_pnl_floor(2, dec!(99)), t.daily_pnl(2, dec!(99)));
        assert_eq!(daily, dec!(-9.2));
        assert!(floor.is_some_and(|f| f <= daily && f >= daily - dec!(2.1)));
    }

    #[test]
    fn daily_pnl_restarts_at_utc_midnight() {
        let mut t = PositionTracker::new();
        assert_eq!(t.daily_pnl(1_000, dec!(100)), dec!(0));
        t.on_fill(&fill(Side::Buy, dec!(100), dec!(2), dec!(0.2), 2_000));
        // mark 95: unrealized -10, fees -0.2
        assert_eq!(t.daily_pnl(3_000, dec!(95)), dec!(-10.2));
        // Next day at mark 95: the loss belongs to yesterday.
        assert_eq!(t.daily_pnl(DAY_MS + 1, dec!(95)), dec!(0));
        assert_eq!(t.daily_pnl(DAY_MS + 2, dec!(94)), dec!(-2));
    }
}
