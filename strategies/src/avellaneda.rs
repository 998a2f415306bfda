//! `avellaneda`: Avellaneda & Stoikov (2008), "High-frequency trading in a limit order book".
//!
//! Units: time in seconds, prices in quote. σ is the mid's volatility in quote per √second
//! (σ² in quote²/s), γ is in 1/quote, κ in 1/quote (fill intensity λ(δ) = A·e^(−κδ) at
//! distance δ quote from the mid), q is our inventory in units of `order_qty` relative to the
//! target base share.
//!
//! Finite horizon (the trading session ends at T):
//!   r = s − q·γ·σ²·(T−t),   δ = γ·σ²·(T−t) + (2/γ)·ln(1 + γ/κ),   quotes r ∓ δ/2.
//! Infinite horizon (paper §2.4, with ω = ½·γ²·σ²·(q_max+1)²):
//!   r_a = s + (1/γ)·ln(1 + (1−2q)·γ²σ² / (2ω − γ²q²σ²)),
//!   r_b = s + (1/γ)·ln(1 + (−1−2q)·γ²σ² / (2ω − γ²q²σ²)),
//!   quotes r_b − (1/γ)·ln(1+γ/κ) and r_a + (1/γ)·ln(1+γ/κ).
//! Either way the quotes are kept at least `min_spread_bps` from the mid.

use crate::params::{self, Check};
use crate::quantize::finalize_in_place;
use crate::{
    Balances, Context, Decimal, DesiredQuotes, Fill, MarketSnapshot, Quote, RefreshPolicy, Side,
    Strategy, StrategyError, bps,
};
use rust_decimal::MathematicalOps;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;
use std::cell::Cell;

pub const NAME: &str = "avellaneda";

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Horizon {
    /// T is the end of the current session (UTC-aligned blocks of `session_length`).
    #[default]
    Session,
    Infinite,
}

fn fifty() -> Decimal {
    Decimal::from(50)
}
fn day_ms() -> u64 {
    86_400_000
}
fn second_ms() -> u64 {
    1_000
}
fn default_window() -> u32 {
    60
}
fn default_q_max() -> Decimal {
    Decimal::TEN
}
fn default_min_fills() -> u32 {
    20
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AvellanedaParams {
    /// The `[strategy]` table's own `name` key; accepted so the table can be passed whole.
    #[serde(default, rename = "name")]
    pub strategy_name: Option<String>,
    /// Risk aversion γ, in 1/quote.
    pub gamma: Decimal,
    /// Order-book liquidity κ, in 1/quote. With `estimate_kappa` it is the prior.
    pub kappa: Decimal,
    pub order_qty: Decimal,
    #[serde(default)]
    pub horizon: Horizon,
    #[serde(
        default = "day_ms",
        rename = "session_length",
        deserialize_with = "params::duration_ms"
    )]
    pub session_length_ms: u64,
    /// Inventory bound in units of `order_qty`: beyond it the side that would grow the
    /// inventory is not quoted (and it sets ω in the infinite-horizon model).
    #[serde(default = "default_q_max")]
    pub max_inventory_units: Decimal,
    /// Fixed σ (quote per √s). Without it σ is estimated online.
    #[serde(default)]
    pub sigma: Option<Decimal>,
    /// EWMA span, in samples, of the mid-change variance (α = 2/(N+1)); also the warm-up.
    #[serde(default = "default_window")]
    pub volatility_window: u32,
    #[serde(
        default = "second_ms",
        rename = "volatility_sample_interval",
        deserialize_with = "params::duration_ms"
    )]
    pub volatility_sample_interval_ms: u64,
    /// Estimate κ from our own fill intensity at each quoted distance.
    #[serde(default)]
    pub estimate_kappa: bool,
    /// Fills needed before the κ estimate replaces the configured prior.
    #[serde(default = "default_min_fills")]
    pub kappa_min_fills: u32,
    #[serde(default = "fifty")]
    pub inventory_target_base_pct: Decimal,
    #[serde(default)]
    pub min_spread_bps: Decimal,
    #[serde(default)]
    pub refresh_tolerance_bps: Decimal,
    #[serde(
        default,
        rename = "max_order_age",
        deserialize_with = "params::opt_duration_ms"
    )]
    pub max_order_age_ms: Option<u64>,
}

