//! The Binance client edge against the embedded simulator (real sockets, 127.0.0.1):
//! REST round trips with signatures checked by the simulator, the 2018 dialect
//! (listen key + `!ticker@arr`) and the 2026 dialect (WebSocket API + bookTicker,
//! 410 on listen keys), planned rotation before the server's cutoff, faults.

use std::time::Duration;

use mmd::binance::market::{MarketMode, spawn_market_stream};
use mmd::binance::rest::{
    NewOrder, OrderRef, OrderType, RespType, RestClient, RestError, RestSettings,
};
use mmd::binance::sign::{HmacSigner, Signer};
use mmd::binance::stream::{ConnectReason, StreamEvent, StreamKind, StreamSettings};
use mmd::binance::types::{MarketEvent, OrderStatus, Side, SymbolFilter, UserEvent};
use mmd::binance::user_stream::spawn_user_stream;
use mmd::sim::{
    AccountConfig, Dialect, FaultCommand, FrameKind, SimConfig, SimHandle, StreamTarget,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tokio::sync::mpsc;

const KEY: &str = "wire-sim-key";
const SECRET: &str = "wire-sim-secret";

async fn sim(dialect: Dialect, cutoff: Duration) -> SimHandle {
    let cfg = SimConfig {
        dialect,
        accounts: vec![AccountConfig {
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            ..AccountConfig::default()
        }],
        ticker_interval: Duration::from_millis(50),
        max_connection_age: cutoff,
        extra_symbols: 20,
        ..SimConfig::default()
    };
    mmd::sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn rest(sim: &SimHandle) -> RestClient {
    RestClient::new(RestSettings {
        base_url: sim.rest_url(),
        api_key: Some(KEY.into()),
        signer: Some(Signer::Hmac(HmacSigner::new(SECRET.as_bytes()))),
        recv_window: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

fn settings(sim: &SimHandle, max_age: Duration) -> StreamSettings {
    StreamSettings {
        stream_url: sim.stream_url(),
        ws_api_url: None,
        max_connection_age: max_age,
        reconnect_min_backoff: Duration::from_millis(50),
        reconnect_max_backoff: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(3600),
        tls: mmd::tls::client_config(&[]).unwrap(),
    }
}

async fn collect(rx: &mut mpsc::Receiver<StreamEvent>, d: Duration) -> Vec<StreamEvent> {
    let end = tokio::time::Instant::now() + d;
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(ev);
    }
    out
}

fn connects(evs: &[StreamEvent], kind: StreamKind) -> Vec<ConnectReason> {
    evs.iter()
        .filter_map(|e| match e {
            StreamEvent::Connected { stream, reason } if *stream == kind => Some(*reason),
            _ => None,
        })
        .collect()
}

fn disconnects(evs: &[StreamEvent]) -> usize {
    evs.iter()
        .filter(|e| matches!(e, StreamEvent::Disconnected { .. }))
        .count()
}

fn maker_bid(symbol: &str, price: Decimal, id: &str) -> NewOrder {
    NewOrder {
        symbol: symbol.into(),
        side: Side::Buy,
        order_type: OrderType::LimitMaker,
        time_in_force: None,
        qty: dec!(0.001),
        price: Some(price),
        client_order_id: id.into(),
        resp_type: RespType::Result,
    }
}

/// A price well below the market, on the tick grid.
async fn far_bid(c: &RestClient) -> Decimal {
    let info = c.exchange_info().await.unwrap();
    let btc = info.symbols.iter().find(|s| s.symbol == "BTCUSDT").unwrap();
    let tick = btc
        .filters
        .iter()
        .find_map(|f| match f {
            SymbolFilter::PriceFilter { tick_size, .. } => Some(*tick_size),
            _ => None,
        })
        .unwrap();
    let acct_mid = dec!(10000);
    (acct_mid / tick).floor() * tick
}

#[tokio::test]
async fn rest_round_trips_against_the_simulator() {
    let sim = sim(Dialect::Y2018, Duration::from_secs(3600)).await;
    let c = rest(&sim);
    c.sync_time().await.unwrap();
    assert!(c.time_offset_ms().abs() < 1_000);
    let price = far_bid(&c).await;
    assert!(c.rate_limit_status().weight_limit_1m > 0);
    let placed = c
        .place_order(&maker_bid("BTCUSDT", price, "wire-1"))
        .await
        .unwrap();
    assert_eq!(placed.status, Some(OrderStatus::New));
    let open = c.open_orders(Some("BTCUSDT")).await.unwrap();
    assert_eq!(open.len(), 1);
    let q = c
        .query_order("BTCUSDT", &OrderRef::ClientOrderId("wire-1".into()))
        .await
        .unwrap();
    assert_eq!(q.order_id, placed.order_id);
    let acct = c.account().await.unwrap();
    let usdt = acct.balances.iter().find(|b| b.asset == "USDT").unwrap();
    assert_eq!(usdt.locked, price * dec!(0.001));
    let canceled = c
        .cancel_order("BTCUSDT", &OrderRef::OrderId(placed.order_id))
        .await
        .unwrap();
    assert_eq!(canceled.status, Some(OrderStatus::Canceled));
    // Canceling again: a real -2011/-2013 from the exchange, outcome known.
    let again = c
        .cancel_order("BTCUSDT", &OrderRef::OrderId(placed.order_id))
        .await
        .unwrap_err();
    assert!(
        matches!(again.code(), Some(-2011) | Some(-2013)),
        "{again:?}"
    );
    assert!(!again.outcome_unknown());
    c.place_order(&maker_bid("BTCUSDT", price, "wire-2"))
        .await
        .unwrap();
    c.place_order(&maker_bid("BTCUSDT", price, "wire-3"))
        .await
        .unwrap();
    assert_eq!(c.cancel_open_orders("BTCUSDT").await.unwrap().len(), 2);
    assert!(c.cancel_open_orders("BTCUSDT").await.unwrap().is_empty());
    assert!(sim.open_orders(KEY).is_empty());
    c.my_trades("BTCUSDT", None, 100).await.unwrap();

    // Clock skew at the exchange: -1021, re-sync, one retry, success.
    sim.faults()
        .apply(FaultCommand::ClockSkew { skew_ms: 30_000 })
        .unwrap();
    c.account().await.unwrap();
    assert!((c.time_offset_ms() - 30_000).abs() < 1_000);

    // A placement that hangs past our timeout: outcome unknown, resolved by query.
    sim.faults()
        .apply(FaultCommand::HangRest {
            path: "/api/v3/order".into(),
            method: Some("POST".into()),
            count: 1,
            hang_ms: 3_000,
            after_apply: true,
        })
        .unwrap();
    let e = c
        .place_order(&maker_bid("BTCUSDT", price, "wire-4"))
        .await
        .unwrap_err();
    assert_eq!(e, RestError::Timeout);
    assert!(e.outcome_unknown());
    let q = c
        .query_order("BTCUSDT", &OrderRef::ClientOrderId("wire-4".into()))
        .await
        .unwrap();
    assert_eq!(q.status, Some(OrderStatus::New));
    c.cancel_open_orders("BTCUSDT").await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn book_tickers_of_several_symbols_in_one_request() {
    let sim = sim(Dialect::Y2026, Duration::from_secs(3600)).await;
    let c = rest(&sim);
    let asked = vec!["ETHUSDT".to_string(), "BTCUSDT".to_string()];
    let tickers = c.book_tickers(&asked).await.unwrap();
    let symbols: Vec<&str> = tickers.iter().map(|t| t.symbol.as_str()).collect();
    assert_eq!(symbols, ["ETHUSDT", "BTCUSDT"], "in the order asked");
    for t in &tickers {
        assert!(
            t.bid_price > Decimal::ZERO && t.bid_price < t.ask_price,
            "{t:?}"
        );
        assert!(
            t.bid_qty > Decimal::ZERO && t.ask_qty > Decimal::ZERO,
            "{t:?}"
        );
    }
    // One unknown symbol fails the request, as at Binance.
    let e = c
        .book_tickers(&["BTCUSDT".to_string(), "NOPEUSDT".to_string()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(-1121), "{e:?}");
    // `symbol` and `symbols` together are refused.
    let body = reqwest::get(format!(
        "{}/api/v3/ticker/bookTicker?symbol=BTCUSDT&symbols=%5B%22BTCUSDT%22%5D",
        sim.rest_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(body.contains("-1128"), "{body}");
    sim.shutdown().await;
}

#[tokio::test]
async fn exchange_info_for_the_configured_symbols_only() {
    let sim = sim(Dialect::Y2026, Duration::from_secs(3600)).await;
    let c = rest(&sim);
    let all = c.exchange_info().await.unwrap();
    assert!(
        all.symbols.len() > 2,
        "{} symbols listed",
        all.symbols.len()
    );
    let asked = vec!["ETHUSDT".to_string(), "BTCUSDT".to_string()];
    let info = c.exchange_info_for(&asked).await.unwrap();
    let symbols: Vec<&str> = info.symbols.iter().map(|s| s.symbol.as_str()).collect();
    assert_eq!(symbols, ["ETHUSDT", "BTCUSDT"]);
    assert!(
        info.symbols.iter().all(|s| !s.filters.is_empty()),
        "filters come with the narrowed answer: {info:?}"
    );
    assert_eq!(
        info.rate_limits, all.rate_limits,
        "and so do the rate limits"
    );
    // A symbol no longer listed fails the narrowed request (-1121): the full list answers,
    // so the caller can tell which one is gone.
    let with_gone = vec!["BTCUSDT".to_string(), "GONEUSDT".to_string()];
    let info = c.exchange_info_for(&with_gone).await.unwrap();
    assert_eq!(info.symbols.len(), all.symbols.len());
    assert!(info.symbols.iter().all(|s| s.symbol != "GONEUSDT"));
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_429_then_no_requests_until_retry_after() {
    let sim = sim(Dialect::Y2018, Duration::from_secs(3600)).await;
    let c = rest(&sim);
    sim.faults()
        .apply(FaultCommand::RateLimit { duration_ms: 1_500 })
        .unwrap();
    let e = c.account().await.unwrap_err();
    let RestError::RateLimited { retry_after } = e else {
        panic!("{e:?}")
    };
    assert!(retry_after >= Duration::from_secs(1));
    // Refused locally: the simulator would ban (418) a client that keeps sending.
    assert!(matches!(c.time().await, Err(RestError::RateLimited { .. })));
    // The fault lasts 1.5 s, announced as 2 s (Retry-After is whole seconds, rounded up):
    // a client that waits as told is never early.
    assert_eq!(retry_after, Duration::from_secs(2));
    tokio::time::sleep(retry_after + Duration::from_millis(50)).await;
    c.account().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn dialect_2018_ticker_arr_and_listen_key_with_rotation_and_faults() {
    let sim = sim(Dialect::Y2018, Duration::from_millis(1_600)).await;
    let c = rest(&sim);
    c.sync_time().await.unwrap();
    let (tx, mut rx) = mpsc::channel(100_000);
    let market = spawn_market_stream(
        settings(&sim, Duration::from_millis(1_200)),
        MarketMode::TickerArr,
        vec!["BTCUSDT".into()],
        tx.clone(),
    );
    let user = spawn_user_stream(settings(&sim, Duration::from_millis(1_200)), c.clone(), tx);
    let evs = collect(&mut rx, Duration::from_millis(400)).await;
    assert_eq!(
        connects(&evs, StreamKind::User),
        vec![ConnectReason::Initial]
    );
    assert_eq!(
        connects(&evs, StreamKind::Market),
        vec![ConnectReason::Initial]
    );
    assert_eq!(sim.listen_keys(KEY).len(), 1);
    let price = far_bid(&c).await;
    for i in 0..30 {
        c.place_order(&maker_bid("BTCUSDT", price, &format!("rot-{i}")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let evs = collect(&mut rx, Duration::from_millis(300)).await;
    // Rotated (planned) on both streams before the server's 1.6 s cutoff: no drops.
    assert!(connects(&evs, StreamKind::User).contains(&ConnectReason::Planned));
    assert!(connects(&evs, StreamKind::Market).contains(&ConnectReason::Planned));
    assert_eq!(disconnects(&evs), 0, "{evs:?}");
    // Every placement's executionReport exactly once.
    let mut ids: Vec<String> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::User {
                event: UserEvent::ExecutionReport(er),
                ..
            } if er.client_order_id.starts_with("rot-") => Some(er.client_order_id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("rot-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    let tickers: Vec<u64> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Market {
                event: MarketEvent::Ticker(t),
                ..
            } => Some(t.event_time),
            _ => None,
        })
        .collect();
    assert!(tickers.len() > 20);
    assert!(evs.iter().all(|e| !matches!(e, StreamEvent::Market { event: MarketEvent::Ticker(t), .. } if t.symbol != "BTCUSDT")));
    let mut dedup = tickers.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), tickers.len(), "duplicate ticker frames");

    // Key expiry at the exchange: new key, reconnect flagged as an expiry.
    sim.faults()
        .apply(FaultCommand::ExpireListenKey {
            listen_key: None,
            api_key: Some(KEY.into()),
        })
        .unwrap();
    let evs = collect(&mut rx, Duration::from_millis(500)).await;
    assert!(
        connects(&evs, StreamKind::User).contains(&ConnectReason::Expired),
        "{evs:?}"
    );
    // Unplanned drop of every connection: immediate reconnect, flagged as error.
    sim.faults()
        .apply(FaultCommand::DropConnections {
            target: StreamTarget::All,
        })
        .unwrap();
    let evs = collect(&mut rx, Duration::from_millis(500)).await;
    assert!(connects(&evs, StreamKind::User).contains(&ConnectReason::Error));
    assert!(connects(&evs, StreamKind::Market).contains(&ConnectReason::Error));
    // Hostile frames are reported and skipped, the stream stays up.
    for kind in [
        FrameKind::Malformed,
        FrameKind::Truncated,
        FrameKind::Oversized,
        FrameKind::UnknownEvent,
        FrameKind::Binary,
    ] {
        sim.faults().inject_frame(StreamTarget::User, kind).unwrap();
    }
    let evs = collect(&mut rx, Duration::from_millis(300)).await;
    let decode_errors = evs
        .iter()
        .filter(|e| {
            matches!(
                e,
                StreamEvent::DecodeError {
                    stream: StreamKind::User,
                    ..
                }
            )
        })
        .count();
    assert_eq!(decode_errors, 3, "{evs:?}");
    assert_eq!(disconnects(&evs), 0);
    market.shutdown().await;
    user.shutdown().await;
    assert!(sim.listen_keys(KEY).is_empty(), "key deleted on shutdown");
    c.cancel_open_orders("BTCUSDT").await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn dialect_2026_listen_key_is_retired_and_book_ticker_rotates_and_resubscribes() {
    let sim = sim(Dialect::Y2026, Duration::from_millis(1_600)).await;
    let c = rest(&sim);
    let e = c.create_listen_key().await.unwrap_err();
    assert_eq!(e, RestError::ListenKeyRetired);
    assert!(e.to_string().contains("ws-api"));
    let (tx, mut rx) = mpsc::channel(100_000);
    let market = spawn_market_stream(
        settings(&sim, Duration::from_millis(1_200)),
        MarketMode::BookTicker,
        vec!["BTCUSDT".into()],
        tx,
    );
    let evs = collect(&mut rx, Duration::from_millis(400)).await;
    assert_eq!(
        connects(&evs, StreamKind::Market),
        vec![ConnectReason::Initial]
    );
    market.update_symbols(vec!["BTCUSDT".into(), "ETHUSDT".into()]);
    let evs = collect(&mut rx, Duration::from_millis(1_600)).await;
    assert!(connects(&evs, StreamKind::Market).contains(&ConnectReason::Planned));
    assert_eq!(disconnects(&evs), 0, "{evs:?}");
    let updates = |sym: &str| -> Vec<u64> {
        evs.iter()
            .filter_map(|e| match e {
                StreamEvent::Market {
                    event: MarketEvent::BookTicker(b),
                    ..
                } if b.symbol == sym => Some(b.update_id),
                _ => None,
            })
            .collect()
    };
    for sym in ["BTCUSDT", "ETHUSDT"] {
        let u = updates(sym);
        assert!(!u.is_empty(), "{sym}");
        let mut d = u.clone();
        d.sort();
        d.dedup();
        assert_eq!(
            d.len(),
            u.len(),
            "{sym}: duplicate bookTicker across rotation"
        );
    }
    market.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn dialect_2026_ws_api_user_stream_rotates_and_recovers() {
    let sim = sim(Dialect::Y2026, Duration::from_millis(1_600)).await;
    let c = rest(&sim);
    c.sync_time().await.unwrap();
    let (tx, mut rx) = mpsc::channel(100_000);
    let mut s = settings(&sim, Duration::from_millis(1_200));
    s.ws_api_url = Some(sim.ws_api_url());
    let user = spawn_user_stream(s, c.clone(), tx);
    let evs = collect(&mut rx, Duration::from_millis(400)).await;
    assert_eq!(
        connects(&evs, StreamKind::User),
        vec![ConnectReason::Initial]
    );
    let price = far_bid(&c).await;
    for i in 0..25 {
        c.place_order(&maker_bid("BTCUSDT", price, &format!("ws-{i}")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let evs = collect(&mut rx, Duration::from_millis(300)).await;
    assert!(
        connects(&evs, StreamKind::User).contains(&ConnectReason::Planned),
        "{evs:?}"
    );
    assert_eq!(disconnects(&evs), 0, "{evs:?}");
    let mut ids: Vec<String> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::User {
                event: UserEvent::ExecutionReport(er),
                ..
            } if er.client_order_id.starts_with("ws-") => Some(er.client_order_id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..25).map(|i| format!("ws-{i}")).collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "every executionReport exactly once across rotations"
    );

    // serverShutdown, and the simulator closes right after it (Binance gives no
    // fixed lead time): the replacement is opened at the announcement; since the
    // old one closed first there was a gap, so it reports Error and the engine
    // resyncs.
    sim.faults()
        .apply(FaultCommand::ServerShutdown {
            target: StreamTarget::WsApi,
        })
        .unwrap();
    let evs = collect(&mut rx, Duration::from_millis(400)).await;
    let reasons = connects(&evs, StreamKind::User);
    assert!(
        reasons == [ConnectReason::Error] || reasons == [ConnectReason::Planned],
        "{evs:?}"
    );
    // Unplanned drop: reconnect, flagged so the engine resyncs.
    sim.faults()
        .apply(FaultCommand::DropConnections {
            target: StreamTarget::WsApi,
        })
        .unwrap();
    let evs = collect(&mut rx, Duration::from_millis(400)).await;
    assert!(
        connects(&evs, StreamKind::User).contains(&ConnectReason::Error),
        "{evs:?}"
    );
    user.shutdown().await;
    c.cancel_open_orders("BTCUSDT").await.unwrap();
    sim.shutdown().await;
}
