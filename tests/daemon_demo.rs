//! The out-of-the-box demo: `mmd run --config config/demo.toml` starts the embedded
//! simulator, quotes and fills within seconds, and stops cleanly. Environment overrides
//! (`MMD__<TABLE>__<KEY>`) move its metrics port and ledger into a temporary place.

mod daemon_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::metric_in;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_config_quotes_and_fills_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .args([
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"),
        ])
        .env("MMD__METRICS__LISTEN", port.to_string())
        .env("MMD__STORAGE__PATH", dir.path().join("mmd.sqlite"))
        .env("MMD__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut text = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(r) = reqwest::get(format!("http://{port}/metrics")).await {
            text = r.text().await.unwrap_or_default();
            if metric_in(&text, "mmd_fills_total", None) >= 1.0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(
        metric_in(&text, "mmd_fills_total", None) >= 1.0,
        "no fill within 20 s\n{text}\n{logs}"
    );
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        assert!(
            metric_in(
                &text,
                "mmd_orders_placed_total",
                Some(&format!("symbol=\"{symbol}\",side=\"BUY\""))
            ) >= 1.0
                && metric_in(
                    &text,
                    "mmd_orders_placed_total",
                    Some(&format!("symbol=\"{symbol}\",side=\"SELL\""))
                ) >= 1.0,
            "{symbol} not quoted on both sides\n{text}"
        );
    }
    // Orders and cancels go out on the event loop's own order lines, not (or only while
    // lines open) by tasks of their own.
    let on_lines = metric_in(&text, "mmd_order_requests_total", Some("path=\"line\""));
    let by_tasks = metric_in(&text, "mmd_order_requests_total", Some("path=\"task\""));
    assert!(
        on_lines >= 4.0 && on_lines > by_tasks,
        "order lines carried {on_lines} requests, tasks {by_tasks}\n{text}"
    );
    eprintln!(
        "first fill after {:?}; requests on lines {on_lines}, by tasks {by_tasks}",
        start.elapsed()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        dir.path().join("mmd.sqlite").exists(),
        "ledger not where MMD__STORAGE__PATH said"
    );
}
