//! `spread`: symmetric-spread market making after Hummingbot's "pure market making".
//!
//! Bids and asks at fixed spreads from a reference price, in `levels` layers, with Hummingbot's
//! inventory skew (sizes scale 0..2× with the base share of the portfolio), an optional price
//! skew, price ceiling/floor, a per-side pause after a fill and ping-pong.

use std::cmp::Ordering;

use crate::exact::Wide;
use crate::params::{self, Check};
use crate::quantize::{decimal_places_of, finalize_in_place};
use crate::{
    Balances, Context, Decimal, DesiredQuotes, Fill, MarketSnapshot, Quote, RefreshPolicy, Side,
    Strategy, StrategyError, SymbolRules, bps,
};
use serde::Deserialize;

pub const NAME: &str = "spread";

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    #[default]
    Mid,
    Last,
    /// Size-weighted mid.
    Microprice,
    BestBid,
    BestAsk,
}

impl PriceSource {
    pub fn price(self, m: &MarketSnapshot) -> Option<Decimal> {
        let p = match self {
            PriceSource::Mid => m.mid(),
            PriceSource::Last => m.last,
            PriceSource::Microprice => m.microprice(),
            PriceSource::BestBid => Some(m.best_bid),
            PriceSource::BestAsk => Some(m.best_ask),
        };
        p.filter(|p| *p > Decimal::ZERO)
    }
}

fn one_u32() -> u32 {
    1
}
fn fifty() -> Decimal {
    Decimal::from(50)
}
fn one() -> Decimal {
    Decimal::ONE
}

/// Parameters of `spread`, as written in the market file's `[strategy]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpreadParams {
    /// The `[strategy]` table's own `name` key; accepted so the table can be passed whole.
    #[serde(default, rename = "name")]
    pub strategy_name: Option<String>,
    pub bid_spread_bps: Decimal,
    pub ask_spread_bps: Decimal,
    /// Base quantity of the level-0 orders.
    pub order_qty: Decimal,
    #[serde(default)]
    pub price_source: PriceSource,
    /// Orders per side.
    #[serde(default = "one_u32")]
    pub levels: u32,
    /// Extra spread per level beyond the first.
    #[serde(default)]
    pub level_spread_bps: Decimal,
    /// Extra quantity per level beyond the first.
    #[serde(default)]
    pub level_qty_step: Decimal,
    /// Live orders closer to the mid than this are cancelled; new quotes never go inside it.
    #[serde(default)]
    pub min_spread_bps: Decimal,
    /// Live orders whose price differs from the desired one by less than this are kept.
    #[serde(default)]
    pub refresh_tolerance_bps: Decimal,
    #[serde(
        default,
        rename = "max_order_age",
        deserialize_with = "params::opt_duration_ms"
    )]
    pub max_order_age_ms: Option<u64>,
    #[serde(default)]
    pub inventory_skew_enabled: bool,
    /// Desired share of the portfolio value held in base, 0..=100.
    #[serde(default = "fifty")]
    pub inventory_target_base_pct: Decimal,
    /// The skew range is this many times one side's total order size around the target.
    #[serde(default = "one")]
    pub inventory_range_multiplier: Decimal,
    /// With skew enabled, shift both prices by up to this much (at the edge of the range)
    /// in the direction that sheds inventory. 0 = sizes only, as Hummingbot does.
    #[serde(default)]
    pub inventory_price_skew_bps: Decimal,
    /// Above it: only asks.
    #[serde(default)]
    pub price_ceiling: Option<Decimal>,
    /// Below it: only bids.
    #[serde(default)]
    pub price_floor: Option<Decimal>,
    /// Pause the filled side this long after a fill.
    #[serde(
        default,
        rename = "filled_order_delay",
        deserialize_with = "params::opt_duration_ms"
    )]
    pub filled_order_delay_ms: Option<u64>,
    /// After a buy fill drop a buy level (and vice versa) until the other side fills.
    #[serde(default)]
    pub ping_pong: bool,
}

impl SpreadParams {
    pub fn validate(&self) -> Result<(), StrategyError> {
        let c = Check { table: "strategy" };
        let below_price = Decimal::from(10_000);
        c.non_negative("bid_spread_bps", self.bid_spread_bps)?;
        if self.bid_spread_bps >= below_price {
            c.fail(
                "bid_spread_bps",
                "must be below 10000 (a 100% spread bids at zero)",
            )?;
        }
        c.non_negative("ask_spread_bps", self.ask_spread_bps)?;
        c.positive("order_qty", self.order_qty)?;
        c.positive_int("levels", u64::from(self.levels))?;
        c.non_negative("level_spread_bps", self.level_spread_bps)?;
        c.non_negative("level_qty_step", self.level_qty_step)?;
        c.non_negative("min_spread_bps", self.min_spread_bps)?;
        c.non_negative("refresh_tolerance_bps", self.refresh_tolerance_bps)?;
        if let Some(age) = self.max_order_age_ms {
            c.positive_int("max_order_age", age)?;
        }
        c.non_negative("inventory_target_base_pct", self.inventory_target_base_pct)?;
        c.at_most(
            "inventory_target_base_pct",
            self.inventory_target_base_pct,
            Decimal::ONE_HUNDRED,
        )?;
        c.positive(
            "inventory_range_multiplier",
            self.inventory_range_multiplier,
        )?;
        c.non_negative("inventory_price_skew_bps", self.inventory_price_skew_bps)?;
        if let Some(p) = self.price_ceiling {
            c.positive("price_ceiling", p)?;
        }
        if let Some(p) = self.price_floor {
            c.positive("price_floor", p)?;
        }
        if let (Some(floor), Some(ceiling)) = (self.price_floor, self.price_ceiling)
            && floor >= ceiling
        {
            c.fail(
                "price_floor",
                format!("must be below price_ceiling ({floor} >= {ceiling})"),
            )?;
        }
        Ok(())
    }

    /// Total quantity of one side's levels (Hummingbot's `total_order_size`).
    fn total_order_qty(&self) -> Decimal {
        (0..self.levels)
            .map(|l| self.order_qty + Decimal::from(l) * self.level_qty_step)
            .sum()
    }
}

/// Hummingbot's inventory skew: the base holding's position inside
/// `[target − range, target + range]` sets the bid size ratio from 2 (at or below the low end)
/// to 0 (at or above the high end); the ask ratio is its complement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InventorySkew {
    pub bid_ratio: Decimal,
    pub ask_ratio: Decimal,
    /// (base − target) / range clamped to [−1, 1]: positive when holding too much base.
    pub skew: Decimal,
}

const HALF: Decimal = Decimal::from_parts(5, 0, 0, false, 1);
const PERCENT: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

pub fn inventory_skew(
    balances: &Balances,
    price: Decimal,
    target_base_pct: Decimal,
    range_base: Decimal,
) -> Option<InventorySkew> {
    let base = balances.base_total();
    let base_value = base * price;
    let total_value = base_value + balances.quote_total();
    if total_value <= Decimal::ZERO || price <= Decimal::ZERO {
        return None;
    }
    // All in quote value so a single division remains: skew = (base − target) / range with
    // target = total·pct/price and range = min(range_base, total/2/price).
    // The range can never exceed half the portfolio, or one side could never be quoted.
    let range_value = (range_base * price).min(total_value * HALF);
    if range_value <= Decimal::ZERO {
        return None;
    }
    let target_value = total_value * target_base_pct * PERCENT;
    // Sizes move in 1% steps of the order: the skew follows the price on every tick, and
    // finer steps would make the order diff replace orders for size jitter alone (the
    // backtest showed about two replacements per tick). Rounding is monotone, so the skew
    // still never leans the wrong way; small operands also keep Decimal on its fast path.
    let skew = crate::quantize::round_dp(
        (base_value - target_value) / range_value,
        2,
        rust_decimal::RoundingStrategy::MidpointNearestEven,
    )
    .clamp(Decimal::NEGATIVE_ONE, Decimal::ONE);
    let bid_ratio = Decimal::ONE - skew;
    Some(InventorySkew {
        bid_ratio,
        ask_ratio: Decimal::TWO - bid_ratio,
        skew,
    })
}

