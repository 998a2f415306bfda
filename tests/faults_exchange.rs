//! Issue 7, exchange-side faults (kinds 13-16): outside balance changes, the exchange
//! restarting and forgetting everything, kill -9 of the daemon with the ledger, and a
//! market set to not trading while quoting.

mod daemon_support;
mod faults_support;

use faults_support::{Fault, run_kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_13_deposit_and_withdrawal() {
    run_kind(Fault::OutsideBalanceChange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_14_exchange_restarts_and_forgets_orders_and_keys() {
    run_kind(Fault::ExchangeRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_15_kill_9_then_restart_with_the_ledger() {
    run_kind(Fault::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_16_market_set_to_not_trading_while_quoting() {
    run_kind(Fault::SymbolHalted).await;
}

/// The suite's negative control: a daemon killed and never restarted is reported as not
/// surviving and leaves orphan orders, so a clean run above means something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_flags_a_daemon_killed_and_never_restarted() {
    let o = faults_support::run_killed_without_restart(1).await;
    assert!(!o.survived, "{o:?}");
    assert!(o.orphan_orders > 0, "orders left at the exchange: {o:?}");
    assert!(!o.clean(), "{o:?}");
}
