//! Exact integer arithmetic on the Decimals the diff and the risk layer see.
//!
//! Prices and quantities sit on the symbol's tick and step grids, so their mantissas are small
//! and their scales few. Aligned by a power of ten they compare, add and multiply as plain
//! integers, exactly, without the per-operation scale bookkeeping Decimal does. Every helper
//! answers `None` when its inputs leave that range, or when Decimal itself would have rounded
//! (a result past 96 bits or 28 decimal places): the caller then runs the Decimal code, so the
//! decision is the Decimal one in every case.

use crate::Decimal;
use std::cmp::Ordering;

/// Decimal's mantissa bound: a result at or past it is rounded by Decimal, not exact.
const U96: u128 = 1 << 96;

/// Decimal's largest scale.
const MAX_SCALE: u32 = 28;

const POW10: [i64; 19] = {
    let mut p = [1i64; 19];
    let mut i = 1;
    while i < 19 {
        p[i] = p[i - 1] * 10;
        i += 1;
    }
    p
};

/// `m / 10^scale` with a mantissa small enough that aligning it by up to 10^18 stays far inside
/// i128.
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
        let k = scale.checked_sub(self.scale)?;
        if k == 0 {
            return Some(i128::from(self.m));
        }
        let v = i128::from(self.m) * i128::from(*POW10.get(k as usize)?);
        fits(v).then_some(v)
    }

    /// `self × 10^-4`, as [`crate::bps`] computes it, when that product is exact.
    #[inline]
    pub fn bps(self) -> Option<Fixed> {
        let scale = self.scale + 4;
        (scale <= MAX_SCALE).then_some(Fixed { m: self.m, scale })
    }
}

/// A value Decimal holds exactly: `m / 10^scale` with |m| < 2^96 and scale <= 28.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wide {
    pub m: i128,
    pub scale: u32,
}

impl Wide {
    /// `a × b` when Decimal's product is exact (it rounds past 96 bits or 28 places).
    #[inline]
    pub fn mul(a: Fixed, b: Fixed) -> Option<Wide> {
        let m = i128::from(a.m) * i128::from(b.m);
        let scale = a.scale + b.scale;
        (fits(m) && scale <= MAX_SCALE).then_some(Wide { m, scale })
    }

    /// `a − b` when Decimal's difference is exact: both aligned operands and the result inside
    /// 96 bits.
    #[inline]
    pub fn sub(a: Fixed, b: Fixed) -> Option<Wide> {
        let scale = a.scale.max(b.scale);
        let m = a.at(scale)? - b.at(scale)?;
        fits(m).then_some(Wide { m, scale })
    }

    /// The mantissa at `scale` (not below `self.scale`, at most nine places above it), when
    /// Decimal could hold it exactly.
    #[inline]
    pub fn at(self, scale: u32) -> Option<i128> {
        let k = scale.checked_sub(self.scale)?;
        if k == 0 {
            return Some(self.m);
        }
        let v = self.m * pow10_9(k)?;
        fits(v).then_some(v)
    }

    #[inline]
    pub fn abs(self) -> Wide {
        Wide {
            m: self.m.abs(),
            scale: self.scale,
        }
    }

    /// Exact comparison. Both mantissas are under 2^96, so a shift of up to nine places (10^9
    /// < 2^30) stays inside i128; wider shifts answer `None`.
    #[inline]
    pub fn cmp(self, other: Wide) -> Option<Ordering> {
        let (a, b) = match self.scale.cmp(&other.scale) {
            Ordering::Equal => (self.m, other.m),
            Ordering::Less => (self.m * pow10_9(other.scale - self.scale)?, other.m),
            Ordering::Greater => (self.m, other.m * pow10_9(self.scale - other.scale)?),
        };
        Some(a.cmp(&b))
    }
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
fn pow10_9(k: u32) -> Option<i128> {
    (k <= 9).then(|| i128::from(POW10[k as usize]))
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
/// quantities nearly always are) the mantissas compare; otherwise i64 mantissas aligned by up
/// to 10^18 do, inside i128.
#[inline]
pub(crate) fn cmp(a: Decimal, b: Decimal) -> Ordering {
    if a.scale() == b.scale() {
        return a.mantissa().cmp(&b.mantissa());
    }
    let aligned = Fixed::of(a).zip(Fixed::of(b)).and_then(|(x, y)| {
        let scale = x.scale.max(y.scale);
        let up =
            |f: Fixed| Some(i128::from(f.m) * i128::from(*POW10.get((scale - f.scale) as usize)?));
        Some(up(x)?.cmp(&up(y)?))
    });
    aligned.unwrap_or_else(|| a.cmp(&b))
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
            if let Some(p) = Wide::mul(fa, fb) {
                prop_assert_eq!(Decimal::from_i128_with_scale(p.m, p.scale), a * b);
            }
            if let Some(d) = Wide::sub(fa, fb) {
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
            Wide::sub(p, Fixed::of(dec!(60000.1)).unwrap()).unwrap().m,
            2
        );
        assert_eq!(
            Wide::mul(p, q).unwrap(),
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
        assert_eq!(Wide::mul(tiny, tiny), None);
    }
}
