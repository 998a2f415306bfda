//! Every bad config is refused before the network is touched (or, for a symbol the
//! exchange does not list, right after exchangeInfo): a clear message naming the file and
//! the key, a non-zero exit, no panic, and never the secret.

mod daemon_support;
mod tls_support;

use std::path::Path;
use std::process::Command;

use daemon_support::*;

const SECRET: &str = "SuperSecretValue-do-not-print-4f1c";

fn mmd(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .args(args)
        .arg(config)
        .env("MMD_TEST_KEY", "key-value-1234")
        .env_remove("RUST_LOG")
        .output()
        .expect("run mmd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(daemon: &str, markets: &[(&str, &str)]) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("markets")).unwrap();
        for (name, text) in markets {
            std::fs::write(dir.path().join("markets").join(name), text).unwrap();
        }
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let text = daemon.replace("@SECRET@", &secret.display().to_string());
        std::fs::write(dir.path().join("mmd.toml"), text).unwrap();
        Case { dir }
    }

    /// Both `check` and `run` refuse it with the same message; returns it.
    fn refused(&self, expect: &[&str]) -> String {
        let cfg = self.dir.path().join("mmd.toml");
        let mut last = String::new();
        for cmd in [["check", "--config"], ["run", "--config"]] {
            let (code, text) = mmd(&cmd, &cfg);
            assert_ne!(code, 0, "{cmd:?} accepted a bad config:\n{text}");
            assert_ne!(code, 101, "{cmd:?} panicked:\n{text}");
            assert!(!text.contains("panicked"), "{text}");
            assert!(!text.contains(SECRET), "secret echoed:\n{text}");
            for e in expect {
                assert!(text.contains(e), "{cmd:?}: expected {e:?} in:\n{text}");
            }
            last = text;
        }
        last
    }
}

const GOOD: &str = "symbol = \"BTCUSDT\"\n[strategy]\nname = \"spread\"\nbid_spread_bps = 10\nask_spread_bps = 10\norder_qty = \"0.001\"\n";

fn daemon(extra_exchange: &str) -> String {
    format!(
        "[exchange]\nvenue = \"binance\"\nrest_url = \"http://127.0.0.1:9\"\nstream_url = \"ws://127.0.0.1:9\"\napi_key = {{ env = \"MMD_TEST_KEY\" }}\napi_secret = {{ file = \"@SECRET@\" }}\n{extra_exchange}[markets]\ndir = \"markets\"\n"
    )
}

