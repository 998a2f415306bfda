//! Request signing, shared by the daemon's clients and the simulator's verifier.
//!
//! Two payload forms exist on Binance Spot (2026):
//! - REST: `k=v&k=v` with every key and value percent-encoded *before* signing
//!   (required since 2026-01-15); the signature covers the query string followed
//!   directly by the body, with no separator.
//! - WebSocket API: the params sorted by name, joined as `k=v&k=v`, raw UTF-8.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use sha2::block_api::compress256;

/// Characters left as they are: RFC 3986 unreserved. Everything else is encoded,
/// which is what Binance's own connectors (and Python's `urlencode`) produce.
const BINANCE_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// HMAC-SHA256 signer with the keyed state built once.
///
/// Signing (the order hot path) is RFC 2104 HMAC written directly over sha2's
/// compression function (`sha2::block_api::compress256`, which picks SHA-NI at run
/// time): the SHA-256 states after the `key ^ ipad` and `key ^ opad` blocks are
/// precomputed, whole payload blocks are compressed straight from the caller's
/// slice, and the padding is built on the stack. That is the minimum of work
/// (for a 190-byte order, 4 inner + 1 outer compressions) with none of the generic
/// buffering of `Hmac<Sha256>`; a test checks it against the `hmac` crate for every
/// key and payload length around the block boundaries. Verification (the
/// simulator's side) stays on the `hmac` crate's constant-time check.
#[derive(Clone)]
pub struct HmacSigner {
    keyed: Hmac<Sha256>,
    /// SHA-256 state after compressing `key ^ ipad`.
    inner: [u32; 8],
    /// SHA-256 state after compressing `key ^ opad`.
    outer: [u32; 8],
}

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

impl HmacSigner {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC-SHA256 accepts keys of any length");
        // RFC 2104: keys longer than the block are hashed first, then zero-padded.
        let mut key = [0u8; 64];
        if secret.len() > key.len() {
            use sha2::Digest;
            key[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        let mut inner = SHA256_IV;
        compress256(&mut inner, &[key.map(|b| b ^ 0x36)]);
        let mut outer = SHA256_IV;
        compress256(&mut outer, &[key.map(|b| b ^ 0x5c)]);
        Self {
            keyed,
            inner,
            outer,
        }
    }

    /// The raw HMAC-SHA256 tag of `payload`.
    pub fn tag(&self, payload: &[u8]) -> [u8; 32] {
        // Inner hash: key block already absorbed; whole blocks straight from
        // `payload`, then its tail with the 0x80 byte and the bit length (of the key
        // block plus the payload) in one or two stack blocks.
        let mut state = self.inner;
        let (blocks, rest) = payload.as_chunks::<64>();
        compress256(&mut state, blocks);
        let mut tail = [[0u8; 64]; 2];
        let used = if rest.len() < 56 { 1 } else { 2 };
        let flat = tail.as_flattened_mut();
        flat[..rest.len()].copy_from_slice(rest);
        flat[rest.len()] = 0x80;
        let bits = (64 + payload.len() as u64).wrapping_mul(8);
        flat[used * 64 - 8..used * 64].copy_from_slice(&bits.to_be_bytes());
        compress256(&mut state, &tail[..used]);
        // Outer hash: key block already absorbed; the 32-byte inner digest and its
        // padding fit in one block.
        let mut block = [0u8; 64];
        for (out, word) in block.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut state = self.outer;
        compress256(&mut state, &[block]);
        let mut tag = [0u8; 32];
        for (out, word) in tag.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        tag
    }

    /// Lower-case hex signature of `payload`.
    pub fn sign_hex(&self, payload: &[u8]) -> String {
        let tag = self.tag(payload);
        // Four tag bytes to eight hex digits per step, into a stack buffer, then one
        // exact allocation (`hex::encode` pushes char by char into a growing String).
        let mut buf = [0u8; 64];
        for (out, four) in buf.chunks_exact_mut(8).zip(tag.chunks_exact(4)) {
            let word = u32::from_be_bytes(four.try_into().expect("4 bytes"));
            out.copy_from_slice(&hex8(word).to_be_bytes());
        }
        String::from(std::str::from_utf8(&buf).expect("hex digits are ASCII"))
    }

    /// Constant-time check of a hex signature (Binance accepts either case).
    pub fn verify_hex(&self, payload: &[u8], signature_hex: &str) -> bool {
        let Ok(expected) = hex::decode(signature_hex) else {
            return false;
        };
        let mut mac = self.keyed.clone();
        mac.update(payload);
        mac.verify_slice(&expected).is_ok()
    }
}

/// The eight lower-case hex digits of `x`, most significant first, as the bytes of
/// a big-endian u64: each nibble is spread to its own byte, then `'0' + v` plus
/// `'a' - '0' - 10` for the nibbles above 9, all lanes at once.
#[inline]
fn hex8(x: u32) -> u64 {
    let x = u64::from(x);
    // Byte k (from the top) of `x` to byte pair k of the result, nibbles split.
    let mut v = ((x & 0xffff_0000) << 16) | (x & 0x0000_ffff);
    v = ((v & 0x0000_ff00_0000_ff00) << 8) | (v & 0x0000_00ff_0000_00ff);
    let nibbles = ((v & 0x00f0_00f0_00f0_00f0) << 4) | (v & 0x000f_000f_000f_000f);
    const ONES: u64 = 0x0101_0101_0101_0101;
    let above_nine = ((nibbles + ONES * 6) >> 4) & ONES;
    nibbles + ONES * u64::from(b'0') + above_nine * u64::from(b'a' - b'0' - 10)
}

impl std::fmt::Debug for HmacSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("HmacSigner(..)")
    }
}

