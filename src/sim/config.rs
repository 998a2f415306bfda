//! Simulator configuration: every knob the tests and the standalone `mmd sim` need,
//! with defaults that give a realistic Binance Spot out of the box.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which era of Binance Spot the simulator imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Dialect {
    /// Listen keys over REST, `!ticker@arr`, unwrapped user events on `/ws/<listenKey>`.
    #[default]
    #[serde(rename = "2018")]
    Y2018,
    /// Listen-key endpoints answer 410, `!ticker@arr` refused; user data via `/ws-api/v3`.
    #[serde(rename = "2026")]
    Y2026,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SymbolConfig {
    pub symbol: String,
    pub base: String,
    pub quote: String,
    pub tick_size: Decimal,
    pub step_size: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    pub min_price: Decimal,
    pub max_price: Decimal,
    pub min_notional: Decimal,
    pub max_notional: Decimal,
    pub initial_price: Decimal,
    pub status: String,
}

impl Default for SymbolConfig {
    fn default() -> Self {
        Self {
            symbol: "BTCUSDT".into(),
            base: "BTC".into(),
            quote: "USDT".into(),
            tick_size: dec!(0.01),
            step_size: dec!(0.00001),
            min_qty: dec!(0.00001),
            max_qty: dec!(9000),
            min_price: dec!(0.01),
            max_price: dec!(1000000),
            min_notional: dec!(5),
            max_notional: dec!(9000000),
            initial_price: dec!(60000),
            status: "TRADING".into(),
        }
    }
}

impl SymbolConfig {
    pub fn btcusdt() -> Self {
        Self::default()
    }

    pub fn ethusdt() -> Self {
        Self {
            symbol: "ETHUSDT".into(),
            base: "ETH".into(),
            quote: "USDT".into(),
            tick_size: dec!(0.01),
            step_size: dec!(0.0001),
            min_qty: dec!(0.0001),
            initial_price: dec!(3000),
            ..Self::default()
        }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccountConfig {
    pub api_key: String,
    /// Only ever set in-process or from the CLI/env: a config file carrying a secret is refused.
    /// For an Ed25519 API key this is the account's public key in PEM
    /// (`-----BEGIN PUBLIC KEY-----`); the exchange then verifies base64 Ed25519 signatures.
    pub api_secret: String,
    pub balances: BTreeMap<String, Decimal>,
}

impl std::fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountConfig")
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("balances", &self.balances)
            .finish()
    }
}

pub fn default_balances() -> BTreeMap<String, Decimal> {
    BTreeMap::from([
        ("USDT".to_string(), dec!(100000)),
        ("BTC".to_string(), dec!(1)),
        ("ETH".to_string(), dec!(10)),
    ])
}

impl Default for AccountConfig {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            api_secret: String::new(),
            balances: default_balances(),
        }
    }
}

/// The rest of the market: a seeded random walk of the mid with liquidity at the touch
/// and taker flow that trades through resting orders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MarketConfig {
    /// Relative volatility of the mid per sqrt(second) (0.0005 = 5 bps).
    pub volatility: f64,
    #[serde(with = "humantime_serde_str")]
    pub tick_interval: Duration,
    /// Distance between the synthetic best bid and best ask, in ticks.
    pub spread_ticks: u32,
    /// Synthetic price levels per side, one tick apart from the touch outward.
    pub depth_levels: u32,
    /// Quote notional of each synthetic level.
    pub level_notional: Decimal,
    /// Taker orders per second per symbol (Poisson).
    pub taker_rate: f64,
    /// Each taker order is an IOC limit up to this many bps through the mid (uniform).
    pub taker_reach_bps: f64,
    /// Quote notional of each taker order.
    pub taker_notional: Decimal,
    /// Optional recorded ticker/bookTicker JSON lines replayed instead of the random walk.
    pub replay_file: Option<String>,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            volatility: 0.0003,
            tick_interval: Duration::from_millis(100),
            spread_ticks: 2,
            depth_levels: 3,
            level_notional: dec!(2000),
            taker_rate: 2.0,
            taker_reach_bps: 25.0,
            taker_notional: dec!(20000),
            replay_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub weight_per_minute: u32,
    pub orders_per_10s: u32,
    pub orders_per_day: u32,
    /// Requests a client may still send while limited (429) before it is banned (418).
    pub requests_before_ban: u32,
    #[serde(with = "humantime_serde_str")]
    pub ban_duration: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            weight_per_minute: 6000,
            orders_per_10s: 100,
            orders_per_day: 200_000,
            requests_before_ban: 5,
            ban_duration: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    pub seed: u64,
    pub symbols: Vec<SymbolConfig>,
    /// Filler symbols (ticker only, no synthetic liquidity) for a realistic `!ticker@arr`.
    pub extra_symbols: usize,
    pub accounts: Vec<AccountConfig>,
    #[serde(with = "humantime_serde_str")]
    pub ticker_interval: Duration,
    #[serde(with = "humantime_serde_str")]
    pub listen_key_validity: Duration,
    #[serde(with = "humantime_serde_str")]
    pub max_connection_age: Duration,
    #[serde(with = "humantime_serde_str")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde_str")]
    pub pong_timeout: Duration,
    pub maker_fee: Decimal,
    pub taker_fee: Decimal,
    pub dialect: Dialect,
    /// Also send the 2018-era `outboundAccountInfo` full snapshot after every balance change.
    pub legacy_account_info: bool,
    pub market: MarketConfig,
    /// Default recvWindow when the client sends none.
    pub default_recv_window_ms: u64,
    pub max_recv_window_ms: u64,
    pub rate_limits: RateLimitConfig,
    /// Faults active from the start.
    pub faults: Vec<super::faults::FaultCommand>,
    /// Serve `https://` and `wss://` instead of plain text: for clients that must be
    /// tested over TLS as they talk to Binance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<SimTls>,
}

