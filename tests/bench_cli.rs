//! `mmd bench` end to end with tiny parameters: the measuring code path runs in
//! `cargo test`. Nothing here judges speed; only that samples and figures came out.

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .arg("bench")
        .args(args)
        .args([
            "--json",
            "--seconds",
            "2",
            "--warmup",
            "0s",
            "--refresh-bps",
            "0",
        ])
        .output()
        .expect("run mmd bench");
    assert!(
        out.status.success(),
        "mmd bench failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("mmd bench --json printed no JSON object ({e}): {text}"))
}

fn assert_latency(report: &serde_json::Value, key: &str) -> u64 {
    let l = &report[key];
    let samples = l["samples"]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}: {report}"));
    let q: Vec<f64> = ["p50_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|k| {
            l[*k]
                .as_f64()
                .unwrap_or_else(|| panic!("{key}.{k}: {report}"))
        })
        .collect();
    assert!(
        q[0] > 0.0 && q.windows(2).all(|w| w[0] <= w[1]),
        "{key}: percentiles out of order: {report}"
    );
    samples
}

fn assert_resources(report: &serde_json::Value) {
    let peak = report["peak_rss_kib"].as_u64().expect("peak_rss_kib");
    let now = report["rss_kib"].as_u64().expect("rss_kib");
    assert!(now > 0 && peak >= now, "{report}");
    assert!(report["cpu_percent"].as_f64().expect("cpu_percent") >= 0.0);
    assert!(
        report["first_live_quote_ms"]
            .as_f64()
            .expect("first live quote")
            > 0.0
    );
    assert!(report["measured_s"].as_f64().expect("measured_s") >= 2.0);
}

#[test]
fn bench_ticker_arr_reports_samples_and_resources() {
    let r = bench(&[
        "--mode",
        "ticker-arr",
        "--markets",
        "2",
        "--symbols",
        "100",
        "--interval",
        "100ms",
    ]);
    assert_eq!(r["mode"], "ticker-arr");
    assert_eq!(r["markets"], 2);
    assert_eq!(r["symbols"], 100);
    // Every 100 ms the price moves and a zero tolerance requotes: frames cause requests.
    assert!(assert_latency(&r, "tick_to_request") > 0);
    if !r["tick_to_order"].is_null() {
        assert_latency(&r, "tick_to_order");
    }
    assert_resources(&r);
}

#[test]
fn bench_book_ticker_reports_samples_and_resources() {
    let r = bench(&[
        "--mode",
        "book-ticker",
        "--markets",
        "1",
        "--symbols",
        "20",
        "--interval",
        "100ms",
    ]);
    assert_eq!(r["mode"], "book-ticker");
    assert!(assert_latency(&r, "tick_to_request") > 0);
    assert_resources(&r);
}

#[test]
fn bench_floor_reads_and_writes_without_the_daemon() {
    let r = bench(&[
        "--mode",
        "book-ticker",
        "--markets",
        "1",
        "--symbols",
        "20",
        "--interval",
        "100ms",
        "--floor",
    ]);
    assert_eq!(r["floor"], true);
    // A frame every 100 ms for 2 s, each answered by one request.
    assert!(assert_latency(&r, "tick_to_request") >= 5, "{r}");
    assert!(r["tick_to_order"].is_null(), "no daemon, no orders: {r}");
    assert!(r["measured_s"].as_f64().unwrap() > 1.0, "{r}");
    assert!(r["peak_rss_kib"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn bench_refuses_bad_arguments_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .args(["bench", "--markets", "0", "--seconds", "1"])
        .output()
        .expect("run mmd bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--markets"));
    let out = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .args(["bench", "--mode", "ticker-arr", "--floor", "--seconds", "1"])
        .output()
        .expect("run mmd bench");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--floor: with --mode book-ticker"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