/// [`inventory_skew`]'s skew on exact integers, in hundredths: `Some(None)` where that gives
/// `None`, and `None` where only the Decimal code can say.
fn exact_skew_hundredths(
    base: Wide,
    quote: Wide,
    price: Wide,
    target_base_pct: Wide,
    range_base: Wide,
) -> Option<Option<i128>> {
    let base_value = base.mul(price)?;
    let total_value = base_value.add(quote)?;
    if !total_value.is_positive() || !price.is_positive() {
        return Some(None);
    }
    let range_value = range_base
        .mul(price)?
        .min(total_value.mul(Wide::from_decimal(HALF))?)?;
    if !range_value.is_positive() {
        return Some(None);
    }
    let target_value = total_value
        .mul(target_base_pct)?
        .mul(Wide::from_decimal(PERCENT))?;
    Some(Some(
        base_value
            .sub(target_value)?
            .ratio_hundredths_clamped(range_value)?,
    ))
}

/// `a == b` without an early exit: array equality compiles to a `memcmp` call, which cost
/// more than the comparison itself on every decision.
fn same_words<const N: usize>(a: &[u128; N], b: &[u128; N]) -> bool {
    a.iter().zip(b).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// A Decimal's bits as one word, for the keys [`same_words`] compares: equal bits are the
/// same value at the same scale.
fn bits(d: Decimal) -> u128 {
    u128::from_ne_bytes(d.serialize())
}

/// The symbol's filters as whole ticks and lots, for [`ExactFinalize`]: built once per set
/// of rules rather than per quote.
#[derive(Debug, Clone, PartialEq)]
struct Grid {
    /// The rules it was built from, bit for bit (Decimal's own equality compares values
    /// through its slow path; this compares seven words, see [`same_words`]).
    key: [u128; 7],
    tick_dp: u32,
    step_dp: u32,
    /// `max_qty` in lots, rounded down; `None` without the filter.
    max_lots: Option<i128>,
    /// `min_qty` in lots, rounded up: fewer lots are below it.
    min_lots: i128,
    /// The notional filters in units of tick × step: at or above `min`, at most `max`.
    min_notional: i128,
    max_notional: Option<i128>,
}

impl Grid {
    fn key(rules: &SymbolRules) -> [u128; 7] {
        [
            bits(rules.tick_size),
            bits(rules.step_size),
            bits(rules.min_qty),
            bits(rules.max_qty),
            bits(rules.min_notional),
            bits(rules.max_notional.unwrap_or_default()),
            u128::from(rules.max_notional.is_some()),
        ]
    }

    /// `None` for a tick or step that is not a power of ten, or a filter past the range.
    fn new(rules: &SymbolRules) -> Option<Grid> {
        let tick_dp = decimal_places_of(rules.tick_size)?;
        let step_dp = decimal_places_of(rules.step_size)?;
        let max_qty = Wide::from_decimal(rules.max_qty);
        let notional_dp = tick_dp + step_dp;
        Some(Grid {
            key: Grid::key(rules),
            tick_dp,
            step_dp,
            max_lots: if max_qty.is_positive() {
                Some(max_qty.floor_units(step_dp)?)
            } else {
                None
            },
            min_lots: Wide::from_decimal(rules.min_qty).ceil_units(step_dp)?,
            min_notional: Wide::from_decimal(rules.min_notional).ceil_units(notional_dp)?,
            max_notional: match rules.max_notional {
                Some(m) => Some(Wide::from_decimal(m).floor_units(notional_dp)?),
                None => None,
            },
        })
    }
}

/// [`finalize_in_place`] on exact integers, fed the raw quotes one by one in (side, level)
/// order: the balance cap's running amounts, then the quantization and filters of each. Any
/// step answering `None` (a balance cap or the max-notional cap that would change a quantity,
/// which the Decimal code divides for, or a value leaving the exact range) declines the whole
/// decision, whatever was pushed before it.
struct ExactFinalize<'g> {
    grid: &'g Grid,
    base_left: Wide,
    quote_left: Wide,
    /// A price on the grid is at or above the best ask exactly when its tick count is at or
    /// above the ask's rounded up; the tick below the ask is that count minus one. Whole
    /// counts compare with the filters the same way (`Grid`).
    ask_ticks_up: Option<i128>,
    bid_ticks_down: Option<i128>,
    lowest_ask: Option<i128>,
}

impl<'g> ExactFinalize<'g> {
    fn new(
        base_total: Wide,
        quote_total: Wide,
        (bid, ask): (Wide, Wide),
        grid: &'g Grid,
    ) -> Option<Self> {
        let bid_ticks = if bid.is_positive() {
            Some(bid.floor_units(grid.tick_dp)?)
        } else {
            None
        };
        let ask_ticks = if ask.is_positive() {
            Some(ask.ceil_units(grid.tick_dp)?)
        } else {
            None
        };
        Some(Self::with_ticks(
            base_total,
            quote_total,
            (bid_ticks, ask_ticks),
            grid,
        ))
    }

    /// [`Self::new`] with the book already in ticks: the best bid rounded down and the best
    /// ask rounded up (a book on the tick grid is its own counts), `None` for an empty side.
    fn with_ticks(
        base_total: Wide,
        quote_total: Wide,
        (bid_ticks, ask_ticks): (Option<i128>, Option<i128>),
        grid: &'g Grid,
    ) -> Self {
        ExactFinalize {
            grid,
            base_left: base_total.at_least_zero(),
            quote_left: quote_total.at_least_zero(),
            ask_ticks_up: ask_ticks,
            bid_ticks_down: bid_ticks,
            lowest_ask: None,
        }
    }

    /// One raw quote's share of the balance cap; `None` where it binds.
    #[inline]
    fn cap(&mut self, side: Side, price: Wide, qty: Wide) -> Option<()> {
        match side {
            Side::Sell => {
                if qty.cmp(self.base_left)? == Ordering::Greater {
                    return None;
                }
                self.base_left = self.base_left.sub(qty)?;
            }
            Side::Buy => {
                let cost = price.mul(qty)?;
                if price.is_positive() && cost.cmp(self.quote_left)? == Ordering::Greater {
                    return None;
                }
                self.quote_left = self.quote_left.sub(cost)?;
            }
        }
        Some(())
    }

    /// The quote's quantized form into `out`, unless a filter drops it; `None` where the
    /// max-notional cap would change its quantity.
    #[inline]
    fn quantize(
        &mut self,
        side: Side,
        level: u32,
        price: Wide,
        qty: Wide,
        out: &mut Vec<Quote>,
    ) -> Option<()> {
        if !qty.is_positive() {
            return Some(());
        }
        let grid = self.grid;
        let ticks = match side {
            Side::Buy => {
                let t = price.floor_units(grid.tick_dp)?;
                match self.ask_ticks_up {
                    Some(a) if t >= a => a - 1,
                    _ => t,
                }
            }
            Side::Sell => {
                let t = price.ceil_units(grid.tick_dp)?;
                match self.bid_ticks_down {
                    Some(b) if t <= b => b + 1,
                    _ => t,
                }
            }
        };
        if ticks <= 0 {
            return Some(());
        }
        let mut lots = qty.floor_units(grid.step_dp)?;
        if let Some(max) = grid.max_lots
            && lots > max
        {
            lots = max;
        }
        let notional = ticks.checked_mul(lots)?;
        if grid.max_notional.is_some_and(|max| notional > max) {
            return None;
        }
        if lots <= 0 || lots < grid.min_lots || notional < grid.min_notional {
            return Some(());
        }
        if side == Side::Sell {
            self.lowest_ask = Some(self.lowest_ask.map_or(ticks, |l| l.min(ticks)));
        }
        out.push(Quote {
            side,
            price: Wide::new(ticks, grid.tick_dp)?.to_decimal(),
            qty: Wide::new(lots, grid.step_dp)?.to_decimal(),
            level,
        });
        Some(())
    }

