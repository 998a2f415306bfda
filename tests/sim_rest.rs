//! The simulator's REST API over a real socket: auth errors, filters, order lifecycle,
//! signing vectors, rate limits.

mod sim_common;

use mmd::binance::sign::HmacSigner;
use mmd::sim::{AccountConfig, RateLimitConfig, SimConfig};
use reqwest::Method;
use rust_decimal_macros::dec;
use serde_json::Value;
use sim_common::*;
use std::time::Duration;

#[tokio::test]
async fn public_endpoints_answer_like_binance() {
    let sim = start(test_config()).await;
    let c = Client::new(&sim.rest_url());
    let r = c.public("/api/v3/ping").await;
    assert_eq!((r.status, r.body.clone()), (200, serde_json::json!({})));
    assert!(r.header("x-mbx-used-weight-1m").is_some());
    let r = c.public("/api/v3/time").await;
    let t = r.body["serverTime"].as_u64().unwrap();
    assert!(t.abs_diff(now_ms()) < 5000);
    let r = c.public("/api/v3/exchangeInfo").await;
    let syms = r.body["symbols"].as_array().unwrap();
    assert_eq!(syms.len(), 2 + 5);
    let btc = syms.iter().find(|s| s["symbol"] == "BTCUSDT").unwrap();
    let filters: Vec<&str> = btc["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filterType"].as_str().unwrap())
        .collect();
    assert!(filters.starts_with(&["PRICE_FILTER", "LOT_SIZE", "NOTIONAL"]));
    assert_eq!(btc["filters"][0]["tickSize"], "0.01000000");
    let r = c.public("/api/v3/exchangeInfo?symbol=NOPE").await;
    assert_eq!((r.status, r.code()), (400, -1121));
    let r = c.public("/api/v3/nothing").await;
    assert_eq!(r.status, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_errors_have_binance_codes() {
    let sim = start(test_config()).await;
    let c = Client::new(&sim.rest_url());
    // Missing key.
    let r = c
        .raw(
            Method::GET,
            "/api/v3/account?timestamp=1&signature=00",
            None,
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (401, -2014));
    // Unknown key.
    let other = Client::with_key(&sim.rest_url(), "unknown-key", SECRET);
    let r = other.signed(Method::GET, "/api/v3/account", &[]).await;
    assert_eq!((r.status, r.code()), (401, -2015));
    // Wrong secret: bad signature.
    let wrong = Client::with_key(&sim.rest_url(), KEY, "not-the-secret");
    let r = wrong.signed(Method::GET, "/api/v3/account", &[]).await;
    assert_eq!((r.status, r.code()), (400, -1022));
    assert_eq!(r.body["msg"], "Signature for this request is not valid.");
    // Stale timestamp (10 s old, default recvWindow 5 s), properly signed.
    let payload = format!("timestamp={}", now_ms() - 10_000);
    let sig = c.signer.sign_hex(payload.as_bytes());
    let r = c
        .raw(
            Method::GET,
            &format!("/api/v3/account?{payload}&signature={sig}"),
            None,
            Some(KEY),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, -1021));
    // Timestamp in the future.
    let payload = format!("timestamp={}", now_ms() + 5_000);
    let sig = c.signer.sign_hex(payload.as_bytes());
    let r = c
        .raw(
            Method::GET,
            &format!("/api/v3/account?{payload}&signature={sig}"),
            None,
            Some(KEY),
        )
        .await;
    assert_eq!(r.code(), -1021);
    // recvWindow above the maximum.
    let r = c
        .signed(Method::GET, "/api/v3/account", &[("recvWindow", "70000")])
        .await;
    assert_eq!(r.code(), -1131);
    // Missing timestamp / signature.
    let r = c
        .raw(Method::GET, "/api/v3/account?signature=00", None, Some(KEY))
        .await;
    assert_eq!(r.code(), -1102);
    let r = c
        .raw(Method::GET, "/api/v3/account?timestamp=1", None, Some(KEY))
        .await;
    assert_eq!(r.code(), -1102);
    // Unknown and duplicate parameters.
    let r = c
        .signed(Method::GET, "/api/v3/account", &[("bogus", "1")])
        .await;
    assert_eq!(r.code(), -1104);
    let r = c
        .signed(
            Method::GET,
            "/api/v3/openOrders",
            &[("symbol", "BTCUSDT"), ("symbol", "BTCUSDT")],
        )
        .await;
    assert_eq!(r.code(), -1101);
    // Body-signed requests work too, and the account answers.
    let r = c.signed_body(Method::GET, "/api/v3/account", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["balances"].as_array().unwrap().len(), 3);
    sim.shutdown().await;
}

