//! Realistic synthetic payloads for benches, fuzz seeds and tests: Binance's exact
//! field sets and number formats, deterministic for a given seed.

/// A `!ticker@arr` frame of `n` symbols in Binance's compact wire layout
/// (every field of the spot `24hrTicker`, prices as 8-decimal strings).
/// The first symbols are `BTCUSDT`, `ETHUSDT`, `BNBUSDT`; the rest `S<i>USDT`.
pub fn ticker_arr_frame(n: usize, event_time: u64) -> String {
    let mut out = String::with_capacity(n * 420 + 2);
    out.push('[');
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ event_time;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let symbol = match i {
            0 => "BTCUSDT".to_owned(),
            1 => "ETHUSDT".to_owned(),
            2 => "BNBUSDT".to_owned(),
            _ => format!("S{i}USDT"),
        };
        let price = 1 + x % 9_000_000;
        let px = |delta: i64| {
            let v = (price as i64 + delta).max(1) as u64;
            format!("{}.{:08}", v / 100, (v % 100) * 1_000_000)
        };
        let qty = |k: u64| format!("{}.{:08}", (x >> k) % 1000, (x >> (k + 10)) % 100_000_000);
        if i > 0 {
            out.push(',');
        }
        use std::fmt::Write;
        let _ = write!(
            out,
            r#"{{"e":"24hrTicker","E":{event_time},"s":"{symbol}","p":"{}","P":"{}.{:03}","w":"{}","x":"{}","c":"{}","Q":"{}","b":"{}","B":"{}","a":"{}","A":"{}","o":"{}","h":"{}","l":"{}","v":"{}","q":"{}","O":{},"C":{},"F":{},"L":{},"n":{}}}"#,
            px(-5),
            (x >> 3) % 20,
            (x >> 9) % 1000,
            px(1),
            px(-3),
            px(0),
            qty(5),
            px(-1),
            qty(11),
            px(1),
            qty(17),
            px(-7),
            px(40),
            px(-40),
            qty(23),
            qty(29),
            event_time - 86_400_000,
            event_time,
            x % 1_000_000_000,
            x % 1_000_000_000 + (x >> 40) % 100_000,
            (x >> 40) % 100_000 + 1,
        );
    }
    out.push(']');
    out
}

/// One `<symbol>@bookTicker` payload as Binance sends it.
pub fn book_ticker_frame(update_id: u64) -> String {
    format!(
        r#"{{"u":{update_id},"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}"#
    )
}

/// A current (2026) executionReport, wrapped as the WebSocket API delivers it.
pub fn execution_report_frame(execution_id: u64) -> String {
    format!(
        r#"{{"subscriptionId":0,"event":{{"e":"executionReport","E":1499405658658,"s":"ETHBTC","c":"mUvoqJxFIILMdfAW5iGSOW","S":"BUY","o":"LIMIT","f":"GTC","q":"1.00000000","p":"0.10264410","P":"0.00000000","F":"0.00000000","g":-1,"C":"","x":"TRADE","X":"PARTIALLY_FILLED","r":"NONE","i":4293153,"l":"0.50000000","z":"0.50000000","L":"0.10264410","n":"0.00050000","N":"BNB","T":1499405658657,"t":77,"v":3,"I":{execution_id},"w":false,"m":true,"M":true,"O":1499405658657,"Z":"0.05132205","Y":"0.05132205","Q":"0.00000000","W":1499405658657,"V":"NONE"}}}}"#
    )
}
