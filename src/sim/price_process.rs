//! The rest of the market: a seeded random walk of the mid, taker flow, and filler symbols.
//! Pure functions over a seeded generator, so a seed reproduces the same market.

use super::config::SymbolConfig;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use std::time::Duration;

use super::book::Side;

pub type PriceRng = Xoshiro256PlusPlus;

/// One generator per stream (symbol index, or `u64::MAX` for ids), derived from the seed.
pub fn rng(seed: u64, stream: u64) -> PriceRng {
    PriceRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub fn to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// Rounds a float price to the tick grid (the walk lives in floats; orders never do).
pub fn round_to(value: f64, step: Decimal) -> Decimal {
    let steps = (value / to_f64(step)).round();
    Decimal::from_f64(steps).unwrap_or_default() * step
}

fn standard_normal(rng: &mut PriceRng) -> f64 {
    // Box-Muller; u1 in (0, 1] so ln is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Geometric random walk step: `volatility` is relative per sqrt(second).
pub fn walk(rng: &mut PriceRng, mid: f64, volatility: f64, dt: Duration) -> f64 {
    let sigma = volatility * dt.as_secs_f64().sqrt();
    mid * (sigma * standard_normal(rng) - 0.5 * sigma * sigma).exp()
}

/// Number of Poisson arrivals with mean `lambda` (Knuth; lambda is small per tick).
pub fn poisson(rng: &mut PriceRng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.random::<f64>();
        if p <= limit || k >= 1000 {
            return k;
        }
        k += 1;
    }
}

/// A taker's side and IOC limit in ticks: uniformly up to `reach_bps` through the mid.
pub fn taker_limit(rng: &mut PriceRng, mid: f64, tick: f64, reach_bps: f64) -> (Side, i64) {
    let side = if rng.random::<bool>() {
        Side::Buy
    } else {
        Side::Sell
    };
    let reach = rng.random::<f64>() * reach_bps / 10_000.0;
    let limit = match side {
        Side::Buy => (mid * (1.0 + reach) / tick).ceil(),
        Side::Sell => (mid * (1.0 - reach) / tick).floor(),
    };
    (side, limit as i64)
}

/// Quantity worth `notional` at `price`, on the step grid, at least `min_qty`.
/// Sizes the synthetic market's own liquidity and taker flow from the random walk's
/// float mid (a model, not money); the quantity it returns is an exact step multiple,
/// and every order and balance built from it is Decimal.
pub fn qty_for_notional(notional: Decimal, price: f64, step: Decimal, min_qty: Decimal) -> Decimal {
    let raw = to_f64(notional) / price.max(f64::MIN_POSITIVE);
    let steps = (raw / to_f64(step)).floor().max(0.0);
    let q = Decimal::from_f64(steps).unwrap_or_default() * step;
    q.max(min_qty).max(step)
}

/// Parses a recording of market data, one JSON object per line: `<symbol>@bookTicker`
/// payloads (mid = (b + a) / 2), 24hrTicker payloads (mid = c), or either inside a
/// combined-stream wrapper. Blank lines are skipped; anything else is an error naming the line.
pub fn parse_replay(text: &str, origin: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{origin}:{}: not JSON: {e}", n + 1))?;
        let v = v.get("data").unwrap_or(&v);
        let num = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .and_then(|x| x.parse::<f64>().ok())
                .filter(|x| x.is_finite() && *x > 0.0)
        };
        let symbol = v
            .get("s")
            .and_then(|s| s.as_str())
            .ok_or_else(|| anyhow::anyhow!("{origin}:{}: no symbol (\"s\")", n + 1))?;
        let mid = match (num("b"), num("a"), num("c")) {
            (Some(b), Some(a), _) => (a + b) / 2.0,
            (_, _, Some(c)) => c,
            _ => anyhow::bail!("{origin}:{}: no prices (b/a or c)", n + 1),
        };
        out.push((symbol.to_string(), mid));
    }
    if out.is_empty() {
        anyhow::bail!("{origin}: no market data lines");
    }
    Ok(out)
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub fn random_alnum(rng: &mut PriceRng, len: usize) -> String {
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

/// A client order id in Binance's generated style (22 characters).
pub fn client_order_id(rng: &mut PriceRng) -> String {
    random_alnum(rng, 22)
}

/// Filler symbols so `!ticker@arr` carries a realistic number of tickers.
pub fn filler_symbols(count: usize, seed: u64) -> Vec<SymbolConfig> {
    let mut r = rng(seed, 0xF111);
    let quotes = ["USDT", "BTC", "FDUSD", "TRY", "EUR"];
    (0..count)
        .map(|i| {
            let quote = quotes[i % quotes.len()];
            let base = format!("F{}{}", letters(i / quotes.len()), "X");
            let exp: i32 = r.random_range(-4..4);
            let price = Decimal::from_f64(10f64.powi(exp) * (1.0 + 9.0 * r.random::<f64>()))
                .unwrap_or(Decimal::ONE)
                .round_dp(4)
                .max(Decimal::new(1, 4));
            SymbolConfig {
                symbol: format!("{base}{quote}"),
                base,
                quote: quote.to_string(),
                tick_size: Decimal::new(1, 4),
                step_size: Decimal::new(1, 2),
                min_qty: Decimal::new(1, 2),
                min_price: Decimal::new(1, 4),
                min_notional: Decimal::new(1, 0),
                initial_price: price,
                ..SymbolConfig::default()
            }
        })
        .collect()
}

fn letters(mut n: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn same_seed_same_walk() {
        let mut a = rng(7, 1);
        let mut b = rng(7, 1);
        let (mut x, mut y) = (100.0, 100.0);
        for _ in 0..1000 {
            x = walk(&mut a, x, 0.001, Duration::from_millis(100));
            y = walk(&mut b, y, 0.001, Duration::from_millis(100));
        }
        assert_eq!(x, y);
        assert!(x > 50.0 && x < 200.0, "{x}");
    }

    #[test]
    fn quantities_on_grid() {
        let q = qty_for_notional(dec!(1000), 60000.0, dec!(0.00001), dec!(0.00001));
        assert_eq!(q, dec!(0.01666));
        assert_eq!(round_to(1.23456, dec!(0.01)), dec!(1.23));
    }

    #[test]
    fn replay_lines_parse_and_errors_name_the_line() {
        let text = "{\"u\":1,\"s\":\"BTCUSDT\",\"b\":\"99\",\"B\":\"1\",\"a\":\"101\",\"A\":\"1\"}\n\n\
                    {\"stream\":\"x\",\"data\":{\"e\":\"24hrTicker\",\"s\":\"ETHUSDT\",\"c\":\"5\"}}\n";
        let r = parse_replay(text, "rec.jsonl").unwrap();
        assert_eq!(
            r,
            vec![("BTCUSDT".to_string(), 100.0), ("ETHUSDT".to_string(), 5.0)]
        );
        let e = parse_replay("{\"s\":\"X\"}\nnot json", "rec.jsonl").unwrap_err();
        assert!(e.to_string().starts_with("rec.jsonl:1:"), "{e}");
        let e = parse_replay("{\"s\":\"X\",\"c\":\"1\"}\nnot json", "rec.jsonl").unwrap_err();
        assert!(e.to_string().starts_with("rec.jsonl:2:"), "{e}");
    }

    #[test]
    fn fillers_are_unique_and_valid() {
        let f = filler_symbols(3000, 1);
        let names: std::collections::HashSet<_> = f.iter().map(|s| s.symbol.clone()).collect();
        assert_eq!(names.len(), 3000);
        assert!(f.iter().all(|s| s.initial_price > Decimal::ZERO));
    }
}
