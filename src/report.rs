//! `mmd report`: per-market PnL, fees, volume and inventory from the ledger, with an
//! optional SVG chart of PnL and inventory over time.
//!
//! PnL uses the same average-cost tracker as the strategies and the kill switch
//! (`strategies::pnl::PositionTracker`), so the report and the daemon agree on what
//! "realized" means. Commissions paid in the base or quote asset are valued in quote;
//! commissions in a third asset (BNB discounts) are listed apart, not guessed at.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rust_decimal::Decimal;
use strategies::pnl::PositionTracker;

use crate::binance::types::Side;
use crate::ledger::{Ledger, LedgerFill};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The daemon config: the ledger path and the markets come from it.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only fills from this point: a duration back from now ("24h", "7d") or a UTC
    /// time ("2026-11-20T00:00:00Z").
    #[arg(long)]
    pub since: Option<String>,
    /// Also write a chart of PnL and inventory over time to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// One point of the chart: after a fill or a mark.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub time_ms: u64,
    /// Realized + unrealized − quote-valued fees, since the report's start.
    pub pnl: Decimal,
    pub inventory: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MarketReport {
    pub symbol: String,
    pub base_asset: Option<String>,
    pub quote_asset: Option<String>,
    pub fills: u64,
    pub volume_base: Decimal,
    pub volume_quote: Decimal,
    /// Realized PnL (average cost) over the period, before fees.
    pub realized: Decimal,
    /// Unrealized PnL of the position now, at the last recorded mid.
    pub unrealized: Option<Decimal>,
    pub last_mid: Option<Decimal>,
    pub fees_quote: Decimal,
    /// Commissions in assets other than base and quote (e.g. BNB), not valued.
    pub fees_other: BTreeMap<String, Decimal>,
    /// (average sell price − average buy price) / average price, in bps: what a round
    /// trip earned. None until both sides traded.
    pub spread_captured_bps: Option<Decimal>,
    pub inventory_now: Decimal,
    pub inventory_max_abs: Decimal,
    pub series: Vec<Point>,
}

