//! `mmd bench`: the daemon, in this process, quoting against the simulator over loopback.
//!
//! Reports tick-to-order (a market frame read off the socket -> the signed order request
//! written to the HTTP connection's socket) as exact samples, CPU % and peak RSS, and the time from
//! start to the first live quote. The simulator runs as a child `mmd sim` process so that
//! /proc/self (CPU, VmHWM) measures the daemon alone, not the exchange generating 2,000
//! tickers a second.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::io::AsyncBufReadExt as _;

use crate::engine::runner::Control;
use crate::metrics::Metrics;
use crate::sim::{AccountConfig, SimConfig, SymbolConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchMode {
    /// The all-market `!ticker@arr` stream (one frame carries every symbol).
    TickerArr,
    /// Per-symbol `bookTicker` streams (one frame per top-of-book change).
    BookTicker,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Markets the daemon quotes.
    #[arg(long, default_value_t = 1)]
    pub markets: usize,
    #[arg(long, value_enum, default_value = "ticker-arr")]
    pub mode: BenchMode,
    /// Symbols listed by the simulator: the size of each `!ticker@arr` frame.
    #[arg(long, default_value_t = 2000)]
    pub symbols: usize,
    /// Measured seconds (after startup and warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Warm-up after the first live quote, excluded from the figures.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Market data interval: the `!ticker@arr` period and the simulator's price tick.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// The strategy's refresh tolerance: 0 requotes on every price change (more samples).
    #[arg(long, default_value_t = 4)]
    pub refresh_bps: u32,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The floor tick-to-request is judged against, instead of the daemon (bookTicker
    /// mode): the same runtime reads the same frames, decodes each with the daemon's
    /// decoder and writes one fixed request to a kept-alive REST connection, timed at the
    /// same two points. No engine, strategy, signing or HTTP library in between.
    #[arg(long)]
    pub floor: bool,
    /// The daemon's `engine.rehearsal_interval` ("0s": no rehearsals), to measure what
    /// they do. Default: the daemon's default.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub rehearsal_interval: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub mode: BenchMode,
    /// `--floor`: no daemon ran; `tick_to_request` is the floor's.
    pub floor: bool,
    pub markets: usize,
    pub symbols: usize,
    pub interval_ms: u64,
    pub measured_s: f64,
    /// A frame read -> the first order request (new or cancel) it caused, written to the
    /// HTTP connection's socket. None when no frame caused a request inside the window.
    pub tick_to_request: Option<LatencySummary>,
    /// A frame read -> the new order it led to (as `mmd_tick_to_order_seconds`): includes
    /// waiting for cancel acknowledgements when a quote is replaced.
    pub tick_to_order: Option<LatencySummary>,
    /// Of one core: 100 = one core busy.
    pub cpu_percent: f64,
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    pub first_live_quote_ms: f64,
    pub cpus: usize,
    pub loadavg: String,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn summarize(mut ns: Vec<u64>) -> Option<LatencySummary> {
    if ns.is_empty() {
        return None;
    }
    ns.sort_unstable();
    let us = |v: u64| v as f64 / 1000.0;
    Some(LatencySummary {
        samples: ns.len(),
        p50_us: us(percentile(&ns, 0.50)),
        p99_us: us(percentile(&ns, 0.99)),
        p999_us: us(percentile(&ns, 0.999)),
        max_us: us(ns[ns.len() - 1]),
    })
}

/// utime + stime of this process, in seconds. /proc counts in USER_HZ, which the kernel
/// ABI fixes at 100 for /proc on every Linux architecture we build for.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("/proc/self/stat")?;
    // The command name may contain spaces; fields resume after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/self/stat: no ')'")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i - 3)
            .context("/proc/self/stat: short")?
            .parse::<u64>()
            .context("/proc/self/stat: not a number")
    };
    Ok((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

/// A `VmHWM:`/`VmRSS:` value of /proc/self/status, in KiB.
fn status_kib(key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("/proc/self/status: no {key}"))
}

fn bench_symbols(markets: usize) -> Vec<SymbolConfig> {
    (0..markets)
        .map(|i| SymbolConfig {
            symbol: format!("M{i:03}USDT"),
            base: format!("M{i:03}"),
            quote: "USDT".into(),
            ..SymbolConfig::btcusdt()
        })
        .collect()
}

fn sim_config(args: &BenchArgs, api_key: &str) -> SimConfig {
    let symbols = bench_symbols(args.markets);
    let mut balances: std::collections::BTreeMap<String, Decimal> = symbols
        .iter()
        .map(|s| (s.base.clone(), Decimal::from(1_000)))
        .collect();
    balances.insert("USDT".into(), Decimal::from(1_000_000_000u64));
    let mut cfg = SimConfig {
        seed: 7,
        extra_symbols: args.symbols.saturating_sub(symbols.len()),
        symbols,
        ticker_interval: args.interval,
        accounts: vec![AccountConfig {
            api_key: api_key.into(),
            // The secret goes through the environment: the file must not hold it.
            api_secret: String::new(),
            balances,
        }],
        ..SimConfig::default()
    };
    cfg.market.tick_interval = args.interval;
    // The daemon's own budget follows exchangeInfo: lift it so throttling is not measured.
    cfg.rate_limits.weight_per_minute = 10_000_000;
    cfg.rate_limits.orders_per_10s = 10_000_000;
    cfg.rate_limits.orders_per_day = u32::MAX;
    cfg
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| path.display().to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn daemon_config(args: &BenchArgs, dir: &Path, rest_url: &str, stream_url: &str) -> String {
    let market = match args.mode {
        BenchMode::TickerArr => "!ticker@arr",
        BenchMode::BookTicker => "bookTicker",
    };
    format!(
        r#"[exchange]
venue = "binance"
rest_url = "{rest_url}"
stream_url = "{stream_url}"
api_key = {{ file = "{dir}/api_key" }}
api_secret = {{ file = "{dir}/api_secret" }}
client_order_prefix = "mmdb"

[streams]
market = "{market}"
stale_after = "30s"

[markets]
dir = "markets"

[log]
format = "json"
level = "warn"

[storage]
path = "mmd.sqlite"
{engine}"#,
        dir = dir.display(),
        engine = args
            .rehearsal_interval
            .map(|d| format!(
                "\n[engine]\nrehearsal_interval = \"{}\"\n",
                humantime::format_duration(d)
            ))
            .unwrap_or_default()
    )
}

fn market_file(symbol: &str, refresh_bps: u32) -> String {
    format!(
        "symbol = \"{symbol}\"\n[strategy]\nname = \"spread\"\nbid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.001\"\nrefresh_tolerance_bps = {refresh_bps}\n[risk]\nmax_base_position = \"100\"\n"
    )
}

fn random_token(n: usize) -> String {
    use rand::RngExt;
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `mmd sim` (this executable) and waits for its "listening" line.
async fn start_sim(
    args: &BenchArgs,
    dir: &Path,
    api_key: &str,
    secret: &str,
) -> anyhow::Result<(tokio::process::Child, String, String)> {
    let cfg = sim_config(args, api_key);
    let path = dir.join("sim.toml");
    std::fs::write(&path, toml::to_string(&cfg).context("sim config")?)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("sim")
        .arg("--listen")
        .arg(port.to_string())
        .arg("--config")
        .arg(&path)
        .arg("--api-key")
        .arg(api_key)
        .env("MMD_SIM_API_SECRET", secret)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the simulator (mmd sim)")?;
    let stdout = child.stdout.take().context("sim stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("the simulator did not start within 30 s")??
        .context("the simulator exited before listening")?;
    if !line.starts_with("mmd sim listening") {
        anyhow::bail!("unexpected simulator output: {line}");
    }
    // Keep draining, so a full pipe can never stall the simulator.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let rest = format!("http://{port}");
    let stream = format!("ws://{port}");
    Ok((child, rest, stream))
}

/// Runs one measurement; the caller owns the runtime (the one `mmd run` uses).
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    if args.markets == 0 || args.markets > 999 {
        anyhow::bail!("--markets: 1 to 999");
    }
    if args.seconds == 0 {
        anyhow::bail!("--seconds: at least 1");
    }
    let dir = std::env::temp_dir().join(format!(
        "mmd-bench-{}-{}",
        std::process::id(),
        random_token(8)
    ));
    std::fs::create_dir_all(dir.join("markets"))?;
    let scratch = Scratch(dir.clone());
    let api_key = random_token(32);
    let secret = random_token(48);
    if args.floor && (args.mode != BenchMode::BookTicker || args.markets != 1) {
        anyhow::bail!("--floor: with --mode book-ticker and --markets 1 only");
    }
    let (mut sim, rest_url, stream_url) = start_sim(&args, &dir, &api_key, &secret).await?;
    if args.floor {
        let report = floor(&args, &rest_url, &stream_url).await;
        let _ = sim.start_kill();
        let _ = sim.wait().await;
        drop(scratch);
        return report;
    }

    write_private(&dir.join("api_key"), &api_key)?;
    write_private(&dir.join("api_secret"), &secret)?;
    for s in bench_symbols(args.markets) {
        std::fs::write(
            dir.join("markets").join(format!("{}.toml", s.symbol)),
            market_file(&s.symbol, args.refresh_bps),
        )?;
    }
    let cfg_path = dir.join("mmd.toml");
    std::fs::write(
        &cfg_path,
        daemon_config(&args, &dir, &rest_url, &stream_url),
    )?;
    let cfg = crate::config::Config::load(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;

    let metrics = Metrics::new();
    metrics.enable_probe();
    let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let daemon = tokio::spawn(crate::engine::runner::run(cfg, control_rx, metrics.clone()));

    let first_live = loop {
        if let Some(t) = metrics.probe().and_then(|p| p.first_order_live) {
            break t;
        }
        if daemon.is_finished() || started.elapsed() > Duration::from_secs(60) {
            let _ = control.send(Control::Stop);
            let outcome = daemon.await;
            anyhow::bail!("no quote went live within 60 s (daemon: {outcome:?})");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    tokio::time::sleep(args.warmup).await;

    let before = metrics.probe().unwrap_or_default();
    let cpu0 = cpu_seconds()?;
    let wall0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu1 = cpu_seconds()?;
    let wall = wall0.elapsed().as_secs_f64();
    let after = metrics.probe().unwrap_or_default();
    // RSS before the high-water mark: VmHWM is max(recorded peak, current RSS) when read.
    let rss_kib = status_kib("VmRSS:")?;
    let peak_rss_kib = status_kib("VmHWM:")?;
    let window = |all: &[u64], skip: usize| all[skip.min(all.len())..].to_vec();
    let report = BenchReport {
        mode: args.mode,
        floor: false,
        markets: args.markets,
        symbols: args.symbols.max(args.markets),
        interval_ms: args.interval.as_millis() as u64,
        measured_s: wall,
        tick_to_request: summarize(window(
            &after.tick_to_request_ns,
            before.tick_to_request_ns.len(),
        )),
        tick_to_order: summarize(window(
            &after.tick_to_order_ns,
            before.tick_to_order_ns.len(),
        )),
        cpu_percent: (cpu1 - cpu0) / wall * 100.0,
        peak_rss_kib,
        rss_kib,
        first_live_quote_ms: first_live.duration_since(started).as_secs_f64() * 1000.0,
        cpus: cpus(),
        loadavg: loadavg(),
    };

    let _ = control.send(Control::Stop);
    match tokio::time::timeout(Duration::from_secs(15), daemon).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %format!("{e:#}"), "daemon ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "daemon task failed"),
        Err(_) => tracing::warn!("daemon did not stop within 15 s"),
    }
    let _ = sim.start_kill();
    let _ = sim.wait().await;
    drop(scratch);
    Ok(report)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `--floor`: see [`BenchArgs::floor`]. The request is the server time (answered, and the
/// connection kept alive); the answers are read and dropped by a task of their own, as the
/// daemon's are.
async fn floor(args: &BenchArgs, rest_url: &str, stream_url: &str) -> anyhow::Result<BenchReport> {
    use futures_util::StreamExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let symbol = bench_symbols(1).remove(0).symbol;
    let wanted = crate::binance::decode::SymbolSet::new([symbol.as_str()]);
    let url = format!("{stream_url}/ws/{}@bookTicker", symbol.to_lowercase());
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        &url,
        Some(crate::binance::stream::ws_config(&url)),
        true,
    )
    .await
    .context("floor: market stream")?;
    let host = rest_url.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(host)
        .await
        .context("floor: REST connection")?;
    tcp.set_nodelay(true)?;
    let (mut answers, mut requests) = tcp.into_split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while matches!(answers.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let request = format!("GET /api/v3/time HTTP/1.1\r\nhost: {host}\r\naccept: */*\r\n\r\n");
    let mut events = Vec::new();
    let mut samples = Vec::new();
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut cpu0 = None;
    loop {
        let next = tokio::time::timeout_at(end.into(), ws.next()).await;
        let received = Instant::now();
        let text = match next {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e).context("floor: market stream"),
            Ok(None) => anyhow::bail!("floor: the market stream ended"),
        };
        events.clear();
        crate::binance::decode::decode_market_frame(text.as_str(), &wanted, &mut events)
            .map_err(|e| anyhow::anyhow!("floor: {e}"))?;
        if events.is_empty() {
            continue;
        }
        let handed = Instant::now();
        requests.write_all(request.as_bytes()).await?;
        if received >= measure_from {
            if cpu0.is_none() {
                cpu0 = Some((cpu_seconds()?, received));
            }
            samples.push(handed.duration_since(received).as_nanos() as u64);
        }
    }
    let (cpu0, wall0) = cpu0.context("floor: no frame in the measured window")?;
    let cpu1 = cpu_seconds()?;
    let wall = wall0.elapsed().as_secs_f64();
    Ok(BenchReport {
        mode: args.mode,
        floor: true,
        markets: 1,
        symbols: args.symbols.max(1),
        interval_ms: args.interval.as_millis() as u64,
        measured_s: wall,
        tick_to_request: summarize(samples),
        tick_to_order: None,
        cpu_percent: (cpu1 - cpu0) / wall * 100.0,
        peak_rss_kib: status_kib("VmHWM:")?,
        rss_kib: status_kib("VmRSS:")?,
        first_live_quote_ms: 0.0,
        cpus: cpus(),
        loadavg: loadavg(),
    })
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            BenchMode::TickerArr => "!ticker@arr",
            BenchMode::BookTicker => "bookTicker",
        };
        writeln!(
            f,
            "mode {mode}, {} symbols listed, {} markets quoted, interval {} ms, measured {:.1} s",
            self.symbols, self.markets, self.interval_ms, self.measured_s
        )?;
        let lines: &[(&str, &Option<LatencySummary>)] = if self.floor {
            &[(
                "floor, no daemon (frame read, decoded, one fixed request handed to the write)",
                &self.tick_to_request,
            )]
        } else {
            &[
                (
                    "tick-to-request (first new/cancel request)",
                    &self.tick_to_request,
                ),
                (
                    "tick-to-order (new order, after any cancel ack)",
                    &self.tick_to_order,
                ),
            ]
        };
        for &(name, l) in lines {
            match l {
                Some(l) => writeln!(
                    f,
                    "{name}, {} samples: p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
                    l.samples, l.p50_us, l.p99_us, l.p999_us, l.max_us
                )?,
                None => writeln!(f, "{name}: no samples in the window")?,
            }
        }
        writeln!(
            f,
            "CPU {:.2} % of one core; peak RSS {:.1} MiB (now {:.1} MiB)",
            self.cpu_percent,
            self.peak_rss_kib as f64 / 1024.0,
            self.rss_kib as f64 / 1024.0
        )?;
        if !self.floor {
            writeln!(
                f,
                "start to first live quote {:.1} ms",
                self.first_live_quote_ms
            )?;
        }
        write!(
            f,
            "machine: {} CPUs, load average {}",
            self.cpus, self.loadavg
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = summarize((1..=1000).map(|v| v * 1000).collect()).unwrap();
        assert_eq!(s.samples, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
        assert!(summarize(Vec::new()).is_none());
        let one = summarize(vec![7000]).unwrap();
        assert_eq!((one.p50_us, one.p999_us, one.max_us), (7.0, 7.0, 7.0));
    }
}