#[test]
fn a_good_config_checks_ok_and_prints_a_summary_without_secrets() {
    let c = Case::new(&daemon(""), &[("BTCUSDT.toml", GOOD)]);
    let (code, text) = mmd(&["check", "--config"], &c.dir.path().join("mmd.toml"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("BTCUSDT strategy=spread"), "{text}");
    assert!(text.contains("api_secret: from file"), "{text}");
    assert!(
        !text.contains(SECRET) && !text.contains("key-value-1234"),
        "{text}"
    );
}

#[test]
fn url_schemes_in_capitals_are_taken_in_lowercase() {
    let text = daemon("")
        .replace("\"http://127.0.0.1:9\"", "\" HTTPS://127.0.0.1:9 \"")
        .replace("\"ws://127.0.0.1:9\"", "\"WSS://127.0.0.1:9\"");
    let c = Case::new(&text, &[("BTCUSDT.toml", GOOD)]);
    let (code, text) = mmd(&["check", "--config"], &c.dir.path().join("mmd.toml"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("rest_url: https://127.0.0.1:9\n"), "{text}");
    assert!(text.contains("stream_url: wss://127.0.0.1:9\n"), "{text}");
}

#[test]
fn missing_symbol() {
    let c = Case::new(
        &daemon(""),
        &[("BTCUSDT.toml", "[strategy]\nname = \"spread\"\n")],
    );
    c.refused(&["BTCUSDT.toml", "symbol", "missing"]);
}

#[test]
fn unknown_strategy() {
    let c = Case::new(
        &daemon(""),
        &[("BTCUSDT.toml", &GOOD.replace("\"spread\"", "\"sprd\""))],
    );
    c.refused(&["BTCUSDT.toml", "strategy.name", "sprd"]);
}

#[test]
fn negative_spread() {
    let c = Case::new(
        &daemon(""),
        &[(
            "BTCUSDT.toml",
            &GOOD.replace("bid_spread_bps = 10", "bid_spread_bps = -3"),
        )],
    );
    c.refused(&["BTCUSDT.toml", "strategy.bid_spread_bps", "negative"]);
}

#[test]
fn inline_secret() {
    let text = daemon("").replace("{ file = \"@SECRET@\" }", &format!("\"{SECRET}\""));
    let c = Case::new(&text, &[("BTCUSDT.toml", GOOD)]);
    c.refused(&[
        "mmd.toml",
        "exchange.api_secret",
        "inline secrets are not allowed",
    ]);
}

#[test]
fn secret_file_readable_by_others() {
    let c = Case::new(&daemon(""), &[("BTCUSDT.toml", GOOD)]);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            c.dir.path().join("secret"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    c.refused(&["exchange.api_secret", "0644"]);
}

#[test]
fn unknown_key() {
    let c = Case::new(&daemon("recv_windw = \"5s\"\n"), &[("BTCUSDT.toml", GOOD)]);
    c.refused(&["mmd.toml", "recv_windw"]);
}

#[test]
fn malformed_toml() {
    let c = Case::new(
        &daemon("").replace("[markets]", "[markets"),
        &[("BTCUSDT.toml", GOOD)],
    );
    c.refused(&["mmd.toml", "malformed TOML"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbol_unknown_at_the_exchange() {
    // The real exchange (the simulator) is asked; a symbol it does not list is refused.
    let d = Daemon::new(sim_config(), &[("NOSUCHUSDT", "1")], "").await;
    let out = tokio::task::spawn_blocking({
        let cfg = d.config_path();
        move || {
            Command::new(env!("CARGO_BIN_EXE_mmd"))
                .args(["run", "--config"])
                .arg(&cfg)
                .env("MMD_TEST_API_KEY", API_KEY)
                .output()
                .expect("run")
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("NOSUCHUSDT.toml") && text.contains("not listed by the exchange"),
        "{text}"
    );
    assert!(!text.contains(API_SECRET));
    assert!(d.open_orders().is_empty());
}

#[test]
fn tls_ca_file_missing_empty_or_not_pem() {
    let c = Case::new(
        &daemon("tls_ca_file = \"ca.pem\"\n"),
        &[("BTCUSDT.toml", GOOD)],
    );
    // Relative to the config file, and named with the key and the reason.
    let ca = c.dir.path().join("ca.pem");
    c.refused(&[
        "mmd.toml",
        "exchange.tls_ca_file",
        &format!("{}: cannot read: ", ca.display()),
    ]);
    std::fs::write(&ca, "just some text\n").unwrap();
    c.refused(&[
        "exchange.tls_ca_file",
        "no certificate in it (a PEM \"BEGIN CERTIFICATE\" section is expected)",
    ]);
    let body = "MIIBmangled!!base64";
    std::fs::write(
        &ca,
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"),
    )
    .unwrap();
    let text = c.refused(&["exchange.tls_ca_file", "bad PEM: invalid base64"]);
    assert!(!text.contains(body), "{text}");
    // Valid PEM around bytes that are no certificate.
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAQIDBA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    c.refused(&["exchange.tls_ca_file", "certificate 1: not a usable root"]);
    // A real CA: accepted, and `check` says it widens trust without printing it.
    let pki = tls_support::pki(c.dir.path());
    assert_eq!(pki.ca_file, ca);
    let (code, text) = mmd(&["check", "--config"], &c.dir.path().join("mmd.toml"));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "  tls_ca_file: {} (1 certificates), trusted besides webpki's roots\n",
            ca.display()
        )),
        "{text}"
    );
    assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
}

#[test]
fn tls_ca_file_with_the_embedded_simulator() {
    let c = Case::new(
        "[exchange]\nvenue = \"sim\"\ntls_ca_file = \"ca.pem\"\n[markets]\ndir = \"markets\"\n",
        &[("BTCUSDT.toml", GOOD)],
    );
    c.refused(&[
        "mmd.toml",
        "exchange.tls_ca_file",
        "must not be set with venue = \"sim\"",
    ]);
}