impl MarketReport {
    /// Realized + unrealized − quote-valued fees.
    pub fn net_pnl(&self) -> Decimal {
        self.realized + self.unrealized.unwrap_or_default() - self.fees_quote
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub since_ms: Option<u64>,
    pub now_ms: u64,
    pub uptime_ms: u64,
    pub markets: Vec<MarketReport>,
}

fn fee_in_quote(fill: &LedgerFill, assets: Option<&(String, String)>) -> Option<Decimal> {
    let (base, quote) = assets?;
    if &fill.commission_asset == quote {
        Some(fill.commission)
    } else if &fill.commission_asset == base {
        Some(fill.commission * fill.price)
    } else {
        None
    }
}

fn strategy_fill(fill: &LedgerFill, fee_quote: Decimal) -> strategies::Fill {
    strategies::Fill {
        side: match fill.side {
            Side::Buy => strategies::Side::Buy,
            Side::Sell => strategies::Side::Sell,
        },
        price: fill.price,
        qty: fill.qty,
        fee_quote,
        ts_ms: fill.time_ms,
    }
}

/// Builds the report for `symbols` (or every symbol in the ledger when empty).
pub fn build(
    ledger: &Ledger,
    symbols: &[String],
    since_ms: Option<u64>,
    now_ms: u64,
) -> anyhow::Result<Report> {
    let symbols = if symbols.is_empty() {
        ledger.symbols()?
    } else {
        symbols.to_vec()
    };
    let since = since_ms.unwrap_or(0);
    let mut markets = Vec::with_capacity(symbols.len());
    for symbol in symbols {
        let assets = ledger.market_assets(&symbol)?;
        // Replay every fill so the average cost at `since` is right, then report the
        // change over the period.
        let mut tracker = PositionTracker::new();
        let mut at_start: Option<PositionTracker> = None;
        let mut fees_other: BTreeMap<String, Decimal> = BTreeMap::new();
        let (mut bought, mut bought_quote, mut sold, mut sold_quote) =
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        let mut inventory_max_abs = Decimal::ZERO;
        let mut series = Vec::new();
        let fills = ledger.fills(Some(&symbol), None)?;
        let marks = ledger.marks(&symbol, None)?;
        let mut marks_iter = marks.iter().peekable();
        let mut last_mid: Option<Decimal> = None;
        let point = |t: &PositionTracker, start: &PositionTracker, time_ms, mark: Decimal| Point {
            time_ms,
            pnl: (t.realized() - start.realized()) + t.unrealized(mark) - (t.fees() - start.fees()),
            inventory: t.position(),
        };
        for fill in &fills {
            while let Some(m) = marks_iter.next_if(|m| m.time_ms <= fill.time_ms) {
                last_mid = Some(m.mid);
                if m.time_ms >= since {
                    let start = at_start.get_or_insert_with(|| tracker.clone());
                    series.push(point(&tracker, start, m.time_ms, m.mid));
                }
            }
            if fill.time_ms >= since && at_start.is_none() {
                at_start = Some(tracker.clone());
            }
            let fee = fee_in_quote(fill, assets.as_ref());
            if fee.is_none() && fill.time_ms >= since {
                *fees_other.entry(fill.commission_asset.clone()).or_default() += fill.commission;
            }
            tracker.on_fill(&strategy_fill(fill, fee.unwrap_or_default()));
            if fill.time_ms >= since {
                match fill.side {
                    Side::Buy => {
                        bought += fill.qty;
                        bought_quote += fill.qty * fill.price;
                    }
                    Side::Sell => {
                        sold += fill.qty;
                        sold_quote += fill.qty * fill.price;
                    }
                }
                inventory_max_abs = inventory_max_abs.max(tracker.position().abs());
                let start = at_start
                    .as_ref()
                    .expect("set above for fills in the period");
                series.push(point(
                    &tracker,
                    start,
                    fill.time_ms,
                    last_mid.unwrap_or(fill.price),
                ));
            }
        }
        for m in marks_iter {
            last_mid = Some(m.mid);
            if m.time_ms >= since {
                let start = at_start.get_or_insert_with(|| tracker.clone());
                series.push(point(&tracker, start, m.time_ms, m.mid));
            }
        }
        let start = at_start.unwrap_or_else(|| tracker.clone());
        let spread_captured_bps = if bought.is_zero() || sold.is_zero() {
            None
        } else {
            let avg_buy = bought_quote / bought;
            let avg_sell = sold_quote / sold;
            let avg = (avg_buy + avg_sell) / Decimal::TWO;
            Some(((avg_sell - avg_buy) / avg * Decimal::from(10_000)).round_dp(2))
        };
        markets.push(MarketReport {
            base_asset: assets.as_ref().map(|a| a.0.clone()),
            quote_asset: assets.as_ref().map(|a| a.1.clone()),
            symbol,
            fills: tracker.fill_count() - start.fill_count(),
            volume_base: tracker.volume_base() - start.volume_base(),
            volume_quote: tracker.volume_quote() - start.volume_quote(),
            realized: tracker.realized() - start.realized(),
            unrealized: last_mid.map(|m| tracker.unrealized(m)),
            last_mid,
            fees_quote: tracker.fees() - start.fees(),
            fees_other,
            spread_captured_bps,
            inventory_now: tracker.position(),
            inventory_max_abs,
            series,
        });
    }
    Ok(Report {
        since_ms,
        now_ms,
        uptime_ms: ledger.uptime_ms(now_ms)?,
        markets,
    })
}

fn fmt_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "period: {} .. {}   uptime: {}",
        report
            .since_ms
            .map(fmt_time)
            .unwrap_or_else(|| "start".into()),
        fmt_time(report.now_ms),
        humantime::format_duration(Duration::from_secs(report.uptime_ms / 1000)),
    );
    if report.markets.is_empty() {
        let _ = writeln!(out, "no fills recorded yet");
    }
    for m in &report.markets {
        let quote = m.quote_asset.as_deref().unwrap_or("quote");
        let base = m.base_asset.as_deref().unwrap_or("base");
        let _ = writeln!(out, "\n{}", m.symbol);
        let _ = writeln!(out, "  fills            {}", m.fills);
        let _ = writeln!(
            out,
            "  volume           {} {base} / {} {quote}",
            m.volume_base,
            m.volume_quote.round_dp(8)
        );
        let _ = writeln!(out, "  realized PnL     {} {quote}", m.realized.round_dp(8));
        match (m.unrealized, m.last_mid) {
            (Some(u), Some(mid)) => {
                let _ = writeln!(
                    out,
                    "  unrealized PnL   {} {quote} (at mid {mid})",
                    u.round_dp(8)
                );
            }
            _ => {
                let _ = writeln!(out, "  unrealized PnL   unknown (no mid recorded)");
            }
        }
        let _ = writeln!(
            out,
            "  fees             {} {quote}",
            m.fees_quote.round_dp(8)
        );
        for (asset, amount) in &m.fees_other {
            let _ = writeln!(out, "                   {amount} {asset} (not valued)");
        }
        let _ = writeln!(
            out,
            "  net PnL          {} {quote}",
            m.net_pnl().round_dp(8)
        );
        match m.spread_captured_bps {
            Some(bps) => {
                let _ = writeln!(out, "  spread captured  {bps} bps (avg sell vs avg buy)");
            }
            None => {
                let _ = writeln!(out, "  spread captured  n/a (one side only)");
            }
        }
        let _ = writeln!(
            out,
            "  inventory        {} {base} now, {} max",
            m.inventory_now, m.inventory_max_abs
        );
    }
    out
}

