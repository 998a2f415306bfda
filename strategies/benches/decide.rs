//! Hot-path "decide" step per market tick: strategy quotes, risk check, order diff,
//! for 1, 10 and 100 markets quoted by one event loop.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rust_decimal_macros::dec;
use std::hint::black_box;
use strategies::diff::diff;
use strategies::risk::{RiskInput, RiskLimits, RiskState, check};
use strategies::{
    Balances, Context, Decimal, LiveOrder, MarketSnapshot, Strategy, SymbolRules, build,
};

struct Market {
    strategy: Box<dyn Strategy>,
    rules: SymbolRules,
    snapshot: MarketSnapshot,
    balances: Balances,
    live: Vec<LiveOrder>,
    risk: RiskState,
}

const SPREAD: &str = "bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.01\"\nlevels = 2\n\
    level_spread_bps = 5\ninventory_skew_enabled = true\ninventory_price_skew_bps = 5\n\
    refresh_tolerance_bps = 1\nmin_spread_bps = 2\nmax_order_age = \"30s\"";
const AVELLANEDA: &str = "gamma = \"0.0001\"\nkappa = \"0.5\"\norder_qty = \"0.01\"\n\
    volatility_window = 30\nrefresh_tolerance_bps = 1\nmin_spread_bps = 2";

fn markets(n: usize, name: &str, params: &str) -> Vec<Market> {
    (0..n)
        .map(|i| {
            let table: toml::Value = toml::from_str(params).unwrap();
            let mut strategy = build(name, table).unwrap();
            let bid = Decimal::from(1000 + 37 * i as u64);
            let snapshot = MarketSnapshot {
                best_bid: bid,
                best_bid_qty: dec!(2.5),
                best_ask: bid + dec!(0.01),
                best_ask_qty: dec!(1.5),
                last: Some(bid),
                ts_ms: 0,
            };
            // Warm the volatility estimator so avellaneda quotes.
            for t in 0..64u64 {
                let wiggle = Decimal::from(t % 7) / dec!(100);
                strategy.on_market(&MarketSnapshot {
                    best_bid: bid + wiggle,
                    best_ask: bid + wiggle + dec!(0.01),
                    ts_ms: t * 1000,
                    ..snapshot.clone()
                });
            }
            let balances = Balances {
                base_free: dec!(1.2),
                base_locked: dec!(0),
                quote_free: bid,
                quote_locked: dec!(0),
            };
            let rules = SymbolRules {
                tick_size: dec!(0.01),
                step_size: dec!(0.0001),
                min_qty: dec!(0.0001),
                max_qty: dec!(9000),
                min_notional: dec!(5),
                max_notional: None,
            };
            let mut m = Market {
                strategy,
                rules,
                snapshot: MarketSnapshot {
                    ts_ms: 64_000,
                    ..snapshot
                },
                balances,
                live: Vec::new(),
                risk: RiskState::new(),
            };
            // Live orders as the previous round left them, slightly off so the diff has work.
            let q = quotes(&mut m, 63_000);
            m.live = q
                .iter()
                .enumerate()
                .map(|(id, q)| LiveOrder {
                    id: id as u64,
                    side: q.side,
                    price: q.price - dec!(0.01),
                    qty: q.qty,
                    placed_ms: 60_000,
                    level: q.level,
                })
                .collect();
            m
        })
        .collect()
}

fn quotes(m: &mut Market, now_ms: u64) -> Vec<strategies::Quote> {
    let ctx = Context {
        now_ms,
        rules: &m.rules,
        market: &m.snapshot,
        balances: &m.balances,
        live: &m.live,
    };
    m.strategy.quotes(&ctx).quotes
}

fn limits() -> RiskLimits {
    RiskLimits {
        max_base_position: Some(dec!(1)),
        max_quote_exposure: Some(dec!(100000)),
        max_open_orders_per_side: Some(5),
        max_daily_loss: Some(dec!(100)),
        stale_after_ms: Some(10_000),
    }
}

fn bench(c: &mut Criterion) {
    let limits = limits();
    for (name, params) in [("spread", SPREAD), ("avellaneda", AVELLANEDA)] {
        let mut group = c.benchmark_group(format!("decide/{name}"));
        for n in [1usize, 10, 100] {
            let mut ms = markets(n, name, params);
            assert!(!quotes(&mut ms[0], 64_000).is_empty(), "{name} must quote");
            let desired: Vec<_> = ms.iter_mut().map(|m| quotes(m, 64_000)).collect();
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new("quotes", n), &n, |b, _| {
                b.iter(|| {
                    for m in ms.iter_mut() {
                        black_box(quotes(m, black_box(64_000)));
                    }
                })
            });
            group.bench_with_input(BenchmarkId::new("risk", n), &n, |b, _| {
                b.iter(|| {
                    for (m, d) in ms.iter_mut().zip(&desired) {
                        let input = RiskInput {
                            now_ms: 64_000,
                            market: &m.snapshot,
                            position_base: dec!(0.3),
                            daily_pnl: dec!(-5),
                            live: &m.live,
                        };
                        black_box(check(&limits, &mut m.risk, black_box(&input), black_box(d)));
                    }
                })
            });
            group.bench_with_input(BenchmarkId::new("diff", n), &n, |b, _| {
                b.iter(|| {
                    for (m, d) in ms.iter().zip(&desired) {
                        let policy = m.strategy.refresh_policy();
                        black_box(diff(black_box(d), &m.live, &policy, &m.snapshot, 64_000));
                    }
                })
            });
            group.bench_with_input(BenchmarkId::new("all", n), &n, |b, _| {
                b.iter(|| {
                    for m in ms.iter_mut() {
                        let q = quotes(m, black_box(64_000));
                        let input = RiskInput {
                            now_ms: 64_000,
                            market: &m.snapshot,
                            position_base: dec!(0.3),
                            daily_pnl: dec!(-5),
                            live: &m.live,
                        };
                        let decision = check(&limits, &mut m.risk, &input, &q);
                        let policy = m.strategy.refresh_policy();
                        black_box(diff(
                            &decision.allowed,
                            &m.live,
                            &policy,
                            &m.snapshot,
                            64_000,
                        ));
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
