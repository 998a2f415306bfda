//! Price-time-priority limit order book for one symbol.
//!
//! Prices are integer ticks (price = ticks * tickSize), so levels compare and hash
//! cheaply and no price can be off-tick; quantities stay exact `Decimal`s.
//! The book only knows ids, owners and remaining quantities: order records, balances
//! and events live in the exchange, so this file stays a pure, fast data structure.

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, VecDeque};

pub type OrderId = u64;
/// Account index of an order's owner; `MARKET_OWNER` is the simulated rest of the market.
pub type Owner = u32;
pub const MARKET_OWNER: Owner = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resting {
    pub id: OrderId,
    pub owner: Owner,
    pub qty: Decimal,
}

#[derive(Debug, Default)]
struct Level {
    orders: VecDeque<Resting>,
    total: Decimal,
}

/// One execution against a resting (maker) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Fill {
    pub maker_id: OrderId,
    pub maker_owner: Owner,
    pub price_ticks: i64,
    pub qty: Decimal,
    /// The maker order has no quantity left and was removed from the book.
    pub maker_done: bool,
}

#[derive(Debug, Default)]
pub struct Book {
    bids: BTreeMap<i64, Level>,
    asks: BTreeMap<i64, Level>,
    /// Keyed by our own sequential ids, never by outside input: a fast non-keyed hash (SipHash
    /// was a measurable part of backtest matching).
    index: FxHashMap<OrderId, (Side, i64)>,
}

impl Book {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains(&self, id: OrderId) -> bool {
        self.index.contains_key(&id)
    }

    /// Best bid as (price ticks, total quantity at that level).
    pub fn best_bid(&self) -> Option<(i64, Decimal)> {
        self.bids.last_key_value().map(|(p, l)| (*p, l.total))
    }

    pub fn best_ask(&self) -> Option<(i64, Decimal)> {
        self.asks.first_key_value().map(|(p, l)| (*p, l.total))
    }

    /// The best `limit` price levels of one side (price ticks, total quantity), best first.
    pub fn levels(&self, side: Side, limit: usize) -> Vec<(i64, Decimal)> {
        match side {
            Side::Buy => self
                .bids
                .iter()
                .rev()
                .take(limit)
                .map(|(p, l)| (*p, l.total))
                .collect(),
            Side::Sell => self
                .asks
                .iter()
                .take(limit)
                .map(|(p, l)| (*p, l.total))
                .collect(),
        }
    }

    /// True if a `side` order limited at `price` would trade on arrival.
    pub fn would_cross(&self, side: Side, price: i64) -> bool {
        match side {
            Side::Buy => self.best_ask().is_some_and(|(a, _)| a <= price),
            Side::Sell => self.best_bid().is_some_and(|(b, _)| b >= price),
        }
    }

    /// Quantity available to a `side` taker up to `limit` (None = any price), capped at `want`.
    pub fn available(&self, side: Side, limit: Option<i64>, want: Decimal) -> Decimal {
        let mut got = Decimal::ZERO;
        let mut add = |p: i64, l: &Level| -> bool {
            if !price_ok(side, p, limit) {
                return false;
            }
            got += l.total;
            got < want
        };
        match side {
            Side::Buy => {
                for (p, l) in self.asks.iter() {
                    if !add(*p, l) {
                        break;
                    }
                }
            }
            Side::Sell => {
                for (p, l) in self.bids.iter().rev() {
                    if !add(*p, l) {
                        break;
                    }
                }
            }
        }
        got.min(want)
    }

    /// Levels a `side` taker would consume for `want` (price ticks, qty), without changing the book.
    pub fn sweep_plan(&self, side: Side, limit: Option<i64>, want: Decimal) -> Vec<(i64, Decimal)> {
        let mut plan = Vec::new();
        let mut left = want;
        let levels: Box<dyn Iterator<Item = (&i64, &Level)>> = match side {
            Side::Buy => Box::new(self.asks.iter()),
            Side::Sell => Box::new(self.bids.iter().rev()),
        };
        for (p, l) in levels {
            if left.is_zero() || !price_ok(side, *p, limit) {
                break;
            }
            let take = l.total.min(left);
            plan.push((*p, take));
            left -= take;
        }
        plan
    }

    /// Matches an incoming `side` order for `qty` against the opposite side, best price first
    /// and oldest first within a price, never beyond `limit`. Returns the unfilled quantity.
    pub fn match_incoming(
        &mut self,
        side: Side,
        limit: Option<i64>,
        qty: Decimal,
        fills: &mut Vec<Fill>,
    ) -> Decimal {
        let mut left = qty;
        while left > Decimal::ZERO {
            let entry = match side {
                Side::Buy => self.asks.first_entry(),
                Side::Sell => self.bids.last_entry(),
            };
            let Some(mut entry) = entry else { break };
            let price = *entry.key();
            if !price_ok(side, price, limit) {
                break;
            }
            let level = entry.get_mut();
            while left > Decimal::ZERO {
                let Some(front) = level.orders.front_mut() else {
                    break;
                };
                let take = front.qty.min(left);
                front.qty -= take;
                left -= take;
                level.total -= take;
                let done = front.qty.is_zero();
                fills.push(Fill {
                    maker_id: front.id,
                    maker_owner: front.owner,
                    price_ticks: price,
                    qty: take,
                    maker_done: done,
                });
                if done {
                    let id = front.id;
                    level.orders.pop_front();
                    self.index.remove(&id);
                }
            }
            if level.orders.is_empty() {
                entry.remove();
            }
        }
        left
    }

