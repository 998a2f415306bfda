//! Market frames: never panic; the `!ticker@arr` scanner agrees with the
//! validating parser wherever the validating parser accepts the frame, and the
//! `bookTicker` scanner only ever answers for frames the validating parser accepts,
//! with the same events.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmd::binance::decode::{
    SymbolSet, decode_market_frame, decode_market_frame_validating, scan_book_ticker_only,
    scan_ticker_arr_only,
};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    let wanted = SymbolSet::new(["BTCUSDT", "ETHUSDT", "BNBBTC", "BNBUSDT", "１２３４"]);
    let mut fast = Vec::new();
    let fast_result = decode_market_frame(frame, &wanted, &mut fast);
    let mut slow = Vec::new();
    let slow_result = decode_market_frame_validating(frame, &wanted, &mut slow);
    if slow_result.is_ok() {
        assert_eq!(
            fast_result, slow_result,
            "scanner disagrees on a valid frame"
        );
        assert_eq!(fast, slow, "scanner disagrees on a valid frame");
    }
    let mut scanned = Vec::new();
    if scan_ticker_arr_only(frame, &wanted, &mut scanned) {
        for ev in &scanned {
            if let mmd::binance::types::MarketEvent::Ticker(t) = ev {
                assert!(wanted.contains(&t.symbol));
            }
        }
        if slow_result.is_ok() {
            assert_eq!(scanned, slow);
        }
    }
    let mut book = Vec::new();
    if scan_book_ticker_only(frame, &wanted, &mut book) {
        assert_eq!(
            slow_result,
            Ok(()),
            "bookTicker scanner accepted an invalid frame"
        );
        assert_eq!(book, slow, "bookTicker scanner disagrees");
    }
});
