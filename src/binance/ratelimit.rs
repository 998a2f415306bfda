//! Client-side request budget (issue 3 point 9), pure: every decision takes the
//! current server time in milliseconds, so it is testable without a clock.
//!
//! Binance counts request weight per clock minute and orders per 10 s and per day,
//! in windows aligned to the epoch. We keep our own estimate, corrected by the
//! `X-MBX-USED-WEIGHT-1M` / `X-MBX-ORDER-COUNT-*` headers of every response, and
//! refuse a request *before* it would cross the limit. 429 pauses everything until
//! Retry-After; 418 (IP ban) stops all REST until the ban ends.

use std::time::Duration;

use super::types::RateLimit;

/// What a request costs and how important it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub weight: u32,
    /// Counts toward the ORDERS limits (placements only; cancels do not).
    pub order: bool,
    /// Cancels may use the headroom reserved for them: getting out of the market
    /// matters more than anything else near the limit.
    pub class: RequestClass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    Normal,
    Cancel,
}

/// Why a request may not be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Our own budget: the window rolls over in `wait`.
    Throttled { wait: Duration },
    /// The server said 429; no requests until Retry-After has passed.
    RateLimited { retry_after: Duration },
    /// The server said 418; no REST at all until the ban ends.
    IpBanned { retry_after: Duration },
}

/// Snapshot for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitStatus {
    pub used_weight_1m: u64,
    pub weight_limit_1m: u64,
    pub orders_10s: u64,
    pub orders_limit_10s: u64,
    pub orders_1d: u64,
    pub orders_limit_1d: u64,
    /// Time left of a 429 pause, if one is active.
    pub rate_limited_for: Option<Duration>,
    /// Time left of a 418 ban, if one is active.
    pub banned_for: Option<Duration>,
    pub throttled_total: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    len_ms: u64,
    limit: u64,
    start_ms: u64,
    /// Usage of the whole account/IP: our estimate, raised to what the server reports.
    used: u64,
    /// Our own requests only: what `rate_limit_share` caps when shards share an account.
    own: u64,
}

impl Window {
    fn new(len_ms: u64, limit: u64) -> Self {
        Self {
            len_ms,
            limit,
            start_ms: 0,
            used: 0,
            own: 0,
        }
    }

    fn roll(&mut self, now_ms: u64) {
        let start = now_ms - now_ms % self.len_ms;
        if start != self.start_ms {
            self.start_ms = start;
            self.used = 0;
            self.own = 0;
        }
    }

    fn wait(&self, now_ms: u64) -> Duration {
        Duration::from_millis((self.start_ms + self.len_ms).saturating_sub(now_ms).max(1))
    }

    /// Server header: authoritative for the window it was sent in. Our estimate may
    /// be higher (requests still in flight), never trust a lower number blindly.
    fn observe(&mut self, now_ms: u64, used: u64) {
        self.roll(now_ms);
        self.used = self.used.max(used);
    }
}

/// Share of each limit ordinary requests may use; the rest is kept for cancels.
const NORMAL_SHARE_PERCENT: u64 = 90;

#[derive(Debug, Clone)]
pub struct RateLimiter {
    weight: Window,
    orders_10s: Window,
    orders_1d: Window,
    paused_until_ms: u64,
    banned_until_ms: u64,
    throttled_total: u64,
    /// This process's share of every limit, in thousandths (1000 = all of it).
    share_permille: u64,
}

impl Default for RateLimiter {
    /// Binance Spot's published limits (2026): 6000 weight/min, 100 orders/10 s,
    /// 200,000 orders/day. Replaced by exchangeInfo's numbers at startup.
    fn default() -> Self {
        Self {
            weight: Window::new(60_000, 6000),
            orders_10s: Window::new(10_000, 100),
            orders_1d: Window::new(86_400_000, 200_000),
            paused_until_ms: 0,
            banned_until_ms: 0,
            throttled_total: 0,
            share_permille: 1000,
        }
    }
}

fn interval_ms(interval: &str, num: u64) -> Option<u64> {
    let unit = match interval {
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return None,
    };
    Some(unit * num)
}

impl RateLimiter {
    /// Adopts exchangeInfo's `rateLimits`. Unknown kinds (RAW_REQUESTS) are ignored:
    /// they are far above what a market maker sends.
    pub fn apply_exchange_limits(&mut self, limits: &[RateLimit]) {
        for l in limits {
            let Some(len) = interval_ms(&l.interval, l.interval_num) else {
                continue;
            };
            let slot = match (l.rate_limit_type.as_str(), len) {
                ("REQUEST_WEIGHT", 60_000) => &mut self.weight,
                ("ORDERS", 10_000) => &mut self.orders_10s,
                ("ORDERS", 86_400_000) => &mut self.orders_1d,
                _ => continue,
            };
            slot.limit = l.limit;
        }
    }

