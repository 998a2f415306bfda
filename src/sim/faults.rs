//! Fault injection: everything Binance does to a client on a bad day, switchable at run
//! time through `POST /sim/admin/faults` (JSON) or in-process through [`FaultControl`],
//! and from the config (`[[faults]]`, applied at start).

use super::exchange::{ConnCtl, ConnKind};
use super::stats::StatsCounters;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Which connections a stream fault targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamTarget {
    Market,
    User,
    WsApi,
    All,
}

impl StreamTarget {
    fn matches(self, kind: &ConnKind) -> bool {
        matches!(
            (self, kind),
            (StreamTarget::All, _)
                | (StreamTarget::Market, ConnKind::Market)
                | (StreamTarget::User, ConnKind::User { .. })
                | (StreamTarget::WsApi, ConnKind::WsApi)
        )
    }
}

/// A deliberately broken frame for decoder tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Not JSON at all.
    Malformed,
    /// A valid event cut in half.
    Truncated,
    /// A binary WebSocket frame.
    Binary,
    /// A text frame far larger than any real event (2 MiB).
    Oversized,
    /// Well-formed JSON with an event type nobody knows.
    UnknownEvent,
}

impl FrameKind {
    pub fn text(self, now_ms: u64) -> Option<String> {
        match self {
            FrameKind::Malformed => Some("{not json at all".to_string()),
            FrameKind::Truncated => Some(format!(
                "{{\"e\":\"executionReport\",\"E\":{now_ms},\"s\":\"BTCUSDT\",\"c\":\"abc"
            )),
            FrameKind::Binary => None,
            FrameKind::Oversized => {
                let pad = "x".repeat(2 * 1024 * 1024);
                Some(format!(
                    "{{\"e\":\"oversized\",\"E\":{now_ms},\"pad\":\"{pad}\"}}"
                ))
            }
            FrameKind::UnknownEvent => Some(format!(
                "{{\"e\":\"someFutureEvent\",\"E\":{now_ms},\"x\":1}}"
            )),
        }
    }
}

/// One fault command, the body of `POST /sim/admin/faults` and an entry of `[[faults]]`.
/// `count: None` means "until cleared".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultCommand {
    /// TCP abort (no close frame) of every connection of the target.
    DropConnections {
        target: StreamTarget,
    },
    /// `serverShutdown` event, then close.
    ServerShutdown {
        target: StreamTarget,
    },
    /// Expire listen keys now (one key, one account's, or all): `listenKeyExpired` + close.
    ExpireListenKey {
        #[serde(default)]
        listen_key: Option<String>,
        #[serde(default)]
        api_key: Option<String>,
    },
    /// The exchange forgets listen keys silently (no event, streams stay open), as when
    /// a key lapsed unnoticed: the next keepalive answers -1125.
    ForgetListenKeys {
        #[serde(default)]
        api_key: Option<String>,
    },
    DuplicateUserEvents {
        #[serde(default)]
        count: Option<u32>,
    },
    /// Swap each pair of consecutive user events.
    ReorderUserEvents {
        #[serde(default)]
        count: Option<u32>,
    },
    DelayUserEvents {
        delay_ms: u64,
        #[serde(default)]
        count: Option<u32>,
    },
    /// The next `count` REST calls whose path starts with `path` (and method, if given)
    /// answer `status`; with `after_apply` the request is executed first ("may or may not exist").
    FailRest {
        path: String,
        #[serde(default)]
        method: Option<String>,
        count: u32,
        #[serde(default = "default_5xx")]
        status: u16,
        #[serde(default)]
        after_apply: bool,
    },
    /// The next `count` REST calls on `path` hang for `hang_ms` (past the client's timeout).
    HangRest {
        path: String,
        #[serde(default)]
        method: Option<String>,
        count: u32,
        hang_ms: u64,
        #[serde(default)]
        after_apply: bool,
    },
    /// Every REST call answers 429 (Retry-After) for `duration_ms`; clients that keep
    /// sending get 418.
    RateLimit {
        duration_ms: u64,
    },
    ClockSkew {
        skew_ms: i64,
    },
    InjectFrame {
        target: StreamTarget,
        frame: FrameKind,
        #[serde(default = "one")]
        count: u32,
    },
    /// Orders and listen keys forgotten, locks released, connections dropped.
    Restart,
    /// Switch off every standing fault.
    Clear,
}

