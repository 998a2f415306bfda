//! Market and user WebSocket streams over real sockets: payloads, combined wrapper,
//! listen-key lifecycle, forced close at max age, pings, stream faults, 2026 dialect.

mod sim_common;

use futures_util::StreamExt;
use mmd::sim::{Dialect, FrameKind, SimConfig, StreamTarget};
use reqwest::Method;
use rust_decimal_macros::dec;
use sim_common::*;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn ticker_arr_carries_every_symbol() {
    let sim = start(test_config()).await;
    let mut ws = connect(&format!("{}/ws/!ticker@arr", sim.stream_url())).await;
    let v = next_json(&mut ws, T).await.expect("a ticker array");
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 7);
    assert!(arr.iter().all(|t| t["e"] == "24hrTicker"));
    let btc = arr.iter().find(|t| t["s"] == "BTCUSDT").unwrap();
    let bid: f64 = btc["b"].as_str().unwrap().parse().unwrap();
    let ask: f64 = btc["a"].as_str().unwrap().parse().unwrap();
    assert!(bid > 0.0 && bid < ask, "{btc}");
    // A second one arrives about one ticker interval later.
    let t0 = Instant::now();
    next_json(&mut ws, T).await.expect("second array");
    assert!(t0.elapsed() < Duration::from_secs(1));
    sim.shutdown().await;
}

