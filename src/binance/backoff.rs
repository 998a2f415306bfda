//! Reconnect pacing: the first retry after an unplanned drop is immediate (most
//! drops are one-off), later ones back off exponentially with jitter so a fleet of
//! daemons does not reconnect in lockstep after an exchange-side incident.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// Delay before the next attempt, given a uniform random `jitter` in [0, 1):
    /// 0 for the first, then a value in [d/2, d) with d = min·2^(n-1) capped at max.
    pub fn next_delay_with(&mut self, jitter: f64) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        if attempt == 0 {
            return Duration::ZERO;
        }
        let exp = (attempt - 1).min(30);
        let full = self
            .min
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        // Never below min: the floor is part of the operator's contract.
        (full.mul_f64(0.5 + jitter / 2.0)).max(self.min)
    }

    pub fn next_delay(&mut self) -> Duration {
        use rand::RngExt;
        let jitter: f64 = rand::rng().random();
        self.next_delay_with(jitter)
    }

    /// A connection stayed up: the next drop starts from an immediate retry again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retry_is_immediate_then_grows_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(b.next_delay_with(0.5), Duration::ZERO);
        assert_eq!(b.next_delay_with(1.0), Duration::from_millis(100));
        assert_eq!(b.next_delay_with(1.0), Duration::from_millis(200));
        assert_eq!(b.next_delay_with(1.0), Duration::from_millis(400));
        for _ in 0..40 {
            let d = b.next_delay_with(0.999);
            assert!(d <= Duration::from_secs(30));
        }
        assert!(b.next_delay_with(1.0) == Duration::from_secs(30));
        b.reset();
        assert_eq!(b.next_delay_with(0.3), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_half_to_full_and_above_min() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        b.next_delay_with(0.0);
        assert_eq!(b.next_delay_with(0.0), Duration::from_millis(100));
        let d = b.next_delay_with(0.0);
        assert_eq!(d, Duration::from_millis(100)); // 200/2
        for _ in 0..1000 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_secs(30));
        }
    }
}