impl AvellanedaParams {
    pub fn validate(&self) -> Result<(), StrategyError> {
        let c = Check { table: "strategy" };
        c.positive("gamma", self.gamma)?;
        c.positive("kappa", self.kappa)?;
        c.positive("order_qty", self.order_qty)?;
        c.positive_int("session_length", self.session_length_ms)?;
        c.positive("max_inventory_units", self.max_inventory_units)?;
        if let Some(s) = self.sigma {
            c.non_negative("sigma", s)?;
        }
        if self.volatility_window < 2 {
            c.fail(
                "volatility_window",
                format!("must be at least 2 (got {})", self.volatility_window),
            )?;
        }
        c.positive_int(
            "volatility_sample_interval",
            self.volatility_sample_interval_ms,
        )?;
        c.positive_int("kappa_min_fills", u64::from(self.kappa_min_fills))?;
        c.non_negative("inventory_target_base_pct", self.inventory_target_base_pct)?;
        c.at_most(
            "inventory_target_base_pct",
            self.inventory_target_base_pct,
            Decimal::ONE_HUNDRED,
        )?;
        c.non_negative("min_spread_bps", self.min_spread_bps)?;
        c.non_negative("refresh_tolerance_bps", self.refresh_tolerance_bps)?;
        if let Some(age) = self.max_order_age_ms {
            c.positive_int("max_order_age", age)?;
        }
        Ok(())
    }
}

/// ln(1 + x) accurate for small x, where `ln(1 + x)` on an already-rounded `1 + x` would lose
/// the digits that (1/γ)·ln(1 + γ/κ) multiplies back up. Uses ln(1+x) = 2·atanh(x/(2+x)).
pub fn ln_1p(x: Decimal) -> Option<Decimal> {
    if x <= Decimal::NEGATIVE_ONE {
        return None;
    }
    let y = x / (Decimal::TWO + x);
    if y.abs() > Decimal::new(5, 1) {
        return (Decimal::ONE + x).checked_ln();
    }
    let y2 = y * y;
    let mut term = y;
    let mut sum = Decimal::ZERO;
    let mut k = 1u32;
    while !term.is_zero() && k < 200 {
        sum += term / Decimal::from(k);
        term *= y2;
        k += 2;
    }
    Some(sum * Decimal::TWO)
}

/// Finite-horizon reservation price r and total spread δ.
pub fn reservation_and_spread(
    mid: Decimal,
    q: Decimal,
    gamma: Decimal,
    sigma2: Decimal,
    tau_s: Decimal,
    kappa: Decimal,
) -> Option<(Decimal, Decimal)> {
    reservation_and_spread_with(mid, q, gamma, sigma2, tau_s, || {
        Some(Decimal::TWO / gamma * ln_1p(gamma / kappa)?)
    })
}

/// [`reservation_and_spread`] with the liquidity term (2/γ)·ln(1 + γ/κ) supplied, so a caller
/// that keeps γ and κ can compute it once.
fn reservation_and_spread_with(
    mid: Decimal,
    q: Decimal,
    gamma: Decimal,
    sigma2: Decimal,
    tau_s: Decimal,
    liquidity: impl FnOnce() -> Option<Decimal>,
) -> Option<(Decimal, Decimal)> {
    let risk = gamma.checked_mul(sigma2)?.checked_mul(tau_s)?;
    let r = mid - q * risk;
    let delta = risk + liquidity()?;
    Some((r, delta))
}

/// Infinite-horizon reservation bid and ask (before the liquidity term).
/// `None` for a side whose reservation price is unbounded (|q| at the bound).
pub fn infinite_reservation(
    mid: Decimal,
    q: Decimal,
    gamma: Decimal,
    q_max: Decimal,
) -> (Option<Decimal>, Option<Decimal>) {
    // With ω = ½γ²σ²(q_max+1)² the γ²σ² factors cancel:
    // (±1 − 2q)γ²σ² / (2ω − γ²q²σ²) = (±1 − 2q) / ((q_max+1)² − q²).
    let q = q.clamp(-q_max, q_max);
    let denom = (q_max + Decimal::ONE) * (q_max + Decimal::ONE) - q * q;
    let side = |sign: Decimal| {
        let x = (sign - Decimal::TWO * q) / denom;
        // ln(1 + x) with x ≤ −1 is the bound itself: never quote that side.
        if x <= Decimal::NEGATIVE_ONE {
            return None;
        }
        ln_1p(x).map(|l| mid + l / gamma)
    };
    (side(Decimal::NEGATIVE_ONE), side(Decimal::ONE))
}

