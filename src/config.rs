//! Daemon configuration: one TOML file for the daemon plus one TOML file per market.
//!
//! Everything is validated before the daemon touches the network. Errors name the
//! file, the key and the reason, and never echo a secret: secrets are only ever
//! references (`{ env = ".." }`, `{ file = ".." }`, `{ credential = ".." }`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A config problem: which file, which key (dotted path), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: impl Into<PathBuf>, key: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            key: key.map(str::to_owned),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key `{}`: {}", self.file.display(), key, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

// ------------------------------------------------------------------ secrets

/// Where a secret comes from. Inline strings are refused at parse time so a secret
/// can never sit in a config file (or be echoed back in an error about one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
    /// systemd `LoadCredential=`: `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env {v}"),
            SecretRef::File(p) => write!(f, "file {}", p.display()),
            SecretRef::Credential(c) => write!(f, "credential {c}"),
        }
    }
}

const INLINE_SECRET: &str = "inline secrets are not allowed; use { env = \"VAR\" }, \
     { file = \"/path\" } or { credential = \"name\" }";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a table { env = \"..\" }, { file = \"..\" } or { credential = \"..\" }",
                )
            }
            // Every scalar is refused without quoting it: it may be the secret itself.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_string<E: de::Error>(self, _: String) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut found: Option<SecretRef> = None;
                while let Some(k) = map.next_key::<String>()? {
                    let v: String = map.next_value()?;
                    if found.is_some() {
                        return Err(de::Error::custom(
                            "a secret reference takes exactly one of env, file, credential",
                        ));
                    }
                    if v.is_empty() {
                        return Err(de::Error::custom(format!("`{k}` must not be empty")));
                    }
                    found = Some(match k.as_str() {
                        "env" => SecretRef::Env(v),
                        "file" => SecretRef::File(PathBuf::from(v)),
                        "credential" => SecretRef::Credential(v),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown secret source `{other}`, expected env, file or credential"
                            )));
                        }
                    });
                }
                found.ok_or_else(|| de::Error::custom("empty secret reference"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A loaded secret. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// For secrets the daemon makes itself (the embedded simulator's credentials).
    pub fn generated(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl SecretRef {
    /// Reads the secret. A file (or credential) readable by group or others is refused:
    /// that secret has already leaked to every other user of the machine.
    pub fn load(&self) -> Result<Secret, String> {
        let value = match self {
            SecretRef::Env(var) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"))?,
            SecretRef::File(path) => read_secret_file(path)?,
            SecretRef::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!("credential {name}: CREDENTIALS_DIRECTORY is not set (not running under systemd LoadCredential=?)")
                })?;
                read_secret_file(&Path::new(&dir).join(name))?
            }
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(format!("{self} is empty"));
        }
        Ok(Secret(trimmed.to_owned()))
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("secret file {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "secret file {} has mode {mode:04o}: it must not be readable by group or others (chmod 600)",
                path.display()
            ));
        }
    }
    if !meta.is_file() {
        return Err(format!(
            "secret file {} is not a regular file",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("secret file {}: {e}", path.display()))
}

// ------------------------------------------------------------------ durations

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(|e| {
        de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\", \"23h50m\""
        ))
    })
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

