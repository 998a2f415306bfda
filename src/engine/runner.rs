//! The IO around the engine core: startup against the exchange, the streams, REST calls
//! for the core's commands, timers and signals. Everything here only moves data; every
//! trading decision is the core's. One task owns the core and consumes one channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::StreamExt;
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::core::{Engine, EngineSettings};
use super::io::{
    Command, Input, MarketSetup, NOT_LISTED, PlaceOrder, Record, Rehearsal, RestFailure, Snapshot,
};
use super::orders::ClientIdGen;
use crate::binance::market::{MarketMode, MarketStreamHandle, spawn_market_stream};
use crate::binance::rest::{
    NewOrder, OrderRef, OrderType, RespType, RestClient, RestError, RestSettings, TimeInForce,
    WrittenRequest,
};
use crate::binance::sign::{Ed25519Signer, HmacSigner, Signer};
use crate::binance::stream::{StreamEvent, StreamSettings};
use crate::binance::types::{CanceledOpenOrder, ExchangeInfo, OrderResponse, Side, SymbolFilter};
use crate::binance::user_stream::{UserStreamHandle, spawn_user_stream};
use crate::config::{
    Config, ConfigError, MarketConfig, MarketStreamKind, UserStreamTransport, Venue,
};
use crate::metrics::{self, Metrics};

/// A startup failure the operator must fix (bad market, unknown symbol): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FatalConfig(pub ConfigError);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A requote replaces both quotes: two cancels and two orders in flight at once.
const ORDER_LINES_PER_MARKET: usize = 4;

/// How the daemon is told to stop or reload (signals in production, channels in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Stop,
    Reload,
}

/// What the engine's loop reads: stream events and REST results share one channel.
enum Event {
    Stream(StreamEvent),
    Input(Input),
}

/// Symbol rules from exchangeInfo's filters.
pub fn symbol_rules(filters: &[SymbolFilter]) -> strategies::SymbolRules {
    let mut r = strategies::SymbolRules {
        tick_size: Decimal::ZERO,
        step_size: Decimal::ZERO,
        min_qty: Decimal::ZERO,
        max_qty: Decimal::MAX,
        min_notional: Decimal::ZERO,
        max_notional: None,
    };
    for f in filters {
        match f {
            SymbolFilter::PriceFilter { tick_size, .. } => r.tick_size = *tick_size,
            SymbolFilter::LotSize {
                min_qty,
                max_qty,
                step_size,
            } => {
                r.step_size = *step_size;
                r.min_qty = *min_qty;
                r.max_qty = *max_qty;
            }
            SymbolFilter::Notional {
                min_notional,
                max_notional,
            } => {
                r.min_notional = *min_notional;
                if !max_notional.is_zero() {
                    r.max_notional = Some(*max_notional);
                }
            }
            SymbolFilter::MinNotional { min_notional } => r.min_notional = *min_notional,
            SymbolFilter::Other => {}
        }
    }
    r
}

/// Looks every market up in exchangeInfo; refuses an unknown symbol or one not TRADING.
pub fn market_setups(
    info: &ExchangeInfo,
    markets: &[MarketConfig],
) -> Result<Vec<MarketSetup>, ConfigError> {
    markets
        .iter()
        .map(|m| {
            let s = info
                .symbols
                .iter()
                .find(|s| s.symbol == m.symbol)
                .ok_or_else(|| {
                    ConfigError::new(
                        &m.file,
                        Some("symbol"),
                        format!("{} is not listed by the exchange (exchangeInfo)", m.symbol),
                    )
                })?;
            if s.status != "TRADING" {
                return Err(ConfigError::new(
                    &m.file,
                    Some("symbol"),
                    format!(
                        "{} is not trading at the exchange (status {})",
                        m.symbol, s.status
                    ),
                ));
            }
            Ok(MarketSetup {
                config: m.clone(),
                base_asset: s.base_asset.clone(),
                quote_asset: s.quote_asset.clone(),
                rules: symbol_rules(&s.filters),
            })
        })
        .collect()
}

fn failure(e: &RestError) -> RestFailure {
    match e {
        RestError::Api { code, msg, .. } if *code == -2011 || *code == -2013 => {
            RestFailure::UnknownOrder {
                code: *code,
                msg: msg.clone(),
            }
        }
        RestError::Api { code, msg, .. } => RestFailure::Rejected {
            code: *code,
            msg: msg.clone(),
        },
        RestError::RateLimited { retry_after }
        | RestError::IpBanned { retry_after }
        | RestError::Throttled { wait: retry_after } => RestFailure::NotSent {
            reason: e.to_string(),
            retry_after_ms: retry_after.as_millis() as u64,
        },
        RestError::ListenKeyRetired => RestFailure::Rejected {
            code: 410,
            msg: e.to_string(),
        },
        RestError::Timeout
        | RestError::Server { .. }
        | RestError::Transport(_)
        | RestError::Decode(_) => RestFailure::OutcomeUnknown(e.to_string()),
    }
}