    /// Shards sharing one account each take a fraction of its limits: the server's
    /// usage headers count every shard, so the account-wide budget still applies to
    /// them, and this process's own requests are held to `share` of it.
    pub fn set_share(&mut self, share: rust_decimal::Decimal) {
        use rust_decimal::prelude::ToPrimitive;
        let permille = (share * rust_decimal::Decimal::from(1000))
            .floor()
            .to_u64()
            .unwrap_or(1000);
        self.share_permille = permille.clamp(1, 1000);
    }

    fn own_budget(&self, limit: u64, class: RequestClass) -> u64 {
        Self::budget(limit, class) * self.share_permille / 1000
    }

    fn budget(limit: u64, class: RequestClass) -> u64 {
        match class {
            RequestClass::Normal => limit * NORMAL_SHARE_PERCENT / 100,
            RequestClass::Cancel => limit,
        }
    }

    /// Reserves `cost` if it fits; otherwise says how long to wait. Never blocks.
    pub fn try_acquire(&mut self, cost: Cost, now_ms: u64) -> Result<(), Refusal> {
        if now_ms < self.banned_until_ms {
            return Err(Refusal::IpBanned {
                retry_after: Duration::from_millis(self.banned_until_ms - now_ms),
            });
        }
        if now_ms < self.paused_until_ms {
            return Err(Refusal::RateLimited {
                retry_after: Duration::from_millis(self.paused_until_ms - now_ms),
            });
        }
        self.weight.roll(now_ms);
        self.orders_10s.roll(now_ms);
        self.orders_1d.roll(now_ms);
        let w = u64::from(cost.weight);
        if self.weight.used + w > Self::budget(self.weight.limit, cost.class)
            || self.weight.own + w > self.own_budget(self.weight.limit, cost.class)
        {
            self.throttled_total += 1;
            return Err(Refusal::Throttled {
                wait: self.weight.wait(now_ms),
            });
        }
        if cost.order {
            for win in [&self.orders_10s, &self.orders_1d] {
                if win.used + 1 > Self::budget(win.limit, cost.class)
                    || win.own + 1 > self.own_budget(win.limit, cost.class)
                {
                    self.throttled_total += 1;
                    return Err(Refusal::Throttled {
                        wait: win.wait(now_ms),
                    });
                }
            }
            self.orders_10s.used += 1;
            self.orders_1d.used += 1;
            self.orders_10s.own += 1;
            self.orders_1d.own += 1;
        }
        self.weight.used += w;
        self.weight.own += w;
        Ok(())
    }

    /// Feeds the usage headers of a response (any of them may be absent).
    pub fn observe_headers(
        &mut self,
        now_ms: u64,
        used_weight_1m: Option<u64>,
        orders_10s: Option<u64>,
        orders_1d: Option<u64>,
    ) {
        if let Some(u) = used_weight_1m {
            self.weight.observe(now_ms, u);
        }
        if let Some(u) = orders_10s {
            self.orders_10s.observe(now_ms, u);
        }
        if let Some(u) = orders_1d {
            self.orders_1d.observe(now_ms, u);
        }
    }

    /// 429: stop sending until Retry-After has passed.
    pub fn on_rate_limited(&mut self, now_ms: u64, retry_after: Duration) {
        self.paused_until_ms = self
            .paused_until_ms
            .max(now_ms + retry_after.as_millis() as u64);
    }

    /// 418: no REST at all until the ban ends.
    pub fn on_banned(&mut self, now_ms: u64, retry_after: Duration) {
        self.banned_until_ms = self
            .banned_until_ms
            .max(now_ms + retry_after.as_millis() as u64);
    }

