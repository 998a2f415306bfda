//! The fast `!ticker@arr` scanner against the validating parser (issue 6):
//! generated frames in Binance's layout and in layouts the scanner must refuse,
//! plus byte mutations. Results must be identical wherever the validating parser
//! accepts the frame; where it rejects one, the scanner may only differ by having
//! decoded the wanted objects of an otherwise damaged frame, never by inventing data.

use mmd::binance::decode::{SymbolSet, decode_market_frame, decode_market_frame_validating};
use mmd::binance::types::MarketEvent;
use proptest::prelude::*;

const POOL: &[&str] = &[
    "BTCUSDT",
    "ETHUSDT",
    "BNBBTC",
    "AAAUSDT",
    "ZZZ",
    "X",
    "１２３４",
    "LTCBTC",
    "BTCUSDC",
];

#[derive(Debug, Clone)]
enum Layout {
    Binance,
    Spaced,
    Reordered,
    EscapedSymbol,
    NestedExtra,
    OtherEvent,
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        8 => Just(Layout::Binance),
        1 => Just(Layout::Spaced),
        1 => Just(Layout::Reordered),
        1 => Just(Layout::EscapedSymbol),
        1 => Just(Layout::NestedExtra),
        1 => Just(Layout::OtherEvent),
    ]
}

fn decimal() -> impl Strategy<Value = String> {
    (0u64..10_000_000, 0u32..9).prop_map(|(m, scale)| {
        rust_decimal::Decimal::from_i128_with_scale(m as i128, scale).to_string()
    })
}

fn object() -> impl Strategy<Value = String> {
    (
        0..POOL.len(),
        any::<u32>(),
        proptest::collection::vec(decimal(), 5),
        layout(),
    )
        .prop_map(|(sym, e, d, layout)| {
            let s = POOL[sym];
            let base = |sym_json: &str, ev: &str, sep: &str| {
                format!(
                    r#"{{"e":{sep}"{ev}","E":{e},"s":{sym_json},"p":"0.1","P":"1.0","w":"1","x":"1","c":"{}","Q":"1","b":"{}","B":"{}","a":"{}","A":"{}","o":"1","h":"2","l":"1","v":"10","q":"10","O":0,"C":1,"F":0,"L":1,"n":2}}"#,
                    d[0], d[1], d[2], d[3], d[4]
                )
            };
            match layout {
                Layout::Binance => base(&format!("\"{s}\""), "24hrTicker", ""),
                Layout::Spaced => base(&format!("\"{s}\""), "24hrTicker", " "),
                Layout::Reordered => format!(
                    r#"{{"s":"{s}","e":"24hrTicker","E":{e},"c":"{}","b":"{}","B":"{}","a":"{}","A":"{}"}}"#,
                    d[0], d[1], d[2], d[3], d[4]
                ),
                Layout::EscapedSymbol => {
                    let escaped: String = s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
                    base(&format!("\"{escaped}\""), "24hrTicker", "")
                }
                Layout::NestedExtra => {
                    let mut o = base(&format!("\"{s}\""), "24hrTicker", "");
                    o.insert_str(o.len() - 1, r#","z":{"k":[1,2]}"#);
                    o
                }
                Layout::OtherEvent => base(&format!("\"{s}\""), "24hrMiniTicker", ""),
            }
        })
}

fn frame() -> impl Strategy<Value = String> {
    (proptest::collection::vec(object(), 0..40), any::<bool>()).prop_map(|(objs, ws)| {
        let body = objs.join(if ws { ", " } else { "," });
        format!("[{body}]")
    })
}

fn wanted() -> impl Strategy<Value = SymbolSet> {
    proptest::collection::vec(0..POOL.len(), 0..4)
        .prop_map(|idx| SymbolSet::new(idx.into_iter().map(|i| POOL[i])))
}

type Outcome = Result<Vec<MarketEvent>, mmd::binance::decode::DecodeError>;

fn fast(f: &str, w: &SymbolSet) -> Outcome {
    let mut out = Vec::new();
    decode_market_frame(f, w, &mut out).map(|_| out)
}

fn validating(f: &str, w: &SymbolSet) -> Outcome {
    let mut out = Vec::new();
    decode_market_frame_validating(f, w, &mut out).map(|_| out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("MMD_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn scanner_equals_validating_parser_on_generated_frames(f in frame(), w in wanted()) {
        prop_assert_eq!(fast(&f, &w), validating(&f, &w));
    }

    #[test]
    fn scanner_never_invents_data_on_mutated_frames(
        f in frame(),
        w in wanted(),
        pos in any::<prop::sample::Index>(),
        byte in prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b','), Just(b'\\'), Just(b'1'), Just(b' '), Just(b'x'), any::<u8>().prop_filter("ascii", |b| b.is_ascii())],
        op in 0u8..3,
    ) {
        let mut bytes = f.clone().into_bytes();
        if bytes.is_empty() { return Ok(()); }
        let i = pos.index(bytes.len());
        match op {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => { bytes.truncate(i); }
        }
        let Ok(m) = String::from_utf8(bytes) else { return Ok(()) };
        let v = validating(&m, &w);
        let s = fast(&m, &w);
        match (&v, &s) {
            (Ok(_), _) => prop_assert_eq!(&s, &v),
            (Err(_), Err(_)) => {}
            // The scanner reads only the wanted objects, so damage elsewhere goes unseen:
            // what it returns must be the undamaged frame's events. It may miss an object
            // whose symbol the damage destroyed (it can no longer know the object was
            // wanted), but it never returns anything else.
            (Err(_), Ok(events)) => {
                let undamaged = validating(&f, &w).unwrap();
                prop_assert!(
                    is_subsequence(events, &undamaged),
                    "scanner {:?}, undamaged frame {:?}",
                    events,
                    undamaged
                );
            }
        }
    }
}

