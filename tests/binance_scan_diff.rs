//! The `bookTicker` and `executionReport` scanners (issue 6) against the validating
//! serde decoders: Binance's own fixtures (as published, compacted, wrapped and
//! bare), generated frames in and out of the scanners' grammar, and byte mutations.
//!
//! Two properties. The public decoders give exactly what the validating ones give,
//! on every input (the scanners fall back when unsure). And whenever a scanner
//! answers on its own, the validating decoder accepts the frame and gives the same
//! event (and the same duplicate key).

use std::path::PathBuf;

use mmd::binance::decode::{
    SymbolSet, decode_market_frame, decode_market_frame_validating, decode_user_event_keyed,
    decode_user_event_keyed_validating, scan_book_ticker_only, scan_execution_report_only,
};
use mmd::binance::types::{MarketEvent, UserEvent};
use proptest::prelude::*;

fn fixture(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/binance-fixtures")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Drops JSON whitespace outside strings, keeping key order (Binance's wire form).
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_str = false;
    let mut escaped = false;
    for ch in text.chars() {
        if in_str {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_str = false;
            }
        } else if ch == '"' {
            in_str = true;
            out.push(ch);
        } else if !ch.is_ascii_whitespace() {
            out.push(ch);
        }
    }
    out
}

/// The event object of a wrapped frame, or the frame itself.
fn unwrap_event(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    match v.get("event") {
        Some(inner) if v.get("e").is_none() => {
            // Re-extract the inner text verbatim, keeping its key order.
            let c = compact(text);
            let start = c.find(r#""event":"#).unwrap() + 8;
            let _ = inner;
            let mut depth = 0;
            let mut end = start;
            for (i, b) in c[start..].bytes().enumerate() {
                match b {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = start + i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            c[start..end].to_owned()
        }
        _ => compact(text),
    }
}

fn wrap(event: &str, id: u64) -> String {
    format!(r#"{{"subscriptionId":{id},"event":{event}}}"#)
}

type UserOutcome = Result<(UserEvent, u64), mmd::binance::decode::DecodeError>;

fn check_user(frame: &str) -> Option<(UserEvent, u64)> {
    let slow: UserOutcome = decode_user_event_keyed_validating(frame);
    let fast: UserOutcome = decode_user_event_keyed(frame);
    assert_eq!(fast, slow, "{frame}");
    let scanned = scan_execution_report_only(frame);
    if let Some(s) = &scanned {
        assert_eq!(Ok(s), slow.as_ref(), "scanner accepted: {frame}");
    }
    scanned
}

const ER_FIXTURES: &[&str] = &[
    "spot/user-data/executionReport.new.json",
    "spot/user-data/executionReport.new.market.json",
    "spot/user-data/executionReport.trade.partial.json",
    "spot/user-data/executionReport.trade.partial.2.json",
    "spot/user-data/executionReport.expired.json",
    "spot/user-data/legacy/executionReport.new.unwrapped.2020.json",
    "spot/user-data/legacy/executionReport.new.unwrapped.2025.json",
];

#[test]
fn execution_report_fixtures_take_the_fast_path_identically() {
    for rel in ER_FIXTURES {
        let text = fixture(rel);
        let event = unwrap_event(&text);
        let mut keys = Vec::new();
        for frame in [
            text.clone(),
            compact(&text),
            event.clone(),
            wrap(&event, 0),
            wrap(&event, 7),
            format!("  {}\n", wrap(&event, 3)),
        ] {
            let scanned = check_user(&frame);
            let (ev, key) = scanned.unwrap_or_else(|| panic!("{rel}: scanner refused {frame}"));
            assert!(matches!(ev, UserEvent::ExecutionReport(_)), "{rel}");
            keys.push(key);
        }
        // The same event keys the same in every compact envelope (the dedup relies on it).
        assert!(keys[2..].iter().all(|k| *k == keys[2]), "{rel}: {keys:?}");
    }
}

#[test]
fn expiry_reason_variant_parses_on_the_fast_path() {
    let event = unwrap_event(&fixture("spot/user-data/executionReport.expired.json"));
    let with_er = event.replacen(
        r#""x":"EXPIRED""#,
        r#""eR":"INSUFFICIENT_LIQUIDITY","x":"EXPIRED""#,
        1,
    );
    assert_ne!(with_er, event);
    for frame in [with_er.clone(), wrap(&with_er, 1)] {
        let (ev, _) = check_user(&frame).expect("fast path");
        let UserEvent::ExecutionReport(er) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(er.expiry_reason.as_deref(), Some("INSUFFICIENT_LIQUIDITY"));
    }
}

#[test]
fn other_user_fixtures_are_left_to_serde_and_unchanged() {
    for rel in [
        "spot/user-data/balanceUpdate.json",
        "spot/user-data/eventStreamTerminated.json",
        "spot/user-data/externalLockUpdate.json",
        "spot/user-data/listStatus.json",
        "spot/user-data/outboundAccountPosition.json",
        "spot/user-data/legacy/listenKeyExpired.json",
        "spot/user-data/legacy/outboundAccountInfo.json",
    ] {
        let text = fixture(rel);
        for frame in [text.clone(), compact(&text)] {
            assert!(check_user(&frame).is_none(), "{rel}");
            assert!(decode_user_event_keyed(&frame).is_ok(), "{rel}");
        }
    }
}

#[test]
fn book_ticker_fixture_takes_the_fast_path_identically() {
    let text = fixture("spot/market/bookTicker.json");
    let wanted = SymbolSet::new(["BNBUSDT"]);
    // Pretty-printed: refused, decoded by serde.
    check_market(&text, &wanted);
    assert!(!scan_book_ticker_only(&text, &wanted, &mut Vec::new()));
    let wire = compact(&text);
    for frame in [
        wire.clone(),
        format!(r#"{{"stream":"bnbusdt@bookTicker","data":{wire}}}"#),
    ] {
        let mut out = Vec::new();
        assert!(scan_book_ticker_only(&frame, &wanted, &mut out), "{frame}");
        assert!(matches!(out.as_slice(), [MarketEvent::BookTicker(_)]));
        assert_eq!(Ok(out), validating(&frame, &wanted));
        check_market(&frame, &SymbolSet::new(["BTCUSDT"]));
    }
}

// ------------------------------------------------------------ generated frames

type MarketOutcome = Result<Vec<MarketEvent>, mmd::binance::decode::DecodeError>;

fn validating(f: &str, w: &SymbolSet) -> MarketOutcome {
    let mut out = Vec::new();
    decode_market_frame_validating(f, w, &mut out).map(|_| out)
}

fn check_market(frame: &str, wanted: &SymbolSet) -> bool {
    let slow = validating(frame, wanted);
    let mut out = Vec::new();
    let fast = decode_market_frame(frame, wanted, &mut out).map(|_| out);
    assert_eq!(fast, slow, "{frame}");
    let mut scanned = Vec::new();
    let took = scan_book_ticker_only(frame, wanted, &mut scanned);
    if took {
        assert_eq!(Ok(&scanned), slow.as_ref(), "scanner accepted: {frame}");
    }
    took
}

/// A decimal string, mostly plain, sometimes in forms the fast parser must refuse.
fn decimal_text() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => (0u64..10_000_000_000, 0u32..12).prop_map(|(m, scale)| {
            rust_decimal::Decimal::from_i128_with_scale(m as i128, scale).to_string()
        }),
        1 => (0u64..1_000_000_000_000_000_000u64, 0u32..4).prop_map(|(m, z)| format!("{m}{}", "0".repeat(z as usize))),
        1 => prop_oneof![
            Just("1e5".to_owned()), Just("-1.5".to_owned()), Just("1_0".to_owned()),
            Just("".to_owned()), Just(".5".to_owned()), Just("5.".to_owned()),
            Just("0.0000000000000000000000000001".to_owned()), Just("1.2.3".to_owned()),
            Just("12345678901234567890.5".to_owned()), Just("abc".to_owned()),
            Just("1E-3".to_owned()), Just("+1".to_owned()),
        ],
    ]
}

fn book_frame() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            6 => (0u64..u64::MAX).prop_map(|u| u.to_string()),
            1 => prop_oneof![Just("-1".to_owned()), Just("01".to_owned()), Just("1.0".to_owned()), Just("\"5\"".to_owned()), Just("99999999999999999999".to_owned()), Just("1e2".to_owned())],
        ],
        prop_oneof![
            6 => prop::sample::select(vec!["BNBUSDT", "BTCUSDT", "ETHBTC", "X", "１２３４"]).prop_map(str::to_owned),
            1 => prop::sample::select(vec!["\\u0042TC", "BNB\\\"", "BN\u{1}B", ""]).prop_map(str::to_owned),
        ],
        prop::collection::vec(decimal_text(), 4),
        0u8..6,
    )
        .prop_map(|(u, s, d, shape)| {
            let obj = format!(
                r#"{{"u":{u},"s":"{s}","b":"{}","B":"{}","a":"{}","A":"{}"}}"#,
                d[0], d[1], d[2], d[3]
            );
            match shape {
                0 | 1 => obj,
                2 => format!(r#"{{"stream":"{}@bookTicker","data":{obj}}}"#, s.to_lowercase()),
                3 => obj.replace(",", ", "),
                4 => obj.replacen(r#""u":"#, r#""e":"bookTicker","u":"#, 1),
                _ => obj.replacen("}", r#","s":"X"}"#, 1),
            }
        })
}

fn book_wanted() -> impl Strategy<Value = SymbolSet> {
    prop::collection::vec(
        prop::sample::select(vec!["BNBUSDT", "BTCUSDT", "ETHBTC", "X", "１２３４", "BTC"]),
        0..3,
    )
    .prop_map(SymbolSet::new)
}

/// One field of a generated executionReport: its key and JSON value text, or none.
fn er_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    let u64v = || {
        prop_oneof![
            60 => (0u64..2_000_000_000_000).prop_map(|v| v.to_string()),
            1 => prop::sample::select(vec!["-1", "1.0", "1e3", "\"12\"", "null", "18446744073709551616", "18446744073709551615", "0"]).prop_map(str::to_owned),
        ]
    };
    let dec = || {
        prop_oneof![
            60 => decimal_text().prop_map(|d| format!("\"{d}\"")),
            1 => prop::sample::select(vec!["1.5", "null", "\"1\\u0030\"", "true"]).prop_map(str::to_owned),
        ]
    };
    let string = || {
        prop_oneof![
            60 => "[A-Za-z0-9_-]{0,24}".prop_map(|s| format!("\"{s}\"")),
            1 => prop::sample::select(vec!["null", "1", "\"a\\\"b\"", "\"tab\\there\"", "\"\u{1}\"", "\"１２\""]).prop_map(str::to_owned),
        ]
    };
    let side = prop_oneof![
        60 => prop::sample::select(vec!["\"BUY\"", "\"SELL\""]),
        1 => prop::sample::select(vec!["\"buy\"", "null", "\"HOLD\"", "\"B\\u0055Y\""]),
    ];
    let exec = prop::sample::select(vec![
        "\"NEW\"",
        "\"TRADE\"",
        "\"CANCELED\"",
        "\"EXPIRED\"",
        "\"REJECTED\"",
        "\"REPLACED\"",
        "\"TRADE_PREVENTION\"",
        "\"AMENDMENT\"",
        "\"SOMETHING_NEW\"",
        "\"UNKNOWN\"",
    ]);
    let exec = prop_oneof![30 => exec, 1 => Just("null")];
    let status = prop::sample::select(vec![
        "\"NEW\"",
        "\"PARTIALLY_FILLED\"",
        "\"FILLED\"",
        "\"CANCELED\"",
        "\"EXPIRED\"",
        "\"EXPIRED_IN_MATCH\"",
        "\"PENDING_NEW\"",
        "\"PENDING_CANCEL\"",
        "\"REJECTED\"",
        "\"HALTED\"",
    ]);
    let status = prop_oneof![30 => status, 1 => Just("5")];
    let opt = |v: BoxedStrategy<String>| {
        prop_oneof![
            3 => v.prop_map(Some),
            1 => Just(Some("null".to_owned())),
            1 => Just(None),
        ]
    };
    let trade_id = prop_oneof![
        40 => (-1i64..1_000_000).prop_map(|v| v.to_string()),
        1 => prop::sample::select(vec!["-0", "-9223372036854775809", "9223372036854775807", "1.5", "\"7\""]).prop_map(str::to_owned),
    ];
    let boolv = || {
        prop_oneof![
            60 => any::<bool>().prop_map(|b| b.to_string()),
            1 => prop::sample::select(vec!["null", "0", "\"true\""]).prop_map(str::to_owned),
        ]
    };
    let c_field = prop_oneof![
        Just(Some("\"\"".to_owned())),
        Just(Some("null".to_owned())),
        Just(None),
        "[A-Za-z0-9]{1,22}".prop_map(|s| Some(format!("\"{s}\""))),
    ];
    (
        (
            u64v(),
            string(),
            string(),
            side,
            string(),
            string(),
            dec(),
            dec(),
        ),
        (c_field, exec, status, string(), u64v(), dec(), dec(), dec()),
        (
            dec(),
            opt(string().boxed()),
            u64v(),
            trade_id,
            opt(u64v().boxed()),
            prop::option::of(boolv()),
            boolv(),
        ),
        (
            opt(dec().boxed()),
            opt(string().boxed()),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "P", "F", "g", "v", "M", "O", "Y", "Q", "W", "V", "Cs", "uS", "pl", "b",
                    ]),
                    prop::sample::select(vec![
                        "-1",
                        "\"0.00000000\"",
                        "true",
                        "null",
                        "1499405658657",
                        "\"NONE\"",
                        "1.5e-3",
                        "0",
                    ]),
                ),
                0..10,
            ),
        ),
    )
        .prop_map(|(a, b, c, d)| {
            let (e_time, s, cid, side, o, f, q, p) = a;
            let (cc, x, xx, r, i, l, z, ll) = b;
            let (n, nn, t, tid, ii, w, m) = c;
            let (zz, er, extra) = d;
            let mut v: Vec<(String, String)> = vec![
                ("e".into(), "\"executionReport\"".into()),
                ("E".into(), e_time),
                ("s".into(), s),
                ("c".into(), cid),
                ("S".into(), side.into()),
                ("o".into(), o),
                ("f".into(), f),
                ("q".into(), q),
                ("p".into(), p),
            ];
            if let Some(cc) = cc {
                v.push(("C".into(), cc));
            }
            v.extend([
                ("x".into(), x.to_owned()),
                ("X".into(), xx.to_owned()),
                ("r".into(), r),
                ("i".into(), i),
                ("l".into(), l),
                ("z".into(), z),
                ("L".into(), ll),
                ("n".into(), n),
            ]);
            if let Some(nn) = nn {
                v.push(("N".into(), nn));
            }
            v.push(("T".into(), t));
            v.push(("t".into(), tid));
            if let Some(ii) = ii {
                v.push(("I".into(), ii));
            }
            if let Some(w) = w {
                v.push(("w".into(), w));
            }
            v.push(("m".into(), m));
            if let Some(zz) = zz {
                v.push(("Z".into(), zz));
            }
            if let Some(er) = er {
                v.push(("eR".into(), er));
            }
            for (k, val) in extra {
                v.push((k.into(), val.into()));
            }
            v
        })
}