/// Every REST HMAC vector marked verified reproduces through the simulator's verifier,
/// end to end: the server clock is skewed to the vector's timestamp so only the
/// signature decides; the orders then fail for business reasons (unknown symbol), never -1022.
#[tokio::test]
async fn rest_signing_vectors_verify_in_the_simulator() {
    let vectors = fixture("spot/signing/vectors.json");
    let mut checked = 0;
    for v in vectors["vectors"].as_array().unwrap() {
        if v["api"] != "REST" || v["method"] != "HMAC-SHA256" || v["verified"] != true {
            continue;
        }
        let key = v["key"].as_str().unwrap();
        let secret = v["secret"].as_str().unwrap();
        let payload = v["payload"].as_str().unwrap();
        let signature = v["signature"].as_str().unwrap();
        assert!(HmacSigner::new(secret.as_bytes()).verify_hex(payload.as_bytes(), signature));
        let (query, body) = match (v["query_string"].as_str(), v["request_body"].as_str()) {
            (Some(q), Some(b)) => (q.to_string(), b.to_string()),
            _ => (payload.to_string(), String::new()),
        };
        assert_eq!(mmd::sim::auth::signature_payload(&query, &body).0, payload);
        let ts: u64 = payload
            .rsplit("timestamp=")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let sim = start(SimConfig {
            extra_symbols: 0,
            accounts: vec![AccountConfig {
                api_key: key.into(),
                api_secret: secret.into(),
                ..AccountConfig::default()
            }],
            ..SimConfig::default()
        })
        .await;
        sim.faults()
            .clock_skew(ts as i64 - now_ms() as i64 + 100)
            .unwrap();
        let c = Client::with_key(&sim.rest_url(), key, secret);
        let r = c
            .raw(
                Method::POST,
                &format!("/api/v3/order?{query}&signature={signature}"),
                (!body.is_empty()).then(|| body.clone()),
                Some(key),
            )
            .await;
        assert_eq!(r.code(), -1121, "{}: {:?}", v["name"], r.body);
        // One flipped character in the payload must fail the signature.
        let tampered = query.replacen("BUY", "SELL", 1);
        let r = c
            .raw(
                Method::POST,
                &format!("/api/v3/order?{tampered}&signature={signature}"),
                (!body.is_empty()).then(|| body.clone()),
                Some(key),
            )
            .await;
        assert_eq!(r.code(), -1022, "{}", v["name"]);
        sim.shutdown().await;
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} REST vectors");
}

