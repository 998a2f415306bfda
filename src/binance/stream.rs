//! WebSocket plumbing shared by the market and user streams.
//!
//! Each socket runs in its own connection task that only reads, decodes and
//! forwards events to the engine's channel; lifecycle news (live, closed,
//! serverShutdown, key expired) goes to the stream's supervisor, which owns the
//! decisions: when to rotate, when to reconnect, which connection is current.
//! Those decisions live in [`Slots`], a pure state machine tested without sockets.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::decode::{
    DecodeError, MAX_FRAME_BYTES, SymbolSet, decode_market_frame, decode_user_event_keyed,
    frame_hash,
};
use super::sign::{Signer, ws_api_payload};
use super::types::{MarketEvent, UserEvent, WsApiResponse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Market,
    User,
}

impl StreamKind {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Market => "market",
            StreamKind::User => "user",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectReason {
    /// First connection of the process.
    Initial,
    /// Zero-gap rotation (age limit or serverShutdown): the old one overlapped.
    Planned,
    /// Reconnect after an unplanned drop: events may have been missed.
    Error,
    /// The listen key expired or changed: events may have been missed.
    Expired,
}

impl ConnectReason {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectReason::Initial => "initial",
            ConnectReason::Planned => "planned",
            ConnectReason::Error => "error",
            ConnectReason::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Market {
        event: MarketEvent,
        received: Instant,
    },
    User {
        event: UserEvent,
        received: Instant,
    },
    /// A new connection is live; the engine resyncs on User + reason != Initial.
    Connected {
        stream: StreamKind,
        reason: ConnectReason,
    },
    Disconnected {
        stream: StreamKind,
        reason: String,
    },
    Keepalive {
        ok: bool,
        error: Option<String>,
    },
    ListenKeyCreated {
        changed: bool,
    },
    /// A user event already delivered (sent twice, or seen on both connections of a
    /// rotation), dropped: counted so a duplicating exchange shows in the metrics.
    Duplicate {
        stream: StreamKind,
    },
    /// A malformed frame, skipped.
    DecodeError {
        stream: StreamKind,
        error: String,
    },
}

#[derive(Clone)]
pub struct StreamSettings {
    /// e.g. `wss://stream.binance.com:9443` (no path).
    pub stream_url: String,
    /// `wss://ws-api.binance.com:443/ws-api/v3`: when set, the user stream uses the
    /// WebSocket API instead of a listen key.
    pub ws_api_url: Option<String>,
    pub max_connection_age: Duration,
    pub reconnect_min_backoff: Duration,
    pub reconnect_max_backoff: Duration,
    /// No frame for this long (our pings unanswered) means the connection is dead.
    pub idle_timeout: Duration,
    pub keepalive_interval: Duration,
    /// For `wss://`: the one client configuration the REST client uses too
    /// ([`crate::tls::client_config`]).
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for StreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the TLS configuration: its Debug spells out every root and cipher suite.
        f.debug_struct("StreamSettings")
            .field("stream_url", &self.stream_url)
            .field("ws_api_url", &self.ws_api_url)
            .field("max_connection_age", &self.max_connection_age)
            .field("reconnect_min_backoff", &self.reconnect_min_backoff)
            .field("reconnect_max_backoff", &self.reconnect_max_backoff)
            .field("idle_timeout", &self.idle_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .finish_non_exhaustive()
    }
}

impl StreamSettings {
    /// How long before `max_connection_age` the replacement is opened.
    pub(crate) fn rotation_lead(&self) -> Duration {
        (self.max_connection_age / 10).min(Duration::from_secs(60))
    }

    /// How long the retired connection stays open after the switch, so frames
    /// already in flight on it are still read (and deduplicated).
    pub(crate) fn overlap_grace(&self) -> Duration {
        (self.max_connection_age / 10).min(Duration::from_secs(2))
    }

    pub(crate) fn ping_interval(&self) -> Duration {
        (self.idle_timeout / 3).max(Duration::from_millis(50))
    }
}

// ------------------------------------------------------------ dedup

/// A bounded memory of recently seen frame hashes.
#[derive(Debug)]
pub struct RecentFrames {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
}

impl RecentFrames {
    pub fn new(cap: usize) -> Self {
        Self {
            seen: HashSet::with_capacity(cap),
            order: VecDeque::with_capacity(cap),
            cap: cap.max(1),
        }
    }

