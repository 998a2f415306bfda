//! Per-account balances. Every mutation is checked: a balance can never go negative,
//! and amounts move between free and locked exactly (rust_decimal, no rounding here).

use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    pub free: Decimal,
    pub locked: Decimal,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BalanceError {
    #[error("insufficient {asset}: need {need}, have {have}")]
    Insufficient {
        asset: String,
        need: Decimal,
        have: Decimal,
    },
    #[error("negative amount {0}")]
    NegativeAmount(Decimal),
}

#[derive(Debug, Clone, Default)]
pub struct Balances {
    assets: BTreeMap<String, Balance>,
    /// Assets touched since the last `take_changed`, for outboundAccountPosition.
    changed: BTreeSet<String>,
}

impl Balances {
    pub fn new(initial: &BTreeMap<String, Decimal>) -> Self {
        let assets = initial
            .iter()
            .map(|(a, v)| {
                (
                    a.clone(),
                    Balance {
                        free: *v,
                        locked: Decimal::ZERO,
                    },
                )
            })
            .collect();
        Self {
            assets,
            changed: BTreeSet::new(),
        }
    }

    pub fn get(&self, asset: &str) -> Balance {
        self.assets.get(asset).copied().unwrap_or_default()
    }

    pub fn all(&self) -> &BTreeMap<String, Balance> {
        &self.assets
    }

    fn entry(&mut self, asset: &str) -> &mut Balance {
        if !self.assets.contains_key(asset) {
            self.assets.insert(asset.to_string(), Balance::default());
        }
        self.changed.insert(asset.to_string());
        self.assets.get_mut(asset).expect("inserted above")
    }

    fn check(amount: Decimal) -> Result<(), BalanceError> {
        if amount < Decimal::ZERO {
            Err(BalanceError::NegativeAmount(amount))
        } else {
            Ok(())
        }
    }

    /// A non-negative `amount` that the chosen part of `asset`'s balance covers.
    fn ensure(
        &self,
        asset: &str,
        amount: Decimal,
        part: impl Fn(&Balance) -> Decimal,
    ) -> Result<(), BalanceError> {
        Self::check(amount)?;
        let have = part(&self.get(asset));
        if have < amount {
            return Err(BalanceError::Insufficient {
                asset: asset.to_string(),
                need: amount,
                have,
            });
        }
        Ok(())
    }

    /// Moves `amount` from free to locked.
    pub fn lock(&mut self, asset: &str, amount: Decimal) -> Result<(), BalanceError> {
        self.ensure(asset, amount, |b| b.free)?;
        let b = self.entry(asset);
        b.free -= amount;
        b.locked += amount;
        Ok(())
    }

    /// Moves `amount` from locked back to free.
    pub fn unlock(&mut self, asset: &str, amount: Decimal) -> Result<(), BalanceError> {
        self.ensure(asset, amount, |b| b.locked)?;
        let b = self.entry(asset);
        b.locked -= amount;
        b.free += amount;
        Ok(())
    }

    /// Removes `amount` from locked (it was paid away in a trade).
    pub fn spend_locked(&mut self, asset: &str, amount: Decimal) -> Result<(), BalanceError> {
        self.ensure(asset, amount, |b| b.locked)?;
        self.entry(asset).locked -= amount;
        Ok(())
    }

    /// Removes `amount` from free (a taker paying directly, a withdrawal).
    pub fn spend_free(&mut self, asset: &str, amount: Decimal) -> Result<(), BalanceError> {
        self.ensure(asset, amount, |b| b.free)?;
        self.entry(asset).free -= amount;
        Ok(())
    }

    pub fn credit(&mut self, asset: &str, amount: Decimal) -> Result<(), BalanceError> {
        Self::check(amount)?;
        self.entry(asset).free += amount;
        Ok(())
    }

    /// Releases every lock (the exchange restarted and forgot its orders).
    pub fn release_all_locks(&mut self) {
        let assets: Vec<String> = self
            .assets
            .iter()
            .filter(|(_, b)| !b.locked.is_zero())
            .map(|(a, _)| a.clone())
            .collect();
        for a in assets {
            let b = self.entry(&a);
            b.free += b.locked;
            b.locked = Decimal::ZERO;
        }
    }

    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn lock_unlock_spend_exact_and_never_negative() {
        let mut b = Balances::new(&BTreeMap::from([("USDT".into(), dec!(100))]));
        b.lock("USDT", dec!(30.5)).unwrap();
        assert_eq!(
            b.get("USDT"),
            Balance {
                free: dec!(69.5),
                locked: dec!(30.5)
            }
        );
        assert!(b.lock("USDT", dec!(69.50000001)).is_err());
        assert!(b.spend_locked("USDT", dec!(31)).is_err());
        b.spend_locked("USDT", dec!(0.5)).unwrap();
        b.unlock("USDT", dec!(30)).unwrap();
        assert_eq!(b.get("USDT").free, dec!(99.5));
        assert!(b.credit("BTC", dec!(-1)).is_err());
        b.credit("BTC", dec!(0.1)).unwrap();
        assert_eq!(
            b.take_changed().into_iter().collect::<Vec<_>>(),
            vec!["BTC", "USDT"]
        );
        assert!(b.take_changed().is_empty());
    }
}
