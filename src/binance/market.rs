//! The market data connection: `!ticker@arr`, or per-symbol `@bookTicker` /
//! `@ticker` streams over one combined connection, with live SUBSCRIBE/UNSUBSCRIBE
//! and zero-gap rotation.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use percent_encoding::{CONTROLS, utf8_percent_encode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::decode::SymbolSet;
use super::stream::{
    Action, CLOSED_BY_US, ConnHandle, ConnNews, ConnSpec, ConnectReason, Decoder, RecentFrames,
    Slots, StreamEvent, StreamKind, StreamSettings, log_disconnected, spawn_connection,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarketMode {
    /// `!ticker@arr`: one frame with every symbol each second (retired on Binance
    /// Spot 2026-03-26; still served by the simulator's 2018 dialect).
    TickerArr,
    /// `<symbol>@bookTicker`: real-time best bid/ask.
    BookTicker,
    /// `<symbol>@ticker`: 24h ticker per symbol, once a second.
    Ticker,
}

impl MarketMode {
    fn suffix(self) -> Option<&'static str> {
        match self {
            MarketMode::TickerArr => None,
            MarketMode::BookTicker => Some("@bookTicker"),
            MarketMode::Ticker => Some("@ticker"),
        }
    }
}

/// Binance allows 5 incoming messages per second per connection; stay under it.
const MIN_MESSAGE_SPACING: Duration = Duration::from_millis(250);

/// Stream name for `symbol` in `mode` (lower-case symbol, as Binance requires).
pub fn stream_name(mode: MarketMode, symbol: &str) -> Option<String> {
    mode.suffix()
        .map(|suffix| format!("{}{suffix}", symbol.to_lowercase()))
}

/// The connection URL for `mode` with `streams` subscribed from the start.
pub fn market_url(base: &str, mode: MarketMode, streams: &BTreeSet<String>) -> String {
    let base = base.trim_end_matches('/');
    match mode {
        MarketMode::TickerArr => format!("{base}/ws/!ticker@arr"),
        _ if streams.is_empty() => format!("{base}/stream"),
        _ => {
            let joined: Vec<String> = streams
                .iter()
                .map(|s| utf8_percent_encode(s, CONTROLS).to_string())
                .collect();
            format!("{base}/stream?streams={}", joined.join("/"))
        }
    }
}

/// `{"method":"SUBSCRIBE","params":[..],"id":n}` (or UNSUBSCRIBE).
pub fn subscribe_message(subscribe: bool, streams: &[String], id: u64) -> String {
    serde_json::json!({
        "method": if subscribe { "SUBSCRIBE" } else { "UNSUBSCRIBE" },
        "params": streams,
        "id": id,
    })
    .to_string()
}

enum Command {
    UpdateSymbols(Vec<String>),
}

pub struct MarketStreamHandle {
    commands: mpsc::UnboundedSender<Command>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl MarketStreamHandle {
    /// Replaces the set of symbols: per-symbol streams are changed live with
    /// SUBSCRIBE/UNSUBSCRIBE (paced under Binance's 5 messages/s), and only these
    /// symbols are decoded from then on.
    pub fn update_symbols(&self, symbols: Vec<String>) {
        let _ = self.commands.send(Command::UpdateSymbols(symbols));
    }

    /// Closes every connection and waits for the supervisor to finish.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

pub fn spawn_market_stream(
    settings: StreamSettings,
    mode: MarketMode,
    symbols: Vec<String>,
    tx: mpsc::Sender<StreamEvent>,
) -> MarketStreamHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let sup = MarketSupervisor::new(settings, mode, symbols, tx, cancel.clone());
    let task = tokio::spawn(sup.run(cmd_rx));
    MarketStreamHandle {
        commands: cmd_tx,
        cancel,
        task,
    }
}

struct Conn {
    handle: ConnHandle,
    /// Streams this connection is subscribed to (URL + messages sent).
    subscribed: BTreeSet<String>,
}

struct MarketSupervisor {
    settings: StreamSettings,
    mode: MarketMode,
    symbols: BTreeSet<String>,
    wanted: Arc<RwLock<SymbolSet>>,
    overlap: Arc<AtomicBool>,
    dedup: Arc<Mutex<RecentFrames>>,
    tx: mpsc::Sender<StreamEvent>,
    cancel: CancellationToken,
    news_tx: mpsc::UnboundedSender<ConnNews>,
    news_rx: mpsc::UnboundedReceiver<ConnNews>,
    slots: Slots,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    backoff: Backoff,
    reconnect_at: Option<Instant>,
    replacement_at: Option<Instant>,
    retire: Vec<(Instant, u64)>,
    overlap_until: Option<Instant>,
    outbox: VecDeque<String>,
    next_send_at: Instant,
    next_msg_id: u64,
}

impl MarketSupervisor {
    fn new(
        settings: StreamSettings,
        mode: MarketMode,
        symbols: Vec<String>,
        tx: mpsc::Sender<StreamEvent>,
        cancel: CancellationToken,
    ) -> Self {
        let (news_tx, news_rx) = mpsc::unbounded_channel();
        let backoff = Backoff::new(
            settings.reconnect_min_backoff,
            settings.reconnect_max_backoff,
        );
        let symbols: BTreeSet<String> = symbols.into_iter().collect();
        Self {
            wanted: Arc::new(RwLock::new(SymbolSet::new(&symbols))),
            symbols,
            settings,
            mode,
            overlap: Arc::new(AtomicBool::new(false)),
            dedup: Arc::new(Mutex::new(RecentFrames::new(1024))),
            tx,
            cancel,
            news_tx,
            news_rx,
            slots: Slots::default(),
            conns: HashMap::new(),
            next_id: 1,
            backoff,
            reconnect_at: Some(Instant::now()),
            replacement_at: None,
            retire: Vec::new(),
            overlap_until: None,
            outbox: VecDeque::new(),
            next_send_at: Instant::now(),
            next_msg_id: 1,
        }
    }