/// Everything the daemon runs on: the exchange addresses and credentials (after the
/// embedded simulator, if any, has started).
pub(crate) struct Venue_ {
    pub(crate) rest_url: String,
    pub(crate) stream_url: String,
    pub(crate) ws_api_url: Option<String>,
    /// Every connection's TLS: REST and the WebSocket streams trust the same roots.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    api_key: String,
    signer: Signer,
    pub(crate) sim: Option<crate::sim::SimHandle>,
}

fn make_signer(secret: &str) -> anyhow::Result<Signer> {
    if secret.trim_start().starts_with("-----BEGIN") {
        let s = Ed25519Signer::from_pkcs8_pem(secret).map_err(|e| {
            anyhow::anyhow!("exchange.api_secret: not a usable Ed25519 PEM key: {e}")
        })?;
        Ok(Signer::Ed25519(s))
    } else {
        Ok(Signer::Hmac(HmacSigner::new(secret.as_bytes())))
    }
}

fn random_token(n: usize) -> String {
    use rand::RngExt;
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

/// The client TLS configuration for `cfg`: webpki's roots, and the extra ones of
/// `exchange.tls_ca_file`, announced once since they widen whom the daemon trusts.
fn client_tls(cfg: &Config) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let extra = match &cfg.exchange.tls_ca {
        Some(ca) => {
            warn!(
                event = "tls_extra_roots",
                file = %ca.file.display(),
                certificates = ca.certificates.len(),
                "exchange.tls_ca_file: trusting these root certificates besides webpki's for \
                 every connection to the exchange"
            );
            ca.certificates.as_slice()
        }
        None => &[],
    };
    crate::tls::client_config(extra).map_err(|e| anyhow::anyhow!("exchange.tls_ca_file: {e}"))
}

pub(crate) async fn open_venue(cfg: &Config) -> anyhow::Result<Venue_> {
    match cfg.exchange.venue {
        Venue::Binance => {
            let creds = cfg
                .load_credentials()
                .map_err(FatalConfig)?
                .ok_or_else(|| anyhow::anyhow!("exchange.api_key / api_secret missing"))?;
            Ok(Venue_ {
                tls: client_tls(cfg)?,
                rest_url: cfg.exchange.rest_url.clone(),
                stream_url: cfg.exchange.stream_url.clone(),
                ws_api_url: (cfg.exchange.user_stream == UserStreamTransport::WsApi)
                    .then(|| cfg.exchange.ws_api_url.clone()),
                api_key: creds.api_key.expose().to_owned(),
                signer: make_signer(creds.api_secret.expose())?,
                sim: None,
            })
        }
        Venue::Sim => {
            let api_key = random_token(32);
            let secret = random_token(48);
            let s = &cfg.sim;
            let mut sc = crate::sim::SimConfig {
                seed: s.seed,
                ..Default::default()
            };
            if let Some(d) = s.ticker_interval {
                sc.ticker_interval = d;
            }
            if let Some(d) = s.listen_key_validity {
                sc.listen_key_validity = d;
            }
            if let Some(d) = s.max_connection_age {
                sc.max_connection_age = d;
            }
            sc.legacy_account_info = s.legacy_account_info;
            sc.dialect = s.dialect;
            let mut account = crate::sim::AccountConfig {
                api_key: api_key.clone(),
                api_secret: secret.clone(),
                ..Default::default()
            };
            if !s.balances.is_empty() {
                account.balances = s.balances.clone();
            }
            sc.accounts = vec![account];
            let handle = crate::sim::start(sc, "127.0.0.1:0".parse()?)
                .await
                .context("starting the embedded simulator")?;
            info!(event = "sim_started", rest_url = %handle.rest_url(), "embedded simulator started");
            Ok(Venue_ {
                tls: client_tls(cfg)?,
                rest_url: handle.rest_url(),
                stream_url: handle.stream_url(),
                ws_api_url: (cfg.exchange.user_stream == UserStreamTransport::WsApi)
                    .then(|| handle.ws_api_url()),
                api_key,
                signer: Signer::Hmac(HmacSigner::new(secret.as_bytes())),
                sim: Some(handle),
            })
        }
    }
}

/// Lets the calling thread run only on a core nothing else wants (Linux's SCHED_IDLE):
/// woken by the event loop, the ledger thread used to take the loop's own core for the
/// length of an SQLite commit, with a market frame waiting (the kernel favours a thread
/// that has slept). Records wait in the channel meanwhile, in order.
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if r != 0 {
            warn!(event = "ledger_priority", error = %std::io::Error::last_os_error(), "ledger thread keeps normal priority");
        }
    }
}

