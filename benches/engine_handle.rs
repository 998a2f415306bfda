//! `Engine::handle` on a bookTicker frame, warm (issue 6): one `spread` market configured
//! as `mmd bench --mode book-ticker --refresh-bps 0` configures it, past its startup
//! resync and quoting. The stage stamps put ~36 µs in `handle` while strategy, risk and
//! diff take ~0.6 µs (`cargo bench -p strategies --bench decide`): this bench isolates
//! the rest, without sockets, tasks or a clock.
//!
//! Only the market frame's `handle` is timed. What the runner does around it is not:
//! `after_requests`, the REST answers to the placements and cancels it sent (fed back as
//! `Input::Placed` / `Input::Canceled`, as the request tasks would), and a `Tick` every
//! simulated second (finished orders are pruned there, so the order book stays steady).
//! The engine's clock advances 100 ms per frame (10 frames/s, like the latency bench).
//!
//! - `unchanged`: the same book every frame; nothing to send.
//! - `moved`: every frame moves the book 20 ticks: cancels both quotes (their
//!   replacements wait for the cancels' answers, fed back untimed).
//! - `mixed`: two frames at one price, two at another: half the frames cancel.
//!
//! - `book_ticker_cold/*`: the same with 2 MiB written between frames (untimed), which
//!   clears L1 and L2 (not L3, the branch predictors or L1i) as the rest of a process
//!   at 10 frames/s does.
//!
//! cargo bench --bench engine_handle -- --warm-up-time 1 --measurement-time 3
//!
//! `DEEP_COLD=1 cargo bench --bench engine_handle` prints instead the percentiles of
//! `handle` after gaps: none, 64 MiB written, a 1 ms or 100 ms sleep, a 100 ms spin.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mmd::binance::types::{
    Account, BookTicker, MarketEvent, OrderResponse, OrderStatus, RestBalance,
};
use mmd::config::MarketConfig;
use mmd::engine::{
    Command, ConnectReason, Engine, EngineSettings, Input, MarketSetup, ResyncReason, Snapshot,
    Stream,
};
use mmd::metrics::Metrics;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const SYMBOL: &str = "BTCUSDT";

/// The market `mmd bench` quotes (src/bench.rs), with the rules the tests use.
fn setup() -> MarketSetup {
    let strategy: toml::Table = toml::from_str(
        "bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.001\"\nrefresh_tolerance_bps = 0\n",
    )
    .unwrap();
    let risk: toml::Table = toml::from_str("max_base_position = \"100\"\n").unwrap();
    MarketSetup {
        config: MarketConfig {
            file: "BTCUSDT.toml".into(),
            symbol: SYMBOL.into(),
            strategy_name: "spread".into(),
            strategy_params: strategy,
            risk,
        },
        base_asset: "BTC".into(),
        quote_asset: "USDT".into(),
        rules: strategies::SymbolRules {
            tick_size: dec!(0.01),
            step_size: dec!(0.00001),
            min_qty: dec!(0.00001),
            max_qty: dec!(1000),
            min_notional: dec!(5),
            max_notional: None,
        },
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        account: Account {
            update_time: 0,
            balances: vec![
                RestBalance {
                    asset: "USDT".into(),
                    free: dec!(1000000),
                    locked: dec!(0),
                },
                RestBalance {
                    asset: "BTC".into(),
                    free: dec!(100),
                    locked: dec!(0),
                },
            ],
        },
        as_of_ms: 500,
        open_orders: vec![(SYMBOL.into(), vec![])],
        trades: vec![(SYMBOL.into(), vec![])],
    }
}

fn book_ticker(update_id: u64, bid: Decimal, ask: Decimal) -> Input {
    Input::Market {
        event: MarketEvent::BookTicker(BookTicker {
            update_id,
            symbol: SYMBOL.into(),
            best_bid: bid,
            best_bid_qty: dec!(1),
            best_ask: ask,
            best_ask_qty: dec!(1),
        }),
        received: Instant::now(),
    }
}