// ------------------------------------------------------------------ daemon file

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Venue {
    Binance,
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserStreamTransport {
    ListenKey,
    WsApi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum MarketStreamKind {
    #[serde(rename = "!ticker@arr")]
    TickerArr,
    #[serde(rename = "bookTicker")]
    BookTicker,
    #[serde(rename = "ticker")]
    Ticker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    exchange: RawExchange,
    #[serde(default)]
    streams: StreamsConfig,
    markets: RawMarkets,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    storage: Option<RawStorage>,
    #[serde(default)]
    engine: EngineConfig,
    #[serde(default)]
    sim: SimSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExchange {
    venue: Venue,
    rest_url: Option<String>,
    stream_url: Option<String>,
    ws_api_url: Option<String>,
    tls_ca_file: Option<PathBuf>,
    #[serde(default = "default_user_stream")]
    user_stream: UserStreamTransport,
    api_key: Option<SecretRef>,
    api_secret: Option<SecretRef>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    recv_window: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    request_timeout: Option<Duration>,
    client_order_prefix: Option<String>,
    /// Fraction of the account's rate limits this process may use ("0.5"), for shards
    /// sharing one account.
    rate_limit_share: Option<rust_decimal::Decimal>,
}

fn default_user_stream() -> UserStreamTransport {
    UserStreamTransport::ListenKey
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMarkets {
    dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    pub market: MarketStreamKind,
    #[serde(deserialize_with = "de_duration")]
    pub keepalive_interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_connection_age: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub reconnect_min_backoff: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub reconnect_max_backoff: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub stale_after: Duration,
    /// No message for this long (pings unanswered) means the connection is dead.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            market: MarketStreamKind::TickerArr,
            keepalive_interval: Duration::from_secs(30 * 60),
            max_connection_age: Duration::from_secs(23 * 3600 + 50 * 60),
            reconnect_min_backoff: Duration::from_millis(100),
            reconnect_max_backoff: Duration::from_secs(30),
            stale_after: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

/// Timings of the engine itself; defaults suit production, tests shorten them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How often the strategy is asked for quotes even without new market data.
    #[serde(deserialize_with = "de_duration")]
    pub tick_interval: Duration,
    /// Periodic full resync (account, open orders, trades), belt and braces.
    #[serde(deserialize_with = "de_duration")]
    pub resync_interval: Duration,
    /// Periodic server time re-sync.
    #[serde(deserialize_with = "de_duration")]
    pub time_sync_interval: Duration,
    /// How long shutdown may take before the daemon exits anyway.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// On start, orders with our prefix left by an earlier run: "cancel" or "adopt".
    pub orphan_orders: OrphanPolicy,
    /// How often exchangeInfo is asked whether the symbols still trade.
    #[serde(deserialize_with = "de_duration")]
    pub status_check_interval: Duration,
    /// How often, when no market frame came for as long, one market's decision and the
    /// signing of its order request are rehearsed (nothing is sent), so that the next
    /// tick finds them in the CPU's caches. Off ("0s") by default: at "1ms" the bookTicker
    /// tick-to-request p50 fell by a third for about 3 % more of a core (README).
    #[serde(deserialize_with = "de_duration")]
    pub rehearsal_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrphanPolicy {
    Cancel,
    Adopt,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_millis(500),
            resync_interval: Duration::from_secs(300),
            time_sync_interval: Duration::from_secs(600),
            shutdown_timeout: Duration::from_secs(8),
            orphan_orders: OrphanPolicy::Cancel,
            status_check_interval: Duration::from_secs(30),
            rehearsal_interval: Duration::ZERO,
        }
    }
}

/// Settings for the embedded simulator (`venue = "sim"`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSection {
    pub seed: u64,
    #[serde(deserialize_with = "de_opt_duration")]
    pub ticker_interval: Option<Duration>,
    #[serde(deserialize_with = "de_opt_duration")]
    pub listen_key_validity: Option<Duration>,
    #[serde(deserialize_with = "de_opt_duration")]
    pub max_connection_age: Option<Duration>,
    pub legacy_account_info: bool,
    /// "2018" (listen keys, `!ticker@arr`) or "2026" (Binance Spot today: listen-key
    /// endpoints answer 410, user data over the WebSocket API).
    pub dialect: crate::sim::Dialect,
    /// Starting balances of the generated account, e.g. { USDT = "100000", BTC = "1" }.
    pub balances: BTreeMap<String, rust_decimal::Decimal>,
}

impl Default for SimSection {
    fn default() -> Self {
        Self {
            seed: 1,
            ticker_interval: None,
            listen_key_validity: None,
            max_connection_age: None,
            legacy_account_info: false,
            dialect: crate::sim::Dialect::default(),
            balances: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    pub venue: Venue,
    pub rest_url: String,
    pub stream_url: String,
    pub ws_api_url: String,
    /// Root certificates trusted besides webpki's (`exchange.tls_ca_file`).
    pub tls_ca: Option<ExtraRoots>,
    pub user_stream: UserStreamTransport,
    /// None only for `venue = "sim"`, which generates its own credentials.
    pub api_key: Option<SecretRef>,
    pub api_secret: Option<SecretRef>,
    pub recv_window: Duration,
    pub request_timeout: Duration,
    pub client_order_prefix: String,
    /// This process's fraction of the account's rate limits (1 unless sharded).
    pub rate_limit_share: rust_decimal::Decimal,
}

/// The certificates of `exchange.tls_ca_file`, read and checked when the config loads.
#[derive(Clone)]
pub struct ExtraRoots {
    pub file: PathBuf,
    pub certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The file and a count: the certificates themselves are noise in a printout.
        write!(
            f,
            "{} ({} certificates)",
            self.file.display(),
            self.certificates.len()
        )
    }
}

/// The validated daemon configuration (market files included).
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub exchange: ExchangeConfig,
    pub streams: StreamsConfig,
    pub markets_dir: PathBuf,
    pub markets: Vec<MarketConfig>,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub storage_path: PathBuf,
    pub engine: EngineConfig,
    pub sim: SimSection,
}

/// Loaded secrets; kept apart from `Config` so the config can be printed freely.
#[derive(Clone)]
pub struct Credentials {
    pub api_key: Secret,
    pub api_secret: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// The client order id prefix: short, so that prefix + market + sequence fits Binance's 36.
const MAX_PREFIX_LEN: usize = 8;

fn valid_client_id_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
    /// Loads the daemon file (with `MMD__<TABLE>__<KEY>` environment overrides) and every
    /// market file, validating all of it. Secrets are checked for presence (and file mode)
    /// by [`Config::load_credentials`], not here.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, None, format!("cannot read: {e}")))?;
        Self::from_toml_str(path, &text, env)
    }

    /// [`Config::load_with_env`] on text already read: `path` names the file in errors and
    /// is the base for relative paths (the markets directory is still read from disk).
    /// Separate so the fuzzer can feed it millions of inputs without touching the disk.
    pub fn from_toml_str(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        // Parse with toml first: its syntax errors carry line and column.
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            ConfigError::new(
                path,
                None,
                format!("malformed TOML: {}", one_line(&e.to_string())),
            )
        })?;
        // The `config` crate reads every top-level key and every override's name as a path
        // expression, and `"x[-1000000000]"` makes it build a billion-element array (found
        // by the config fuzz target). Our names are plain words, so anything else is refused
        // before it gets there.
        if let Some(key) = table.keys().find(|k| !is_plain_key(k)) {
            return Err(ConfigError::new(
                path,
                Some(key),
                "unknown key: the top level holds tables such as [exchange] and [streams]",
            ));
        }

        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("MMD__"))
            .collect();
        if let Some(name) = env.keys().find(|k| !is_plain_key(&k["MMD__".len()..])) {
            return Err(ConfigError::new(
                path,
                None,
                format!(
                    "environment override {name}: a name of letters, digits and '_' is expected, \
                     like MMD__STREAMS__MAX_CONNECTION_AGE"
                ),
            ));
        }
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("MMD")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::new(path, None, e.to_string()))?;
        let raw: RawFile = built.try_deserialize().map_err(|e| config_error(path, e))?;
        Self::from_raw(path, raw)
    }

    fn from_raw(path: &Path, raw: RawFile) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(path, Some(key), reason);
        let ex = raw.exchange;
        let (rest_default, stream_default, ws_api_default) = match ex.venue {
            Venue::Binance => (
                Some("https://api.binance.com"),
                Some("wss://stream.binance.com:9443"),
                Some("wss://ws-api.binance.com:443/ws-api/v3"),
            ),
            // The embedded simulator's addresses are only known once it listens.
            Venue::Sim => (None, None, None),
        };
        let pick = |v: Option<String>, d: Option<&str>, key: &str| -> Result<String, ConfigError> {
            let v = v.or(d.map(str::to_owned)).unwrap_or_default();
            if ex.venue == Venue::Binance {
                let parsed =
                    url::Url::parse(&v).map_err(|e| err(key, format!("invalid URL {v:?}: {e}")))?;
                let ok = match key {
                    "exchange.rest_url" => matches!(parsed.scheme(), "http" | "https"),
                    _ => matches!(parsed.scheme(), "ws" | "wss"),
                };
                if !ok {
                    return Err(err(key, format!("unexpected URL scheme in {v:?}")));
                }
                // The parser takes `WSS://` and surrounding spaces; tungstenite (and the
                // choice of the TLS read window) match the scheme as written: keep it as
                // parsed, lowercase and trimmed.
                let scheme = parsed.scheme();
                let trimmed = v.trim();
                if let Some(rest) = trimmed
                    .get(..scheme.len())
                    .filter(|s| s.eq_ignore_ascii_case(scheme))
                    .and_then(|_| trimmed.get(scheme.len()..))
                {
                    return Ok(format!("{scheme}{rest}"));
                }
            } else if !v.is_empty() {
                return Err(err(
                    key,
                    "must not be set with venue = \"sim\": the embedded simulator picks its own address".into(),
                ));
            }
            Ok(v)
        };
        let rest_url = pick(ex.rest_url, rest_default, "exchange.rest_url")?;
        let stream_url = pick(ex.stream_url, stream_default, "exchange.stream_url")?;
        let ws_api_url = pick(ex.ws_api_url, ws_api_default, "exchange.ws_api_url")?;
        let base = path.parent().unwrap_or(Path::new("."));
        let tls_ca = match ex.tls_ca_file {
            None => None,
            Some(_) if ex.venue == Venue::Sim => {
                return Err(err(
                    "exchange.tls_ca_file",
                    "must not be set with venue = \"sim\": the embedded simulator serves plain text"
                        .into(),
                ));
            }
            Some(file) => {
                let file = resolve(base, &file);
                let certificates = crate::tls::pem_certificates(&file)
                    .and_then(|certs| crate::tls::client_config(&certs).map(|_| certs))
                    .map_err(|r| err("exchange.tls_ca_file", format!("{}: {r}", file.display())))?;
                Some(ExtraRoots { file, certificates })
            }
        };
        if ex.venue == Venue::Binance {
            if ex.api_key.is_none() {
                return Err(err(
                    "exchange.api_key",
                    "missing: required for venue = \"binance\"".into(),
                ));
            }
            if ex.api_secret.is_none() {
                return Err(err(
                    "exchange.api_secret",
                    "missing: required for venue = \"binance\"".into(),
                ));
            }
        } else if ex.api_key.is_some() || ex.api_secret.is_some() {
            return Err(err(
                "exchange.api_key",
                "must not be set with venue = \"sim\": the embedded simulator generates its own credentials".into(),
            ));
        }
        let recv_window = ex.recv_window.unwrap_or(Duration::from_secs(5));
        if recv_window.is_zero() || recv_window > Duration::from_secs(60) {
            return Err(err(
                "exchange.recv_window",
                "must be between 1ms and 60s (Binance's maximum)".into(),
            ));
        }
        let request_timeout = ex.request_timeout.unwrap_or(Duration::from_secs(10));
        if request_timeout.is_zero() {
            return Err(err("exchange.request_timeout", "must be positive".into()));
        }
        let prefix = ex.client_order_prefix.unwrap_or_else(|| "mmd".into());
        if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN || !valid_client_id_chars(&prefix) {
            return Err(err(
                "exchange.client_order_prefix",
                format!("must be 1..={MAX_PREFIX_LEN} characters of [A-Za-z0-9_-]"),
            ));
        }
        if prefix.contains('-') {
            return Err(err(
                "exchange.client_order_prefix",
                "must not contain '-': it separates the parts of a client order id".into(),
            ));
        }

        let rate_limit_share = ex.rate_limit_share.unwrap_or(rust_decimal::Decimal::ONE);
        if rate_limit_share <= rust_decimal::Decimal::ZERO
            || rate_limit_share > rust_decimal::Decimal::ONE
        {
            return Err(err(
                "exchange.rate_limit_share",
                format!(
                    "must be above 0 and at most 1 (a fraction of the account's limits), not {rate_limit_share}"
                ),
            ));
        }

        let s = &raw.streams;
        let positive = |d: Duration, key: &str| {
            if d.is_zero() {
                Err(err(key, "must be positive".into()))
            } else {
                Ok(())
            }
        };
        positive(s.keepalive_interval, "streams.keepalive_interval")?;
        positive(s.max_connection_age, "streams.max_connection_age")?;
        positive(s.reconnect_max_backoff, "streams.reconnect_max_backoff")?;
        positive(s.stale_after, "streams.stale_after")?;
        positive(s.idle_timeout, "streams.idle_timeout")?;
        if s.max_connection_age > Duration::from_secs(24 * 3600) {
            return Err(err(
                "streams.max_connection_age",
                "must be under 24h: Binance closes every connection at 24h".into(),
            ));
        }
        if s.reconnect_min_backoff > s.reconnect_max_backoff {
            return Err(err(
                "streams.reconnect_min_backoff",
                "must not exceed streams.reconnect_max_backoff".into(),
            ));
        }
        let e = &raw.engine;
        positive(e.tick_interval, "engine.tick_interval")?;
        positive(e.resync_interval, "engine.resync_interval")?;
        positive(e.time_sync_interval, "engine.time_sync_interval")?;
        positive(e.shutdown_timeout, "engine.shutdown_timeout")?;
        positive(e.status_check_interval, "engine.status_check_interval")?;
        if !e.rehearsal_interval.is_zero() && e.rehearsal_interval < Duration::from_millis(1) {
            return Err(err(
                "engine.rehearsal_interval",
                "must be at least 1ms (a rehearsal takes microseconds), or \"0s\" to turn rehearsals off".into(),
            ));
        }

        if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
            return Err(err(
                "log.level",
                format!(
                    "invalid level/filter {:?}; use error, warn, info, debug or trace",
                    raw.log.level
                ),
            ));
        }

        let markets_dir = resolve(base, &raw.markets.dir);
        let storage_path = raw
            .storage
            .map(|s| resolve(base, &s.path))
            .unwrap_or_else(|| PathBuf::from("var/mmd.sqlite"));
        let markets = load_markets(&markets_dir, &prefix).map_err(|e| {
            if e.file == markets_dir {
                ConfigError {
                    key: Some("markets.dir".into()),
                    file: path.to_owned(),
                    ..e
                }
            } else {
                e
            }
        })?;

        Ok(Config {
            path: path.to_owned(),
            exchange: ExchangeConfig {
                venue: ex.venue,
                rest_url,
                stream_url,
                ws_api_url,
                tls_ca,
                user_stream: ex.user_stream,
                api_key: ex.api_key,
                api_secret: ex.api_secret,
                recv_window,
                request_timeout,
                client_order_prefix: prefix,
                rate_limit_share,
            },
            streams: raw.streams,
            markets_dir,
            markets,
            log: raw.log,
            metrics: raw.metrics,
            storage_path,
            engine: raw.engine,
            sim: raw.sim,
        })
    }

    /// Loads the API key and secret (for `venue = "binance"`). Errors name the key, never the value.
    pub fn load_credentials(&self) -> Result<Option<Credentials>, ConfigError> {
        let (Some(k), Some(s)) = (&self.exchange.api_key, &self.exchange.api_secret) else {
            return Ok(None);
        };
        let api_key = k
            .load()
            .map_err(|r| ConfigError::new(&self.path, Some("exchange.api_key"), r))?;
        let api_secret = s
            .load()
            .map_err(|r| ConfigError::new(&self.path, Some("exchange.api_secret"), r))?;
        Ok(Some(Credentials {
            api_key,
            api_secret,
        }))
    }

    /// What `mmd check` prints: everything that would run, no secret.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let ex = &self.exchange;
        let _ = writeln!(out, "config: {}", self.path.display());
        match ex.venue {
            Venue::Sim => {
                let _ = writeln!(
                    out,
                    "venue: sim (embedded simulator on 127.0.0.1, generated credentials)"
                );
            }
            Venue::Binance => {
                let _ = writeln!(out, "venue: binance");
                let _ = writeln!(out, "  rest_url: {}", ex.rest_url);
                let _ = writeln!(out, "  stream_url: {}", ex.stream_url);
                if let Some(ca) = &ex.tls_ca {
                    let _ = writeln!(out, "  tls_ca_file: {ca:?}, trusted besides webpki's roots");
                }
                if let Some(k) = &ex.api_key {
                    let _ = writeln!(out, "  api_key: from {k}");
                }
                if let Some(s) = &ex.api_secret {
                    let _ = writeln!(out, "  api_secret: from {s}");
                }
            }
        }
        let _ = writeln!(
            out,
            "user_stream: {:?}; market stream: {:?}; recv_window: {}; client order prefix: {}",
            ex.user_stream,
            self.streams.market,
            humantime::format_duration(ex.recv_window),
            ex.client_order_prefix
        );
        let s = &self.streams;
        let _ = writeln!(
            out,
            "streams: keepalive {}, max connection age {}, backoff {}..{}, stale after {}",
            humantime::format_duration(s.keepalive_interval),
            humantime::format_duration(s.max_connection_age),
            humantime::format_duration(s.reconnect_min_backoff),
            humantime::format_duration(s.reconnect_max_backoff),
            humantime::format_duration(s.stale_after),
        );
        match self.metrics.listen {
            Some(a) => {
                let _ = writeln!(
                    out,
                    "metrics: http://{a}/metrics, health: http://{a}/health"
                );
            }
            None => {
                let _ = writeln!(out, "metrics: off");
            }
        }
        let _ = writeln!(out, "log: {:?} at {}", self.log.format, self.log.level);
        let _ = writeln!(
            out,
            "markets ({}) from {}:",
            self.markets.len(),
            self.markets_dir.display()
        );
        for m in &self.markets {
            let _ = writeln!(
                out,
                "  {} strategy={} {} risk={} ({})",
                m.symbol,
                m.strategy_name,
                inline_table(&m.strategy_params),
                inline_table(&m.risk),
                m.file.display()
            );
        }
        out
    }
}