/// The ledger lives on its own thread: SQLite writes never stall the event loop.
struct LedgerWriter {
    tx: Option<std::sync::mpsc::Sender<Record>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LedgerWriter {
    fn start(ledger: crate::ledger::Ledger, started_ms: u64) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Record>();
        let thread = std::thread::Builder::new()
            .name("mmd-ledger".into())
            .spawn(move || {
                background_priority();
                let _ = ledger.record_run_start(started_ms);
                let write = |ledger: &crate::ledger::Ledger, r: &Record| {
                    let res = match r {
                        Record::Fill(f) => ledger.record_fill(f).map(|_| ()),
                        Record::Order(o) => ledger.record_order_event(o),
                        Record::Mark { symbol, mark } => ledger.record_mark(symbol, *mark),
                        Record::Market {
                            symbol,
                            base_asset,
                            quote_asset,
                        } => ledger
                            .record_market(symbol, base_asset, quote_asset)
                            .and_then(|_| ledger.record_market_since(symbol, now_ms())),
                    };
                    if let Err(e) = res {
                        error!(event = "ledger_error", error = %e, "ledger write failed");
                    }
                };
                let mut batch = Vec::new();
                while let Ok(first) = rx.recv() {
                    // What is queued now goes in one transaction: a commit per record
                    // was a third of the daemon's CPU at 100 markets. Nothing waits for
                    // more records to arrive.
                    batch.push(first);
                    while batch.len() < 1024
                        && let Ok(r) = rx.try_recv()
                    {
                        batch.push(r);
                    }
                    if batch.len() == 1 {
                        write(&ledger, &batch[0]);
                    } else if let Err(e) =
                        ledger.batch(|l| batch.iter().for_each(|r| write(l, r)))
                    {
                        error!(event = "ledger_error", error = %e, records = batch.len(), "ledger write failed");
                    }
                    batch.clear();
                }
                let _ = ledger.record_run_stop(started_ms, now_ms());
            })
            .ok();
        LedgerWriter {
            tx: Some(tx),
            thread,
        }
    }

    fn send(&self, r: Record) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(r);
        }
    }

    /// Writes what is queued and closes the database.
    fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the daemon until stopped. Returns the process exit code.
