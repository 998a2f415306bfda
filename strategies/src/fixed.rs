//! Exact fixed-point arithmetic for the quoting hot path.
//!
//! A [`Fixed`] is `m × 10^-s`, a Decimal unpacked into an i128. Every operation is exact or
//! refuses with `None`: nothing here rounds. The bounds are Decimal's own (a mantissa below
//! 2^96, a scale of at most 28), so when an operation here succeeds, the same operation on
//! Decimal was exact as well and gave the same value. That makes it a fast path with the
//! Decimal code as its fallback: wherever this says `None`, the caller runs the Decimal code,
//! and the two agree by construction (proptests hold them to it).
//!
//! Why not Decimal itself: its operations handle 96-bit mantissas with any pair of scales,
//! rounding and rescaling in loops, and cost 10–40 ns each; a quote takes a few dozen of them.
//! Here an operation on the values quoting meets (prices, sizes, balances) is one or two
//! machine multiplications.

use std::cmp::Ordering;

use rust_decimal::Decimal;

/// 2^96 − 1: the largest Decimal mantissa.
const MAX_MANTISSA: i128 = (1 << 96) - 1;
const MAX_SCALE: u32 = 28;

/// 10^0 ..= 10^38, every power that fits an i128.
const POW10: [i128; 39] = {
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
fn widening_mul(a: i128, b: i128) -> Option<i128> {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) => Some(i128::from(a) * i128::from(b)),
        _ => a.checked_mul(b),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fixed {
    mantissa: i128,
    scale: u32,
}

impl Fixed {
    pub(crate) const ZERO: Fixed = Fixed {
        mantissa: 0,
        scale: 0,
    };

    /// `mantissa × 10^-scale`, when Decimal could hold it exactly.
    pub(crate) fn new(mantissa: i128, scale: u32) -> Option<Fixed> {
        (mantissa.unsigned_abs() <= MAX_MANTISSA as u128 && scale <= MAX_SCALE)
            .then_some(Fixed { mantissa, scale })
    }

    pub(crate) fn from_decimal(d: Decimal) -> Fixed {
        Fixed {
            mantissa: d.mantissa(),
            scale: d.scale(),
        }
    }

    pub(crate) fn to_decimal(self) -> Decimal {
        // In range by construction: every Fixed passed `new` or came from a Decimal.
        Decimal::from_i128_with_scale(self.mantissa, self.scale)
    }

    pub(crate) fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    pub(crate) fn is_positive(self) -> bool {
        self.mantissa > 0
    }

    /// The mantissa at a scale at least this value's own.
    fn mantissa_at(self, scale: u32) -> Option<i128> {
        let up = scale.checked_sub(self.scale)? as usize;
        if up == 0 {
            return Some(self.mantissa);
        }
        widening_mul(self.mantissa, *POW10.get(up)?)
    }

    pub(crate) fn mul(self, other: Fixed) -> Option<Fixed> {
        Fixed::new(
            widening_mul(self.mantissa, other.mantissa)?,
            self.scale + other.scale,
        )
    }

    /// Exact when both operands, aligned to the larger scale, still fit Decimal's mantissa:
    /// then Decimal's sum is exact as well.
    pub(crate) fn add(self, other: Fixed) -> Option<Fixed> {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.mantissa_at(scale)?, other.mantissa_at(scale)?);
        Fixed::new(a, scale)?;
        Fixed::new(b, scale)?;
        Fixed::new(a + b, scale)
    }

    pub(crate) fn sub(self, other: Fixed) -> Option<Fixed> {
        self.add(other.neg())
    }

    pub(crate) fn neg(self) -> Fixed {
        Fixed {
            mantissa: -self.mantissa,
            scale: self.scale,
        }
    }

    /// Exact comparison; `None` only when aligning the scales overflows an i128.
    pub(crate) fn cmp(self, other: Fixed) -> Option<Ordering> {
        let scale = self.scale.max(other.scale);
        Some(self.mantissa_at(scale)?.cmp(&other.mantissa_at(scale)?))
    }

    pub(crate) fn min(self, other: Fixed) -> Option<Fixed> {
        Some(match self.cmp(other)? {
            Ordering::Greater => other,
            _ => self,
        })
    }

    pub(crate) fn max(self, other: Fixed) -> Option<Fixed> {
        Some(match self.cmp(other)? {
            Ordering::Less => other,
            _ => self,
        })
    }

    /// The value in whole units of 10^-dp, rounded toward negative infinity.
    pub(crate) fn floor_units(self, dp: u32) -> Option<i128> {
        if self.scale <= dp {
            return self.mantissa_at(dp);
        }
        let power = *POW10.get((self.scale - dp) as usize)?;
        // A 64-bit division where the values allow it: the 128-bit one is a library call
        // several times slower, and prices and sizes nearly always fit.
        if let (Ok(m), Ok(p)) = (i64::try_from(self.mantissa), i64::try_from(power)) {
            return Some(i128::from(m.div_euclid(p)));
        }
        Some(self.mantissa.div_euclid(power))
    }

    /// The value in whole units of 10^-dp, rounded toward positive infinity.
    pub(crate) fn ceil_units(self, dp: u32) -> Option<i128> {
        Some(-self.neg().floor_units(dp)?)
    }

    /// `round_half_even(100 × self / other)` clamped to [−100, 100]: a ratio in hundredths,
    /// as Decimal gives `(self / other).round_dp(2)` clamped to [−1, 1], for a positive
    /// `other`. `None` when Decimal's own quotient, rounded to its 28 digits, might round
    /// differently than the exact one: only for a divisor of more than 25 digits.
    pub(crate) fn ratio_hundredths_clamped(self, other: Fixed) -> Option<i128> {
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
        let (q, r) = (hundred_n.div_euclid(d), hundred_n.rem_euclid(d));
        let twice_r = 2 * r;
        // Below 1 in magnitude, Decimal's quotient is within 1e-28 of the exact one, and
        // the exact one lies 1/(200·d) or more from a rounding midpoint unless it is on one
        // (then both are exact): with d < 2.5e25 the two round alike.
        if twice_r != d && d >= POW10[25] {
            return None;
        }
        let up = twice_r > d || (twice_r == d && q & 1 == 1);
        Some(if up { q + 1 } else { q })
    }
}