/// Online EWMA variance of the mid's change per sample interval.
#[derive(Debug, Clone)]
pub struct VolatilityEstimator {
    interval_ms: u64,
    alpha: Decimal,
    window: u32,
    last: Option<(u64, Decimal)>,
    variance: Decimal,
    samples: u32,
    /// `sigma2_per_s`, recomputed only when a sample changes the variance.
    sigma2_per_s: Option<Decimal>,
}

impl VolatilityEstimator {
    pub fn new(interval_ms: u64, window: u32) -> Self {
        VolatilityEstimator {
            interval_ms: interval_ms.max(1),
            alpha: Decimal::TWO / Decimal::from(window + 1),
            window,
            last: None,
            variance: Decimal::ZERO,
            samples: 0,
            sigma2_per_s: None,
        }
    }

    pub fn observe(&mut self, ts_ms: u64, mid: Decimal) {
        match self.last {
            None => self.last = Some((ts_ms, mid)),
            Some((t0, m0)) => {
                let elapsed = ts_ms.saturating_sub(t0);
                if elapsed < self.interval_ms {
                    return;
                }
                // A gap of k intervals carries k intervals' worth of variance.
                let k = Decimal::from(elapsed / self.interval_ms);
                let change = mid - m0;
                let sample = change * change / k;
                self.variance = if self.samples == 0 {
                    sample
                } else {
                    self.alpha * sample + (Decimal::ONE - self.alpha) * self.variance
                };
                self.samples = self.samples.saturating_add(1);
                self.sigma2_per_s = (self.samples >= self.window)
                    .then(|| self.variance * Decimal::from(1000) / Decimal::from(self.interval_ms));
                self.last = Some((ts_ms, mid));
            }
        }
    }

    /// σ² in quote²/second, once the window has warmed up.
    pub fn sigma2_per_s(&self) -> Option<Decimal> {
        self.sigma2_per_s
    }
}

const KAPPA_BUCKETS: usize = 64;

/// κ from our own fills: fill rate per second of quoting at each distance (1 bps buckets),
/// then a least-squares fit of ln λ = ln A − κ·δ.
#[derive(Debug, Clone)]
pub struct KappaEstimator {
    quoted_ms: [u64; KAPPA_BUCKETS],
    fills: [u32; KAPPA_BUCKETS],
    /// Bucket of the current quote on each side, and since when.
    current: [Option<usize>; 2],
    since_ms: Option<u64>,
    total_fills: u32,
}

impl Default for KappaEstimator {
    fn default() -> Self {
        KappaEstimator {
            quoted_ms: [0; KAPPA_BUCKETS],
            fills: [0; KAPPA_BUCKETS],
            current: [None; 2],
            since_ms: None,
            total_fills: 0,
        }
    }
}

impl KappaEstimator {
    fn bucket(distance_bps: Decimal) -> Option<usize> {
        let b = distance_bps.floor().to_usize()?;
        (b < KAPPA_BUCKETS).then_some(b)
    }

    /// Account the time since the last call to the previous quotes, then start timing these.
    pub fn on_quotes(
        &mut self,
        now_ms: u64,
        mid: Decimal,
        bid: Option<Decimal>,
        ask: Option<Decimal>,
    ) {
        if let Some(since) = self.since_ms {
            let dt = now_ms.saturating_sub(since);
            for b in self.current.iter().flatten() {
                self.quoted_ms[*b] += dt;
            }
        }
        let dist = |p: Option<Decimal>| {
            p.and_then(|p| {
                if mid <= Decimal::ZERO {
                    return None;
                }
                Self::bucket((p - mid).abs() * Decimal::from(10_000) / mid)
            })
        };
        self.current = [dist(bid), dist(ask)];
        self.since_ms = Some(now_ms);
    }

    pub fn on_fill(&mut self, side: Side) {
        if let Some(b) = self.current[side as usize] {
            self.fills[b] += 1;
            self.total_fills += 1;
        }
    }

