//! Frame decoding for the market and user data streams.
//!
//! Both decoders are total: any input gives `Ok` or a [`DecodeError`], never a panic,
//! and frames larger than [`MAX_FRAME_BYTES`] are refused before parsing so hostile
//! input cannot make us allocate without bound.
//!
//! Fields are first captured as borrowed [`RawValue`]s (no allocation, no type
//! commitment) and only interpreted once the event type is known. That lets one pass
//! cover every envelope Binance has used, and lets the market decoder drop symbols
//! nobody asked for without ever building a `String` for them.
//!
//! The hot frames skip even that when they can: `!ticker@arr` has its own scanner
//! below, and one `bookTicker` or `executionReport` in Binance's layout is read by
//! the strict scanners of `binance/scan.rs`, which fall back to the serde path here
//! whenever they are unsure. `*_validating` entry points run serde only: the
//! references the scanners are tested and fuzzed against.

use std::borrow::Cow;
use std::collections::HashSet;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::scan;
use super::types::{
    AccountInfo, AccountPosition, BalanceUpdate, BookTicker, ExecutionReport, MarketEvent, Ticker,
    UserEvent,
};

/// Largest frame either decoder accepts. A full 2,000-symbol `!ticker@arr` frame is
/// about 0.8 MB; 8 MiB leaves room for growth while bounding hostile input.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// Largest user-data frame accepted. The biggest legitimate one, a 2018-style
/// `outboundAccountInfo` snapshot, is ~60 bytes per asset.
pub const MAX_USER_FRAME_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the {max} byte cap")]
    TooLarge { len: usize, max: usize },
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}`: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("not an event frame (no `e` and no `event`)")]
    NotAnEvent,
}

impl From<serde_json::Error> for DecodeError {
    fn from(e: serde_json::Error) -> Self {
        DecodeError::Json(e.to_string())
    }
}

/// The symbols whose market data the daemon wants. Lookups borrow, so a frame's
/// symbol is checked without allocating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolSet {
    symbols: HashSet<Box<str>>,
    /// One bit per hash class (length, head, tail) of the members: rejects
    /// almost every unwanted symbol of a 2,000-symbol frame without hashing it.
    prefilter: [u64; 4],
}

fn prefilter_bit(s: &[u8]) -> (usize, u64) {
    // Head and tail words both: symbols share prefixes and suffixes ("...USDT").
    let n = s.len().min(8);
    let mut head = [0u8; 8];
    head[..n].copy_from_slice(&s[..n]);
    let mut tail = [0u8; 8];
    tail[8 - n..].copy_from_slice(&s[s.len() - n..]);
    let x = u64::from_le_bytes(head) ^ u64::from_le_bytes(tail).rotate_left(29) ^ s.len() as u64;
    let h = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize;
    (h >> 6, 1u64 << (h & 63))
}

impl SymbolSet {
    pub fn new<I, S>(symbols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = Self::default();
        for s in symbols {
            set.insert(s.as_ref());
        }
        set
    }

    pub fn contains(&self, symbol: &str) -> bool {
        let (word, bit) = prefilter_bit(symbol.as_bytes());
        self.prefilter[word] & bit != 0 && self.symbols.contains(symbol)
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.symbols.iter().map(|s| &**s)
    }

    pub fn insert(&mut self, symbol: &str) -> bool {
        let (word, bit) = prefilter_bit(symbol.as_bytes());
        self.prefilter[word] |= bit;
        self.symbols.insert(symbol.into())
    }

    pub fn remove(&mut self, symbol: &str) -> bool {
        let removed = self.symbols.remove(symbol);
        if removed {
            self.prefilter = [0; 4];
            for s in &self.symbols {
                let (word, bit) = prefilter_bit(s.as_bytes());
                self.prefilter[word] |= bit;
            }
        }
        removed
    }
}

fn check_size(frame: &str, max: usize) -> Result<(), DecodeError> {
    if frame.len() > max {
        return Err(DecodeError::TooLarge {
            len: frame.len(),
            max,
        });
    }
    Ok(())
}

// ------------------------------------------------------------ raw field helpers

/// A JSON string value, borrowed when it has no escapes.
pub(crate) fn raw_str<'a>(
    raw: &'a RawValue,
    field: &'static str,
) -> Result<Cow<'a, str>, DecodeError> {
    let text = raw.get();
    let bytes = text.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"' {
        let inner = &text[1..text.len() - 1];
        if !inner.as_bytes().contains(&b'\\') {
            return Ok(Cow::Borrowed(inner));
        }
        return serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(|e| bad(field, e));
    }
    Err(DecodeError::BadField {
        field,
        reason: format!("expected a string, found {}", clip(text)),
    })
}

/// An exact decimal sent as a JSON string (Binance never sends prices as numbers).
pub(crate) fn raw_decimal(raw: &RawValue, field: &'static str) -> Result<Decimal, DecodeError> {
    let s = raw_str(raw, field)?;
    parse_decimal(&s, field)
}

pub(crate) fn parse_decimal(s: &str, field: &'static str) -> Result<Decimal, DecodeError> {
    // rust_decimal tolerates `_` separators; a price with one is not a Binance price.
    if s.is_empty() || s.contains('_') {
        return Err(DecodeError::BadField {
            field,
            reason: format!("not a decimal: {}", clip(s)),
        });
    }
    Decimal::from_str(s).map_err(|e| DecodeError::BadField {
        field,
        reason: format!("not a decimal ({e}): {}", clip(s)),
    })
}

/// A non-negative integer sent as a JSON number.
pub(crate) fn raw_u64(raw: &RawValue, field: &'static str) -> Result<u64, DecodeError> {
    let text = raw.get();
    parse_u64_digits(text).ok_or_else(|| DecodeError::BadField {
        field,
        reason: format!("expected an unsigned integer, found {}", clip(text)),
    })
}

/// A u64 that is either a number or a string of digits: futures `listenKeyExpired`
/// sends `"E"` as a string.
fn raw_u64_lenient(raw: &RawValue, field: &'static str) -> Result<u64, DecodeError> {
    if raw.get().starts_with('"') {
        let s = raw_str(raw, field)?;
        return parse_u64_digits(&s).ok_or_else(|| DecodeError::BadField {
            field,
            reason: format!("expected digits, found {}", clip(&s)),
        });
    }
    raw_u64(raw, field)
}

pub(crate) fn parse_u64_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn bad(field: &'static str, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::BadField {
        field,
        reason: e.to_string(),
    }
}

/// Error messages quote offending input, but never much of it.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn need<'a>(v: Option<&'a RawValue>, field: &'static str) -> Result<&'a RawValue, DecodeError> {
    v.ok_or(DecodeError::MissingField(field))
}

// ------------------------------------------------------------ user stream

#[derive(Deserialize)]
struct UserEnvelope<'a> {
    #[serde(borrow, default)]
    e: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(rename = "E", borrow, default)]
    event_time: Option<&'a RawValue>,
    #[serde(rename = "listenKey", borrow, default)]
    listen_key: Option<&'a RawValue>,
}

/// Decodes one user-data frame in any envelope: bare (`/ws/<listenKey>`),
/// `{"event":{..}}` (WebSocket API 2024-12 .. 2025-08, and `serverShutdown`), or
/// `{"subscriptionId":n,"event":{..}}` (WebSocket API since 2025-08).
pub fn decode_user_event(frame: &str) -> Result<UserEvent, DecodeError> {
    decode_user_event_keyed(frame).map(|(ev, _)| ev)
}

/// Like [`decode_user_event`], plus a hash of the event object itself (without its
/// envelope): the same event delivered on two connections during a rotation has
/// the same key even though each subscription wraps it with its own id.
pub fn decode_user_event_keyed(frame: &str) -> Result<(UserEvent, u64), DecodeError> {
    check_size(frame, MAX_USER_FRAME_BYTES)?;
    if let Some((er, object)) = scan::execution_report(frame) {
        return Ok((UserEvent::ExecutionReport(Box::new(er)), frame_hash(object)));
    }
    decode_user_validated(frame)
}

/// [`decode_user_event_keyed`] without the `executionReport` scanner: every frame
/// goes through serde. The reference the scanner is tested against.
pub fn decode_user_event_keyed_validating(frame: &str) -> Result<(UserEvent, u64), DecodeError> {
    check_size(frame, MAX_USER_FRAME_BYTES)?;
    decode_user_validated(frame)
}

/// Runs only the `executionReport` scanner: `None` means it was unsure (or the frame
/// is another event) and [`decode_user_event_keyed`] would have used serde. For
/// tests and fuzzing.
pub fn scan_execution_report_only(frame: &str) -> Option<(UserEvent, u64)> {
    if frame.len() > MAX_USER_FRAME_BYTES {
        return None;
    }
    scan::execution_report(frame)
        .map(|(er, object)| (UserEvent::ExecutionReport(Box::new(er)), frame_hash(object)))
}

fn decode_user_validated(frame: &str) -> Result<(UserEvent, u64), DecodeError> {
    let outer: UserEnvelope = serde_json::from_str(frame)?;
    let (object, ev) = match (outer.e, outer.event) {
        (Some(e), _) => (frame, decode_user_object(frame, e, &outer)?),
        (None, Some(inner)) => {
            let env: UserEnvelope = serde_json::from_str(inner.get())?;
            let e = env.e.ok_or(DecodeError::MissingField("e"))?;
            (inner.get(), decode_user_object(inner.get(), e, &env)?)
        }
        (None, None) => return Err(DecodeError::NotAnEvent),
    };
    Ok((ev, frame_hash(object.trim())))
}

/// Stable within a process; used only to recognise frames seen twice.
///
/// foldhash's quality hasher with a fixed seed: 64 well-mixed bits (a false
/// "duplicate" among the few thousand recent frames kept is ~2^-50), at a fraction
/// of SipHash's cost, which was a seventh of decoding one executionReport.
pub fn frame_hash(text: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x6d6d_645f_6672_616d).hash_one(text.as_bytes())
}

fn decode_user_object(
    object: &str,
    e: &RawValue,
    env: &UserEnvelope<'_>,
) -> Result<UserEvent, DecodeError> {
    let event_type = raw_str(e, "e")?;
    let event_time = || raw_u64(need(env.event_time, "E")?, "E");
    Ok(match &*event_type {
        "executionReport" => {
            UserEvent::ExecutionReport(Box::new(serde_json::from_str::<ExecutionReport>(object)?))
        }
        "outboundAccountPosition" => {
            UserEvent::AccountPosition(serde_json::from_str::<AccountPosition>(object)?)
        }
        "outboundAccountInfo" => {
            UserEvent::AccountInfo(serde_json::from_str::<AccountInfo>(object)?)
        }
        "balanceUpdate" => UserEvent::BalanceUpdate(serde_json::from_str::<BalanceUpdate>(object)?),
        "listenKeyExpired" => UserEvent::ListenKeyExpired {
            event_time: raw_u64_lenient(need(env.event_time, "E")?, "E")?,
            listen_key: raw_str(need(env.listen_key, "listenKey")?, "listenKey")?.into_owned(),
        },
        "eventStreamTerminated" => UserEvent::EventStreamTerminated {
            event_time: event_time()?,
        },
        "serverShutdown" => UserEvent::ServerShutdown {
            event_time: event_time()?,
        },
        other => UserEvent::Other {
            event_type: other.to_owned(),
        },
    })
}

// ------------------------------------------------------------ market stream

/// Every field any market object we care about can carry, captured without
/// committing to a type: `b` is a price string in a ticker but an array in a
/// depth update, and we only learn which after seeing `e`.
#[derive(Deserialize)]
struct MarketObject<'a> {
    #[serde(borrow, default)]
    e: Option<&'a RawValue>,
    #[serde(rename = "E", borrow, default)]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    s: Option<&'a RawValue>,
    #[serde(borrow, default)]
    u: Option<&'a RawValue>,
    #[serde(borrow, default)]
    c: Option<&'a RawValue>,
    #[serde(borrow, default)]
    b: Option<&'a RawValue>,
    #[serde(rename = "B", borrow, default)]
    bid_qty: Option<&'a RawValue>,
    #[serde(borrow, default)]
    a: Option<&'a RawValue>,
    #[serde(rename = "A", borrow, default)]
    ask_qty: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<IgnoredAny>,
}

/// Decodes one market-stream frame, appending the events for `wanted` symbols to
/// `out`. Handles `!ticker@arr` arrays, single `24hrTicker` and `bookTicker`
/// payloads, combined-stream `{"stream":..,"data":..}` wrappers and `serverShutdown`.
/// Other streams' events and SUBSCRIBE responses are accepted and produce nothing.
pub fn decode_market_frame(
    frame: &str,
    wanted: &SymbolSet,
    out: &mut Vec<MarketEvent>,
) -> Result<(), DecodeError> {
    check_size(frame, MAX_FRAME_BYTES)?;
    if let Some(t) = scan::book_ticker(frame) {
        if wanted.contains(t.symbol) {
            out.push(MarketEvent::BookTicker(t.to_owned()));
        }
        return Ok(());
    }
    decode_market_value(frame, wanted, out, 0)
}

/// Runs only the spot `bookTicker` scanner: `false` means it was unsure and
/// [`decode_market_frame`] would have used the general decoder (`out` is then left
/// as it was). For tests and fuzzing.
pub fn scan_book_ticker_only(frame: &str, wanted: &SymbolSet, out: &mut Vec<MarketEvent>) -> bool {
    if frame.len() > MAX_FRAME_BYTES {
        return false;
    }
    match scan::book_ticker(frame) {
        Some(t) => {
            if wanted.contains(t.symbol) {
                out.push(MarketEvent::BookTicker(t.to_owned()));
            }
            true
        }
        None => false,
    }
}

/// [`decode_market_frame`] without the `!ticker@arr` and `bookTicker` scanners: every
/// byte of the frame is tokenized and validated. The reference the scanners are
/// tested against.
pub fn decode_market_frame_validating(
    frame: &str,
    wanted: &SymbolSet,
    out: &mut Vec<MarketEvent>,
) -> Result<(), DecodeError> {
    check_size(frame, MAX_FRAME_BYTES)?;
    decode_market_value_validating(frame, wanted, out, 0)
}

fn decode_market_value(
    text: &str,
    wanted: &SymbolSet,
    out: &mut Vec<MarketEvent>,
    depth: u8,
) -> Result<(), DecodeError> {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let before = out.len();
            if scan_ticker_array(text, wanted, out) == Scan::Done {
                return Ok(());
            }
            out.truncate(before);
            decode_ticker_array_validating(text, wanted, out)
        }
        Some(b'{') => {
            let obj: MarketObject = serde_json::from_str(text)?;
            market_object(obj, wanted, out, depth)
        }
        _ => Err(DecodeError::Json(format!(
            "expected a JSON object or array, found {}",
            clip(text.trim_start())
        ))),
    }
}

fn decode_market_value_validating(
    text: &str,
    wanted: &SymbolSet,
    out: &mut Vec<MarketEvent>,
    depth: u8,
) -> Result<(), DecodeError> {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => decode_ticker_array_validating(text, wanted, out),
        Some(b'{') => {
            let obj: MarketObject = serde_json::from_str(text)?;
            market_object_with(obj, wanted, out, depth, decode_market_value_validating)
        }
        _ => Err(DecodeError::Json(format!(
            "expected a JSON object or array, found {}",
            clip(text.trim_start())
        ))),
    }
}

/// Runs only the `!ticker@arr` scanner: `false` means it was unsure and
/// [`decode_market_frame`] would have fallen back to the validating parser
/// (`out` is then left as it was). For tests, benches and fuzzing.
pub fn scan_ticker_arr_only(frame: &str, wanted: &SymbolSet, out: &mut Vec<MarketEvent>) -> bool {
    let before = out.len();
    if frame.len() <= MAX_FRAME_BYTES && scan_ticker_array(frame, wanted, out) == Scan::Done {
        return true;
    }
    out.truncate(before);
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Done,
    Unsure,
}

/// Every element of a compact Binance `!ticker@arr` frame starts with this.
const TICKER_PREFIX: &[u8] = br#"{"e":"24hrTicker","E":"#;

/// The fast path for `!ticker@arr` (issue 6): finds every object start with one
/// SIMD pass for `{`, reads the symbol at its fixed place in Binance's compact
/// layout, and strictly parses only the wanted objects (with the same code as
/// the validating path). Anything off that layout (whitespace between elements,
/// another key order, a `{` inside a value, an escaped symbol, a wanted object
/// that does not parse) answers `Unsure` and the caller re-decodes the whole
/// frame with the validating parser.
///
/// What it does not do is validate the syntax *inside* objects nobody asked for:
/// a frame whose only defect is in an unwanted object decodes here, while the
/// validating parser would reject it. Wanted data is identical in both.
fn scan_ticker_array(frame: &str, wanted: &SymbolSet, out: &mut Vec<MarketEvent>) -> Scan {
    let bytes = frame.as_bytes();
    let start = bytes.len() - frame.trim_start().len();
    let end = frame.trim_end().len();
    if end < start + 2 || bytes[start] != b'[' || bytes[end - 1] != b']' {
        return Scan::Unsure;
    }
    if end == start + 2 {
        return Scan::Done; // `[]`
    }
    let body = &bytes[..end - 1]; // up to, not including, the closing `]`
    let mut braces = memchr::memchr_iter(b'{', &bytes[start..end]).map(|i| i + start);
    let Some(mut open) = braces.next() else {
        return Scan::Unsure;
    };
    if open != start + 1 {
        return Scan::Unsure;
    }
    loop {
        let next = braces.next();
        // This object spans [open, close]; the next one must follow as `},{`.
        let close = match next {
            Some(n) => {
                if n < open + 2 || bytes[n - 1] != b',' || bytes[n - 2] != b'}' {
                    return Scan::Unsure;
                }
                n - 2
            }
            None => {
                if bytes[end - 2] != b'}' {
                    return Scan::Unsure;
                }
                end - 2
            }
        };
        let object = &body[open..=close];
        if !object.starts_with(TICKER_PREFIX) {
            return Scan::Unsure;
        }
        let rest = &object[TICKER_PREFIX.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let rest = &rest[digits..];
        if digits == 0 || !rest.starts_with(br#","s":""#) {
            return Scan::Unsure;
        }
        let rest = &rest[6..];
        let Some(len) = memchr::memchr(b'"', rest) else {
            return Scan::Unsure;
        };
        let symbol_bytes = &rest[..len];
        if symbol_bytes.contains(&b'\\') {
            return Scan::Unsure;
        }
        // Boundaries are ASCII, so the slices are valid UTF-8.
        let Ok(symbol) = std::str::from_utf8(symbol_bytes) else {
            return Scan::Unsure;
        };
        if wanted.contains(symbol) {
            let Ok(text) = std::str::from_utf8(object) else {
                return Scan::Unsure;
            };
            let parsed = serde_json::from_str::<MarketObject>(text)
                .ok()
                .and_then(|obj| ticker_if_wanted(&obj, wanted).ok().flatten());
            match parsed {
                Some(t) => out.push(MarketEvent::Ticker(t)),
                None => return Scan::Unsure,
            }
        }
        match next {
            Some(n) => open = n,
            None => return Scan::Done,
        }
    }
}

fn decode_ticker_array_validating(
    text: &str,
    wanted: &SymbolSet,
    out: &mut Vec<MarketEvent>,
) -> Result<(), DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut failure = None;
    let walked = TickerArraySeed {
        wanted,
        out,
        failure: &mut failure,
    }
    .deserialize(&mut de);
    // Our own errors travel through serde as text; hand back the typed one.
    if let Some(e) = failure {
        return Err(e);
    }
    walked?;
    de.end()?;
    Ok(())
}

type ValueDecoder = fn(&str, &SymbolSet, &mut Vec<MarketEvent>, u8) -> Result<(), DecodeError>;

fn market_object(
    obj: MarketObject<'_>,
    wanted: &SymbolSet,
    out: &mut Vec<MarketEvent>,
    depth: u8,
) -> Result<(), DecodeError> {
    market_object_with(obj, wanted, out, depth, decode_market_value)
}

fn market_object_with(
    obj: MarketObject<'_>,
    wanted: &SymbolSet,
    out: &mut Vec<MarketEvent>,
    depth: u8,
    inner: ValueDecoder,
) -> Result<(), DecodeError> {
    if let Some(data) = obj.data {
        // Combined-stream wrapper; one level only, Binance never nests them.
        if obj.stream.is_none() || depth > 0 {
            return Err(DecodeError::MissingField("stream"));
        }
        return inner(data.get(), wanted, out, depth + 1);
    }
    match obj.e {
        Some(e) => match &*raw_str(e, "e")? {
            "24hrTicker" => {
                if let Some(t) = ticker_if_wanted(&obj, wanted)? {
                    out.push(MarketEvent::Ticker(t));
                }
            }
            "bookTicker" => {
                // Futures and some compatible venues tag bookTicker with `e`.
                if let Some(t) = book_ticker_if_wanted(&obj, wanted)? {
                    out.push(MarketEvent::BookTicker(t));
                }
            }
            "serverShutdown" => out.push(MarketEvent::ServerShutdown {
                event_time: raw_u64(need(obj.event_time, "E")?, "E")?,
            }),
            _ => {}
        },
        // Spot bookTicker has neither `e` nor `E`; `u` + `s` identify it.
        None if obj.u.is_some() && obj.s.is_some() => {
            if let Some(t) = book_ticker_if_wanted(&obj, wanted)? {
                out.push(MarketEvent::BookTicker(t));
            }
        }
        // SUBSCRIBE/UNSUBSCRIBE responses and partial-depth snapshots: nothing to emit.
        None => {}
    }
    let _ = obj.id;
    Ok(())
}

fn ticker_if_wanted(
    obj: &MarketObject<'_>,
    wanted: &SymbolSet,
) -> Result<Option<Ticker>, DecodeError> {
    let symbol = raw_str(need(obj.s, "s")?, "s")?;
    if !wanted.contains(&symbol) {
        return Ok(None);
    }
    Ok(Some(Ticker {
        event_time: raw_u64(need(obj.event_time, "E")?, "E")?,
        symbol: symbol.into_owned(),
        last_price: raw_decimal(need(obj.c, "c")?, "c")?,
        best_bid: raw_decimal(need(obj.b, "b")?, "b")?,
        best_bid_qty: raw_decimal(need(obj.bid_qty, "B")?, "B")?,
        best_ask: raw_decimal(need(obj.a, "a")?, "a")?,
        best_ask_qty: raw_decimal(need(obj.ask_qty, "A")?, "A")?,
    }))
}

fn book_ticker_if_wanted(
    obj: &MarketObject<'_>,
    wanted: &SymbolSet,
) -> Result<Option<BookTicker>, DecodeError> {
    let symbol = raw_str(need(obj.s, "s")?, "s")?;
    if !wanted.contains(&symbol) {
        return Ok(None);
    }
    Ok(Some(BookTicker {
        update_id: raw_u64(need(obj.u, "u")?, "u")?,
        symbol: symbol.into_owned(),
        best_bid: raw_decimal(need(obj.b, "b")?, "b")?,
        best_bid_qty: raw_decimal(need(obj.bid_qty, "B")?, "B")?,
        best_ask: raw_decimal(need(obj.a, "a")?, "a")?,
        best_ask_qty: raw_decimal(need(obj.ask_qty, "A")?, "A")?,
    }))
}

/// Walks a `!ticker@arr` array element by element, keeping only wanted symbols;
/// the rest are skipped as borrowed raw slices.
struct TickerArraySeed<'s> {
    wanted: &'s SymbolSet,
    out: &'s mut Vec<MarketEvent>,
    failure: &'s mut Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for TickerArraySeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TickerArraySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of ticker objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        while let Some(obj) = seq.next_element::<MarketObject<'de>>()? {
            let step = (|| {
                let e = raw_str(need(obj.e, "e")?, "e")?;
                if &*e == "24hrTicker"
                    && let Some(t) = ticker_if_wanted(&obj, self.wanted)?
                {
                    self.out.push(MarketEvent::Ticker(t));
                }
                Ok::<(), DecodeError>(())
            })();
            if let Err(e) = step {
                let msg = e.to_string();
                *self.failure = Some(e);
                return Err(A::Error::custom(msg));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn set(s: &[&str]) -> SymbolSet {
        SymbolSet::new(s.iter().copied())
    }

    #[test]
    fn book_ticker_decodes_and_unwanted_is_skipped() {
        let f = r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
        let mut out = Vec::new();
        decode_market_frame(f, &set(&["BNBUSDT"]), &mut out).unwrap();
        assert_eq!(
            out,
            vec![MarketEvent::BookTicker(BookTicker {
                update_id: 400900217,
                symbol: "BNBUSDT".into(),
                best_bid: dec!(25.35190000),
                best_bid_qty: dec!(31.21),
                best_ask: dec!(25.3652),
                best_ask_qty: dec!(40.66),
            })]
        );
        out.clear();
        decode_market_frame(f, &set(&["BTCUSDT"]), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn combined_wrapper_and_subscribe_response() {
        let f = r#"{"stream":"bnbusdt@bookTicker","data":{"u":1,"s":"BNBUSDT","b":"1","B":"2","a":"3","A":"4"}}"#;
        let mut out = Vec::new();
        decode_market_frame(f, &set(&["BNBUSDT"]), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        out.clear();
        decode_market_frame(r#"{"result":null,"id":1}"#, &set(&["BNBUSDT"]), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_market_frames_are_errors() {
        let w = set(&["X"]);
        let mut out = Vec::new();
        for f in [
            "",
            "null",
            "[1,2]",
            r#"{"e":"24hrTicker","s":"X","E":1,"c":1,"b":"1","B":"1","a":"1","A":"1"}"#,
            r#"{"e":"24hrTicker","s":"X","E":-1,"c":"1","b":"1","B":"1","a":"1","A":"1"}"#,
            r#"{"e":"24hrTicker","s":"X","s":"X","E":1,"c":"1","b":"1","B":"1","a":"1","A":"1"}"#,
            r#"{"u":1,"s":"X","b":"1_0","B":"1","a":"1","A":"1"}"#,
            r#"[{"e":"24hrTicker","s":"X"}"#,
            r#"{"stream":"x","data":{"stream":"y","data":{}}}"#,
        ] {
            assert!(decode_market_frame(f, &w, &mut out).is_err(), "{f}");
        }
        let huge = " ".repeat(MAX_FRAME_BYTES + 1);
        assert!(matches!(
            decode_market_frame(&huge, &w, &mut out),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_user_event(&huge),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn escaped_symbol_matches() {
        let f = r#"{"u":1,"s":"\u0042TC","b":"1","B":"2","a":"3","A":"4"}"#;
        let mut out = Vec::new();
        decode_market_frame(f, &set(&["BTC"]), &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn user_envelopes_and_control_events() {
        let bare = r#"{"e":"listenKeyExpired","E":1,"listenKey":"k"}"#;
        assert_eq!(
            decode_user_event(bare).unwrap(),
            UserEvent::ListenKeyExpired {
                event_time: 1,
                listen_key: "k".into()
            }
        );
        let futures = r#"{"e":"listenKeyExpired","E":"17","listenKey":"k"}"#;
        assert!(matches!(
            decode_user_event(futures).unwrap(),
            UserEvent::ListenKeyExpired { event_time: 17, .. }
        ));
        let wrapped = r#"{"subscriptionId":3,"event":{"e":"eventStreamTerminated","E":5}}"#;
        assert_eq!(
            decode_user_event(wrapped).unwrap(),
            UserEvent::EventStreamTerminated { event_time: 5 }
        );
        let shutdown = r#"{"event":{"e":"serverShutdown","E":6}}"#;
        assert_eq!(
            decode_user_event(shutdown).unwrap(),
            UserEvent::ServerShutdown { event_time: 6 }
        );
        let other = r#"{"e":"listStatus","E":6}"#;
        assert_eq!(
            decode_user_event(other).unwrap(),
            UserEvent::Other {
                event_type: "listStatus".into()
            }
        );
        assert_eq!(
            decode_user_event(r#"{"id":"1","status":200,"result":{}}"#),
            Err(DecodeError::NotAnEvent)
        );
        assert!(decode_user_event(r#"{"e":"executionReport","E":1}"#).is_err());
        assert!(decode_user_event("[").is_err());
    }
}
