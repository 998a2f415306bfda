//! mmd: a market-making daemon for Binance and Binance-compatible venues.
pub mod backtest;
pub mod bench;
pub mod binance;
pub mod config;
pub mod engine;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod report;
pub mod sim;
pub mod tls;