    /// The fitted κ in 1/quote at the given mid, when there are enough fills at ≥ 2 distances
    /// and intensity falls with distance.
    pub fn estimate(&self, mid: Decimal, min_fills: u32) -> Option<Decimal> {
        if self.total_fills < min_fills {
            return None;
        }
        // A regression over a few dozen points is a statistical estimate, not money: f64 is
        // adequate and Decimal has no least-squares machinery. Converted back at the edge.
        let mid = f64::try_from(mid).ok()?;
        let points: Vec<(f64, f64)> = (0..KAPPA_BUCKETS)
            .filter(|&b| self.fills[b] > 0 && self.quoted_ms[b] > 0)
            .map(|b| {
                let distance = (b as f64 + 0.5) * mid / 10_000.0;
                let rate = f64::from(self.fills[b]) / (self.quoted_ms[b] as f64 / 1000.0);
                (distance, rate.ln())
            })
            .collect();
        if points.len() < 2 {
            return None;
        }
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let kappa = -sxy / sxx;
        if !(kappa.is_finite() && kappa > 0.0) {
            return None;
        }
        Decimal::try_from(kappa).ok().filter(|k| *k > Decimal::ZERO)
    }
}

#[derive(Clone)]
pub struct AvellanedaStrategy {
    params: AvellanedaParams,
    volatility: VolatilityEstimator,
    kappa: KappaEstimator,
    /// ln(1 + γ/κ) for the last κ used (keyed by its exact representation): a series of
    /// Decimal divisions that only changes when κ does (with `estimate_kappa`).
    ln_1p_gamma_kappa: Cell<Option<([u8; 16], Option<Decimal>)>>,
    /// 2/γ, a constant of the finite-horizon spread.
    two_over_gamma: Decimal,
}

/// What the model computed for one quote round, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct AvellanedaState {
    pub mid: Decimal,
    pub q: Decimal,
    pub sigma2: Decimal,
    pub kappa: Decimal,
    /// Reservation price r (finite horizon) or the middle of r_b and r_a (infinite).
    pub reservation: Decimal,
    /// Total optimal spread δ between the unclamped bid and ask.
    pub spread: Decimal,
    pub bid: Option<Decimal>,
    pub ask: Option<Decimal>,
}

impl AvellanedaStrategy {
    pub fn new(params: AvellanedaParams) -> Result<Self, StrategyError> {
        params.validate()?;
        Ok(AvellanedaStrategy {
            volatility: VolatilityEstimator::new(
                params.volatility_sample_interval_ms,
                params.volatility_window,
            ),
            kappa: KappaEstimator::default(),
            ln_1p_gamma_kappa: Cell::new(None),
            two_over_gamma: Decimal::TWO / params.gamma,
            params,
        })
    }

    /// ln(1 + γ/κ), computed again only when κ changes; the same value as computing it.
    fn ln_1p_gamma_over(&self, kappa: Decimal) -> Option<Decimal> {
        let key = kappa.serialize();
        if let Some((k, v)) = self.ln_1p_gamma_kappa.get()
            && k == key
        {
            return v;
        }
        let v = ln_1p(self.params.gamma / kappa);
        self.ln_1p_gamma_kappa.set(Some((key, v)));
        v
    }

    pub fn params(&self) -> &AvellanedaParams {
        &self.params
    }

    fn sigma2(&self) -> Option<Decimal> {
        match self.params.sigma {
            Some(s) => Some(s * s),
            None => self.volatility.sigma2_per_s(),
        }
    }

    /// Inventory in units of `order_qty` above the target base share.
    fn inventory_units(&self, balances: &Balances, mid: Decimal) -> Option<Decimal> {
        let base = balances.base_total();
        let total_value = base * mid + balances.quote_total();
        if total_value <= Decimal::ZERO {
            return None;
        }
        let target =
            total_value / mid * self.params.inventory_target_base_pct / Decimal::ONE_HUNDRED;
        Some((base - target) / self.params.order_qty)
    }

