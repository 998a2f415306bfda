//! Decode and sign benches (issue 6): `decode/ticker_arr` on a 2,000-symbol frame
//! against an owned serde_json decode and a memcpy of the same bytes; one bookTicker,
//! one executionReport, one order signature, each next to its reference (the serde
//! decoders the scanners fall back to, the `hmac` crate) for a same-binary A/B.
//!
//! cargo bench --bench decode -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmd::binance::decode::{
    SymbolSet, decode_market_frame, decode_market_frame_validating, decode_user_event,
    decode_user_event_keyed, decode_user_event_keyed_validating,
};
use mmd::binance::sign::{HmacSigner, rest_payload};
use mmd::binance::testing::{book_ticker_frame, execution_report_frame, ticker_arr_frame};
use mmd::binance::types::MarketEvent;
use rust_decimal::Decimal;
use serde::Deserialize;

/// What a naive client does: every ticker into an owned struct with every field.
#[allow(dead_code)]
#[derive(Deserialize)]
struct OwnedTicker {
    e: String,
    #[serde(rename = "E")]
    event_time: u64,
    s: String,
    p: Decimal,
    #[serde(rename = "P")]
    pct: Decimal,
    w: Decimal,
    x: Decimal,
    c: Decimal,
    #[serde(rename = "Q")]
    last_qty: Decimal,
    b: Decimal,
    #[serde(rename = "B")]
    bid_qty: Decimal,
    a: Decimal,
    #[serde(rename = "A")]
    ask_qty: Decimal,
    o: Decimal,
    h: Decimal,
    l: Decimal,
    v: Decimal,
    q: Decimal,
    #[serde(rename = "O")]
    open_time: u64,
    #[serde(rename = "C")]
    close_time: u64,
    #[serde(rename = "F")]
    first_id: i64,
    #[serde(rename = "L")]
    last_id: i64,
    n: u64,
}

fn ticker_arr(c: &mut Criterion) {
    let frame = ticker_arr_frame(2_000, 1_700_000_000_000);
    let wanted = SymbolSet::new(["BTCUSDT", "ETHUSDT", "BNBUSDT", "S777USDT", "S1999USDT"]);
    let mut g = c.benchmark_group("decode/ticker_arr");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    let mut out: Vec<MarketEvent> = Vec::with_capacity(16);
    g.bench_function("scanner_5_symbols", |b| {
        b.iter(|| {
            out.clear();
            decode_market_frame(black_box(&frame), &wanted, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.bench_function("validating_borrowed_5_symbols", |b| {
        b.iter(|| {
            out.clear();
            decode_market_frame_validating(black_box(&frame), &wanted, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.bench_function("baseline_owned_serde_json", |b| {
        b.iter(|| {
            let all: Vec<OwnedTicker> = serde_json::from_str(black_box(&frame)).unwrap();
            black_box(all.len())
        })
    });
    let mut copy = vec![0u8; frame.len()];
    g.bench_function("baseline_memcpy", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(frame.as_bytes()));
            black_box(copy[copy.len() / 2])
        })
    });
    g.finish();
}

fn small_frames(c: &mut Criterion) {
    let book = book_ticker_frame(400_900_217);
    let wanted = SymbolSet::new(["BNBUSDT", "BTCUSDT"]);
    let mut out = Vec::with_capacity(4);
    c.bench_function("decode/book_ticker", |b| {
        b.iter(|| {
            out.clear();
            decode_market_frame(black_box(&book), &wanted, &mut out).unwrap();
            black_box(out.len())
        })
    });
    c.bench_function("decode/book_ticker_serde_reference", |b| {
        b.iter(|| {
            out.clear();
            decode_market_frame_validating(black_box(&book), &wanted, &mut out).unwrap();
            black_box(out.len())
        })
    });
    let er = execution_report_frame(8_641_984);
    c.bench_function("decode/execution_report", |b| {
        b.iter(|| black_box(decode_user_event(black_box(&er)).unwrap()))
    });
    // What the stream task calls: the event plus its dedup key.
    c.bench_function("decode/execution_report_keyed", |b| {
        b.iter(|| black_box(decode_user_event_keyed(black_box(&er)).unwrap()))
    });
    c.bench_function("decode/execution_report_serde_reference", |b| {
        b.iter(|| black_box(decode_user_event_keyed_validating(black_box(&er)).unwrap()))
    });
    let signer =
        HmacSigner::new(b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j");
    let payload = rest_payload([
        ("symbol", "BTCUSDT"),
        ("side", "BUY"),
        ("type", "LIMIT_MAKER"),
        ("quantity", "0.001"),
        ("price", "65000.1"),
        ("newClientOrderId", "mmd-BTCUSDT-000000000042"),
        ("newOrderRespType", "RESULT"),
        ("recvWindow", "5000"),
        ("timestamp", "1700000000000"),
    ]);
    c.bench_function("sign/order_hmac_hex", |b| {
        b.iter(|| black_box(signer.sign_hex(black_box(payload.as_bytes()))))
    });
    // The previous implementation: clone the keyed hmac crate state, hex::encode.
    use hmac::{KeyInit, Mac};
    let keyed = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(
        b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    )
    .unwrap();
    c.bench_function("sign/order_hmac_crate_reference", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(payload.as_bytes()));
            black_box(hex::encode(mac.finalize().into_bytes()))
        })
    });
}

criterion_group!(benches, ticker_arr, small_frames);
criterion_main!(benches);