/// A two-panel line chart (PnL above, inventory below) per market, hand-written SVG.
pub fn render_svg(report: &Report) -> String {
    const W: f64 = 900.0;
    const PANEL_H: f64 = 160.0;
    const PAD: f64 = 40.0;
    let block_h = 2.0 * PANEL_H + 3.0 * PAD;
    let height = PAD + block_h * report.markets.len().max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Pixel coordinates only: the values are exact Decimals until they become a
    // position on the page, where f64 precision is more than enough.
    let to_px = |d: Decimal| -> f64 { d.to_string().parse::<f64>().unwrap_or(0.0) };
    for (i, m) in report.markets.iter().enumerate() {
        let top = PAD + block_h * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{PAD}" y="{}" font-size="14" font-weight="bold">{} (net PnL {} {})</text>"#,
            top - 10.0,
            xml_escape(&m.symbol),
            m.net_pnl().round_dp(4),
            xml_escape(m.quote_asset.as_deref().unwrap_or(""))
        );
        let (t0, t1) = match (m.series.first(), m.series.last()) {
            (Some(a), Some(b)) => (a.time_ms, b.time_ms.max(a.time_ms + 1)),
            _ => (0, 1),
        };
        for (panel, (label, color)) in [("PnL", "#1f77b4"), ("inventory", "#d62728")]
            .iter()
            .enumerate()
        {
            let y0 = top + panel as f64 * (PANEL_H + PAD);
            let values: Vec<(u64, f64)> = m
                .series
                .iter()
                .map(|p| {
                    (
                        p.time_ms,
                        to_px(if panel == 0 { p.pnl } else { p.inventory }),
                    )
                })
                .collect();
            let lo = values.iter().map(|v| v.1).fold(0.0_f64, f64::min);
            let hi = values.iter().map(|v| v.1).fold(0.0_f64, f64::max);
            let span = if hi - lo > 0.0 { hi - lo } else { 1.0 };
            let x = |t: u64| PAD + (W - 2.0 * PAD) * ((t - t0) as f64 / (t1 - t0) as f64);
            let y = |v: f64| y0 + PANEL_H - PANEL_H * ((v - lo) / span);
            let _ = writeln!(
                svg,
                r##"<rect x="{PAD}" y="{y0}" width="{}" height="{PANEL_H}" fill="none" stroke="#ccc"/>"##,
                W - 2.0 * PAD
            );
            let _ = writeln!(
                svg,
                r##"<line x1="{PAD}" y1="{z}" x2="{}" y2="{z}" stroke="#999" stroke-dasharray="4 3"/>"##,
                W - PAD,
                z = y(0.0)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}">{label}</text>"#,
                PAD + 4.0,
                y0 + 14.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{hi:.6}</text>"#,
                W - PAD - 4.0,
                y0 + 14.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{lo:.6}</text>"#,
                W - PAD - 4.0,
                y0 + PANEL_H - 4.0
            );
            if !values.is_empty() {
                let pts: Vec<String> = values
                    .iter()
                    .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                    .collect();
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    pts.join(" ")
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{PAD}" y="{}">{}</text>"#,
            top + block_h - PAD - 8.0,
            fmt_time(t0)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            W - PAD,
            top + block_h - PAD - 8.0,
            fmt_time(t1)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Parses `--since`: a duration back from `now_ms`, or an RFC 3339 UTC time.
pub fn parse_since(raw: &str, now_ms: u64) -> anyhow::Result<u64> {
    if let Ok(d) = humantime::parse_duration(raw) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    let t = humantime::parse_rfc3339_weak(raw).with_context(|| {
        format!("--since {raw:?}: expected a duration (\"24h\") or a UTC time (\"2026-11-20T00:00:00Z\")")
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `mmd report`.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !config.storage_path.exists() {
        anyhow::bail!(
            "no ledger at {} (set [storage] path, or run the daemon first)",
            config.storage_path.display()
        );
    }
    let ledger = Ledger::open(&config.storage_path)?;
    let now = now_ms();
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, now))
        .transpose()?;
    let symbols: Vec<String> = config.markets.iter().map(|m| m.symbol.clone()).collect();
    let report = build(&ledger, &symbols, since, now)?;
    print!("{}", render_text(&report));
    if let Some(path) = args.svg {
        std::fs::write(&path, render_svg(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nchart written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Mark;
    use rust_decimal_macros::dec;

    fn fill(
        id: i64,
        side: Side,
        price: Decimal,
        qty: Decimal,
        fee: Decimal,
        asset: &str,
    ) -> LedgerFill {
        LedgerFill {
            symbol: "BTCUSDT".into(),
            trade_id: id,
            order_id: id as u64,
            client_order_id: format!("c{id}"),
            side,
            price,
            qty,
            commission: fee,
            commission_asset: asset.into(),
            is_maker: true,
            time_ms: id as u64 * 1000,
        }
    }

    #[test]
    fn round_trip_with_fees_in_base_and_quote() {
        let l = Ledger::open_in_memory().unwrap();
        l.record_market("BTCUSDT", "BTC", "USDT").unwrap();
        // Buy 0.01 @ 100 (fee 0.00001 BTC = 0.001 USDT), sell 0.01 @ 101 (fee 0.00101 USDT).
        l.record_fill(&fill(
            1,
            Side::Buy,
            dec!(100),
            dec!(0.01),
            dec!(0.00001),
            "BTC",
        ))
        .unwrap();
        l.record_fill(&fill(
            2,
            Side::Sell,
            dec!(101),
            dec!(0.01),
            dec!(0.00101),
            "USDT",
        ))
        .unwrap();
        l.record_fill(&fill(
            3,
            Side::Buy,
            dec!(100.5),
            dec!(0.02),
            dec!(0.5),
            "BNB",
        ))
        .unwrap();
        l.record_mark(
            "BTCUSDT",
            Mark {
                time_ms: 4000,
                mid: dec!(100.7),
            },
        )
        .unwrap();
        let r = build(&l, &[], None, 5000).unwrap();
        let m = &r.markets[0];
        assert_eq!(m.fills, 3);
        assert_eq!(m.realized, dec!(0.01)); // (101 - 100) * 0.01
        assert_eq!(m.fees_quote, dec!(0.00201));
        assert_eq!(m.fees_other["BNB"], dec!(0.5));
        assert_eq!(m.inventory_now, dec!(0.02));
        assert_eq!(m.unrealized, Some(dec!(0.004))); // (100.7 - 100.5) * 0.02
        assert_eq!(m.net_pnl(), dec!(0.01) + dec!(0.004) - dec!(0.00201));
        // avg buy = (1 + 2.01) / 0.03 = 100.333.., avg sell 101
        assert_eq!(m.spread_captured_bps, Some(dec!(66.23)));
        assert_eq!(m.series.len(), 4);
        let text = render_text(&r);
        assert!(text.contains("realized PnL     0.01 USDT"), "{text}");
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    }

    #[test]
    fn since_reports_the_change_over_the_period_only() {
        let l = Ledger::open_in_memory().unwrap();
        l.record_market("BTCUSDT", "BTC", "USDT").unwrap();
        l.record_fill(&fill(1, Side::Buy, dec!(100), dec!(1), dec!(0), "USDT"))
            .unwrap();
        l.record_fill(&fill(5, Side::Sell, dec!(110), dec!(1), dec!(0), "USDT"))
            .unwrap();
        let r = build(&l, &[], Some(3000), 9000).unwrap();
        let m = &r.markets[0];
        assert_eq!(m.fills, 1);
        // The buy before the period still sets the cost basis of the sell inside it.
        assert_eq!(m.realized, dec!(10));
        assert_eq!(m.volume_base, dec!(1));
        assert_eq!(m.spread_captured_bps, None);
    }

    #[test]
    fn since_accepts_durations_and_times() {
        assert_eq!(parse_since("1s", 5000).unwrap(), 4000);
        assert_eq!(parse_since("1970-01-01T00:00:02Z", 5000).unwrap(), 2000);
        assert!(parse_since("yesterday-ish", 5000).is_err());
    }
}
