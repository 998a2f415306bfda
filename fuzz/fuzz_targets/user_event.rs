//! User-stream frames in any envelope: an event or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = std::str::from_utf8(data) {
        let plain = mmd::binance::decode::decode_user_event(frame);
        let keyed = mmd::binance::decode::decode_user_event_keyed(frame);
        assert_eq!(plain, keyed.map(|(ev, _)| ev));
    }
});
