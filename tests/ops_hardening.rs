//! Operations (issue 5): secrets never leave the process, and the daemon runs as an
//! unprivileged user with a read-only configuration and a writable state directory,
//! the way the systemd unit and the Docker image run it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmd::sim::{AccountConfig, SimConfig, SimHandle};
use rust_decimal::Decimal;

const MMD: &str = env!("CARGO_BIN_EXE_mmd");
// Distinctive, so a match in the output can only be a leak.
const KEY: &str = "opsKEYzq7Lx9Vw2Rt5Yu8Io3Pa6Sd1Fg4Hj0Kl";
const SECRET: &str = "opsSECRETmN3bV6cX9zA2sD5fG8hJ1kL4qW7eR0tY";

async fn sim() -> SimHandle {
    let mut c = SimConfig {
        seed: 11,
        extra_symbols: 5,
        ticker_interval: Duration::from_millis(200),
        ..SimConfig::default()
    };
    c.market.taker_rate = 6.0;
    c.accounts = vec![AccountConfig {
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        balances: BTreeMap::from([
            ("USDT".to_string(), Decimal::from(100_000)),
            ("BTC".to_string(), Decimal::from(1)),
        ]),
    }];
    mmd::sim::start(c, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the daemon config (credentials by systemd credential name) and one market
/// into `config_dir`; the ledger goes to `state_dir`.
fn write_config(config_dir: &Path, state_dir: &Path, sim: &SimHandle, log_level: &str) {
    std::fs::create_dir_all(config_dir.join("markets")).unwrap();
    std::fs::write(
        config_dir.join("markets/BTCUSDT.toml"),
        "symbol = \"BTCUSDT\"\n[strategy]\nname = \"spread\"\nbid_spread_bps = 8\nask_spread_bps = 8\norder_qty = \"0.001\"\nrefresh_tolerance_bps = 3\n[risk]\nmax_base_position = \"1\"\n",
    )
    .unwrap();
    let text = format!(
        r#"[exchange]
venue = "binance"
rest_url = "{rest}"
stream_url = "{stream}"
api_key = {{ credential = "api_key" }}
api_secret = {{ credential = "api_secret" }}
client_order_prefix = "mmdops"
[streams]
market = "!ticker@arr"
[markets]
dir = "markets"
[log]
format = "json"
level = "{log_level}"
[metrics]
listen = "127.0.0.1:{port}"
[storage]
path = "{state}/mmd.sqlite"
"#,
        rest = sim.rest_url(),
        stream = sim.stream_url(),
        port = free_port(),
        state = state_dir.display(),
    );
    std::fs::write(config_dir.join("mmd.toml"), text).unwrap();
}

fn write_credentials(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, value) in [("api_key", KEY), ("api_secret", SECRET)] {
        let p = dir.join(name);
        std::fs::write(&p, value).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Waits until the daemon has orders resting at the exchange.
async fn wait_quoting(sim: &SimHandle, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if !sim.open_orders(KEY).is_empty() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what}: daemon exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no quote at the exchange within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn terminate(sim: &SimHandle, child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(sim.open_orders(KEY).is_empty(), "orders left after SIGTERM");
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit within 15 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_byte_the_daemon_writes_contains_the_key_or_the_secret() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (config_dir, state_dir, creds) = (
        dir.path().join("etc"),
        dir.path().join("state"),
        dir.path().join("credentials"),
    );
    // trace: the most the daemon (and the HTTP/WebSocket libraries under it) ever says.
    write_config(&config_dir, &state_dir, &sim, "trace");
    write_credentials(&creds);
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(MMD)
        .args(["run", "--config"])
        .arg(config_dir.join("mmd.toml"))
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    wait_quoting(&sim, &mut child, "secrets").await;
    // A little trading, so fills and balance events go through the logs too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = terminate(&sim, &mut child).await;
    assert!(status.success(), "exit status {status}");

    let mut written = vec![stdout, stderr];
    files_under(&state_dir, &mut written);
    let mut total = 0;
    for path in &written {
        let bytes = std::fs::read(path).unwrap();
        total += bytes.len();
        assert!(
            !contains(&bytes, KEY),
            "the API key appears in {}",
            path.display()
        );
        assert!(
            !contains(&bytes, SECRET),
            "the API secret appears in {}",
            path.display()
        );
    }
    // Not vacuous: the daemon logged a lot and kept a ledger.
    assert!(total > 10_000, "only {total} bytes written");
    assert!(written.iter().any(|p| p.ends_with("mmd.sqlite")));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_unprivileged_with_read_only_config_and_writable_state() {
    // Switching to an unprivileged user needs root (CI and the dev machines run as root);
    // setpriv is util-linux, present on every Debian.
    let euid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    if euid != "0" || Command::new("setpriv").arg("--version").output().is_err() {
        panic!("this test needs root and setpriv to drop to an unprivileged user (uid {euid})");
    }
    const NOBODY: u32 = 65534;
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (config_dir, state_dir, creds) = (
        dir.path().join("etc"),
        dir.path().join("state"),
        dir.path().join("credentials"),
    );
    write_config(&config_dir, &state_dir, &sim, "info");
    write_credentials(&creds);
    std::fs::create_dir(&state_dir).unwrap();
    std::os::unix::fs::chown(&state_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Credentials are the service user's own, as systemd hands them over.
    std::os::unix::fs::chown(&creds, Some(NOBODY), Some(NOBODY)).unwrap();
    for name in ["api_key", "api_secret"] {
        std::os::unix::fs::chown(creds.join(name), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // Read-only configuration: root-owned, no write bit for anyone.
    for p in [
        config_dir.join("mmd.toml"),
        config_dir.join("markets/BTCUSDT.toml"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    for d in [config_dir.join("markets"), config_dir.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    // A copy of the binary the unprivileged user can reach whatever the checkout's
    // directory modes are.
    let binary = dir.path().join("mmd");
    std::fs::copy(MMD, &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("stderr");
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--no-new-privs",
        ])
        .arg(&binary)
        .args(["run", "--config"])
        .arg(config_dir.join("mmd.toml"))
        .env("CREDENTIALS_DIRECTORY", &creds)
        .current_dir(&state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let quoting = tokio::time::timeout(
        Duration::from_secs(35),
        wait_quoting(&sim, &mut child, "unprivileged"),
    )
    .await;
    if quoting.is_err() || child.try_wait().unwrap().is_some() {
        let _ = child.kill();
        panic!(
            "unprivileged daemon did not quote ({:?}); log:\n{}",
            started.elapsed(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let status = terminate(&sim, &mut child).await;
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The ledger was written, by the unprivileged user, in the state directory only.
    use std::os::unix::fs::MetadataExt;
    let ledger = std::fs::metadata(state_dir.join("mmd.sqlite")).expect("ledger written");
    assert_eq!(ledger.uid(), NOBODY);
    let mut config_files = Vec::new();
    files_under(&config_dir, &mut config_files);
    assert_eq!(
        config_files.len(),
        2,
        "the daemon wrote into its config directory: {config_files:?}"
    );
    // Let the test's tempdir clean up the read-only tree.
    for d in [config_dir.clone(), config_dir.join("markets")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    sim.shutdown().await;
}
