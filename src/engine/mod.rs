//! The trading engine: a pure core (events in, commands out) and the IO runner around it.
pub mod core;
pub mod io;
pub mod orders;
pub mod reconcile;

pub use self::core::{Engine, EngineSettings};
pub use io::{
    Command, ConnectReason, Input, MarketSetup, PlaceOrder, RestFailure, ResyncReason, Snapshot,
    Stream,
};
pub mod runner;
#[cfg(test)]
mod tests;
