//! Property-test twins of the `basket` and `de90` fuzz targets (issue 7,
//! item 4), run by `cargo test`:
//!
//! - DE48 (`auth::basket::check_basket`): never panics on arbitrary bytes;
//!   agrees, verdict for verdict (total, first ineligible code, error kind
//!   and item index), with a reference parser written from INTERFACE §4;
//!   every basket built from valid items is accepted with the right total.
//! - DE90 (`OriginalData::parse`): never panics; accepts exactly 42 ASCII
//!   digits; valid values round-trip through `encode` (forwarding
//!   institution, digits 32–42, not kept: encoded as zeros); the parse
//!   through a decoded reversal (`Message::original`) agrees with it.
//! - The committed fuzz corpora (`fuzz/corpus/{basket,de90,decode,framing}`)
//!   replay through the same checks, so the fuzzers' findings stay covered
//!   without a nightly toolchain.
//!
//! The decode and framing twins of the `decode`/`framing` targets are in
//! `codec_props.rs` and `codec_malformed.rs`.

use bytes::BytesMut;
use kks_switch::auth::basket::{
    check_basket, BasketCheck, BasketError, BASKET_ITEMS_MAX, FOOD_ONLY_ALLOWED, ITEM_LEN,
};
use kks_switch::iso8583::{Fields, FrameCodec, Framing, Message, OriginalData, FRAME_BYTES_MAX};
use proptest::prelude::*;
use std::path::PathBuf;
use tokio_util::codec::Decoder;

// ------------------------------------------------------------------ DE48

/// INTERFACE §4 read plainly: length first, then item by item, code before
/// quantity before amount.
fn reference_basket(v: &[u8], allowed: &[&[u8; 4]]) -> Result<BasketCheck, BasketError> {
    if v.is_empty() || v.len() % 20 != 0 || v.len() > 40 * 20 {
        return Err(BasketError::Length);
    }
    let mut total = 0u64;
    let mut first_ineligible = None;
    for i in 0..v.len() / 20 {
        let item = &v[i * 20..i * 20 + 20];
        let code = &item[0..4];
        if !code.iter().all(|b| (b'A'..=b'Z').contains(b)) {
            return Err(BasketError::Code(i));
        }
        let qty = std::str::from_utf8(&item[4..8]).ok();
        let amt = std::str::from_utf8(&item[8..20]).ok();
        let num = |s: Option<&str>| {
            s.filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .map(|s| s.parse::<u64>().unwrap())
        };
        if num(qty).is_none() {
            return Err(BasketError::Digits(i));
        }
        let Some(a) = num(amt) else {
            return Err(BasketError::Digits(i));
        };
        total += a;
        if first_ineligible.is_none() && !allowed.iter().any(|x| x.as_slice() == code) {
            first_ineligible = Some([code[0], code[1], code[2], code[3]]);
        }
    }
    Ok(BasketCheck {
        total,
        first_ineligible,
    })
}

fn check_basket_agrees(v: &[u8]) {
    for allowed in [&FOOD_ONLY_ALLOWED[..], &[][..]] {
        let got = check_basket(v, allowed);
        assert_eq!(got, reference_basket(v, allowed), "DE48 {v:?}");
    }
}

/// One item: a code from the food list or any four letters, n4, n12.
fn item() -> impl Strategy<Value = (Vec<u8>, u64)> {
    let code = prop_oneof![
        prop::sample::select(FOOD_ONLY_ALLOWED.to_vec()).prop_map(|c| c.to_vec()),
        prop::collection::vec(b'A'..=b'Z', 4),
    ];
    (code, 0u32..10_000, 0u64..1_000_000_000_000).prop_map(|(c, q, a)| {
        let mut v = c;
        v.extend_from_slice(format!("{q:04}{a:012}").as_bytes());
        (v, a)
    })
}