fn inline_table(t: &toml::Table) -> String {
    let parts: Vec<String> = t.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Turns the config crate's error into file + key + reason.
fn config_error(path: &Path, e: config::ConfigError) -> ConfigError {
    match e {
        config::ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => ConfigError::new(
            path,
            key.as_deref(),
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        config::ConfigError::NotFound(key) => ConfigError::new(path, Some(&key), "missing"),
        other => {
            // Messages look like "missing field `x`" or "unknown field `x`, expected ..."
            // possibly followed by " for key `table`"; lift the key out.
            let msg = other.to_string();
            let (reason, key) = match msg.rsplit_once(" for key `") {
                Some((reason, rest)) => (
                    reason.to_owned(),
                    Some(rest.trim_end_matches('`').to_owned()),
                ),
                None => (msg.clone(), None),
            };
            let key = match (key, field_in(&reason)) {
                (Some(table), Some(field)) => Some(format!("{table}.{field}")),
                (Some(table), None) => Some(table),
                (None, Some(field)) => Some(field),
                (None, None) => None,
            };
            ConfigError::new(path, key.as_deref(), reason)
        }
    }
}

fn field_in(reason: &str) -> Option<String> {
    for lead in ["unknown field `", "missing field `"] {
        if let Some(rest) = reason.strip_prefix(lead) {
            return rest.split('`').next().map(str::to_owned);
        }
    }
    None
}

// ------------------------------------------------------------------ market files

/// One market: a symbol, its strategy (name + parameters, validated by the strategies
/// crate) and its risk limits.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketConfig {
    pub file: PathBuf,
    pub symbol: String,
    pub strategy_name: String,
    /// The `[strategy]` table without `name`, handed to `strategies::build`.
    pub strategy_params: toml::Table,
    /// The `[risk]` table, deserialized into `strategies::risk::RiskLimits`.
    pub risk: toml::Table,
}

/// Validates a market's strategy and risk tables; returns (key, reason) on failure.
fn validate_market(m: &MarketConfig) -> Result<(), (String, String)> {
    build_strategy(m).map_err(|e| strategy_error_key("strategy", e))?;
    risk_limits(m).map_err(|e| strategy_error_key("risk", e))?;
    Ok(())
}

fn strategy_error_key(table: &str, e: strategies::StrategyError) -> (String, String) {
    let key = match e.key() {
        Some(k) => format!("{table}.{k}"),
        None => table.to_owned(),
    };
    let reason = match &e {
        strategies::StrategyError::UnknownStrategy { .. } => e.to_string(),
        strategies::StrategyError::Params { reason, .. }
        | strategies::StrategyError::Invalid { reason, .. } => reason.clone(),
    };
    (key, reason)
}

/// A fresh strategy instance for a market (validated at load, so this only fails if the
/// strategies crate changed its mind).
pub fn build_strategy(
    m: &MarketConfig,
) -> Result<Box<dyn strategies::Strategy>, strategies::StrategyError> {
    strategies::build(
        &m.strategy_name,
        toml::Value::Table(m.strategy_params.clone()),
    )
}

pub fn risk_limits(
    m: &MarketConfig,
) -> Result<strategies::risk::RiskLimits, strategies::StrategyError> {
    strategies::risk::RiskLimits::from_table(toml::Value::Table(m.risk.clone()))
}

/// Reads every `*.toml` in `dir`, sorted by name; duplicated symbols are refused.
pub fn load_markets(dir: &Path, prefix: &str) -> Result<Vec<MarketConfig>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, None, format!("cannot read markets directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    let mut out: Vec<MarketConfig> = Vec::new();
    for f in files {
        let m = load_market_file(&f, prefix)?;
        if let Some(prev) = out.iter().find(|p| p.symbol == m.symbol) {
            return Err(ConfigError::new(
                &f,
                Some("symbol"),
                format!(
                    "{} is already configured by {}",
                    m.symbol,
                    prev.file.display()
                ),
            ));
        }
        out.push(m);
    }
    Ok(out)
}

/// A key the `config` crate takes literally: no path syntax (`.`, `[n]`) in it.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The longest symbol that still leaves room in a 36-character client order id.
const MAX_SYMBOL_LEN: usize = 20;

pub fn load_market_file(path: &Path, _prefix: &str) -> Result<MarketConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, None, format!("cannot read: {e}")))?;
    parse_market_file(path, &text)
}

