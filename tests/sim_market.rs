//! The rest of the market: a maker quoting ~10 bps from mid gets filled often, with
//! intensity set by config; freezing stops the flow; balances stay exact over real sockets.

mod sim_common;

use mmd::sim::{MarketConfig, SimConfig};
use reqwest::Method;
use rust_decimal::Decimal;
use sim_common::*;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

fn quote_price(mid: Decimal, bps: i64, tick: Decimal) -> Decimal {
    let p = mid * (Decimal::ONE + Decimal::new(bps, 4));
    (p / tick).round() * tick
}

async fn mid_of(c: &Client, sim_stream: &str) -> Decimal {
    let mut ws = connect(&format!("{sim_stream}/ws/btcusdt@ticker")).await;
    let v = next_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    let b = Decimal::from_str(v["b"].as_str().unwrap()).unwrap();
    let a = Decimal::from_str(v["a"].as_str().unwrap()).unwrap();
    let _ = c;
    (a + b) / Decimal::TWO
}

#[tokio::test]
async fn maker_ten_bps_from_mid_gets_filled_often() {
    let sim = start(SimConfig {
        market: MarketConfig {
            taker_rate: 10.0,
            ..MarketConfig::default()
        },
        ticker_interval: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    let c = Client::new(&sim.rest_url());
    let tick = Decimal::new(1, 2);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(6) {
        let mid = mid_of(&c, &sim.stream_url()).await;
        let open = sim.open_orders(KEY);
        for (side, bps) in [("BUY", -10), ("SELL", 10)] {
            if open.iter().any(|o| o.side.as_str() == side) {
                continue;
            }
            let price = quote_price(mid, bps, tick).to_string();
            let r = c
                .signed(
                    Method::POST,
                    "/api/v3/order",
                    &[
                        ("symbol", "BTCUSDT"),
                        ("side", side),
                        ("type", "LIMIT_MAKER"),
                        ("quantity", "0.001"),
                        ("price", &price),
                    ],
                )
                .await;
            assert!(r.status == 200 || r.code() == -2010, "{:?}", r.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fills = sim.trades(KEY);
    eprintln!("maker fills in 6 s: {}", fills.len());
    // 10 takers/s, ~60% reach past 10 bps, half on our side: expect several per second.
    assert!(fills.len() >= 15, "only {} fills in 6 s", fills.len());
    assert!(fills.iter().all(|t| t.is_maker));
    // Freeze: nothing trades any more.
    sim.set_market_frozen(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = sim.trades(KEY).len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sim.trades(KEY).len(), n);
    // Exact balances: initial + fills - commissions == free + locked.
    let mut expected: BTreeMap<String, Decimal> = BTreeMap::from([
        ("USDT".into(), Decimal::from(100000)),
        ("BTC".into(), Decimal::ONE),
        ("ETH".into(), Decimal::from(10)),
    ]);
    for t in sim.trades(KEY) {
        let (recv, pay, r, p) = match t.side {
            mmd::sim::Side::Buy => ("BTC", "USDT", t.qty, t.qty * t.price),
            mmd::sim::Side::Sell => ("USDT", "BTC", t.qty * t.price, t.qty),
        };
        *expected.get_mut(recv).unwrap() += r - t.commission;
        *expected.get_mut(pay).unwrap() -= p;
    }
    for (asset, (free, locked)) in sim.balances(KEY) {
        assert_eq!(free + locked, expected[&asset], "{asset}");
    }
    sim.check_invariants().unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn replay_file_drives_the_mid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.jsonl");
    std::fs::write(
        &path,
        "{\"u\":1,\"s\":\"BTCUSDT\",\"b\":\"64999.00\",\"B\":\"1\",\"a\":\"65001.00\",\"A\":\"1\"}\n\
         {\"stream\":\"btcusdt@ticker\",\"data\":{\"e\":\"24hrTicker\",\"s\":\"BTCUSDT\",\"c\":\"65000.00\"}}\n",
    )
    .unwrap();
    let sim = start(SimConfig {
        market: MarketConfig {
            replay_file: Some(path.display().to_string()),
            taker_rate: 0.0,
            ..MarketConfig::default()
        },
        ..test_config()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = Client::new(&sim.rest_url());
    let mid = mid_of(&c, &sim.stream_url()).await;
    assert_eq!(
        mid,
        Decimal::from(65000),
        "the recorded mid, not the configured 60000"
    );
    sim.shutdown().await;
    // A broken recording is refused with the file and line.
    std::fs::write(&path, "{\"s\":\"BTCUSDT\",\"c\":\"1\"}\n{oops\n").unwrap();
    let err = mmd::sim::start(
        SimConfig {
            market: MarketConfig {
                replay_file: Some(path.display().to_string()),
                ..MarketConfig::default()
            },
            ..test_config()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("rec.jsonl:2"), "{err}");
}

/// Every fill at the exchange reaches the user stream (duplicates switched on, so each
/// arrives at least once), with a client requoting as fast as a market maker does.
#[tokio::test]
async fn every_fill_reaches_the_user_stream() {
    use std::collections::BTreeSet;
    let sim = start(SimConfig {
        market: MarketConfig {
            taker_rate: 25.0,
            ..MarketConfig::default()
        },
        legacy_account_info: true,
        rate_limits: mmd::sim::RateLimitConfig {
            orders_per_10s: 100_000,
            ..Default::default()
        },
        ..test_config()
    })
    .await;
    sim.faults().duplicate_user_events(None).unwrap();
    let c = Client::new(&sim.rest_url());
    let key = c.new_listen_key().await;
    let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
    let seen2 = seen.clone();
    let reader = tokio::spawn(async move {
        while let Some(v) = next_json(&mut ws, Duration::from_secs(30)).await {
            if v["e"] == "executionReport" && v["x"] == "TRADE" {
                seen2.lock().insert((
                    v["s"].as_str().unwrap().to_string(),
                    v["t"].as_i64().unwrap(),
                ));
            }
        }
    });
    let tick = Decimal::new(1, 2);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let mid = mid_of(&c, &sim.stream_url()).await;
        for (side, bps) in [("BUY", -2), ("SELL", 2), ("BUY", -4), ("SELL", 4)] {
            let price = quote_price(mid, bps, tick).to_string();
            c.signed(
                Method::POST,
                "/api/v3/order",
                &[
                    ("symbol", "BTCUSDT"),
                    ("side", side),
                    ("type", "LIMIT_MAKER"),
                    ("quantity", "0.001"),
                    ("price", &price),
                ],
            )
            .await;
        }
        if sim.open_orders(KEY).len() > 40 {
            c.signed(
                Method::DELETE,
                "/api/v3/openOrders",
                &[("symbol", "BTCUSDT")],
            )
            .await;
        }
    }
    sim.set_market_frozen(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exchange: BTreeSet<(String, i64)> = sim
        .trades(KEY)
        .iter()
        .map(|t| (t.symbol.clone(), t.id as i64))
        .collect();
    eprintln!("{} fills at the exchange", exchange.len());
    assert!(exchange.len() > 20);
    assert_eq!(*seen.lock(), exchange);
    reader.abort();
    sim.shutdown().await;
}
