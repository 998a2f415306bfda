//! The user data stream, over a listen key (`<stream_url>/ws/<key>`: the simulator's
//! 2018 dialect, USDⓈ-M futures, compatible venues) or over the WebSocket API
//! (`userDataStream.subscribe.signature`, or `session.logon` + `userDataStream.subscribe`
//! with Ed25519: Binance Spot since 2026-02-20). Both get the same zero-gap
//! rotation, reconnect backoff and dedup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::market::sleep_until;
use super::rest::{RestClient, RestError};
use super::stream::{
    Action, CLOSED_BY_US, ConnHandle, ConnNews, ConnSpec, ConnectReason, Decoder, RecentFrames,
    Slots, StreamEvent, StreamKind, StreamSettings, WsApiAuth, log_disconnected, spawn_connection,
};

/// -1125: "This listenKey does not exist."
const LISTEN_KEY_UNKNOWN: i64 = -1125;

pub struct UserStreamHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl UserStreamHandle {
    /// Closes the connections and, on the listen-key transport, deletes the key.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Starts the user data stream. With `settings.ws_api_url` set it uses the
/// WebSocket API (the REST client's key, signer and synced clock sign the
/// subscription); otherwise a listen key from the REST client.
pub fn spawn_user_stream(
    settings: StreamSettings,
    rest: RestClient,
    tx: mpsc::Sender<StreamEvent>,
) -> UserStreamHandle {
    let cancel = CancellationToken::new();
    let sup = UserSupervisor::new(settings, rest, tx, cancel.clone());
    let task = tokio::spawn(sup.run());
    UserStreamHandle { cancel, task }
}

enum Transport {
    ListenKey { key: Option<String> },
    WsApi { url: String },
}

struct UserSupervisor {
    settings: StreamSettings,
    rest: RestClient,
    tx: mpsc::Sender<StreamEvent>,
    cancel: CancellationToken,
    transport: Transport,
    dedup: Arc<Mutex<RecentFrames>>,
    news_tx: mpsc::UnboundedSender<ConnNews>,
    news_rx: mpsc::UnboundedReceiver<ConnNews>,
    slots: Slots,
    conns: HashMap<u64, ConnHandle>,
    next_id: u64,
    backoff: Backoff,
    reconnect_at: Option<Instant>,
    replacement_at: Option<Instant>,
    retire: Vec<(Instant, u64)>,
    keepalive_at: Option<Instant>,
    /// A key renewal failed; try POST again at this time.
    renew_at: Option<Instant>,
    key_backoff: Backoff,
    /// Reason for the next fresh connection when it is not the first one.
    next_fresh_reason: ConnectReason,
}

impl UserSupervisor {
    fn new(
        settings: StreamSettings,
        rest: RestClient,
        tx: mpsc::Sender<StreamEvent>,
        cancel: CancellationToken,
    ) -> Self {
        let (news_tx, news_rx) = mpsc::unbounded_channel();
        let transport = match &settings.ws_api_url {
            Some(url) => Transport::WsApi { url: url.clone() },
            None => Transport::ListenKey { key: None },
        };
        let backoff = Backoff::new(
            settings.reconnect_min_backoff,
            settings.reconnect_max_backoff,
        );
        Self {
            key_backoff: backoff.clone(),
            backoff,
            settings,
            rest,
            tx,
            cancel,
            transport,
            // A user stream carries few events: remember plenty.
            dedup: Arc::new(Mutex::new(RecentFrames::new(4096))),
            news_tx,
            news_rx,
            slots: Slots::default(),
            conns: HashMap::new(),
            next_id: 1,
            reconnect_at: Some(Instant::now()),
            replacement_at: None,
            retire: Vec::new(),
            keepalive_at: None,
            renew_at: None,
            next_fresh_reason: ConnectReason::Error,
        }
    }

    async fn emit(&self, ev: StreamEvent) {
        let _ = self.tx.send(ev).await;
    }

    fn ws_api_auth(&self) -> Result<WsApiAuth, String> {
        let api_key = self
            .rest
            .api_key()
            .ok_or("the WebSocket API user stream needs an API key")?
            .to_owned();
        let signer = self
            .rest
            .signer()
            .ok_or("the WebSocket API user stream needs an API secret or Ed25519 key")?
            .clone();
        let rest = self.rest.clone();
        Ok(WsApiAuth {
            api_key,
            signer,
            now_ms: Arc::new(move || rest.server_time_ms()),
        })
    }

