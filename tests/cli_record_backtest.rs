//! `mmd record` against the embedded simulator, then `mmd backtest` on what it wrote:
//! the recorded format is the one the backtest (and the simulator's replay) reads.

use std::process::Command;

const MMD: &str = env!("CARGO_BIN_EXE_mmd");

#[test]
fn record_then_backtest_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("market.jsonl");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
    let rec = Command::new(MMD)
        .args(["record", "--config", config, "--duration", "3s", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        rec.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // demo: 250 ms ticker interval, two markets: about 24 events in 3 s.
    assert!(lines.len() >= 4, "only {} events recorded", lines.len());
    for l in &lines {
        let s = l["data"]["s"].as_str().unwrap();
        assert!(
            s == "BTCUSDT" || s == "ETHUSDT",
            "unconfigured symbol recorded: {s}"
        );
        assert!(l["recv_ms"].as_u64().unwrap() > 0);
        assert!(
            l["data"]["b"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .is_ok()
        );
    }

    let bt = Command::new(MMD)
        .args(["backtest", "--config", config, "--data"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&bt.stdout);
    assert!(
        bt.status.success(),
        "backtest failed: {}",
        String::from_utf8_lossy(&bt.stderr)
    );
    assert!(
        stdout.contains("BTCUSDT") && stdout.contains("ETHUSDT"),
        "{stdout}"
    );
    let events: u64 = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("events"))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        events as usize,
        lines.len(),
        "backtest did not replay every recorded event:\n{stdout}"
    );
}
