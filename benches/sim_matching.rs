//! Matching engine throughput, single-threaded, in-process (target: >= 1,000,000 order
//! operations per second). One operation = an insert, a cancel or an aggressive match.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmd::sim::book::{Book, Resting, Side};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;
use std::hint::black_box;

const OPS: u64 = 10_000;

fn bench_book(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_matching");
    g.throughput(Throughput::Elements(OPS));
    g.bench_function("book_mixed_ops", |b| {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut book = Book::new();
        let mut next_id = 1u64;
        let mut live: Vec<u64> = Vec::new();
        let mut fills = Vec::with_capacity(64);
        let mid = 6_000_000i64;
        b.iter(|| {
            for _ in 0..OPS {
                match rng.random_range(0..10u32) {
                    // 60% passive inserts around the touch.
                    0..=5 => {
                        let side = if rng.random::<bool>() {
                            Side::Buy
                        } else {
                            Side::Sell
                        };
                        let off = rng.random_range(1..50i64);
                        let price = if side == Side::Buy {
                            mid - off
                        } else {
                            mid + off
                        };
                        let qty = Decimal::new(rng.random_range(1..1000i64), 5);
                        book.insert(
                            side,
                            price,
                            Resting {
                                id: next_id,
                                owner: 1,
                                qty,
                            },
                        );
                        live.push(next_id);
                        next_id += 1;
                    }
                    // 30% cancels of random live orders.
                    6..=8 => {
                        if !live.is_empty() {
                            let i = rng.random_range(0..live.len());
                            let id = live.swap_remove(i);
                            black_box(book.cancel(id));
                        }
                    }
                    // 10% aggressive orders through a few levels.
                    _ => {
                        let side = if rng.random::<bool>() {
                            Side::Buy
                        } else {
                            Side::Sell
                        };
                        let limit = if side == Side::Buy {
                            mid + 10
                        } else {
                            mid - 10
                        };
                        fills.clear();
                        let qty = Decimal::new(rng.random_range(1..3000i64), 5);
                        black_box(book.match_incoming(side, Some(limit), qty, &mut fills));
                    }
                }
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench_book);
criterion_main!(benches);
