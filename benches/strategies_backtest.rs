//! Backtest throughput: strategy + risk + diff + the simulator's matching per market event,
//! single-threaded, on the simulator's seeded random walk (events generated up front).
//! Target (issue 4): >= 2,000,000 market events/s. The runs are `mmd::backtest::benchmark`,
//! whose trading outputs `the_benchmark_runs_trade_exactly_as_pinned` pins.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmd::backtest::{benchmark, run_market};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let events = benchmark::events();
    let mut group = c.benchmark_group("backtest");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    for name in ["spread", "avellaneda"] {
        let market = benchmark::market(name);
        let build =
            || strategies::build(name, toml::Value::Table(market.strategy_params.clone())).unwrap();
        let check = run_market(&benchmark::config(0), &market, build(), &events);
        assert!(
            check.fills > 0,
            "{name} must trade in the benchmark: {check:?}"
        );
        // Every book update to the strategy (bookTicker), and the 1 s `!ticker@arr` cadence.
        for (feed, interval_ms) in [("book_ticker", 0), ("ticker_1s", 1_000)] {
            let cfg = benchmark::config(interval_ms);
            group.bench_function(format!("{name}/{feed}/random_walk_1h"), |b| {
                b.iter(|| black_box(run_market(&cfg, &market, build(), black_box(&events))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
