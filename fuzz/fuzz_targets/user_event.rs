//! User-stream frames in any envelope: an event or an error, never a panic. The
//! `executionReport` scanner only ever answers for frames the validating (serde)
//! decoder accepts, with the same event and duplicate key, and the public decoder
//! always equals the validating one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmd::binance::decode::{
    decode_user_event, decode_user_event_keyed, decode_user_event_keyed_validating,
    scan_execution_report_only,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = std::str::from_utf8(data) {
        let plain = decode_user_event(frame);
        let keyed = decode_user_event_keyed(frame);
        let validating = decode_user_event_keyed_validating(frame);
        assert_eq!(plain, keyed.clone().map(|(ev, _)| ev));
        assert_eq!(keyed, validating, "fast path disagrees with serde");
        if let Some(scanned) = scan_execution_report_only(frame) {
            assert_eq!(
                Ok(scanned),
                validating,
                "scanner accepted what serde refuses"
            );
        }
    }
});
