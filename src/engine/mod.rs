//! The trading engine: a pure core (events in, commands out) and the IO runner around it.
pub mod orders;
pub mod reconcile;
