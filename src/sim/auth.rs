//! Request authentication the way Binance does it: X-MBX-APIKEY, an HMAC-SHA256 hex
//! signature over the exact query string followed by the exact body (as received,
//! percent-encoded), and a timestamp inside recvWindow.

use super::exchange::{ApiError, Exchange};
use crate::binance::sign::HmacSigner;
use ed25519_dalek::pkcs8::DecodePublicKey;

/// How the exchange checks an account's signatures: HMAC-SHA256 with the shared secret,
/// or Ed25519 with the account's public key (the "secret" configured for an Ed25519
/// account is its public key in PEM, `-----BEGIN PUBLIC KEY-----`).
pub enum KeyVerifier {
    Hmac(HmacSigner),
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
}

impl KeyVerifier {
    pub fn from_secret(secret: &str) -> Result<Self, String> {
        if secret
            .trim_start()
            .starts_with("-----BEGIN PUBLIC KEY-----")
        {
            ed25519_dalek::VerifyingKey::from_public_key_pem(secret.trim())
                .map(|k| KeyVerifier::Ed25519(Box::new(k)))
                .map_err(|e| format!("invalid Ed25519 public key PEM: {e}"))
        } else {
            Ok(KeyVerifier::Hmac(HmacSigner::new(secret.as_bytes())))
        }
    }

    pub fn is_ed25519(&self) -> bool {
        matches!(self, KeyVerifier::Ed25519(_))
    }

    /// HMAC: hex (either case). Ed25519: base64 of the 64-byte signature.
    pub fn verify(&self, payload: &[u8], signature: &str) -> bool {
        match self {
            KeyVerifier::Hmac(h) => h.verify_hex(payload, signature),
            KeyVerifier::Ed25519(key) => {
                use base64::Engine;
                use ed25519_dalek::Verifier;
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature) else {
                    return false;
                };
                let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
                    return false;
                };
                key.verify(payload, &sig).is_ok()
            }
        }
    }
}

impl std::fmt::Debug for KeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_ed25519() {
            "KeyVerifier(Ed25519)"
        } else {
            "KeyVerifier(HMAC)"
        })
    }
}

/// Decoded request parameters from the query string and the form body, in arrival order.
#[derive(Debug, Default, Clone)]
pub struct Params {
    list: Vec<(String, String)>,
}

impl Params {
    /// Decodes `query` then `body`. A parameter sent twice is -1101, as on Binance.
    pub fn parse(query: &str, body: &str) -> Result<Self, ApiError> {
        let mut list: Vec<(String, String)> = Vec::new();
        for part in [query, body] {
            for (k, v) in url::form_urlencoded::parse(part.as_bytes()) {
                if list.iter().any(|(existing, _)| *existing == k) {
                    return Err(ApiError::bad(
                        -1101,
                        "Duplicate values for a parameter detected.",
                    ));
                }
                list.push((k.into_owned(), v.into_owned()));
            }
        }
        Ok(Self { list })
    }

    pub fn from_pairs(list: Vec<(String, String)>) -> Self {
        Self { list }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// -1104 if any parameter is not one `allowed` reads.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let read = self
            .list
            .iter()
            .filter(|(k, _)| allowed.contains(&k.as_str()))
            .count();
        if read != self.list.len() {
            return Err(ApiError::bad(
                -1104,
                format!(
                    "Not all sent parameters were read; read '{read}' parameter(s) but was sent '{}'.",
                    self.list.len()
                ),
            ));
        }
        Ok(())
    }

    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::mandatory(key)),
        }
    }

    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::illegal(key, "^[0-9]{1,20}$")),
        }
    }

    pub fn decimal_opt(&self, key: &str) -> Result<Option<rust_decimal::Decimal>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_decimal(v)
                .map(Some)
                .ok_or_else(|| ApiError::illegal(key, "^([0-9]{1,20})(\\.[0-9]{1,20})?$")),
        }
    }
}

/// Binance's decimal grammar: digits, optional fraction, nothing else.
pub fn parse_decimal(v: &str) -> Option<rust_decimal::Decimal> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let ok = !int.is_empty()
        && int.len() <= 20
        && frac.len() <= 20
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(v.contains('.') && frac.is_empty());
    if !ok {
        return None;
    }
    v.parse().ok()
}

