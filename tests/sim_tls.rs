//! The simulator serving TLS (`SimConfig::tls`): REST, market streams and the WebSocket
//! API on one port over rustls, as Binance serves them, and the same shutdown as in
//! plain text.

mod sim_common;
mod tls_support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use mmd::binance::rest::{
    NewOrder, OrderType, RespType, RestClient, RestError, RestSettings, TimeInForce,
};
use mmd::binance::sign::{HmacSigner, Signer};
use mmd::binance::types::Side;
use rust_decimal_macros::dec;
use serde_json::Value;
use sim_common::{KEY, SECRET, test_config};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;

fn settings(url: &str) -> RestSettings {
    RestSettings {
        base_url: url.into(),
        api_key: Some(KEY.into()),
        signer: Some(Signer::Hmac(HmacSigner::new(SECRET.as_bytes()))),
        recv_window: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
    }
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn wss(url: &str, pki: &tls_support::Pki) -> Wss {
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        Some(Connector::Rustls(pki.client_config())),
    )
    .await
    .unwrap_or_else(|e| panic!("{url}: {e}"));
    ws
}

async fn next_json(ws: &mut Wss) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_streams_and_ws_api_over_tls_then_shutdown_closes_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::pki(dir.path());
    let mut cfg = test_config();
    cfg.tls = Some(pki.sim_tls());
    let sim = sim_common::start(cfg).await;
    let port = sim.addr().port();
    assert_eq!(sim.rest_url(), format!("https://127.0.0.1:{port}"));
    assert_eq!(sim.stream_url(), format!("wss://127.0.0.1:{port}"));
    assert_eq!(
        sim.ws_api_url(),
        format!("wss://127.0.0.1:{port}/ws-api/v3")
    );

    // REST: a signed order and its resting state.
    let rest = RestClient::with_root_certificates(settings(&sim.rest_url()), vec![pki.ca.clone()])
        .unwrap();
    rest.sync_time().await.unwrap();
    let placed = rest
        .place_order(&NewOrder {
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: Some(TimeInForce::Gtc),
            qty: dec!(0.001),
            price: Some(dec!(30000)),
            client_order_id: "tls-1".into(),
            resp_type: RespType::Result,
        })
        .await
        .unwrap();
    assert_eq!(placed.status, Some(mmd::binance::types::OrderStatus::New));
    let open = sim.open_orders(KEY);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].client_order_id, "tls-1");
    assert_eq!(open[0].price, dec!(30000));

    // A market stream, upgraded over TLS.
    let mut market = wss(&format!("{}/ws/btcusdt@bookTicker", sim.stream_url()), &pki).await;
    let frame = next_json(&mut market).await;
    assert_eq!(frame["s"], "BTCUSDT", "{frame}");

    // The WebSocket API on the same port.
    let mut api = wss(&sim.ws_api_url(), &pki).await;
    api.send(Message::text(r#"{"id":"t1","method":"time","params":{}}"#))
        .await
        .unwrap();
    let answer = next_json(&mut api).await;
    assert_eq!(answer["id"], "t1", "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    assert!(answer["result"]["serverTime"].as_u64().unwrap() > 0);

    // A plain-text client on the TLS port gets no answer from the router.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v3/time"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // Shutdown ends the open WebSockets and returns promptly, as in plain text.
    let started = Instant::now();
    sim.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for ws in [&mut market, &mut api] {
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "a WebSocket outlived the shutdown");
    }
    // And nothing listens on the port any more.
    let e = rest.time().await.unwrap_err();
    assert!(matches!(e, RestError::Transport(_)), "{e:?}");
}

#[tokio::test]
async fn a_bad_certificate_or_key_file_fails_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::pki(dir.path());
    let start = |tls: mmd::sim::SimTls| async move {
        let mut cfg = test_config();
        cfg.tls = Some(tls);
        match mmd::sim::start(cfg, "127.0.0.1:0".parse().unwrap()).await {
            Ok(_) => panic!("started"),
            Err(e) => e.to_string(),
        }
    };
    let missing = dir.path().join("nope.pem").display().to_string();
    let e = start(mmd::sim::SimTls {
        cert_file: missing.clone(),
        ..pki.sim_tls()
    })
    .await;
    assert!(
        e.starts_with(&format!("tls.cert_file {missing}: cannot read: ")),
        "{e}"
    );
    // The certificate file holds no key: named, and nothing of the file is quoted.
    let e = start(mmd::sim::SimTls {
        key_file: pki.cert_file.display().to_string(),
        ..pki.sim_tls()
    })
    .await;
    assert_eq!(
        e,
        format!(
            "tls.key_file {}: no private key in it (a PEM \"BEGIN PRIVATE KEY\" section is expected)",
            pki.cert_file.display()
        )
    );
    // A key that is not the certificate's: refused at the start, not at each handshake.
    let elsewhere = dir.path().join("other");
    std::fs::create_dir(&elsewhere).unwrap();
    let other = tls_support::pki(&elsewhere);
    let e = start(mmd::sim::SimTls {
        key_file: other.key_file.display().to_string(),
        ..pki.sim_tls()
    })
    .await;
    assert!(
        e.starts_with(&format!(
            "tls.cert_file {} / tls.key_file {}: ",
            pki.cert_file.display(),
            other.key_file.display()
        )),
        "{e}"
    );
}
