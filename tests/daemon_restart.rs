//! `kill -9` in the middle of a run, then a restart with the same ledger: the orders the
//! dead process left are canceled, the fills made while it was down are recovered, and
//! the ledger's fills equal the exchange's trade list exactly, none doubled.

mod daemon_support;

use std::collections::BTreeSet;
use std::time::Duration;

use daemon_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_and_doubles_nothing_and_leaves_no_orphan() {
    let mut cfg = sim_config();
    cfg.market.taker_rate = 15.0;
    let mut d = Daemon::new(cfg, &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")], "").await;
    d.spawn();
    d.wait_for("fills", Duration::from_secs(10), || async {
        d.metric("mmd_fills_total", None).await >= 3.0
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &d.pid().to_string()])
        .status();
    d.wait_exit(Duration::from_secs(5)).await.expect("killed");
    let orphans: BTreeSet<String> = d
        .open_orders()
        .into_iter()
        .map(|o| o.client_order_id)
        .collect();
    assert!(
        !orphans.is_empty(),
        "the killed daemon left no resting order to clean up"
    );
    // The market keeps trading against the orphans for a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;

    d.spawn();
    d.wait_for(
        "orphans of the killed run canceled",
        Duration::from_secs(10),
        || async {
            d.open_orders()
                .iter()
                .all(|o| !orphans.contains(&o.client_order_id))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.sim.set_market_frozen(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = d.stop().await;
    assert!(status.success());
    assert!(
        d.open_orders().is_empty(),
        "orders left: {:?}",
        d.open_orders()
    );

    let ledger = mmd::ledger::Ledger::open(&d.dir.path().join("mmd.sqlite")).unwrap();
    let in_ledger: BTreeSet<(String, i64)> = ledger
        .fills(None, None)
        .unwrap()
        .into_iter()
        .map(|f| (f.symbol, f.trade_id))
        .collect();
    let at_exchange: BTreeSet<(String, i64)> = d
        .sim
        .trades(API_KEY)
        .into_iter()
        .map(|t| (t.symbol, t.id as i64))
        .collect();
    assert_eq!(
        ledger.fills(None, None).unwrap().len(),
        in_ledger.len(),
        "a fill doubled"
    );
    assert_eq!(in_ledger, at_exchange, "ledger vs exchange trades");
    d.assert_no_panic();
}
