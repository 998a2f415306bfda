//! Shared plumbing for parameter tables: deserialization that names the failing key,
//! human durations, and range checks with uniform error messages.

use crate::{Decimal, StrategyError};
use serde::{Deserialize, Deserializer};

/// Deserialize a parameter table, turning serde's error into one that names the key.
pub(crate) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    table: &str,
    de: D,
) -> Result<T, StrategyError> {
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let reason = err.inner().to_string();
        // Unknown keys are reported at the table level; the key is only inside the message.
        let key = if path == "." || path.is_empty() {
            backticked(&reason).unwrap_or_else(|| table.to_string())
        } else {
            path
        };
        StrategyError::Params {
            table: table.to_string(),
            key,
            reason,
        }
    })
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Optional duration given as a human string ("500ms", "30s", "5m"), returned in milliseconds.
pub(crate) fn opt_duration_ms<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    let text: Option<String> = Option::deserialize(de)?;
    text.map(|t| parse_duration_ms(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// Duration given as a human string, in milliseconds.
pub(crate) fn duration_ms<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    let text = String::deserialize(de)?;
    parse_duration_ms(&text).map_err(serde::de::Error::custom)
}

fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); expected e.g. \"500ms\", \"30s\", \"5m\"")
    })?;
    u64::try_from(d.as_millis()).map_err(|_| format!("duration {text:?} is too long"))
}

pub(crate) struct Check<'a> {
    pub table: &'a str,
}

impl Check<'_> {
    fn err(&self, key: &'static str, reason: String) -> StrategyError {
        StrategyError::Invalid {
            table: self.table.to_string(),
            key,
            reason,
        }
    }

    pub fn non_negative(&self, key: &'static str, v: Decimal) -> Result<(), StrategyError> {
        if v < Decimal::ZERO {
            return Err(self.err(key, format!("must not be negative (got {v})")));
        }
        Ok(())
    }

    pub fn positive(&self, key: &'static str, v: Decimal) -> Result<(), StrategyError> {
        if v <= Decimal::ZERO {
            return Err(self.err(key, format!("must be greater than zero (got {v})")));
        }
        Ok(())
    }

    pub fn at_most(
        &self,
        key: &'static str,
        v: Decimal,
        max: Decimal,
    ) -> Result<(), StrategyError> {
        if v > max {
            return Err(self.err(key, format!("must be at most {max} (got {v})")));
        }
        Ok(())
    }

    pub fn positive_int(&self, key: &'static str, v: u64) -> Result<(), StrategyError> {
        if v == 0 {
            return Err(self.err(key, "must be at least 1 (got 0)".to_string()));
        }
        Ok(())
    }

    pub fn fail(&self, key: &'static str, reason: impl Into<String>) -> Result<(), StrategyError> {
        Err(self.err(key, reason.into()))
    }
}
