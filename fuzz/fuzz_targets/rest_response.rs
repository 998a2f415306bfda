//! REST and WebSocket API response bodies into the wire types: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmd::binance::types::*;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<OrderResponse>(data);
    let _ = serde_json::from_slice::<Vec<CanceledOpenOrder>>(data);
    let _ = serde_json::from_slice::<Account>(data);
    let _ = serde_json::from_slice::<ExchangeInfo>(data);
    let _ = serde_json::from_slice::<Vec<MyTrade>>(data);
    let _ = serde_json::from_slice::<ApiErrorBody>(data);
    let _ = serde_json::from_slice::<ServerTime>(data);
    let _ = serde_json::from_slice::<ListenKey>(data);
    if let Ok(r) = serde_json::from_slice::<WsApiResponse>(data)
        && let Some(result) = r.result
    {
        let _ = serde_json::from_str::<SubscriptionResult>(result.get());
    }
});
