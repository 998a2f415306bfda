//! `mmd record`: the market stream of the configured symbols as JSON lines, for
//! replay in the simulator (`[market] replay_file`) and in backtests (`--data`).
//!
//! One line per event: `{"recv_ms":<local receive time>,"data":<payload>}`, where the
//! payload keeps Binance's field names (`24hrTicker` or `bookTicker`) for the fields the
//! daemon quotes from. Only the configured symbols are written: a full `!ticker@arr`
//! would be ~2.8 GB an hour.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::sync::mpsc;

use crate::binance::market::spawn_market_stream;
use crate::binance::stream::{StreamEvent, StreamKind};
use crate::binance::types::MarketEvent;
use crate::engine::runner::{market_mode, now_ms, open_venue, stream_settings};

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The daemon config: venue, market stream kind and markets come from it.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Where to write the JSON lines (appended to if it exists).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Stop after this long ("90s", "1h"); without it, record until SIGINT/SIGTERM.
    #[arg(long)]
    pub duration: Option<String>,
}

/// One market event as a recorded line.
pub fn event_line(recv_ms: u64, event: &MarketEvent) -> Option<String> {
    let data = match event {
        MarketEvent::Ticker(t) => json!({
            "e": "24hrTicker",
            "E": t.event_time,
            "s": t.symbol,
            "c": t.last_price.to_string(),
            "b": t.best_bid.to_string(),
            "B": t.best_bid_qty.to_string(),
            "a": t.best_ask.to_string(),
            "A": t.best_ask_qty.to_string(),
        }),
        MarketEvent::BookTicker(b) => json!({
            "u": b.update_id,
            "s": b.symbol,
            "b": b.best_bid.to_string(),
            "B": b.best_bid_qty.to_string(),
            "a": b.best_ask.to_string(),
            "A": b.best_ask_qty.to_string(),
        }),
        // Not market data: nothing to replay.
        MarketEvent::ServerShutdown { .. } => return None,
    };
    Some(json!({ "recv_ms": recv_ms, "data": data }).to_string())
}

/// `mmd record`: returns the number of events written.
pub async fn run(args: RecordArgs) -> anyhow::Result<u64> {
    let cfg = crate::config::Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let limit = args
        .duration
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .with_context(|| "--duration: expected a duration such as \"90s\" or \"1h\"")?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("cannot open {} for writing", args.out.display()))?;
    let mut out = std::io::BufWriter::new(file);

    // Keeps the embedded simulator (venue = "sim") alive while recording.
    let venue = open_venue(&cfg).await?;
    let symbols: Vec<String> = cfg.markets.iter().map(|m| m.symbol.clone()).collect();
    let (tx, mut rx) = mpsc::channel::<StreamEvent>(8192);
    let market = spawn_market_stream(
        stream_settings(&cfg, &venue),
        market_mode(cfg.streams.market),
        symbols.clone(),
        tx,
    );
    tracing::info!(event = "record_started", symbols = ?symbols, out = %args.out.display(), "recording the market stream");

    let mut signals = signal_hook_tokio::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install signal handlers")?;
    use futures_util::StreamExt as _;
    let deadline = tokio::time::sleep(limit.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    let mut written = 0u64;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = signals.next() => break,
            _ = flush.tick() => out.flush().context("write failed")?,
            ev = rx.recv() => match ev {
                Some(StreamEvent::Market { event, .. }) => {
                    if let Some(line) = event_line(now_ms(), &event) {
                        writeln!(out, "{line}").context("write failed")?;
                        written += 1;
                    }
                }
                Some(StreamEvent::DecodeError { stream: StreamKind::Market, error }) => {
                    tracing::warn!(event = "decode_error", %error, "malformed market frame skipped");
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    out.flush().context("write failed")?;
    market.shutdown().await;
    if let Some(sim) = venue.sim {
        sim.shutdown().await;
    }
    tracing::info!(
        event = "record_stopped",
        events = written,
        "recording stopped"
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::types::{BookTicker, Ticker};
    use rust_decimal_macros::dec;

    #[test]
    fn lines_keep_binance_field_names_and_exact_decimals() {
        let t = MarketEvent::Ticker(Ticker {
            event_time: 5,
            symbol: "BTCUSDT".into(),
            last_price: dec!(60000.10),
            best_bid: dec!(60000.00),
            best_bid_qty: dec!(1.5),
            best_ask: dec!(60000.20),
            best_ask_qty: dec!(0.25),
        });
        let line = event_line(7, &t).unwrap();
        assert_eq!(
            line,
            r#"{"data":{"A":"0.25","B":"1.5","E":5,"a":"60000.20","b":"60000.00","c":"60000.10","e":"24hrTicker","s":"BTCUSDT"},"recv_ms":7}"#
        );
        let b = MarketEvent::BookTicker(BookTicker {
            update_id: 9,
            symbol: "ETHUSDT".into(),
            best_bid: dec!(3000.01),
            best_bid_qty: dec!(2),
            best_ask: dec!(3000.02),
            best_ask_qty: dec!(3),
        });
        assert!(event_line(1, &b).unwrap().contains(r#""u":9"#));
        assert!(event_line(1, &MarketEvent::ServerShutdown { event_time: 1 }).is_none());
    }
}