pub async fn run(
    cfg: Config,
    mut control: mpsc::UnboundedReceiver<Control>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<i32> {
    let venue = open_venue(&cfg).await?;
    let rest = RestClient::with_tls_config(
        RestSettings {
            base_url: venue.rest_url.clone(),
            api_key: Some(venue.api_key.clone()),
            signer: Some(venue.signer.clone()),
            recv_window: cfg.exchange.recv_window,
            timeout: cfg.exchange.request_timeout,
        },
        venue.tls.clone(),
    )
    .map_err(|e| anyhow::anyhow!("REST client: {e}"))?;
    let offset = rest.sync_time().await.context("GET /api/v3/time")?;
    info!(
        event = "time_sync",
        offset_ms = offset,
        "server time offset"
    );
    let info = rest
        .exchange_info_for(&symbols_of(&cfg.markets))
        .await
        .context("GET /api/v3/exchangeInfo")?;
    rest.set_rate_limit_share(cfg.exchange.rate_limit_share);
    let setups = market_setups(&info, &cfg.markets).map_err(FatalConfig)?;

    let stop_token = CancellationToken::new();
    if let Some(addr) = cfg.metrics.listen {
        let listener = metrics::bind(addr).await?;
        let m = metrics.clone();
        let t = stop_token.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, m, t).await {
                error!(event = "metrics_failed", error = %e, "metrics server stopped");
            }
        });
        info!(event = "metrics", listen = %addr, "metrics on /metrics, health on /health");
    }

    let mut settings = EngineSettings::new(
        &cfg.exchange.client_order_prefix,
        &ClientIdGen::random_run_id(),
    );
    settings.stale_after_ms = cfg.streams.stale_after.as_millis() as u64;
    settings.resync_interval_ms = cfg.engine.resync_interval.as_millis() as u64;
    settings.orphan_policy = cfg.engine.orphan_orders;
    settings.status_check_interval_ms = cfg.engine.status_check_interval.as_millis() as u64;
    let ledger = crate::ledger::Ledger::open(&cfg.storage_path)
        .with_context(|| format!("storage.path {}", cfg.storage_path.display()))?;
    let mut last_ids = Vec::new();
    let mut history_starts = Vec::new();
    // In exchange time: it is compared with trade times.
    let started = rest.server_time_ms();
    for s in &setups {
        let _ = ledger.record_market(&s.config.symbol, &s.base_asset, &s.quote_asset);
        let _ = ledger.record_market_since(&s.config.symbol, started);
        if let Some(since) = ledger.market_since(&s.config.symbol)? {
            history_starts.push((s.config.symbol.clone(), since));
        }
        if let Some(id) = ledger.last_trade_id(&s.config.symbol)? {
            last_ids.push((s.config.symbol.clone(), id));
        }
    }
    if !last_ids.is_empty() {
        info!(event = "ledger_loaded", last_trade_ids = ?last_ids, "ledger read: trades after these are recovered from the exchange");
    }
    let mut engine =
        Engine::new(settings, setups, metrics.clone()).map_err(|e| anyhow::anyhow!(e))?;
    engine.seed_trade_ids(last_ids);
    engine.seed_history_starts(history_starts);
    let ledger = LedgerWriter::start(ledger, now_ms());

    let stream_settings = stream_settings(&cfg, &venue);
    let mode = market_mode(cfg.streams.market);
    let (stream_tx, mut stream_rx) = mpsc::channel::<StreamEvent>(8192);
    let (input_tx, mut input_rx) = mpsc::unbounded_channel::<Input>();
    let user: UserStreamHandle =
        spawn_user_stream(stream_settings.clone(), rest.clone(), stream_tx.clone());
    let market: MarketStreamHandle =
        spawn_market_stream(stream_settings, mode, engine.symbols(), stream_tx);
    info!(event = "started", markets = ?engine.symbols(), venue = ?cfg.exchange.venue, "mmd started");
    spawn_market_seed(rest.clone(), engine.symbols(), input_tx.clone());

    rest.keep_order_lines(ORDER_LINES_PER_MARKET * engine.symbols().len());
    let io = Io {
        rest: rest.clone(),
        tx: input_tx.clone(),
        metrics: metrics.clone(),
        requests: Arc::default(),
    };
    let mut tick = tokio::time::interval(cfg.engine.tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut time_sync = tokio::time::interval(cfg.engine.time_sync_interval);
    time_sync.tick().await;
    let rehearsal_interval = cfg.engine.rehearsal_interval;
    let mut rehearsal = (!rehearsal_interval.is_zero()).then(|| {
        let mut i = tokio::time::interval(rehearsal_interval);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    // A market frame handled less than an interval ago left the path warm.
    let mut last_market_input = tokio::time::Instant::now();
    let mut deadline: Option<tokio::time::Instant> = None;
    let exit_code: i32;
    let mut ready_sent = false;
    let mut at_once = false;
    // Ledger records of the last input, handed to the ledger thread only after the order
    // requests that input caused have been written: waking that thread (and SQLite's
    // work on a shared core) used to sit between a market frame and its order request.
    // Records keep their order; they reach the ledger microseconds later.
    let mut records: Vec<Record> = Vec::new();

    'main: loop {
        if !records.is_empty() || engine.has_after_requests() {
            // Lets the request tasks just spawned run (and write their bytes to the
            // socket) before this task logs the quotes and wakes the ledger thread.
            tokio::task::yield_now().await;
            io.count_requests();
            for c in engine.after_requests() {
                match c {
                    Command::Record(r) => records.push(r),
                    other => io.execute(other),
                }
            }
            for r in records.drain(..) {
                ledger.send(r);
            }
        }
        let ev = tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(Control::Stop) => {
                    if deadline.is_some() {
                        warn!(event = "stop_now", "second stop signal: exiting at once");
                        exit_code = 130;
                        at_once = true;
                        break 'main;
                    }
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                    deadline = Some(tokio::time::Instant::now() + cfg.engine.shutdown_timeout);
                    Event::Input(Input::Shutdown)
                }
                Some(Control::Reload) => {
                    spawn_reload(&cfg, rest.clone(), input_tx.clone());
                    continue;
                }
                None => {
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + cfg.engine.shutdown_timeout);
                        Event::Input(Input::Shutdown)
                    } else {
                        // Control gone and already stopping: wait for the rest.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            },
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                error!(event = "stop_timeout", "shutdown took too long: exiting with orders possibly left open");
                exit_code = 1;
                break 'main;
            },
            Some(i) = input_rx.recv() => Event::Input(i),
            Some(s) = stream_rx.recv() => Event::Stream(s),
            _ = tick.tick() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                io.count_requests();
                Event::Input(Input::Tick)
            },
            _ = async { match &mut rehearsal { Some(i) => i.tick().await, None => std::future::pending().await } } => {
                if last_market_input.elapsed() >= rehearsal_interval
                    && let Some(r) = engine.rehearse(now_ms())
                {
                    io.rehearse(&r);
                }
                continue;
            }
            _ = time_sync.tick() => {
                let r = rest.clone();
                tokio::spawn(async move {
                    if let Err(e) = r.sync_time().await {
                        warn!(event = "time_sync_failed", error = %e, "server time re-sync failed");
                    }
                });
                continue;
            }
        };
        let input = match ev {
            Event::Input(i) => i,
            Event::Stream(s) => match s {
                StreamEvent::Market { event, received } => Input::Market { event, received },
                StreamEvent::User { event, .. } => Input::User(event),
                StreamEvent::Connected { stream, reason } => Input::StreamUp { stream, reason },
                StreamEvent::Disconnected { stream, reason } => {
                    Input::StreamDown { stream, reason }
                }
                StreamEvent::Keepalive { ok, error } => Input::Keepalive { ok, error },
                StreamEvent::ListenKeyCreated { changed } => Input::ListenKeyCreated { changed },
                StreamEvent::Duplicate { stream } => {
                    metrics.inc(metrics::DUPLICATES_DROPPED, &[("stream", stream.as_str())]);
                    continue;
                }
                StreamEvent::DecodeError { stream, error } => {
                    warn!(event = "decode_error", stream = stream.as_str(), error = %error, "malformed frame skipped");
                    continue;
                }
            },
        };
        // The first order request a market frame causes is its reaction time.
        let mut reacting_to = match &input {
            Input::Market { received, .. } => {
                last_market_input = tokio::time::Instant::now();
                Some(*received)
            }
            _ => None,
        };
        let commands = engine.handle(input, now_ms());
        // Whether this input has handed an order request to a task of its own yet (when
        // no order line was idle). Such a request is signed, built and written by that
        // task, which runs only when this one yields: yielding before each further
        // request lets the one before it reach the socket first. Without it, 100 markets
        // measured more CPU (2.85-2.95 vs 2.50-2.55 %) and more connections open at once
        // (peak RSS 27.3-27.7 vs 21.7-23.7 MiB).
        let mut requested = false;
        for c in commands {
            if requested && matches!(c, Command::Place(_) | Command::Cancel { .. }) {
                tokio::task::yield_now().await;
            }
            match c {
                Command::Exit { code } => {
                    exit_code = code;
                    break 'main;
                }
                Command::SetMarketSymbols(symbols) => {
                    spawn_market_seed(rest.clone(), symbols.clone(), input_tx.clone());
                    market.update_symbols(symbols)
                }
                Command::Record(r) => records.push(r),
                Command::Place(p) => {
                    if !ready_sent {
                        ready_sent = true;
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                    }
                    requested |= !io.place(p, reacting_to.take());
                }
                Command::Cancel { symbol, client_id } => {
                    requested |= !io.cancel(symbol, client_id, reacting_to.take());
                }
                other => io.execute(other),
            }
        }
    }

    for c in engine.after_requests() {
        if let Command::Record(r) = c {
            records.push(r);
        }
    }
    for r in records.drain(..) {
        ledger.send(r);
    }
    if at_once {
        ledger.finish();
        return Ok(exit_code);
    }
    info!(
        event = "closing_streams",
        "closing streams (and deleting the listen key, with user_stream = \"listen-key\")"
    );
    let closing = async {
        market.shutdown().await;
        user.shutdown().await;
    };
    if tokio::time::timeout(Duration::from_secs(2), closing)
        .await
        .is_err()
    {
        warn!(event = "close_timeout", "streams did not close in time");
    }
    stop_token.cancel();
    ledger.finish();
    if let Some(sim) = venue.sim {
        sim.shutdown().await;
    }
    info!(event = "exit", code = exit_code, "mmd stopped");
    Ok(exit_code)
}