    fn desired_streams(&self) -> BTreeSet<String> {
        self.symbols
            .iter()
            .filter_map(|s| stream_name(self.mode, s))
            .collect()
    }

    fn open(&mut self, reason: ConnectReason) {
        let id = self.next_id;
        self.next_id += 1;
        let subscribed = self.desired_streams();
        let url = market_url(&self.settings.stream_url, self.mode, &subscribed);
        if self.slots.current().is_some() {
            // Both connections will deliver the same frames until the old one closes.
            self.overlap.store(true, Ordering::Relaxed);
            self.overlap_until = None;
        }
        let handle = spawn_connection(
            ConnSpec {
                id,
                url,
                idle_timeout: self.settings.idle_timeout,
                ping_interval: self.settings.ping_interval(),
                decoder: Decoder::Market {
                    wanted: self.wanted.clone(),
                    overlap: self.overlap.clone(),
                    dedup: self.dedup.clone(),
                },
                tx: self.tx.clone(),
                news: self.news_tx.clone(),
                tls: self.settings.tls.clone(),
            },
            &self.cancel,
        );
        self.slots.opening(id, reason);
        self.conns.insert(id, Conn { handle, subscribed });
    }

    async fn emit(&self, ev: StreamEvent) {
        let _ = self.tx.send(ev).await;
    }