/// A market file's text, already read; `path` names it in errors.
pub fn parse_market_file(path: &Path, text: &str) -> Result<MarketConfig, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        ConfigError::new(
            path,
            None,
            format!("malformed TOML: {}", one_line(&e.to_string())),
        )
    })?;
    let err = |key: &str, reason: String| ConfigError::new(path, Some(key), reason);

    let symbol = match table.remove("symbol") {
        None => {
            return Err(err(
                "symbol",
                "missing: every market file names its symbol, e.g. symbol = \"BTCUSDT\"".into(),
            ));
        }
        Some(toml::Value::String(s)) => s,
        Some(_) => return Err(err("symbol", "must be a string".into())),
    };
    if symbol.is_empty()
        || symbol.chars().count() > MAX_SYMBOL_LEN
        || symbol
            .chars()
            .any(|c| c.is_whitespace() || c.is_ascii_lowercase())
    {
        return Err(err(
            "symbol",
            format!(
                "{symbol:?} is not a valid symbol (upper case, 1..={MAX_SYMBOL_LEN} characters)"
            ),
        ));
    }
    let mut strategy = match table.remove("strategy") {
        None => {
            return Err(err(
                "strategy",
                "missing: a [strategy] table with name = \"...\"".into(),
            ));
        }
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(err("strategy", "must be a table".into())),
    };
    let strategy_name = match strategy.remove("name") {
        None => return Err(err("strategy.name", "missing".into())),
        Some(toml::Value::String(s)) => s,
        Some(_) => return Err(err("strategy.name", "must be a string".into())),
    };
    let risk = match table.remove("risk") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(err("risk", "must be a table".into())),
    };
    if let Some(unknown) = table.keys().next() {
        return Err(err(
            unknown,
            "unknown key (a market file has symbol, [strategy] and [risk])".into(),
        ));
    }
    let m = MarketConfig {
        file: path.to_owned(),
        symbol,
        strategy_name,
        strategy_params: strategy,
        risk,
    };
    validate_market(&m).map_err(|(key, reason)| err(&key, reason))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    const MARKET: &str = r#"symbol = "BTCUSDT"
