//! Shared harness for the daemon integration tests: an in-process simulator on loopback
//! and the real `mmd` binary pointed at it with short timings.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mmd::sim::{AccountConfig, SimConfig, SimHandle};
use rust_decimal::Decimal;

pub const API_KEY: &str = "testkeyAbCdEf0123456789testkeyAbCdEf";
pub const API_SECRET: &str = "testsecretQwErTy9876543210testsecretQwErTy";

pub fn market_file(symbol: &str, qty: &str) -> String {
    market_file_with(symbol, qty, "bid_spread_bps = 8\nask_spread_bps = 8\n")
}

/// A spread market with the given strategy lines (spreads, levels).
pub fn market_file_with(symbol: &str, qty: &str, strategy: &str) -> String {
    format!(
        "symbol = \"{symbol}\"\n[strategy]\nname = \"spread\"\n{strategy}order_qty = \"{qty}\"\nrefresh_tolerance_bps = 3\n[risk]\nmax_base_position = \"100\"\n"
    )
}

/// Simulator settings with the acceptance timings: key validity 3 s, server cutoff 6 s.
pub fn sim_config() -> SimConfig {
    let mut c = SimConfig {
        seed: 7,
        extra_symbols: 20,
        ticker_interval: Duration::from_millis(200),
        listen_key_validity: Duration::from_secs(3),
        max_connection_age: Duration::from_secs(6),
        ping_interval: Duration::from_secs(1),
        ..SimConfig::default()
    };
    c.market.taker_rate = 6.0;
    c.accounts = vec![AccountConfig {
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        balances: BTreeMap::from([
            ("USDT".to_string(), Decimal::from(1_000_000)),
            ("BTC".to_string(), Decimal::from(10)),
            ("ETH".to_string(), Decimal::from(100)),
        ]),
    }];
    c
}