#[tokio::test]
async fn order_lifecycle_and_errors() {
    let sim = start(test_config()).await;
    sim.set_market_frozen(true);
    let c = Client::new(&sim.rest_url());
    // Far below the market: rests.
    let r = c.place_limit("BTCUSDT", "BUY", "50000.00", "0.01000").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "NEW");
    assert!(r.body["fills"].as_array().unwrap().is_empty());
    assert_eq!(r.header("x-mbx-order-count-10s").as_deref(), Some("1"));
    assert!(r.header("x-mbx-order-count-1d").is_some());
    let id = r.body["orderId"].as_u64().unwrap().to_string();
    let coid = r.body["clientOrderId"].as_str().unwrap().to_string();
    assert_eq!(sim.balances(KEY)["USDT"], (dec!(99500), dec!(500)));
    let q = c
        .signed(
            Method::GET,
            "/api/v3/order",
            &[("symbol", "BTCUSDT"), ("origClientOrderId", &coid)],
        )
        .await;
    assert_eq!(q.body["orderId"].to_string(), id);
    let open = c
        .signed(Method::GET, "/api/v3/openOrders", &[("symbol", "BTCUSDT")])
        .await;
    assert_eq!(open.body.as_array().unwrap().len(), 1);
    assert_eq!(sim.open_orders(KEY).len(), 1);
    let r = c
        .signed(
            Method::DELETE,
            "/api/v3/order",
            &[
                ("symbol", "BTCUSDT"),
                ("orderId", &id),
                ("newClientOrderId", "myCancel1"),
            ],
        )
        .await;
    assert_eq!(r.body["status"], "CANCELED");
    assert_eq!(r.body["clientOrderId"], "myCancel1");
    assert_eq!(r.body["origClientOrderId"], coid.as_str());
    assert_eq!(sim.balances(KEY)["USDT"], (dec!(100000), dec!(0)));
    let r = c
        .signed(
            Method::DELETE,
            "/api/v3/order",
            &[("symbol", "BTCUSDT"), ("orderId", &id)],
        )
        .await;
    assert_eq!((r.status, r.code()), (400, -2011));
    assert_eq!(r.body["msg"], "Unknown order sent.");
    let r = c
        .signed(
            Method::GET,
            "/api/v3/order",
            &[("symbol", "BTCUSDT"), ("orderId", "424242")],
        )
        .await;
    assert_eq!(r.code(), -2013);
    let r = c
        .signed(Method::DELETE, "/api/v3/order", &[("symbol", "BTCUSDT")])
        .await;
    assert_eq!(r.code(), -1102);
    // Filter failures.
    let r = c.place_limit("BTCUSDT", "BUY", "50000.001", "0.01").await;
    assert_eq!(
        (r.code(), r.body["msg"].as_str()),
        (-1013, Some("Filter failure: PRICE_FILTER"))
    );
    let r = c.place_limit("BTCUSDT", "BUY", "50000", "0.000001").await;
    assert_eq!(r.body["msg"], "Filter failure: LOT_SIZE");
    let r = c.place_limit("BTCUSDT", "BUY", "100", "0.00001").await;
    assert_eq!(r.body["msg"], "Filter failure: NOTIONAL");
    let r = c.place_limit("BTCUSDT", "BUY", "abc", "0.01").await;
    assert_eq!(r.code(), -1100);
    let r = c.place_limit("NOPEUSDT", "BUY", "1", "1").await;
    assert_eq!(r.code(), -1121);
    // Insufficient balance.
    let r = c.place_limit("BTCUSDT", "BUY", "50000", "3").await;
    assert_eq!(
        (r.code(), r.body["msg"].as_str()),
        (
            -2010,
            Some("Account has insufficient balance for requested action.")
        )
    );
    // LIMIT_MAKER that would take.
    let ask = sim_best_ask(&c).await;
    let r = c
        .signed(
            Method::POST,
            "/api/v3/order",
            &[
                ("symbol", "BTCUSDT"),
                ("side", "BUY"),
                ("type", "LIMIT_MAKER"),
                ("quantity", "0.001"),
                ("price", &ask),
            ],
        )
        .await;
    assert_eq!(
        (r.code(), r.body["msg"].as_str()),
        (-2010, Some("Order would immediately match and take."))
    );
    // A marketable IOC fills against the synthetic book, commission in the received asset.
    let r = c
        .signed(
            Method::POST,
            "/api/v3/order",
            &[
                ("symbol", "BTCUSDT"),
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "IOC"),
                ("quantity", "0.001"),
                ("price", &ask),
            ],
        )
        .await;
    assert_eq!(r.body["status"], "FILLED", "{:?}", r.body);
    assert_eq!(r.body["fills"][0]["commissionAsset"], "BTC");
    let trades = c
        .signed(Method::GET, "/api/v3/myTrades", &[("symbol", "BTCUSDT")])
        .await;
    let t = trades.body.as_array().unwrap();
    assert_eq!(t.len(), 1);
    let first_id = t[0]["id"].as_u64().unwrap();
    let from = (first_id + 1).to_string();
    let later = c
        .signed(
            Method::GET,
            "/api/v3/myTrades",
            &[("symbol", "BTCUSDT"), ("fromId", &from)],
        )
        .await;
    assert!(later.body.as_array().unwrap().is_empty());
    assert_eq!(sim.trades(KEY).len(), 1);
    assert_eq!(
        sim.balances(KEY)["BTC"].0,
        dec!(1) + dec!(0.001) - dec!(0.000001)
    );
    // MARKET sell and DELETE openOrders.
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
    assert_eq!(r.body["status"], "FILLED", "{:?}", r.body);
    c.place_limit("ETHUSDT", "SELL", "9000", "0.1").await;
    c.place_limit("ETHUSDT", "SELL", "9001", "0.1").await;
    let r = c
        .signed(
            Method::DELETE,
            "/api/v3/openOrders",
            &[("symbol", "ETHUSDT")],
        )
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    assert!(sim.open_orders(KEY).is_empty());
    let r = c
        .signed(
            Method::DELETE,
            "/api/v3/openOrders",
            &[("symbol", "ETHUSDT")],
        )
        .await;
    assert_eq!(r.code(), -2011);
    // order/test validates without placing.
    let r = c
        .signed(
            Method::POST,
            "/api/v3/order/test",
            &[
                ("symbol", "BTCUSDT"),
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.01"),
                ("price", "50000"),
            ],
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (200, serde_json::json!({})));
    assert!(sim.open_orders(KEY).is_empty());
    sim.check_invariants().unwrap();
    sim.shutdown().await;
}