    async fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Connected(reason) => {
                    tracing::info!(stream = "market", reason = reason.as_str(), "connected");
                    self.sync_subscriptions();
                    self.emit(StreamEvent::Connected {
                        stream: StreamKind::Market,
                        reason,
                    })
                    .await;
                }
                Action::Disconnected(why) => {
                    log_disconnected(StreamKind::Market, &why);
                    self.emit(StreamEvent::Disconnected {
                        stream: StreamKind::Market,
                        reason: why,
                    })
                    .await;
                }
                Action::Retire(id) => {
                    self.retire
                        .push((Instant::now() + self.settings.overlap_grace(), id));
                }
                Action::Reconnect => {
                    self.reconnect_at = Some(Instant::now() + self.backoff.next_delay());
                }
                Action::RetryReplacement => {
                    self.replacement_at = Some(Instant::now() + self.backoff.next_delay());
                }
            }
        }
    }

    /// Brings the current connection's subscriptions to the desired set.
    fn sync_subscriptions(&mut self) {
        if self.mode == MarketMode::TickerArr {
            return;
        }
        let desired = self.desired_streams();
        let Some(conn) = self.slots.current().and_then(|id| self.conns.get_mut(&id)) else {
            return;
        };
        let add: Vec<String> = desired.difference(&conn.subscribed).cloned().collect();
        let remove: Vec<String> = conn.subscribed.difference(&desired).cloned().collect();
        // Binance accepts up to 1024 streams per message; batch well below that.
        for chunk in remove.chunks(200) {
            self.outbox
                .push_back(subscribe_message(false, chunk, self.next_msg_id));
            self.next_msg_id += 1;
        }
        for chunk in add.chunks(200) {
            self.outbox
                .push_back(subscribe_message(true, chunk, self.next_msg_id));
            self.next_msg_id += 1;
        }
        conn.subscribed = desired;
    }

    fn next_deadline(&self) -> Option<Instant> {
        let rotation = self.slots.rotation_at(
            self.settings.max_connection_age,
            self.settings.rotation_lead(),
        );
        [
            self.reconnect_at,
            self.replacement_at,
            rotation,
            self.retire.iter().map(|(t, _)| *t).min(),
            self.overlap_until,
            (!self.outbox.is_empty()).then_some(self.next_send_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            if self.slots.current().is_none() && self.slots.pending().is_none() {
                let reason = self.slots.fresh_reason(ConnectReason::Error);
                self.open(reason);
            }
        }
        let rotation_due = self.slots.rotation_due(
            now,
            self.settings.max_connection_age,
            self.settings.rotation_lead(),
        );
        if self.replacement_at.is_some_and(|t| t <= now) || rotation_due {
            self.replacement_at = None;
            if self.slots.pending().is_none() && self.slots.current().is_some() {
                tracing::info!(stream = "market", "opening replacement connection");
                self.open(ConnectReason::Planned);
            }
        }
        let (due, keep): (Vec<_>, Vec<_>) = self.retire.drain(..).partition(|(t, _)| *t <= now);
        self.retire = keep;
        for (_, id) in due {
            if let Some(c) = self.conns.remove(&id) {
                c.handle.cancel.cancel();
            }
            // Frames still in flight on the new one may repeat what the old one
            // delivered; keep deduplicating a little longer.
            self.overlap_until = Some(now + self.settings.overlap_grace());
        }
        if self.overlap_until.is_some_and(|t| t <= now) && self.retire.is_empty() {
            self.overlap_until = None;
            if self.slots.pending().is_none() {
                self.overlap.store(false, Ordering::Relaxed);
            }
        }
        if !self.outbox.is_empty() && self.next_send_at <= now {
            if let Some(conn) = self.slots.current().and_then(|id| self.conns.get(&id))
                && let Some(msg) = self.outbox.pop_front()
            {
                let _ = conn.handle.out.send(msg);
            }
            self.next_send_at = now + MIN_MESSAGE_SPACING;
            if self.slots.current().is_none() {
                // Nothing to send on: the next connection's URL carries the full set.
                self.outbox.clear();
            }
        }
    }

    async fn on_news(&mut self, news: ConnNews) {
        match news {
            ConnNews::Live(id) => {
                let actions = self.slots.on_live(id, Instant::now());
                if !actions.is_empty() {
                    self.backoff.reset();
                }
                self.apply(actions).await;
            }
            ConnNews::Closed(id, why) => {
                if why != CLOSED_BY_US {
                    tracing::warn!(stream = "market", conn = id, reason = %why, "connection ended");
                }
                let actions = self.slots.on_closed(id, &why);
                self.conns.remove(&id);
                self.retire.retain(|(_, r)| *r != id);
                self.apply(actions).await;
            }
            ConnNews::ServerShutdown(id) => {
                if self.slots.current() == Some(id) && self.slots.pending().is_none() {
                    tracing::info!(stream = "market", "serverShutdown: rotating now");
                    self.open(ConnectReason::Planned);
                }
            }
            ConnNews::ListenKeyExpired(..) | ConnNews::SubscriptionEnded(_) => {}
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                Some(news) = self.news_rx.recv() => self.on_news(news).await,
                Some(cmd) = commands.recv() => match cmd {
                    Command::UpdateSymbols(symbols) => {
                        self.symbols = symbols.into_iter().collect();
                        *self.wanted.write() = SymbolSet::new(&self.symbols);
                        self.sync_subscriptions();
                    }
                },
                _ = sleep_until(deadline) => self.on_timer().await,
            }
        }
        for (_, c) in self.conns.drain() {
            c.handle.cancel.cancel();
        }
    }
}

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_messages() {
        let streams: BTreeSet<String> = ["BTCUSDT", "ETHBTC"]
            .iter()
            .filter_map(|s| stream_name(MarketMode::BookTicker, s))
            .collect();
        assert_eq!(
            market_url("wss://x:9443/", MarketMode::BookTicker, &streams),
            "wss://x:9443/stream?streams=btcusdt@bookTicker/ethbtc@bookTicker"
        );
        assert_eq!(
            market_url("wss://x:9443", MarketMode::TickerArr, &BTreeSet::new()),
            "wss://x:9443/ws/!ticker@arr"
        );
        let m = subscribe_message(
            true,
            &["btcusdt@aggTrade".into(), "btcusdt@depth".into()],
            1,
        );
        // The documented SUBSCRIBE request (spot/market/subscribe.request.json).
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/binance-fixtures/spot/market/subscribe.request.json"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&m).unwrap(), doc);
    }
}