    /// Drops the bids at or above the lowest ask.
    fn finish(self, out: &mut Vec<Quote>) {
        // Every price pushed is its tick count at the tick's scale: mantissas compare.
        if let Some(lowest_ask) = self.lowest_ask
            && out
                .iter()
                .any(|q| q.side == Side::Buy && q.price.mantissa() >= lowest_ask)
        {
            out.retain(|q| q.side == Side::Sell || q.price.mantissa() < lowest_ask);
        }
    }
}

/// The level shapes as integers at one scale, for [`SpreadStrategy::tick_quotes_into`]: the
/// mid-based setup without a price skew, where every price is the mid times a constant and
/// every size a constant times the skew's ratio.
#[derive(Debug, Clone)]
struct TickPlan {
    /// The scale of every factor below.
    factor_scale: u32,
    /// Per level (in `levels` order): the bid and ask multipliers of the mid.
    bid_factors: Vec<i128>,
    ask_factors: Vec<i128>,
    /// The min spread's multipliers (one without a min spread).
    min_bid_factor: i128,
    min_ask_factor: i128,
    /// The scale of every size below.
    qty_scale: u32,
    /// Per level: the size at a ratio of one.
    qtys: Vec<i128>,
    /// The largest mid mantissa for which every product the Decimal code forms from it (a
    /// price, a price times a size) stays exact; a larger one leaves the decision to the
    /// other paths.
    max_mid: i128,
}

impl TickPlan {
    /// `None` for any other setup: another price source, a price skew, a factor that is not
    /// positive, or scales past Decimal's.
    fn new(strategy: &SpreadStrategy) -> Option<TickPlan> {
        let p = &strategy.params;
        if p.price_source != PriceSource::Mid || !strategy.price_skew.is_zero() {
            return None;
        }
        let levels = &strategy.levels;
        let factors = levels
            .iter()
            .flat_map(|l| [l.bid_factor, l.ask_factor])
            .chain([strategy.min_bid_factor, strategy.min_ask_factor]);
        let factor_scale = factors.clone().map(|f| f.scale()).max()?;
        let qty_scale = levels.iter().map(|l| l.qty.scale()).max()?;
        let at = |d: Decimal, scale: u32| {
            Wide::from_decimal(d)
                .at(scale)
                .filter(|m| *m > 0 && i64::try_from(*m).is_ok())
        };
        let max_factor = factors
            .map(|f| at(f, factor_scale))
            .try_fold(0, |m, f| Some(m.max(f?)))?;
        let bid_factors = levels
            .iter()
            .map(|l| at(l.bid_factor, factor_scale))
            .collect::<Option<Vec<_>>>()?;
        let ask_factors = levels
            .iter()
            .map(|l| at(l.ask_factor, factor_scale))
            .collect::<Option<Vec<_>>>()?;
        let qtys = levels
            .iter()
            .map(|l| at(l.qty, qty_scale))
            .collect::<Option<Vec<_>>>()?;
        // A size at the largest ratio, two (skew −1), in hundredths.
        let max_qty = qtys.iter().max()?.checked_mul(200)?;
        Some(TickPlan {
            factor_scale,
            min_bid_factor: at(strategy.min_bid_factor, factor_scale)?,
            min_ask_factor: at(strategy.min_ask_factor, factor_scale)?,
            bid_factors,
            ask_factors,
            qty_scale,
            qtys,
            max_mid: (crate::exact::MAX_MANTISSA).checked_div(max_factor.checked_mul(max_qty)?)?,
        })
    }
}

/// Whether `left` covers `total` (both at least zero) without a step of the Decimal code's
/// running subtraction leaving its exact range: each partial sum lies between zero and
/// `total`, so each remainder between `left − total` and `left`.
#[inline]
fn covers(left: Wide, total: Wide) -> Option<()> {
    if total.scale > left.scale {
        left.at(total.scale)?;
    }
    (total.cmp(left)? != Ordering::Greater).then_some(())
}

#[derive(Clone)]
pub struct SpreadStrategy {
    params: SpreadParams,
    /// Per level: price multipliers from the reference (1 ∓ spread) and quantity, computed once.
    levels: Vec<LevelShape>,
    /// The inventory skew range in base: all levels' size × the range multiplier.
    skew_range: Decimal,
    /// `inventory_price_skew_bps` as a fraction.
    price_skew: Decimal,
    /// Multipliers of the mid that new quotes may not cross (1 ∓ min_spread).
    min_bid_factor: Decimal,
    min_ask_factor: Decimal,
    /// Per side (index `Side as usize`): no new quotes before this time.
    paused_until_ms: [u64; 2],
    /// Buy fills minus sell fills since the last time the two were level (ping-pong).
    ping_pong_balance: i64,
    /// The last rules' grid, for the exact path.
    grid: Option<Grid>,
    /// The last balances, bit for bit, and their base and quote totals: most decisions see
    /// the balances of the one before.
    totals: Option<([u128; 4], Wide, Wide)>,
    /// `None` where [`Self::tick_quotes_into`] does not apply to the parameters.
    tick_plan: Option<TickPlan>,
}

#[derive(Clone)]
struct LevelShape {
    level: u32,
    bid_factor: Decimal,
    ask_factor: Decimal,
    qty: Decimal,
}

impl SpreadStrategy {
    pub fn new(params: SpreadParams) -> Result<Self, StrategyError> {
        params.validate()?;
        let levels = (0..params.levels)
            .map(|level| {
                let extra = Decimal::from(level) * params.level_spread_bps;
                LevelShape {
                    level,
                    bid_factor: Decimal::ONE - bps(params.bid_spread_bps + extra),
                    ask_factor: Decimal::ONE + bps(params.ask_spread_bps + extra),
                    qty: params.order_qty + Decimal::from(level) * params.level_qty_step,
                }
            })
            .collect();
        let mut strategy = SpreadStrategy {
            levels,
            skew_range: params.total_order_qty() * params.inventory_range_multiplier,
            price_skew: bps(params.inventory_price_skew_bps),
            min_bid_factor: Decimal::ONE - bps(params.min_spread_bps),
            min_ask_factor: Decimal::ONE + bps(params.min_spread_bps),
            params,
            paused_until_ms: [0; 2],
            ping_pong_balance: 0,
            grid: None,
            totals: None,
            tick_plan: None,
        };
        strategy.tick_plan = TickPlan::new(&strategy);
        Ok(strategy)
    }

    pub fn params(&self) -> &SpreadParams {
        &self.params
    }

