//! Position and PnL from our own fills (average-cost method), plus the per-UTC-day equity
//! change the kill switch watches.

use crate::quantize::round_dp;
use crate::{Decimal, Fill, Side};

const DAY_MS: u64 = 86_400_000;
/// Prices, sizes and PnL up to 1e12: products up to 1e24, so each of the exact computation's
/// roundings (at its 28th significant digit) stays below 1e-3, well inside the floor's unit.
const FLOOR_MAX_DIGITS: u32 = 12;
/// The mark's distance from the average cost, in units of 10^-4, within the same 1e12.
const FLOOR_MAX_MARK_DISTANCE: u128 = 10_000_000_000_000_000;

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
    /// [`Self::daily_loss_stays_under`]'s floor for the current fills and day; `None` once
    /// either changes, rebuilt on the next call.
    floor: Option<DailyPnlFloor>,
}

/// [`PositionTracker::daily_loss_stays_under`]'s floor of the day's PnL for one limit:
/// above the limit where `(mark − avg_cost) × position > threshold`.
#[derive(Debug, Clone, PartialEq)]
struct DailyPnlFloor {
    limit: [u8; 16],
    /// Rounded against us, in units of 10^-4.
    avg_cost: i128,
    /// In units such that the product with `avg_cost`'s is in those of `threshold`.
    position: i128,
    /// −(constant + limit).
    threshold: i128,
}

/// |x| <= 10^FLOOR_MAX_DIGITS, on the mantissa: a decimal comparison at another scale is slow.
fn within_floor_magnitude(x: Decimal) -> bool {
    10u128
        .checked_pow(FLOOR_MAX_DIGITS + x.scale())
        .is_none_or(|bound| x.mantissa().unsigned_abs() <= bound)
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

    /// True only when [`Self::daily_pnl`] at the same moment and mark is certainly above
    /// `-limit`: for a caller that needs the PnL only to see that the day's loss has not
    /// reached a limit (the kill switch), at a few integer operations a call. Rolls the day
    /// exactly as `daily_pnl` does. False when it cannot tell cheaply.
    pub fn daily_loss_stays_under(&mut self, now_ms: u64, mark: Decimal, limit: Decimal) -> bool {
        self.roll_day(now_ms, mark);
        if self
            .floor
            .as_ref()
            .is_none_or(|f| f.limit != limit.serialize())
        {
            self.floor = self.build_floor(limit);
        }
        let Some(f) = &self.floor else {
            return false;
        };
        let Some(up) = 4u32.checked_sub(mark.scale()) else {
            return false;
        };
        // |mantissa| < 2^96: times 10^4 fits.
        let d = mark.mantissa() * 10i128.pow(up) - f.avg_cost;
        d.unsigned_abs() < FLOOR_MAX_MARK_DISTANCE
            && d.checked_mul(f.position).is_some_and(|x| x > f.threshold)
    }

    /// The floor `constant + (mark − avg) × position` with the day's pieces rounded against
    /// us, as integers: `constant` = realized − fees − day start rounded down to a whole unit,
    /// less one more unit (room for the exact computation's rounding, at its 28th digit),
    /// and the average cost rounded to 4 places up while long, down while short.
    fn build_floor(&self, limit: Decimal) -> Option<DailyPnlFloor> {
        use rust_decimal::RoundingStrategy::{ToNegativeInfinity, ToPositiveInfinity};
        let pieces = [
            self.realized,
            self.fees,
            self.day_start_equity,
            self.avg_cost,
            self.position,
        ];
        if !pieces.iter().all(|p| within_floor_magnitude(*p)) {
            return None;
        }
        // The library's rounding of a full-precision decimal is the slow part of a fill.
        let constant = round_dp(
            self.realized - self.fees - self.day_start_equity,
            0,
            ToNegativeInfinity,
        ) - Decimal::ONE;
        let against_us = if self.position.is_sign_negative() {
            ToNegativeInfinity
        } else {
            ToPositiveInfinity
        };
        let avg = round_dp(self.avg_cost, 4, against_us);
        let pow = |n: u32| 10i128.checked_pow(n);
        // Everything in units of 10^-scale: (mark − avg) is in 10^-4, the position in its own.
        let (position_scale, limit_scale) = (self.position.scale(), limit.scale());
        let scale = (4 + position_scale).max(limit_scale);
        let threshold = constant
            .mantissa()
            .checked_mul(pow(scale.checked_sub(constant.scale())?)?)?
            .checked_add(limit.mantissa().checked_mul(pow(scale - limit_scale)?)?)?;
        Some(DailyPnlFloor {
            limit: limit.serialize(),
            avg_cost: avg.mantissa() * pow(4 - avg.scale())?,
            position: self
                .position
                .mantissa()
                .checked_mul(pow(scale - 4 - position_scale)?)?,
            threshold: -threshold,
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
        /// The floor never says the day's loss stays under a limit it has reached, and
        /// taking it rolls the day exactly as the PnL does.
        #[test]
        fn the_daily_pnl_floor_never_hides_a_kill(
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
            limit in 1i64..5_000_000,
            limit_scale in 0u32..4,
        ) {
            let limit = Decimal::new(limit, limit_scale);
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
                let stays_under = fast.daily_loss_stays_under(now_ms, mark, limit);
                let daily = exact.daily_pnl(now_ms, mark);
                if stays_under {
                    proptest::prop_assert!(daily > -limit, "{daily} <= -{limit}");
                }
                proptest::prop_assert_eq!(fast.daily_pnl(now_ms, mark), daily);
            }
        }
    }

    #[test]
    fn the_daily_pnl_floor_is_within_two_units() {
        let mut t = PositionTracker::new();
        t.on_fill(&fill(Side::Buy, dec!(100), dec!(3), dec!(0.1), 0));
        t.on_fill(&fill(Side::Buy, dec!(101), dec!(3), dec!(0.1), 1));
        assert_eq!(t.daily_pnl(2, dec!(99)), dec!(-9.2));
        assert!(t.daily_loss_stays_under(2, dec!(99), dec!(11.3)));
        assert!(!t.daily_loss_stays_under(2, dec!(99), dec!(9.2)));
        // Short: the average rounds down, and the loss grows with the mark.
        t.on_fill(&fill(Side::Sell, dec!(100), dec!(10), dec!(0.1), 3));
        assert_eq!(t.daily_pnl(4, dec!(101.5)), dec!(-9.3));
        assert!(t.daily_loss_stays_under(4, dec!(101.5), dec!(11.4)));
        assert!(!t.daily_loss_stays_under(4, dec!(101.5), dec!(9.3)));
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
