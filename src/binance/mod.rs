//! The daemon's Binance edge: wire types, decoding, signing, REST and streams.
pub mod backoff;
pub mod decode;
mod http;
pub mod market;
mod order_line;
pub mod ratelimit;
pub mod rest;
mod scan;
pub mod sign;
pub mod stream;
#[doc(hidden)]
pub mod testing;
pub mod types;
pub mod user_stream;
