//! Reconciliation: fills counted exactly once (by trade id), and balances checked against
//! every account event the exchange sends.
//!
//! The exchange is the source of truth: the balances the daemon reports are always the
//! exchange's latest values. What we check is whether the exchange's balance changes are
//! explained by the fills and transfers we know about. Each account event is a checkpoint
//! `(asset, exchange time u, total)`. Between two checkpoints of an asset, the change of
//! `free + locked` must equal the sum of our deltas (fills, fees, transfers) whose exchange
//! time falls in between. Deltas carry exchange time, so an executionReport arriving after
//! its account event still lands in the right interval; a checkpoint is judged only after
//! a short grace period for such late arrivals.

use std::collections::{BTreeMap, HashSet, VecDeque};

use rust_decimal::Decimal;

/// Fills seen, per symbol, by exchange trade id.
#[derive(Debug, Default)]
pub struct TradeDedup {
    symbols: BTreeMap<String, SymbolTrades>,
}

#[derive(Debug, Default)]
struct SymbolTrades {
    seen: HashSet<i64>,
    order: VecDeque<i64>,
    max_id: Option<i64>,
}

/// Trade ids remembered per symbol. A duplicate can only come from a race between the
/// stream and a resync's myTrades (which asks from the last id seen on), i.e. among the
/// last few fills; 4,096 is four full myTrades pages. The memory is held for the life of
/// the process: at 100,000 it grew by ~35 bytes a fill toward 3.5 MB per market, which
/// the soak saw as steady growth and 100 markets could not afford.
const TRADE_MEMORY: usize = 4_096;

impl TradeDedup {
    /// True the first time a trade id is seen for a symbol.
    pub fn first_sight(&mut self, symbol: &str, trade_id: i64) -> bool {
        let s = match self.symbols.get_mut(symbol) {
            Some(s) => s,
            None => self.symbols.entry(symbol.to_owned()).or_default(),
        };
        if let Some(max) = s.max_id
            && s.order.len() >= TRADE_MEMORY
            && trade_id < s.order.front().copied().unwrap_or(max)
        {
            // Older than anything remembered: long since counted.
            return false;
        }
        if !s.seen.insert(trade_id) {
            return false;
        }
        s.order.push_back(trade_id);
        if s.order.len() > TRADE_MEMORY
            && let Some(old) = s.order.pop_front()
        {
            s.seen.remove(&old);
        }
        s.max_id = Some(s.max_id.map_or(trade_id, |m| m.max(trade_id)));
        true
    }

    /// The highest trade id seen: a resync asks myTrades from here.
    pub fn last_trade_id(&self, symbol: &str) -> Option<i64> {
        self.symbols.get(symbol).and_then(|s| s.max_id)
    }

    /// Seeds the high-water mark (e.g. from a ledger or a startup myTrades call) without
    /// counting anything.
    pub fn mark_seen(&mut self, symbol: &str, trade_id: i64) {
        self.first_sight(symbol, trade_id);
    }
}

/// A balance change we know about: a fill (base, quote, fee) or a transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub asset: String,
    pub amount: Decimal,
    /// Exchange time (trade time `T`, balanceUpdate clear time).
    pub time_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub free: Decimal,
    pub locked: Decimal,
}

impl Balance {
    pub fn total(&self) -> Decimal {
        self.free + self.locked
    }
}

#[derive(Debug, Clone)]
struct Checkpoint {
    time_ms: u64,
    balance: Balance,
    arrived_ms: u64,
    judged: bool,
}

/// A balance change the exchange reported that our deltas do not explain.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub asset: String,
    pub exchange_total: Decimal,
    pub expected_total: Decimal,
    pub at_ms: u64,
}

#[derive(Debug, Default)]
pub struct BalanceBook {
    assets: BTreeMap<String, AssetHistory>,
}

