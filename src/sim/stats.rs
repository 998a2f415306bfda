//! Counters the tests read at the end of a run (and the admin endpoint reports).

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct StatsCounters {
    pub connections_opened: AtomicU64,
    closed_by_reason: Mutex<BTreeMap<String, u64>>,
    pub listen_keys_created: AtomicU64,
    pub listen_keys_expired: AtomicU64,
    pub keepalives: AtomicU64,
    pub user_events_sent: AtomicU64,
    pub market_events_sent: AtomicU64,
    pub faults_injected: AtomicU64,
    pub orders_placed: AtomicU64,
    pub orders_canceled: AtomicU64,
    pub trades: AtomicU64,
    pub rest_requests: AtomicU64,
}

impl StatsCounters {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self, reason: &str) {
        *self
            .closed_by_reason
            .lock()
            .entry(reason.to_string())
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections_opened: g(&self.connections_opened),
            connections_closed: self.closed_by_reason.lock().clone(),
            listen_keys_created: g(&self.listen_keys_created),
            listen_keys_expired: g(&self.listen_keys_expired),
            keepalives: g(&self.keepalives),
            user_events_sent: g(&self.user_events_sent),
            market_events_sent: g(&self.market_events_sent),
            faults_injected: g(&self.faults_injected),
            orders_placed: g(&self.orders_placed),
            orders_canceled: g(&self.orders_canceled),
            trades: g(&self.trades),
            rest_requests: g(&self.rest_requests),
        }
    }
}

/// A consistent copy of the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub connections_opened: u64,
    /// Closed connections by reason: "client", "max_age", "pong_timeout", "listen_key_expired",
    /// "fault_abort", "server_shutdown", "restart", "shutdown", "error".
    pub connections_closed: BTreeMap<String, u64>,
    pub listen_keys_created: u64,
    pub listen_keys_expired: u64,
    pub keepalives: u64,
    pub user_events_sent: u64,
    pub market_events_sent: u64,
    pub faults_injected: u64,
    pub orders_placed: u64,
    pub orders_canceled: u64,
    pub trades: u64,
    pub rest_requests: u64,
}
