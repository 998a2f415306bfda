//! Strict fast paths for the two hot small frames (issue 6): one `bookTicker` and
//! one `executionReport`.
//!
//! Each scanner reads every byte of the frame against a narrow JSON grammar (no
//! escapes, no nesting beyond the user-stream wrapper, numbers checked against
//! JSON's grammar) and answers `None` whenever it is unsure; the caller then decodes
//! the frame with the validating serde path. When a scanner does answer, the frame is
//! valid JSON and the answer is exactly what the validating path gives for it: the
//! scanners never produce errors and never accept what the validating path would
//! refuse (duplicate known keys, malformed numbers, control characters in strings,
//! trailing bytes, ...). `tests/binance_decode_diff.rs` and the `market_frame` and
//! `user_event` fuzz targets check this differentially.

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::value::{BorrowedStrDeserializer, Error as ValueError};

use super::types::{BookTicker, ExecType, ExecutionReport, OrderStatus, Side};

/// Exact `Decimal` of a plain `digits[.digits]` string of at most 19 digits, the form
/// of every Binance price and quantity. `None` for anything else (sign, exponent,
/// `_`, empty, a leading or trailing point, more digits): the caller then uses the
/// strict parser. Where it answers, mantissa *and* scale equal `Decimal::from_str`'s.
#[inline]
pub(crate) fn plain_decimal(s: &[u8]) -> Option<Decimal> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut point = usize::MAX;
    for (i, &b) in s.iter().enumerate() {
        let d = b.wrapping_sub(b'0');
        if d < 10 {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        } else if b == b'.' && point == usize::MAX && i != 0 && i + 1 != s.len() {
            point = i;
        } else {
            return None;
        }
    }
    let (digits, scale) = if point == usize::MAX {
        (s.len(), 0)
    } else {
        (s.len() - 1, s.len() - 1 - point)
    };
    // 19 digits always fit in a u64, so the wrapping arithmetic above never wrapped.
    if digits > 19 {
        return None;
    }
    Some(Decimal::from_parts(
        mantissa as u32,
        (mantissa >> 32) as u32,
        0,
        false,
        scale as u32,
    ))
}

/// A byte cursor over a `&str`; every method answers `None` when the input is not
/// what the narrow grammar expects.
struct Cur<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Self {
        Self { s, i: 0 }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    #[inline]
    fn lit(&mut self, l: &[u8]) -> Option<()> {
        if self.s.as_bytes()[self.i..].starts_with(l) {
            self.i += l.len();
            Some(())
        } else {
            None
        }
    }

    /// JSON whitespace only (what serde_json skips).
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// After an opening quote: the string up to the closing quote, which is consumed.
    /// `None` on an escape or a control character (serde_json rejects the latter;
    /// the former is left to the validating path to unescape).
    #[inline(always)]
    fn str_body(&mut self) -> Option<&'a str> {
        let bytes = self.s.as_bytes();
        let start = self.i;
        let mut j = start;
        // Eight bytes at a time; the scalar loop only for the last few.
        while let Some(chunk) = bytes.get(j..j + 8) {
            let special = special_bytes(u64::from_le_bytes(chunk.try_into().ok()?));
            if special != 0 {
                j += (special.trailing_zeros() / 8) as usize;
                return self.close_str(start, j);
            }
            j += 8;
        }
        while let Some(&c) = bytes.get(j) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return self.close_str(start, j);
            }
            j += 1;
        }
        None
    }

    /// `j` is the first special byte after `start`: the string ends there if it is a quote.
    #[inline]
    fn close_str(&mut self, start: usize, j: usize) -> Option<&'a str> {
        if self.s.as_bytes()[j] != b'"' {
            return None;
        }
        self.i = j + 1;
        // Both ends are ASCII, so this is a char boundary.
        Some(&self.s[start..j])
    }

    fn digits1(&mut self) -> Option<()> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// A number in JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits1()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits1()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits1()?;
        }
        Some(&self.s[start..self.i])
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A mask whose lowest set bit is the high bit of the first byte (in memory order)
/// of `x` that is `"`, `\` or below 0x20; zero when there is none. The classic
/// zero-byte tests: a borrow can flag a byte spuriously only *above* a truly flagged
/// one, so the lowest flag is exact (bytes >= 0x80 are never flagged).
#[inline]
fn special_bytes(x: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(x ^ (ONES * u64::from(b'"')))
        | zero(x ^ (ONES * u64::from(b'\\')))
        | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
}