/// The server's certificate and key, as PEM files (what `mmd sim --config` and tests
/// both write easily; the files are read when the simulator starts).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimTls {
    /// The leaf certificate first, then any intermediates.
    pub cert_file: String,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            symbols: vec![SymbolConfig::btcusdt(), SymbolConfig::ethusdt()],
            extra_symbols: 50,
            accounts: Vec::new(),
            ticker_interval: Duration::from_secs(1),
            listen_key_validity: Duration::from_secs(60 * 60),
            max_connection_age: Duration::from_secs(24 * 60 * 60),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            maker_fee: dec!(0.001),
            taker_fee: dec!(0.001),
            dialect: Dialect::Y2018,
            legacy_account_info: false,
            market: MarketConfig::default(),
            default_recv_window_ms: 5000,
            max_recv_window_ms: 60000,
            rate_limits: RateLimitConfig::default(),
            faults: Default::default(),
            tls: None,
        }
    }
}

impl SimConfig {
    /// Parses a TOML config file's text. Secrets are refused: they come from the CLI or env.
    pub fn from_toml_str(text: &str, origin: &str) -> anyhow::Result<Self> {
        let cfg: SimConfig = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{origin}: invalid simulator config: {e}"))?;
        for (i, acct) in cfg.accounts.iter().enumerate() {
            if !acct.api_secret.is_empty() {
                anyhow::bail!(
                    "{origin}: accounts[{i}].api_secret: secrets must not be in a config file \
                     (use --api-secret-file or MMD_SIM_API_SECRET)"
                );
            }
        }
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.symbols.iter().enumerate() {
            if !seen.insert(s.symbol.clone()) {
                anyhow::bail!("symbols[{i}].symbol: duplicate symbol {}", s.symbol);
            }
            for (name, v) in [
                ("tick_size", s.tick_size),
                ("step_size", s.step_size),
                ("initial_price", s.initial_price),
            ] {
                if v <= Decimal::ZERO {
                    anyhow::bail!("symbols[{i}].{name}: must be positive, got {v}");
                }
            }
            if s.symbol.is_empty() || s.base.is_empty() || s.quote.is_empty() {
                anyhow::bail!("symbols[{i}]: symbol, base and quote must be non-empty");
            }
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if a.api_key.is_empty() {
                anyhow::bail!("accounts[{i}].api_key: must not be empty");
            }
            if let Err(e) = super::auth::KeyVerifier::from_secret(&a.api_secret) {
                anyhow::bail!("accounts[{i}].api_secret: {e}");
            }
        }
        if self.maker_fee < Decimal::ZERO || self.maker_fee >= Decimal::ONE {
            anyhow::bail!("maker_fee: must be in [0, 1), got {}", self.maker_fee);
        }
        if self.taker_fee < Decimal::ZERO || self.taker_fee >= Decimal::ONE {
            anyhow::bail!("taker_fee: must be in [0, 1), got {}", self.taker_fee);
        }
        if self.ping_interval.is_zero() || self.ticker_interval.is_zero() {
            anyhow::bail!("ping_interval and ticker_interval must be positive");
        }
        if self.market.tick_interval.is_zero() {
            anyhow::bail!("market.tick_interval: must be positive");
        }
        if !(self.market.volatility >= 0.0 && self.market.taker_rate >= 0.0) {
            anyhow::bail!("market.volatility and market.taker_rate must be >= 0");
        }
        if let Some(tls) = &self.tls {
            for (key, v) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if v.is_empty() {
                    anyhow::bail!("{key}: must not be empty");
                }
            }
        }
        Ok(())
    }
}

/// Durations as human strings ("2s", "60m") in TOML and JSON.
pub mod humantime_serde_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_refuses_unknown_keys_and_secrets() {
        let cfg = SimConfig::from_toml_str(
            "seed = 7\nlisten_key_validity = \"3s\"\ndialect = \"2026\"\n[[accounts]]\napi_key = \"k\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.listen_key_validity, Duration::from_secs(3));
        assert_eq!(cfg.dialect, Dialect::Y2026);
        assert_eq!(cfg.accounts[0].balances, default_balances());
        let err = SimConfig::from_toml_str("sede = 7", "t.toml").unwrap_err();
        assert!(err.to_string().contains("sede"), "{err}");
        let err = SimConfig::from_toml_str(
            "[[accounts]]\napi_key = \"k\"\napi_secret = \"s3cr3t\"\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("api_secret"));
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn tls_takes_two_files_and_names_a_wrong_key() {
        let cfg = SimConfig::from_toml_str(
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            cfg.tls,
            Some(SimTls {
                cert_file: "c.pem".into(),
                key_file: "k.pem".into()
            })
        );
        assert_eq!(SimConfig::default().tls, None);
        let err =
            SimConfig::from_toml_str("[tls]\ncert_file = \"c.pem\"\nkey = \"k.pem\"\n", "t.toml")
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("t.toml: invalid simulator config"), "{err}");
        assert!(err.contains("`key`"), "{err}");
        let err = SimConfig::from_toml_str("[tls]\ncert_file = \"c.pem\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_file"), "{err}");
        let err =
            SimConfig::from_toml_str("[tls]\ncert_file = \"\"\nkey_file = \"k.pem\"\n", "t.toml")
                .unwrap_err()
                .to_string();
        assert_eq!(err, "t.toml: tls.cert_file: must not be empty");
    }
}
