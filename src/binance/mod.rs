//! The daemon's Binance edge: wire types, decoding, signing, REST and streams.
pub mod decode;
pub mod ratelimit;
pub mod rest;
pub mod sign;
pub mod types;
