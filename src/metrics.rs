//! Prometheus metrics (text exposition) and `GET /health`.
//!
//! The metric names are an interface operators build dashboards and alerts on: change
//! them only with a changelog entry. Balances are exported as the exchange's exact decimal
//! strings; Prometheus parses them as floats, but the text carries every digit.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

pub const FILLS: &str = "mmd_fills_total";
pub const ORDERS_PLACED: &str = "mmd_orders_placed_total";
pub const ORDERS_CANCELED: &str = "mmd_orders_canceled_total";
pub const ORDERS_REJECTED: &str = "mmd_orders_rejected_total";
pub const OPEN_ORDERS: &str = "mmd_open_orders";
pub const BALANCE: &str = "mmd_balance";
pub const POSITION_BASE: &str = "mmd_position_base";
pub const WS_CONNECTS: &str = "mmd_ws_connects_total";
pub const KEEPALIVES: &str = "mmd_listen_key_keepalives_total";
pub const LISTEN_KEYS_CREATED: &str = "mmd_listen_key_created_total";
pub const RECONCILE_MISMATCHES: &str = "mmd_reconcile_mismatches_total";
pub const RESYNCS: &str = "mmd_resyncs_total";
pub const DUPLICATES_DROPPED: &str = "mmd_ws_duplicates_dropped_total";
pub const TICK_TO_ORDER: &str = "mmd_tick_to_order_seconds";
pub const ORDER_REQUESTS: &str = "mmd_order_requests_total";

const DESCRIPTIONS: &[(&str, &str, &str)] = &[
    (
        FILLS,
        "counter",
        "Fills (trades) of our orders, each trade id counted once.",
    ),
    (ORDERS_PLACED, "counter", "Orders sent to the exchange."),
    (
        ORDER_REQUESTS,
        "counter",
        "Order and cancel requests sent, by who wrote them: path=\"line\" the event loop itself on a kept-alive order line; path=\"task\" a task of its own, slower, when no line was idle.",
    ),
    (
        ORDERS_CANCELED,
        "counter",
        "Orders the exchange reports canceled.",
    ),
    (
        ORDERS_REJECTED,
        "counter",
        "Orders the exchange rejected, by error code.",
    ),
    (
        OPEN_ORDERS,
        "gauge",
        "Our orders that may be resting on the book.",
    ),
    (
        BALANCE,
        "gauge",
        "Balances as the exchange last reported them.",
    ),
    (
        POSITION_BASE,
        "gauge",
        "Base position from our fills since start.",
    ),
    (
        WS_CONNECTS,
        "counter",
        "WebSocket connections established, by stream and reason.",
    ),
    (KEEPALIVES, "counter", "Listen-key keepalives, by result."),
    (
        LISTEN_KEYS_CREATED,
        "counter",
        "Listen keys obtained (POST userDataStream).",
    ),
    (
        RECONCILE_MISMATCHES,
        "counter",
        "Account events whose balances our fills did not explain.",
    ),
    (
        DUPLICATES_DROPPED,
        "counter",
        "User events received again (duplicates, rotation overlap) and dropped, by stream.",
    ),
    (
        RESYNCS,
        "counter",
        "REST resyncs (account, openOrders, myTrades), by reason.",
    ),
];

/// Histogram buckets for tick-to-order, in seconds.
const TICK_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), String>,
    tick_counts: Vec<u64>,
    tick_sum: f64,
    tick_count: u64,
    health: Health,
    /// Exact samples for `mmd bench`; None in production, where the buckets suffice.
    probe: Option<Probe>,
}

/// What `mmd bench` reads back: exact latency samples and when the first order went live
/// at the exchange.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// As the histogram: a frame read -> the new order it led to, written to the socket
    /// (includes waiting for cancel acknowledgements when a quote is replaced).
    pub tick_to_order_ns: Vec<u64>,
    /// A frame read -> the first order request (new order or cancel) handling that frame
    /// produced, written to the socket: the reaction time of the hot path.
    pub tick_to_request_ns: Vec<u64>,
    pub first_order_live: Option<std::time::Instant>,
}

/// What `/health` reports, kept up to date by the engine.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub market_stream_live: bool,
    pub user_stream_live: bool,
    pub stopping: bool,
    /// Age of the last market data per active market, ms (None: no data yet).
    pub data_age_ms: BTreeMap<String, Option<u64>>,
    pub stale_after_ms: u64,
    pub open_orders: usize,
}

