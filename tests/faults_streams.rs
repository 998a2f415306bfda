//! Issue 7, stream faults (kinds 1-7 and 12): the real daemon quotes against the simulator,
//! the fault is injected while fills happen, and at the end the daemon and the exchange
//! agree exactly. `MMD_FAULTS_REPEAT=N` runs each kind N times with different seeds.

mod daemon_support;
mod faults_support;

use faults_support::{Fault, run_kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_01_market_ws_dropped_without_close_frame() {
    run_kind(Fault::MarketDrop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_02_user_ws_dropped_in_a_burst_of_fills() {
    run_kind(Fault::UserDropMidBurst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_03_listen_key_expired() {
    run_kind(Fault::ListenKeyExpired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_04_keepalive_5xx_then_1125() {
    run_kind(Fault::KeepaliveFailures).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_05_connection_age_cutoff_rotated_before() {
    run_kind(Fault::ConnectionAge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_06_server_shutdown_on_both_streams() {
    run_kind(Fault::ServerShutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_07_execution_reports_duplicated_and_reordered() {
    run_kind(Fault::UserEventsDuplicatedReordered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_12_malformed_truncated_binary_oversized_unknown_frames() {
    run_kind(Fault::BadFrames).await;
}