[strategy]
name = "spread"
bid_spread_bps = 10
ask_spread_bps = 10
order_qty = "0.001"
[risk]
max_base_position = "0.05"
"#;

    impl Fixture {
        fn new(daemon: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("markets")).unwrap();
            std::fs::write(dir.path().join("mmd.toml"), daemon).unwrap();
            let f = Fixture { dir };
            f.market("BTCUSDT.toml", MARKET);
            f
        }
        fn market(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join("markets").join(name), text).unwrap();
        }
        fn path(&self) -> PathBuf {
            self.dir.path().join("mmd.toml")
        }
        fn secret(&self, name: &str, mode: u32) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let p = self.dir.path().join(name);
            let mut f = std::fs::File::create(&p).unwrap();
            f.write_all(b"s3cr3t-value-do-not-echo\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
        fn load(&self) -> Result<Config, ConfigError> {
            Config::load_with_env(&self.path(), Vec::new())
        }
    }

    const SIM: &str = "[exchange]\nvenue = \"sim\"\n[markets]\ndir = \"markets\"\n";

    fn binance(key: &str, secret: &str) -> String {
        format!(
            "[exchange]\nvenue = \"binance\"\napi_key = {key}\napi_secret = {secret}\n[markets]\ndir = \"markets\"\n"
        )
    }

    #[test]
    fn the_shipped_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["demo.toml", "demo-ws-api.toml", "example-binance.toml"] {
            let c = Config::load_with_env(&root.join(name), Vec::new())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!c.markets.is_empty(), "{name}");
        }
    }

    #[test]
    fn sim_config_loads_with_defaults() {
        let f = Fixture::new(SIM);
        let c = f.load().unwrap();
        assert_eq!(c.exchange.venue, Venue::Sim);
        assert_eq!(c.markets.len(), 1);
        assert_eq!(c.markets[0].symbol, "BTCUSDT");
        assert_eq!(c.markets[0].strategy_name, "spread");
        assert!(!c.markets[0].strategy_params.contains_key("name"));
        assert_eq!(c.streams.keepalive_interval, Duration::from_secs(1800));
        assert_eq!(
            c.streams.max_connection_age,
            Duration::from_secs(23 * 3600 + 3000)
        );
        assert_eq!(c.exchange.client_order_prefix, "mmd");
        assert!(c.summary().contains("BTCUSDT strategy=spread"));
    }

    #[test]
    fn env_overrides_any_key() {
        let f = Fixture::new(SIM);
        let c = Config::load_with_env(
            &f.path(),
            vec![
                ("MMD__STREAMS__KEEPALIVE_INTERVAL".into(), "2s".into()),
                ("MMD__LOG__FORMAT".into(), "json".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.streams.keepalive_interval, Duration::from_secs(2));
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn env_override_with_bad_value_names_the_key() {
        let f = Fixture::new(SIM);
        let e = Config::load_with_env(
            &f.path(),
            vec![("MMD__STREAMS__STALE_AFTER".into(), "soon".into())],
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("streams.stale_after"), "{e}");
        assert!(e.reason.contains("invalid duration"), "{e}");
    }

    /// Found by the config fuzz target: the `config` crate took this table name as an
    /// array index and tried to allocate a billion elements, aborting the process.
    #[test]
    fn path_syntax_in_a_key_is_refused_not_expanded() {
        for text in [
            format!("{SIM}[ \"u[-1033333708]\"]\n"),
            format!("{SIM}[\"u[99999999999]\"]\nx = 1\n"),
            // Not a crash, but the crate would read it as exchange.venue: still refused.
            format!("\"exchange.venue\" = \"sim\"\n{SIM}"),
        ] {
            let f = Fixture::new(&text);
            let e = f.load().unwrap_err();
            assert!(e.key.is_some(), "{e}");
            assert!(e.reason.contains("unknown key"), "{e}");
        }
        let f = Fixture::new(SIM);
        let e = Config::load_with_env(
            &f.path(),
            vec![("MMD__STREAMS[-1000000000]".into(), "1".into())],
        )
        .unwrap_err();
        assert!(e.reason.contains("MMD__STREAMS[-1000000000]"), "{e}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let f = Fixture::new(&format!("{SIM}[streams]\nkeepalive_intervall = \"1s\"\n"));
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("keepalive_intervall"), "{e}");
        assert!(e.to_string().contains("mmd.toml"), "{e}");
    }

    #[test]
    fn rehearsals_are_off_unless_asked_for_and_never_more_often_than_each_millisecond() {
        let f = Fixture::new(&format!("{SIM}[engine]\nrehearsal_interval = \"100us\"\n"));
        let e = f.load().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("engine.rehearsal_interval"), "{e}");
        assert!(e.reason.contains("at least 1ms"), "{e}");
        let f = Fixture::new(&format!("{SIM}[engine]\nrehearsal_interval = \"0s\"\n"));
        assert!(f.load().unwrap().engine.rehearsal_interval.is_zero());
        let f = Fixture::new(&format!("{SIM}[engine]\nrehearsal_interval = \"1ms\"\n"));
        assert_eq!(
            f.load().unwrap().engine.rehearsal_interval,
            Duration::from_millis(1)
        );
        assert!(
            Fixture::new(SIM)
                .load()
                .unwrap()
                .engine
                .rehearsal_interval
                .is_zero()
        );
    }

    #[test]
    fn unknown_table_is_refused() {
        let f = Fixture::new(&format!("{SIM}[metrix]\nlisten = \"127.0.0.1:1\"\n"));
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("metrix"), "{e}");
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let f = Fixture::new("[exchange\nvenue = \"sim\"\n");
        let e = f.load().unwrap_err();
        assert_eq!(e.file, f.path());
        assert!(e.reason.contains("malformed TOML"), "{e}");
        assert!(e.reason.contains("line 1"), "{e}");
    }

    #[test]
    fn malformed_market_file_names_that_file() {
        let f = Fixture::new(SIM);
        f.market("ETHUSDT.toml", "symbol = \"ETHUSDT\n");
        let e = f.load().unwrap_err();
        assert!(e.file.ends_with("markets/ETHUSDT.toml"), "{e}");
        assert!(e.reason.contains("malformed TOML"), "{e}");
    }

    #[test]
    fn missing_symbol_is_refused() {
        let f = Fixture::new(SIM);
        f.market("X.toml", "[strategy]\nname = \"spread\"\n");
        let e = f.load().unwrap_err();
        assert!(e.file.ends_with("markets/X.toml"));
        assert_eq!(e.key.as_deref(), Some("symbol"));
        assert!(e.reason.contains("missing"));
    }

    #[test]
    fn unknown_key_in_market_file_is_refused() {
        let f = Fixture::new(SIM);
        f.market(
            "X.toml",
            "symbol = \"ETHUSDT\"\nsymbl = 1\n[strategy]\nname = \"spread\"\n",
        );
        let e = f.load().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("symbl"), "{e}");
    }

    #[test]
    fn unknown_strategy_is_refused_with_the_known_ones() {
        let f = Fixture::new(SIM);
        f.market(
            "BTCUSDT.toml",
            "symbol = \"BTCUSDT\"\n[strategy]\nname = \"sprad\"\n",
        );
        let e = f.load().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("strategy.name"), "{e}");
        assert!(
            e.reason.contains("sprad") && e.reason.contains("spread"),
            "{e}"
        );
    }

    #[test]
    fn negative_spread_is_refused() {
        let f = Fixture::new(SIM);
        f.market(
            "BTCUSDT.toml",
            &MARKET.replace("bid_spread_bps = 10", "bid_spread_bps = -5"),
        );
        let e = f.load().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("strategy.bid_spread_bps"), "{e}");
        assert!(e.file.ends_with("markets/BTCUSDT.toml"));
    }

    #[test]
    fn unknown_strategy_parameter_and_risk_key_are_refused() {
        let f = Fixture::new(SIM);
        f.market(
            "BTCUSDT.toml",
            &MARKET.replace("order_qty", "order_quantity"),
        );
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("order_quantity"), "{e}");
        let f = Fixture::new(SIM);
        f.market(
            "BTCUSDT.toml",
            &MARKET.replace("max_base_position", "max_position"),
        );
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("max_position"), "{e}");
        assert!(e.key.as_deref().unwrap_or("").starts_with("risk"), "{e}");
    }

    #[test]
    fn duplicated_symbol_is_refused() {
        let f = Fixture::new(SIM);
        f.market("Z.toml", MARKET);
        let e = f.load().unwrap_err();
        assert!(e.reason.contains("already configured"), "{e}");
    }

    #[test]
    fn inline_secret_is_refused_without_echo() {
        let f = Fixture::new(&binance("\"AKIAINLINEKEY123\"", "{ env = \"X\" }"));
        let e = f.load().unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("exchange.api_key") || text.contains("api_key"),
            "{text}"
        );
        assert!(text.contains("inline secrets are not allowed"), "{text}");
        assert!(!text.contains("AKIAINLINEKEY123"), "{text}");
    }

    #[test]
    fn inline_secret_from_env_override_is_refused_without_echo() {
        let f = Fixture::new(&binance("{ env = \"K\" }", "{ env = \"S\" }"));
        let e = Config::load_with_env(
            &f.path(),
            vec![("MMD__EXCHANGE__API_SECRET".into(), "hunter2hunter2".into())],
        )
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.reason.contains("inline secrets"), "{e}");
    }

    #[test]
    fn secret_file_readable_by_others_is_refused() {
        let f = Fixture::new(SIM);
        let loose = f.secret("secret644", 0o644);
        let tight = f.secret("secret600", 0o600);
        let text = binance(
            &format!("{{ file = \"{}\" }}", tight.display()),
            &format!("{{ file = \"{}\" }}", loose.display()),
        );
        std::fs::write(f.path(), text).unwrap();
        let c = f.load().unwrap();
        let e = c.load_credentials().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("exchange.api_secret"));
        assert!(e.reason.contains("0644"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn secrets_load_from_file_and_env() {
        let f = Fixture::new(SIM);
        let tight = f.secret("secret600", 0o600);
        // A variable name unique to this test: tests run in parallel threads.
        let var = "MMD_TEST_CONFIG_KEY_7f3a";
        unsafe { std::env::set_var(var, "key-from-env") };
        let text = binance(
            &format!("{{ env = \"{var}\" }}"),
            &format!("{{ file = \"{}\" }}", tight.display()),
        );
        std::fs::write(f.path(), text).unwrap();
        let creds = f.load().unwrap().load_credentials().unwrap().unwrap();
        assert_eq!(creds.api_key.expose(), "key-from-env");
        assert_eq!(creds.api_secret.expose(), "s3cr3t-value-do-not-echo");
        assert!(!format!("{creds:?}").contains("s3cr3t"));
    }

    #[test]
    fn missing_env_secret_names_the_variable_only() {
        let f = Fixture::new(&binance(
            "{ env = \"MMD_TEST_SURELY_UNSET_VAR\" }",
            "{ env = \"MMD_TEST_SURELY_UNSET_VAR\" }",
        ));
        let e = f.load().unwrap().load_credentials().unwrap_err();
        assert!(e.reason.contains("MMD_TEST_SURELY_UNSET_VAR"), "{e}");
    }

    #[test]
    fn binance_venue_requires_credentials() {
        let f = Fixture::new("[exchange]\nvenue = \"binance\"\n[markets]\ndir = \"markets\"\n");
        let e = f.load().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("exchange.api_key"));
    }

    #[test]
    fn bad_duration_and_bad_enum_name_their_keys() {
        let f = Fixture::new(&format!("{SIM}[streams]\nmax_connection_age = \"25h\"\n"));
        assert_eq!(
            f.load().unwrap_err().key.as_deref(),
            Some("streams.max_connection_age")
        );
        let f = Fixture::new(&format!("{SIM}[log]\nformat = \"xml\"\n"));
        let e = f.load().unwrap_err();
        assert!(
            e.to_string().contains("log.format") || e.to_string().contains("xml"),
            "{e}"
        );
    }

    #[test]
    fn missing_markets_dir_is_reported() {
        let f = Fixture::new("[exchange]\nvenue = \"sim\"\n[markets]\ndir = \"nope\"\n");
        let e = f.load().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("markets.dir"), "{e}");
    }

    #[test]
    fn prefix_must_fit_client_order_ids() {
        let f = Fixture::new(
            "[exchange]\nvenue = \"sim\"\nclient_order_prefix = \"waytoolongprefix\"\n[markets]\ndir = \"markets\"\n",
        );
        assert_eq!(
            f.load().unwrap_err().key.as_deref(),
            Some("exchange.client_order_prefix")
        );
    }

    #[test]
    fn rate_limit_share_is_a_fraction_of_the_account() {
        let with = |share: &str| {
            Fixture::new(&format!(
                "[exchange]\nvenue = \"sim\"\nrate_limit_share = {share}\n[markets]\ndir = \"markets\"\n"
            ))
        };
        let ok = with("\"0.5\"").load().unwrap();
        assert_eq!(
            ok.exchange.rate_limit_share,
            rust_decimal::Decimal::new(5, 1)
        );
        for bad in ["\"1.5\"", "\"0\"", "\"-0.2\""] {
            let e = with(bad).load().unwrap_err();
            assert_eq!(
                e.key.as_deref(),
                Some("exchange.rate_limit_share"),
                "{bad}: {e}"
            );
        }
        let default = Fixture::new("[exchange]\nvenue = \"sim\"\n[markets]\ndir = \"markets\"\n");
        assert_eq!(
            default.load().unwrap().exchange.rate_limit_share,
            rust_decimal::Decimal::ONE
        );
    }
}