    /// Opens a connection; false if there is nothing to connect to yet (no key).
    async fn open(&mut self, reason: ConnectReason) -> bool {
        let (url, ws_api) = match &self.transport {
            Transport::ListenKey { key: Some(key) } => (
                format!(
                    "{}/ws/{key}",
                    self.settings.stream_url.trim_end_matches('/')
                ),
                None,
            ),
            Transport::ListenKey { key: None } => return false,
            Transport::WsApi { url } => match self.ws_api_auth() {
                Ok(auth) => (url.clone(), Some(Box::new(auth))),
                Err(e) => {
                    tracing::error!("{e}");
                    self.emit(StreamEvent::Disconnected {
                        stream: StreamKind::User,
                        reason: e,
                    })
                    .await;
                    return false;
                }
            },
        };
        let id = self.next_id;
        self.next_id += 1;
        let handle = spawn_connection(
            ConnSpec {
                id,
                url,
                idle_timeout: self.settings.idle_timeout,
                ping_interval: self.settings.ping_interval(),
                decoder: Decoder::User {
                    dedup: self.dedup.clone(),
                    ws_api,
                },
                tx: self.tx.clone(),
                news: self.news_tx.clone(),
                tls: self.settings.tls.clone(),
            },
            &self.cancel,
        );
        self.slots.opening(id, reason);
        self.conns.insert(id, handle);
        true
    }

    /// POST userDataStream: the active key extended, or a new one. On a new key,
    /// moves the stream to it (a replacement, so the old one keeps delivering until
    /// the new one is live).
    async fn renew_key(&mut self) {
        let Transport::ListenKey { key } = &self.transport else {
            return;
        };
        let old = key.clone();
        match self.rest.create_listen_key().await {
            Ok(new) => {
                self.key_backoff.reset();
                self.renew_at = None;
                let changed = old.as_deref() != Some(new.as_str());
                self.emit(StreamEvent::ListenKeyCreated { changed }).await;
                self.transport = Transport::ListenKey { key: Some(new) };
                self.keepalive_at = Some(Instant::now() + self.settings.keepalive_interval);
                if changed && old.is_some() {
                    tracing::info!("listen key changed: moving the user stream to the new key");
                    self.next_fresh_reason = ConnectReason::Expired;
                    if self.slots.current().is_some() && self.slots.pending().is_none() {
                        self.open(ConnectReason::Expired).await;
                    } else if let Some(p) = self.slots.pending() {
                        // A connection to the old key is still opening: replace it.
                        if let Some(h) = self.conns.remove(&p) {
                            h.cancel.cancel();
                        }
                    }
                }
                // Nothing live: connect to a new key at once; with the same key keep
                // the backoff already scheduled (never a tight reconnect loop).
                if self.slots.current().is_none()
                    && self.slots.pending().is_none()
                    && (changed || self.reconnect_at.is_none())
                {
                    self.reconnect_at = Some(Instant::now());
                }
            }
            Err(e) => {
                let wait = match &e {
                    RestError::RateLimited { retry_after }
                    | RestError::IpBanned { retry_after } => *retry_after,
                    RestError::Throttled { wait } => *wait,
                    _ => self
                        .key_backoff
                        .next_delay()
                        .max(Duration::from_millis(100)),
                };
                tracing::error!(error = %e, retry_in = ?wait, "could not obtain a listen key");
                if matches!(e, RestError::ListenKeyRetired) {
                    self.emit(StreamEvent::Disconnected {
                        stream: StreamKind::User,
                        reason: e.to_string(),
                    })
                    .await;
                }
                self.renew_at = Some(Instant::now() + wait);
            }
        }
    }

    async fn keepalive(&mut self) {
        let Transport::ListenKey { key: Some(key) } = &self.transport else {
            return;
        };
        let key = key.clone();
        self.keepalive_at = Some(Instant::now() + self.settings.keepalive_interval);
        match self.rest.keepalive_listen_key(&key).await {
            Ok(()) => {
                self.emit(StreamEvent::Keepalive {
                    ok: true,
                    error: None,
                })
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "listen key keepalive failed: requesting a key at once");
                self.emit(StreamEvent::Keepalive {
                    ok: false,
                    error: Some(e.to_string()),
                })
                .await;
                if e.code() == Some(LISTEN_KEY_UNKNOWN) {
                    self.next_fresh_reason = ConnectReason::Expired;
                }
                self.renew_key().await;
            }
        }
    }