impl Health {
    /// None when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        if self.stopping {
            return Some("shutting down".into());
        }
        if !self.market_stream_live {
            return Some("market stream down".into());
        }
        if !self.user_stream_live {
            return Some("user stream down".into());
        }
        for (symbol, age) in &self.data_age_ms {
            match age {
                None => return Some(format!("{symbol}: no market data yet")),
                Some(a) if *a > self.stale_after_ms => {
                    return Some(format!("{symbol}: market data {a} ms old"));
                }
                _ => {}
            }
        }
        None
    }
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    pub fn inc(&self, name: &'static str, l: &[(&'static str, &str)]) {
        self.add(name, l, 1);
    }

    pub fn add(&self, name: &'static str, l: &[(&'static str, &str)], n: u64) {
        *self
            .inner
            .lock()
            .counters
            .entry((name, labels(l)))
            .or_default() += n;
    }

    pub fn counter(&self, name: &'static str, l: &[(&'static str, &str)]) -> u64 {
        self.inner
            .lock()
            .counters
            .get(&(name, labels(l)))
            .copied()
            .unwrap_or(0)
    }

    /// Sum of a counter over all label values.
    pub fn counter_sum(&self, name: &'static str) -> u64 {
        self.inner
            .lock()
            .counters
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn set_gauge(&self, name: &'static str, l: &[(&'static str, &str)], value: impl ToString) {
        self.inner
            .lock()
            .gauges
            .insert((name, labels(l)), value.to_string());
    }

    /// Drops every series of a gauge carrying this label value (a removed market).
    pub fn remove_gauges_with(&self, name: &'static str, key: &'static str, value: &str) {
        self.inner
            .lock()
            .gauges
            .retain(|(n, l), _| !(*n == name && l.iter().any(|(k, v)| *k == key && v == value)));
    }

    pub fn observe_tick_to_order(&self, seconds: f64) {
        let mut g = self.inner.lock();
        if g.tick_counts.is_empty() {
            g.tick_counts = vec![0; TICK_BUCKETS.len()];
        }
        for (i, b) in TICK_BUCKETS.iter().enumerate() {
            if seconds <= *b {
                g.tick_counts[i] += 1;
            }
        }
        g.tick_sum += seconds;
        g.tick_count += 1;
        if let Some(p) = g.probe.as_mut() {
            p.tick_to_order_ns.push((seconds * 1e9).round() as u64);
        }
    }

    /// Starts keeping exact tick-to-order samples (for `mmd bench`).
    pub fn enable_probe(&self) {
        self.inner.lock().probe.get_or_insert_with(Probe::default);
    }

    /// Only kept by the probe: see [`Probe::tick_to_request_ns`].
    pub fn observe_tick_to_request(&self, elapsed: std::time::Duration) {
        if let Some(p) = self.inner.lock().probe.as_mut() {
            p.tick_to_request_ns.push(elapsed.as_nanos() as u64);
        }
    }

    /// The exchange accepted an order.
    pub fn note_order_live(&self) {
        if let Some(p) = self.inner.lock().probe.as_mut() {
            p.first_order_live
                .get_or_insert_with(std::time::Instant::now);
        }
    }

    /// The samples so far (left in place); None unless `enable_probe` was called.
    pub fn probe(&self) -> Option<Probe> {
        self.inner.lock().probe.clone()
    }

    pub fn set_health(&self, h: Health) {
        self.inner.lock().health = h;
    }

    pub fn health(&self) -> Health {
        self.inner.lock().health.clone()
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let g = self.inner.lock();
        let mut out = String::with_capacity(4096);
        for (name, kind, help) in DESCRIPTIONS {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for ((n, l), v) in g.counters.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{} {v}", fmt_labels(l));
            }
            for ((n, l), v) in g.gauges.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{} {v}", fmt_labels(l));
            }
            if *name == LISTEN_KEYS_CREATED || *name == RECONCILE_MISMATCHES {
                // Label-less counters exist from the start, so alerts on rate() work at once.
                if !g.counters.keys().any(|(n, _)| n == name) {
                    let _ = writeln!(out, "{name} 0");
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP {TICK_TO_ORDER} From a market frame read off the socket to the order request sent."
        );
        let _ = writeln!(out, "# TYPE {TICK_TO_ORDER} histogram");
        for (i, b) in TICK_BUCKETS.iter().enumerate() {
            let c = g.tick_counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{TICK_TO_ORDER}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{TICK_TO_ORDER}_bucket{{le=\"+Inf\"}} {}",
            g.tick_count
        );
        let _ = writeln!(out, "{TICK_TO_ORDER}_sum {}", g.tick_sum);
        let _ = writeln!(out, "{TICK_TO_ORDER}_count {}", g.tick_count);
        out
    }
}

fn fmt_labels(l: &Labels) -> String {
    if l.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Serves `/metrics` and `/health` until the token is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let m1 = metrics.clone();
    let m2 = metrics;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let m = m2.clone();
                async move {
                    let h = m.health();
                    let problem = h.problem();
                    let body = serde_json::json!({
                        "status": if problem.is_none() { "ok" } else { "unhealthy" },
                        "reason": problem,
                        "market_stream_live": h.market_stream_live,
                        "user_stream_live": h.user_stream_live,
                        "data_age_ms": h.data_age_ms,
                        "open_orders": h.open_orders,
                    });
                    let code = if problem.is_none() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(body)).into_response()
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Binds the metrics listener (errors name the address).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics.listen {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_interface_names_with_labels() {
        let m = Metrics::default();
        m.inc(FILLS, &[("symbol", "BTCUSDT"), ("side", "BUY")]);
        m.inc(FILLS, &[("symbol", "BTCUSDT"), ("side", "BUY")]);
        m.set_gauge(
            BALANCE,
            &[("asset", "BTC"), ("state", "free")],
            "1.00100000",
        );
        m.observe_tick_to_order(0.0003);
        let text = m.render();
        assert!(
            text.contains("mmd_fills_total{symbol=\"BTCUSDT\",side=\"BUY\"} 2"),
            "{text}"
        );
        assert!(text.contains("mmd_balance{asset=\"BTC\",state=\"free\"} 1.00100000"));
        assert!(text.contains("mmd_tick_to_order_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("mmd_tick_to_order_seconds_count 1"));
        assert!(text.contains("mmd_reconcile_mismatches_total 0"));
        assert_eq!(m.counter_sum(FILLS), 2);
    }

    #[test]
    fn health_names_the_problem() {
        let mut h = Health {
            market_stream_live: true,
            user_stream_live: true,
            stale_after_ms: 10_000,
            ..Health::default()
        };
        h.data_age_ms.insert("BTCUSDT".into(), Some(100));
        assert_eq!(h.problem(), None);
        h.data_age_ms.insert("ETHUSDT".into(), Some(20_000));
        assert!(h.problem().unwrap().contains("ETHUSDT"));
        h.user_stream_live = false;
        assert_eq!(h.problem().unwrap(), "user stream down");
    }
}
