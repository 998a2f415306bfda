//! Reconciliation against the exchange: fills made while the user stream is down are
//! recovered exactly once; with duplicated user events, the legacy `outboundAccountInfo`
//! and rehearsals on, every balance the daemon reports equals the exchange's.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_while_the_user_stream_is_down_are_recovered_exactly_once() {
    let mut cfg = sim_config();
    cfg.market.taker_rate = 20.0;
    let mut d = Daemon::new(cfg, &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")], "").await;
    d.spawn();
    d.wait_for("first fills", Duration::from_secs(10), || async {
        d.metric("mmd_fills_total", None).await >= 1.0
    })
    .await;
    // Expire the key and refuse new ones for a while: the stream stays down, the orders
    // keep resting and filling.
    d.sim
        .faults()
        .fail_rest("/api/v3/userDataStream", Some("POST"), 8, 503, false)
        .unwrap();
    d.sim.faults().expire_listen_keys(Some(API_KEY)).unwrap();
    let trades_at_drop = d.sim.trades(API_KEY).len();
    d.wait_for(
        "fills at the exchange while the stream is down",
        Duration::from_secs(10),
        || async {
            d.sim.trades(API_KEY).len() > trades_at_drop
                || d.metric(
                    "mmd_ws_connects_total",
                    Some("stream=\"user\",reason=\"expired\""),
                )
                .await
                    >= 1.0
        },
    )
    .await;
    d.wait_for("user stream back", Duration::from_secs(15), || async {
        d.metric(
            "mmd_ws_connects_total",
            Some("stream=\"user\",reason=\"expired\""),
        )
        .await
            + d.metric(
                "mmd_ws_connects_total",
                Some("stream=\"user\",reason=\"error\""),
            )
            .await
            >= 1.0
    })
    .await;
    let resyncs = d
        .metric("mmd_resyncs_total", Some("reason=\"reconnect\""))
        .await;
    assert!(resyncs >= 1.0, "no resync after the reconnect");
    d.assert_agrees_with_exchange(&["USDT", "BTC", "ETH"]).await;
    // Exactly once: every trade id at the exchange counted once by the daemon.
    let recovered = d.log_events("fill_recovered").len();
    eprintln!(
        "fills recovered by resync: {recovered}, trades: {}",
        d.sim.trades(API_KEY).len()
    );
    assert!(d.stop().await.success());
    d.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_equal_the_exchange_with_duplicated_events_legacy_account_info_and_rehearsals() {
    let soak = std::env::var_os("MMD_SOAK").is_some();
    let mut cfg = sim_config();
    cfg.legacy_account_info = true;
    cfg.market.taker_rate = 25.0;
    // With rehearsals between ticks: none of their requests may reach the exchange.
    let mut d = Daemon::new(
        cfg,
        &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")],
        "rehearsal_interval = \"5ms\"",
    )
    .await;
    // Three levels a side close to the touch: hundreds of fills.
    for (symbol, qty) in [("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")] {
        std::fs::write(
            d.dir.path().join("markets").join(format!("{symbol}.toml")),
            market_file_with(
                symbol,
                qty,
                "bid_spread_bps = 2\nask_spread_bps = 2\nlevels = 3\nlevel_spread_bps = 2\n",
            ),
        )
        .unwrap();
    }
    d.sim
        .faults()
        .duplicate_user_events(Some(u32::MAX))
        .unwrap();
    d.spawn();
    let run = if soak {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(20)
    };
    tokio::time::sleep(run).await;
    let trades = d.assert_agrees_with_exchange(&["USDT", "BTC", "ETH"]).await;
    eprintln!(
        "{trades} fills in {run:?}; mismatches {}",
        d.metric("mmd_reconcile_mismatches_total", None).await
    );
    assert!(trades >= if soak { 200 } else { 60 }, "only {trades} fills");
    let placed = d.sim.client_order_ids(API_KEY);
    assert!(!placed.is_empty());
    let strays: Vec<&String> = placed
        .iter()
        .filter(|id| !id.starts_with("mmdt-"))
        .collect();
    assert!(
        strays.is_empty(),
        "orders the daemon did not place: {strays:?}"
    );
    assert!(d.stop().await.success());
    assert!(d.open_orders().is_empty());
    d.assert_no_panic();
}