    /// True the first time `key` is seen (within the last `cap` keys).
    pub fn first_seen(&mut self, key: u64) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

// ------------------------------------------------------------ rotation decisions

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Tell the engine a new connection is live.
    Connected(ConnectReason),
    /// Tell the engine the current connection is gone.
    Disconnected(String),
    /// Close this (superseded) connection after the overlap grace.
    Retire(u64),
    /// Nothing is live or opening: open a fresh connection after the backoff.
    Reconnect,
    /// A replacement failed while the current one still works: try again later.
    RetryReplacement,
}

/// Which connection is current and which is being opened. Pure: the supervisor
/// feeds it socket news and executes the returned actions.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    current: Option<(u64, Instant)>,
    pending: Option<(u64, ConnectReason)>,
    ever_live: bool,
}

impl Slots {
    pub fn current(&self) -> Option<u64> {
        self.current.map(|(id, _)| id)
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn current_since(&self) -> Option<Instant> {
        self.current.map(|(_, t)| t)
    }

    pub fn pending(&self) -> Option<u64> {
        self.pending.map(|(id, _)| id)
    }

    /// Reason for a connection opened because nothing is live.
    pub fn fresh_reason(&self, default_after_first: ConnectReason) -> ConnectReason {
        if self.ever_live {
            default_after_first
        } else {
            ConnectReason::Initial
        }
    }

    pub fn opening(&mut self, id: u64, reason: ConnectReason) {
        self.pending = Some((id, reason));
    }

    pub fn on_live(&mut self, id: u64, now: Instant) -> Vec<Action> {
        let Some((pid, reason)) = self.pending else {
            return Vec::new();
        };
        if pid != id {
            return Vec::new();
        }
        self.pending = None;
        self.ever_live = true;
        let mut actions = vec![Action::Connected(reason)];
        if let Some((old, _)) = self.current.replace((id, now)) {
            actions.push(Action::Retire(old));
        }
        actions
    }

    pub fn on_closed(&mut self, id: u64, why: &str) -> Vec<Action> {
        if self.current() == Some(id) {
            self.current = None;
            let mut actions = vec![Action::Disconnected(why.to_owned())];
            match &mut self.pending {
                // The replacement no longer replaces anything: there was a gap.
                Some((_, reason)) => {
                    if *reason == ConnectReason::Planned {
                        *reason = ConnectReason::Error;
                    }
                }
                None => actions.push(Action::Reconnect),
            }
            return actions;
        }
        if self.pending() == Some(id) {
            self.pending = None;
            return vec![if self.current.is_some() {
                Action::RetryReplacement
            } else {
                Action::Reconnect
            }];
        }
        Vec::new()
    }

    /// Time to open a replacement for the current connection.
    pub fn rotation_due(&self, now: Instant, max_age: Duration, lead: Duration) -> bool {
        match (self.current, self.pending) {
            (Some((_, since)), None) => now + lead >= since + max_age,
            _ => false,
        }
    }

    pub fn rotation_at(&self, max_age: Duration, lead: Duration) -> Option<Instant> {
        match (self.current, self.pending) {
            (Some((_, since)), None) => Some(since + max_age.saturating_sub(lead)),
            _ => None,
        }
    }
}

// ------------------------------------------------------------ connection task

/// Close reason of a connection we retired or shut down ourselves.
pub(crate) const CLOSED_BY_US: &str = "closed by us";

/// Our own close (shutdown, retiring a rotated connection) is routine; any other
/// disconnect is worth an operator's warning.
pub(crate) fn log_disconnected(stream: StreamKind, why: &str) {
    if why == CLOSED_BY_US {
        tracing::info!(stream = stream.as_str(), reason = %why, "disconnected");
    } else {
        tracing::warn!(stream = stream.as_str(), reason = %why, "disconnected");
    }
}

/// What a connection tells its supervisor.
#[derive(Debug)]
pub(crate) enum ConnNews {
    Live(u64),
    Closed(u64, String),
    ServerShutdown(u64),
    ListenKeyExpired(u64, String),
    SubscriptionEnded(u64),
}

/// How the WebSocket API user stream authenticates and subscribes.
#[derive(Clone)]
pub(crate) struct WsApiAuth {
    pub api_key: String,
    pub signer: Signer,
    /// Server-time source (the REST client's synced clock).
    pub now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
}

#[derive(Clone)]
pub(crate) enum Decoder {
    Market {
        wanted: Arc<RwLock<SymbolSet>>,
        /// Dedup is only worth its cost while two connections overlap.
        overlap: Arc<AtomicBool>,
        dedup: Arc<Mutex<RecentFrames>>,
    },
    User {
        dedup: Arc<Mutex<RecentFrames>>,
        ws_api: Option<Box<WsApiAuth>>,
    },
}

pub(crate) struct ConnSpec {
    pub id: u64,
    pub url: String,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    pub decoder: Decoder,
    pub tx: mpsc::Sender<StreamEvent>,
    pub news: mpsc::UnboundedSender<ConnNews>,
    pub tls: Arc<rustls::ClientConfig>,
}

pub(crate) struct ConnHandle {
    pub cancel: CancellationToken,
    pub out: mpsc::UnboundedSender<String>,
}

pub(crate) fn spawn_connection(spec: ConnSpec, parent: &CancellationToken) -> ConnHandle {
    let cancel = parent.child_token();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let token = cancel.clone();
    tokio::spawn(async move {
        let id = spec.id;
        let news = spec.news.clone();
        let why = run_connection(spec, out_rx, token).await;
        let _ = news.send(ConnNews::Closed(id, why));
    });
    ConnHandle {
        cancel,
        out: out_tx,
    }
}

/// tungstenite zero-fills its read window before every read. Over TLS a read returns at
/// most one record (tokio-rustls hands over rustls' first plaintext chunk, <= 16 KiB), so
/// the default 128 KiB window cleared eight times what a read could fill: ~6 MB of memset
/// per `!ticker@arr` frame (`benches/ws_read.rs`: 9-17 % of reading one). In plain text a
/// read can take whatever the socket holds, and the larger window saves syscalls.
const TLS_READ_WINDOW: usize = 16 * 1024;

pub fn ws_config(url: &str) -> WebSocketConfig {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    if url.starts_with("wss://") {
        config.read_buffer_size(TLS_READ_WINDOW)
    } else {
        config
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs one socket until it ends; returns why.
async fn run_connection(
    spec: ConnSpec,
    mut out_rx: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
) -> String {
    // Our configuration rather than the one tokio-tungstenite would build per connect:
    // the same roots as the REST client, extra ones included (exchange.tls_ca_file).
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        &spec.url,
        Some(ws_config(&spec.url)),
        true,
        Some(tokio_tungstenite::Connector::Rustls(spec.tls.clone())),
    );
    let mut ws: Ws = tokio::select! {
        _ = cancel.cancelled() => return "canceled while connecting".into(),
        r = tokio::time::timeout(spec.idle_timeout.max(Duration::from_secs(1)), connect) => match r {
            Err(_) => return "connect timed out".into(),
            Ok(Err(e)) => return format!("connect failed: {e}"),
            Ok(Ok((ws, _))) => ws,
        },
    };
    if let Decoder::User {
        ws_api: Some(auth), ..
    } = &spec.decoder
    {
        let handshake = ws_api_subscribe(&mut ws, auth, spec.id);
        match tokio::time::timeout(spec.idle_timeout.max(Duration::from_secs(1)), handshake).await {
            Err(_) => return "WebSocket API subscribe timed out".into(),
            Ok(Err(e)) => return e,
            Ok(Ok(())) => {}
        }
    }
    let _ = spec.news.send(ConnNews::Live(spec.id));

    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval(spec.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_frame = Instant::now();
    let mut market_buf = Vec::with_capacity(8);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return CLOSED_BY_US.into();
            }
            msg = stream.next() => {
                let received = Instant::now();
                last_frame = received;
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        if !handle_text(&spec, text.as_str(), received, &mut market_buf).await {
                            return "engine channel closed".into();
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return format!("closed by server: {}", frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default());
                    }
                    // Pings are answered by tungstenite on the next read/write.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("read error: {e}"),
                    None => return "connection ended".into(),
                }
            }
            Some(text) = out_rx.recv() => {
                if let Err(e) = sink.send(Message::text(text)).await {
                    return format!("write error: {e}");
                }
            }
            _ = ping.tick() => {
                if last_frame.elapsed() >= spec.idle_timeout {
                    return format!("no frame for {:?} (pings unanswered): connection presumed dead", spec.idle_timeout);
                }
                if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                    return format!("ping failed: {e}");
                }
            }
        }
    }
}

