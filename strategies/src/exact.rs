//! Exact integer arithmetic on the Decimals of the quoting hot path: the strategy's quotes,
//! the risk check and the order diff.
//!
//! Prices and quantities sit on the symbol's tick and step grids, so their mantissas are small
//! and their scales few. Aligned by a power of ten they compare, add and multiply as plain
//! integers, exactly, without the per-operation scale bookkeeping Decimal does (its operations
//! take 96-bit mantissas at any pair of scales and round in loops: 10–40 ns each, and a
//! decision takes dozens). [`Fixed`] is a grid value with an i64 mantissa, [`Wide`] any value
//! Decimal holds. Every operation answers `None` when its inputs leave that range, or when
//! Decimal itself would have rounded (a result past 96 bits or 28 decimal places). So whenever
//! it answers, Decimal's result was exact too and has the same value, and where it does not,
//! the caller runs the Decimal code: the decision is the Decimal one in every case, which
//! proptests hold each caller to.

use crate::Decimal;
use std::cmp::Ordering;

/// Decimal's mantissa bound: a result at or past it is rounded by Decimal, not exact.
const U96: u128 = 1 << 96;

/// Decimal's largest scale.
pub(crate) const MAX_SCALE: u32 = 28;
/// Decimal's largest mantissa, 2^96 − 1.
pub(crate) const MAX_MANTISSA: i128 = (U96 - 1) as i128;

/// A grid value `m / 10^scale` whose mantissa fits 64 bits, as prices and sizes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fixed {
    pub m: i64,
    pub scale: u32,
}

impl Fixed {
    #[inline]
    pub fn of(d: Decimal) -> Option<Fixed> {
        // i64::MIN is left out so that every mantissa here has an i64 absolute value.
        let m = i64::try_from(d.mantissa())
            .ok()
            .filter(|m| *m != i64::MIN)?;
        Some(Fixed {
            m,
            scale: d.scale(),
        })
    }

    /// The mantissa at `scale` (not below `self.scale`), when Decimal could hold it exactly.
    #[inline]
    pub fn at(self, scale: u32) -> Option<i128> {
        Wide::from(self).at(scale)
    }

    /// `self × 10^-4`, as [`crate::bps`] computes it, when that product is exact.
    #[inline]
    pub fn bps(self) -> Option<Fixed> {
        let scale = self.scale + 4;
        (scale <= MAX_SCALE).then_some(Fixed { m: self.m, scale })
    }
}

/// 10^0 ..= 10^38, every power that fits an i128.
const POW10_WIDE: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `a × b`, or `None` past an i128. Operands that fit 64 bits (nearly all) multiply in one
/// widening instruction instead of the overflow-checked 128-bit routine.
#[inline]
fn widening_mul(a: i128, b: i128) -> Option<i128> {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) => Some(i128::from(a) * i128::from(b)),
        _ => a.checked_mul(b),
    }
}

/// A value Decimal holds exactly: `m / 10^scale` with |m| < 2^96 and scale <= 28. Every
/// operation is exact or answers `None`; see the module's note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wide {
    pub m: i128,
    pub scale: u32,
}

impl Wide {
    pub(crate) const ZERO: Wide = Wide { m: 0, scale: 0 };

    /// `m × 10^-scale`, when Decimal could hold it exactly.
    #[inline]
    pub(crate) fn new(m: i128, scale: u32) -> Option<Wide> {
        (fits(m) && scale <= MAX_SCALE).then_some(Wide { m, scale })
    }

    /// `a × b` of two grid values, when Decimal's product is exact.
    pub(crate) fn product(a: Fixed, b: Fixed) -> Option<Wide> {
        Wide::from(a).mul(Wide::from(b))
    }

    /// `a − b` of two grid values, when Decimal's difference is exact.
    pub(crate) fn difference(a: Fixed, b: Fixed) -> Option<Wide> {
        Wide::from(a).sub(Wide::from(b))
    }

