//! The real daemon over TLS end to end, as it talks to Binance: the simulator serves
//! `https://` and `wss://` with a certificate from a CA made here, and the daemon trusts
//! that CA only through `exchange.tls_ca_file`. REST, the market stream and the user
//! stream (listen key, then the WebSocket API) all go through the handshake.

mod daemon_support;
mod tls_support;

use std::time::Duration;

use daemon_support::*;

/// Which user-stream transport a run uses, with the dialect and market stream that go
/// with it (as `daemon_streams.rs` and `daemon_ws_api.rs` run them in plain text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UserStream {
    ListenKey,
    WsApi,
}

/// A daemon on a TLS simulator, its certificates under `certs`; `trust` copies the CA
/// into the daemon's directory and names it, relatively, in `exchange.tls_ca_file`.
async fn tls_daemon(
    certs: &tempfile::TempDir,
    mode: UserStream,
    trust: bool,
) -> (Daemon, tls_support::Pki) {
    let pki = tls_support::pki(certs.path());
    let mut cfg = sim_config();
    cfg.tls = Some(pki.sim_tls());
    if mode == UserStream::WsApi {
        cfg.dialect = mmd::sim::Dialect::Y2026;
    }
    let mut d = Daemon::new(cfg, &[("BTCUSDT", "0.001")], "").await;
    assert!(d.sim.rest_url().starts_with("https://127.0.0.1:"));
    assert!(d.sim.stream_url().starts_with("wss://127.0.0.1:"));
    let mut env = Vec::new();
    if trust {
        std::fs::copy(&pki.ca_file, d.dir.path().join("ca.pem")).unwrap();
        env.push(("MMD__EXCHANGE__TLS_CA_FILE", "ca.pem".to_string()));
    }
    if mode == UserStream::WsApi {
        env.push(("MMD__EXCHANGE__USER_STREAM", "ws-api".into()));
        env.push(("MMD__EXCHANGE__WS_API_URL", d.sim.ws_api_url()));
        env.push(("MMD__STREAMS__MARKET", "bookTicker".into()));
    }
    d.spawn_with_env(&env);
    (d, pki)
}

async fn quotes_fills_and_reconciles_over_tls(mode: UserStream) {
    let certs = tempfile::tempdir().unwrap();
    let (d, _pki) = tls_daemon(&certs, mode, true).await;
    // Quotes on both sides, live at the exchange: exchangeInfo, the account and the
    // orders went over https.
    d.wait_for(
        "a bid and an ask resting",
        Duration::from_secs(10),
        || async {
            let open = d.open_orders();
            let ours = |side| {
                open.iter().any(|o| {
                    o.symbol == "BTCUSDT" && o.side == side && o.client_order_id.starts_with("mmdt")
                })
            };
            ours(mmd::sim::Side::Buy) && ours(mmd::sim::Side::Sell)
        },
    )
    .await;
    // Fills, which reach the daemon only through the user stream over wss.
    d.wait_for("a fill counted", Duration::from_secs(12), || async {
        d.metric("mmd_fills_total", None).await >= 1.0
    })
    .await;
    // Market data over wss: both streams came up once, none failed, and an order goes out
    // in reaction to a market frame (the tick-to-order histogram counts only those; the
    // first quotes may come from the REST seed alone).
    for stream in ["market", "user"] {
        let initial = format!("stream=\"{stream}\",reason=\"initial\"");
        assert_eq!(
            d.metric("mmd_ws_connects_total", Some(&initial)).await,
            1.0,
            "{mode:?} {stream}"
        );
        let error = format!("stream=\"{stream}\",reason=\"error\"");
        assert_eq!(
            d.metric("mmd_ws_connects_total", Some(&error)).await,
            0.0,
            "{mode:?} {stream}\n{}",
            tail(&d.log(), 30)
        );
    }
    d.wait_for(
        "an order sent in reaction to a market frame",
        Duration::from_secs(10),
        || async { d.metric("mmd_tick_to_order_seconds_count", None).await >= 1.0 },
    )
    .await;
    let stats = d.sim.stats();
    assert!(stats.market_events_sent > 0);
    // The fills' executionReports went out on the user stream, over wss.
    assert!(stats.user_events_sent >= 1);
    match mode {
        UserStream::ListenKey => {
            assert!(d.metric("mmd_listen_key_created_total", None).await >= 1.0);
            assert!(d.sim.stats().listen_keys_created >= 1);
        }
        UserStream::WsApi => {
            assert_eq!(d.metric("mmd_listen_key_created_total", None).await, 0.0);
            assert_eq!(d.sim.stats().listen_keys_created, 0);
        }
    }
    // The extra trust is announced once, with the file and a count, not the PEM.
    let announced = d.log_events("tls_extra_roots");
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0]["level"], "WARN", "{}", announced[0]);
    assert_eq!(
        announced[0]["file"],
        d.dir.path().join("ca.pem").display().to_string()
    );
    assert_eq!(announced[0]["certificates"], 1);
    assert!(!d.log().contains("BEGIN CERTIFICATE"));
    // Every fill and balance the exchange has, the daemon has, to the unit.
    let trades = d.assert_agrees_with_exchange(&["USDT", "BTC"]).await;
    assert!(trades >= 1);
    let mut d = d;
    assert!(d.stop().await.success());
    // The shutdown's cancels went over https too.
    assert!(d.open_orders().is_empty());
    d.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_key_user_stream_and_ticker_arr_over_tls() {
    quotes_fills_and_reconciles_over_tls(UserStream::ListenKey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_api_user_stream_and_book_ticker_over_tls() {
    quotes_fills_and_reconciles_over_tls(UserStream::WsApi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_ca_file_the_daemon_stops_on_the_certificate_and_places_nothing() {
    let certs = tempfile::tempdir().unwrap();
    let (mut d, _pki) = tls_daemon(&certs, UserStream::ListenKey, false).await;
    let status = d
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running:\n{}", tail(&d.log(), 20)));
    // A fatal error, not a crash and not a retry loop: exit 1, once.
    assert_eq!(status.code(), Some(1), "{}", tail(&d.log(), 20));
    let fatal = d.log_events("fatal");
    assert_eq!(fatal.len(), 1, "{}", d.log());
    let error = fatal[0]["error"].as_str().unwrap();
    assert!(error.starts_with("GET /api/v3/time: "), "{error}");
    assert!(
        error.ends_with("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
    assert!(d.log_events("tls_extra_roots").is_empty());
    // No request got past the handshake: nothing reached the simulator's router.
    let stats = d.sim.stats();
    assert_eq!(stats.rest_requests, 0);
    assert_eq!(stats.orders_placed, 0);
    assert_eq!(stats.connections_opened, 0);
    assert!(d.open_orders().is_empty());
    assert!(d.sim.trades(API_KEY).is_empty());
    d.assert_no_panic();
}
