//! The 2026 WebSocket API over a real socket: signing vectors, logon, user-data
//! subscriptions with wrapped events, orders, eventStreamTerminated, serverShutdown.

mod sim_common;

use futures_util::SinkExt;
use mmd::binance::sign::{HmacSigner, ws_api_payload};
use mmd::sim::auth::Params;
use mmd::sim::{AccountConfig, Dialect, SimConfig, StreamTarget};
use serde_json::{Value, json};
use sim_common::*;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);
const ER_CONDITIONAL: &[&str] = &["v", "eR"];

async fn call(ws: &mut Ws, id: &str, method: &str, params: Value) -> Value {
    let mut req = json!({"id": id, "method": method});
    if !params.is_null() {
        req["params"] = params;
    }
    ws.send(Message::Text(req.to_string().into()))
        .await
        .unwrap();
    loop {
        let v = next_json(ws, T).await.expect("response");
        if v["id"] == id {
            return v;
        }
    }
}

fn signed_params(signer: &HmacSigner, key: &str, mut params: Vec<(&str, String)>) -> Value {
    params.push(("apiKey", key.to_string()));
    params.push(("timestamp", now_ms().to_string()));
    let payload = ws_api_payload(params.iter().map(|(k, v)| (*k, v.as_str())));
    let sig = signer.sign_hex(payload.as_bytes());
    let mut obj = serde_json::Map::new();
    for (k, v) in params {
        obj.insert(k.to_string(), Value::String(v));
    }
    obj.insert("signature".into(), Value::String(sig));
    Value::Object(obj)
}

#[tokio::test]
async fn ws_api_signing_vectors_verify() {
    let vectors = fixture("spot/signing/vectors.json");
    let mut end_to_end = 0;
    let mut offline = 0;
    for v in vectors["vectors"].as_array().unwrap() {
        if v["api"] != "WebSocket API" || v["method"] != "HMAC-SHA256" {
            continue;
        }
        let (key, secret) = (v["key"].as_str().unwrap(), v["secret"].as_str().unwrap());
        let signature = v["signature"].as_str().unwrap();
        let payload = v["payload"].as_str().unwrap();
        let pairs: Vec<(String, String)> = payload
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let ok = mmd::sim::ws_api::ws_signature_ok(
            &mmd::sim::auth::KeyVerifier::from_secret(secret).unwrap(),
            &Params::from_pairs(pairs.clone()),
            signature,
        );
        assert_eq!(ok, v["verified"] == true, "{}", v["name"]);
        offline += 1;
        let method = v["request"].as_str().unwrap_or("");
        if v["verified"] != true
            || ![
                "session.logon",
                "order.place",
                "order.cancel",
                "openOrders.cancelAll",
            ]
            .contains(&method)
        {
            continue;
        }
        // End to end: the server clock set to the vector's timestamp, params in the
        // request exactly as documented.
        let ts: i64 = pairs
            .iter()
            .find(|(k, _)| k == "timestamp")
            .unwrap()
            .1
            .parse()
            .unwrap();
        let sim = start(SimConfig {
            extra_symbols: 0,
            accounts: vec![AccountConfig {
                api_key: key.into(),
                api_secret: secret.into(),
                ..AccountConfig::default()
            }],
            ..SimConfig::default()
        })
        .await;
        sim.faults().clock_skew(ts - now_ms() as i64 + 1).unwrap();
        let params = match v.get("request_params") {
            Some(p) => p.clone(),
            None => {
                let mut m = serde_json::Map::new();
                for (k, val) in &pairs {
                    m.insert(k.clone(), Value::String(val.clone()));
                }
                m.insert("signature".into(), Value::String(signature.into()));
                Value::Object(m)
            }
        };
        let mut ws = connect(&sim.ws_api_url()).await;
        let r = call(&mut ws, "v", method, params).await;
        let code = r["error"]["code"].as_i64().unwrap_or(0);
        assert!(code != -1022 && code != -1021, "{}: {r}", v["name"]);
        if method == "session.logon" {
            assert_eq!(r["status"], 200, "{r}");
        }
        sim.shutdown().await;
        end_to_end += 1;
    }
    assert!(
        offline >= 15 && end_to_end >= 4,
        "{offline} offline, {end_to_end} end to end"
    );
}