/// A JSON integer as serde_json deserializes it into a `u64`: digits only, in range.
fn json_u64(n: &str) -> Option<u64> {
    if n.bytes().all(|b| b.is_ascii_digit()) {
        n.parse().ok()
    } else {
        None
    }
}

/// As serde_json deserializes it into an `i64`. `-0` is refused: serde_json reads
/// it as the float `-0.0`, which an `i64` rejects.
fn json_i64(n: &str) -> Option<i64> {
    let digits = n.strip_prefix('-').unwrap_or(n);
    if digits.bytes().all(|b| b.is_ascii_digit()) && n != "-0" {
        n.parse().ok()
    } else {
        None
    }
}

// ------------------------------------------------------------ bookTicker

/// A spot `bookTicker`, symbol still borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BookTickerRef<'a> {
    pub update_id: u64,
    pub symbol: &'a str,
    pub best_bid: Decimal,
    pub best_bid_qty: Decimal,
    pub best_ask: Decimal,
    pub best_ask_qty: Decimal,
}

impl BookTickerRef<'_> {
    pub fn to_owned(self) -> BookTicker {
        BookTicker {
            update_id: self.update_id,
            symbol: self.symbol.to_owned(),
            best_bid: self.best_bid,
            best_bid_qty: self.best_bid_qty,
            best_ask: self.best_ask,
            best_ask_qty: self.best_ask_qty,
        }
    }
}

