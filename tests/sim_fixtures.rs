//! Every payload kind the simulator emits has exactly the keys and JSON types of Binance's
//! own example in ../shared/binance-fixtures/spot.

mod sim_common;

use mmd::sim::SimConfig;
use reqwest::Method;
use rust_decimal_macros::dec;
use serde_json::Value;
use sim_common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// executionReport fields Binance documents as conditional (present only in some cases).
const ER_CONDITIONAL: &[&str] = &[
    "v", "d", "D", "j", "J", "A", "B", "u", "U", "Cs", "pl", "pL", "pY", "b", "a", "k", "uS", "gP",
    "gOT", "gOV", "gp", "eR",
];

#[tokio::test]
async fn rest_payloads_match_fixtures() {
    let sim = start(test_config()).await;
    sim.set_market_frozen(true);
    let c = Client::new(&sim.rest_url());
    assert_same_shape(
        &c.public("/api/v3/ping").await.body,
        &fixture("spot/rest/legacy/userDataStream.put.json"),
        &[],
        "ping",
    );
    assert_same_shape(
        &c.public("/api/v3/time").await.body,
        &fixture("spot/rest/time.json"),
        &[],
        "time",
    );

    // exchangeInfo: top level, symbol object, each filter against its own fixture.
    let info = c.public("/api/v3/exchangeInfo").await.body;
    let fx = fixture("spot/rest/exchangeInfo.with-filters.json");
    let mut info_top = info.clone();
    let mut fx_top = fx.clone();
    for v in [&mut info_top, &mut fx_top] {
        v["symbols"] = Value::Array(vec![]);
        v["sors"] = Value::Array(vec![]);
    }
    assert_same_shape(&info_top, &fx_top, &[], "exchangeInfo");
    for rl in info["rateLimits"].as_array().unwrap() {
        assert_same_shape(rl, &fx["rateLimits"][0], &[], "rateLimits");
    }
    let sym = &info["symbols"][0];
    let mut sym_nofilters = sym.clone();
    sym_nofilters["filters"] = Value::Array(vec![]);
    let mut fx_sym = fx["symbols"][0].clone();
    fx_sym["filters"] = Value::Array(vec![]);
    assert_same_shape(&sym_nofilters, &fx_sym, &[], "symbol");
    for f in sym["filters"].as_array().unwrap() {
        let name = f["filterType"].as_str().unwrap();
        assert_same_shape(
            f,
            &fixture(&format!("spot/rest/filters/{name}.json")),
            &[],
            name,
        );
    }

    let r = c.place_limit("BTCUSDT", "BUY", "50000", "0.01").await;
    assert_same_shape(
        &r.body,
        &fixture("spot/rest/order.full.json"),
        &[],
        "order FULL",
    );
    let id = r.body["orderId"].to_string();
    for (resp, file) in [("ACK", "order.ack.json"), ("RESULT", "order.result.json")] {
        let r = c
            .signed(
                Method::POST,
                "/api/v3/order",
                &[
                    ("symbol", "BTCUSDT"),
                    ("side", "BUY"),
                    ("type", "LIMIT"),
                    ("timeInForce", "GTC"),
                    ("quantity", "0.01"),
                    ("price", "50000"),
                    ("newOrderRespType", resp),
                ],
            )
            .await;
        assert_same_shape(&r.body, &fixture(&format!("spot/rest/{file}")), &[], resp);
    }
    // A FULL response with fills.
    let r = c
        .signed(
            Method::POST,
            "/api/v3/order",
            &[
                ("symbol", "BTCUSDT"),
                ("side", "SELL"),
                ("type", "MARKET"),
                ("quantity", "0.001"),
            ],
        )
        .await;
    assert!(!r.body["fills"].as_array().unwrap().is_empty());
    assert_same_shape(
        &r.body,
        &fixture("spot/rest/order.full.json"),
        &[],
        "order FULL with fills",
    );
    let q = c
        .signed(
            Method::GET,
            "/api/v3/order",
            &[("symbol", "BTCUSDT"), ("orderId", &id)],
        )
        .await;
    assert_same_shape(
        &q.body,
        &fixture("spot/rest/queryOrder.json"),
        &[],
        "queryOrder",
    );
    let open = c.signed(Method::GET, "/api/v3/openOrders", &[]).await;
    assert_same_shape(
        &open.body,
        &fixture("spot/rest/openOrders.json"),
        &[],
        "openOrders",
    );
    let cancel = c
        .signed(
            Method::DELETE,
            "/api/v3/order",
            &[("symbol", "BTCUSDT"), ("orderId", &id)],
        )
        .await;
    assert_same_shape(
        &cancel.body,
        &fixture("spot/rest/cancelOrder.json"),
        &[],
        "cancelOrder",
    );
    let all = c
        .signed(
            Method::DELETE,
            "/api/v3/openOrders",
            &[("symbol", "BTCUSDT")],
        )
        .await;
    let fx_all = fixture("spot/rest/cancelOpenOrders.json");
    for o in all.body.as_array().unwrap() {
        assert_same_shape(o, &fx_all[0], &[], "cancelOpenOrders[]");
    }
    let acct = c.signed(Method::GET, "/api/v3/account", &[]).await;
    assert_same_shape(
        &acct.body,
        &fixture("spot/rest/account.json"),
        &[],
        "account",
    );
    let trades = c
        .signed(Method::GET, "/api/v3/myTrades", &[("symbol", "BTCUSDT")])
        .await;
    assert!(!trades.body.as_array().unwrap().is_empty());
    assert_same_shape(
        &trades.body,
        &fixture("spot/rest/myTrades.json"),
        &[],
        "myTrades",
    );
    let err = c.public("/api/v3/exchangeInfo?symbol=NOPE").await;
    assert_same_shape(&err.body, &fixture("spot/rest/error.json"), &[], "error");
    let lk = c.api_key_only(Method::POST, "/api/v3/userDataStream").await;
    assert_same_shape(
        &lk.body,
        &fixture("spot/rest/legacy/userDataStream.post.json"),
        &[],
        "listenKey",
    );
    let key = lk.body["listenKey"].as_str().unwrap();
    assert_eq!(key.len(), 60);
    let put = c
        .api_key_only(
            Method::PUT,
            &format!("/api/v3/userDataStream?listenKey={key}"),
        )
        .await;
    assert_same_shape(
        &put.body,
        &fixture("spot/rest/legacy/userDataStream.put.json"),
        &[],
        "PUT",
    );
    let del = c
        .api_key_only(
            Method::DELETE,
            &format!("/api/v3/userDataStream?listenKey={key}"),
        )
        .await;
    assert_same_shape(
        &del.body,
        &fixture("spot/rest/legacy/userDataStream.delete.json"),
        &[],
        "DELETE",
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn market_payloads_match_fixtures() {
    let sim = start(test_config()).await;
    let mut ws = connect(&format!("{}/ws/!ticker@arr", sim.stream_url())).await;
    let arr = next_json(&mut ws, T).await.unwrap();
    assert_same_shape(
        &arr,
        &fixture("spot/market/ticker_arr.composed.json"),
        &[],
        "!ticker@arr",
    );
    let mut ws = connect(&format!("{}/ws/btcusdt@ticker", sim.stream_url())).await;
    assert_same_shape(
        &next_json(&mut ws, T).await.unwrap(),
        &fixture("spot/market/24hrTicker.json"),
        &[],
        "ticker",
    );
    let mut ws = connect(&format!("{}/ws/btcusdt@bookTicker", sim.stream_url())).await;
    assert_same_shape(
        &next_json(&mut ws, T).await.unwrap(),
        &fixture("spot/market/bookTicker.json"),
        &[],
        "bookTicker",
    );
    let mut ws = connect(&format!(
        "{}/stream?streams=btcusdt@ticker",
        sim.stream_url()
    ))
    .await;
    assert_same_shape(
        &next_json(&mut ws, T).await.unwrap(),
        &fixture("spot/market/combined.24hrTicker.composed.json"),
        &[],
        "combined ticker",
    );
    sim.faults()
        .server_shutdown(mmd::sim::StreamTarget::Market)
        .unwrap();
    let v = loop {
        let v = next_json(&mut ws, T).await.unwrap();
        if v["stream"] == "!serverShutdown" {
            break v;
        }
    };
    assert_same_shape(
        &v,
        &fixture("spot/market/combined.serverShutdown.json"),
        &[],
        "serverShutdown",
    );
    let mut raw = connect(&format!("{}/ws/ethusdt@ticker", sim.stream_url())).await;
    next_json(&mut raw, T).await.unwrap();
    sim.faults()
        .server_shutdown(mmd::sim::StreamTarget::Market)
        .unwrap();
    let v = wait_event(&mut raw, "serverShutdown", T).await.unwrap();
    assert_same_shape(
        &v,
        &fixture("spot/market/serverShutdown.json"),
        &[],
        "serverShutdown raw",
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn user_payloads_match_fixtures() {
    let sim = start(SimConfig {
        legacy_account_info: true,
        listen_key_validity: Duration::from_secs(2),
        ..test_config()
    })
    .await;
    sim.set_market_frozen(true);
    let c = Client::new(&sim.rest_url());
    let key = c.new_listen_key().await;
    let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.place_limit("BTCUSDT", "BUY", "50000", "0.01").await;
    let new = wait_event(&mut ws, "executionReport", T).await.unwrap();
    assert_same_shape(
        &new,
        &fixture("spot/user-data/legacy/executionReport.new.unwrapped.2025.json"),
        ER_CONDITIONAL,
        "ER NEW",
    );
    let pos = wait_event(&mut ws, "outboundAccountPosition", T)
        .await
        .unwrap();
    assert_same_shape(
        &pos,
        &fixture("spot/user-data/legacy/outboundAccountPosition.unwrapped.json"),
        &[],
        "position",
    );
    let info = wait_event(&mut ws, "outboundAccountInfo", T).await.unwrap();
    assert_same_shape(
        &info,
        &fixture("spot/user-data/legacy/outboundAccountInfo.json"),
        &[],
        "accountInfo",
    );
    c.signed(
        Method::POST,
        "/api/v3/order",
        &[
            ("symbol", "BTCUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.001"),
        ],
    )
    .await;
    wait_event(&mut ws, "executionReport", T).await.unwrap();
    let trade = wait_event(&mut ws, "executionReport", T).await.unwrap();
    assert_eq!(trade["x"], "TRADE");
    assert_same_shape(
        &trade,
        &fixture("spot/user-data/executionReport.trade.partial.json"),
        ER_CONDITIONAL,
        "ER TRADE",
    );
    // A MARKET order too large for the book: partial fills then EXPIRED, like the FAQ.
    let r = c
        .signed(
            Method::POST,
            "/api/v3/order",
            &[
                ("symbol", "ETHUSDT"),
                ("side", "SELL"),
                ("type", "MARKET"),
                ("quantity", "9"),
            ],
        )
        .await;
    assert_eq!(r.body["status"], "EXPIRED", "{:?}", r.body);
    // The FAQ's expired example predates origQuoteOrderQty/selfTradePreventionMode in
    // responses, so the current FULL shape is the reference; the status matches the FAQ's.
    assert_eq!(
        r.body["status"],
        fixture("spot/rest/order.full.market-expired.json")["status"]
    );
    assert_same_shape(
        &r.body,
        &fixture("spot/rest/order.full.json"),
        &[],
        "order expired",
    );
    let expired = loop {
        let e = wait_event(&mut ws, "executionReport", T).await.unwrap();
        if e["x"] == "EXPIRED" {
            break e;
        }
    };
    assert_same_shape(
        &expired,
        &fixture("spot/user-data/executionReport.expired.json"),
        ER_CONDITIONAL,
        "ER EXPIRED",
    );
    sim.deposit(KEY, "BTC", dec!(0.5));
    let bu = wait_event(&mut ws, "balanceUpdate", T).await.unwrap();
    assert_same_shape(
        &bu,
        &fixture("spot/user-data/legacy/balanceUpdate.unwrapped.json"),
        &[],
        "balanceUpdate",
    );
    let exp = wait_event(&mut ws, "listenKeyExpired", Duration::from_secs(4))
        .await
        .unwrap();
    assert_same_shape(
        &exp,
        &fixture("spot/user-data/legacy/listenKeyExpired.json"),
        &[],
        "listenKeyExpired",
    );
    sim.shutdown().await;
}