    async fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Connected(reason) => {
                    tracing::info!(stream = "user", reason = reason.as_str(), "connected");
                    self.emit(StreamEvent::Connected {
                        stream: StreamKind::User,
                        reason,
                    })
                    .await;
                }
                Action::Disconnected(why) => {
                    log_disconnected(StreamKind::User, &why);
                    self.emit(StreamEvent::Disconnected {
                        stream: StreamKind::User,
                        reason: why,
                    })
                    .await;
                }
                Action::Retire(id) => self
                    .retire
                    .push((Instant::now() + self.settings.overlap_grace(), id)),
                Action::Reconnect => {
                    self.reconnect_at = Some(Instant::now() + self.backoff.next_delay())
                }
                Action::RetryReplacement => {
                    self.replacement_at = Some(Instant::now() + self.backoff.next_delay())
                }
            }
        }
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
            self.keepalive_at,
            self.renew_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.renew_at.is_some_and(|t| t <= now) {
            self.renew_at = None;
            self.renew_key().await;
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.keepalive().await;
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            if self.slots.current().is_none() && self.slots.pending().is_none() {
                let reason = self.slots.fresh_reason(self.next_fresh_reason);
                if !self.open(reason).await {
                    if matches!(self.transport, Transport::ListenKey { key: None })
                        && self.renew_at.is_none()
                    {
                        self.renew_key().await;
                        if matches!(self.transport, Transport::ListenKey { key: Some(_) }) {
                            let reason = self.slots.fresh_reason(self.next_fresh_reason);
                            self.open(reason).await;
                        }
                    } else if matches!(self.transport, Transport::WsApi { .. }) {
                        self.reconnect_at = Some(now + self.backoff.next_delay());
                    }
                }
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
                tracing::info!(stream = "user", "opening replacement connection");
                self.open(ConnectReason::Planned).await;
            }
        }
        let (due, keep): (Vec<_>, Vec<_>) = self.retire.drain(..).partition(|(t, _)| *t <= now);
        self.retire = keep;
        for (_, id) in due {
            if let Some(h) = self.conns.remove(&id) {
                h.cancel.cancel();
            }
        }
    }

    async fn on_news(&mut self, news: ConnNews) {
        match news {
            ConnNews::Live(id) => {
                let actions = self.slots.on_live(id, Instant::now());
                if !actions.is_empty() {
                    self.backoff.reset();
                    self.next_fresh_reason = ConnectReason::Error;
                }
                self.apply(actions).await;
            }
            ConnNews::Closed(id, why) => {
                if why != CLOSED_BY_US {
                    tracing::warn!(stream = "user", conn = id, reason = %why, "connection ended");
                }
                let failed_to_reconnect =
                    self.slots.pending() == Some(id) && self.slots.current().is_none();
                let actions = self.slots.on_closed(id, &why);
                self.conns.remove(&id);
                self.retire.retain(|(_, r)| *r != id);
                self.apply(actions).await;
                // The key may have expired while we were away (the socket is then
                // refused); POST returns it extended, or a new one to connect to.
                if failed_to_reconnect
                    && matches!(self.transport, Transport::ListenKey { key: Some(_) })
                    && self.renew_at.is_none()
                {
                    self.renew_key().await;
                }
            }
            ConnNews::ServerShutdown(id) => {
                if self.slots.current() == Some(id) && self.slots.pending().is_none() {
                    tracing::info!(stream = "user", "serverShutdown: rotating now");
                    self.open(ConnectReason::Planned).await;
                }
            }
            ConnNews::ListenKeyExpired(id, expired_key) => {
                let is_current_key = matches!(
                    &self.transport,
                    Transport::ListenKey { key: Some(k) } if *k == expired_key
                );
                if self.slots.current() == Some(id) && is_current_key {
                    tracing::warn!("listen key expired: obtaining a new one");
                    self.next_fresh_reason = ConnectReason::Expired;
                    // The expired connection delivers nothing more: drop it now so
                    // the stream reconnects with the new key as an expiry.
                    if let Some(h) = self.conns.remove(&id) {
                        h.cancel.cancel();
                    }
                    let actions = self.slots.on_closed(id, "listenKeyExpired");
                    self.apply(actions).await;
                    self.reconnect_at = None;
                    self.renew_key().await;
                }
            }
            ConnNews::SubscriptionEnded(id) => {
                // eventStreamTerminated: this connection delivers no more events.
                if let Some(h) = self.conns.remove(&id) {
                    h.cancel.cancel();
                }
                let actions = self.slots.on_closed(id, "eventStreamTerminated");
                self.apply(actions).await;
            }
        }
    }

    async fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                Some(news) = self.news_rx.recv() => self.on_news(news).await,
                _ = sleep_until(deadline) => self.on_timer().await,
            }
        }
        for (_, h) in self.conns.drain() {
            h.cancel.cancel();
        }
        if let Transport::ListenKey { key: Some(key) } = &self.transport {
            match self.rest.delete_listen_key(key).await {
                Ok(()) => tracing::info!("listen key deleted"),
                Err(e) => tracing::warn!(error = %e, "could not delete the listen key"),
            }
        }
    }
}
