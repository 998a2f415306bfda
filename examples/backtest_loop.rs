//! The every-update backtest benchmark (`benches/strategies_backtest.rs`, `spread/book_ticker`)
//! as a plain loop, for A/B runs and profilers that want a process rather than criterion:
//!
//! ```sh
//! cargo build --release --example backtest_loop
//! target/release/examples/backtest_loop 40      # best and mean of 40 runs
//! valgrind --tool=callgrind --toggle-collect='mmd::backtest::run_market' \
//!     target/release/examples/backtest_loop 2   # exact instruction counts, blind to load
//! ```

use mmd::backtest::{benchmark, run_market};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40);
    let events = benchmark::events();
    let market = benchmark::market("spread");
    let cfg = benchmark::config(0);
    let mut best = f64::MAX;
    let started = Instant::now();
    for _ in 0..runs {
        let Ok(strategy) =
            strategies::build("spread", toml::Value::Table(market.strategy_params.clone()))
        else {
            eprintln!("the benchmark's spread parameters did not build");
            std::process::exit(1);
        };
        let t = Instant::now();
        black_box(run_market(&cfg, &market, strategy, black_box(&events)));
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{runs} runs of {} events: best {:.3} ms, mean {:.3} ms",
        events.len(),
        best * 1e3,
        started.elapsed().as_secs_f64() * 1e3 / runs.max(1) as f64
    );
}