    /// The model's prices for this moment, before quantization. `None` without a two-sided
    /// book, a σ estimate or a portfolio.
    pub fn model(&self, ctx: &Context<'_>) -> Option<AvellanedaState> {
        let p = &self.params;
        let mid = ctx.market.mid()?;
        let sigma2 = self.sigma2()?;
        let q = self.inventory_units(ctx.balances, mid)?;
        let kappa = if p.estimate_kappa {
            self.kappa
                .estimate(mid, p.kappa_min_fills)
                .unwrap_or(p.kappa)
        } else {
            p.kappa
        };
        let (reservation, spread, mut bid, mut ask) = match p.horizon {
            Horizon::Session => {
                let len = p.session_length_ms;
                let end = (ctx.now_ms / len + 1) * len;
                let tau = Decimal::from(end - ctx.now_ms) / Decimal::from(1000);
                let (r, delta) = reservation_and_spread_with(mid, q, p.gamma, sigma2, tau, || {
                    Some(self.two_over_gamma * self.ln_1p_gamma_over(kappa)?)
                })?;
                let half = delta / Decimal::TWO;
                (r, delta, Some(r - half), Some(r + half))
            }
            Horizon::Infinite => {
                let (rb, ra) = infinite_reservation(mid, q, p.gamma, p.max_inventory_units);
                let liquidity = self.ln_1p_gamma_over(kappa)? / p.gamma;
                let bid = rb.map(|r| r - liquidity);
                let ask = ra.map(|r| r + liquidity);
                let (r, spread) = match (bid, ask) {
                    (Some(b), Some(a)) => ((b + a) / Decimal::TWO, a - b),
                    _ => (mid, Decimal::ZERO),
                };
                (r, spread, bid, ask)
            }
        };
        // Past the inventory bound, stop adding to it.
        if q >= p.max_inventory_units {
            bid = None;
        }
        if q <= -p.max_inventory_units {
            ask = None;
        }
        let floor = bps(p.min_spread_bps) * mid;
        Some(AvellanedaState {
            mid,
            q,
            sigma2,
            kappa,
            reservation,
            spread,
            bid: bid.map(|b| b.min(mid - floor)),
            ask: ask.map(|a| a.max(mid + floor)),
        })
    }
}

