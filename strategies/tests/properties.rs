//! Properties every strategy's output must have, whatever the market and parameters.

use proptest::prelude::*;
use rust_decimal_macros::dec;
use strategies::diff::{Action, diff};
use strategies::quantize::on_grid;
use strategies::risk::{RiskInput, RiskLimits, RiskState, check};
use strategies::{
    Balances, Context, Decimal, LiveOrder, MarketSnapshot, Quote, RefreshPolicy, Side,
    Strategy as QuoteStrategy, SymbolRules, build,
};

fn rules_strategy() -> impl Strategy<Value = SymbolRules> {
    (
        prop::sample::select(vec![dec!(0.00001), dec!(0.01), dec!(0.1), dec!(1)]),
        prop::sample::select(vec![dec!(0.00000001), dec!(0.001), dec!(0.1), dec!(1)]),
        0u32..20,
        prop::option::of(1_000u32..1_000_000),
    )
        .prop_map(|(tick, step, min_notional, max_notional)| SymbolRules {
            tick_size: tick,
            step_size: step,
            min_qty: step,
            max_qty: dec!(9000),
            min_notional: Decimal::from(min_notional),
            max_notional: max_notional.map(Decimal::from),
        })
}

/// A two-sided book on the tick grid.
fn market_for(rules: &SymbolRules) -> impl Strategy<Value = MarketSnapshot> + use<> {
    let tick = rules.tick_size;
    (
        1_000u64..10_000_000,
        1u64..50,
        0u32..1000,
        0u32..1000,
        0u64..1_000_000,
    )
        .prop_map(move |(bid_ticks, width, bid_qty, ask_qty, ts)| {
            let best_bid = Decimal::from(bid_ticks) * tick;
            MarketSnapshot {
                best_bid,
                best_bid_qty: Decimal::from(bid_qty),
                best_ask: best_bid + Decimal::from(width) * tick,
                best_ask_qty: Decimal::from(ask_qty),
                last: Some(best_bid),
                ts_ms: ts,
            }
        })
}

fn balances_for(mid: Decimal) -> impl Strategy<Value = Balances> {
    (0u32..=100, 0u32..=100).prop_map(move |(base_pct, scale)| {
        // Total portfolio worth 0..=100 orders-worth of 1 base each; base share varies.
        let total_base = Decimal::from(scale) / Decimal::TEN;
        let base = total_base * Decimal::from(base_pct) / Decimal::ONE_HUNDRED;
        Balances {
            base_free: base,
            base_locked: Decimal::ZERO,
            quote_free: (total_base - base) * mid,
            quote_locked: Decimal::ZERO,
        }
    })
}

fn spread_table() -> impl Strategy<Value = String> {
    (
        0u32..200,
        0u32..200,
        1u32..500,
        1u32..5,
        0u32..30,
        any::<bool>(),
        0u32..=100,
        0u32..50,
        prop::sample::select(vec!["mid", "last", "microprice", "best_bid", "best_ask"]),
        0u32..20,
    )
        .prop_map(
            |(bid, ask, qty_milli, levels, level_bps, skew, target, price_skew, source, min_sp)| {
                format!(
                    "bid_spread_bps = {bid}\nask_spread_bps = {ask}\norder_qty = \"{}\"\n\
                     levels = {levels}\nlevel_spread_bps = {level_bps}\nlevel_qty_step = \"0.01\"\n\
                     inventory_skew_enabled = {skew}\ninventory_target_base_pct = {target}\n\
                     inventory_price_skew_bps = {price_skew}\nprice_source = \"{source}\"\n\
                     min_spread_bps = {min_sp}",
                    Decimal::from(qty_milli) / Decimal::from(1000)
                )
            },
        )
}

fn avellaneda_table() -> impl Strategy<Value = String> {
    (
        1u32..1000,
        1u32..1000,
        1u32..500,
        0u32..1000,
        any::<bool>(),
        0u32..20,
    )
        .prop_map(
            |(gamma_micro, kappa_milli, qty_milli, sigma_milli, infinite, min_sp)| {
                format!(
                    "gamma = \"{}\"\nkappa = \"{}\"\norder_qty = \"{}\"\nsigma = \"{}\"\n\
                 horizon = \"{}\"\nmin_spread_bps = {min_sp}",
                    Decimal::from(gamma_micro) / Decimal::from(1_000_000),
                    Decimal::from(kappa_milli) / Decimal::from(1000),
                    Decimal::from(qty_milli) / Decimal::from(1000),
                    Decimal::from(sigma_milli) / Decimal::from(1000),
                    if infinite { "infinite" } else { "session" },
                )
            },
        )
}