#[tokio::test]
async fn combined_streams_wrap_and_book_ticker_follows_the_book() {
    let sim = start(test_config()).await;
    let mut ws = connect(&format!(
        "{}/stream?streams=btcusdt@bookTicker/ethusdt@ticker",
        sim.stream_url()
    ))
    .await;
    let mut saw_book = false;
    let mut saw_ticker = false;
    let deadline = Instant::now() + T;
    while !(saw_book && saw_ticker) && Instant::now() < deadline {
        let v = next_json(&mut ws, T).await.expect("frame");
        match v["stream"].as_str().unwrap() {
            "btcusdt@bookTicker" => {
                assert_eq!(v["data"]["s"], "BTCUSDT");
                assert!(v["data"]["u"].as_u64().unwrap() > 0);
                saw_book = true;
            }
            "ethusdt@ticker" => {
                assert_eq!(v["data"]["e"], "24hrTicker");
                saw_ticker = true;
            }
            other => panic!("unexpected stream {other}"),
        }
    }
    assert!(saw_book && saw_ticker);
    // Live SUBSCRIBE / LIST_SUBSCRIPTIONS.
    use futures_util::SinkExt;
    ws.send(Message::Text(
        r#"{"method":"SUBSCRIBE","params":["ethusdt@bookTicker"],"id":7}"#.into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Text(
        r#"{"method":"LIST_SUBSCRIPTIONS","id":8}"#.into(),
    ))
    .await
    .unwrap();
    let mut got = 0;
    while got < 2 {
        let v = next_json(&mut ws, T).await.expect("reply");
        if v["id"] == 7 {
            assert!(v["result"].is_null());
            got += 1;
        } else if v["id"] == 8 {
            assert_eq!(v["result"].as_array().unwrap().len(), 3);
            got += 1;
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn user_stream_delivers_orders_balances_and_deposits() {
    let sim = start(SimConfig {
        legacy_account_info: true,
        ..test_config()
    })
    .await;
    sim.set_market_frozen(true);
    let c = Client::new(&sim.rest_url());
    let key = c.new_listen_key().await;
    assert_eq!(c.new_listen_key().await, key, "POST returns the active key");
    assert_eq!(sim.listen_keys(KEY), vec![key.clone()]);
    let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = c.place_limit("BTCUSDT", "BUY", "50000.00", "0.01").await;
    let coid = r.body["clientOrderId"].as_str().unwrap().to_string();
    let er = wait_event(&mut ws, "executionReport", T).await.unwrap();
    assert_eq!(
        (er["x"].as_str(), er["X"].as_str()),
        (Some("NEW"), Some("NEW"))
    );
    assert_eq!(er["c"], coid.as_str());
    assert_eq!(er["C"], "");
    assert!(er["N"].is_null());
    let pos = wait_event(&mut ws, "outboundAccountPosition", T)
        .await
        .unwrap();
    assert_eq!(pos["B"][0]["a"], "USDT");
    assert_eq!(pos["B"][0]["f"], "99500.00000000");
    assert_eq!(pos["B"][0]["l"], "500.00000000");
    let info = wait_event(&mut ws, "outboundAccountInfo", T).await.unwrap();
    assert_eq!(info["B"].as_array().unwrap().len(), 3);
    let id = r.body["orderId"].to_string();
    c.signed(
        Method::DELETE,
        "/api/v3/order",
        &[
            ("symbol", "BTCUSDT"),
            ("orderId", &id),
            ("newClientOrderId", "cxl-1"),
        ],
    )
    .await;
    let er = wait_event(&mut ws, "executionReport", T).await.unwrap();
    assert_eq!(er["x"], "CANCELED");
    assert_eq!(er["c"], "cxl-1");
    assert_eq!(er["C"], coid.as_str());
    sim.deposit(KEY, "USDT", dec!(12.5));
    let bu = wait_event(&mut ws, "balanceUpdate", T).await.unwrap();
    assert_eq!(bu["a"], "USDT");
    assert_eq!(bu["d"], "12.50000000");
    let pos = wait_event(&mut ws, "outboundAccountPosition", T)
        .await
        .unwrap();
    assert_eq!(pos["B"][0]["f"], "100012.50000000");
    sim.deposit(KEY, "USDT", dec!(-0.5));
    let bu = wait_event(&mut ws, "balanceUpdate", T).await.unwrap();
    assert_eq!(bu["d"], "-0.50000000");
    // A fill: marketable IOC against the synthetic book.
    let book = c.public("/api/v3/exchangeInfo?symbol=BTCUSDT").await;
    assert_eq!(book.status, 200);
    let r = c
        .signed(
            Method::POST,
            "/api/v3/order",
            &[
                ("symbol", "BTCUSDT"),
                ("side", "SELL"),
                ("type", "MARKET"),
                ("quantity", "0.002"),
            ],
        )
        .await;
    assert_eq!(r.body["status"], "FILLED");
    let new = wait_event(&mut ws, "executionReport", T).await.unwrap();
    assert_eq!(new["x"], "NEW");
    let tr = wait_event(&mut ws, "executionReport", T).await.unwrap();
    assert_eq!(tr["x"], "TRADE");
    assert_eq!(tr["X"], "FILLED");
    assert_eq!(tr["N"], "USDT");
    assert!(tr["t"].as_i64().unwrap() > 0);
    assert_eq!(tr["m"], false);
    sim.shutdown().await;
}

#[tokio::test]
async fn listen_key_expires_without_keepalive() {
    let sim = start(SimConfig {
        listen_key_validity: Duration::from_millis(1500),
        ..test_config()
    })
    .await;
    let c = Client::new(&sim.rest_url());
    // Kept alive: survives past the validity.
    let key = c.new_listen_key().await;
    let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    let t0 = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = c
            .api_key_only(
                Method::PUT,
                &format!("/api/v3/userDataStream?listenKey={key}"),
            )
            .await;
        assert_eq!((r.status, r.body.clone()), (200, serde_json::json!({})));
    }
    assert_eq!(sim.listen_keys(KEY), vec![key.clone()]);
    // Now left alone: expires ~1.5 s after the last keepalive, event then close.
    let ev = wait_event(&mut ws, "listenKeyExpired", Duration::from_secs(4))
        .await
        .expect("listenKeyExpired");
    let since_start = t0.elapsed();
    assert_eq!(ev["listenKey"], key.as_str());
    assert!(
        since_start >= Duration::from_millis(3400),
        "{since_start:?}"
    );
    assert!(next_json(&mut ws, T).await.is_none(), "socket closed");
    let r = c
        .api_key_only(
            Method::PUT,
            &format!("/api/v3/userDataStream?listenKey={key}"),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, -1125));
    assert!(sim.listen_keys(KEY).is_empty());
    // POST gives a new key.
    assert_ne!(c.new_listen_key().await, key);
    let s = sim.stats();
    assert_eq!(s.listen_keys_expired, 1);
    assert_eq!(s.listen_keys_created, 2);
    assert_eq!(s.keepalives, 3);
    // DELETE closes the key.
    let k2 = sim.listen_keys(KEY).remove(0);
    let r = c
        .api_key_only(
            Method::DELETE,
            &format!("/api/v3/userDataStream?listenKey={k2}"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(sim.listen_keys(KEY).is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn connections_close_at_max_age_and_get_pinged() {
    let sim = start(SimConfig {
        max_connection_age: Duration::from_millis(1200),
        ping_interval: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let c = Client::new(&sim.rest_url());
    let key = c.new_listen_key().await;
    let t0 = Instant::now();
    let mut market = connect(&format!("{}/ws/btcusdt@bookTicker", sim.stream_url())).await;
    let mut user = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    let mut pings = 0;
    let mut closed_at = None;
    while let Ok(Some(msg)) = tokio::time::timeout(T, market.next()).await {
        match msg {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Close(_)) | Err(_) => {
                closed_at = Some(t0.elapsed());
                break;
            }
            _ => {}
        }
    }
    let closed_at = closed_at.expect("server closed the connection");
    assert!(
        closed_at >= Duration::from_millis(1100) && closed_at < Duration::from_millis(2500),
        "{closed_at:?}"
    );
    assert!(pings >= 3, "{pings} pings");
    assert!(next_json(&mut user, T).await.is_none());
    assert!(t0.elapsed() < Duration::from_millis(2500));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.stats().connections_closed.get("max_age"), Some(&2));
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_faults_drop_shutdown_and_inject() {
    let sim = start(test_config()).await;
    let c = Client::new(&sim.rest_url());
    // serverShutdown on a combined market stream: event in the wrapper, then close.
    let mut ws = connect(&format!(
        "{}/stream?streams=btcusdt@ticker",
        sim.stream_url()
    ))
    .await;
    next_json(&mut ws, T).await.unwrap();
    sim.faults().server_shutdown(StreamTarget::Market).unwrap();
    let v = loop {
        let v = next_json(&mut ws, T).await.expect("serverShutdown");
        if v["stream"] == "!serverShutdown" {
            break v;
        }
    };
    assert_eq!(v["data"]["e"], "serverShutdown");
    assert!(next_json(&mut ws, T).await.is_none());
    // Injected frames on a user stream, then a TCP abort with no close frame.
    let key = c.new_listen_key().await;
    let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for kind in [
        FrameKind::Malformed,
        FrameKind::Truncated,
        FrameKind::Binary,
        FrameKind::UnknownEvent,
        FrameKind::Oversized,
    ] {
        sim.faults().inject_frame(StreamTarget::User, kind).unwrap();
    }
    let mut kinds = Vec::new();
    for _ in 0..5 {
        match tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => kinds.push(match serde_json::from_str::<serde_json::Value>(&t) {
                Ok(v) if t.len() > 1_000_000 => format!("oversized {}", v["e"]),
                Ok(v) => format!("json {}", v["e"]),
                Err(_) => "invalid".to_string(),
            }),
            Message::Binary(_) => kinds.push("binary".into()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        kinds,
        [
            "invalid",
            "invalid",
            "binary",
            "json \"someFutureEvent\"",
            "oversized \"oversized\""
        ]
    );
    sim.faults().drop_connections(StreamTarget::User).unwrap();
    match tokio::time::timeout(T, ws.next()).await.unwrap() {
        None | Some(Err(_)) => {}
        Some(Ok(Message::Close(_))) => panic!("an abort must not send a close frame"),
        Some(Ok(other)) => panic!("unexpected {other:?}"),
    }
    // Expire now.
    let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.faults().expire_listen_keys(Some(KEY)).unwrap();
    assert!(wait_event(&mut ws, "listenKeyExpired", T).await.is_some());
    // Duplicated user events.
    let key = c.new_listen_key().await;
    let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.faults().duplicate_user_events(Some(1)).unwrap();
    sim.deposit(KEY, "BTC", dec!(1));
    let a = next_json(&mut ws, T).await.unwrap();
    let b = next_json(&mut ws, T).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a["e"], "balanceUpdate");
    // Restart: connections dropped, orders and keys gone, balances kept with locks released.
    sim.set_market_frozen(true);
    c.place_limit("BTCUSDT", "BUY", "50000", "0.01").await;
    let before = sim.balances(KEY);
    sim.faults().restart_exchange().unwrap();
    let t0 = Instant::now();
    assert!(wait_event(&mut ws, "never-sent", T).await.is_none());
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the restart dropped the user stream"
    );
    assert!(sim.open_orders(KEY).is_empty());
    assert!(sim.listen_keys(KEY).is_empty());
    let after = sim.balances(KEY);
    assert_eq!(
        after["USDT"],
        (before["USDT"].0 + before["USDT"].1, dec!(0))
    );
    let r = c
        .api_key_only(
            Method::PUT,
            &format!("/api/v3/userDataStream?listenKey={key}"),
        )
        .await;
    assert_eq!(r.code(), -1125);
    sim.shutdown().await;
}

#[tokio::test]
async fn dialect_2026_retires_listen_keys_and_ticker_arr() {
    let sim = start(SimConfig {
        dialect: Dialect::Y2026,
        ..test_config()
    })
    .await;
    let c = Client::new(&sim.rest_url());
    let r = c.api_key_only(Method::POST, "/api/v3/userDataStream").await;
    assert_eq!(r.status, 410);
    let err =
        tokio_tungstenite::connect_async(format!("{}/ws/!ticker@arr", sim.stream_url())).await;
    assert!(err.is_err(), "!ticker@arr refused");
    let mut ws = connect(&format!("{}/ws/btcusdt@ticker", sim.stream_url())).await;
    assert!(next_json(&mut ws, T).await.is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_pong_timeout() {
    let sim = start(SimConfig {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(400),
        ..test_config()
    })
    .await;
    // A client that never reads never answers the pings.
    let _ws = connect(&format!("{}/ws/btcusdt@bookTicker", sim.stream_url())).await;
    let deadline = Instant::now() + T;
    while !sim.stats().connections_closed.contains_key("pong_timeout") {
        assert!(Instant::now() < deadline, "{:?}", sim.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A reading client answers (tungstenite replies to pings) and stays.
    let mut ws = connect(&format!("{}/ws/btcusdt@bookTicker", sim.stream_url())).await;
    drain(&mut ws, Duration::from_millis(1000)).await;
    assert_eq!(sim.stats().connections_closed.get("pong_timeout"), Some(&1));
    sim.shutdown().await;
}

#[tokio::test]
async fn user_events_delayed_and_reordered() {
    let sim = start(test_config()).await;
    let c = Client::new(&sim.rest_url());
    let key = c.new_listen_key().await;
    let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Reorder: the deposit's balanceUpdate is held back behind its account position.
    sim.faults().reorder_user_events(Some(1)).unwrap();
    sim.deposit(KEY, "ETH", dec!(1));
    let a = next_json(&mut ws, T).await.unwrap();
    let b = next_json(&mut ws, T).await.unwrap();
    assert_eq!(
        (a["e"].as_str(), b["e"].as_str()),
        (Some("outboundAccountPosition"), Some("balanceUpdate"))
    );
    // Then back to normal order.
    sim.deposit(KEY, "ETH", dec!(2));
    let a = next_json(&mut ws, T).await.unwrap();
    assert_eq!(a["e"], "balanceUpdate");
    // Delay.
    drain(&mut ws, Duration::from_millis(100)).await;
    sim.faults()
        .delay_user_events(Duration::from_millis(400), Some(1))
        .unwrap();
    let t0 = Instant::now();
    sim.deposit(KEY, "ETH", dec!(3));
    wait_event(&mut ws, "balanceUpdate", T).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(390),
        "{:?}",
        t0.elapsed()
    );
    sim.shutdown().await;
}

/// Events emitted right after the handshake (no pause) reach the new connection: a
/// client switching connections must not fall into a gap.
#[tokio::test]
async fn user_connection_receives_events_from_the_moment_it_is_open() {
    let sim = start(test_config()).await;
    let c = Client::new(&sim.rest_url());
    let key = c.new_listen_key().await;
    for i in 0..20 {
        let mut ws = connect(&format!("{}/ws/{key}", sim.stream_url())).await;
        sim.deposit(KEY, "ETH", dec!(1));
        let ev = wait_event(&mut ws, "balanceUpdate", Duration::from_secs(2)).await;
        assert!(
            ev.is_some(),
            "attempt {i}: event lost right after the handshake"
        );
    }
    sim.shutdown().await;
}
