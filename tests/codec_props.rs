//! Property tests for the codec and the framing decoder.
//!
//! - A random valid message (random MTI, random subset of DE2..DE128, each
//!   value drawn from its field's class and length in `default_spec()`)
//!   encodes, decodes, validates and comes back equal, byte for byte.
//! - Arbitrary bytes, bytes after a valid MTI and mutations of valid
//!   encodings never make `Message::decode` or `validate` panic (100,000
//!   cases in all), and whatever they report is consistent with the input.
//! - The framing decoder never panics on arbitrary input fed in arbitrary
//!   chunks and never grows its buffer beyond ~8 KiB; valid frames come out
//!   whole and in order however the stream is cut.

use bytes::BytesMut;
use kks_switch::iso8583::{
    default_spec, Class, ErrorKind, Fields, FrameCodec, Framing, LenKind, Message,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

const DIGITS: &[u8] = b"0123456789";
const AN: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ";
const Z: &[u8] = b"0123456789=D";

fn pick(alphabet: &'static [u8], raw: Vec<u8>) -> Vec<u8> {
    raw.into_iter()
        .map(|b| alphabet[b as usize % alphabet.len()])
        .collect()
}

/// A value for DE`n` that respects its class and length.
fn value(n: u8) -> BoxedStrategy<Vec<u8>> {
    let d = *default_spec().field(n);
    let max = d.max as usize;
    let len: BoxedStrategy<usize> = match d.len {
        LenKind::Fixed => Just(max).boxed(),
        // Mostly short values, sometimes up to the maximum (keeps messages
        // small enough for many cases while still reaching the limits).
        _ => prop_oneof![3 => 0..=max.min(12), 1 => 0..=max, 1 => Just(max)].boxed(),
    };
    len.prop_flat_map(move |len| {
        let raw = prop::collection::vec(any::<u8>(), len);
        match d.class {
            Class::N => raw.prop_map(|r| pick(DIGITS, r)).boxed(),
            Class::An => raw.prop_map(|r| pick(AN, r)).boxed(),
            Class::Ans => raw
                .prop_map(|r| r.into_iter().map(|b| 0x20 + b % 95).collect())
                .boxed(),
            Class::Z => raw.prop_map(|r| pick(Z, r)).boxed(),
            Class::Xn => raw
                .prop_map(|r| {
                    let mut v = pick(DIGITS, r);
                    if let Some(first) = v.first_mut() {
                        *first = if *first % 2 == 0 { b'C' } else { b'D' };
                    }
                    v
                })
                .boxed(),
            Class::B => raw.boxed(),
        }
    })
    .boxed()
}

/// A random valid message with up to `fields_max` data elements.
fn message(fields_max: usize) -> impl Strategy<Value = Fields> {
    let mti = prop::collection::vec(0u8..10, 4);
    let set = prop::collection::btree_set(2u8..=128, 0..=fields_max);
    (mti, set).prop_flat_map(|(mti, set)| {
        let mti: String = mti.iter().map(|d| (b'0' + d) as char).collect();
        let values: Vec<_> = set
            .into_iter()
            .map(|n| value(n).prop_map(move |v| (n, v)))
            .collect();
        values.prop_map(move |vs| {
            let mut f = Fields::new(&mti);
            for (n, v) in vs {
                f = f.with(n, v);
            }
            f
        })
    })
}

/// Decode and validate `bytes`; whatever comes back must be consistent with
/// the input. Never panics unless the codec does or a claim is false.
fn check_any(bytes: &[u8]) {
    match Message::decode(bytes) {
        Err(e) => {
            assert!(e.offset <= bytes.len(), "{e}: offset past the input");
            if let ErrorKind::Incomplete { needed } = e.kind {
                assert!(needed >= 1, "{e}");
            }
            if let ErrorKind::TrailingBytes { count } = e.kind {
                assert_eq!(e.offset + count, bytes.len(), "{e}");
            }
        }
        Ok(m) => {
            assert_eq!(m.bytes(), bytes);
            match m.validate() {
                Ok(()) => {}
                Err(e) => {
                    let ErrorKind::BadChar { byte, class } = e.kind else {
                        panic!("validate gave a non-content error: {e}");
                    };
                    assert_ne!(class, Class::B);
                    assert_eq!(bytes[e.offset], byte, "{e}: offset points at the byte");
                }
            }
            // Anything that decodes re-encodes to the same bytes, unless a
            // secondary bitmap was announced with no field behind it (the
            // encoder derives bitmaps from the fields present).
            let empty_secondary = m.has(1) && m.bitmap() as u64 == 0;
            if !empty_secondary {
                let re = m.to_fields().to_vec().expect("decoded fields re-encode");
                assert_eq!(re, bytes, "re-encoding a decoded message");
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Set(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        // Digits are what length prefixes and MTIs are made of.
        (
            any::<usize>(),
            prop::sample::select(b"0123456789\x00\xFF".to_vec())
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *m {
        Mutation::Flip(i, x) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] ^= x;
        }
        Mutation::Insert(i, b) => {
            let i = i % (bytes.len() + 1);
            bytes.insert(i, b);
        }
        Mutation::Delete(i) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes.remove(i);
        }
        Mutation::Truncate(i) => {
            let i = i % (bytes.len() + 1);
            bytes.truncate(i);
        }
        Mutation::Set(i, b) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] = b;
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random valid message → encode → decode → validate → equal.
    #[test]
    fn valid_message_round_trips(f in message(60)) {
        let bytes = f.to_vec().expect("valid fields encode");
        let m = Message::decode(&bytes[..]).expect("decode");
        m.validate().expect("validate");
        prop_assert_eq!(m.mti(), &f.mti);
        prop_assert_eq!(m.has(1), f.fields.keys().any(|&n| n > 64));
        for (&n, v) in &f.fields {
            prop_assert_eq!(m.get(n), Some(v.as_slice()), "DE{}", n);
        }
        prop_assert_eq!(m.to_fields(), f.clone());
        prop_assert_eq!(m.to_fields().to_vec().unwrap(), bytes);
    }

    /// Every strict prefix of a valid encoding is Incomplete, never malformed.
    #[test]
    fn prefixes_of_valid_messages_are_incomplete(f in message(20), cut in any::<usize>()) {
        let bytes = f.to_vec().unwrap();
        let cut = cut % bytes.len();
        let e = Message::decode(&bytes[..cut]).unwrap_err();
        prop_assert!(e.is_incomplete(), "cut {} of {}: {}", cut, bytes.len(), e);
    }

    /// Valid frames, concatenated and cut anywhere, come out whole and in order.
    #[test]
    fn framing_round_trips_under_any_chunking(
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 1..8),
        cuts in prop::collection::vec(1usize..64, 1..40),
        four_ascii in any::<bool>(),
    ) {
        let framing = if four_ascii { Framing::FourAscii } else { Framing::TwoByte };
        let mut codec = FrameCodec::new(framing);
        let mut stream = BytesMut::new();
        for m in &msgs {
            codec.encode(&m[..], &mut stream).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut k = 0;
        while pos < stream.len() {
            let n = cuts[k % cuts.len()].min(stream.len() - pos);
            k += 1;
            buf.extend_from_slice(&stream[pos..pos + n]);
            pos += n;
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f.to_vec());
            }
        }
        prop_assert_eq!(out, msgs);
        prop_assert!(buf.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40_000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never make decode or validate panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check_any(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 30_000, ..ProptestConfig::default() })]

    /// Arbitrary bytes after a valid MTI (so the bitmaps and fields are
    /// exercised, not just the MTI check).
    #[test]
    fn arbitrary_bytes_after_a_valid_mti_never_panic(
        mti in prop::sample::select(vec![&b"0200"[..], b"0400", b"0800", b"0210"]),
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = mti.to_vec();
        bytes.extend_from_slice(&body);
        check_any(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 30_000, ..ProptestConfig::default() })]

    /// Mutations of valid encodings (flip, insert, delete, truncate, set a
    /// digit) never make decode or validate panic.
    #[test]
    fn mutated_valid_messages_never_panic(
        f in message(12),
        muts in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut bytes = f.to_vec().unwrap();
        for m in &muts {
            apply(&mut bytes, m);
        }
        check_any(&bytes);
    }
}

