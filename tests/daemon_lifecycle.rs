//! The real daemon against the simulator: quotes on every market, following the market,
//! never rejected; SIGTERM leaves nothing behind; SIGHUP adds and removes markets live.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use rust_decimal::Decimal;

fn sides(d: &Daemon, symbol: &str) -> (Vec<Decimal>, Vec<Decimal>) {
    let orders = d.open_orders();
    let of = |side: mmd::sim::Side| {
        orders
            .iter()
            .filter(|o| o.symbol == symbol && o.side == side)
            .map(|o| o.price)
            .collect::<Vec<_>>()
    };
    (of(mmd::sim::Side::Buy), of(mmd::sim::Side::Sell))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_both_sides_follow_the_market_and_sigterm_leaves_nothing() {
    let cfg = sim_config();
    let mut d = Daemon::new(cfg, &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")], "").await;
    d.spawn();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        d.wait_for(
            &format!("two-sided quotes on {symbol}"),
            Duration::from_secs(10),
            || async {
                let (b, a) = sides(&d, symbol);
                !b.is_empty() && !a.is_empty()
            },
        )
        .await;
    }
    // Valid prices around the touch, on the tick grid, for a while as the market moves.
    let mut seen_bids = std::collections::BTreeSet::new();
    for round in 0..30 {
        if round >= 6 && seen_bids.len() > 1 {
            break;
        }
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            let (bid, ask) = touch(&d.sim, symbol).await;
            let mid = (bid + ask) / Decimal::TWO;
            let (bids, asks) = sides(&d, symbol);
            for p in bids.iter().chain(asks.iter()) {
                assert_eq!(
                    *p % Decimal::new(1, 2),
                    Decimal::ZERO,
                    "{symbol} price {p} off the tick grid"
                );
                let dist = ((*p - mid) / mid).abs();
                assert!(
                    dist < Decimal::new(1, 2),
                    "{symbol} quote {p} is {dist} away from mid {mid}"
                );
            }
            if let (Some(b), Some(a)) = (bids.iter().max(), asks.iter().min()) {
                assert!(b < a, "{symbol}: bid {b} >= ask {a}");
            }
            if symbol == "BTCUSDT" {
                seen_bids.extend(bids);
            }
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        seen_bids.len() > 1,
        "quotes did not follow the market: {seen_bids:?}"
    );
    assert!(d.metric("mmd_orders_placed_total", None).await >= 4.0);
    let rejected = d.log_events("order_rejected");
    assert!(rejected.is_empty(), "orders rejected: {rejected:?}");
    assert_eq!(d.metric("mmd_orders_rejected_total", None).await, 0.0);
    let health = reqwest::get(format!("http://{}/health", d.metrics_addr))
        .await
        .unwrap();
    assert_eq!(
        health.status().as_u16(),
        200,
        "{}",
        health.text().await.unwrap_or_default()
    );

    let keys_before = d.sim.listen_keys(API_KEY);
    assert!(!keys_before.is_empty());
    let started = std::time::Instant::now();
    let status = d.stop().await;
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        tail(&d.log(), 30)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        d.open_orders().is_empty(),
        "orders left: {:?}",
        d.open_orders()
    );
    assert!(
        d.sim.listen_keys(API_KEY).is_empty(),
        "listen key not deleted"
    );
    d.assert_no_panic();
    assert!(!d.log().contains(API_SECRET), "the secret was logged");
    assert!(!d.log().contains(API_KEY), "the API key was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_markets_and_refuses_an_invalid_file() {
    let mut d = Daemon::new(sim_config(), &[("BTCUSDT", "0.001")], "").await;
    d.spawn();
    d.wait_for("BTCUSDT quotes", Duration::from_secs(10), || async {
        let (b, a) = sides(&d, "BTCUSDT");
        !b.is_empty() && !a.is_empty()
    })
    .await;
    let markets = d.dir.path().join("markets");
    // An invalid file is refused and the running markets stay.
    std::fs::write(
        markets.join("BAD.toml"),
        "symbol = \"ETHUSDT\"\n[strategy]\nname = \"nope\"\n",
    )
    .unwrap();
    d.signal(1);
    d.wait_for("reload refused", Duration::from_secs(5), || async {
        !d.log_events("reload_refused").is_empty()
    })
    .await;
    std::fs::remove_file(markets.join("BAD.toml")).unwrap();
    let placed = d.metric("mmd_orders_placed_total", None).await;
    d.wait_for(
        "BTCUSDT still quoting after a refused reload",
        Duration::from_secs(10),
        || async {
            let (b, a) = sides(&d, "BTCUSDT");
            !b.is_empty()
                && !a.is_empty()
                && d.metric("mmd_orders_placed_total", None).await > placed
        },
    )
    .await;

    // Add ETHUSDT, remove BTCUSDT.
    std::fs::write(markets.join("ETHUSDT.toml"), market_file("ETHUSDT", "0.01")).unwrap();
    std::fs::remove_file(markets.join("BTCUSDT.toml")).unwrap();
    d.signal(1);
    d.wait_for(
        "ETHUSDT quoting, BTCUSDT gone",
        Duration::from_secs(10),
        || async {
            let (eb, ea) = sides(&d, "ETHUSDT");
            let (bb, ba) = sides(&d, "BTCUSDT");
            !eb.is_empty() && !ea.is_empty() && bb.is_empty() && ba.is_empty()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (bb, ba) = sides(&d, "BTCUSDT");
    assert!(
        bb.is_empty() && ba.is_empty(),
        "a removed market got new orders"
    );
    let status = d.stop().await;
    assert!(status.success());
    assert!(d.open_orders().is_empty());
    d.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut d = Daemon::new(sim_config(), &[("BTCUSDT", "0.001")], "").await;
    d.spawn();
    d.wait_for("quoting", Duration::from_secs(10), || async {
        !d.open_orders().is_empty()
    })
    .await;
    // Cancel-all hangs: the graceful stop would take seconds.
    d.sim
        .faults()
        .hang_rest(
            "/api/v3/openOrders",
            Some("DELETE"),
            5,
            Duration::from_secs(6),
            false,
        )
        .unwrap();
    d.signal(15);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    d.signal(15);
    let status = d
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("no exit after the second signal");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        !status.success(),
        "an interrupted stop must not report success"
    );
    d.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_from_a_rest_seed_before_the_first_ticker_frame() {
    // One `!ticker@arr` frame a minute: the one sent as the simulator starts is gone
    // before the daemon subscribes, so any quote in this test comes from the seed.
    let mut cfg = sim_config();
    cfg.ticker_interval = Duration::from_secs(60);
    let mut d = Daemon::new(cfg, &[("BTCUSDT", "0.001")], "").await;
    d.spawn_with_env(&[("MMD__STREAMS__STALE_AFTER", "60s".into())]);
    d.wait_for(
        "two-sided quotes on BTCUSDT",
        Duration::from_secs(20),
        || async {
            let (b, a) = sides(&d, "BTCUSDT");
            !b.is_empty() && !a.is_empty()
        },
    )
    .await;
    let seeded = d.log_events("market_seeded");
    assert_eq!(seeded.len(), 1, "{seeded:?}");
    // The touch from REST: the stream has nothing to tell yet.
    let book: serde_json::Value = reqwest::get(format!(
        "{}/api/v3/ticker/bookTicker?symbol=BTCUSDT",
        d.sim.rest_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let price = |k: &str| book[k].as_str().unwrap().parse::<Decimal>().unwrap();
    let (bid, ask) = (price("bidPrice"), price("askPrice"));
    let (bids, asks) = sides(&d, "BTCUSDT");
    assert!(
        bids.iter().all(|p| *p < ask) && asks.iter().all(|p| *p > bid),
        "quotes {bids:?} / {asks:?} cross the touch {bid} / {ask}"
    );
    assert_eq!(d.stop().await.code(), Some(0));
    assert!(d.open_orders().is_empty());
}