    /// Adds a resting order at the back of its price level. The caller guarantees it does not cross.
    pub fn insert(&mut self, side: Side, price: i64, order: Resting) {
        debug_assert!(!self.would_cross(side, price), "inserting a crossing order");
        self.index.insert(order.id, (side, price));
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = book.entry(price).or_default();
        level.total += order.qty;
        level.orders.push_back(order);
    }

    /// Removes a resting order, returning what was left of it.
    pub fn cancel(&mut self, id: OrderId) -> Option<Resting> {
        let (side, price) = self.index.remove(&id)?;
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = book.get_mut(&price)?;
        let pos = level.orders.iter().position(|o| o.id == id)?;
        let removed = level.orders.remove(pos)?;
        level.total -= removed.qty;
        if level.orders.is_empty() {
            book.remove(&price);
        }
        Some(removed)
    }

    /// Ids of every resting order of `owner`.
    pub fn orders_of(&self, owner: Owner) -> Vec<OrderId> {
        self.bids
            .values()
            .chain(self.asks.values())
            .flat_map(|l| l.orders.iter())
            .filter(|o| o.owner == owner)
            .map(|o| o.id)
            .collect()
    }

    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.index.clear();
    }

    /// Invariant check used by tests: not crossed, level totals consistent, index complete.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let (Some((b, _)), Some((a, _))) = (self.best_bid(), self.best_ask())
            && b >= a
        {
            return Err(format!("book crossed: bid {b} >= ask {a}"));
        }
        let mut count = 0;
        for (side, book) in [(Side::Buy, &self.bids), (Side::Sell, &self.asks)] {
            for (p, l) in book {
                let sum: Decimal = l.orders.iter().map(|o| o.qty).sum();
                if sum != l.total || l.orders.is_empty() {
                    return Err(format!("level {p} total {} != {sum}", l.total));
                }
                for o in &l.orders {
                    count += 1;
                    if o.qty <= Decimal::ZERO {
                        return Err(format!("order {} has qty {}", o.id, o.qty));
                    }
                    if self.index.get(&o.id) != Some(&(side, *p)) {
                        return Err(format!("order {} missing from index", o.id));
                    }
                }
            }
        }
        if count != self.index.len() {
            return Err(format!(
                "index has {} entries, book {count}",
                self.index.len()
            ));
        }
        Ok(())
    }
}

fn price_ok(side: Side, price: i64, limit: Option<i64>) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => price <= l,
        (Side::Sell, Some(l)) => price >= l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn r(id: OrderId, qty: Decimal) -> Resting {
        Resting { id, owner: 1, qty }
    }

    #[test]
    fn price_then_time_priority() {
        let mut b = Book::new();
        b.insert(Side::Sell, 101, r(1, dec!(1)));
        b.insert(Side::Sell, 100, r(2, dec!(1)));
        b.insert(Side::Sell, 100, r(3, dec!(2)));
        let mut fills = Vec::new();
        let left = b.match_incoming(Side::Buy, Some(100), dec!(2.5), &mut fills);
        assert_eq!(left, dec!(0));
        assert_eq!(fills.len(), 2);
        assert_eq!(
            (fills[0].maker_id, fills[0].qty, fills[0].maker_done),
            (2, dec!(1), true)
        );
        assert_eq!(
            (fills[1].maker_id, fills[1].qty, fills[1].maker_done),
            (3, dec!(1.5), false)
        );
        assert_eq!(b.best_ask(), Some((100, dec!(0.5))));
        fills.clear();
        // Limit stops at 100: the 101 level is untouched.
        let left = b.match_incoming(Side::Buy, Some(100), dec!(5), &mut fills);
        assert_eq!(left, dec!(4.5));
        assert_eq!(b.best_ask(), Some((101, dec!(1))));
        b.check_invariants().unwrap();
    }

    #[test]
    fn cancel_from_middle_of_level() {
        let mut b = Book::new();
        for id in 1..=3 {
            b.insert(Side::Buy, 50, r(id, dec!(1)));
        }
        assert_eq!(b.cancel(2).map(|o| o.qty), Some(dec!(1)));
        assert_eq!(b.cancel(2), None);
        assert_eq!(b.best_bid(), Some((50, dec!(2))));
        let mut fills = Vec::new();
        b.match_incoming(Side::Sell, None, dec!(2), &mut fills);
        assert_eq!(
            fills.iter().map(|f| f.maker_id).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(b.is_empty());
        b.check_invariants().unwrap();
    }

    #[test]
    fn available_and_plan() {
        let mut b = Book::new();
        b.insert(Side::Buy, 99, r(1, dec!(1)));
        b.insert(Side::Buy, 98, r(2, dec!(2)));
        assert_eq!(b.available(Side::Sell, Some(99), dec!(5)), dec!(1));
        assert_eq!(b.available(Side::Sell, None, dec!(2)), dec!(2));
        assert_eq!(
            b.sweep_plan(Side::Sell, None, dec!(2)),
            vec![(99, dec!(1)), (98, dec!(1))]
        );
        assert!(b.would_cross(Side::Sell, 99));
        assert!(!b.would_cross(Side::Sell, 100));
    }
}