impl Strategy for AvellanedaStrategy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_market(&mut self, snapshot: &MarketSnapshot) {
        if let Some(mid) = snapshot.mid() {
            self.volatility.observe(snapshot.ts_ms, mid);
        }
    }

    fn on_fill(&mut self, fill: &Fill) {
        self.kappa.on_fill(fill.side);
    }

    // Balances and time arrive in the Context at quote time.
    fn on_balances(&mut self, _balances: &Balances) {}

    fn on_timer(&mut self, _now_ms: u64) {}

    fn quotes(&mut self, ctx: &Context<'_>) -> DesiredQuotes {
        let mut quotes = Vec::with_capacity(2);
        self.quotes_into(ctx, &mut quotes);
        DesiredQuotes { quotes }
    }

    fn quotes_into(&mut self, ctx: &Context<'_>, out: &mut Vec<Quote>) {
        out.clear();
        let Some(state) = self.model(ctx) else {
            self.kappa.on_quotes(ctx.now_ms, Decimal::ZERO, None, None);
            return;
        };
        let qty = self.params.order_qty;
        for (side, price) in [(Side::Buy, state.bid), (Side::Sell, state.ask)] {
            if let Some(price) = price.filter(|p| *p > Decimal::ZERO) {
                out.push(Quote {
                    side,
                    price,
                    qty,
                    level: 0,
                });
            }
        }
        finalize_in_place(out, ctx);
        if self.params.estimate_kappa {
            let price = |side| out.iter().find(|q| q.side == side).map(|q| q.price);
            self.kappa
                .on_quotes(ctx.now_ms, state.mid, price(Side::Buy), price(Side::Sell));
        }
    }

    fn refresh_policy(&self) -> RefreshPolicy {
        RefreshPolicy {
            tolerance_bps: self.params.refresh_tolerance_bps,
            max_order_age_ms: self.params.max_order_age_ms,
            min_spread_bps: self.params.min_spread_bps,
        }
    }

    fn fork(&self) -> Box<dyn Strategy> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SymbolRules, build};
    use rust_decimal_macros::dec;

    fn close(a: Decimal, b: Decimal, tol: Decimal) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn ln_1p_is_accurate_for_small_and_large_arguments() {
        // ln(16/15) = ln 16 − ln 15 = 2.772588722239781238 − 2.708050201102210065
        assert!(close(
            ln_1p(dec!(0.1) / dec!(1.5)).unwrap(),
            dec!(0.064538521137571173),
            dec!(1e-17)
        ));
        // ln(1 + 1e-9) = 1e-9 − 5e-19 + ...
        assert!(close(
            ln_1p(dec!(0.000000001)).unwrap(),
            dec!(0.0000000009999999995),
            dec!(1e-25)
        ));
        assert!(close(
            ln_1p(dec!(9)).unwrap(),
            dec!(2.302585092994045684),
            dec!(1e-15)
        ));
        assert_eq!(ln_1p(dec!(-1)), None);
    }

    /// Hand-computed A–S example, finite horizon:
    ///   s = 100, q = 2, γ = 0.1, σ = 0.2 (σ² = 0.04), T − t = 10 s, κ = 1.5
    ///   γσ²(T−t) = 0.1 · 0.04 · 10 = 0.04
    ///   r = s − q·γσ²(T−t) = 100 − 2 · 0.04 = 99.92
    ///   (2/γ)·ln(1 + γ/κ) = 20 · ln(16/15) = 20 · 0.0645385211375712 = 1.290770422751424
    ///   δ = 0.04 + 1.290770422751424 = 1.330770422751424
    ///   bid = r − δ/2 = 99.254614788624288, ask = r + δ/2 = 100.585385211375712
    ///   quantized to 0.01: bid 99.25 (down), ask 100.59 (up)
    #[test]
    fn hand_computed_finite_horizon_example() {
        let (r, delta) = reservation_and_spread(
            dec!(100),
            dec!(2),
            dec!(0.1),
            dec!(0.04),
            dec!(10),
            dec!(1.5),
        )
        .unwrap();
        assert_eq!(r, dec!(99.92));
        assert!(
            close(delta, dec!(1.330770422751424), dec!(1e-14)),
            "{delta}"
        );

        // The same through the strategy: base 8 + quote 400 at 100 = 1200 value, target 50%
        // = 6 base, q = (8 − 6) / 1 = 2; 10 s before the end of the UTC day.
        let table: toml::Value =
            toml::from_str("gamma = \"0.1\"\nkappa = \"1.5\"\nsigma = \"0.2\"\norder_qty = 1")
                .unwrap();
        let p: AvellanedaParams = params::deserialize(NAME, table).unwrap();
        let mut s = AvellanedaStrategy::new(p).unwrap();
        let rules = SymbolRules {
            tick_size: dec!(0.01),
            step_size: dec!(0.001),
            min_qty: dec!(0.001),
            max_qty: dec!(1000),
            min_notional: dec!(1),
            max_notional: None,
        };
        let market = MarketSnapshot {
            best_bid: dec!(99.95),
            best_bid_qty: dec!(1),
            best_ask: dec!(100.05),
            best_ask_qty: dec!(1),
            last: None,
            ts_ms: 86_390_000,
        };
        let balances = Balances {
            base_free: dec!(8),
            quote_free: dec!(400),
            ..Default::default()
        };
        let ctx = Context {
            now_ms: 86_390_000,
            rules: &rules,
            market: &market,
            balances: &balances,
            live: &[],
        };
        let state = s.model(&ctx).unwrap();
        assert_eq!(state.q, dec!(2));
        assert_eq!(state.reservation, dec!(99.92));
        assert!(close(
            state.bid.unwrap(),
            dec!(99.254614788624288),
            dec!(1e-14)
        ));
        assert!(close(
            state.ask.unwrap(),
            dec!(100.585385211375712),
            dec!(1e-14)
        ));
        let quotes = s.quotes(&ctx).quotes;
        assert_eq!(
            quotes,
            vec![
                Quote {
                    side: Side::Buy,
                    price: dec!(99.25),
                    qty: dec!(1),
                    level: 0
                },
                Quote {
                    side: Side::Sell,
                    price: dec!(100.59),
                    qty: dec!(1),
                    level: 0
                },
            ]
        );
    }

    /// Infinite horizon, s = 100, γ = 0.1, q_max = 4, κ = 1.5:
    ///   q = 0: (q_max+1)² − q² = 25; r_a = 100 + 10·ln(1 + 1/25) = 100 + 10·0.039220713153281
    ///   = 100.39220713153281, r_b = 100 + 10·ln(1 − 1/25) = 100 − 0.408219945202551 (symmetric
    ///   to first order); liquidity term (1/γ)ln(1+γ/κ) = 10·0.0645385211375712 = 0.645385211375712.
    ///   q = 4: denominator 9, bid term (−1 − 8)/9 = −1 -> no bid (inventory bound).
    #[test]
    fn hand_computed_infinite_horizon_example() {
        let (rb, ra) = infinite_reservation(dec!(100), dec!(0), dec!(0.1), dec!(4));
        assert!(
            close(ra.unwrap(), dec!(100.39220713153281), dec!(1e-13)),
            "{ra:?}"
        );
        assert!(
            close(rb.unwrap(), dec!(99.591780054797449), dec!(1e-13)),
            "{rb:?}"
        );
        let (rb, ra) = infinite_reservation(dec!(100), dec!(4), dec!(0.1), dec!(4));
        assert_eq!(rb, None);
        // (1 − 8)/9: r_a = 100 + 10·ln(2/9) = 100 − 15.040773967762742
        assert!(
            close(ra.unwrap(), dec!(84.959226032237258), dec!(1e-12)),
            "{ra:?}"
        );
    }

    #[test]
    fn volatility_ewma_in_price_units_per_second() {
        let mut v = VolatilityEstimator::new(1_000, 2);
        v.observe(0, dec!(100));
        v.observe(500, dec!(101)); // inside the interval: ignored
        v.observe(1_000, dec!(100.3)); // change 0.3 -> 0.09
        assert_eq!(v.sigma2_per_s(), None);
        v.observe(3_000, dec!(100.7)); // change 0.4 over 2 intervals -> 0.08 per interval
        // α = 2/3: 2/3 · 0.08 + 1/3 · 0.09 = 0.08333...
        assert!(close(
            v.sigma2_per_s().unwrap(),
            dec!(0.0833333333333),
            dec!(1e-12)
        ));
    }

    #[test]
    fn kappa_is_fitted_from_fill_intensity() {
        let mut k = KappaEstimator::default();
        // mid 10_000: 1 bps = 1 quote. 100 s at bucket 1 with 20 fills (0.2/s) and 100 s at
        // bucket 5 with 4 fills (0.04/s): κ = ln(0.2/0.04) / (5.5 − 1.5) = ln 5 / 4 = 0.40236.
        let mid = dec!(10000);
        k.on_quotes(0, mid, Some(dec!(9998.5)), None);
        for _ in 0..20 {
            k.on_fill(Side::Buy);
        }
        k.on_quotes(100_000, mid, Some(dec!(9994.5)), None);
        for _ in 0..4 {
            k.on_fill(Side::Buy);
        }
        k.on_quotes(200_000, mid, None, None);
        let kappa = k.estimate(mid, 20).unwrap();
        assert!(close(kappa, dec!(0.402359478108525), dec!(1e-9)), "{kappa}");
        assert_eq!(k.estimate(mid, 25), None);
    }

    #[test]
    fn bad_parameters_name_the_key() {
        let err = |text: &str| {
            let table: toml::Value = toml::from_str(text).unwrap();
            build(NAME, table).err().unwrap()
        };
        assert_eq!(
            err("gamma = 0\nkappa = 1\norder_qty = 1").to_string(),
            "[strategy] `gamma`: must be greater than zero (got 0)"
        );
        assert_eq!(
            err("gamma = 1\nkappa = -1\norder_qty = 1").key(),
            Some("kappa")
        );
        assert_eq!(
            err("gamma = 1\nkappa = 1\norder_qty = 1\nvolatility_window = 1").key(),
            Some("volatility_window")
        );
        assert_eq!(
            err("gamma = 1\nkappa = 1\norder_qty = 1\nhorizon = \"forever\"").key(),
            Some("horizon")
        );
        assert!(
            build(
                NAME,
                toml::from_str::<toml::Value>(
                    "gamma = 1\nkappa = 1\norder_qty = 1\nhorizon = \"infinite\""
                )
                .unwrap()
            )
            .is_ok()
        );
    }
}