/// The limit order a quote is placed as: LIMIT_MAKER when post-only, else LIMIT GTC.
fn new_order(
    symbol: &str,
    side: Side,
    price: Decimal,
    qty: Decimal,
    post_only: bool,
    client_id: &str,
) -> NewOrder {
    NewOrder {
        symbol: symbol.to_owned(),
        side,
        order_type: if post_only {
            OrderType::LimitMaker
        } else {
            OrderType::Limit
        },
        time_in_force: if post_only {
            None
        } else {
            Some(TimeInForce::Gtc)
        },
        qty,
        price: Some(price),
        client_order_id: client_id.to_owned(),
        resp_type: RespType::Result,
    }
}

/// Fetches the best bid/ask of `symbols` for [`Input::MarketSeed`]. Only a head start:
/// on failure quoting waits for the stream, as it would have anyway.
fn spawn_market_seed(rest: RestClient, symbols: Vec<String>, tx: mpsc::UnboundedSender<Input>) {
    if symbols.is_empty() {
        return;
    }
    tokio::spawn(async move {
        match rest.book_tickers(&symbols).await {
            Ok(tickers) => {
                let _ = tx.send(Input::MarketSeed(tickers));
            }
            Err(e) => {
                warn!(event = "market_seed_failed", error = %e, "GET /api/v3/ticker/bookTicker failed: quoting waits for the market stream")
            }
        }
    });
}