/// Returns false when the engine has gone away.
async fn handle_text(
    spec: &ConnSpec,
    text: &str,
    received: Instant,
    buf: &mut Vec<MarketEvent>,
) -> bool {
    match &spec.decoder {
        Decoder::Market {
            wanted,
            overlap,
            dedup,
        } => {
            if overlap.load(Ordering::Relaxed) && !dedup.lock().first_seen(frame_hash(text)) {
                return true;
            }
            buf.clear();
            let result = decode_market_frame(text, &wanted.read(), buf);
            if let Err(e) = result {
                tracing::warn!(stream = "market", error = %e, "malformed frame skipped");
                return forward(
                    spec,
                    StreamEvent::DecodeError {
                        stream: StreamKind::Market,
                        error: e.to_string(),
                    },
                )
                .await;
            }
            for event in buf.drain(..) {
                if matches!(event, MarketEvent::ServerShutdown { .. }) {
                    let _ = spec.news.send(ConnNews::ServerShutdown(spec.id));
                }
                if spec
                    .tx
                    .send(StreamEvent::Market { event, received })
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            // The engine's task, woken by the send, runs before this one tries the socket
            // again: that read (an empty one, mostly) and this loop's other branches used
            // to sit between a market frame and its decision (p50 -8 us, `mmd bench`).
            tokio::task::yield_now().await;
            true
        }
        Decoder::User { dedup, .. } => match decode_user_event_keyed(text) {
            Ok((event, key)) => {
                match &event {
                    UserEvent::ServerShutdown { .. } => {
                        let _ = spec.news.send(ConnNews::ServerShutdown(spec.id));
                    }
                    UserEvent::ListenKeyExpired { listen_key, .. } => {
                        let _ = spec
                            .news
                            .send(ConnNews::ListenKeyExpired(spec.id, listen_key.clone()));
                    }
                    UserEvent::EventStreamTerminated { .. } => {
                        let _ = spec.news.send(ConnNews::SubscriptionEnded(spec.id));
                    }
                    _ => {}
                }
                if !dedup.lock().first_seen(key) {
                    return forward(
                        spec,
                        StreamEvent::Duplicate {
                            stream: StreamKind::User,
                        },
                    )
                    .await;
                }
                forward(spec, StreamEvent::User { event, received }).await
            }
            Err(DecodeError::NotAnEvent) => {
                // A WebSocket API response (e.g. to a late request); only errors matter.
                if let Ok(r) = serde_json::from_str::<WsApiResponse>(text)
                    && let Some(e) = r.error
                {
                    tracing::warn!(code = e.code, msg = %e.msg, "WebSocket API error response");
                }
                true
            }
            Err(e) => {
                tracing::warn!(stream = "user", error = %e, "malformed frame skipped");
                forward(
                    spec,
                    StreamEvent::DecodeError {
                        stream: StreamKind::User,
                        error: e.to_string(),
                    },
                )
                .await
            }
        },
    }
}

async fn forward(spec: &ConnSpec, ev: StreamEvent) -> bool {
    spec.tx.send(ev).await.is_ok()
}

/// A signed WebSocket API request (`session.logon`, `userDataStream.subscribe.signature`).
pub(crate) fn signed_request(method: &str, id: &str, auth: &WsApiAuth) -> String {
    let timestamp = (auth.now_ms)().to_string();
    let payload = ws_api_payload([
        ("apiKey", auth.api_key.as_str()),
        ("timestamp", timestamp.as_str()),
    ]);
    let signature = auth.signer.sign(payload.as_bytes());
    serde_json::json!({
        "id": id,
        "method": method,
        "params": {
            "apiKey": auth.api_key,
            "timestamp": timestamp.parse::<u64>().unwrap_or_default(),
            "signature": signature,
        }
    })
    .to_string()
}

/// Subscribes the user data stream on a fresh WebSocket API connection:
/// `userDataStream.subscribe.signature` (any key type), or `session.logon` then
/// `userDataStream.subscribe` for Ed25519 keys (Binance's recommended setup).
async fn ws_api_subscribe(ws: &mut Ws, auth: &WsApiAuth, conn: u64) -> Result<(), String> {
    let mut steps: Vec<(String, String)> = Vec::new();
    if auth.signer.is_ed25519() {
        let id = format!("mmd-{conn}-logon");
        steps.push((id.clone(), signed_request("session.logon", &id, auth)));
        let id = format!("mmd-{conn}-subscribe");
        steps.push((
            id.clone(),
            serde_json::json!({"id": id, "method": "userDataStream.subscribe"}).to_string(),
        ));
    } else {
        let id = format!("mmd-{conn}-subscribe");
        steps.push((
            id.clone(),
            signed_request("userDataStream.subscribe.signature", &id, auth),
        ));
    }
    for (id, request) in steps {
        ws.send(Message::text(request))
            .await
            .map_err(|e| format!("WebSocket API send failed: {e}"))?;
        loop {
            let msg = ws
                .next()
                .await
                .ok_or("WebSocket API closed during subscribe")?
                .map_err(|e| format!("WebSocket API read failed: {e}"))?;
            let Message::Text(text) = msg else { continue };
            let Ok(resp) = serde_json::from_str::<WsApiResponse>(text.as_str()) else {
                continue;
            };
            if resp.id.as_str() != Some(id.as_str()) {
                continue;
            }
            if resp.status != 200 {
                let (code, msg) = resp
                    .error
                    .map(|e| (e.code, e.msg))
                    .unwrap_or((0, String::new()));
                return Err(format!(
                    "WebSocket API subscribe refused (HTTP {}, code {code}): {msg}",
                    resp.status
                ));
            }
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_connections_read_one_record_window_at_a_time() {
        assert_eq!(
            ws_config("wss://stream.binance.com:9443/ws").read_buffer_size,
            TLS_READ_WINDOW
        );
        let plain = ws_config("ws://127.0.0.1:9000/ws");
        assert_eq!(
            plain.read_buffer_size,
            WebSocketConfig::default().read_buffer_size
        );
        assert_eq!(plain.max_message_size, Some(MAX_FRAME_BYTES));
    }

    #[test]
    fn recent_frames_forgets_the_oldest() {
        let mut r = RecentFrames::new(3);
        assert!(r.first_seen(1));
        assert!(!r.first_seen(1));
        assert!(r.first_seen(2));
        assert!(r.first_seen(3));
        assert!(r.first_seen(4));
        assert_eq!(r.len(), 3);
        assert!(r.first_seen(1), "1 was evicted");
        assert!(!r.first_seen(4));
    }

    #[test]
    fn initial_connect_then_planned_rotation_retires_the_old_one() {
        let t0 = Instant::now();
        let mut s = Slots::default();
        assert_eq!(s.fresh_reason(ConnectReason::Error), ConnectReason::Initial);
        s.opening(1, ConnectReason::Initial);
        assert_eq!(
            s.on_live(1, t0),
            vec![Action::Connected(ConnectReason::Initial)]
        );
        let age = Duration::from_secs(10);
        let lead = Duration::from_secs(1);
        assert!(!s.rotation_due(t0 + Duration::from_secs(8), age, lead));
        assert_eq!(s.rotation_at(age, lead), Some(t0 + Duration::from_secs(9)));
        assert!(s.rotation_due(t0 + Duration::from_secs(9), age, lead));
        s.opening(2, ConnectReason::Planned);
        assert!(!s.rotation_due(t0 + Duration::from_secs(9), age, lead));
        // A stale Live from an unknown connection changes nothing.
        assert!(s.on_live(7, t0).is_empty());
        let t1 = t0 + Duration::from_millis(9_200);
        assert_eq!(
            s.on_live(2, t1),
            vec![Action::Connected(ConnectReason::Planned), Action::Retire(1)]
        );
        // The retired connection closing is not a disconnect.
        assert!(s.on_closed(1, "closed by us").is_empty());
        assert_eq!(s.current(), Some(2));
        assert_eq!(s.current_since(), Some(t1));
    }

    #[test]
    fn drop_reconnects_and_failed_replacement_is_retried() {
        let t0 = Instant::now();
        let mut s = Slots::default();
        s.opening(1, ConnectReason::Initial);
        s.on_live(1, t0);
        assert_eq!(
            s.on_closed(1, "reset"),
            vec![Action::Disconnected("reset".into()), Action::Reconnect]
        );
        assert_eq!(s.fresh_reason(ConnectReason::Error), ConnectReason::Error);
        s.opening(2, ConnectReason::Error);
        assert_eq!(s.on_closed(2, "refused"), vec![Action::Reconnect]);
        s.opening(3, ConnectReason::Error);
        s.on_live(3, t0);
        s.opening(4, ConnectReason::Planned);
        assert_eq!(s.on_closed(4, "refused"), vec![Action::RetryReplacement]);
        assert_eq!(s.current(), Some(3));
    }

    #[test]
    fn current_dropping_during_rotation_downgrades_the_reason() {
        let t0 = Instant::now();
        let mut s = Slots::default();
        s.opening(1, ConnectReason::Initial);
        s.on_live(1, t0);
        s.opening(2, ConnectReason::Planned);
        // No Reconnect: the replacement is already on its way.
        assert_eq!(
            s.on_closed(1, "eof"),
            vec![Action::Disconnected("eof".into())]
        );
        assert_eq!(
            s.on_live(2, t0),
            vec![Action::Connected(ConnectReason::Error)]
        );
    }
}
