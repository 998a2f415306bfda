//! The daemon config loader on arbitrary file contents: a ConfigError or a
//! config, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mmd.toml");
    std::fs::write(&path, data).unwrap();
    let _ = mmd::config::Config::load_with_env(&path, std::iter::empty());
    let _ = mmd::config::load_market_file(&path, "mmd");
});