#[cfg(test)]
mod tests {
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
            let (fa, fb) = (Fixed::from_decimal(a), Fixed::from_decimal(b));
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
            let ours = Fixed::from_decimal(n).ratio_hundredths_clamped(Fixed::from_decimal(d));
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
        let f = |m: i64, s: u32| Fixed::from_decimal(Decimal::new(m, s));
        // 0.125 → 0.12, 0.135 → 0.14, −0.125 → −0.12.
        assert_eq!(f(1, 0).ratio_hundredths_clamped(f(8, 0)), Some(12));
        assert_eq!(f(135, 3).ratio_hundredths_clamped(f(1, 0)), Some(14));
        assert_eq!(f(-1, 0).ratio_hundredths_clamped(f(8, 0)), Some(-12));
        assert_eq!(f(3, 0).ratio_hundredths_clamped(f(2, 0)), Some(100));
        assert_eq!(f(-2, 0).ratio_hundredths_clamped(f(2, 0)), Some(-100));
        assert_eq!(f(1, 0).ratio_hundredths_clamped(f(0, 0)), None);
        let big = Fixed::new(MAX_MANTISSA, 0).unwrap();
        assert_eq!(big.mul(f(2, 0)), None);
        assert_eq!(big.add(f(1, 0)), None);
        assert_eq!(Fixed::new(1, 29), None);
        assert_eq!(f(1, 20).mul(f(1, 9)), None);
    }
}