/// Percent-encodes one key or value the way Binance expects for REST payloads.
pub fn percent_encode(raw: &str) -> impl std::fmt::Display + '_ {
    utf8_percent_encode(raw, BINANCE_ENCODE_SET)
}

/// Builds a REST payload: `k=v&...` in the given order, keys and values percent-encoded.
pub fn rest_payload<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    use std::fmt::Write;
    let mut out = String::with_capacity(128);
    for (i, (k, v)) in params.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        let _ = write!(out, "{}={}", percent_encode(k), percent_encode(v));
    }
    out
}

/// Builds a WebSocket-API signature payload: params sorted by name, raw UTF-8.
pub fn ws_api_payload<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut sorted: Vec<(&str, &str)> = params.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = String::with_capacity(128);
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Ed25519 signer (Binance's recommended key type; required for `session.logon`).
/// Signatures are base64, as Binance expects them.
#[derive(Clone)]
pub struct Ed25519Signer {
    key: ed25519_dalek::SigningKey,
}

impl Ed25519Signer {
    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), the format
    /// Binance's key generator and `openssl genpkey -algorithm ed25519` produce.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, String> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(|key| Self { key })
            .map_err(|e| format!("not an Ed25519 PKCS#8 PEM private key: {e}"))
    }

    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(secret),
        }
    }

    /// Standard base64 (with padding) of the 64-byte signature.
    pub fn sign_base64(&self, payload: &[u8]) -> String {
        use base64::Engine;
        use ed25519_dalek::Signer as _;
        let sig = self.key.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    }

    pub fn verify_base64(&self, payload: &[u8], signature_b64: &str) -> bool {
        use base64::Engine;
        use ed25519_dalek::Verifier as _;
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature_b64) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        self.key.verifying_key().verify(payload, &sig).is_ok()
    }

    /// Public key as PKCS#8/SPKI PEM, what the operator registers with Binance.
    pub fn public_key_pem(&self) -> Result<String, String> {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        self.key
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| e.to_string())
    }
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Signer(..)")
    }
}

/// The key types the daemon signs with.
#[derive(Clone, Debug)]
pub enum Signer {
    Hmac(HmacSigner),
    Ed25519(Ed25519Signer),
}

impl Signer {
    /// The `signature` parameter value: hex for HMAC, base64 for Ed25519.
    pub fn sign(&self, payload: &[u8]) -> String {
        match self {
            Signer::Hmac(s) => s.sign_hex(payload),
            Signer::Ed25519(s) => s.sign_base64(payload),
        }
    }

    pub fn is_ed25519(&self) -> bool {
        matches!(self, Signer::Ed25519(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

    #[test]
    fn rest_payload_percent_encodes_non_ascii_symbol() {
        let p = rest_payload([("symbol", "１２３４５６"), ("side", "BUY")]);
        assert_eq!(
            p,
            "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY"
        );
    }

    #[test]
    fn ws_api_payload_sorts_and_keeps_utf8() {
        let p = ws_api_payload([("symbol", "１２"), ("apiKey", "k"), ("price", "0.1")]);
        assert_eq!(p, "apiKey=k&price=0.1&symbol=１２");
    }

    /// The hand-written HMAC against the `hmac` crate, at every payload length
    /// around the padding boundaries (55/56, 63/64 bytes in the last block) and keys
    /// shorter than, equal to and longer than a block.
    #[test]
    fn tag_equals_the_hmac_crate() {
        let bytes: Vec<u8> = (0..400u32).map(|i| (i * 131 + 7) as u8).collect();
        for key_len in [0, 1, 31, 32, 63, 64, 65, 100, 200] {
            let key = &bytes[..key_len];
            let signer = HmacSigner::new(key);
            for len in 0..=300 {
                let payload = &bytes[100..100 + len];
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
                mac.update(payload);
                let expected = mac.finalize().into_bytes();
                assert_eq!(
                    signer.tag(payload)[..],
                    expected[..],
                    "key {key_len} len {len}"
                );
                assert_eq!(signer.sign_hex(payload), hex::encode(expected));
            }
        }
    }

    #[test]
    fn hex8_matches_format() {
        for x in [
            0u32,
            1,
            9,
            10,
            15,
            16,
            0x0123_4567,
            0x89ab_cdef,
            0xffff_ffff,
            0xa0b0_c0d0,
        ] {
            let got = hex8(x).to_be_bytes();
            assert_eq!(std::str::from_utf8(&got).unwrap(), format!("{x:08x}"));
        }
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..10_000 {
            x = x.wrapping_mul(0x0019_660d).wrapping_add(0x3c6e_f35f);
            assert_eq!(hex8(x).to_be_bytes(), *format!("{x:08x}").as_bytes());
        }
    }

    #[test]
    fn sign_and_verify_roundtrip() {
        let s = HmacSigner::new(SECRET.as_bytes());
        let payload = b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let sig = s.sign_hex(payload);
        assert_eq!(
            sig,
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
        assert!(s.verify_hex(payload, &sig.to_uppercase()));
        assert!(!s.verify_hex(b"symbol=LTCBTC", &sig));
        assert!(!s.verify_hex(payload, "not-hex"));
    }
}