#[tokio::test]
async fn user_data_and_orders_over_ws_api() {
    let sim = start(SimConfig {
        dialect: Dialect::Y2026,
        ..test_config()
    })
    .await;
    sim.set_market_frozen(true);
    let signer = HmacSigner::new(SECRET.as_bytes());
    let mut ws = connect(&sim.ws_api_url()).await;
    let r = call(
        &mut ws,
        "1",
        "userDataStream.subscribe.signature",
        signed_params(&signer, KEY, vec![]),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_same_shape(
        &r,
        &fixture("spot/ws-api/userDataStream.subscribe.signature.response.json"),
        &[],
        "subscribe.signature",
    );
    assert_eq!(r["result"]["subscriptionId"], 0);
    let r = call(
        &mut ws,
        "2",
        "userDataStream.subscribe.signature",
        signed_params(&signer, KEY, vec![]),
    )
    .await;
    assert_eq!(r["error"]["code"], -2035);
    // Bad signature: a timestamp other than the signed one (now_ms() - 1 could equal it).
    let mut p = signed_params(&signer, KEY, vec![]);
    let signed: u64 = p["timestamp"].as_str().unwrap().parse().unwrap();
    p["timestamp"] = json!((signed - 1).to_string());
    let r = call(&mut ws, "3", "userDataStream.subscribe.signature", p).await;
    assert_eq!(r["error"]["code"], -1022);
    // order.place (signed), wrapped events.
    let place = signed_params(
        &signer,
        KEY,
        vec![
            ("symbol", "BTCUSDT".into()),
            ("side", "BUY".into()),
            ("type", "LIMIT".into()),
            ("timeInForce", "GTC".into()),
            ("quantity", "0.01".into()),
            ("price", "50000".into()),
            ("newOrderRespType", "RESULT".into()),
            ("newClientOrderId", "ws-1".into()),
        ],
    );
    let r = call(&mut ws, "4", "order.place", place).await;
    assert_eq!(r["status"], 200, "{r}");
    assert_same_shape(
        &r,
        &fixture("spot/ws-api/order.place.response.result.json"),
        &[],
        "order.place RESULT",
    );
    let er = loop {
        let v = next_json(&mut ws, T).await.unwrap();
        if v["event"]["e"] == "executionReport" {
            break v;
        }
    };
    assert_eq!(er["subscriptionId"], 0);
    assert_same_shape(
        &er,
        &fixture("spot/user-data/executionReport.new.json"),
        ER_CONDITIONAL,
        "wrapped ER",
    );
    let pos = loop {
        let v = next_json(&mut ws, T).await.unwrap();
        if v["event"]["e"] == "outboundAccountPosition" {
            break v;
        }
    };
    assert_same_shape(
        &pos,
        &fixture("spot/ws-api/event.wrapper.json"),
        &[],
        "wrapped position",
    );
    // Logged-on session: order.cancel with timestamp only.
    let r = call(
        &mut ws,
        "5",
        "session.logon",
        signed_params(&signer, KEY, vec![]),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_same_shape(
        &r,
        &fixture("spot/ws-api/session.logon.response.json"),
        &[],
        "logon",
    );
    let r = call(
        &mut ws,
        "6",
        "order.cancel",
        json!({"symbol": "BTCUSDT", "origClientOrderId": "ws-1", "timestamp": now_ms()}),
    )
    .await;
    assert_eq!(r["result"]["status"], "CANCELED", "{r}");
    assert_same_shape(
        &r,
        &fixture("spot/ws-api/order.cancel.response.json"),
        &[
            "stopPrice",
            "trailingDelta",
            "icebergQty",
            "strategyId",
            "strategyType",
        ],
        "order.cancel",
    );
    let r = call(
        &mut ws,
        "7",
        "openOrders.cancelAll",
        json!({"symbol": "BTCUSDT", "timestamp": now_ms()}),
    )
    .await;
    assert_eq!(r["error"]["code"], -2011);
    assert_same_shape(
        &r,
        &fixture("spot/ws-api/response.error.json"),
        &[],
        "error",
    );
    for p in ["50000", "50001"] {
        let r = call(
            &mut ws,
            p,
            "order.place",
            json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.01", "price": p, "timestamp": now_ms()}),
        )
        .await;
        assert_eq!(r["status"], 200, "{r}");
    }
    let r = call(
        &mut ws,
        "8",
        "openOrders.cancelAll",
        json!({"symbol": "BTCUSDT", "timestamp": now_ms()}),
    )
    .await;
    assert_eq!(r["result"].as_array().unwrap().len(), 2, "{r}");
    assert!(sim.open_orders(KEY).is_empty());
    let r = call(&mut ws, "9", "session.subscriptions", Value::Null).await;
    assert_eq!(r["result"], json!([{"subscriptionId": 0}]));
    let r = call(&mut ws, "10", "userDataStream.unsubscribe", Value::Null).await;
    assert_same_shape(
        &r,
        &fixture("spot/ws-api/userDataStream.unsubscribe.response.json"),
        &[],
        "unsubscribe",
    );
    let term = loop {
        let v = next_json(&mut ws, T).await.unwrap();
        if v["event"]["e"] == "eventStreamTerminated" {
            break v;
        }
    };
    assert_same_shape(
        &term,
        &fixture("spot/user-data/eventStreamTerminated.json"),
        &[],
        "eventStreamTerminated",
    );
    // Logon-based subscription gets the next id.
    let r = call(&mut ws, "11", "userDataStream.subscribe", Value::Null).await;
    assert_same_shape(
        &r,
        &fixture("spot/ws-api/userDataStream.subscribe.response.json"),
        &[],
        "subscribe",
    );
    assert_eq!(r["result"]["subscriptionId"], 1);
    sim.deposit(KEY, "USDT", rust_decimal::Decimal::ONE);
    let v = next_json(&mut ws, T).await.unwrap();
    assert_eq!(
        (v["subscriptionId"].as_u64(), v["event"]["e"].as_str()),
        (Some(1), Some("balanceUpdate"))
    );
    assert_same_shape(
        &v,
        &fixture("spot/user-data/balanceUpdate.json"),
        &[],
        "balanceUpdate",
    );
    // serverShutdown, then close.
    sim.faults().server_shutdown(StreamTarget::WsApi).unwrap();
    let v = loop {
        let v = next_json(&mut ws, T).await.expect("serverShutdown");
        if v["event"]["e"] == "serverShutdown" {
            break v;
        }
    };
    assert_same_shape(
        &v,
        &fixture("spot/ws-api/serverShutdown.json"),
        &[],
        "serverShutdown",
    );
    assert!(next_json(&mut ws, T).await.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn ws_api_connection_announces_and_closes_at_max_age() {
    let sim = start(SimConfig {
        max_connection_age: Duration::from_millis(800),
        ..test_config()
    })
    .await;
    let mut ws = connect(&sim.ws_api_url()).await;
    let t0 = std::time::Instant::now();
    let r = call(&mut ws, "p", "ping", Value::Null).await;
    assert_eq!(r["result"], json!({}));
    let v = next_json(&mut ws, T).await.expect("serverShutdown");
    assert_eq!(v["event"]["e"], "serverShutdown");
    assert!(next_json(&mut ws, T).await.is_none());
    let e = t0.elapsed();
    assert!(
        e >= Duration::from_millis(700) && e < Duration::from_millis(2000),
        "{e:?}"
    );
    sim.shutdown().await;
}

/// An Ed25519 API key (the account's "secret" at the exchange is its public key PEM):
/// session.logon + userDataStream.subscribe on the WebSocket API, and a REST request
/// with the base64 signature percent-encoded, both signed with the project's signer.
#[tokio::test]
async fn ed25519_keys_log_on_and_sign_rest() {
    use mmd::binance::sign::{Ed25519Signer, rest_payload};
    let signer = Ed25519Signer::from_bytes(&[7u8; 32]);
    let pem = signer.public_key_pem().unwrap();
    let sim = start(SimConfig {
        accounts: vec![AccountConfig {
            api_key: "ed-key".into(),
            api_secret: pem,
            ..AccountConfig::default()
        }],
        ..test_config()
    })
    .await;
    let ts = now_ms().to_string();
    let payload = ws_api_payload([("apiKey", "ed-key"), ("timestamp", ts.as_str())]);
    let sig = signer.sign_base64(payload.as_bytes());
    let mut ws = connect(&sim.ws_api_url()).await;
    let r = call(
        &mut ws,
        "1",
        "session.logon",
        json!({"apiKey": "ed-key", "timestamp": ts, "signature": sig}),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["result"]["apiKey"], "ed-key");
    let r = call(&mut ws, "2", "userDataStream.subscribe", Value::Null).await;
    assert_eq!(r["result"]["subscriptionId"], 0, "{r}");
    // A signature by another key is refused.
    let other = Ed25519Signer::from_bytes(&[8u8; 32]);
    let bad = other.sign_base64(payload.as_bytes());
    let r = call(
        &mut ws,
        "3",
        "session.logon",
        json!({"apiKey": "ed-key", "timestamp": ts, "signature": bad}),
    )
    .await;
    assert_eq!(r["error"]["code"], -1022);
    // REST: base64 signature, percent-encoded in the query.
    let ts = now_ms().to_string();
    let payload = rest_payload([("timestamp", ts.as_str())]);
    let sig = signer.sign_base64(payload.as_bytes());
    let enc = mmd::binance::sign::percent_encode(&sig).to_string();
    let c = Client::with_key(&sim.rest_url(), "ed-key", "unused");
    let r = c
        .raw(
            reqwest::Method::GET,
            &format!("/api/v3/account?{payload}&signature={enc}"),
            None,
            Some("ed-key"),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let bad =
        mmd::binance::sign::percent_encode(&other.sign_base64(payload.as_bytes())).to_string();
    let r = c
        .raw(
            reqwest::Method::GET,
            &format!("/api/v3/account?{payload}&signature={bad}"),
            None,
            Some("ed-key"),
        )
        .await;
    assert_eq!(r.code(), -1022);
    sim.shutdown().await;
    // A malformed public key is refused at start, naming the field.
    let err = mmd::sim::start(
        SimConfig {
            accounts: vec![AccountConfig {
                api_key: "x".into(),
                api_secret: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n".into(),
                ..AccountConfig::default()
            }],
            ..test_config()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("accounts[0].api_secret"), "{err}");
}