    /// The mantissa at `scale` (not below `self.scale`), when Decimal could hold it exactly.
    #[inline]
    pub(crate) fn at(self, scale: u32) -> Option<i128> {
        self.mantissa_at(scale).filter(|m| fits(*m))
    }

    pub(crate) fn abs(self) -> Wide {
        Wide {
            m: self.m.abs(),
            scale: self.scale,
        }
    }

    #[inline]
    pub(crate) fn from_decimal(d: Decimal) -> Wide {
        Wide {
            m: d.mantissa(),
            scale: d.scale(),
        }
    }

    #[inline]
    pub(crate) fn to_decimal(self) -> Decimal {
        // In range by construction: every Wide passed `new` or came from a Decimal. The
        // parts directly: `from_i128_with_scale` re-checks the range out of line.
        let m = self.m.unsigned_abs();
        Decimal::from_parts(
            m as u32,
            (m >> 32) as u32,
            (m >> 64) as u32,
            self.m < 0,
            self.scale,
        )
    }

    pub(crate) fn is_zero(self) -> bool {
        self.m == 0
    }

    pub(crate) fn is_positive(self) -> bool {
        self.m > 0
    }

    /// The mantissa at a scale at least this value's own.
    #[inline]
    fn mantissa_at(self, scale: u32) -> Option<i128> {
        let up = scale.checked_sub(self.scale)? as usize;
        if up == 0 {
            return Some(self.m);
        }
        widening_mul(self.m, *POW10_WIDE.get(up)?)
    }

    #[inline]
    pub(crate) fn mul(self, other: Wide) -> Option<Wide> {
        Wide::new(widening_mul(self.m, other.m)?, self.scale + other.scale)
    }

    /// Exact when both operands, aligned to the larger scale, still fit Decimal's mantissa:
    /// then Decimal's sum is exact as well.
    #[inline]
    pub(crate) fn add(self, other: Wide) -> Option<Wide> {
        // Both under 2^96 (every Wide is): their sum cannot overflow an i128.
        if self.scale == other.scale {
            return Wide::new(self.m + other.m, self.scale);
        }
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.at(scale)?, other.at(scale)?);
        Wide::new(a + b, scale)
    }

    #[inline]
    pub(crate) fn sub(self, other: Wide) -> Option<Wide> {
        self.add(other.neg())
    }

    pub(crate) fn neg(self) -> Wide {
        Wide {
            m: -self.m,
            scale: self.scale,
        }
    }

    /// Exact comparison; `None` only when aligning the scales overflows an i128.
    #[inline]
    pub(crate) fn cmp(self, other: Wide) -> Option<Ordering> {
        if self.scale == other.scale {
            return Some(self.m.cmp(&other.m));
        }
        let scale = self.scale.max(other.scale);
        Some(self.mantissa_at(scale)?.cmp(&other.mantissa_at(scale)?))
    }

    #[inline]
    pub(crate) fn min(self, other: Wide) -> Option<Wide> {
        Some(match self.cmp(other)? {
            Ordering::Greater => other,
            _ => self,
        })
    }

    #[inline]
    pub(crate) fn max(self, other: Wide) -> Option<Wide> {
        Some(match self.cmp(other)? {
            Ordering::Less => other,
            _ => self,
        })
    }

    /// `self.max(Wide::ZERO)` by the sign alone, without aligning the scales.
    #[inline]
    pub(crate) fn at_least_zero(self) -> Wide {
        if self.m < 0 { Wide::ZERO } else { self }
    }

    /// The value in whole units of 10^-dp, rounded toward negative infinity.
    #[inline]
    pub(crate) fn floor_units(self, dp: u32) -> Option<i128> {
        if self.scale <= dp {
            return self.mantissa_at(dp);
        }
        let down = self.scale - dp;
        // A 64-bit division where the values allow it: the 128-bit one is a library call
        // several times slower, and prices and sizes nearly always fit.
        if let Ok(m) = i64::try_from(self.m)
            && let Some(q) = floor_div_pow10(m, down)
        {
            return Some(i128::from(q));
        }
        Some(self.m.div_euclid(*POW10_WIDE.get(down as usize)?))
    }

    /// The value in whole units of 10^-dp, rounded toward positive infinity.
    #[inline]
    pub(crate) fn ceil_units(self, dp: u32) -> Option<i128> {
        Some(-self.neg().floor_units(dp)?)
    }

    /// `round_half_even(100 × self / other)` clamped to [−100, 100]: a ratio in hundredths,
    /// as Decimal gives `(self / other).round_dp(2)` clamped to [−1, 1], for a positive
    /// `other`. `None` when Decimal's own quotient, rounded to its 28 digits, might round
    /// differently than the exact one: only for a divisor of more than 25 digits.
    pub(crate) fn ratio_hundredths_clamped(self, other: Wide) -> Option<i128> {
        if !other.is_positive() {
            return None;
        }
        let scale = self.scale.max(other.scale);
        let (n, d) = (self.mantissa_at(scale)?, other.mantissa_at(scale)?);
        // |quotient| >= 1 clamps to ±1 however it rounds.
        if n.unsigned_abs() >= d.unsigned_abs() {
            return Some(100 * n.signum());
        }
        let hundred_n = n.checked_mul(100)?;
        // One division: a 64-bit one where the operands fit (the 128-bit one is a library
        // call), and the remainder from the quotient rather than from a second division.
        let q = match (i64::try_from(hundred_n), i64::try_from(d)) {
            (Ok(n), Ok(d)) => i128::from(n.div_euclid(d)),
            _ => hundred_n.div_euclid(d),
        };
        let r = hundred_n - q * d;
        let twice_r = 2 * r;
        // Below 1 in magnitude, Decimal's quotient is within 1e-28 of the exact one, and
        // the exact one lies 1/(200·d) or more from a rounding midpoint unless it is on one
        // (then both are exact): with d < 2.5e25 the two round alike.
        if twice_r != d && d >= POW10_WIDE[25] {
            return None;
        }
        let up = twice_r > d || (twice_r == d && q & 1 == 1);
        Some(if up { q + 1 } else { q })
    }
}

