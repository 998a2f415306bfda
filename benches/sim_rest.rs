//! Signed REST orders per second over loopback against the simulator (target: >= 5,000/s
//! on a 2-core machine). Each order is a LIMIT IOC far from the market: NEW then EXPIRED,
//! so the book does not grow while the full path (HTTP, auth, HMAC, matching, JSON) runs.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmd::binance::sign::{HmacSigner, rest_payload};
use mmd::sim::{AccountConfig, RateLimitConfig, SimConfig};
use std::sync::Arc;
use std::time::Duration;

const BATCH: u64 = 2_000;
const IN_FLIGHT: usize = 64;

fn bench_rest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt.block_on(async {
        mmd::sim::start(
            SimConfig {
                extra_symbols: 0,
                accounts: vec![AccountConfig {
                    api_key: "bench".into(),
                    api_secret: "bench-secret".into(),
                    ..AccountConfig::default()
                }],
                rate_limits: RateLimitConfig {
                    weight_per_minute: u32::MAX / 2,
                    orders_per_10s: u32::MAX / 2,
                    orders_per_day: u32::MAX / 2,
                    ..RateLimitConfig::default()
                },
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap()
    });
    sim.set_market_frozen(true);
    let url = Arc::new(format!("{}/api/v3/order", sim.rest_url()));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let signer = Arc::new(HmacSigner::new(b"bench-secret"));
    let mut g = c.benchmark_group("sim_rest");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(10);
    g.bench_function("signed_orders_loopback", |b| {
        b.iter(|| {
            rt.block_on(async {
                let per_task = BATCH as usize / IN_FLIGHT;
                let mut tasks = Vec::new();
                for _ in 0..IN_FLIGHT {
                    let (http, url, signer) = (http.clone(), url.clone(), signer.clone());
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..per_task {
                            let ts = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_millis()
                                .to_string();
                            let payload = rest_payload([
                                ("symbol", "BTCUSDT"),
                                ("side", "BUY"),
                                ("type", "LIMIT"),
                                ("timeInForce", "IOC"),
                                ("quantity", "0.001"),
                                ("price", "30000.00"),
                                ("newOrderRespType", "ACK"),
                                ("timestamp", &ts),
                            ]);
                            let sig = signer.sign_hex(payload.as_bytes());
                            let r = http
                                .post(url.as_str())
                                .header("X-MBX-APIKEY", "bench")
                                .header("content-type", "application/x-www-form-urlencoded")
                                .body(format!("{payload}&signature={sig}"))
                                .send()
                                .await
                                .unwrap();
                            assert!(r.status().is_success());
                            r.bytes().await.unwrap();
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
    });
    g.finish();
    rt.block_on(sim.shutdown());
}

criterion_group!(benches, bench_rest);
criterion_main!(benches);