fn er_frame() -> impl Strategy<Value = String> {
    (
        er_fields(),
        any::<prop::sample::Index>(),
        0u8..12,
        any::<prop::sample::Index>(),
        prop::sample::select(vec!["e", "E", "s", "listenKey", "event", "zz", "eR"]),
    )
        .prop_map(|(mut fields, idx, shape, idx2, dup)| {
            match shape {
                // Another key order.
                7 => {
                    let i = idx.index(fields.len());
                    let j = idx2.index(fields.len());
                    fields.swap(i, j);
                }
                // A key twice.
                8 => fields.push((dup.into(), "\"1\"".into())),
                // A dropped field.
                9 => {
                    fields.remove(idx.index(fields.len()));
                }
                // A nested value.
                10 => fields.insert(
                    idx.index(fields.len()),
                    ("k".into(), "[1,{\"a\":2}]".into()),
                ),
                _ => {}
            }
            let pretty = shape == 11 || shape == 6;
            let sep = if pretty { ",\n  " } else { "," };
            let colon = if pretty { ": " } else { ":" };
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
                .collect();
            let obj = format!("{{{}}}", body.join(sep));
            match shape {
                0..=2 => wrap(&obj, u64::from(shape)),
                3 => format!(r#"{{"event":{obj}}}"#),
                4 => format!(r#"{{"event":{obj},"subscriptionId":2}}"#),
                5 => format!(r#"{{"subscriptionId":1,"e":"x","event":{obj}}}"#),
                6 => format!("{{\n  \"subscriptionId\": 0,\n  \"event\": {obj}\n}}\n"),
                _ => obj,
            }
        })
}

/// One edit of `frame` at `pos`: overwrite, insert or delete `byte`, or cut the frame
/// there. `None` when the result is not UTF-8 (the decoders take `&str`).
fn mutate(frame: String, pos: prop::sample::Index, byte: u8, op: u8) -> Option<String> {
    let mut bytes = frame.into_bytes();
    let i = pos.index(bytes.len());
    match op {
        0 => bytes[i] = byte,
        1 => bytes.insert(i, byte),
        2 => {
            bytes.remove(i);
        }
        _ => bytes.truncate(i),
    }
    String::from_utf8(bytes).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("MMD_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1024)
    ))]

    #[test]
    fn execution_report_scanner_equals_serde_on_generated_frames(f in er_frame()) {
        check_user(&f);
    }

    #[test]
    fn execution_report_scanner_equals_serde_on_mutated_frames(
        f in er_frame(),
        pos in any::<prop::sample::Index>(),
        byte in prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b','), Just(b':'), Just(b'\\'), Just(b'1'), Just(b'-'), Just(b'.'), Just(b' '), Just(b'e'), Just(0x01u8), any::<u8>().prop_filter("ascii", |b| b.is_ascii())],
        op in 0u8..4,
    ) {
        if let Some(m) = mutate(f, pos, byte, op) {
            check_user(&m);
        }
    }

    #[test]
    fn book_ticker_scanner_equals_serde_on_generated_frames(f in book_frame(), w in book_wanted()) {
        check_market(&f, &w);
    }

    #[test]
    fn book_ticker_scanner_equals_serde_on_mutated_frames(
        f in book_frame(),
        w in book_wanted(),
        pos in any::<prop::sample::Index>(),
        byte in prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b','), Just(b':'), Just(b'\\'), Just(b'1'), Just(b'0'), Just(b'.'), Just(b' '), Just(b'e'), any::<u8>().prop_filter("ascii", |b| b.is_ascii())],
        op in 0u8..4,
    ) {
        if let Some(m) = mutate(f, pos, byte, op) {
            check_market(&m, &w);
        }
    }
}

/// The generators must actually reach the fast paths, or the properties above are
/// vacuous.
#[test]
fn generators_reach_the_fast_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut er_hits, mut bt_hits) = (0, 0);
    for _ in 0..400 {
        let f = er_frame().new_tree(&mut runner).unwrap().current();
        er_hits += usize::from(check_user(&f).is_some());
        let b = book_frame().new_tree(&mut runner).unwrap().current();
        bt_hits += usize::from(check_market(&b, &SymbolSet::new(["BNBUSDT"])));
    }
    assert!(
        er_hits > 40,
        "executionReport fast path taken {er_hits}/400"
    );
    assert!(bt_hits > 60, "bookTicker fast path taken {bt_hits}/400");
}