/// `m.div_euclid(10^e)` for e in 1..=18, each power a constant the compiler divides by with
/// a multiply and shifts (a hardware division takes ten times as long); `None` for other e.
#[inline]
fn floor_div_pow10(m: i64, e: u32) -> Option<i64> {
    macro_rules! by {
        ($($e:literal)*) => {
            match e {
                $($e => Some(m.div_euclid(10i64.pow($e))),)*
                _ => None,
            }
        };
    }
    by!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18)
}

impl From<Fixed> for Wide {
    #[inline]
    fn from(f: Fixed) -> Wide {
        Wide {
            m: i128::from(f.m),
            scale: f.scale,
        }
    }
}

#[inline]
fn fits(m: i128) -> bool {
    fits_u(m.unsigned_abs())
}

/// Whether a magnitude is inside Decimal's 96-bit mantissa.
#[inline]
pub(crate) fn fits_u(m: u128) -> bool {
    m < U96
}

/// `a.cmp(&b)` without Decimal's out-of-line call: at one scale (two grid prices or two grid
/// quantities nearly always are) the mantissas compare; otherwise the aligned ones do, where
/// aligning fits an i128.
#[inline]
pub(crate) fn cmp(a: Decimal, b: Decimal) -> Ordering {
    if a.scale() == b.scale() {
        return a.mantissa().cmp(&b.mantissa());
    }
    Wide::from_decimal(a)
        .cmp(Wide::from_decimal(b))
        .unwrap_or_else(|| a.cmp(&b))
}

/// Decimals for the property tests that hold the integer paths to Decimal's answers.
#[cfg(test)]
pub(crate) mod arb {
    use crate::Decimal;
    use proptest::prelude::*;

    /// Zero at `scale` with the sign bit set: Decimal keeps it, and it must compare as zero.
    pub fn negative_zero(scale: u32) -> Decimal {
        let mut d = Decimal::new(0, scale);
        d.set_sign_negative(true);
        d
    }