/// Whether `part` is `whole` with some elements left out, in the same order.
fn is_subsequence(part: &[MarketEvent], whole: &[MarketEvent]) -> bool {
    let mut rest = whole.iter();
    part.iter().all(|p| rest.any(|w| w == p))
}

/// Found by the mutation test (1 run in 3 of 512 cases): the wanted symbol's first letter
/// turned into a quote, `"s":""TCUSDT",...`. The validating parser refuses the frame; the
/// scanner reads the symbol as "", not wanted, and skips the object unread, as it skips
/// every object it does not want. It returns nothing, which is not inventing data.
#[test]
fn a_wanted_object_whose_symbol_is_damaged_is_not_returned() {
    let frame = |symbol: &str| {
        format!(
            r#"[{{"e":"24hrTicker","E":100000000,"s":"{symbol}","p":"0.1","P":"1.0","w":"1","x":"1","c":"0","Q":"1","b":"0","B":"0","a":"0","A":"0.000","o":"1","h":"2","l":"1","v":"10","q":"10","O":0,"C":1,"F":0,"L":1,"n":2}}]"#
        )
    };
    let w = SymbolSet::new(["BTCUSDT"]);
    assert_eq!(validating(&frame("BTCUSDT"), &w).unwrap().len(), 1);
    let damaged = frame("\"TCUSDT");
    assert!(validating(&damaged, &w).is_err());
    assert_eq!(fast(&damaged, &w), Ok(vec![]));
}

#[test]
fn fixture_frame_goes_through_the_fast_path_identically() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/binance-fixtures/spot/market/ticker_arr.composed.json"
    ))
    .unwrap();
    // The fixture is pretty-printed: the scanner must refuse it and fall back.
    let w = SymbolSet::new(["BNBBTC"]);
    assert_eq!(fast(&text, &w), validating(&text, &w));
    // Compacted, it is Binance's wire layout.
    let compact =
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&text).unwrap()).unwrap();
    assert_eq!(fast(&compact, &w), validating(&text, &w));
    assert_eq!(fast(&compact, &w).unwrap().len(), 1);
}

#[test]
fn binance_layout_takes_the_fast_path_at_full_size() {
    use mmd::binance::decode::scan_ticker_arr_only;
    let frame = mmd::binance::testing::ticker_arr_frame(2_000, 1_700_000_000_000);
    assert!(frame.len() > 700_000, "{}", frame.len());
    for w in [
        SymbolSet::new(["BTCUSDT", "ETHUSDT", "S1999USDT", "S500USDT", "NOPE"]),
        SymbolSet::default(),
    ] {
        let mut out = Vec::new();
        assert!(scan_ticker_arr_only(&frame, &w, &mut out), "scanner unsure");
        assert_eq!(Ok(out.clone()), validating(&frame, &w));
        assert_eq!(out.len(), w.len().saturating_sub(1));
    }
}
