//! Position and PnL from our own fills (average-cost method), plus the per-UTC-day equity
//! change the kill switch watches.

use crate::{Decimal, Fill, Side};

const DAY_MS: u64 = 86_400_000;

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

    fn roll_day(&mut self, now_ms: u64, mark: Decimal) {
        let day = now_ms / DAY_MS;
        if self.day.is_none_or(|d| day > d) {
            self.day = Some(day);
            self.day_start_equity = self.equity(mark);
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