fn symbols_of(markets: &[crate::config::MarketConfig]) -> Vec<String> {
    markets.iter().map(|m| m.symbol.clone()).collect()
}

/// The status of each of `symbols`; one the exchange no longer lists is `NOT_LISTED`, so
/// the engine stops quoting it as it would a halted one.
fn symbol_statuses(symbols: &[String], info: ExchangeInfo) -> Vec<(String, String)> {
    let mut listed: HashMap<String, String> = info
        .symbols
        .into_iter()
        .map(|s| (s.symbol, s.status))
        .collect();
    symbols
        .iter()
        .map(|s| {
            let status = listed.remove(s).unwrap_or_else(|| NOT_LISTED.into());
            (s.clone(), status)
        })
        .collect()
}

/// SIGHUP: re-read the market files and look them up at the exchange; an invalid file is
/// refused and the running markets stay.
fn spawn_reload(cfg: &Config, rest: RestClient, tx: mpsc::UnboundedSender<Input>) {
    let dir = cfg.markets_dir.clone();
    let prefix = cfg.exchange.client_order_prefix.clone();
    tokio::spawn(async move {
        info!(event = "reload", dir = %dir.display(), "reloading market files");
        let markets = match crate::config::load_markets(&dir, &prefix) {
            Ok(m) => m,
            Err(e) => {
                error!(event = "reload_refused", error = %e, "market files refused: the running config stays");
                return;
            }
        };
        let info = match rest.exchange_info_for(&symbols_of(&markets)).await {
            Ok(i) => i,
            Err(e) => {
                error!(event = "reload_refused", error = %e, "exchangeInfo failed: the running config stays");
                return;
            }
        };
        match market_setups(&info, &markets) {
            Ok(setups) => {
                let _ = tx.send(Input::Reload(setups));
            }
            Err(e) => {
                error!(event = "reload_refused", error = %e, "market refused: the running config stays")
            }
        }
    });
}

/// Executes the core's commands on tasks and feeds the results back.
#[derive(Clone)]
struct Io {
    rest: RestClient,
    tx: mpsc::UnboundedSender<Input>,
    metrics: Arc<Metrics>,
    requests: Arc<RequestCounts>,
}

/// Orders and cancels sent since the metrics last took them: counted on the hot path
/// with one atomic add, added to the metrics after an input's placements are logged, or
/// at the engine's next tick (0.5 s by default).
#[derive(Default)]
struct RequestCounts {
    on_line: AtomicU64,
    by_task: AtomicU64,
}

impl Io {
    fn count_requests(&self) {
        let r = &self.requests;
        for (n, path) in [(&r.on_line, "line"), (&r.by_task, "task")] {
            let added = n.swap(0, Relaxed);
            if added > 0 {
                self.metrics
                    .add(metrics::ORDER_REQUESTS, &[("path", path)], added);
            }
        }
    }

