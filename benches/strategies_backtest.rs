//! Backtest throughput: strategy + risk + diff + the simulator's matching per market event,
//! single-threaded, on the simulator's seeded random walk (events generated up front).
//! Target (issue 4): >= 2,000,000 market events/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmd::backtest::{BacktestConfig, BacktestMarket, random_walk, run_market};
use mmd::sim::config::{MarketConfig, SymbolConfig};
use rust_decimal_macros::dec;
use std::hint::black_box;
use strategies::risk::RiskLimits;

const SPREAD: &str = "bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.01\"\n\
    inventory_skew_enabled = true\ninventory_range_multiplier = 2\nrefresh_tolerance_bps = 2";
const AVELLANEDA: &str = "gamma = \"0.00001\"\nkappa = \"0.05\"\norder_qty = \"0.01\"\n\
    volatility_window = 30\nrefresh_tolerance_bps = 2\nmin_spread_bps = 2";

fn bench(c: &mut Criterion) {
    let symbol = SymbolConfig::btcusdt();
    let events = random_walk(&symbol, &MarketConfig::default(), 7, 0, 3_600_000);
    let mut group = c.benchmark_group("backtest");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    for (name, params) in [("spread", SPREAD), ("avellaneda", AVELLANEDA)] {
        let market = BacktestMarket {
            symbol: symbol.clone(),
            strategy_name: name.to_string(),
            strategy_params: toml::from_str(params).unwrap(),
            risk: RiskLimits {
                max_base_position: Some(dec!(0.5)),
                max_open_orders_per_side: Some(4),
                max_daily_loss: Some(dec!(100000)),
                ..RiskLimits::default()
            },
            base_balance: dec!(1),
            quote_balance: dec!(60000),
        };
        let cfg = BacktestConfig {
            markets: Vec::new(),
            maker_fee: dec!(0.001),
            order_latency_ms: 5,
            feed_latency_ms: 5,
            feed_interval_ms: 0,
        };
        let check = run_market(
            &cfg,
            &market,
            strategies::build(name, toml::Value::Table(market.strategy_params.clone())).unwrap(),
            &events,
        );
        assert!(
            check.fills > 0,
            "{name} must trade in the benchmark: {check:?}"
        );
        // Every book update to the strategy (bookTicker), and the 1 s `!ticker@arr` cadence.
        for (feed, interval_ms) in [("book_ticker", 0), ("ticker_1s", 1_000)] {
            let cfg = BacktestConfig {
                markets: Vec::new(),
                maker_fee: cfg.maker_fee,
                order_latency_ms: cfg.order_latency_ms,
                feed_latency_ms: cfg.feed_latency_ms,
                feed_interval_ms: interval_ms,
            };
            group.bench_function(format!("{name}/{feed}/random_walk_1h"), |b| {
                b.iter(|| {
                    let strategy =
                        strategies::build(name, toml::Value::Table(market.strategy_params.clone()))
                            .unwrap();
                    black_box(run_market(&cfg, &market, strategy, black_box(&events)))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
