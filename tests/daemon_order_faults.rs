//! Placement and cancel answered 5xx or hanging past the client timeout: the order's
//! fate is settled by querying it, never by placing it again; nothing orphaned, every
//! fill counted once.

mod daemon_support;

use std::collections::BTreeSet;
use std::time::Duration;

use daemon_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_placements_and_cancels_are_resolved_by_query() {
    let mut d = Daemon::new(
        sim_config(),
        &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")],
        "",
    )
    .await;
    d.spawn();
    d.wait_for("quoting", Duration::from_secs(10), || async {
        d.metric("mmd_orders_placed_total", None).await >= 4.0
    })
    .await;
    let f = d.sim.faults();
    // 503 after the order was accepted: it exists, the daemon does not know.
    f.fail_rest("/api/v3/order", Some("POST"), 3, 503, true)
        .unwrap();
    // A hang past the 2 s client timeout, also after the order was accepted.
    f.hang_rest(
        "/api/v3/order",
        Some("POST"),
        1,
        Duration::from_secs(3),
        true,
    )
    .unwrap();
    // Cancels answered 503 without being executed.
    f.fail_rest("/api/v3/order", Some("DELETE"), 3, 503, false)
        .unwrap();
    d.wait_for(
        "unknown placements queried and resolved",
        Duration::from_secs(15),
        || async { d.log_events("order_unknown").len() >= 4 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Every client order id was sent once: an unknown order is never re-placed.
    let placed: Vec<String> = d
        .log_events("quote_placed")
        .iter()
        .filter_map(|e| e.get("client_order_id")?.as_str().map(str::to_owned))
        .collect();
    let unique: BTreeSet<&String> = placed.iter().collect();
    assert_eq!(
        placed.len(),
        unique.len(),
        "a client order id was placed twice"
    );
    d.assert_agrees_with_exchange(&["USDT", "BTC", "ETH"]).await;
    assert!(d.stop().await.success());
    assert!(d.open_orders().is_empty(), "orphans: {:?}", d.open_orders());
    d.assert_no_panic();
}