    /// Hands the answer to a request written on an order line to `done`, from a task.
    fn answer_written(
        &self,
        written: WrittenRequest,
        done: impl FnOnce(&Io, Result<OrderResponse, RestError>) + Send + 'static,
    ) {
        self.requests.on_line.fetch_add(1, Relaxed);
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.rest.written_response(written).await;
            done(&me, result);
        });
    }

    fn blocked(&self, e: &RestError) {
        let now = now_ms();
        match e {
            RestError::RateLimited { retry_after } => {
                let _ = self.tx.send(Input::RestBlocked {
                    until_ms: now + retry_after.as_millis() as u64,
                    banned: false,
                });
            }
            RestError::IpBanned { retry_after } => {
                let _ = self.tx.send(Input::RestBlocked {
                    until_ms: now + retry_after.as_millis() as u64,
                    banned: true,
                });
            }
            _ => {}
        }
    }

    /// Probe-only (`mmd bench`): from the frame `reacting_to` to the request handed over.
    fn note_sent(&self, reacting_to: Option<std::time::Instant>, sent: std::time::Instant) {
        if let Some(t) = reacting_to {
            self.metrics
                .observe_tick_to_request(sent.saturating_duration_since(t));
        }
    }

    /// Builds and signs the request of a rehearsed decision's quote, as [`Self::place`]
    /// would, and drops it.
    fn rehearse(&self, r: &Rehearsal) {
        // The length of a real client id (prefix, run id, symbol, sequence number).
        const CLIENT_ID: &str = "mmd-rehearsal-never-sent-0001";
        let order = new_order(&r.symbol, r.side, r.price, r.qty, r.post_only, CLIENT_ID);
        std::hint::black_box(self.rest.rehearse_order(&order));
    }

    /// Places `p`. True when its request was written on an order line in this call (or
    /// refused before sending); false when a task of its own will write it.
    fn place(&self, p: PlaceOrder, reacting_to: Option<std::time::Instant>) -> bool {
        let order = new_order(&p.symbol, p.side, p.price, p.qty, p.post_only, &p.client_id);
        // Ends when the signed request's bytes are handed to the socket's write:
        // signing, building and writing the request are the hot path.
        let tick_to_order = move |me: &Io, sent: std::time::Instant| {
            me.note_sent(reacting_to, sent);
            if let Some(t) = p.tick_received {
                me.metrics
                    .observe_tick_to_order(sent.saturating_duration_since(t).as_secs_f64());
            }
        };
        match self.rest.place_order_now(&order) {
            Ok(Some(written)) => {
                tick_to_order(self, written.at);
                self.answer_written(written, move |me, result| me.placed(p.client_id, result));
                true
            }
            Err(e) => {
                self.placed(p.client_id, Err(e));
                true
            }
            Ok(None) => {
                self.requests.by_task.fetch_add(1, Relaxed);
                let me = self.clone();
                tokio::spawn(async move {
                    let result = me
                        .rest
                        .place_order_noting_send(&order, &|sent| tick_to_order(&me, sent))
                        .await;
                    me.placed(p.client_id, result);
                });
                false
            }
        }
    }

    fn placed(&self, client_id: String, result: Result<OrderResponse, RestError>) {
        match &result {
            Ok(_) => self.metrics.note_order_live(),
            Err(e) => self.blocked(e),
        }
        let _ = self.tx.send(Input::Placed {
            client_id,
            result: result.map_err(|e| failure(&e)),
        });
    }

    /// Cancels an order as [`Self::place`] places one.
    fn cancel(
        &self,
        symbol: String,
        client_id: String,
        reacting_to: Option<std::time::Instant>,
    ) -> bool {
        let order = OrderRef::ClientOrderId(client_id);
        match self.rest.cancel_order_now(&symbol, &order) {
            Ok(Some(written)) => {
                self.note_sent(reacting_to, written.at);
                self.answer_written(written, move |me, result| me.canceled(order, result));
                true
            }
            Err(e) => {
                self.canceled(order, Err(e));
                true
            }
            Ok(None) => {
                self.requests.by_task.fetch_add(1, Relaxed);
                let me = self.clone();
                tokio::spawn(async move {
                    let result = me
                        .rest
                        .cancel_order_noting_send(&symbol, &order, &|sent| {
                            me.note_sent(reacting_to, sent)
                        })
                        .await;
                    me.canceled(order, result);
                });
                false
            }
        }
    }

    fn canceled(&self, order: OrderRef, result: Result<OrderResponse, RestError>) {
        if let Err(e) = &result {
            self.blocked(e);
        }
        let client_id = match order {
            OrderRef::ClientOrderId(id) => id,
            OrderRef::OrderId(id) => id.to_string(),
        };
        let _ = self.tx.send(Input::Canceled {
            client_id,
            result: result.map_err(|e| failure(&e)),
        });
    }

    fn execute(&self, c: Command) {
        let me = self.clone();
        tokio::spawn(async move {
            let rest = &me.rest;
            let input = match c {
                Command::Query { symbol, client_id } => {
                    let r = rest
                        .query_order(&symbol, &OrderRef::ClientOrderId(client_id.clone()))
                        .await;
                    if let Err(e) = &r {
                        me.blocked(e);
                    }
                    Input::Queried {
                        client_id,
                        result: r.map_err(|e| failure(&e)),
                    }
                }
                Command::CancelAll { symbol } => {
                    let r = rest.cancel_open_orders(&symbol).await;
                    if let Err(e) = &r {
                        me.blocked(e);
                    }
                    Input::CanceledAll {
                        symbol,
                        result: r
                            .map(|list| {
                                list.into_iter()
                                    .filter_map(|c| match c {
                                        CanceledOpenOrder::Order(o) => Some(o),
                                        _ => None,
                                    })
                                    .collect()
                            })
                            .map_err(|e| failure(&e)),
                    }
                }
                Command::CheckSymbols { symbols } => match rest.exchange_info_for(&symbols).await {
                    Ok(info) => Input::SymbolStatus(symbol_statuses(&symbols, info)),
                    Err(e) => {
                        me.blocked(&e);
                        warn!(event = "status_check_failed", error = %e, "exchangeInfo failed");
                        return;
                    }
                },
                Command::CheckOpenOrders { symbol } => {
                    let r = rest.open_orders(Some(&symbol)).await;
                    Input::OpenOrdersChecked {
                        symbol,
                        result: r.map_err(|e| failure(&e)),
                    }
                }
                Command::Resync {
                    reason,
                    trades_from,
                } => {
                    let r = resync(rest, &trades_from).await;
                    if let Err(e) = &r {
                        me.blocked(e);
                    }
                    Input::Resynced {
                        reason,
                        result: r.map_err(|e| failure(&e)),
                    }
                }
                Command::Place(_)
                | Command::Cancel { .. }
                | Command::SetMarketSymbols(_)
                | Command::Record(_)
                | Command::Exit { .. } => return,
            };
            let _ = me.tx.send(input);
        });
    }
}