fn build_from(name: &str, text: &str) -> Box<dyn QuoteStrategy> {
    let table: toml::Value = toml::from_str(text).unwrap();
    build(name, table).unwrap()
}

fn quotes_of(
    s: &mut dyn QuoteStrategy,
    rules: &SymbolRules,
    market: &MarketSnapshot,
    balances: &Balances,
) -> Vec<Quote> {
    s.on_market(market);
    s.on_balances(balances);
    let ctx = Context {
        now_ms: market.ts_ms,
        rules,
        market,
        balances,
        live: &[],
    };
    s.quotes(&ctx).quotes
}

fn assert_well_formed(
    quotes: &[Quote],
    rules: &SymbolRules,
    market: &MarketSnapshot,
    balances: &Balances,
) -> Result<(), TestCaseError> {
    let mut base_offered = Decimal::ZERO;
    let mut quote_committed = Decimal::ZERO;
    for q in quotes {
        prop_assert!(on_grid(q.price, rules.tick_size), "price off tick: {q:?}");
        prop_assert!(on_grid(q.qty, rules.step_size), "qty off step: {q:?}");
        prop_assert!(q.price > Decimal::ZERO && q.qty >= rules.min_qty, "{q:?}");
        prop_assert!(q.qty <= rules.max_qty);
        prop_assert!(
            q.price * q.qty >= rules.min_notional,
            "below min notional: {q:?}"
        );
        if let Some(max) = rules.max_notional {
            prop_assert!(q.price * q.qty <= max);
        }
        match q.side {
            Side::Buy => {
                prop_assert!(
                    q.price < market.best_ask,
                    "bid crosses: {q:?} vs {market:?}"
                );
                quote_committed += q.price * q.qty;
            }
            Side::Sell => {
                prop_assert!(
                    q.price > market.best_bid,
                    "ask crosses: {q:?} vs {market:?}"
                );
                base_offered += q.qty;
            }
        }
    }
    let max_bid = quotes
        .iter()
        .filter(|q| q.side == Side::Buy)
        .map(|q| q.price)
        .max();
    let min_ask = quotes
        .iter()
        .filter(|q| q.side == Side::Sell)
        .map(|q| q.price)
        .min();
    if let (Some(b), Some(a)) = (max_bid, min_ask) {
        prop_assert!(b < a, "bid {b} >= ask {a}");
    }
    prop_assert!(base_offered <= balances.base_total());
    prop_assert!(quote_committed <= balances.quote_total());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn spread_quotes_are_quantized_and_never_cross(
        (rules, market, balances, table) in rules_strategy().prop_flat_map(|r| {
            let m = market_for(&r);
            (Just(r), m).prop_flat_map(|(r, m)| {
                let b = balances_for(m.mid().unwrap());
                (Just(r), Just(m), b, spread_table())
            })
        })
    ) {
        let mut s = build_from("spread", &table);
        let quotes = quotes_of(s.as_mut(), &rules, &market, &balances);
        assert_well_formed(&quotes, &rules, &market, &balances)?;
    }

    #[test]
    fn avellaneda_quotes_are_quantized_and_never_cross(
        (rules, market, balances, table) in rules_strategy().prop_flat_map(|r| {
            let m = market_for(&r);
            (Just(r), m).prop_flat_map(|(r, m)| {
                let b = balances_for(m.mid().unwrap());
                (Just(r), Just(m), b, avellaneda_table())
            })
        })
    ) {
        let mut s = build_from("avellaneda", &table);
        let quotes = quotes_of(s.as_mut(), &rules, &market, &balances);
        assert_well_formed(&quotes, &rules, &market, &balances)?;
    }

    /// Whatever the desired quotes, the allowed ones never take the worst-case position or
    /// exposure past its limit (or further past it than it already is).
    #[test]
    fn risk_limits_are_never_breached(
        desired in prop::collection::vec((any::<bool>(), 1u32..2000, 1u32..500, 0u32..5), 0..12),
        position in -50i32..50,
        max_pos in 1u32..40,
        max_exposure in 1u32..5000,
        max_orders in 1u32..4,
    ) {
        let desired: Vec<Quote> = desired
            .into_iter()
            .map(|(buy, price, qty, level)| Quote {
                side: if buy { Side::Buy } else { Side::Sell },
                price: Decimal::from(price) / Decimal::TEN,
                qty: Decimal::from(qty) / Decimal::TEN,
                level,
            })
            .collect();
        let market = MarketSnapshot {
            best_bid: dec!(99.9),
            best_bid_qty: dec!(1),
            best_ask: dec!(100.1),
            best_ask_qty: dec!(1),
            last: None,
            ts_ms: 0,
        };
        let limits = RiskLimits {
            max_base_position: Some(Decimal::from(max_pos)),
            max_quote_exposure: Some(Decimal::from(max_exposure)),
            max_open_orders_per_side: Some(max_orders),
            ..Default::default()
        };
        let position = Decimal::from(position);
        let input = RiskInput {
            now_ms: 0,
            market: &market,
            position_base: position,
            daily_pnl: Decimal::ZERO,
            live: &[],
        };
        let mut state = RiskState::new();
        let decision = check(&limits, &mut state, &input, &desired);
        prop_assert_eq!(decision.allowed.len() + decision.refused.len(), desired.len());
        let held_value = position * market.mid().unwrap();
        for (side, sign) in [(Side::Buy, Decimal::ONE), (Side::Sell, Decimal::NEGATIVE_ONE)] {
            let allowed: Vec<&Quote> = decision.allowed.iter().filter(|q| q.side == side).collect();
            prop_assert!(allowed.len() as u32 <= max_orders);
            let worst = position + sign * allowed.iter().map(|q| q.qty).sum::<Decimal>();
            prop_assert!(worst.abs() <= Decimal::from(max_pos).max(position.abs()), "{side}: {worst}");
            let value = held_value + sign * allowed.iter().map(|q| q.price * q.qty).sum::<Decimal>();
            prop_assert!(value.abs() <= Decimal::from(max_exposure).max(held_value.abs()), "{side}: {value}");
        }
        let counted: u64 = state.refusal_counts().map(|(_, n)| n).sum();
        prop_assert_eq!(counted, decision.refused.len() as u64);
    }

    /// More base (at the same portfolio value) never makes the strategy buy more or sell less,
    /// and with price skew never raises its prices.
    #[test]
    fn inventory_skew_leans_against_the_inventory(
        base_lo in 0u32..=100,
        base_extra in 0u32..=100,
        range_mult in 1u32..5,
        price_skew in 0u32..30,
    ) {
        let rules = SymbolRules {
            tick_size: dec!(0.01),
            step_size: dec!(0.001),
            min_qty: dec!(0.001),
            max_qty: dec!(1000),
            min_notional: dec!(1),
            max_notional: None,
        };
        let market = MarketSnapshot {
            best_bid: dec!(99.99),
            best_bid_qty: dec!(1),
            best_ask: dec!(100.01),
            best_ask_qty: dec!(1),
            last: None,
            ts_ms: 0,
        };
        let table = format!(
            "bid_spread_bps = 20\nask_spread_bps = 20\norder_qty = 1\nlevels = 2\nlevel_spread_bps = 10\n\
             inventory_skew_enabled = true\ninventory_range_multiplier = {range_mult}\n\
             inventory_price_skew_bps = {price_skew}"
        );
        // Portfolio worth 20 base at 100; base share lo% and (lo + extra)%.
        let portfolio = |pct: u32| {
            let base = Decimal::from(20 * pct.min(100)) / Decimal::ONE_HUNDRED;
            Balances { base_free: base, quote_free: (dec!(20) - base) * dec!(100), ..Default::default() }
        };
        let hi = (base_lo + base_extra).min(100);
        let mut s = build_from("spread", &table);
        let lo_quotes = quotes_of(s.as_mut(), &rules, &market, &portfolio(base_lo));
        let hi_quotes = quotes_of(s.as_mut(), &rules, &market, &portfolio(hi));
        let size = |qs: &[Quote], side| qs.iter().filter(|q| q.side == side).map(|q| q.qty).sum::<Decimal>();
        prop_assert!(size(&hi_quotes, Side::Buy) <= size(&lo_quotes, Side::Buy));
        prop_assert!(size(&hi_quotes, Side::Sell) >= size(&lo_quotes, Side::Sell));
        for (h, l) in hi_quotes.iter().flat_map(|h| lo_quotes.iter().map(move |l| (h, l))) {
            if h.side == l.side && h.level == l.level {
                prop_assert!(h.price <= l.price, "{h:?} above {l:?}");
            }
        }

        // Avellaneda: a larger inventory lowers the reservation price and both quotes.
        let mut a = build_from("avellaneda", "gamma = \"0.01\"\nkappa = 1\nsigma = \"0.5\"\norder_qty = 1\nmax_inventory_units = 100");
        let lo_a = quotes_of(a.as_mut(), &rules, &market, &portfolio(base_lo));
        let hi_a = quotes_of(a.as_mut(), &rules, &market, &portfolio(hi));
        for (h, l) in hi_a.iter().flat_map(|h| lo_a.iter().map(move |l| (h, l))) {
            if h.side == l.side {
                prop_assert!(h.price <= l.price, "{h:?} above {l:?}");
            }
        }
    }

    /// Applying the diff's actions to the live orders yields exactly the desired slots, each
    /// within tolerance of its desired price, and nothing inside the minimum spread.
    #[test]
    fn diff_converges_to_the_desired_quotes(
        desired in prop::collection::vec((any::<bool>(), 9_000u32..11_000, 0u32..3), 0..6),
        live in prop::collection::vec((any::<bool>(), 9_000u32..11_000, 0u32..3, 0u64..100_000), 0..6),
        tolerance in 0u32..20,
        now in 0u64..200_000,
    ) {
        let market = MarketSnapshot {
            best_bid: dec!(99.99),
            best_bid_qty: dec!(1),
            best_ask: dec!(100.01),
            best_ask_qty: dec!(1),
            last: None,
            ts_ms: now,
        };
        let policy = RefreshPolicy {
            tolerance_bps: Decimal::from(tolerance),
            max_order_age_ms: Some(60_000),
            min_spread_bps: dec!(5),
        };
        // Desired quotes as a strategy would produce them: one per slot, outside the min spread.
        let mut desired: Vec<Quote> = desired
            .into_iter()
            .map(|(buy, p, level)| {
                let side = if buy { Side::Buy } else { Side::Sell };
                let offset = Decimal::from(p % 1000 + 6) / dec!(100);
                let price = match side { Side::Buy => dec!(100) - offset, Side::Sell => dec!(100) + offset };
                Quote { side, price, qty: dec!(1), level }
            })
            .collect();
        desired.sort_by_key(|q| (q.side, q.level));
        desired.dedup_by_key(|q| (q.side, q.level));
        let live: Vec<LiveOrder> = live
            .into_iter()
            .enumerate()
            .map(|(i, (buy, p, level, placed))| LiveOrder {
                id: i as u64,
                side: if buy { Side::Buy } else { Side::Sell },
                price: Decimal::from(p) / dec!(100),
                qty: dec!(1),
                placed_ms: placed.min(now),
                level,
            })
            .collect();
        let actions = diff(&desired, &live, &policy, &market, now);
        let mut book: Vec<(Side, u32, Decimal)> = live.iter().map(|o| (o.side, o.level, o.price)).collect();
        let mut ids: Vec<Option<u64>> = live.iter().map(|o| Some(o.id)).collect();
        for a in &actions {
            match a {
                Action::Cancel { id, .. } => {
                    let i = ids.iter().position(|x| *x == Some(*id)).unwrap();
                    ids[i] = None;
                }
                Action::Place(q) => {
                    book.push((q.side, q.level, q.price));
                    ids.push(Some(u64::MAX));
                }
            }
        }
        let remaining: Vec<(Side, u32, Decimal)> = book
            .into_iter()
            .zip(ids)
            .filter_map(|(o, id)| id.map(|_| o))
            .collect();
        prop_assert_eq!(remaining.len(), desired.len());
        for q in &desired {
            let o = remaining.iter().find(|o| o.0 == q.side && o.1 == q.level).unwrap();
            prop_assert!((o.2 - q.price).abs() <= Decimal::from(tolerance) / dec!(10000) * q.price);
        }
    }
}
