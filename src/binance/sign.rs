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

/// Characters left as they are: RFC 3986 unreserved. Everything else is encoded,
/// which is what Binance's own connectors (and Python's `urlencode`) produce.
const BINANCE_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// HMAC-SHA256 signer with the keyed state built once; each signature clones it,
/// which skips re-hashing the key on the hot path.
#[derive(Clone)]
pub struct HmacSigner {
    keyed: Hmac<Sha256>,
}

impl HmacSigner {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC-SHA256 accepts keys of any length");
        Self { keyed }
    }

    /// Lower-case hex signature of `payload`.
    pub fn sign_hex(&self, payload: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
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
