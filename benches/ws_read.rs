//! Reading one 2,000-symbol `!ticker@arr` frame through tungstenite over TLS, with
//! tungstenite's default 128 KiB read window and with the 16 KiB window the daemon uses
//! for `wss://` (`binance::stream::ws_config`, the configuration it connects with).
//!
//! tungstenite zero-fills its read window before every read, and over TLS every read
//! returns at most one TLS record (≤ 16 KiB of plaintext: tokio-rustls hands over
//! rustls' first plaintext chunk), so a 128 KiB window clears eight times what a read
//! can fill. The TLS side here is rustls itself, client and server in memory: the
//! ciphertext of each batch of frames is produced outside the timed part, and the
//! reader hands tungstenite one chunk per read, as tokio-rustls does.
//!
//! cargo bench --bench ws_read -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::io::{self, BufRead as _, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmd::binance::stream::ws_config;
use mmd::binance::testing::ticker_arr_frame;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames encrypted ahead of each timed batch (a frame is ~790 KB of ciphertext).
const BATCH: u64 = 16;

fn tls_pair() -> (ClientConnection, ServerConnection) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let cert_der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = ClientConnection::new(
        Arc::new(client),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("client");
    let mut server = ServerConnection::new(Arc::new(server)).expect("server");
    while client.is_handshaking() || server.is_handshaking() {
        pump(&mut client, &mut server);
        pump(&mut server, &mut client);
    }
    (client, server)
}

/// Moves what `from` has to send into `to`.
fn pump(
    from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
    to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("write_tls");
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
        to.process_new_packets().expect("process");
    }
}

/// The client side of the TLS stream as tokio-rustls reads it: decrypt what the socket
/// has, then hand over the first plaintext chunk (one record) per read.
struct TlsReader {
    conn: ClientConnection,
    wire: io::Cursor<Vec<u8>>,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let chunk = match self.conn.reader().into_first_chunk() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => &[][..],
                Err(e) => return Err(e),
            };
            if !chunk.is_empty() {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                self.conn.reader().consume(n);
                return Ok(n);
            }
            if self.conn.read_tls(&mut self.wire)? == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
}

impl Write for TlsReader {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The server's WebSocket frame bytes of one text message (servers do not mask).
fn ws_frame_bytes(text: &str) -> Vec<u8> {
    let mut ws = WebSocket::from_raw_socket(io::Cursor::new(Vec::new()), Role::Server, None);
    ws.send(Message::text(text)).expect("frame");
    ws.get_ref().get_ref().clone()
}

/// Time to read `iters` frames with `config`, encryption of each batch left out.
fn read_frames(config: WebSocketConfig, frame: &[u8], text_len: usize, iters: u64) -> Duration {
    let (client, mut server) = tls_pair();
    // A whole batch of frames is encrypted before it is read.
    server.set_buffer_limit(None);
    let mut ws = WebSocket::from_raw_socket(
        TlsReader {
            conn: client,
            wire: io::Cursor::new(Vec::new()),
        },
        Role::Client,
        Some(config),
    );
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(BATCH);
        let mut wire = Vec::with_capacity(frame.len() * batch as usize * 11 / 10);
        for _ in 0..batch {
            server.writer().write_all(frame).expect("plaintext");
            while server.wants_write() {
                server.write_tls(&mut wire).expect("ciphertext");
            }
        }
        ws.get_mut().wire = io::Cursor::new(wire);
        let start = Instant::now();
        for _ in 0..batch {
            match ws.read().expect("a frame") {
                Message::Text(t) => {
                    let t: Utf8Bytes = black_box(t);
                    assert_eq!(t.len(), text_len);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        spent += start.elapsed();
        left -= batch;
    }
    spent
}

fn bench(c: &mut Criterion) {
    let text = ticker_arr_frame(2000, 1_700_000_000_000);
    let frame = ws_frame_bytes(&text);
    let mut group = c.benchmark_group("ws_read");
    group.throughput(Throughput::Bytes(text.len() as u64));
    // For a plain-text URL the daemon keeps tungstenite's default window.
    for (name, config) in [
        ("tls_128k_window", ws_config("ws://127.0.0.1")),
        (
            "tls_16k_window_as_the_daemon",
            ws_config("wss://stream.binance.com"),
        ),
    ] {
        group.bench_function(format!("ticker_arr/{name}"), |b| {
            b.iter_custom(|iters| read_frames(config, &frame, text.len(), iters))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
