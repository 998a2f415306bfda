//! Helpers shared by the simulator's integration tests: a tiny signed Binance REST
//! client (reqwest + the project's signer) and WebSocket helpers (tokio-tungstenite).
#![allow(dead_code)]

use futures_util::StreamExt;
use mmd::binance::sign::{HmacSigner, rest_payload};
use mmd::sim::{AccountConfig, SimConfig, SimHandle};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub const KEY: &str = "test-key-0123456789";
pub const SECRET: &str = "test-secret-abcdefghijklmnopqrstuvwxyz";

pub fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/binance-fixtures")
}

pub fn fixture(rel: &str) -> Value {
    let p = fixtures().join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A config for fast tests: one account, few filler symbols, frozen-friendly.
pub fn test_config() -> SimConfig {
    SimConfig {
        extra_symbols: 5,
        accounts: vec![AccountConfig {
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            ..AccountConfig::default()
        }],
        ticker_interval: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

pub async fn start(cfg: SimConfig) -> SimHandle {
    mmd::sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or(0)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
    pub signer: HmacSigner,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self::with_key(base, KEY, SECRET)
    }

    pub fn with_key(base: &str, key: &str, secret: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: base.to_string(),
            key: key.to_string(),
            signer: HmacSigner::new(secret.as_bytes()),
        }
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<String>,
        key: Option<&str>,
    ) -> Resp {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, path_and_query));
        if let Some(k) = key {
            rb = rb.header("X-MBX-APIKEY", k);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn public(&self, path: &str) -> Resp {
        self.raw(reqwest::Method::GET, path, None, None).await
    }

    /// Signed request with the parameters in the query string (plus timestamp).
    pub async fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> Resp {
        let ts = now_ms().to_string();
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push(("timestamp", &ts));
        let payload = rest_payload(all);
        let sig = self.signer.sign_hex(payload.as_bytes());
        let key = self.key.clone();
        self.raw(
            method,
            &format!("{path}?{payload}&signature={sig}"),
            None,
            Some(&key),
        )
        .await
    }

    /// Signed request with the parameters in a form body.
    pub async fn signed_body(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> Resp {
        let ts = now_ms().to_string();
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push(("timestamp", &ts));
        let payload = rest_payload(all);
        let sig = self.signer.sign_hex(payload.as_bytes());
        let key = self.key.clone();
        self.raw(
            method,
            path,
            Some(format!("{payload}&signature={sig}")),
            Some(&key),
        )
        .await
    }

    pub async fn api_key_only(&self, method: reqwest::Method, path_and_query: &str) -> Resp {
        let key = self.key.clone();
        self.raw(method, path_and_query, None, Some(&key)).await
    }

    pub async fn new_listen_key(&self) -> String {
        let r = self
            .api_key_only(reqwest::Method::POST, "/api/v3/userDataStream")
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["listenKey"].as_str().unwrap().to_string()
    }

    pub async fn place_limit(&self, symbol: &str, side: &str, price: &str, qty: &str) -> Resp {
        self.signed(
            reqwest::Method::POST,
            "/api/v3/order",
            &[
                ("symbol", symbol),
                ("side", side),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", qty),
                ("price", price),
            ],
        )
        .await
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// Next text frame as JSON (skipping pings); None on close or timeout.
pub async fn next_json(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match msg {
            Ok(Message::Text(t)) => {
                return Some(serde_json::from_str(&t).expect("valid JSON frame"));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads frames until one whose `e` is `event` (unwrapping `data`/`event`), or None.
pub async fn wait_event(ws: &mut Ws, event: &str, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = next_json(ws, left).await?;
        let inner = if v.get("data").is_some() {
            v["data"].clone()
        } else if v.get("event").is_some() {
            v["event"].clone()
        } else {
            v.clone()
        };
        if inner["e"] == event {
            return Some(inner);
        }
    }
}

/// Same JSON shape: identical key sets (except keys in `optional`) and JSON types,
/// recursively (arrays compared element-wise against the fixture's first element).
pub fn assert_same_shape(ours: &Value, theirs: &Value, optional: &[&str], path: &str) {
    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    assert_eq!(
        kind(ours),
        kind(theirs),
        "{path}: ours {ours} vs fixture {theirs}"
    );
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for k in b.keys() {
                if !a.contains_key(k) && !optional.contains(&k.as_str()) {
                    panic!("{path}: missing key {k:?} (ours: {ours})");
                }
            }
            for (k, v) in a {
                let Some(f) = b.get(k) else {
                    panic!("{path}: extra key {k:?} not in the fixture");
                };
                assert_same_shape(v, f, optional, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let Some(f) = b.first() {
                for (i, v) in a.iter().enumerate() {
                    assert_same_shape(v, f, optional, &format!("{path}[{i}]"));
                }
            }
        }
        _ => {}
    }
}

pub async fn drain(ws: &mut Ws, for_: Duration) {
    let _ = tokio::time::timeout(for_, async { while ws.next().await.is_some() {} }).await;
}
