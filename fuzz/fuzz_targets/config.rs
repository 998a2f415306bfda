//! The daemon and market config loaders on arbitrary file contents: a ConfigError or a
//! config, never a panic. The text goes in from memory (a file per run managed ~400 runs/s);
//! the file-reading wrappers around these parsers only add `read_to_string`.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One directory for the whole run, holding `markets/BTCUSDT.toml`, so a daemon config
/// that gets past its own checks goes on to load a real markets directory.
fn daemon_path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("markets")).unwrap();
        std::fs::write(
            dir.path().join("markets/BTCUSDT.toml"),
            "symbol = \"BTCUSDT\"\n[strategy]\nname = \"spread\"\nbid_spread_bps = 10\n\
             ask_spread_bps = 10\norder_qty = \"0.001\"\n",
        )
        .unwrap();
        let path = dir.path().join("mmd.toml");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    // The file loaders refuse non-UTF-8 before parsing ("cannot read"), as read_to_string does.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = daemon_path();
    let _ = mmd::config::Config::from_toml_str(path, text, std::iter::empty());
    let _ = mmd::config::parse_market_file(path, text);
});
