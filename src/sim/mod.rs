//! Embedded Binance-Spot-compatible exchange simulator: real REST and WebSocket wire
//! protocol on loopback, a price-time-priority matching engine with exact balances,
//! a seeded market process, and fault injection. The default venue for the demo,
//! paper trading and every integration test.
//!
//! What it serves (one port):
//! - REST `/api/v3/...`: ping, time, exchangeInfo, order (POST/GET/DELETE), order/test,
//!   openOrders (GET/DELETE), account, myTrades, userDataStream (POST/PUT/DELETE; 410 in
//!   the 2026 dialect). Binance statuses, codes, messages and `X-MBX-*` headers.
//! - Streams: `/ws/<stream>`, `/stream?streams=a/b` (`!ticker@arr`, `<s>@ticker`,
//!   `<s>@bookTicker`, live SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS), user data on
//!   `/ws/<listenKey>`.
//! - WebSocket API: `/ws-api/v3` (see [`ws_api`]).
//! - Admin (tests and operators, loopback only): `POST /sim/admin/faults` with a
//!   [`FaultCommand`] as JSON, e.g. `{"kind":"fail_rest","path":"/api/v3/order",
//!   "count":1,"status":503,"after_apply":true}`, `{"kind":"drop_connections","target":"user"}`,
//!   `{"kind":"restart"}`; `POST /sim/admin/deposit` `{"api_key":..,"asset":"USDT","delta":"-5"}`;
//!   `POST /sim/admin/market` `{"frozen":true}` or `{"symbol":"BTCUSDT","status":"BREAK"}`;
//!   `GET /sim/admin/stats`.
//!
//! Accounts: HMAC keys (the secret), or Ed25519 keys (the "secret" is the public key PEM).

pub mod accounts;
pub mod auth;
pub mod book;
pub mod cli;
pub mod config;
pub mod exchange;
pub mod faults;
pub mod price_process;
pub mod rest;
pub mod stats;
pub mod streams;
pub mod wire;
pub mod ws_api;

pub use book::Side;
pub use config::{
    AccountConfig, Dialect, MarketConfig, RateLimitConfig, SimConfig, SimTls, SymbolConfig,
};
pub use exchange::{OrderRecord, TradeRecord};
pub use faults::{FaultCommand, FaultControl, FrameKind, StreamTarget};
pub use stats::Stats;

use exchange::{Clock, Exchange};
use parking_lot::Mutex;
use rust_decimal::Decimal;
use stats::StatsCounters;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use streams::TickerBatch;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// State shared by the server tasks and the handle.
pub struct Shared {
    pub(crate) cfg: Arc<SimConfig>,
    pub(crate) exchange: Mutex<Exchange>,
    pub(crate) clock: Arc<Clock>,
    pub(crate) stats: Arc<StatsCounters>,
    pub(crate) faults: FaultControl,
    pub(crate) limiter: rest::RateLimiter,
    pub(crate) tickers: broadcast::Sender<Arc<TickerBatch>>,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn deposit(&self, api_key: &str, asset: &str, delta: Decimal) -> anyhow::Result<()> {
        let mut ex = self.exchange.lock();
        let account = ex
            .account_of(api_key)
            .ok_or_else(|| anyhow::anyhow!("unknown api key"))?;
        ex.deposit(account, asset, delta)
            .map_err(|e| anyhow::anyhow!("{}", e.msg))
    }
}

/// Handle to a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Serving TLS: the URLs are `https://` and `wss://`.
    tls: bool,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Starts the simulator on `listen` (`127.0.0.1:0` picks a free port).