/// Account, then open orders and trades per symbol. The account's update time tells the
/// reconciliation which trades the balances already include.
async fn resync(
    rest: &RestClient,
    trades_from: &[(String, Option<i64>)],
) -> Result<Snapshot, RestError> {
    let requested = rest.server_time_ms();
    let account = rest.account().await?;
    let as_of_ms = if account.update_time > 0 {
        account.update_time
    } else {
        requested
    };
    let mut open_orders = Vec::new();
    let mut trades = Vec::new();
    for (symbol, from) in trades_from {
        open_orders.push((symbol.clone(), rest.open_orders(Some(symbol)).await?));
        let mut all = Vec::new();
        match from {
            // Seeding: the most recent trades are enough to know where history ends.
            None => all = rest.my_trades(symbol, None, 1000).await?,
            Some(from) => {
                let mut id = *from;
                loop {
                    let page = rest.my_trades(symbol, Some(id), 1000).await?;
                    let n = page.len();
                    if let Some(last) = page.last() {
                        id = last.id + 1;
                    }
                    all.extend(page);
                    if n < 1000 {
                        break;
                    }
                }
            }
        }
        trades.push((symbol.clone(), all));
    }
    Ok(Snapshot {
        account,
        as_of_ms,
        open_orders,
        trades,
    })
}

/// Waits for SIGTERM/SIGINT/SIGHUP and forwards them as control messages.
pub fn spawn_signal_forwarder(tx: mpsc::UnboundedSender<Control>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            let c = if sig == SIGHUP {
                Control::Reload
            } else {
                Control::Stop
            };
            info!(event = "signal", signal = sig, "signal received");
            if tx.send(c).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// The stream tasks' settings for `cfg` on an opened venue.
pub(crate) fn stream_settings(cfg: &Config, venue: &Venue_) -> StreamSettings {
    StreamSettings {
        stream_url: venue.stream_url.clone(),
        ws_api_url: venue.ws_api_url.clone(),
        max_connection_age: cfg.streams.max_connection_age,
        reconnect_min_backoff: cfg.streams.reconnect_min_backoff,
        reconnect_max_backoff: cfg.streams.reconnect_max_backoff,
        idle_timeout: cfg.streams.idle_timeout,
        keepalive_interval: cfg.streams.keepalive_interval,
        tls: venue.tls.clone(),
    }
}

pub(crate) fn market_mode(kind: MarketStreamKind) -> MarketMode {
    match kind {
        MarketStreamKind::TickerArr => MarketMode::TickerArr,
        MarketStreamKind::BookTicker => MarketMode::BookTicker,
        MarketStreamKind::Ticker => MarketMode::Ticker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(symbol: &str, status: &str) -> crate::binance::types::SymbolInfo {
        crate::binance::types::SymbolInfo {
            symbol: symbol.into(),
            status: status.into(),
            base_asset: "X".into(),
            quote_asset: "USDT".into(),
            filters: Vec::new(),
        }
    }

    #[test]
    fn a_configured_symbol_the_exchange_no_longer_lists_is_not_listed() {
        let info = ExchangeInfo {
            server_time: 0,
            rate_limits: Vec::new(),
            symbols: vec![
                listed("ETHUSDT", "BREAK"),
                listed("BTCUSDT", "TRADING"),
                listed("BNBUSDT", "TRADING"),
            ],
        };
        let asked = ["BTCUSDT".to_string(), "GONEUSDT".into(), "ETHUSDT".into()];
        assert_eq!(
            symbol_statuses(&asked, info),
            [
                ("BTCUSDT".to_string(), "TRADING".to_string()),
                ("GONEUSDT".into(), "NOT_LISTED".into()),
                ("ETHUSDT".into(), "BREAK".into()),
            ],
            "every configured symbol once, in order; unconfigured ones left out"
        );
    }
}
