//! The `mmd` command line: `run`, `check`, `sim`, `report`, `health`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mmd", version, about = "Market-making daemon for Binance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration (no network) and print what would run.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the embedded exchange simulator standalone.
    Sim(mmd::sim::cli::SimArgs),
    /// PnL, fees, volume and inventory per market, from the ledger.
    Report(mmd::report::ReportArgs),
    /// The configured strategies against the simulator's matching engine, no sockets.
    Backtest(mmd::backtest::BacktestArgs),
    /// Write the configured symbols' market stream as JSON lines (for replay and backtests).
    Record(mmd::record::RecordArgs),
    /// Probe a running daemon's /health (for container health checks): exit 0 when healthy.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:9898/health")]
        url: String,
    },
    /// Measure tick-to-order, CPU, peak RSS and time to first quote against the simulator.
    Bench(mmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    keep_large_buffers_off_the_heap();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Report(args) => match mmd::report::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Health { url } => health(&url),
        Command::Backtest(args) => match mmd::backtest::cli(&args) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Record(args) => {
            mmd::logging::init(mmd::config::LogFormat::Pretty, "info");
            let rt = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(mmd::record::run(args)) {
                Ok(n) => {
                    eprintln!("{n} events recorded");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config } => run(&config),
        Command::Bench(args) => bench(args),
        Command::Sim(args) => {
            mmd::logging::init(mmd::config::LogFormat::Pretty, "info");
            let rt = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(mmd::sim::cli::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// An all-market `!ticker@arr` frame is ~0.8 MB. glibc serves allocations that size with
/// mmap only until the first one is freed; then it raises its mmap threshold (up to 32 MiB)
/// and serves them from the heap arenas, which one such frame a second fragments: in the
/// 1-hour soak RSS wandered between 26 and 35 MiB. Setting the threshold (which also turns
/// off its dynamic adjustment, mallopt(3)) keeps big buffers on mmap, handed back to the
/// kernel on free: 18-19 MiB in the same soak. The cost, page faults on a fresh 0.8 MB
/// mapping once a second, is tens of microseconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_buffers_off_the_heap() {
    // SAFETY: mallopt only tunes the allocator; it runs first thing in main, before any
    // other thread exists. A refusal (return 0) leaves glibc's defaults, which still work.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers_off_the_heap() {}

/// The runtime of `mmd run`, and of `mmd bench`, which must measure what `run` runs.
///
/// One thread: a market frame, the engine's reaction and the order requests it causes
/// form one chain of work. On a pool each link was a task woken on whichever worker was
/// free: a futex wake-up and a cold cache per hop, and on a 2-core machine shared with
/// other work, a hop could wait for a worker that was descheduled. On one thread the
/// chain runs back to back. Nothing on it blocks for long: SQLite has its own thread
/// (the ledger), DNS lookups go to tokio's blocking pool, and the few file reads
/// (market files on reload) and sd_notify writes are short.
fn trading_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match mmd::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config.load_credentials() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    mmd::logging::init(config.log.format, &config.log.level);
    tracing::info!(event = "config_loaded", summary = %config.summary(), "config loaded");
    let rt = match trading_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if let Err(e) = mmd::engine::runner::spawn_signal_forwarder(tx.clone()) {
            tracing::error!(error = %e, "signals");
            return 1;
        }
        // Keep the sender alive for the whole run: a closed channel means "stop".
        let _keep = tx;
        let daemon = tokio::spawn(mmd::engine::runner::run(
            config,
            rx,
            mmd::metrics::Metrics::new(),
        ));
        match daemon.await.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(code) => code,
            Err(e) => {
                if let Some(fatal) = e.downcast_ref::<mmd::engine::runner::FatalConfig>() {
                    tracing::error!(event = "config_error", error = %fatal, "refused");
                    eprintln!("error: {fatal}");
                    2
                } else {
                    tracing::error!(event = "fatal", error = %format!("{e:#}"), "mmd failed");
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
    });
    // Do not wait for lingering tasks (a hung request): the state is settled.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match mmd::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config.load_credentials() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    print!("{}", config.summary());
    println!("config OK");
    ExitCode::SUCCESS
}

fn health(url: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?;
        let response = client.get(url).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Ok::<_, String>((status, body))
    });
    match outcome {
        Ok((status, body)) if status.is_success() => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("unhealthy ({status}): {body}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("cannot reach {url}: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench(args: mmd::bench::BenchArgs) -> ExitCode {
    // Warnings only: the report is the output.
    mmd::logging::init(mmd::config::LogFormat::Pretty, "warn");
    let rt = match trading_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = args.json;
    let outcome = rt.block_on(mmd::bench::run(args));
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(report) if json => match serde_json::to_string(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