    /// Anything Decimal holds: small and wide mantissas, every scale, both signs, both zeros.
    pub fn decimal() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            4 => (-1_000_000i64..1_000_000, 0u32..=12).prop_map(|(m, s)| Decimal::new(m, s)),
            2 => (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
            1 => (any::<i128>(), 0u32..=28).prop_map(|(m, s)| {
                Decimal::from_i128_with_scale(m >> 32, s)
            }),
            1 => (0u32..=28).prop_map(negative_zero),
            1 => prop_oneof![
                Just(Decimal::MAX),
                Just(Decimal::MIN),
                Just(Decimal::ZERO),
                Just(Decimal::new(i64::MAX, 0)),
                Just(Decimal::new(i64::MIN, 0)),
                Just(Decimal::new(i64::MIN + 1, 3)),
            ],
        ]
    }

    /// A grid price near 60,000 (tick 0.01 or 0.1), mostly positive, at its grid's scale or
    /// below it, as the quantizer leaves it.
    pub fn price() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            8 => (5_999_000i64..6_001_000, 1u32..=2).prop_map(|(m, s)| {
                Decimal::new(if s == 1 { m / 10 } else { m }, s)
            }),
            1 => (5_999i64..6_001).prop_map(|m| Decimal::new(m, 0) * Decimal::TEN),
            1 => decimal(),
        ]
    }

    /// A grid quantity (step 0.00001), often with trailing zeros trimmed.
    pub fn qty() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            8 => (0i64..200_000, 0u32..=5).prop_map(|(m, s)| Decimal::new(m, s)),
            1 => decimal(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::arb::decimal;
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn wide(f: Fixed) -> Decimal {
        Decimal::from_i128_with_scale(f.m.into(), f.scale)
    }

    proptest! {
        #[test]
        fn cmp_is_decimal_cmp(a in decimal(), b in decimal()) {
            prop_assert_eq!(cmp(a, b), a.cmp(&b));
            prop_assert_eq!(cmp(a, a), Ordering::Equal);
            prop_assert_eq!(cmp(-a, a), (-a).cmp(&a));
        }

        #[test]
        fn exact_results_equal_decimal_results(a in decimal(), b in decimal()) {
            let (Some(fa), Some(fb)) = (Fixed::of(a), Fixed::of(b)) else {
                return Ok(());
            };
            prop_assert_eq!(wide(fa), a);
            if let Some(p) = Wide::product(fa, fb) {
                prop_assert_eq!(Decimal::from_i128_with_scale(p.m, p.scale), a * b);
            }
            if let Some(d) = Wide::difference(fa, fb) {
                prop_assert_eq!(Decimal::from_i128_with_scale(d.m, d.scale), a - b);
            }
            if let Some(o) = Wide::from(fa).cmp(Wide::from(fb)) {
                prop_assert_eq!(o, a.cmp(&b));
            }
        }
    }

    #[test]
    fn grid_values_take_the_integer_path() {
        let p = Fixed::of(dec!(60000.12)).unwrap();
        let q = Fixed::of(dec!(0.0099)).unwrap();
        assert_eq!(
            Wide::difference(p, Fixed::of(dec!(60000.1)).unwrap())
                .unwrap()
                .m,
            2
        );
        assert_eq!(
            Wide::product(p, q).unwrap(),
            Wide {
                m: 6_000_012 * 99,
                scale: 6
            }
        );
        assert_eq!(
            Fixed::of(dec!(2)).unwrap().bps(),
            Some(Fixed { m: 2, scale: 4 })
        );
        // Past 28 places Decimal rounds the product: no exact answer.
        let tiny = Fixed::of(Decimal::new(1, 20)).unwrap();
        assert_eq!(Wide::product(tiny, tiny), None);
    }
}

