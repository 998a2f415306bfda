//! Listen-key lifecycle and zero-gap rotation with the acceptance timings: keepalive 1 s,
//! key validity 3 s, daemon max connection age 5 s against a server cutoff of 6 s.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;

fn millis(v: &serde_json::Value) -> i64 {
    let ts = v.get("ts").and_then(|t| t.as_str()).unwrap_or_default();
    humantime::parse_rfc3339(ts)
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_on_schedule_and_planned_rotations_lose_nothing() {
    let mut d = Daemon::new(
        sim_config(),
        &[("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")],
        "",
    )
    .await;
    d.spawn();
    d.wait_for("first fills", Duration::from_secs(10), || async {
        d.metric("mmd_fills_total", None).await >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;

    let ok = d
        .metric("mmd_listen_key_keepalives_total", Some("result=\"ok\""))
        .await;
    assert!(ok >= 8.0, "keepalives every 1 s: only {ok} in ~13 s");
    for stream in ["user", "market"] {
        let planned = d
            .metric(
                "mmd_ws_connects_total",
                Some(&format!("stream=\"{stream}\",reason=\"planned\"")),
            )
            .await;
        assert!(
            planned >= 2.0,
            "{stream}: {planned} planned rotations in ~13 s with max age 5 s"
        );
        let error = d
            .metric(
                "mmd_ws_connects_total",
                Some(&format!("stream=\"{stream}\",reason=\"error\"")),
            )
            .await;
        assert_eq!(
            error, 0.0,
            "{stream}: the server cutoff was reached (rotation too late)"
        );
    }
    // No moment without a live user connection longer than 1 s.
    let log: Vec<serde_json::Value> = d
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| {
            v.get("stream").and_then(|s| s.as_str()) == Some("user")
                && matches!(
                    v.get("event").and_then(|e| e.as_str()),
                    Some("connect" | "disconnect")
                )
        })
        .collect();
    let mut down_since: Option<i64> = None;
    for v in &log {
        match v.get("event").and_then(|e| e.as_str()) {
            Some("disconnect") => down_since = down_since.or(Some(millis(v))),
            Some("connect") => {
                if let Some(t) = down_since.take() {
                    assert!(
                        millis(v) - t <= 1000,
                        "user stream down for {} ms",
                        millis(v) - t
                    );
                }
            }
            _ => {}
        }
    }
    assert!(down_since.is_none(), "user stream left down");
    let trades = d.assert_agrees_with_exchange(&["USDT", "BTC", "ETH"]).await;
    assert!(trades > 0);
    assert!(d.stop().await.success());
    d.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_keepalive_and_expired_key_are_followed_by_a_working_key() {
    let mut d = Daemon::new(sim_config(), &[("BTCUSDT", "0.001")], "").await;
    d.spawn();
    d.wait_for("first keepalive", Duration::from_secs(10), || async {
        d.metric("mmd_listen_key_keepalives_total", Some("result=\"ok\""))
            .await
            >= 1.0
    })
    .await;
    // A keepalive answered 503: the daemon POSTs at once and carries on.
    d.sim
        .faults()
        .fail_rest("/api/v3/userDataStream", Some("PUT"), 1, 503, false)
        .unwrap();
    d.wait_for(
        "failed keepalive counted",
        Duration::from_secs(5),
        || async {
            d.metric("mmd_listen_key_keepalives_total", Some("result=\"error\""))
                .await
                >= 1.0
        },
    )
    .await;
    let created = d.metric("mmd_listen_key_created_total", None).await;
    assert!(
        created >= 2.0,
        "no POST after the failed keepalive ({created} keys)"
    );
    let ok_before = d
        .metric("mmd_listen_key_keepalives_total", Some("result=\"ok\""))
        .await;
    d.wait_for("keepalives resume", Duration::from_secs(5), || async {
        d.metric("mmd_listen_key_keepalives_total", Some("result=\"ok\""))
            .await
            > ok_before
    })
    .await;

    // The key expires: listenKeyExpired, socket closed; a new key, a new connection.
    d.sim.faults().expire_listen_keys(Some(API_KEY)).unwrap();
    d.wait_for(
        "reconnected after expiry",
        Duration::from_secs(5),
        || async {
            d.metric(
                "mmd_ws_connects_total",
                Some("stream=\"user\",reason=\"expired\""),
            )
            .await
                >= 1.0
        },
    )
    .await;
    let fills = d.metric("mmd_fills_total", None).await;
    d.wait_for("fills keep arriving", Duration::from_secs(10), || async {
        d.metric("mmd_fills_total", None).await > fills
    })
    .await;
    d.assert_agrees_with_exchange(&["USDT", "BTC"]).await;
    assert!(d.stop().await.success());
    assert!(d.sim.listen_keys(API_KEY).is_empty());
    d.assert_no_panic();
}