pub async fn start(cfg: SimConfig, listen: SocketAddr) -> anyhow::Result<SimHandle> {
    cfg.validate()?;
    let replay = match &cfg.market.replay_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("market.replay_file {path}: {e}"))?;
            Some(price_process::parse_replay(&text, path)?)
        }
        None => None,
    };
    // Read before binding, so a bad file fails the start rather than every handshake.
    let acceptor = cfg.tls.as_ref().map(tls_acceptor).transpose()?;
    let cfg = Arc::new(cfg);
    let clock = Arc::new(Clock::default());
    let stats = Arc::new(StatsCounters::default());
    let (tickers, _) = broadcast::channel(64);
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        exchange: Mutex::new(Exchange::new(cfg.clone(), clock.clone(), stats.clone())),
        faults: FaultControl::new(stats.clone()),
        limiter: rest::RateLimiter::default(),
        cfg: cfg.clone(),
        clock,
        stats,
        tickers,
        shutdown,
    });
    shared.faults.attach(&shared);
    if let Some(lines) = replay {
        shared.exchange.lock().set_replay(lines);
    }
    for f in &cfg.faults {
        shared.faults.apply(f.clone())?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("simulator cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = router(shared.clone());
    let mut shutdown_rx = shared.shutdown.subscribe();
    let tls = acceptor.is_some();
    let server = match acceptor {
        None => tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(%e, "simulator server stopped");
            }
        }),
        Some(acceptor) => tokio::spawn(serve_tls(listener, acceptor, app, shutdown_rx)),
    };
    let mut tasks = vec![server];
    tasks.push(spawn_market(shared.clone()));
    tasks.push(spawn_tickers(shared.clone()));
    tasks.push(spawn_janitor(shared.clone()));
    tracing::info!(%addr, dialect = ?cfg.dialect, tls, "exchange simulator listening");
    Ok(SimHandle {
        shared,
        addr,
        tls,
        tasks: Arc::new(Mutex::new(tasks)),
    })
}

fn tls_acceptor(tls: &SimTls) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = crate::tls::pem_certificates(std::path::Path::new(&tls.cert_file))
        .map_err(|e| anyhow::anyhow!("tls.cert_file {}: {e}", tls.cert_file))?;
    let key = crate::tls::pem_private_key(std::path::Path::new(&tls.key_file))
        .map_err(|e| anyhow::anyhow!("tls.key_file {}: {e}", tls.key_file))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "tls.cert_file {} / tls.key_file {}: {e}",
                tls.cert_file,
                tls.key_file
            )
        })?;
    // No ALPN: the router is served over HTTP/1.1 only (WebSocket upgrades need it).
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// `axum::serve` over TLS: the same router on hyper's HTTP/1.1 connections with upgrades
/// (the WebSocket endpoints), and the same graceful shutdown: stop accepting, let every
/// connection finish its request, then return once all have ended. Upgraded WebSockets
/// leave hyper's connection and end on the simulator's own shutdown signal, as in plain
/// text.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    // A client that connects and never finishes the handshake must not hold a task.
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = async { drop(shutdown_rx.wait_for(|s| *s).await) } => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // As axum::serve: out of descriptors and the like pass; wait a little.
                    tracing::warn!(%e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let mut stop = shutdown_rx.clone();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, %e, "simulator TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // The guard wait_for returns is not Send: drop it before awaiting.
                _ = async { drop(stop.wait_for(|s| *s).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn router(shared: Arc<Shared>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/ws/{*name}", get(streams::ws_raw))
        .route("/stream", get(streams::ws_combined))
        .route("/ws-api/v3", get(ws_api::ws_api))
        .route("/sim/admin/faults", post(rest::admin_faults))
        .route("/sim/admin/deposit", post(rest::admin_deposit))
        .route("/sim/admin/market", post(rest::admin_market))
        .route("/sim/admin/stats", get(rest::admin_stats))
        .fallback(rest::dispatch)
        .with_state(shared)
}

fn spawn_market(sh: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let dt = sh.cfg.market.tick_interval;
        let mut iv = tokio::time::interval(dt);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            iv.tick().await;
            sh.exchange.lock().market_step(dt);
        }
    })
}

fn spawn_tickers(sh: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let dt = sh.cfg.ticker_interval;
        let mut iv = tokio::time::interval(dt);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            iv.tick().await;
            if sh.tickers.receiver_count() == 0 {
                // Still walk the fillers so prices move while nobody listens.
                sh.exchange.lock().ticker_snapshot(dt);
                continue;
            }
            let snap = sh.exchange.lock().ticker_snapshot(dt);
            let per_symbol: Vec<String> = snap.into_iter().map(|(_, j)| j).collect();
            let mut arr =
                String::with_capacity(per_symbol.iter().map(|s| s.len() + 1).sum::<usize>() + 2);
            arr.push('[');
            for (i, s) in per_symbol.iter().enumerate() {
                if i > 0 {
                    arr.push(',');
                }
                arr.push_str(s);
            }
            arr.push(']');
            let _ = sh.tickers.send(Arc::new(TickerBatch { arr, per_symbol }));
        }
    })
}

