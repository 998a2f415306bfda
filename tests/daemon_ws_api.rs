//! The 2026 Binance dialect: user data over the WebSocket API (no listen key) and
//! per-symbol bookTicker market data; the same guarantees as the listen-key path.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_api_user_stream_and_book_ticker_quote_fill_and_reconcile() {
    let mut cfg = sim_config();
    cfg.dialect = mmd::sim::Dialect::Y2026;
    let mut d = Daemon::new(cfg, &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")], "").await;
    let ws_api = d.sim.ws_api_url();
    d.spawn_with_env(&[
        ("MMD__EXCHANGE__USER_STREAM", "ws-api".into()),
        ("MMD__EXCHANGE__WS_API_URL", ws_api),
        ("MMD__STREAMS__MARKET", "bookTicker".into()),
    ]);
    d.wait_for(
        "fills over the ws-api user stream",
        Duration::from_secs(15),
        || async { d.metric("mmd_fills_total", None).await >= 3.0 },
    )
    .await;
    // Zero-gap rotation before the server's cutoff (5 s vs 6 s) on both connections,
    // as on the listen-key path: planned, never an error reconnect.
    d.wait_for(
        "planned rotations of the ws-api user and bookTicker connections",
        Duration::from_secs(20),
        || async {
            d.metric(
                "mmd_ws_connects_total",
                Some("stream=\"user\",reason=\"planned\""),
            )
            .await
                >= 1.0
                && d.metric(
                    "mmd_ws_connects_total",
                    Some("stream=\"market\",reason=\"planned\""),
                )
                .await
                    >= 1.0
        },
    )
    .await;
    for stream in ["user", "market"] {
        let label = format!("stream=\"{stream}\",reason=\"error\"");
        assert_eq!(
            d.metric("mmd_ws_connects_total", Some(&label)).await,
            0.0,
            "{stream}"
        );
    }
    d.assert_agrees_with_exchange(&["USDT", "BTC", "ETH"]).await;
    // A user connection dropped: reconnect, resync, nothing lost.
    d.sim
        .faults()
        .drop_connections(mmd::sim::StreamTarget::WsApi)
        .unwrap();
    d.wait_for("user stream back", Duration::from_secs(10), || async {
        d.metric(
            "mmd_ws_connects_total",
            Some("stream=\"user\",reason=\"error\""),
        )
        .await
            >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.assert_agrees_with_exchange(&["USDT", "BTC", "ETH"]).await;
    assert_eq!(d.metric("mmd_listen_key_created_total", None).await, 0.0);
    assert!(d.stop().await.success());
    assert!(d.open_orders().is_empty());
    d.assert_no_panic();
}