#[derive(Debug, Default)]
struct AssetHistory {
    /// Sorted by time. The first one is the base everything later is judged against.
    checkpoints: Vec<Checkpoint>,
    /// Sorted by time; deltas at or before the first checkpoint are dropped.
    deltas: Vec<(u64, Decimal)>,
}

impl BalanceBook {
    /// The exchange's current balances (the latest checkpoint of each asset).
    pub fn balances(&self) -> impl Iterator<Item = (&str, &Balance)> {
        self.assets
            .iter()
            .filter_map(|(a, h)| h.checkpoints.last().map(|c| (a.as_str(), &c.balance)))
    }

    pub fn balance(&self, asset: &str) -> Option<&Balance> {
        self.assets
            .get(asset)
            .and_then(|h| h.checkpoints.last())
            .map(|c| &c.balance)
    }

    /// A full snapshot from REST (resync): replaces all history. `as_of_ms` is the
    /// exchange time the snapshot reflects.
    pub fn reset(
        &mut self,
        balances: impl IntoIterator<Item = (String, Balance)>,
        as_of_ms: u64,
        now_ms: u64,
    ) {
        let old = std::mem::take(&mut self.assets);
        for (asset, balance) in balances {
            let mut h = AssetHistory::default();
            h.checkpoints.push(Checkpoint {
                time_ms: as_of_ms,
                balance,
                arrived_ms: now_ms,
                judged: true,
            });
            // Deltas after the snapshot are not in it: keep them for the next checkpoint.
            if let Some(prev) = old.get(&asset) {
                h.deltas = prev
                    .deltas
                    .iter()
                    .filter(|(t, _)| *t > as_of_ms)
                    .copied()
                    .collect();
            }
            self.assets.insert(asset, h);
        }
    }

    /// A balance change we caused or were told about.
    pub fn add_delta(&mut self, delta: Delta) {
        let h = self.assets.entry(delta.asset).or_default();
        if let Some(first) = h.checkpoints.first()
            && delta.time_ms <= first.time_ms
        {
            return;
        }
        let pos = h.deltas.partition_point(|(t, _)| *t <= delta.time_ms);
        h.deltas.insert(pos, (delta.time_ms, delta.amount));
    }

    /// An account event's balance for one asset (outboundAccountPosition / outboundAccountInfo).
    pub fn observe(&mut self, asset: &str, balance: Balance, time_ms: u64, now_ms: u64) {
        let h = match self.assets.get_mut(asset) {
            Some(h) => h,
            None => self.assets.entry(asset.to_owned()).or_default(),
        };
        if let Some(first) = h.checkpoints.first()
            && time_ms < first.time_ms
        {
            return; // older than our base: a late duplicate
        }
        let pos = h.checkpoints.partition_point(|c| c.time_ms <= time_ms);
        // The same values as the latest state at the same time: the same update again (the
        // legacy outboundAccountInfo beside outboundAccountPosition, or a replay). Only the
        // latest: within one millisecond a quote can lock, unlock and lock the same amount
        // again (A, B, A), and that second A is the account's state, not a repeat. Frames
        // repeated byte for byte never get here: the user stream drops them by hash.
        if pos > 0
            && h.checkpoints[pos - 1].time_ms == time_ms
            && h.checkpoints[pos - 1].balance == balance
        {
            return;
        }
        let first_ever = h.checkpoints.is_empty();
        h.checkpoints.insert(
            pos,
            Checkpoint {
                time_ms,
                balance,
                arrived_ms: now_ms,
                judged: first_ever,
            },
        );
    }

