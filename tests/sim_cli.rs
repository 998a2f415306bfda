//! `mmd sim` standalone: answers curl, takes its secret from a 0600 file or env, refuses
//! a world-readable secret file, stops on SIGTERM.

mod sim_common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mmd sim did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn standalone_sim_answers_curl_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let mut f = std::fs::File::create(&secret).unwrap();
    writeln!(f, "cli-secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .args(["sim", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/sim.toml"))
        .args(["--api-key", "cli-key", "--api-secret-file"])
        .arg(&secret)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port);
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{port}/api/v3/exchangeInfo"),
        ])
        .output()
        .expect("curl is installed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from curl");
    let syms = v["symbols"].as_array().unwrap();
    assert!(syms.iter().any(|s| s["symbol"] == "BTCUSDT"));
    assert!(syms.iter().any(|s| s["symbol"] == "ETHUSDT"));
    assert_eq!(syms.len(), 52);
    // The account from the CLI exists: a listen key for it works.
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-H", "X-MBX-APIKEY: cli-key"])
        .arg(format!("http://127.0.0.1:{port}/api/v3/userDataStream"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listenKey"].as_str().unwrap().len(), 60);
    unsafe { libc_kill(child.id() as i32, 15) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("cli-secret"), "secret leaked to the log");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn standalone_sim_refuses_readable_secret_file_and_inline_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cr3t-value").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "k",
            "--api-secret-file",
        ])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable by group/others"), "{err}");
    assert!(!err.contains("s3cr3t-value"));
    let cfg = dir.path().join("sim.toml");
    std::fs::write(
        &cfg,
        "[[accounts]]\napi_key = \"k\"\napi_secret = \"inline-secret\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .args(["sim", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api_secret"), "{err}");
    assert!(!err.contains("inline-secret"));
    // Env credentials work as well.
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmd"))
        .args(["sim", "--listen", &format!("127.0.0.1:{port}")])
        .env("MMD_SIM_API_KEY", "env-key")
        .env("MMD_SIM_API_SECRET", "env-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-H", "X-MBX-APIKEY: env-key"])
        .arg(format!("http://127.0.0.1:{port}/api/v3/userDataStream"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["listenKey"].is_string(), "{v}");
    child.kill().unwrap();
    child.wait().unwrap();
}