    pub fn status(&self, now_ms: u64) -> RateLimitStatus {
        let mut copy = self.clone();
        copy.weight.roll(now_ms);
        copy.orders_10s.roll(now_ms);
        copy.orders_1d.roll(now_ms);
        let left = |until: u64| (now_ms < until).then(|| Duration::from_millis(until - now_ms));
        RateLimitStatus {
            used_weight_1m: copy.weight.used,
            weight_limit_1m: copy.weight.limit,
            orders_10s: copy.orders_10s.used,
            orders_limit_10s: copy.orders_10s.limit,
            orders_1d: copy.orders_1d.used,
            orders_limit_1d: copy.orders_1d.limit,
            rate_limited_for: left(self.paused_until_ms),
            banned_for: left(self.banned_until_ms),
            throttled_total: self.throttled_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORMAL: Cost = Cost {
        weight: 10,
        order: false,
        class: RequestClass::Normal,
    };
    const ORDER: Cost = Cost {
        weight: 1,
        order: true,
        class: RequestClass::Normal,
    };
    const CANCEL: Cost = Cost {
        weight: 1,
        order: false,
        class: RequestClass::Cancel,
    };

    fn limiter(weight: u64, per_10s: u64) -> RateLimiter {
        let mut l = RateLimiter::default();
        l.apply_exchange_limits(&[
            RateLimit {
                rate_limit_type: "REQUEST_WEIGHT".into(),
                interval: "MINUTE".into(),
                interval_num: 1,
                limit: weight,
            },
            RateLimit {
                rate_limit_type: "ORDERS".into(),
                interval: "SECOND".into(),
                interval_num: 10,
                limit: per_10s,
            },
        ]);
        l
    }

    #[test]
    fn throttles_before_the_weight_limit_and_keeps_headroom_for_cancels() {
        let mut l = limiter(100, 1000);
        let t = 120_000 + 5_000;
        for _ in 0..9 {
            l.try_acquire(NORMAL, t).unwrap();
        }
        // 90 of 100 used: the 10th normal request would pass 90%.
        assert_eq!(
            l.try_acquire(NORMAL, t),
            Err(Refusal::Throttled {
                wait: Duration::from_millis(55_000)
            })
        );
        for _ in 0..10 {
            l.try_acquire(CANCEL, t).unwrap();
        }
        assert!(matches!(
            l.try_acquire(CANCEL, t),
            Err(Refusal::Throttled { .. })
        ));
        // The next minute starts fresh.
        l.try_acquire(NORMAL, 180_000).unwrap();
        assert_eq!(l.status(180_000).used_weight_1m, 10);
    }

    #[test]
    fn a_shard_keeps_to_its_share_while_the_headers_count_the_whole_account() {
        let mut l = limiter(1000, 100);
        l.set_share(rust_decimal::Decimal::new(5, 1)); // 0.5
        let t = 60_000 + 1_000;
        // Our half of the 90% order budget: 45 orders in 10 s.
        for _ in 0..45 {
            l.try_acquire(ORDER, t).unwrap();
        }
        assert!(matches!(
            l.try_acquire(ORDER, t),
            Err(Refusal::Throttled { .. })
        ));
        // Another shard on the same account has used most of the rest: the server's
        // count stops us even below our own share.
        let mut l = limiter(1000, 100);
        l.set_share(rust_decimal::Decimal::new(5, 1));
        l.observe_headers(t, None, Some(88), None);
        l.try_acquire(ORDER, t).unwrap();
        l.try_acquire(ORDER, t).unwrap();
        assert!(matches!(
            l.try_acquire(ORDER, t),
            Err(Refusal::Throttled { .. })
        ));
    }

    #[test]
    fn headers_raise_the_estimate_within_their_window() {
        let mut l = limiter(100, 1000);
        l.observe_headers(60_500, Some(85), None, None);
        assert!(l.try_acquire(NORMAL, 60_600).is_err());
        l.observe_headers(60_700, Some(3), None, None);
        assert_eq!(l.status(60_700).used_weight_1m, 85);
        // A header from the next window resets it.
        l.observe_headers(120_100, Some(3), None, None);
        assert_eq!(l.status(120_100).used_weight_1m, 3);
    }

    #[test]
    fn order_count_limits_per_10s() {
        let mut l = limiter(10_000, 10);
        for _ in 0..9 {
            l.try_acquire(ORDER, 1_000).unwrap();
        }
        assert_eq!(
            l.try_acquire(ORDER, 1_000),
            Err(Refusal::Throttled {
                wait: Duration::from_millis(9_000)
            })
        );
        l.try_acquire(ORDER, 10_000).unwrap();
        let s = l.status(10_000);
        assert_eq!((s.orders_10s, s.orders_1d), (1, 10));
    }

    #[test]
    fn rate_limited_and_banned_block_everything_until_they_end() {
        let mut l = RateLimiter::default();
        l.on_rate_limited(1_000, Duration::from_secs(2));
        assert_eq!(
            l.try_acquire(CANCEL, 1_500),
            Err(Refusal::RateLimited {
                retry_after: Duration::from_millis(1_500)
            })
        );
        l.try_acquire(CANCEL, 3_000).unwrap();
        l.on_banned(3_000, Duration::from_secs(60));
        assert!(matches!(
            l.try_acquire(CANCEL, 62_999),
            Err(Refusal::IpBanned { .. })
        ));
        assert_eq!(
            l.status(10_000).banned_for,
            Some(Duration::from_millis(53_000))
        );
        l.try_acquire(CANCEL, 63_000).unwrap();
    }
}