pub struct Daemon {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub metrics_addr: SocketAddr,
    pub child: Option<Child>,
    pub log_path: PathBuf,
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

impl Daemon {
    /// Starts the simulator and writes the daemon's config (keepalive 1 s, max connection
    /// age 5 s) with the given markets; `extra` is appended to the daemon file.
    pub async fn new(sim: SimConfig, markets: &[(&str, &str)], extra: &str) -> Daemon {
        let sim = mmd::sim::start(sim, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("markets")).unwrap();
        for (symbol, qty) in markets {
            std::fs::write(
                dir.path().join("markets").join(format!("{symbol}.toml")),
                market_file(symbol, qty),
            )
            .unwrap();
        }
        let secret = dir.path().join("api_secret");
        std::fs::write(&secret, API_SECRET).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let metrics_addr = free_port();
        let text = format!(
            r#"[exchange]
venue = "binance"
rest_url = "{rest}"
stream_url = "{stream}"
api_key = {{ env = "MMD_TEST_API_KEY" }}
api_secret = {{ file = "{secret}" }}
request_timeout = "2s"
client_order_prefix = "mmdt"

[streams]
market = "!ticker@arr"
keepalive_interval = "1s"
max_connection_age = "5s"
reconnect_min_backoff = "50ms"
reconnect_max_backoff = "500ms"
stale_after = "5s"
idle_timeout = "4s"

[markets]
dir = "markets"

[log]
format = "json"
level = "info"

[metrics]
listen = "{metrics_addr}"

[storage]
path = "mmd.sqlite"

[engine]
tick_interval = "100ms"
shutdown_timeout = "8s"
status_check_interval = "1s"
{extra}
"#,
            rest = sim.rest_url(),
            stream = sim.stream_url(),
            secret = secret.display(),
        );
        std::fs::write(dir.path().join("mmd.toml"), text).unwrap();
        let log_path = dir.path().join("mmd.log");
        Daemon {
            sim,
            dir,
            metrics_addr,
            child: None,
            log_path,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mmd.toml")
    }

    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// Starts the daemon with extra environment (`MMD__<TABLE>__<KEY>` overrides).
    pub fn spawn_with_env(&mut self, env: &[(&str, String)]) {
        let log = std::fs::File::create(&self.log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mmd"))
            .args(["run", "--config"])
            .arg(self.config_path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("MMD_TEST_API_KEY", API_KEY)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mmd");
        self.child = Some(child);
    }

    /// Starts the daemon again on the same config, appending to the same log (a restart
    /// after `kill9`, so one log holds both runs).
    pub fn spawn_appending(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mmd"))
            .args(["run", "--config"])
            .arg(self.config_path())
            .env("MMD_TEST_API_KEY", API_KEY)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mmd");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown path runs, orders stay at the exchange.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the daemon process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Like `wait_for`, but reports a timeout as `false` instead of panicking, for
    /// scenario runners that count failures rather than stop at the first.
    pub async fn poll_until<F, Fut>(&self, timeout: Duration, mut cond: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if cond().await {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through the libc-less std is not available; use the command.
        let name = match sig {
            15 => "TERM",
            2 => "INT",
            1 => "HUP",
            _ => "TERM",
        };
        let _ = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status();
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every JSON log line with `event == name`.
    pub fn log_events(&self, name: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("event").and_then(|e| e.as_str()) == Some(name))
            .collect()
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics_addr);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of one series (`name{labels}` exactly as rendered), or the sum of every
    /// series of `name` when `labels` is None.
    pub async fn metric(&self, name: &str, labels: Option<&str>) -> f64 {
        let text = self.metrics().await;
        metric_in(&text, name, labels)
    }

    pub async fn wait_for<F, Fut>(&self, what: &str, timeout: Duration, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.wait_until_none(what, timeout, || {
            let met = cond();
            async move { (!met.await).then(String::new) }
        })
        .await
    }

    /// As [`Self::wait_for`], for a condition that says what is still wrong (`Some`):
    /// the last such answer goes in the timeout's panic.
    pub async fn wait_until_none<F, Fut>(&self, what: &str, timeout: Duration, mut wrong: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<String>>,
    {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            match wrong().await {
                None => return,
                Some(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{last}\n--- daemon log (tail) ---\n{}",
            tail(&self.log(), 40)
        );
    }

    /// Our open orders at the exchange.
    pub fn open_orders(&self) -> Vec<mmd::sim::OrderRecord> {
        self.sim.open_orders(API_KEY)
    }

    /// Balances the daemon reports in `mmd_balance`, as exact decimal strings.
    pub async fn reported_balances(&self) -> BTreeMap<String, (Decimal, Decimal)> {
        let text = self.metrics().await;
        let mut out: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("mmd_balance{")) {
            let (labels, value) = line.split_once("} ").unwrap();
            let asset = labels
                .split("asset=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let state = labels
                .split("state=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let v: Decimal = value.trim().parse().unwrap();
            let e = out.entry(asset.to_owned()).or_default();
            if state == "free" {
                e.0 = v;
            } else {
                e.1 = v;
            }
        }
        out
    }

    pub async fn stop(&mut self) -> ExitStatus {
        self.signal(15);
        let s = self.wait_exit(Duration::from_secs(12)).await;
        s.unwrap_or_else(|| {
            panic!(
                "mmd did not exit within 12 s of SIGTERM\n{}",
                tail(&self.log(), 40)
            )
        })
    }

    /// Asserts the log holds no panic (a panic aborts in release; in tests we look).
    pub fn assert_no_panic(&self) {
        let log = self.log();
        assert!(
            !log.contains("panicked"),
            "daemon panicked:\n{}",
            tail(&log, 60)
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // MMD_TEST_KEEP_LOGS=<dir> keeps each daemon's log for a post-mortem.
        if let Some(dir) = std::env::var_os("MMD_TEST_KEEP_LOGS") {
            let name = format!("mmd-{}.log", self.metrics_addr.port());
            let _ = std::fs::copy(&self.log_path, std::path::Path::new(&dir).join(name));
        }
        if let Some(c) = self.child.as_mut()
            && let Ok(None) = c.try_wait()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn metric_in(text: &str, name: &str, labels: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| match labels {
            Some(lb) => l.starts_with(&format!("{name}{{{lb}}} ")),
            None => l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")),
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The exchange's best bid and ask for `symbol`, read off its `!ticker@arr` stream.
pub async fn touch(sim: &SimHandle, symbol: &str) -> (Decimal, Decimal) {
    use futures_util::StreamExt;
    let url = format!("{}/ws/!ticker@arr", sim.stream_url());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
    let wanted = mmd::binance::decode::SymbolSet::new([symbol]);
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("ticker frame")
            .expect("open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let mut out = Vec::new();
            if mmd::binance::decode::decode_market_frame(&t, &wanted, &mut out).is_ok() {
                for e in out {
                    if let mmd::binance::types::MarketEvent::Ticker(t) = e
                        && t.best_bid > Decimal::ZERO
                        && t.best_ask > t.best_bid
                    {
                        return (t.best_bid, t.best_ask);
                    }
                }
            }
        }
    }
}

impl Daemon {
    /// Freezes the market, lets in-flight events land, then checks the daemon and the
    /// exchange agree exactly: fills counted, and every balance of the traded assets.
    pub async fn assert_agrees_with_exchange(&self, assets: &[&str]) -> usize {
        self.sim.set_market_frozen(true);
        let trades = self.sim.trades(API_KEY).len();
        self.wait_for(
            "fills counted by the daemon == trades at the exchange",
            Duration::from_secs(8),
            || async {
                self.metric("mmd_fills_total", None).await as usize
                    == self.sim.trades(API_KEY).len()
            },
        )
        .await;
        // The daemon may still place or cancel orders on the frozen market (a level a
        // fill took is quoted again at the next ticker), and the exchange locks the
        // balance before its account update reaches the daemon. So a single later read
        // can catch the two a few milliseconds apart; what must hold is that they meet.
        self.wait_until_none(
            "the daemon's balances to meet the exchange's",
            Duration::from_secs(8),
            || async {
                let reported = self.reported_balances().await;
                let exchange = self.sim.balances(API_KEY);
                let differences: Vec<String> = assets
                    .iter()
                    .filter(|a| reported.get(**a) != exchange.get(**a))
                    .map(|a| {
                        format!(
                            "{a}: daemon {:?} vs exchange {:?} (free, locked)",
                            reported.get(*a),
                            exchange.get(*a)
                        )
                    })
                    .collect();
                (!differences.is_empty()).then(|| differences.join("\n"))
            },
        )
        .await;
        trades
    }
}