#[cfg(test)]
mod wide_tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal::RoundingStrategy;

    fn decimal() -> impl Strategy<Value = Decimal> {
        (any::<i64>(), 0u32..=12).prop_map(|(m, s)| Decimal::new(m / (1 << (m & 31)), s))
    }

    proptest! {
        /// Whatever succeeds here is exactly Decimal's result; and on values of quoting's
        /// size it does succeed.
        #[test]
        fn operations_agree_with_decimal(a in decimal(), b in decimal()) {
            let (fa, fb) = (Wide::from_decimal(a), Wide::from_decimal(b));
            // Below 10^15 both still fit Decimal once aligned to a scale up to 12.
            let small = a.mantissa().abs() < 1_000_000_000_000_000
                && b.mantissa().abs() < 1_000_000_000_000_000;
            match (fa.add(fb), fa.sub(fb)) {
                (Some(sum), Some(difference)) => {
                    prop_assert_eq!(sum.to_decimal(), a + b);
                    prop_assert_eq!(difference.to_decimal(), a - b);
                }
                _ => prop_assert!(!small, "{} {}", a, b),
            }
            if let Some(product) = fa.mul(fb) {
                prop_assert_eq!(product.to_decimal(), a * b);
            }
            prop_assert_eq!(fa.cmp(fb), Some(a.cmp(&b)));
            prop_assert_eq!(fa.at_least_zero().to_decimal(), a.max(Decimal::ZERO));
            prop_assert_eq!(Some(fa.at_least_zero()), fa.max(Wide::ZERO));
            for dp in 0..=10 {
                let floor = fa.floor_units(dp).expect("small values floor");
                let ceil = fa.ceil_units(dp).expect("small values ceil");
                // Whole units of 10^-dp, as an i128 (it may be past Decimal's range).
                let units = |d: Decimal| d.mantissa() * 10i128.pow(dp - d.scale());
                prop_assert_eq!(floor,
                    units(a.round_dp_with_strategy(dp, RoundingStrategy::ToNegativeInfinity)));
                prop_assert_eq!(ceil,
                    units(a.round_dp_with_strategy(dp, RoundingStrategy::ToPositiveInfinity)));
            }
        }

        #[test]
        fn hundredths_agree_with_decimal(n in decimal(), d in decimal()) {
            prop_assume!(d > Decimal::ZERO);
            let ours = Wide::from_decimal(n).ratio_hundredths_clamped(Wide::from_decimal(d));
            // A quotient beyond Decimal's range clamps to ±1 whatever its digits.
            let Some(quotient) = n.checked_div(d) else {
                prop_assert_eq!(ours.unwrap_or(0).abs(), 100);
                return Ok(());
            };
            let theirs = quotient
                .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
                .clamp(Decimal::NEGATIVE_ONE, Decimal::ONE);
            // None (a divisor beyond 25 digits once aligned) leaves it to Decimal.
            if let Some(k) = ours {
                prop_assert_eq!(Decimal::new(k as i64, 2), theirs);
            }
        }
    }

    #[test]
    fn midpoints_round_to_even_and_large_values_refuse() {
        let f = |m: i64, s: u32| Wide::from_decimal(Decimal::new(m, s));
        // 0.125 → 0.12, 0.135 → 0.14, −0.125 → −0.12.
        assert_eq!(f(1, 0).ratio_hundredths_clamped(f(8, 0)), Some(12));
        assert_eq!(f(135, 3).ratio_hundredths_clamped(f(1, 0)), Some(14));
        assert_eq!(f(-1, 0).ratio_hundredths_clamped(f(8, 0)), Some(-12));
        assert_eq!(f(3, 0).ratio_hundredths_clamped(f(2, 0)), Some(100));
        assert_eq!(f(-2, 0).ratio_hundredths_clamped(f(2, 0)), Some(-100));
        assert_eq!(f(1, 0).ratio_hundredths_clamped(f(0, 0)), None);
        let big = Wide::new((1 << 96) - 1, 0).unwrap();
        assert_eq!(big.mul(f(2, 0)), None);
        assert_eq!(big.add(f(1, 0)), None);
        assert_eq!(Wide::new(1, 29), None);
        assert_eq!(f(1, 20).mul(f(1, 9)), None);
    }
}