fn spawn_janitor(sh: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = (sh.cfg.listen_key_validity / 20)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut iv = tokio::time::interval(period);
        loop {
            iv.tick().await;
            sh.exchange.lock().expire_listen_keys(|_, _| false);
        }
    })
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn rest_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
    pub fn stream_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}", self.addr)
    }
    pub fn ws_api_url(&self) -> String {
        format!("{}/ws-api/v3", self.stream_url())
    }
    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    fn account(&self, api_key: &str) -> Option<u32> {
        self.shared.exchange.lock().account_of(api_key)
    }

    /// Free and locked per asset; empty for an unknown key.
    pub fn balances(&self, api_key: &str) -> BTreeMap<String, (Decimal, Decimal)> {
        let ex = self.shared.exchange.lock();
        ex.account_of(api_key)
            .map(|a| ex.balances_of(a))
            .unwrap_or_default()
    }

    pub fn trades(&self, api_key: &str) -> Vec<TradeRecord> {
        let ex = self.shared.exchange.lock();
        ex.account_of(api_key)
            .map(|a| ex.trades_of(a))
            .unwrap_or_default()
    }

    /// The client order id of every order `api_key` placed (since the last restart).
    pub fn client_order_ids(&self, api_key: &str) -> Vec<String> {
        let ex = self.shared.exchange.lock();
        ex.account_of(api_key)
            .map(|a| ex.client_order_ids_of(a))
            .unwrap_or_default()
    }

    pub fn open_orders(&self, api_key: &str) -> Vec<OrderRecord> {
        let ex = self.shared.exchange.lock();
        ex.account_of(api_key)
            .map(|a| ex.open_order_records(a))
            .unwrap_or_default()
    }

    pub fn listen_keys(&self, api_key: &str) -> Vec<String> {
        let ex = self.shared.exchange.lock();
        ex.account_of(api_key)
            .map(|a| ex.listen_keys_of(a))
            .unwrap_or_default()
    }

    /// Adds an account at run time (same effect as listing it in the config).
    pub fn add_account(
        &self,
        api_key: &str,
        api_secret: &str,
        balances: &BTreeMap<String, Decimal>,
    ) {
        self.shared
            .exchange
            .lock()
            .add_account(api_key, api_secret, balances);
    }

    /// Stops (or resumes) the price walk and the taker flow.
    pub fn set_market_frozen(&self, frozen: bool) {
        self.shared
            .exchange
            .lock()
            .frozen
            .store(frozen, Ordering::Relaxed);
    }

    pub fn faults(&self) -> &FaultControl {
        &self.shared.faults
    }

    /// Deposit (positive) or withdrawal (negative): `balanceUpdate` + account events.
    pub fn deposit(&self, api_key: &str, asset: &str, delta: Decimal) {
        if let Err(e) = self.shared.deposit(api_key, asset, delta) {
            tracing::warn!(%e, api_key, asset, %delta, "sim deposit refused");
        }
    }

    pub fn set_symbol_status(&self, symbol: &str, status: &str) {
        if !self
            .shared
            .exchange
            .lock()
            .set_symbol_status(symbol, status)
        {
            tracing::warn!(symbol, "sim: set_symbol_status on unknown symbol");
        }
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Checks every internal invariant (book not crossed, locks match open orders, no
    /// negative balance). For tests' end-of-run checks.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.shared.exchange.lock().check_invariants()
    }

    /// True if the API key is known.
    pub fn has_account(&self, api_key: &str) -> bool {
        self.account(api_key).is_some()
    }

    /// Stops serving: closes every connection and waits for the server to finish.
    pub async fn shutdown(self) {
        let _ = self.shared.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        let mut iter = tasks.into_iter();
        let server = iter.next();
        for t in iter {
            t.abort();
        }
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}