fn answer(symbol: &str, client_id: &str, order_id: u64, status: OrderStatus) -> OrderResponse {
    OrderResponse {
        symbol: symbol.to_owned(),
        order_id,
        client_order_id: client_id.to_owned(),
        orig_client_order_id: None,
        transact_time: Some(1),
        price: None,
        orig_qty: None,
        executed_qty: Some(Decimal::ZERO),
        cummulative_quote_qty: None,
        status: Some(status),
        time_in_force: None,
        order_type: None,
        side: None,
        fills: vec![],
    }
}

/// An engine past its startup, quoting, and the runner's side of the loop.
struct Rig {
    e: Engine,
    now: u64,
    frames: u64,
    order_ids: u64,
    /// Commands waiting for their (untimed) answers.
    pending: Vec<Command>,
}

impl Rig {
    fn new() -> Self {
        let mut s = EngineSettings::new("mmd", "bench01");
        // No periodic resync or status check to answer in the middle of a run.
        s.resync_interval_ms = u64::MAX / 4;
        s.status_check_interval_ms = u64::MAX / 4;
        let e = Engine::new(s, vec![setup()], Metrics::new()).unwrap();
        let mut r = Rig {
            e,
            now: 1_000_000,
            frames: 0,
            order_ids: 1,
            pending: Vec::new(),
        };
        r.feed(Input::StreamUp {
            stream: Stream::Market,
            reason: ConnectReason::Initial,
        });
        r.feed(Input::StreamUp {
            stream: Stream::User,
            reason: ConnectReason::Initial,
        });
        r.feed(Input::Resynced {
            reason: ResyncReason::Startup,
            result: Ok(snapshot()),
        });
        r.settle();
        r.frame(dec!(60000.00), dec!(60000.10));
        let placed = r
            .pending
            .iter()
            .filter(|c| matches!(c, Command::Place(_)))
            .count();
        assert_eq!(placed, 2, "the engine quotes both sides: {:?}", r.pending);
        r.settle();
        r
    }

    /// An untimed input, as the runner feeds it: its commands wait for answers.
    fn feed(&mut self, input: Input) {
        let c = self.e.handle(input, self.now);
        self.pending.extend(c);
        self.pending.extend(self.e.after_requests());
    }

