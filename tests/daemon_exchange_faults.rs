//! What the exchange does to us: outside balance changes, 429 with Retry-After, a
//! symbol that stops trading, and a restart that forgets every order and key. The daemon
//! keeps running, says what happened, and ends in agreement with the exchange.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use rust_decimal::Decimal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_is_reported_exactly_without_a_mismatch() {
    let mut d = Daemon::new(sim_config(), &[("BTCUSDT", "0.001")], "").await;
    d.spawn();
    d.wait_for("fills", Duration::from_secs(10), || async {
        d.metric("mmd_fills_total", None).await >= 1.0
    })
    .await;
    d.sim.deposit(API_KEY, "USDT", Decimal::new(12345678, 4));
    d.sim.deposit(API_KEY, "BNB", Decimal::new(5, 1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.assert_agrees_with_exchange(&["USDT", "BTC", "BNB"]).await;
    assert_eq!(
        d.metric("mmd_reconcile_mismatches_total", None).await,
        0.0,
        "a deposit (balanceUpdate) counted as a mismatch"
    );
    assert!(!d.log_events("balance_update").is_empty());
    assert!(d.stop().await.success());
    d.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_it_waits_out_retry_after_and_is_never_banned() {
    // Requests already in flight when the first 429 lands (a burst of cancels and places)
    // cannot be recalled; the ban is for clients that keep *sending* after it.
    let mut cfg = sim_config();
    cfg.rate_limits.requests_before_ban = 20;
    let mut d = Daemon::new(cfg, &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")], "").await;
    d.spawn();
    d.wait_for("quoting", Duration::from_secs(10), || async {
        d.metric("mmd_orders_placed_total", None).await >= 4.0
    })
    .await;
    // Under a second: the simulator rounds Retry-After down to whole seconds.
    d.sim
        .faults()
        .rate_limit(Duration::from_millis(900))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let placed = d.metric("mmd_orders_placed_total", None).await;
    d.wait_for(
        "quoting again after Retry-After",
        Duration::from_secs(15),
        || async { d.metric("mmd_orders_placed_total", None).await > placed },
    )
    .await;
    let log = d.log();
    assert!(
        !log.contains("IP BANNED"),
        "kept sending into a 429 and got banned:\n{}",
        tail(&log, 30)
    );
    assert!(
        !d.log_events("rate_limit").is_empty(),
        "the 429 is not in the log"
    );
    d.assert_agrees_with_exchange(&["USDT", "BTC", "ETH"]).await;
    assert!(d.stop().await.success());
    assert!(d.open_orders().is_empty());
    d.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbol_that_stops_trading_is_taken_off_and_the_rest_goes_on() {
    let mut d = Daemon::new(
        sim_config(),
        &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")],
        "",
    )
    .await;
    d.spawn();
    d.wait_for("quoting both", Duration::from_secs(10), || async {
        let o = d.open_orders();
        o.iter().any(|o| o.symbol == "BTCUSDT") && o.iter().any(|o| o.symbol == "ETHUSDT")
    })
    .await;
    d.sim.set_symbol_status("ETHUSDT", "BREAK");
    d.wait_for(
        "ETHUSDT orders off the book",
        Duration::from_secs(10),
        || async { !d.open_orders().iter().any(|o| o.symbol == "ETHUSDT") },
    )
    .await;
    let placed = d
        .metric(
            "mmd_orders_placed_total",
            Some("symbol=\"BTCUSDT\",side=\"BUY\""),
        )
        .await
        + d.metric(
            "mmd_orders_placed_total",
            Some("symbol=\"BTCUSDT\",side=\"SELL\""),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let eth_rejects = d.metric("mmd_orders_rejected_total", None).await;
    assert!(
        eth_rejects <= 2.0,
        "{eth_rejects} rejections: knocking on a closed market"
    );
    assert!(
        !d.log_events("market_halted").is_empty() || !d.log_events("market_closed").is_empty(),
        "the halt is not in the log"
    );
    let placed_after = d
        .metric(
            "mmd_orders_placed_total",
            Some("symbol=\"BTCUSDT\",side=\"BUY\""),
        )
        .await
        + d.metric(
            "mmd_orders_placed_total",
            Some("symbol=\"BTCUSDT\",side=\"SELL\""),
        )
        .await;
    assert!(placed_after > placed, "BTCUSDT stopped quoting too");
    assert!(d.stop().await.success());
    assert!(d.open_orders().is_empty());
    d.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_restart_that_forgets_everything_is_recovered() {
    let mut d = Daemon::new(sim_config(), &[("BTCUSDT", "0.001")], "").await;
    d.spawn();
    d.wait_for("fills", Duration::from_secs(10), || async {
        d.metric("mmd_fills_total", None).await >= 1.0
    })
    .await;
    d.sim.faults().restart_exchange().unwrap();
    let placed = d.metric("mmd_orders_placed_total", None).await;
    d.wait_for(
        "quoting again after the restart",
        Duration::from_secs(15),
        || async {
            d.metric("mmd_orders_placed_total", None).await > placed + 2.0
                && d.open_orders().iter().any(|o| o.symbol == "BTCUSDT")
        },
    )
    .await;
    d.assert_agrees_with_exchange(&["USDT", "BTC"]).await;
    assert!(d.stop().await.success());
    assert!(d.open_orders().is_empty());
    d.assert_no_panic();
}