async fn sim_best_ask(c: &Client) -> String {
    // The synthetic book is posted at start, so the ticker carries a best ask.
    let mut ws = connect(&format!(
        "{}/ws/btcusdt@ticker",
        c.base.replace("http", "ws")
    ))
    .await;
    let v = next_json(&mut ws, Duration::from_secs(5))
        .await
        .expect("ticker");
    v["a"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn rate_limits_answer_429_then_418() {
    let sim = start(SimConfig {
        rate_limits: RateLimitConfig {
            weight_per_minute: 50,
            orders_per_10s: 2,
            requests_before_ban: 2,
            ban_duration: Duration::from_secs(30),
            ..RateLimitConfig::default()
        },
        ..test_config()
    })
    .await;
    sim.set_market_frozen(true);
    let c = Client::new(&sim.rest_url());
    // Orders: the third in 10 s is refused with -1015.
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = c.place_limit("BTCUSDT", "BUY", "50000", "0.001").await;
        codes.push((r.status, r.code()));
    }
    assert_eq!(codes[2], (429, -1015), "{codes:?}");
    // Weight: exchangeInfo costs 20 of 50.
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..6 {
        let r = c.public("/api/v3/exchangeInfo").await;
        if r.status == 429 {
            retry = r.header("retry-after");
            assert_eq!(r.code(), -1003);
        }
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(retry.is_some());
    assert_eq!(*statuses.last().unwrap(), 418, "{statuses:?}");
    let r = c.public("/api/v3/ping").await;
    assert_eq!(r.status, 418);
    assert!(r.header("retry-after").is_some());
    assert!(r.body["msg"].as_str().unwrap().contains("IP banned until"));
    sim.shutdown().await;
}

#[tokio::test]
async fn forced_rate_limit_and_rest_faults() {
    let sim = start(test_config()).await;
    sim.set_market_frozen(true);
    let c = Client::new(&sim.rest_url());
    // 5xx after applying: the order exists although the client saw an error.
    sim.faults()
        .fail_rest("/api/v3/order", Some("POST"), 1, 503, true)
        .unwrap();
    let r = c.place_limit("BTCUSDT", "BUY", "50000", "0.001").await;
    assert_eq!((r.status, r.code()), (503, -1007));
    assert_eq!(sim.open_orders(KEY).len(), 1);
    // 5xx before applying: it does not.
    sim.faults()
        .fail_rest("/api/v3/order", Some("POST"), 1, 500, false)
        .unwrap();
    let r = c.place_limit("BTCUSDT", "BUY", "50000", "0.001").await;
    assert_eq!(r.status, 500);
    assert_eq!(sim.open_orders(KEY).len(), 1);
    // A hang past the client's timeout.
    sim.faults()
        .hang_rest(
            "/api/v3/order",
            Some("DELETE"),
            1,
            Duration::from_secs(3),
            false,
        )
        .unwrap();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = quick
        .delete(format!("{}/api/v3/openOrders", sim.rest_url()))
        .send()
        .await;
    assert!(err.is_ok(), "other paths are not affected");
    let t0 = std::time::Instant::now();
    let hung = quick
        .delete(format!("{}/api/v3/order", sim.rest_url()))
        .send()
        .await;
    assert!(hung.is_err() && t0.elapsed() >= Duration::from_millis(290));
    // Forced rate limit.
    sim.faults().rate_limit(Duration::from_secs(5)).unwrap();
    let r = c.public("/api/v3/ping").await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    let value: Value = r.body;
    assert_eq!(value["code"], -1003);
    sim.shutdown().await;
}

#[tokio::test]
async fn symbol_status_and_non_ascii_symbols() {
    let mut cfg = test_config();
    cfg.symbols.push(mmd::sim::SymbolConfig {
        symbol: "１２３４５６USDT".into(),
        base: "１２３４５６".into(),
        quote: "USDT".into(),
        initial_price: rust_decimal::Decimal::from(10),
        tick_size: rust_decimal::Decimal::new(1, 2),
        step_size: rust_decimal::Decimal::new(1, 2),
        min_qty: rust_decimal::Decimal::new(1, 2),
        ..mmd::sim::SymbolConfig::default()
    });
    let sim = start(cfg).await;
    sim.set_market_frozen(true);
    let c = Client::new(&sim.rest_url());
    // Percent-encoded symbol, signed over the encoded form (the 2026 REST rule).
    let r = c
        .place_limit("１２３４５６USDT", "BUY", "5.00", "2.00")
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["symbol"], "１２３４５６USDT");
    let id = r.body["orderId"].to_string();
    // CANCEL_ONLY: new orders refused, cancels allowed.
    sim.set_symbol_status("１２３４５６USDT", "CANCEL_ONLY");
    let info = c.public("/api/v3/exchangeInfo").await;
    let s = info.body["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["baseAsset"] == "１２３４５６")
        .unwrap()
        .clone();
    assert_eq!(s["status"], "CANCEL_ONLY");
    let r = c
        .place_limit("１２３４５６USDT", "BUY", "5.00", "2.00")
        .await;
    assert_eq!(
        (r.code(), r.body["msg"].as_str()),
        (-2010, Some("Market is closed."))
    );
    let r = c
        .signed(
            Method::DELETE,
            "/api/v3/order",
            &[("symbol", "１２３４５６USDT"), ("orderId", &id)],
        )
        .await;
    assert_eq!(r.body["status"], "CANCELED", "{:?}", r.body);
    sim.set_symbol_status("BTCUSDT", "BREAK");
    let r = c.place_limit("BTCUSDT", "BUY", "50000", "0.01").await;
    assert_eq!(r.code(), -2010);
    sim.shutdown().await;
}