fn default_5xx() -> u16 {
    503
}
fn one() -> u32 {
    1
}

#[derive(Debug, Clone)]
pub(crate) enum RestAction {
    Fail { status: u16 },
    Hang { duration: Duration },
}

#[derive(Debug, Clone)]
struct RestFault {
    path: String,
    method: Option<String>,
    remaining: u32,
    action: RestAction,
    after_apply: bool,
}

#[derive(Debug, Default)]
struct State {
    duplicate: Option<u32>,
    reorder: Option<u32>,
    delay: Option<(Duration, Option<u32>)>,
    rest: Vec<RestFault>,
    rate_limited_until: Option<Instant>,
}

/// What to do with the next user event on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserEventPlan {
    pub duplicate: bool,
    pub reorder: bool,
    pub delay: Option<Duration>,
}

/// A REST fault that matched a request.
#[derive(Debug, Clone)]
pub(crate) struct RestFaultHit {
    pub action: RestAction,
    pub after_apply: bool,
}

fn take(counter: &mut Option<u32>) -> bool {
    match counter {
        None => false,
        Some(0) => {
            *counter = None;
            false
        }
        Some(n) => {
            if *n != u32::MAX {
                *n -= 1;
            }
            true
        }
    }
}

/// Runtime fault switchboard; `SimHandle::faults()` and the admin endpoint share it.
pub struct FaultControl {
    state: Mutex<State>,
    shared: Mutex<Weak<super::Shared>>,
    stats: Arc<StatsCounters>,
}

