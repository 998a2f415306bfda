//! `mmd sim`: the simulator as a standalone server for any Binance client (curl, ccxt,
//! python-binance).

use super::config::{AccountConfig, SimConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,
    /// Simulator TOML config (optional; defaults give BTCUSDT, ETHUSDT and filler symbols).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// API key of the account to create (or env MMD_SIM_API_KEY).
    #[arg(long)]
    pub api_key: Option<String>,
    /// File holding the API secret, mode 0600 (or env MMD_SIM_API_SECRET). For an Ed25519
    /// key, the file holds the public key PEM.
    #[arg(long)]
    pub api_secret_file: Option<PathBuf>,
}

fn read_secret_file(path: &PathBuf) -> anyhow::Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("--api-secret-file {}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "--api-secret-file {}: readable by group/others (mode {:o}); chmod 600 it",
                path.display(),
                mode
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--api-secret-file {}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        anyhow::bail!("--api-secret-file {}: empty", path.display());
    }
    Ok(secret)
}

/// Builds the config from the CLI arguments and environment (no server started).
pub fn build_config(args: &SimArgs) -> anyhow::Result<SimConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            SimConfig::from_toml_str(&text, &path.display().to_string())?
        }
        None => SimConfig::default(),
    };
    let key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("MMD_SIM_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let secret = match &args.api_secret_file {
        Some(p) => Some(read_secret_file(p)?),
        None => std::env::var("MMD_SIM_API_SECRET")
            .ok()
            .filter(|s| !s.is_empty()),
    };
    match (key, secret) {
        (Some(key), Some(secret)) => {
            if let Some(a) = cfg.accounts.iter_mut().find(|a| a.api_key == key) {
                a.api_secret = secret;
            } else {
                cfg.accounts.push(AccountConfig {
                    api_key: key,
                    api_secret: secret,
                    ..AccountConfig::default()
                });
            }
        }
        (Some(_), None) => anyhow::bail!(
            "an API key was given but no secret: use --api-secret-file or MMD_SIM_API_SECRET"
        ),
        (None, Some(_)) => {
            anyhow::bail!("an API secret was given but no key: use --api-key or MMD_SIM_API_KEY")
        }
        (None, None) => {}
    }
    for a in &cfg.accounts {
        if a.api_secret.is_empty() {
            anyhow::bail!(
                "account {:?} has no secret: pass --api-key {0:?} with --api-secret-file",
                a.api_key
            );
        }
    }
    Ok(cfg)
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let cfg = build_config(&args)?;
    let accounts: Vec<String> = cfg.accounts.iter().map(|a| a.api_key.clone()).collect();
    let handle = super::start(cfg, args.listen).await?;
    println!(
        "mmd sim listening: rest {} streams {} ws-api {} accounts {:?}",
        handle.rest_url(),
        handle.stream_url(),
        handle.ws_api_url(),
        accounts
    );
    wait_for_signal().await?;
    tracing::info!("simulator shutting down");
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let mut signals = signal_hook_tokio::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    signals.next().await;
    Ok(())
}