/// Binance's exact spot layout,
/// `{"u":N,"s":"SYM","b":"D","B":"D","a":"D","A":"D"}`, bare or in the combined
/// stream's `{"stream":"..","data":..}`, with no whitespace and plain decimals.
/// Anything else (another key order, a futures `e`-tagged bookTicker, spaces, an
/// escape, an exponent) is `None`.
pub(crate) fn book_ticker(frame: &str) -> Option<BookTickerRef<'_>> {
    let mut c = Cur::new(frame);
    let wrapped = c.lit(br#"{"stream":""#).is_some();
    if wrapped {
        c.str_body()?;
        c.lit(br#","data":"#)?;
    }
    c.lit(br#"{"u":"#)?;
    let update_id = json_u64(c.number()?)?;
    c.lit(br#","s":""#)?;
    let symbol = c.str_body()?;
    let mut decimal = |key: &[u8]| {
        c.lit(key)?;
        plain_decimal(c.str_body()?.as_bytes())
    };
    let best_bid = decimal(br#","b":""#)?;
    let best_bid_qty = decimal(br#","B":""#)?;
    let best_ask = decimal(br#","a":""#)?;
    let best_ask_qty = decimal(br#","A":""#)?;
    c.lit(b"}")?;
    if wrapped {
        c.lit(b"}")?;
    }
    (c.i == frame.len()).then_some(BookTickerRef {
        update_id,
        symbol,
        best_bid,
        best_bid_qty,
        best_ask,
        best_ask_qty,
    })
}

// ------------------------------------------------------------ executionReport

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val<'a> {
    Str(&'a str),
    Num(&'a str),
    Bool(bool),
    Null,
    /// The nested `event` object of the WebSocket API wrapper (its exact text).
    Obj(&'a str),
}

/// Every key the validating path treats as a field (of `UserEnvelope` or
/// `ExecutionReport`): a second occurrence of any of them is an error there, so
/// the scanner gives up on it.
const KEYS: [&str; 28] = [
    "e",
    "E",
    "s",
    "c",
    "S",
    "o",
    "f",
    "q",
    "p",
    "C",
    "x",
    "X",
    "r",
    "i",
    "l",
    "z",
    "L",
    "n",
    "N",
    "T",
    "t",
    "I",
    "w",
    "m",
    "Z",
    "eR",
    "event",
    "listenKey",
];

const K_E: usize = 0;
const K_EVENT: usize = 26;

#[inline]
fn slot(key: &str) -> Option<usize> {
    let b = key.as_bytes();
    if b.len() == 1 {
        // One-byte keys: a small table instead of a chain of compares.
        const fn table() -> [u8; 128] {
            let mut t = [u8::MAX; 128];
            let mut k = 0;
            while k < KEYS.len() {
                let key = KEYS[k].as_bytes();
                if key.len() == 1 {
                    t[key[0] as usize] = k as u8;
                }
                k += 1;
            }
            t
        }
        const TABLE: [u8; 128] = table();
        let k = *TABLE.get(b[0] as usize)?;
        return (k != u8::MAX).then_some(k as usize);
    }
    match key {
        "eR" => Some(25),
        "event" => Some(K_EVENT),
        "listenKey" => Some(27),
        _ => None,
    }
}

#[derive(Default)]
struct Fields<'a> {
    v: [Option<Val<'a>>; KEYS.len()],
}

impl<'a> Fields<'a> {
    #[inline]
    fn get(&self, k: usize) -> Option<Val<'a>> {
        self.v[k]
    }
}

impl<'a> Cur<'a> {
    /// A JSON object of scalar members. With `inner`, a member `"event":{..}` is
    /// also accepted and its own (scalar) members go to `inner`.
    fn object(&mut self, f: &mut Fields<'a>, mut inner: Option<&mut Fields<'a>>) -> Option<()> {
        self.lit(b"{")?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.lit(b"\"")?;
            // Binance's keys are mostly one byte: take those without the general scan
            // (a printable ASCII byte other than `"` and `\`, then the closing quote).
            let bytes = self.s.as_bytes();
            let key = match (bytes.get(self.i), bytes.get(self.i + 1)) {
                (Some(&c), Some(b'"')) if (0x20..0x80).contains(&c) && c != b'"' && c != b'\\' => {
                    self.i += 2;
                    &self.s[self.i - 2..self.i - 1]
                }
                _ => self.str_body()?,
            };
            if self.peek() == Some(b':') {
                self.i += 1;
            } else {
                self.ws();
                self.lit(b":")?;
            }
            self.ws();
            let v = match self.peek()? {
                b'"' => {
                    self.i += 1;
                    Val::Str(self.str_body()?)
                }
                b't' => {
                    self.lit(b"true")?;
                    Val::Bool(true)
                }
                b'f' => {
                    self.lit(b"false")?;
                    Val::Bool(false)
                }
                b'n' => {
                    self.lit(b"null")?;
                    Val::Null
                }
                b'{' if key == "event" => {
                    let start = self.i;
                    self.object(inner.take()?, None)?;
                    Val::Obj(&self.s[start..self.i])
                }
                _ => Val::Num(self.number()?),
            };
            if let Some(k) = slot(key) {
                if f.v[k].is_some() {
                    return None;
                }
                f.v[k] = Some(v);
            }
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// A decimal as `ExecutionReport`'s derived `Deserialize` reads one (rust_decimal's
/// own visitor, which also takes scientific notation), fast for plain strings.
fn serde_decimal(v: Option<Val<'_>>) -> Option<Decimal> {
    let Val::Str(s) = v? else { return None };
    plain_decimal(s.as_bytes()).or_else(|| {
        <Decimal as Deserialize>::deserialize(BorrowedStrDeserializer::<ValueError>::new(s)).ok()
    })
}

fn string(v: Option<Val<'_>>) -> Option<String> {
    match v? {
        Val::Str(s) => Some(s.to_owned()),
        _ => None,
    }
}

fn u64_field(v: Option<Val<'_>>) -> Option<u64> {
    match v? {
        Val::Num(n) => json_u64(n),
        _ => None,
    }
}

/// Unit-variant enums through their own derived `Deserialize` (unknown names map to
/// `Unknown` exactly as they do from serde_json).
fn enum_field<'a, T: Deserialize<'a>>(v: Option<Val<'a>>) -> Option<T> {
    match v? {
        Val::Str(s) => T::deserialize(BorrowedStrDeserializer::<ValueError>::new(s)).ok(),
        _ => None,
    }
}

/// `Option<T>` fields: absent or `null` is `None`.
fn optional<'a, T>(
    v: Option<Val<'a>>,
    some: impl FnOnce(Option<Val<'a>>) -> Option<T>,
) -> Option<Option<T>> {
    match v {
        None | Some(Val::Null) => Some(None),
        v => some(v).map(Some),
    }
}

/// One `executionReport` in either envelope (bare, or the WebSocket API's
/// `{"subscriptionId":n,"event":{..}}`), with the text of the event object itself
/// (what [`super::decode::frame_hash`] keys duplicates on). `None`: not an
/// executionReport, or not in the narrow grammar; the validating path decides.
pub(crate) fn execution_report(frame: &str) -> Option<(ExecutionReport, &str)> {
    let mut c = Cur::new(frame);
    c.ws();
    let start = c.i;
    let mut top = Fields::default();
    let mut inner = Fields::default();
    c.object(&mut top, Some(&mut inner))?;
    let end = c.i;
    c.ws();
    if c.i != frame.len() {
        return None;
    }
    let (f, object) = match (top.get(K_E), top.get(K_EVENT)) {
        (Some(_), None) => (&top, &frame[start..end]),
        (None, Some(Val::Obj(object))) => (&inner, object),
        _ => return None,
    };
    if f.get(K_E) != Some(Val::Str("executionReport")) {
        return None;
    }
    let g = |key: &str| f.get(slot(key).expect("a known key"));
    let er = ExecutionReport {
        event_time: u64_field(g("E"))?,
        symbol: string(g("s"))?,
        client_order_id: string(g("c"))?,
        side: enum_field::<Side>(g("S"))?,
        order_type: string(g("o"))?,
        time_in_force: string(g("f"))?,
        orig_qty: serde_decimal(g("q"))?,
        price: serde_decimal(g("p"))?,
        // `C`: null, absent and "" all mean none.
        orig_client_order_id: optional(g("C"), string)?.filter(|s| !s.is_empty()),
        exec_type: enum_field::<ExecType>(g("x"))?,
        status: enum_field::<OrderStatus>(g("X"))?,
        reject_reason: string(g("r"))?,
        order_id: u64_field(g("i"))?,
        last_qty: serde_decimal(g("l"))?,
        cum_qty: serde_decimal(g("z"))?,
        last_price: serde_decimal(g("L"))?,
        commission: serde_decimal(g("n"))?,
        commission_asset: optional(g("N"), string)?,
        transaction_time: u64_field(g("T"))?,
        trade_id: match g("t")? {
            Val::Num(n) => json_i64(n)?,
            _ => return None,
        },
        execution_id: optional(g("I"), u64_field)?,
        is_working: match g("w") {
            None => false,
            Some(Val::Bool(b)) => b,
            Some(_) => return None,
        },
        is_maker: match g("m")? {
            Val::Bool(b) => b,
            _ => return None,
        },
        cum_quote_qty: optional(g("Z"), serde_decimal)?,
        expiry_reason: optional(g("eR"), string)?,
    };
    Some((er, object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn plain_decimal_matches_from_str_exactly() {
        for s in [
            "0",
            "00",
            "0.0",
            "0.00000000",
            "25.35190000",
            "1",
            "1234567890123456789",
            "123456789012345678.9",
            "0.000000000000000001",
            "007.50",
        ] {
            let fast = plain_decimal(s.as_bytes()).unwrap();
            let slow = Decimal::from_str(s).unwrap();
            assert_eq!(fast.serialize(), slow.serialize(), "{s}");
        }
        for s in [
            "",
            ".",
            ".5",
            "5.",
            "1.2.3",
            "-1",
            "+1",
            "1e5",
            "1_0",
            " 1",
            "12345678901234567890",
            "1234567890123456789.0",
        ] {
            assert_eq!(plain_decimal(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn json_integers_follow_serde_json() {
        assert_eq!(json_u64("0"), Some(0));
        assert_eq!(json_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(json_u64("18446744073709551616"), None);
        assert_eq!(json_u64("1.0"), None);
        assert_eq!(json_u64("1e3"), None);
        assert_eq!(json_i64("-1"), Some(-1));
        assert_eq!(json_i64("-0"), None);
        assert_eq!(json_i64("9223372036854775808"), None);
        for n in ["-0", "1.0", "1e3", "-9223372036854775809"] {
            assert!(serde_json::from_str::<i64>(n).is_err(), "{n}");
        }
    }

    /// The eight-at-a-time string scan against a byte-by-byte reference, with each
    /// special byte (and a non-ASCII character) at every position of short strings.
    #[test]
    fn str_body_matches_a_bytewise_scan() {
        fn reference(s: &str) -> Option<&str> {
            let n = s
                .bytes()
                .position(|c| c == b'"' || c == b'\\' || c < 0x20)?;
            (s.as_bytes()[n] == b'"').then(|| &s[..n])
        }
        for len in 0..24 {
            for pos in 0..=len {
                for special in ["\"", "\\", "\u{1}", "\u{1f}", "\n", "é", " ", "\u{7f}"] {
                    let mut s: String = "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                    s.insert_str(pos, special);
                    s.push('"');
                    s.push_str("tail\\");
                    let mut c = Cur::new(&s);
                    assert_eq!(c.str_body(), reference(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn slots_cover_every_key() {
        for (k, key) in KEYS.iter().enumerate() {
            assert_eq!(slot(key), Some(k), "{key}");
        }
        for key in ["", "a", "v", "eRR", "events", "Cs", "\u{7f}"] {
            assert_eq!(slot(key), None, "{key}");
        }
    }
}