impl FaultControl {
    pub(crate) fn new(stats: Arc<StatsCounters>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            shared: Mutex::new(Weak::new()),
            stats,
        }
    }

    pub(crate) fn attach(&self, shared: &Arc<super::Shared>) {
        *self.shared.lock() = Arc::downgrade(shared);
    }

    fn shared(&self) -> anyhow::Result<Arc<super::Shared>> {
        self.shared
            .lock()
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("simulator is shut down"))
    }

    /// Applies one command. Errors only for a simulator that is gone or an unknown key.
    pub fn apply(&self, cmd: FaultCommand) -> anyhow::Result<()> {
        StatsCounters::inc(&self.stats.faults_injected);
        tracing::info!(?cmd, "sim fault injected");
        match cmd {
            FaultCommand::DropConnections { target } => {
                let sh = self.shared()?;
                sh.exchange
                    .lock()
                    .signal_conns(|k| target.matches(k), ConnCtl::Abort);
            }
            FaultCommand::ServerShutdown { target } => {
                let sh = self.shared()?;
                sh.exchange
                    .lock()
                    .signal_conns(|k| target.matches(k), ConnCtl::ServerShutdown);
            }
            FaultCommand::ExpireListenKey {
                listen_key,
                api_key,
            } => {
                let sh = self.shared()?;
                let mut ex = sh.exchange.lock();
                let account = match &api_key {
                    Some(k) => Some(
                        ex.account_of(k)
                            .ok_or_else(|| anyhow::anyhow!("unknown api_key"))?,
                    ),
                    None => None,
                };
                ex.expire_listen_keys(|key, acct| {
                    listen_key.as_deref().is_none_or(|l| l == key)
                        && account.is_none_or(|a| a == acct)
                });
            }
            FaultCommand::ForgetListenKeys { api_key } => {
                let sh = self.shared()?;
                let mut ex = sh.exchange.lock();
                let account = match &api_key {
                    Some(k) => Some(
                        ex.account_of(k)
                            .ok_or_else(|| anyhow::anyhow!("unknown api_key"))?,
                    ),
                    None => None,
                };
                ex.forget_listen_keys(|acct| account.is_none_or(|a| a == acct));
            }
            FaultCommand::DuplicateUserEvents { count } => {
                self.state.lock().duplicate = Some(count.unwrap_or(u32::MAX));
            }
            FaultCommand::ReorderUserEvents { count } => {
                self.state.lock().reorder = Some(count.unwrap_or(u32::MAX));
            }
            FaultCommand::DelayUserEvents { delay_ms, count } => {
                self.state.lock().delay = Some((
                    Duration::from_millis(delay_ms),
                    Some(count.unwrap_or(u32::MAX)),
                ));
            }
            FaultCommand::FailRest {
                path,
                method,
                count,
                status,
                after_apply,
            } => self.state.lock().rest.push(RestFault {
                path,
                method,
                remaining: count,
                action: RestAction::Fail { status },
                after_apply,
            }),
            FaultCommand::HangRest {
                path,
                method,
                count,
                hang_ms,
                after_apply,
            } => self.state.lock().rest.push(RestFault {
                path,
                method,
                remaining: count,
                action: RestAction::Hang {
                    duration: Duration::from_millis(hang_ms),
                },
                after_apply,
            }),
            FaultCommand::RateLimit { duration_ms } => {
                self.state.lock().rate_limited_until =
                    Some(Instant::now() + Duration::from_millis(duration_ms));
            }
            FaultCommand::ClockSkew { skew_ms } => {
                self.shared()?.clock.set_skew_ms(skew_ms);
            }
            FaultCommand::InjectFrame {
                target,
                frame,
                count,
            } => {
                let sh = self.shared()?;
                let ex = sh.exchange.lock();
                for _ in 0..count {
                    ex.signal_conns(|k| target.matches(k), ConnCtl::Inject(frame));
                }
            }
            FaultCommand::Restart => {
                self.shared()?.exchange.lock().restart();
            }
            FaultCommand::Clear => {
                *self.state.lock() = State::default();
                if let Ok(sh) = self.shared() {
                    sh.clock.set_skew_ms(0);
                }
            }
        }
        Ok(())
    }

    // Convenience wrappers for tests.
    pub fn drop_connections(&self, target: StreamTarget) -> anyhow::Result<()> {
        self.apply(FaultCommand::DropConnections { target })
    }
    pub fn server_shutdown(&self, target: StreamTarget) -> anyhow::Result<()> {
        self.apply(FaultCommand::ServerShutdown { target })
    }
    pub fn expire_listen_keys(&self, api_key: Option<&str>) -> anyhow::Result<()> {
        self.apply(FaultCommand::ExpireListenKey {
            listen_key: None,
            api_key: api_key.map(str::to_string),
        })
    }
    pub fn forget_listen_keys(&self, api_key: Option<&str>) -> anyhow::Result<()> {
        self.apply(FaultCommand::ForgetListenKeys {
            api_key: api_key.map(str::to_string),
        })
    }
    pub fn duplicate_user_events(&self, count: Option<u32>) -> anyhow::Result<()> {
        self.apply(FaultCommand::DuplicateUserEvents { count })
    }
    pub fn reorder_user_events(&self, count: Option<u32>) -> anyhow::Result<()> {
        self.apply(FaultCommand::ReorderUserEvents { count })
    }
    pub fn delay_user_events(&self, delay: Duration, count: Option<u32>) -> anyhow::Result<()> {
        self.apply(FaultCommand::DelayUserEvents {
            delay_ms: delay.as_millis() as u64,
            count,
        })
    }
    pub fn fail_rest(
        &self,
        path: &str,
        method: Option<&str>,
        count: u32,
        status: u16,
        after_apply: bool,
    ) -> anyhow::Result<()> {
        self.apply(FaultCommand::FailRest {
            path: path.to_string(),
            method: method.map(str::to_string),
            count,
            status,
            after_apply,
        })
    }
    pub fn hang_rest(
        &self,
        path: &str,
        method: Option<&str>,
        count: u32,
        hang: Duration,
        after_apply: bool,
    ) -> anyhow::Result<()> {
        self.apply(FaultCommand::HangRest {
            path: path.to_string(),
            method: method.map(str::to_string),
            count,
            hang_ms: hang.as_millis() as u64,
            after_apply,
        })
    }
    pub fn rate_limit(&self, duration: Duration) -> anyhow::Result<()> {
        self.apply(FaultCommand::RateLimit {
            duration_ms: duration.as_millis() as u64,
        })
    }
    pub fn clock_skew(&self, skew_ms: i64) -> anyhow::Result<()> {
        self.apply(FaultCommand::ClockSkew { skew_ms })
    }
    pub fn inject_frame(&self, target: StreamTarget, frame: FrameKind) -> anyhow::Result<()> {
        self.apply(FaultCommand::InjectFrame {
            target,
            frame,
            count: 1,
        })
    }
    pub fn restart_exchange(&self) -> anyhow::Result<()> {
        self.apply(FaultCommand::Restart)
    }
    pub fn clear(&self) -> anyhow::Result<()> {
        self.apply(FaultCommand::Clear)
    }

    // Hooks for the server.
    pub fn user_event_plan(&self) -> UserEventPlan {
        let mut s = self.state.lock();
        let duplicate = take(&mut s.duplicate);
        let reorder = take(&mut s.reorder);
        let delay = match &mut s.delay {
            Some((d, count)) => {
                let d = *d;
                if take(count) {
                    Some(d)
                } else {
                    s.delay = None;
                    None
                }
            }
            None => None,
        };
        UserEventPlan {
            duplicate,
            reorder,
            delay,
        }
    }

    pub(crate) fn rest_fault(&self, method: &str, path: &str) -> Option<RestFaultHit> {
        let mut s = self.state.lock();
        let pos = s.rest.iter().position(|f| {
            f.remaining > 0
                && path.starts_with(&f.path)
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let f = &mut s.rest[pos];
        f.remaining -= 1;
        let hit = RestFaultHit {
            action: f.action.clone(),
            after_apply: f.after_apply,
        };
        if f.remaining == 0 {
            s.rest.remove(pos);
        }
        Some(hit)
    }

    /// Until when a forced rate limit is active.
    pub(crate) fn forced_rate_limit(&self) -> Option<Instant> {
        let mut s = self.state.lock();
        match s.rate_limited_until {
            Some(t) if t > Instant::now() => Some(t),
            Some(_) => {
                s.rate_limited_until = None;
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_from_json_and_toml() {
        let c: FaultCommand = serde_json::from_str(
            r#"{"kind":"fail_rest","path":"/api/v3/order","count":2,"after_apply":true}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            FaultCommand::FailRest {
                path: "/api/v3/order".into(),
                method: None,
                count: 2,
                status: 503,
                after_apply: true
            }
        );
        let c: FaultCommand = toml::from_str("kind = \"duplicate_user_events\"").unwrap();
        assert_eq!(c, FaultCommand::DuplicateUserEvents { count: None });
        assert!(serde_json::from_str::<FaultCommand>(r#"{"kind":"nope"}"#).is_err());
    }

    #[test]
    fn counted_faults_run_out() {
        let f = FaultControl::new(Arc::new(StatsCounters::default()));
        f.apply(FaultCommand::DuplicateUserEvents { count: Some(2) })
            .unwrap();
        assert!(f.user_event_plan().duplicate);
        assert!(f.user_event_plan().duplicate);
        assert!(!f.user_event_plan().duplicate);
        f.fail_rest("/api/v3/order", Some("POST"), 1, 500, false)
            .unwrap();
        assert!(f.rest_fault("GET", "/api/v3/order").is_none());
        assert!(f.rest_fault("POST", "/api/v3/order").is_some());
        assert!(f.rest_fault("POST", "/api/v3/order").is_none());
    }
}
