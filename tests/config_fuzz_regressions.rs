//! Inputs found by the `config` cargo-fuzz target (see fuzz/README.md), replayed on every
//! test run: the in-memory parsers the fuzzer drives agree with the file loaders the daemon
//! uses, and neither panics nor aborts.

use mmd::config::{Config, load_market_file, parse_market_file};

const MARKET: &str = "symbol = \"BTCUSDT\"\n[strategy]\nname = \"spread\"\n\
    bid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.001\"\n";

#[test]
fn config_corpus_parses_from_memory_exactly_as_from_a_file() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/config");
    let mut inputs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no regression inputs in {}",
        root.display()
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("markets")).unwrap();
    std::fs::write(dir.path().join("markets/BTCUSDT.toml"), MARKET).unwrap();
    let path = dir.path().join("mmd.toml");
    let mut accepted = 0;
    for input in inputs {
        let Ok(text) = std::fs::read_to_string(&input) else {
            continue;
        };
        std::fs::write(&path, &text).unwrap();
        let name = input.display();

        let from_file = Config::load_with_env(&path, std::iter::empty()).map(|c| c.summary());
        let from_text =
            Config::from_toml_str(&path, &text, std::iter::empty()).map(|c| c.summary());
        assert_eq!(
            from_file.as_ref().map_err(ToString::to_string),
            from_text.as_ref().map_err(ToString::to_string),
            "{name}"
        );
        accepted += usize::from(from_text.is_ok());

        let market_file = load_market_file(&path, "mmd").map(|m| format!("{m:?}"));
        let market_text = parse_market_file(&path, &text).map(|m| format!("{m:?}"));
        assert_eq!(
            market_file.map_err(|e| e.to_string()),
            market_text.map_err(|e| e.to_string()),
            "{name}"
        );
    }
    // The corpus keeps some valid configs, so the comparison covers the success path too.
    assert!(
        accepted > 0,
        "no input in the corpus was a valid daemon config"
    );
}
