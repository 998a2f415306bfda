//! Issue 7, REST faults (kinds 8-11): 5xx and hangs on placement and cancel (the order may
//! or may not exist), 429 then 418, and a server clock beyond recvWindow.

mod daemon_support;
mod faults_support;

use faults_support::{Fault, run_kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_08_rest_5xx_on_placement_and_cancel() {
    run_kind(Fault::Rest5xx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_09_rest_hang_past_the_timeout_on_placement_and_cancel() {
    run_kind(Fault::RestHang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_10_http_429_then_418() {
    run_kind(Fault::RateLimit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_11_server_clock_skewed_beyond_recv_window() {
    run_kind(Fault::ClockSkew).await;
}