    /// Ping-pong removes the closest levels of the side that filled last.
    fn ping_pong_skip(&self, side: Side) -> u32 {
        if !self.params.ping_pong {
            return 0;
        }
        let b = self.ping_pong_balance;
        let n = match side {
            Side::Buy if b > 0 => b,
            Side::Sell if b < 0 => -b,
            _ => 0,
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The grid of `rules` for the integer paths, rebuilt only when the rules change; `None`
    /// where those paths do not apply (see [`Grid::new`]).
    #[inline]
    fn refresh_grid(&mut self, rules: &SymbolRules) -> Option<()> {
        if self
            .grid
            .as_ref()
            .is_none_or(|g| !same_words(&g.key, &Grid::key(rules)))
        {
            self.grid = Some(Grid::new(rules)?);
        }
        Some(())
    }

    /// Which sides quote (index `Side as usize`) at `reference`: the price ceiling and floor,
    /// and the pause after a fill.
    #[inline]
    fn exact_sides(&self, reference: Wide, now_ms: u64) -> Option<[bool; 2]> {
        let p = &self.params;
        let mut sides = [true, true];
        if let Some(ceiling) = p.price_ceiling
            && reference.cmp(Wide::from_decimal(ceiling))? == Ordering::Greater
        {
            sides[Side::Buy as usize] = false;
        }
        if let Some(floor) = p.price_floor
            && reference.cmp(Wide::from_decimal(floor))? == Ordering::Less
        {
            sides[Side::Sell as usize] = false;
        }
        for side in [Side::Buy, Side::Sell] {
            if now_ms < self.paused_until_ms[side as usize] {
                sides[side as usize] = false;
            }
        }
        Some(sides)
    }

    /// The base and quote totals (free + locked), kept while the balances stay the same.
    #[inline]
    fn exact_totals(&mut self, b: &Balances) -> Option<(Wide, Wide)> {
        let key = [
            bits(b.base_free),
            bits(b.base_locked),
            bits(b.quote_free),
            bits(b.quote_locked),
        ];
        Some(match self.totals {
            Some((k, base, quote)) if same_words(&k, &key) => (base, quote),
            _ => {
                let base =
                    Wide::from_decimal(b.base_free).add(Wide::from_decimal(b.base_locked))?;
                let quote =
                    Wide::from_decimal(b.quote_free).add(Wide::from_decimal(b.quote_locked))?;
                self.totals = Some((key, base, quote));
                (base, quote)
            }
        })
    }

    /// [`exact_skew_hundredths`] with this strategy's target and range.
    #[inline]
    fn exact_skew(&self, (base, quote): (Wide, Wide), reference: Wide) -> Option<Option<i128>> {
        exact_skew_hundredths(
            base,
            quote,
            reference,
            Wide::from_decimal(self.params.inventory_target_base_pct),
            Wide::from_decimal(self.skew_range),
        )
    }

    /// [`Self::exact_quotes_into`] for its most common case, on [`TickPlan`]'s integers: the
    /// mid of a two-sided book whose bid and ask share a scale, without a price skew. Each
    /// price is the mid times a constant and each size a constant times the skew's ratio, so
    /// no scale is aligned per quote; and as every raw price and size is positive, the
    /// balance cap binds exactly when a side's total exceeds its balance, checked once per
    /// side. `None` where this path does not apply or a cap binds: the next path decides.
    fn tick_quotes_into(&mut self, ctx: &Context<'_>, out: &mut Vec<Quote>) -> Option<()> {
        let plan = self.tick_plan.as_ref()?;
        let (bid, ask) = (ctx.market.best_bid, ctx.market.best_ask);
        let price_scale = bid.scale();
        let (bid_m, ask_m) = (bid.mantissa(), ask.mantissa());
        if ask.scale() != price_scale || bid_m <= 0 || bid_m >= ask_m {
            return None;
        }
        // (bid + ask) × 0.5, as Decimal forms it: both under 2^96, so no overflow.
        let mid = (bid_m + ask_m) * 5;
        let mid_scale = price_scale + 1;
        let quote_scale = mid_scale + plan.factor_scale;
        let size_scale = plan.qty_scale + 2;
        if mid > plan.max_mid || quote_scale + size_scale > crate::exact::MAX_SCALE {
            return None;
        }
        let reference = Wide::new(mid, mid_scale)?;
        self.refresh_grid(ctx.rules)?;
        out.clear();
        let sides = self.exact_sides(reference, ctx.now_ms)?;
        let totals = self.exact_totals(ctx.balances)?;
        let skew = if self.params.inventory_skew_enabled {
            let Some(skew) = self.exact_skew(totals, reference)? else {
                return Some(());
            };
            skew
        } else {
            0
        };
        let plan = self.tick_plan.as_ref()?;
        let grid = self.grid.as_ref()?;
        // A book on the tick grid (the usual case) is its own tick counts.
        let mut finalize = if price_scale == grid.tick_dp {
            ExactFinalize::with_ticks(totals.0, totals.1, (Some(bid_m), Some(ask_m)), grid)
        } else {
            ExactFinalize::new(
                totals.0,
                totals.1,
                (Wide::from_decimal(bid), Wide::from_decimal(ask)),
                grid,
            )?
        };
        let (mut cost, mut sold) = (0i128, 0i128);
        for side in [Side::Buy, Side::Sell] {
            if !sides[side as usize] {
                continue;
            }
            let skip = self.ping_pong_skip(side);
            let (factors, limit, ratio) = match side {
                Side::Buy => (&plan.bid_factors, plan.min_bid_factor, 100 - skew),
                Side::Sell => (&plan.ask_factors, plan.min_ask_factor, 100 + skew),
            };
            // `max_mid` keeps every product here under 2^96.
            let limit = mid * limit;
            for ((shape, factor), qty) in self.levels.iter().zip(factors).zip(&plan.qtys) {
                if shape.level < skip {
                    continue;
                }
                let price = match side {
                    Side::Buy => (mid * factor).min(limit),
                    Side::Sell => (mid * factor).max(limit),
                };
                let size = qty * ratio;
                match side {
                    Side::Buy => cost += price * size,
                    Side::Sell => sold += size,
                }
                finalize.quantize(
                    side,
                    shape.level,
                    Wide::new(price, quote_scale)?,
                    Wide::new(size, size_scale)?,
                    out,
                )?;
            }
        }
        covers(
            finalize.quote_left,
            Wide::new(cost, quote_scale + size_scale)?,
        )?;
        covers(finalize.base_left, Wide::new(sold, size_scale)?)?;
        finalize.finish(out);
        Some(())
    }

    /// What `finalize(raw_quotes)` gives, computed on exact integers ([`Wide`]): the same
    /// formulas in the same order, hence the same values, at a tenth of the cost. `None` where
    /// this path does not apply or cannot be sure to agree (a tick or step that is not a power
    /// of ten, the microprice's division, a balance or max-notional cap that binds, values
    /// beyond Decimal's exact range): the Decimal code decides those. Prices come out at the
    /// tick's scale and quantities at the step's, where the Decimal code's scales follow its
    /// operands (`0.0099` against `0.00990`); the values are equal.
    fn exact_quotes_into(&mut self, ctx: &Context<'_>, out: &mut Vec<Quote>) -> Option<()> {
        self.refresh_grid(ctx.rules)?;
        out.clear();
        let p = &self.params;
        let market = ctx.market;
        let (bid, ask) = (
            Wide::from_decimal(market.best_bid),
            Wide::from_decimal(market.best_ask),
        );
        let two_sided = bid.is_positive() && ask.is_positive() && bid.cmp(ask)? == Ordering::Less;
        let mid = if two_sided {
            Some(bid.add(ask)?.mul(Wide::from_decimal(HALF))?)
        } else {
            None
        };
        let reference = match p.price_source {
            PriceSource::Mid => mid,
            PriceSource::Last => market.last.map(Wide::from_decimal),
            PriceSource::BestBid => Some(bid),
            PriceSource::BestAsk => Some(ask),
            PriceSource::Microprice => return None,
        };
        let Some(reference) = reference.filter(|r| r.is_positive()) else {
            return Some(());
        };
        let sides = self.exact_sides(reference, ctx.now_ms)?;
        let (base_total, quote_total) = self.exact_totals(ctx.balances)?;
        let p = &self.params;
        let one = Wide::from_decimal(Decimal::ONE);
        let (mut bid_ratio, mut ask_ratio, mut shift) = (one, one, Wide::ZERO);
        if p.inventory_skew_enabled {
            let Some(skew) = self.exact_skew((base_total, quote_total), reference)? else {
                return Some(());
            };
            bid_ratio = Wide::new(100 - skew, 2)?;
            ask_ratio = Wide::new(100 + skew, 2)?;
            if !self.price_skew.is_zero() {
                shift = Wide::new(-skew, 2)?.mul(Wide::from_decimal(self.price_skew))?;
            }
        }
        let center = if shift.is_zero() {
            reference
        } else {
            reference.mul(one.add(shift)?)?
        };
        let mid = match p.price_source {
            PriceSource::Mid => Some(reference),
            _ => mid,
        };
        // The balance cap goes through the quotes by (side, level): bids first.
        let grid = self.grid.as_ref()?;
        let mut finalize = ExactFinalize::new(base_total, quote_total, (bid, ask), grid)?;
        let min_bid = Wide::from_decimal(self.min_bid_factor);
        let min_ask = Wide::from_decimal(self.min_ask_factor);
        for side in [Side::Buy, Side::Sell] {
            if !sides[side as usize] {
                continue;
            }
            let skip = self.ping_pong_skip(side);
            // The closest price the min spread allows, the same for every level of the side.
            let factor = match side {
                Side::Buy => min_bid,
                Side::Sell => min_ask,
            };
            // Without a min spread the factor is one, and the product the mid itself at
            // another scale. The limit may become the price, but only its value is read
            // after (compares, products, floors): those agree at any scale, and Decimal's
            // own product by 1.0000 is exact, since it only drops trailing zeros if it must.
            let limit = match mid {
                Some(mid) if p.min_spread_bps.is_zero() => Some(mid),
                Some(mid) => Some(mid.mul(factor)?),
                None => None,
            };
            for shape in self.levels.iter().filter(|l| l.level >= skip) {
                let (factor, ratio) = match side {
                    Side::Buy => (shape.bid_factor, bid_ratio),
                    Side::Sell => (shape.ask_factor, ask_ratio),
                };
                let mut price = center.mul(Wide::from_decimal(factor))?;
                if let Some(limit) = limit {
                    price = match side {
                        Side::Buy => price.min(limit)?,
                        Side::Sell => price.max(limit)?,
                    };
                }
                let qty = Wide::from_decimal(shape.qty).mul(ratio)?;
                finalize.cap(side, price, qty)?;
                finalize.quantize(side, shape.level, price, qty, out)?;
            }
        }
        finalize.finish(out);
        Some(())
    }

    /// The quotes on Decimal throughout: the reference for [`Self::exact_quotes_into`], and
    /// the path for whatever that declines.
    fn decimal_quotes_into(&self, ctx: &Context<'_>, out: &mut Vec<Quote>) {
        self.raw_quotes_into(ctx, out);
        finalize_in_place(out, ctx);
    }

    /// The quotes before balance caps and quantization.
    pub fn raw_quotes(&self, ctx: &Context<'_>) -> Vec<Quote> {
        let mut quotes = Vec::with_capacity(2 * self.params.levels as usize);
        self.raw_quotes_into(ctx, &mut quotes);
        quotes
    }

    /// [`Self::raw_quotes`] into `quotes` (cleared first).
    fn raw_quotes_into(&self, ctx: &Context<'_>, quotes: &mut Vec<Quote>) {
        quotes.clear();
        let p = &self.params;
        let Some(reference) = p.price_source.price(ctx.market) else {
            return;
        };
        let mut sides = [true, true];
        if p.price_ceiling.is_some_and(|c| reference > c) {
            sides[Side::Buy as usize] = false;
        }
        if p.price_floor.is_some_and(|f| reference < f) {
            sides[Side::Sell as usize] = false;
        }
        for side in [Side::Buy, Side::Sell] {
            if ctx.now_ms < self.paused_until_ms[side as usize] {
                sides[side as usize] = false;
            }
        }
        let (mut bid_ratio, mut ask_ratio, mut shift) = (Decimal::ONE, Decimal::ONE, Decimal::ZERO);
        if p.inventory_skew_enabled {
            match inventory_skew(
                ctx.balances,
                reference,
                p.inventory_target_base_pct,
                self.skew_range,
            ) {
                Some(s) => {
                    bid_ratio = s.bid_ratio;
                    ask_ratio = s.ask_ratio;
                    shift = -s.skew * self.price_skew;
                }
                // Nothing to skew against: an empty portfolio cannot quote either side.
                None => return,
            }
        }
        // Without a price skew the shift is exactly zero and reference × 1 is the reference
        // itself, value and scale.
        let center = if shift.is_zero() {
            reference
        } else {
            reference * (Decimal::ONE + shift)
        };
        // The mid price source already is the mid: no second computation.
        let mid = match p.price_source {
            PriceSource::Mid => Some(reference),
            _ => ctx.market.mid(),
        };
        for shape in &self.levels {
            let level = shape.level;
            if sides[Side::Buy as usize] && level >= self.ping_pong_skip(Side::Buy) {
                let mut price = center * shape.bid_factor;
                if let Some(mid) = mid {
                    price = price.min(mid * self.min_bid_factor);
                }
                quotes.push(Quote {
                    side: Side::Buy,
                    price,
                    qty: shape.qty * bid_ratio,
                    level,
                });
            }
            if sides[Side::Sell as usize] && level >= self.ping_pong_skip(Side::Sell) {
                let mut price = center * shape.ask_factor;
                if let Some(mid) = mid {
                    price = price.max(mid * self.min_ask_factor);
                }
                quotes.push(Quote {
                    side: Side::Sell,
                    price,
                    qty: shape.qty * ask_ratio,
                    level,
                });
            }
        }
    }
}

impl Strategy for SpreadStrategy {
    fn name(&self) -> &'static str {
        NAME
    }

    // The reference price, balances and time all arrive in the Context at quote time, so
    // market, balance and timer events carry nothing this model needs to remember.
    fn on_market(&mut self, _snapshot: &MarketSnapshot) {}

    fn on_fill(&mut self, fill: &Fill) {
        if let Some(delay) = self.params.filled_order_delay_ms {
            self.paused_until_ms[fill.side as usize] = fill.ts_ms.saturating_add(delay);
        }
        if self.params.ping_pong {
            self.ping_pong_balance += match fill.side {
                Side::Buy => 1,
                Side::Sell => -1,
            };
            let levels = i64::from(self.params.levels);
            self.ping_pong_balance = self.ping_pong_balance.clamp(-levels, levels);
        }
    }

    fn on_balances(&mut self, _balances: &Balances) {}

    fn on_timer(&mut self, _now_ms: u64) {}

    fn quotes(&mut self, ctx: &Context<'_>) -> DesiredQuotes {
        let mut quotes = Vec::with_capacity(2 * self.params.levels as usize);
        self.quotes_into(ctx, &mut quotes);
        DesiredQuotes { quotes }
    }

    fn quotes_into(&mut self, ctx: &Context<'_>, out: &mut Vec<Quote>) {
        if self.tick_quotes_into(ctx, out).is_none() && self.exact_quotes_into(ctx, out).is_none() {
            self.decimal_quotes_into(ctx, out);
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

    fn rules() -> SymbolRules {
        SymbolRules {
            tick_size: dec!(0.01),
            step_size: dec!(0.001),
            min_qty: dec!(0.001),
            max_qty: dec!(1000),
            min_notional: dec!(1),
            max_notional: None,
        }
    }

    fn market() -> MarketSnapshot {
        MarketSnapshot {
            best_bid: dec!(99.99),
            best_bid_qty: dec!(3),
            best_ask: dec!(100.01),
            best_ask_qty: dec!(1),
            last: Some(dec!(100.01)),
            ts_ms: 0,
        }
    }

    fn balances(base: Decimal, quote: Decimal) -> Balances {
        Balances {
            base_free: base,
            base_locked: Decimal::ZERO,
            quote_free: quote,
            quote_locked: Decimal::ZERO,
        }
    }

    fn strategy(toml_text: &str) -> SpreadStrategy {
        let table: toml::Value = toml::from_str(toml_text).unwrap();
        let p: SpreadParams = crate::params::deserialize(NAME, table).unwrap();
        SpreadStrategy::new(p).unwrap()
    }

    fn quotes_at(s: &mut SpreadStrategy, b: &Balances, now_ms: u64) -> Vec<Quote> {
        let (r, m) = (rules(), market());
        let ctx = Context {
            now_ms,
            rules: &r,
            market: &m,
            balances: b,
            live: &[],
        };
        s.quotes(&ctx).quotes
    }

    fn find(qs: &[Quote], side: Side, level: u32) -> Option<(Decimal, Decimal)> {
        qs.iter()
            .find(|q| q.side == side && q.level == level)
            .map(|q| (q.price, q.qty))
    }

    #[test]
    fn two_levels_at_worked_prices() {
        let mut s = strategy(
            "bid_spread_bps = 10\nask_spread_bps = 20\norder_qty = \"0.5\"\nlevels = 2\n\
             level_spread_bps = 15\nlevel_qty_step = \"0.25\"",
        );
        let qs = quotes_at(&mut s, &balances(dec!(10), dec!(10000)), 0);
        // mid 100: bid 100 * (1 - 0.0010) = 99.90; ask 100 * 1.0020 = 100.20;
        // level 1: bid 100 * (1 - 0.0025) = 99.75, ask 100 * 1.0035 = 100.35, qty 0.75.
        assert_eq!(find(&qs, Side::Buy, 0), Some((dec!(99.90), dec!(0.5))));
        assert_eq!(find(&qs, Side::Sell, 0), Some((dec!(100.20), dec!(0.5))));
        assert_eq!(find(&qs, Side::Buy, 1), Some((dec!(99.75), dec!(0.75))));
        assert_eq!(find(&qs, Side::Sell, 1), Some((dec!(100.35), dec!(0.75))));
    }

    #[test]
    fn price_sources() {
        let m = market();
        assert_eq!(PriceSource::Mid.price(&m), Some(dec!(100.00)));
        assert_eq!(PriceSource::Last.price(&m), Some(dec!(100.01)));
        // (99.99 * 1 + 100.01 * 3) / 4 = 100.005: the thin ask side pulls the price up.
        assert_eq!(PriceSource::Microprice.price(&m), Some(dec!(100.005)));
        assert_eq!(PriceSource::BestBid.price(&m), Some(dec!(99.99)));
        assert_eq!(PriceSource::BestAsk.price(&m), Some(dec!(100.01)));
    }

    #[test]
    fn inventory_skew_matches_hummingbot_ratios() {
        // Portfolio at 100: 10 base (1000) + 1000 quote = 2000; target 50% = 10 base.
        // Range = 1 level * 2 qty * multiplier 1 = 2 base: [8, 12].
        let mut s = strategy(
            "bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = 2\ninventory_skew_enabled = true",
        );
        let qs = quotes_at(&mut s, &balances(dec!(10), dec!(1000)), 0);
        assert_eq!(find(&qs, Side::Buy, 0).unwrap().1, dec!(2));
        assert_eq!(find(&qs, Side::Sell, 0).unwrap().1, dec!(2));
        // 11 base + 900 quote = 2000; target 10; skew (11-10)/2 = 0.5 -> bid 0.5x, ask 1.5x.
        let qs = quotes_at(&mut s, &balances(dec!(11), dec!(900)), 0);
        assert_eq!(find(&qs, Side::Buy, 0).unwrap().1, dec!(1));
        assert_eq!(find(&qs, Side::Sell, 0).unwrap().1, dec!(3));
        // At or beyond the top of the range the bid disappears and the ask doubles.
        let qs = quotes_at(&mut s, &balances(dec!(13), dec!(700)), 0);
        assert_eq!(find(&qs, Side::Buy, 0), None);
        assert_eq!(find(&qs, Side::Sell, 0).unwrap().1, dec!(4));
    }

    #[test]
    fn price_skew_sheds_inventory() {
        let mut s = strategy(
            "bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = 2\ninventory_skew_enabled = true\n\
             inventory_price_skew_bps = 8",
        );
        // skew 0.5 -> shift -4 bps: center 99.96; bid 99.96 * 0.999 = 99.86004 -> 99.86;
        // ask 99.96 * 1.001 = 100.05996 -> 100.06.
        let qs = quotes_at(&mut s, &balances(dec!(11), dec!(900)), 0);
        assert_eq!(find(&qs, Side::Buy, 0).unwrap().0, dec!(99.86));
        assert_eq!(find(&qs, Side::Sell, 0).unwrap().0, dec!(100.06));
    }

    #[test]
    fn ceiling_floor_delay_and_ping_pong() {
        let b = balances(dec!(10), dec!(10000));
        let mut s =
            strategy("bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = 1\nprice_ceiling = 99");
        let qs = quotes_at(&mut s, &b, 0);
        assert!(find(&qs, Side::Buy, 0).is_none() && find(&qs, Side::Sell, 0).is_some());
        let mut s =
            strategy("bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = 1\nprice_floor = 101");
        let qs = quotes_at(&mut s, &b, 0);
        assert!(find(&qs, Side::Buy, 0).is_some() && find(&qs, Side::Sell, 0).is_none());

        let mut s = strategy(
            "bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = 1\nfilled_order_delay = \"5s\"",
        );
        let fill = Fill {
            side: Side::Sell,
            price: dec!(100.1),
            qty: dec!(1),
            fee_quote: dec!(0),
            ts_ms: 1_000,
        };
        s.on_fill(&fill);
        assert!(find(&quotes_at(&mut s, &b, 5_999), Side::Sell, 0).is_none());
        assert!(find(&quotes_at(&mut s, &b, 6_000), Side::Sell, 0).is_some());

        let mut s =
            strategy("bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = 1\nping_pong = true");
        s.on_fill(&Fill {
            side: Side::Buy,
            ..fill.clone()
        });
        let qs = quotes_at(&mut s, &b, 0);
        assert!(find(&qs, Side::Buy, 0).is_none() && find(&qs, Side::Sell, 0).is_some());
        s.on_fill(&fill);
        assert_eq!(quotes_at(&mut s, &b, 0).len(), 2);
    }

    #[test]
    fn min_spread_clamps_new_quotes() {
        let mut s =
            strategy("bid_spread_bps = 1\nask_spread_bps = 1\norder_qty = 1\nmin_spread_bps = 5");
        let qs = quotes_at(&mut s, &balances(dec!(10), dec!(10000)), 0);
        assert_eq!(find(&qs, Side::Buy, 0).unwrap().0, dec!(99.95));
        assert_eq!(find(&qs, Side::Sell, 0).unwrap().0, dec!(100.05));
    }

    fn build_err(text: &str) -> StrategyError {
        let table: toml::Value = toml::from_str(text).unwrap();
        match build(NAME, table) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_parameters_name_the_key() {
        let e = build_err("bid_spread_bps = -1\nask_spread_bps = 10\norder_qty = 1");
        assert_eq!(
            e.to_string(),
            "[strategy] `bid_spread_bps`: must not be negative (got -1)"
        );
        let e = build_err("bid_spread_bps = 1\nask_spread_bps = 10\norder_qty = \"0\"");
        assert_eq!(
            e.to_string(),
            "[strategy] `order_qty`: must be greater than zero (got 0)"
        );
        let e = build_err("bid_spread_bps = 1\nask_spread_bps = 10\norder_qty = 1\nlevels = 0");
        assert_eq!(
            e.to_string(),
            "[strategy] `levels`: must be at least 1 (got 0)"
        );
        let e = build_err("bid_spread_bps = 1\nask_spread_bps = 10\norder_qty = 1\nlevls = 2");
        assert_eq!(e.key(), Some("levls"));
        assert!(e.to_string().contains("unknown field `levls`"), "{e}");
        let e = build_err("bid_spread_bps = 1\nask_spread_bps = 10\norder_qty = \"abc\"");
        assert_eq!(e.key(), Some("order_qty"));
        let e = build_err("bid_spread_bps = 1\nask_spread_bps = 10");
        assert!(e.to_string().contains("missing field `order_qty`"), "{e}");
        let e = build_err(
            "bid_spread_bps = 1\nask_spread_bps = 10\norder_qty = 1\nmax_order_age = \"soon\"",
        );
        assert_eq!(e.key(), Some("max_order_age"));
        let e = build_err(
            "bid_spread_bps = 1\nask_spread_bps = 10\norder_qty = 1\nprice_floor = 10\nprice_ceiling = 5",
        );
        assert_eq!(e.key(), Some("price_floor"));
        let e = build_err(
            "bid_spread_bps = 1\nask_spread_bps = 10\norder_qty = 1\ninventory_target_base_pct = 101",
        );
        assert_eq!(e.key(), Some("inventory_target_base_pct"));
    }

    #[test]
    fn the_whole_strategy_table_builds() {
        let table: toml::Value = toml::from_str(
            "name = \"spread\"\nbid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.001\"\n\
             price_source = \"microprice\"\nmax_order_age = \"30s\"",
        )
        .unwrap();
        let s = build(NAME, table).unwrap();
        assert_eq!(s.name(), "spread");
        assert_eq!(s.refresh_policy().max_order_age_ms, Some(30_000));
    }

    /// A value `m × 10^-scale`, with the scale drawn so that grids and values of every
    /// precision meet: a scale above the grid's is off-grid unless the digits happen to fit.
    fn dec(m: i64, scale: u32) -> Decimal {
        Decimal::new(m, scale)
    }

    fn params_toml(
        spreads: (i64, i64, u32),
        levels: (u32, i64, i64),
        qty: (i64, u32),
        skew: (bool, i64, i64, i64),
        extra: (i64, u8, bool, Option<i64>, Option<i64>),
    ) -> String {
        let (bid_bps, ask_bps, bps_scale) = spreads;
        let (levels, level_spread, level_step) = levels;
        let (skew_on, target_pct, multiplier, price_skew_bps) = skew;
        let (min_spread, source, ping_pong, ceiling, floor) = extra;
        let source = ["mid", "last", "microprice", "best_bid", "best_ask"][source as usize % 5];
        let mut t = format!(
            "bid_spread_bps = \"{}\"\nask_spread_bps = \"{}\"\norder_qty = \"{}\"\nlevels = {levels}\n\
             level_spread_bps = \"{}\"\nlevel_qty_step = \"{}\"\nmin_spread_bps = \"{}\"\n\
             inventory_skew_enabled = {skew_on}\ninventory_target_base_pct = {target_pct}\n\
             inventory_range_multiplier = \"{}\"\ninventory_price_skew_bps = \"{}\"\n\
             price_source = \"{source}\"\nping_pong = {ping_pong}\n",
            dec(bid_bps, bps_scale),
            dec(ask_bps, bps_scale),
            dec(qty.0, qty.1),
            dec(level_spread, 1),
            dec(level_step, qty.1),
            dec(min_spread, 1),
            dec(multiplier, 1),
            dec(price_skew_bps, 1),
        );
        if let Some(c) = ceiling {
            t.push_str(&format!("price_ceiling = \"{}\"\n", dec(c, 2)));
        }
        if let Some(f) = floor {
            t.push_str(&format!("price_floor = \"{}\"\n", dec(f, 2)));
        }
        t
    }

    fn decimal_and_exact(
        s: &mut SpreadStrategy,
        ctx: &Context<'_>,
    ) -> (Vec<Quote>, Option<Vec<Quote>>) {
        let mut decimal = Vec::new();
        s.decimal_quotes_into(ctx, &mut decimal);
        let mut exact = Vec::new();
        let taken = s.exact_quotes_into(ctx, &mut exact).map(|()| exact);
        (decimal, taken)
    }

    /// What the tick path answers, from a buffer holding stale quotes (it must clear them).
    fn tick(s: &mut SpreadStrategy, ctx: &Context<'_>) -> Option<Vec<Quote>> {
        let mut out = vec![Quote {
            side: Side::Buy,
            price: dec!(1),
            qty: dec!(1),
            level: 9,
        }];
        s.tick_quotes_into(ctx, &mut out).map(|()| out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        /// The exact-integer paths (the tick path, and the exact path it falls back to) give
        /// the Decimal path's quotes, value for value, whenever they answer at all: same sides,
        /// levels and order, same prices and sizes. Half the cases quote from the mid without
        /// a price skew, where the tick path applies.
        #[test]
        fn the_exact_path_quotes_what_the_decimal_path_quotes(
            spreads in (0i64..3_000, 0i64..3_000, 0u32..=2),
            levels in (1u32..=3, 0i64..200, 0i64..50),
            qty in (1i64..50_000, 0u32..=6),
            skew in (proptest::prelude::any::<bool>(), 0i64..=100, 1i64..40,
                proptest::prop_oneof![proptest::strategy::Just(0i64), 0i64..200]),
            extra in (0i64..100, proptest::prop_oneof![proptest::strategy::Just(0u8), 0u8..5],
                proptest::prelude::any::<bool>(),
                proptest::option::weighted(0.1, 1i64..20_000_000),
                proptest::option::weighted(0.1, 1i64..20_000_000)),
            grid in (0u32..=4, 0u32..=7, proptest::prelude::any::<bool>()),
            book in (1i64..10_000_000, -3i64..60, 0u32..=2, proptest::option::weighted(0.8, 1i64..10_000_000)),
            limits in (0i64..1_000, 0i64..500_000, proptest::option::weighted(0.3, 1i64..100_000_000), 0i64..10_000),
            balances in (-1_000i64..1_000_000_000_000, 0u32..=8, -1_000i64..1_000_000_000_000, 0u32..=10, 0u8..4),
            paused in (0u8..4, proptest::prelude::any::<bool>()),
        ) {
            all_paths_agree(spreads, levels, qty, skew, extra, grid, book, limits, balances, paused)?;
        }

        /// The tick path where it applies: quotes from the mid of a two-sided book at one
        /// scale, without a price skew, on balances from scarce (a cap binds, and the path
        /// declines) to ample.
        #[test]
        fn the_tick_path_quotes_what_the_decimal_path_quotes(
            spreads in (0i64..3_000, 0i64..3_000, 0u32..=2),
            levels in (1u32..=4, 0i64..200, 0i64..50),
            qty in (1i64..50_000, 0u32..=6),
            skew in (proptest::prelude::any::<bool>(), 0i64..=100, 1i64..40),
            extra in (0i64..100, proptest::prelude::any::<bool>(),
                proptest::option::weighted(0.1, 1i64..20_000_000),
                proptest::option::weighted(0.1, 1i64..20_000_000)),
            grid in (0u32..=4, 0u32..=7),
            book in (1i64..10_000_000, 1i64..60, 0u32..=3),
            limits in (0i64..1_000, 0i64..500_000, proptest::option::weighted(0.3, 1i64..100_000_000), 0i64..10_000),
            balances in (0i64..1_000_000_000_000, 0u32..=8, 0i64..1_000_000_000_000_000, 0u32..=6, 0u8..4),
            paused in (0u8..4, proptest::prelude::any::<bool>()),
        ) {
            let (skew_on, target, multiplier) = skew;
            let (min_spread, ping_pong, ceiling, floor) = extra;
            let (grid_tick, grid_step) = grid;
            let (bid, spread, extra_scale) = book;
            all_paths_agree(
                spreads, levels, qty,
                (skew_on, target, multiplier, 0),
                (min_spread, 0, ping_pong, ceiling, floor),
                (grid_tick, grid_step, false),
                (bid, spread, extra_scale, None),
                limits, balances, paused,
            )?;
        }
    }

    /// Every integer path's answer to one case of the property tests, against the Decimal
    /// path's (see [`params_toml`] for the parameter tuples).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn all_paths_agree(
        spreads: (i64, i64, u32),
        levels: (u32, i64, i64),
        qty: (i64, u32),
        skew: (bool, i64, i64, i64),
        extra: (i64, u8, bool, Option<i64>, Option<i64>),
        grid: (u32, u32, bool),
        book: (i64, i64, u32, Option<i64>),
        limits: (i64, i64, Option<i64>, i64),
        balances: (i64, u32, i64, u32, u8),
        paused: (u8, bool),
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let text = params_toml(spreads, levels, qty, skew, extra);
        let table: toml::Value = toml::from_str(&text).unwrap();
        let Ok(p) = crate::params::deserialize::<SpreadParams, _>(NAME, table) else {
            return Ok(());
        };
        let Ok(mut s) = SpreadStrategy::new(p) else {
            return Ok(());
        };
        let (tick_dp, step_dp, odd_grid) = grid;
        let rules = SymbolRules {
            // Now and then a grid that is not a power of ten: the exact path declines it.
            tick_size: if odd_grid && tick_dp == 0 {
                dec(5, 2)
            } else {
                dec(1, tick_dp)
            },
            step_size: dec(1, step_dp),
            min_qty: dec(limits.0, step_dp),
            max_qty: dec(limits.3, 2),
            min_notional: dec(limits.1, 2),
            max_notional: limits.2.map(|m| dec(m, 1)),
        };
        // Best bid and ask in ticks (an extra scale puts them off the grid now and then),
        // sometimes crossed or with one side empty.
        let (bid_ticks, spread_ticks, extra_scale, last) = book;
        let at = |ticks: i64| dec(ticks * 10i64.pow(extra_scale), tick_dp + extra_scale);
        let market = MarketSnapshot {
            best_bid: at(bid_ticks),
            best_bid_qty: dec(3, 0),
            best_ask: if spread_ticks == -3 {
                Decimal::ZERO
            } else {
                at(bid_ticks + spread_ticks)
            },
            best_ask_qty: dec(1, 0),
            last: last.map(|l| dec(l, tick_dp + 1)),
            ts_ms: 0,
        };
        let (base, base_scale, quote, quote_scale, locked) = balances;
        let (base, quote) = (dec(base, base_scale), dec(quote, quote_scale));
        let share = Decimal::new(i64::from(locked), 1) / Decimal::from(3);
        let share = share.round_dp(1);
        let b = Balances {
            base_free: base - (base * share).round_dp(base_scale),
            base_locked: (base * share).round_dp(base_scale),
            quote_free: quote,
            quote_locked: Decimal::ZERO,
        };
        let (pause_mask, fill_side_buy) = paused;
        if pause_mask & 1 == 1 {
            s.on_fill(&Fill {
                side: if fill_side_buy { Side::Buy } else { Side::Sell },
                price: dec(1, 0),
                qty: dec(1, 0),
                fee_quote: Decimal::ZERO,
                ts_ms: 0,
            });
        }
        let ctx = Context {
            now_ms: if pause_mask & 2 == 2 { 0 } else { 10_000_000 },
            rules: &rules,
            market: &market,
            balances: &b,
            live: &[],
        };
        let (decimal, exact) = decimal_and_exact(&mut s, &ctx);
        let shape = |q: &[Quote]| {
            q.iter()
                .map(|q| (q.side, q.level, q.price, q.qty))
                .collect::<Vec<_>>()
        };
        if let Some(exact) = exact {
            proptest::prop_assert_eq!(
                shape(&exact),
                shape(&decimal),
                "{}\n{:?}\n{:?}\n{:?}",
                text,
                rules,
                market,
                b
            );
        }
        if let Some(tick) = tick(&mut s, &ctx) {
            proptest::prop_assert_eq!(
                shape(&tick),
                shape(&decimal),
                "tick path\n{}\n{:?}\n{:?}\n{:?}",
                text,
                rules,
                market,
                b
            );
        }
        Ok(())
    }

    /// A BTCUSDT book three ticks wide, for the tests that pin which path quotes.
    fn btc_market() -> MarketSnapshot {
        MarketSnapshot {
            best_bid: dec!(60012.34),
            best_bid_qty: dec!(0.5),
            best_ask: dec!(60012.37),
            best_ask_qty: dec!(0.4),
            last: None,
            ts_ms: 0,
        }
    }

    /// The tick path must stay the one that runs for the backtest benchmark's parameters on
    /// an ordinary book, and hand over to the other paths where a balance cap binds.
    #[test]
    fn the_tick_path_takes_ordinary_quotes_and_declines_a_binding_cap() {
        let mut s = strategy(
            "bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.01\"\n\
             inventory_skew_enabled = true\ninventory_range_multiplier = 2\nrefresh_tolerance_bps = 2",
        );
        let rules = rules();
        let market = btc_market();
        let ample = balances(dec!(1.00731), dec!(59323.702589012));
        // Skew −0.25 (300 of base in an 800 portfolio, range 400): bids of 0.0125 BTC at
        // ~59950, ~750 USDT that 500 cannot cover.
        let scarce = balances(dec!(0.005), dec!(500));
        for (b, binds) in [(ample, false), (scarce, true)] {
            let ctx = Context {
                now_ms: 0,
                rules: &rules,
                market: &market,
                balances: &b,
                live: &[],
            };
            let (decimal, _) = decimal_and_exact(&mut s, &ctx);
            assert_eq!(tick(&mut s, &ctx).is_none(), binds);
            if let Some(tick) = tick(&mut s, &ctx) {
                assert_eq!(tick.len(), 2);
                assert_eq!(tick, decimal);
            }
            let mut quoted = Vec::new();
            s.quotes_into(&ctx, &mut quoted);
            assert_eq!(quoted, decimal);
        }
    }

    /// The exact path must stay the one that runs: on an ordinary book, balances and
    /// parameters (the backtest benchmark's), it answers, and as the Decimal code would.
    #[test]
    fn the_exact_path_takes_ordinary_quotes() {
        let mut s = strategy(
            "bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.01\"\n\
             inventory_skew_enabled = true\ninventory_range_multiplier = 2\nrefresh_tolerance_bps = 2\n\
             levels = 2\nlevel_spread_bps = 5\nmin_spread_bps = 2\ninventory_price_skew_bps = 3",
        );
        let rules = SymbolRules {
            tick_size: dec!(0.01),
            step_size: dec!(0.00001),
            min_qty: dec!(0.00001),
            max_qty: dec!(9000),
            min_notional: dec!(5),
            max_notional: Some(dec!(9000000)),
        };
        let market = btc_market();
        let b = Balances {
            base_free: dec!(0.98731),
            base_locked: dec!(0.02),
            quote_free: dec!(58123.456789012),
            quote_locked: dec!(1200.2468),
        };
        let ctx = Context {
            now_ms: 0,
            rules: &rules,
            market: &market,
            balances: &b,
            live: &[],
        };
        let (decimal, exact) = decimal_and_exact(&mut s, &ctx);
        let exact = exact.expect("the exact path answers ordinary quotes");
        assert_eq!(exact.len(), 4);
        assert_eq!(exact, decimal);
        // mid 60012.355; base 1.00731 is worth 60451.05 of a 119774.75 portfolio, 563.67
        // above the 50% target, over a range of 0.04 × mid = 2400.49: skew 0.23, so bids are
        // 0.77 × 0.01 and the center moves 0.23 × 3 bps down, to 60008.214; the level-0 bid
        // is 0.999 × that = 59948.206, rounded down to the tick.
        assert_eq!(exact[0].price, dec!(59948.20));
        assert_eq!(exact[0].qty, dec!(0.0077));
        // New rules (a coarser tick, a max notional that binds) are taken at once, not the
        // grid kept from the call before.
        for (tick, max_notional) in [(dec!(0.1), None), (dec!(0.1), Some(dec!(100)))] {
            let rules = SymbolRules {
                tick_size: tick,
                max_notional,
                ..rules.clone()
            };
            let ctx = Context {
                rules: &rules,
                ..ctx
            };
            let (decimal, exact) = decimal_and_exact(&mut s, &ctx);
            assert_eq!(exact.is_some(), max_notional.is_none());
            assert_eq!(exact.unwrap_or_else(|| decimal.clone()), decimal);
            assert_eq!(decimal[0].price, dec!(59948.2));
            let mut quoted = Vec::new();
            s.quotes_into(&ctx, &mut quoted);
            assert_eq!(quoted, decimal);
        }
    }
}