    /// Answers every request sent so far (placed: NEW; canceled: CANCELED), until the
    /// engine has nothing more to ask.
    fn settle(&mut self) {
        while !self.pending.is_empty() {
            for c in std::mem::take(&mut self.pending) {
                match c {
                    Command::Place(p) => {
                        self.order_ids += 1;
                        let resp =
                            answer(&p.symbol, &p.client_id, self.order_ids, OrderStatus::New);
                        self.feed(Input::Placed {
                            client_id: p.client_id,
                            result: Ok(resp),
                        });
                    }
                    Command::Cancel { symbol, client_id } => {
                        let resp = answer(&symbol, &client_id, 0, OrderStatus::Canceled);
                        self.feed(Input::Canceled {
                            client_id,
                            result: Ok(resp),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// One frame: its `handle` timed, its commands left waiting for their answers.
    fn frame(&mut self, bid: Decimal, ask: Decimal) -> Duration {
        self.now += 100;
        self.frames += 1;
        let input = book_ticker(self.frames, bid, ask);
        let t0 = Instant::now();
        let c = timed_handle(&mut self.e, black_box(input), self.now);
        let dt = t0.elapsed();
        black_box(&c);
        self.pending.extend(c);
        self.pending.extend(self.e.after_requests());
        dt
    }

    /// One timed `handle` of a frame; the runner's side after it is untimed.
    fn timed_frame(&mut self, bid: Decimal, ask: Decimal) -> Duration {
        let dt = self.frame(bid, ask);
        self.settle();
        if self.frames.is_multiple_of(10) {
            self.feed(Input::Tick);
            self.settle();
        }
        dt
    }
}

/// Writes one byte per cache line of `buf`, evicting what the caches held before.
fn write_through(buf: &mut [u8]) {
    for k in (0..buf.len()).step_by(64) {
        buf[k] = buf[k].wrapping_add(1);
    }
    black_box(buf);
}

/// Out of line so that a profile can tell the timed `handle` from the untimed ones
/// (`perf report --parent timed_handle`).
#[inline(never)]
fn timed_handle(e: &mut Engine, input: Input, now: u64) -> Vec<Command> {
    e.handle(input, now)
}

/// `DEEP_COLD=1`: the timed `handle` of 2,000 frames (150 with a 100 ms gap) after
/// each kind of gap, as percentiles. Not a criterion bench: the gaps dwarf the timed
/// part. What a 100 ms gap does to a 1-2 µs `handle` on this machine is the question.
fn deep_cold() {
    let mut evict = vec![0u8; 64 << 20];
    let prices = [
        (dec!(60000.00), dec!(60000.10)),
        (dec!(60000.20), dec!(60000.30)),
    ];
    #[derive(Clone, Copy, PartialEq)]
    enum Gap {
        None,
        Evict64MiB,
        Sleep(u64),
        Spin(u64),
    }
    for (label, gap, n) in [
        ("back_to_back", Gap::None, 2000),
        ("evict_64MiB", Gap::Evict64MiB, 2000),
        ("sleep_1ms", Gap::Sleep(1), 1000),
        ("sleep_100ms", Gap::Sleep(100), 150),
        ("spin_100ms", Gap::Spin(100), 150),
    ] {
        for moved in [false, true] {
            let mut rig = Rig::new();
            let mut v = Vec::new();
            for i in 0..n {
                match gap {
                    Gap::None => {}
                    Gap::Evict64MiB => write_through(&mut evict),
                    Gap::Sleep(ms) => std::thread::sleep(Duration::from_millis(ms)),
                    Gap::Spin(ms) => {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_millis(ms) {
                            std::hint::spin_loop();
                        }
                    }
                }
                let (bid, ask) = if moved { prices[i % 2] } else { prices[0] };
                v.push(rig.timed_frame(bid, ask).as_nanos() as u64);
            }
            // The percentiles `mmd bench` reports, by the same nearest rank.
            let Some(s) = mmd::bench::summarize(v) else {
                continue;
            };
            println!(
                "{label:13} {:9} n={:4} p50={:7.2} µs p99={:7.2} µs p99.9={:7.2} µs max={:7.2} µs",
                if moved { "moved" } else { "unchanged" },
                s.samples,
                s.p50_us,
                s.p99_us,
                s.p999_us,
                s.max_us,
            );
        }
    }
}

fn bench_handle(c: &mut Criterion) {
    if std::env::var_os("DEEP_COLD").is_some() {
        deep_cold();
        std::process::exit(0);
    }
    let mut g = c.benchmark_group("engine_handle/book_ticker");
    let cases: [(&str, &[(Decimal, Decimal)]); 3] = [
        ("unchanged", &[(dec!(60000.00), dec!(60000.10))]),
        (
            "moved",
            &[
                (dec!(60000.00), dec!(60000.10)),
                (dec!(60000.20), dec!(60000.30)),
            ],
        ),
        (
            "mixed",
            &[
                (dec!(60000.00), dec!(60000.10)),
                (dec!(60000.00), dec!(60000.10)),
                (dec!(60000.20), dec!(60000.30)),
                (dec!(60000.20), dec!(60000.30)),
            ],
        ),
    ];
    for (name, prices) in cases {
        bench_case(&mut g, name, prices, None);
    }
    g.finish();

    // The same frames with the data caches cleared in between (untimed): at 10 frames/s
    // the runner, the TLS and the simulator run between two frames and the engine's
    // state is no longer in L1/L2 when the next one comes.
    let mut g = c.benchmark_group("engine_handle/book_ticker_cold");
    g.sample_size(10);
    let mut evict = vec![0u8; 2 << 20];
    for (name, prices) in [cases[0], cases[1]] {
        bench_case(&mut g, name, prices, Some(&mut evict));
    }
    g.finish();
}

/// One case: frames cycling through `prices`, each timed alone; with `evict`, that buffer
/// is written through (untimed) before each frame.
fn bench_case(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    prices: &[(Decimal, Decimal)],
    mut evict: Option<&mut Vec<u8>>,
) {
    let mut rig = Rig::new();
    let mut i = 0usize;
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if let Some(evict) = evict.as_deref_mut() {
                    write_through(evict);
                }
                let (bid, ask) = prices[i % prices.len()];
                i += 1;
                total += rig.timed_frame(bid, ask);
            }
            total
        })
    });
}

criterion_group!(benches, bench_handle);
criterion_main!(benches);
