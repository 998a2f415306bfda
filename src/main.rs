//! The `mmd` command line: `run`, `check` (and `sim` once the simulator lands).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mmd", version, about = "Market-making daemon for Binance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration (no network) and print what would run.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => match mmd::config::Config::load(&config) {
            Ok(_) => {
                eprintln!("mmd run: not wired yet");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match mmd::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config.load_credentials() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    print!("{}", config.summary());
    println!("config OK");
    ExitCode::SUCCESS
}