/// Feed `input` to a framing decoder the way `FramedRead` does (an 8 KiB
/// buffer, `reserve(1)` before each read, a read fills at most the spare
/// capacity, here in `chunks`-sized reads). It must never panic, every frame
/// must be 1..=4096 bytes, and the buffer must never grow beyond 8 KiB: a
/// header can never make the decoder reserve what it claims.
fn check_framing(framing: Framing, input: &[u8], chunks: &[usize]) {
    const READ_BUFFER_BYTES: usize = 8 * 1024; // tokio-util's INITIAL_CAPACITY
    const CAPACITY_MAX: usize = 8 * 1024;
    let mut codec = FrameCodec::new(framing);
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() {
        buf.reserve(1);
        let spare = buf.capacity() - buf.len();
        let n = chunks[k % chunks.len()]
            .clamp(1, input.len() - pos)
            .min(spare);
        k += 1;
        buf.extend_from_slice(&input[pos..pos + n]);
        pos += n;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => assert!((1..=4096).contains(&f.len()), "frame of {}", f.len()),
                Ok(None) => break,
                // A refused header ends the connection: stop feeding.
                Err(_) => return,
            }
            assert!(
                buf.capacity() <= CAPACITY_MAX,
                "capacity {}",
                buf.capacity()
            );
        }
        assert!(
            buf.capacity() <= CAPACITY_MAX,
            "capacity {}",
            buf.capacity()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// The framing decoder on arbitrary bytes (both header kinds).
    #[test]
    fn framing_on_arbitrary_bytes(
        input in prop::collection::vec(any::<u8>(), 0..600),
        chunks in prop::collection::vec(1usize..700, 1..6),
        four_ascii in any::<bool>(),
    ) {
        let framing = if four_ascii { Framing::FourAscii } else { Framing::TwoByte };
        check_framing(framing, &input, &chunks);
    }

    /// Headers biased toward the limits (0, 4096, 4097, 0xFFFF, "9999") with
    /// arbitrary bodies and chunking.
    #[test]
    fn framing_near_the_limits(
        len in prop::sample::select(vec![0usize, 1, 4095, 4096, 4097, 8192, 65535]),
        body in prop::collection::vec(any::<u8>(), 0..600),
        chunks in prop::collection::vec(1usize..5000, 1..4),
        four_ascii in any::<bool>(),
    ) {
        let mut input = Vec::new();
        if four_ascii {
            input.extend_from_slice(format!("{:04}", len.min(9999)).as_bytes());
        } else {
            input.extend_from_slice(&(len.min(65535) as u16).to_be_bytes());
        }
        input.extend_from_slice(&body);
        if len <= 4096 {
            // Complete the frame sometimes, so the 4096-byte path is taken.
            input.resize(input.len().max(len + 2 + if four_ascii { 2 } else { 0 }), b'0');
        }
        let framing = if four_ascii { Framing::FourAscii } else { Framing::TwoByte };
        check_framing(framing, &input, &chunks);
    }
}
