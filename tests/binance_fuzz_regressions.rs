//! Inputs found by the cargo-fuzz targets (a sample of their corpora, see
//! fuzz/README.md), replayed with the targets' invariants on every test run.

use mmd::binance::decode::{
    SymbolSet, decode_market_frame, decode_market_frame_validating, decode_user_event,
    decode_user_event_keyed, scan_ticker_arr_only,
};

fn inputs(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(dir);
    let mut v: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no regression inputs in {}", root.display());
    v
}

#[test]
fn market_corpus_keeps_scanner_and_validating_parser_in_agreement() {
    let wanted = SymbolSet::new(["BTCUSDT", "ETHUSDT", "BNBBTC", "１２３４"]);
    for (name, data) in inputs("market") {
        let Ok(frame) = std::str::from_utf8(&data) else {
            continue;
        };
        let mut fast = Vec::new();
        let fast_result = decode_market_frame(frame, &wanted, &mut fast);
        let mut slow = Vec::new();
        let slow_result = decode_market_frame_validating(frame, &wanted, &mut slow);
        if slow_result.is_ok() {
            assert_eq!(fast_result, slow_result, "{name}");
            assert_eq!(fast, slow, "{name}");
        }
        let mut scanned = Vec::new();
        if scan_ticker_arr_only(frame, &wanted, &mut scanned) && slow_result.is_ok() {
            assert_eq!(scanned, slow, "{name}");
        }
    }
}

#[test]
fn user_corpus_decodes_or_errors_consistently() {
    for (name, data) in inputs("user") {
        let Ok(frame) = std::str::from_utf8(&data) else {
            continue;
        };
        let plain = decode_user_event(frame);
        let keyed = decode_user_event_keyed(frame).map(|(ev, _)| ev);
        assert_eq!(plain, keyed, "{name}");
    }
}