/// The signed payload: the raw query then the raw body, each without its `signature=`
/// component, concatenated with no separator. Also returns the signature sent.
pub fn signature_payload(query: &str, body: &str) -> (String, Option<String>) {
    let mut sig = None;
    let mut strip = |raw: &str| -> String {
        raw.split('&')
            .filter(|part| {
                if let Some(v) = part.strip_prefix("signature=") {
                    sig = Some(v.to_string());
                    false
                } else {
                    true
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    };
    let q = strip(query);
    let b = strip(body);
    (q + &b, sig)
}

/// Resolves the X-MBX-APIKEY header to an account: -2014 missing, -2015 unknown.
pub fn account_for_key(ex: &Exchange, api_key: Option<&str>) -> Result<u32, ApiError> {
    let key = match api_key {
        Some(k) if !k.is_empty() => k,
        _ => return Err(ApiError::new(401, -2014, "API-key format invalid.")),
    };
    if !key.bytes().all(|b| b.is_ascii_graphic()) || key.len() > 256 {
        return Err(ApiError::new(401, -2014, "API-key format invalid."));
    }
    ex.account_of(key).ok_or_else(|| {
        ApiError::new(
            401,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )
    })
}

/// Checks timestamp/recvWindow (-1102, -1131, -1021) against the server clock.
pub fn check_timestamp(
    timestamp: Option<&str>,
    recv_window: Option<&str>,
    now_ms: u64,
    default_window: u64,
    max_window: u64,
) -> Result<(), ApiError> {
    let ts: u64 = timestamp
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::mandatory("timestamp"))?
        .parse()
        .map_err(|_| ApiError::illegal("timestamp", "^[0-9]{1,20}$"))?;
    let window: f64 = match recv_window {
        None => default_window as f64,
        Some(w) => w
            .parse::<f64>()
            .ok()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| ApiError::illegal("recvWindow", "^[0-9]{1,20}(\\.[0-9]{1,3})?$"))?,
    };
    if window > max_window as f64 {
        return Err(ApiError::bad(
            -1131,
            format!("recvWindow must be less than {max_window}."),
        ));
    }
    if ts > now_ms + 1000 {
        return Err(ApiError::bad(
            -1021,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        ));
    }
    // Up to 1 s ahead is accepted (above), so the age can be "negative": saturate.
    if now_ms.saturating_sub(ts) as f64 > window {
        return Err(ApiError::bad(
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        ));
    }
    Ok(())
}

/// Full check of a signed REST request; returns the account.
#[allow(clippy::too_many_arguments)]
pub fn check_signed(
    ex: &Exchange,
    api_key: Option<&str>,
    query: &str,
    body: &str,
    params: &Params,
    now_ms: u64,
    default_window: u64,
    max_window: u64,
) -> Result<u32, ApiError> {
    let account = account_for_key(ex, api_key)?;
    let (payload, sig) = signature_payload(query, body);
    let sig = sig
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::mandatory("signature"))?;
    check_timestamp(
        params.get("timestamp"),
        params.get("recvWindow"),
        now_ms,
        default_window,
        max_window,
    )?;
    // Ed25519 signatures are base64 and arrive percent-encoded; hex is unaffected.
    let sig = percent_encoding::percent_decode_str(&sig).decode_utf8_lossy();
    if !ex.verifier(account).verify(payload.as_bytes(), &sig) {
        return Err(ApiError::bad(
            -1022,
            "Signature for this request is not valid.",
        ));
    }
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_query_then_body_without_signature() {
        let (p, s) = signature_payload("a=1&signature=abc", "b=2");
        assert_eq!(p, "a=1b=2");
        assert_eq!(s.as_deref(), Some("abc"));
        let (p, s) = signature_payload("", "b=2&timestamp=5&signature=ff");
        assert_eq!(p, "b=2&timestamp=5");
        assert_eq!(s.as_deref(), Some("ff"));
    }

    #[test]
    fn timestamp_window() {
        assert!(check_timestamp(Some("10000"), None, 12000, 5000, 60000).is_ok());
        // A client clock slightly ahead (up to 1 s) is accepted, as Binance does.
        assert!(check_timestamp(Some("12500"), None, 12000, 5000, 60000).is_ok());
        assert_eq!(
            check_timestamp(Some("1000"), None, 12000, 5000, 60000)
                .unwrap_err()
                .code,
            -1021
        );
        assert_eq!(
            check_timestamp(Some("14000"), None, 12000, 5000, 60000)
                .unwrap_err()
                .code,
            -1021
        );
        assert_eq!(
            check_timestamp(Some("12000"), Some("70000"), 12000, 5000, 60000)
                .unwrap_err()
                .code,
            -1131
        );
        assert_eq!(
            check_timestamp(None, None, 12000, 5000, 60000)
                .unwrap_err()
                .code,
            -1102
        );
    }

    #[test]
    fn decimals_follow_binance_grammar() {
        assert!(parse_decimal("0.001").is_some());
        assert!(parse_decimal("10").is_some());
        for bad in ["-1", "1e3", "", ".5", "1.", "1,5", " 1"] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
    }
}