/// Bytes that are mostly basket-shaped: valid items, then a few bytes
/// overwritten with anything, and sometimes cut or extended.
fn near_basket() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(item(), 0..=BASKET_ITEMS_MAX + 2),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        prop_oneof![3 => Just(0isize), 1 => -25isize..25],
    )
        .prop_map(|(items, pokes, cut)| {
            let mut v: Vec<u8> = items.into_iter().flat_map(|(i, _)| i).collect();
            for (at, b) in pokes {
                if !v.is_empty() {
                    let n = v.len();
                    v[at % n] = b;
                }
            }
            if cut < 0 {
                v.truncate(v.len().saturating_sub(cut.unsigned_abs()));
            } else {
                v.extend(std::iter::repeat_n(b'0', cut as usize));
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn basket_arbitrary_bytes_agree_with_reference(v in prop::collection::vec(any::<u8>(), 0..900)) {
        check_basket_agrees(&v);
    }

    #[test]
    fn basket_near_misses_agree_with_reference(v in near_basket()) {
        check_basket_agrees(&v);
    }

    #[test]
    fn valid_baskets_are_accepted_with_their_total(
        items in prop::collection::vec(item(), 1..=BASKET_ITEMS_MAX)
    ) {
        let v: Vec<u8> = items.iter().flat_map(|(i, _)| i.clone()).collect();
        let total: u64 = items.iter().map(|(_, a)| a).sum();
        let first_bad = items
            .iter()
            .map(|(i, _)| [i[0], i[1], i[2], i[3]])
            .find(|c| !FOOD_ONLY_ALLOWED.iter().any(|a| *a == c));
        let c = check_basket(&v, &FOOD_ONLY_ALLOWED).expect("valid basket accepted");
        prop_assert_eq!(c.total, total);
        prop_assert_eq!(c.first_ineligible, first_bad);
        prop_assert_eq!(v.len(), items.len() * ITEM_LEN);
    }
}

// ------------------------------------------------------------------ DE90

fn check_de90(v: &[u8]) {
    let parsed = OriginalData::parse(v);
    let well_formed = v.len() == 42 && v.iter().all(|b| b.is_ascii_digit());
    assert_eq!(parsed.is_some(), well_formed, "DE90 {v:?}");
    if let Some(o) = parsed {
        assert_eq!(&o.mti, &v[0..4]);
        assert_eq!(&o.stan, &v[4..10]);
        assert_eq!(&o.transmission, &v[10..20]);
        assert_eq!(&o.acquirer, &v[20..31]);
        let e = o.encode();
        assert_eq!(&e[..31], &v[..31]);
        assert!(e[31..].iter().all(|&b| b == b'0'));
        assert_eq!(OriginalData::parse(&e), Some(o));
    }
    if v.len() == 42 {
        // As DE90 of a reversal, through the codec (n42 fixed: digits only
        // encode; decode does not validate, so the accessor sees the bytes).
        let f = Fields::new("0400").with(11, "000001").with(90, v);
        if let Ok(bytes) = f.to_vec() {
            let m = Message::decode(&bytes[..]).expect("encoded reversal decodes");
            assert_eq!(m.original(), parsed);
        }
    }
}

fn digits(n: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(b'0'..=b'9', n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn de90_arbitrary_bytes(v in prop::collection::vec(any::<u8>(), 0..64)) {
        check_de90(&v);
    }

    #[test]
    fn de90_digits_of_any_length_near_42(v in prop::collection::vec(b'0'..=b'9', 38..46)) {
        check_de90(&v);
    }

    #[test]
    fn de90_valid_round_trips(v in digits(42), poke in prop::option::of((0usize..42, any::<u8>()))) {
        let mut v = v;
        if let Some((at, b)) = poke {
            v[at] = b;
        }
        check_de90(&v);
    }
}

// ------------------------------------------------- committed fuzz corpora

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_file() {
            let b = std::fs::read(&p).unwrap();
            out.push((p, b));
        }
    }
    assert!(!out.is_empty(), "{} is empty", dir.display());
    out
}

#[test]
fn basket_corpus_replays() {
    for (_, data) in corpus("basket") {
        // As the fuzz target reads it: the first byte picks the allowed list.
        let de48 = data.get(1..).unwrap_or_default();
        check_basket_agrees(de48);
        check_basket_agrees(&data);
    }
}

#[test]
fn de90_corpus_replays() {
    for (_, data) in corpus("de90") {
        check_de90(&data);
    }
}

#[test]
fn decode_corpus_replays() {
    for (p, data) in corpus("decode") {
        if let Ok(m) = Message::decode(&data[..]) {
            let _ = m.validate();
            let _ = m.check_mandatory();
            let _ = (m.pan(), m.amount(), m.original(), m.mac(), m.pin_block());
            let f = m.to_fields();
            let empty_secondary = m.has(1) && m.bitmap() as u64 == 0;
            if let (Ok(bytes), false) = (f.to_vec(), empty_secondary) {
                assert_eq!(bytes, data, "{}: re-encoding differs", p.display());
            }
        }
    }
}

#[test]
fn framing_corpus_replays() {
    for (p, data) in corpus("framing") {
        for framing in [Framing::TwoByte, Framing::FourAscii] {
            let mut codec = FrameCodec::new(framing);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                assert!(
                    !frame.is_empty() && frame.len() <= FRAME_BYTES_MAX,
                    "{}",
                    p.display()
                );
            }
            assert!(buf.capacity() <= data.len().max(FRAME_BYTES_MAX + 4) * 2);
        }
    }
}