    /// Judges checkpoints older than `grace_ms`; returns the mismatches found. After a
    /// mismatch the caller resyncs (which resets the book).
    pub fn judge(&mut self, now_ms: u64, grace_ms: u64) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for (asset, h) in self.assets.iter_mut() {
            let mut i = 1;
            while i < h.checkpoints.len() {
                let c = &h.checkpoints[i];
                if c.judged {
                    i += 1;
                    continue;
                }
                if now_ms.saturating_sub(c.arrived_ms) < grace_ms {
                    break;
                }
                // Checkpoints sharing one exchange time: the group is fine if any of them
                // matches (several updates in the same millisecond).
                let t = c.time_ms;
                let group_end = h.checkpoints[i..]
                    .iter()
                    .position(|c| c.time_ms != t)
                    .map_or(h.checkpoints.len(), |p| i + p);
                if h.checkpoints[i..group_end]
                    .iter()
                    .any(|c| !c.judged && now_ms.saturating_sub(c.arrived_ms) < grace_ms)
                {
                    break;
                }
                let prev = &h.checkpoints[i - 1];
                let change: Decimal = h
                    .deltas
                    .iter()
                    .filter(|(dt, _)| *dt > prev.time_ms && *dt <= t)
                    .map(|(_, a)| *a)
                    .sum();
                let expected = prev.balance.total() + change;
                let group = &h.checkpoints[i..group_end];
                if !group.iter().any(|c| c.balance.total() == expected) {
                    let last = group.last().map(|c| c.balance.total()).unwrap_or_default();
                    out.push(Mismatch {
                        asset: asset.clone(),
                        exchange_total: last,
                        expected_total: expected,
                        at_ms: t,
                    });
                }
                for c in &mut h.checkpoints[i..group_end] {
                    c.judged = true;
                }
                i = group_end;
            }
            // Forget what is judged and old: keep the latest judged checkpoint as the base.
            let judged_prefix = h.checkpoints.iter().take_while(|c| c.judged).count();
            let drop = judged_prefix.saturating_sub(1);
            if drop > 0 {
                h.checkpoints.drain(..drop);
                let base_t = h.checkpoints[0].time_ms;
                h.deltas.retain(|(t, _)| *t > base_t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn bal(free: Decimal, locked: Decimal) -> Balance {
        Balance { free, locked }
    }

    #[test]
    fn trade_ids_count_once() {
        let mut d = TradeDedup::default();
        assert!(d.first_sight("BTCUSDT", 5));
        assert!(!d.first_sight("BTCUSDT", 5));
        assert!(d.first_sight("ETHUSDT", 5), "ids are per symbol");
        assert!(d.first_sight("BTCUSDT", 3));
        assert_eq!(d.last_trade_id("BTCUSDT"), Some(5));
        assert_eq!(d.last_trade_id("XRPUSDT"), None);
    }

    #[test]
    fn trade_memory_stays_bounded_and_still_dedups_the_recent_window() {
        let mut d = TradeDedup::default();
        let n = TRADE_MEMORY as i64 * 3;
        for id in 0..n {
            assert!(d.first_sight("BTCUSDT", id));
        }
        let s = &d.symbols["BTCUSDT"];
        assert_eq!(s.seen.len(), TRADE_MEMORY);
        assert_eq!(s.order.len(), TRADE_MEMORY);
        assert!(
            !d.first_sight("BTCUSDT", n - 1),
            "a recent id is still a duplicate"
        );
        assert!(
            !d.first_sight("BTCUSDT", n - TRADE_MEMORY as i64),
            "the oldest remembered id too"
        );
        assert!(
            !d.first_sight("BTCUSDT", 7),
            "an id older than the window was counted long ago"
        );
        assert!(d.first_sight("BTCUSDT", n), "a new id counts");
        assert_eq!(d.last_trade_id("BTCUSDT"), Some(n));
    }

    #[test]
    fn explained_changes_pass_and_late_fills_land_in_their_interval() {
        let mut b = BalanceBook::default();
        b.reset([("USDT".to_owned(), bal(dec!(1000), dec!(0)))], 100, 0);
        // Account event for a trade at t=200 arrives before the executionReport.
        b.observe("USDT", bal(dec!(890), dec!(10)), 200, 10);
        b.add_delta(Delta {
            asset: "USDT".into(),
            amount: dec!(-100),
            time_ms: 200,
        });
        // A later fill, not yet in any account event.
        b.add_delta(Delta {
            asset: "USDT".into(),
            amount: dec!(-50),
            time_ms: 300,
        });
        assert!(b.judge(2000, 500).is_empty());
        assert_eq!(b.balance("USDT"), Some(&bal(dec!(890), dec!(10))));
        b.observe("USDT", bal(dec!(850), dec!(0)), 300, 2100);
        assert!(b.judge(3000, 500).is_empty());
    }

    #[test]
    fn unexplained_change_is_a_mismatch_with_both_values() {
        let mut b = BalanceBook::default();
        b.reset([("BTC".to_owned(), bal(dec!(1), dec!(0)))], 100, 0);
        b.add_delta(Delta {
            asset: "BTC".into(),
            amount: dec!(0.001),
            time_ms: 150,
        });
        b.observe("BTC", bal(dec!(1.002), dec!(0)), 200, 10);
        let m = b.judge(1000, 500);
        assert_eq!(
            m,
            vec![Mismatch {
                asset: "BTC".into(),
                exchange_total: dec!(1.002),
                expected_total: dec!(1.001),
                at_ms: 200
            }]
        );
        // The exchange's value is what the daemon reports regardless.
        assert_eq!(b.balance("BTC"), Some(&bal(dec!(1.002), dec!(0))));
    }

    #[test]
    fn duplicates_and_stale_events_change_nothing() {
        let mut b = BalanceBook::default();
        b.reset([("BTC".to_owned(), bal(dec!(1), dec!(0)))], 100, 0);
        b.add_delta(Delta {
            asset: "BTC".into(),
            amount: dec!(0.5),
            time_ms: 150,
        });
        b.observe("BTC", bal(dec!(1.5), dec!(0)), 150, 1);
        b.observe("BTC", bal(dec!(1.5), dec!(0)), 150, 2);
        b.observe("BTC", bal(dec!(0.7), dec!(0)), 50, 3); // older than the snapshot
        assert!(b.judge(1000, 100).is_empty());
        assert_eq!(b.balance("BTC"), Some(&bal(dec!(1.5), dec!(0))));
    }

    /// Seen in daemon_reconcile under load: a quote locked, was cancelled and was placed
    /// again at the same price within one millisecond. The second lock was taken for a
    /// repeat of the first and dropped, and the daemon reported the unlocked state.
    #[test]
    fn a_state_repeated_within_one_millisecond_is_the_latest() {
        let mut b = BalanceBook::default();
        b.reset([("USDT".to_owned(), bal(dec!(100), dec!(0)))], 100, 0);
        let locked = bal(dec!(70.02), dec!(29.98));
        let unlocked = bal(dec!(100), dec!(0));
        b.observe("USDT", locked.clone(), 200, 1);
        b.observe("USDT", locked.clone(), 200, 1); // the same update again
        b.observe("USDT", unlocked, 200, 1);
        b.observe("USDT", locked.clone(), 200, 1);
        assert_eq!(b.balance("USDT"), Some(&locked));
        assert!(b.judge(1000, 100).is_empty());
    }

    #[test]
    fn same_millisecond_updates_match_as_a_group() {
        let mut b = BalanceBook::default();
        b.reset([("BTC".to_owned(), bal(dec!(1), dec!(0)))], 100, 0);
        b.add_delta(Delta {
            asset: "BTC".into(),
            amount: dec!(0.1),
            time_ms: 200,
        });
        b.add_delta(Delta {
            asset: "BTC".into(),
            amount: dec!(0.2),
            time_ms: 200,
        });
        b.observe("BTC", bal(dec!(1.1), dec!(0)), 200, 1);
        b.observe("BTC", bal(dec!(1.3), dec!(0)), 200, 2);
        assert!(b.judge(1000, 100).is_empty());
    }
}
