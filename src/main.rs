// Temporary dispatcher on the `sim` branch so `mmd sim` can be tested; the lead's
// main.rs replaces this on merge (wire `Sim(mmd::sim::cli::SimArgs)` into its CLI).
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mmd", about = "Market-making daemon for Binance")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the Binance-compatible exchange simulator standalone.
    Sim(mmd::sim::cli::SimArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Sim(args) => mmd::sim::cli::run(args).await,
    }
}
