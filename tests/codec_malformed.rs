//! Malformed input, one row per way a message can be wrong: each must give
//! its specific error kind, the part (MTI, bitmap, field) it concerns and
//! the byte offset where the problem starts, and never panic. Structural
//! problems come from `Message::decode`; content problems (a letter in an n
//! field, non-ASCII in an an/ans field) from `Message::validate`, which is
//! what the switch answers with 30. Framing rows at the end.

mod common;

use bytes::BytesMut;
use kks_switch::iso8583::{
    Class, Error, ErrorKind, FrameCodec, FrameError, Framing, Message, Part,
};
use tokio_util::codec::Decoder;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// `Message::decode` must fail.
    Decode,
    /// `Message::decode` succeeds, `validate` must fail.
    Validate,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    stage: Stage,
    kind: ErrorKind,
    part: Part,
    offset: usize,
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// MTI 0200 with a primary bitmap where only the given byte/bit is set.
fn only(byte: usize, mask: u8) -> Vec<u8> {
    let mut m = b"0200".to_vec();
    let mut bm = [0u8; 8];
    bm[byte] = mask;
    m.extend_from_slice(&bm);
    m
}

/// MTI 0200, primary bitmap with only bit 1, secondary with `byte`/`mask`.
fn only_secondary(byte: usize, mask: u8) -> Vec<u8> {
    let mut m = b"0200".to_vec();
    m.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
    let mut bm = [0u8; 8];
    bm[byte] = mask;
    m.extend_from_slice(&bm);
    m
}

fn incomplete(needed: usize) -> ErrorKind {
    ErrorKind::Incomplete { needed }
}

fn bad_char(byte: u8, class: Class) -> ErrorKind {
    ErrorKind::BadChar { byte, class }
}

// Primary-bitmap bits used below (byte index, mask).
const DE2: (usize, u8) = (0, 0x40);
const DE3: (usize, u8) = (0, 0x20);
const DE28: (usize, u8) = (3, 0x10);
const DE35: (usize, u8) = (4, 0x20);
const DE37: (usize, u8) = (4, 0x08);
const DE39: (usize, u8) = (4, 0x02);
const DE41: (usize, u8) = (5, 0x80);
const DE44: (usize, u8) = (5, 0x10);
const DE48: (usize, u8) = (5, 0x01);
const DE54: (usize, u8) = (6, 0x04);
const DE55: (usize, u8) = (6, 0x02);

fn with(bit: (usize, u8), rest: &[u8]) -> Vec<u8> {
    cat(&[&only(bit.0, bit.1), rest])
}

fn cases() -> Vec<Case> {
    use Stage::*;
    let golden_0800 = common::echo_0800().message(); // 39 bytes
    let golden_0200 = common::purchase().message(); // 172 bytes, DE48 prefix at 118, DE52 at 164
    let golden_0400 = common::reversal().message(); // 145 bytes, DE90 at 103
    assert_eq!(golden_0800.len(), 39);
    assert_eq!(golden_0200.len(), 172);
    assert_eq!(golden_0400.len(), 145);
    let c = |name, bytes, stage, kind, part, offset| Case {
        name,
        bytes,
        stage,
        kind,
        part,
        offset,
    };
    vec![
        // --- MTI ---
        c("empty", vec![], Decode, incomplete(4), Part::Mti, 0),
        c(
            "3-byte MTI",
            b"020".to_vec(),
            Decode,
            incomplete(1),
            Part::Mti,
            0,
        ),
        c(
            "non-digit MTI",
            cat(&[b"02A0", &[0; 8]]),
            Decode,
            ErrorKind::BadMti,
            Part::Mti,
            0,
        ),
        c(
            "MTI with a space",
            cat(&[b" 200", &[0; 8]]),
            Decode,
            ErrorKind::BadMti,
            Part::Mti,
            0,
        ),
        c(
            "MTI non-ASCII",
            cat(&[&[0x30, 0xB2, 0x30, 0x30], &[0; 8]]),
            Decode,
            ErrorKind::BadMti,
            Part::Mti,
            0,
        ),
        // --- bitmaps ---
        c(
            "MTI only, no bitmap",
            b"0200".to_vec(),
            Decode,
            incomplete(8),
            Part::PrimaryBitmap,
            4,
        ),
        c(
            "truncated primary bitmap",
            cat(&[b"0200", &[0x20, 0, 0]]),
            Decode,
            incomplete(5),
            Part::PrimaryBitmap,
            4,
        ),
        c(
            "bit 1 set, buffer ends before the secondary bitmap",
            cat(&[b"0800", &[0x82, 0x20, 0, 0, 0, 0, 0, 0]]),
            Decode,
            incomplete(8),
            Part::Field(1),
            12,
        ),
        c(
            "truncated secondary bitmap",
            cat(&[b"0800", &[0x82, 0x20, 0, 0, 0, 0, 0, 0], &[0x04, 0, 0]]),
            Decode,
            incomplete(5),
            Part::Field(1),
            12,
        ),
        // --- fixed fields ---
        c(
            "fixed field (DE3) truncated",
            with(DE3, b"0000"),
            Decode,
            incomplete(2),
            Part::Field(3),
            12,
        ),
        c(
            "fixed field (DE3) absent",
            with(DE3, b""),
            Decode,
            incomplete(6),
            Part::Field(3),
            12,
        ),
        c(
            "fixed b field (DE52) one byte short in the golden 0200",
            golden_0200[..171].to_vec(),
            Decode,
            incomplete(1),
            Part::Field(52),
            164,
        ),
        c(
            "DE65 (secondary, b8) truncated",
            cat(&[&only_secondary(0, 0x80), &[1, 2, 3]]),
            Decode,
            incomplete(5),
            Part::Field(65),
            20,
        ),
        c(
            "DE128 absent after the secondary bitmap",
            only_secondary(7, 0x01),
            Decode,
            incomplete(8),
            Part::Field(128),
            20,
        ),
        c(
            "DE90 one digit short in the golden 0400",
            golden_0400[..144].to_vec(),
            Decode,
            incomplete(1),
            Part::Field(90),
            103,
        ),
        // --- LLVAR ---
        c(
            "LLVAR prefix non-digit (DE2 '1A')",
            with(DE2, b"1A6000020000000120"),
            Decode,
            ErrorKind::BadLengthPrefix,
            Part::Field(2),
            12,
        ),
        c(
            "LLVAR prefix with a space (DE2 ' 9')",
            with(DE2, b" 9600002000"),
            Decode,
            ErrorKind::BadLengthPrefix,
            Part::Field(2),
            12,
        ),
        c(
            "LLVAR prefix truncated (DE2)",
            with(DE2, b"1"),
            Decode,
            incomplete(1),
            Part::Field(2),
            12,
        ),
        c(
            "LLVAR over max (DE2 length 20)",
            with(DE2, b"2060000200000001201234"),
            Decode,
            ErrorKind::LengthOverMax { len: 20, max: 19 },
            Part::Field(2),
            12,
        ),
        c(
            "LLVAR longer than what remains (DE2 16 with 10)",
            with(DE2, b"166000020000"),
            Decode,
            incomplete(6),
            Part::Field(2),
            12,
        ),
        c(
            "LLVAR over max (DE44 is ..25, says 26)",
            with(DE44, b"26ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
            Decode,
            ErrorKind::LengthOverMax { len: 26, max: 25 },
            Part::Field(44),
            12,
        ),
        // --- LLLVAR ---
        c(
            "LLLVAR longer than what remains (DE48 '999' + 4)",
            with(DE48, b"999BRAS"),
            Decode,
            incomplete(995),
            Part::Field(48),
            12,
        ),
        c(
            "LLLVAR prefix non-digit (DE48 '0x5')",
            with(DE48, b"0x5BRAS0"),
            Decode,
            ErrorKind::BadLengthPrefix,
            Part::Field(48),
            12,
        ),
        c(
            "LLLVAR over max (DE54 is ...240, says 241)",
            with(DE54, b"241"),
            Decode,
            ErrorKind::LengthOverMax { len: 241, max: 240 },
            Part::Field(54),
            12,
        ),
        c(
            "LLLVAR b over max (DE55 is ...255, says 256)",
            with(DE55, b"256\x9F\x26"),
            Decode,
            ErrorKind::LengthOverMax { len: 256, max: 255 },
            Part::Field(55),
            12,
        ),
        c(
            "LLLVAR prefix corrupted deep in the golden 0200 (DE48 '04A')",
            {
                let mut b = golden_0200.clone();
                assert_eq!(&b[118..121], b"040");
                b[120] = b'A';
                b
            },
            Decode,
            ErrorKind::BadLengthPrefix,
            Part::Field(48),
            118,
        ),
        // --- trailing bytes ---
        c(
            "trailing bytes after the golden 0800",
            cat(&[&golden_0800, b"XY"]),
            Decode,
            ErrorKind::TrailingBytes { count: 2 },
            Part::Trailer,
            39,
        ),
        c(
            "empty bitmap followed by a byte",
            cat(&[b"0200", &[0; 8], b"0"]),
            Decode,
            ErrorKind::TrailingBytes { count: 1 },
            Part::Trailer,
            12,
        ),
        // --- content (validate) ---
        c(
            "non-digit in an n field (DE3 '00A000')",
            with(DE3, b"00A000"),
            Validate,
            bad_char(b'A', Class::N),
            Part::Field(3),
            14,
        ),
        c(
            "non-digit in an LLVAR n field (DE2 '12X4')",
            with(DE2, b"0412X4"),
            Validate,
            bad_char(b'X', Class::N),
            Part::Field(2),
            16,
        ),
        c(
            "space in DE4 of the golden 0200",
            {
                let mut b = golden_0200.clone();
                b[40] = b' ';
                b
            },
            Validate,
            bad_char(b' ', Class::N),
            Part::Field(4),
            40,
        ),
        c(
            "hex digit in DE90 of the golden 0400",
            {
                let mut b = golden_0400.clone();
                b[144] = b'F';
                b
            },
            Validate,
            bad_char(b'F', Class::N),
            Part::Field(90),
            144,
        ),
        c(
            "non-ASCII in an an field (DE39 '0' 0xC3)",
            with(DE39, &[b'0', 0xC3]),
            Validate,
            bad_char(0xC3, Class::An),
            Part::Field(39),
            13,
        ),
        c(
            "punctuation in an an field (DE37 ends with '-')",
            with(DE37, b"00000000010-"),
            Validate,
            bad_char(b'-', Class::An),
            Part::Field(37),
            23,
        ),
        c(
            "non-ASCII in an ans field (DE41 with 0xC3)",
            with(DE41, &[b'E', b'W', b'0', b'0', b'0', b'0', b'0', 0xC3]),
            Validate,
            bad_char(0xC3, Class::Ans),
            Part::Field(41),
            19,
        ),
        c(
            "control byte in an LLVAR ans field (DE44 BEL)",
            with(DE44, b"03A\x07B"),
            Validate,
            bad_char(0x07, Class::Ans),
            Part::Field(44),
            15,
        ),
        c(
            "DEL in an ans field (DE41)",
            with(DE41, b"EW00\x7F001"),
            Validate,
            bad_char(0x7F, Class::Ans),
            Part::Field(41),
            16,
        ),
        c(
            "xn bad sign (DE28 'X00000100')",
            with(DE28, b"X00000100"),
            Validate,
            bad_char(b'X', Class::Xn),
            Part::Field(28),
            12,
        ),
        c(
            "xn non-digit after the sign (DE28 'C0000A100')",
            with(DE28, b"C0000A100"),
            Validate,
            bad_char(b'A', Class::Xn),
            Part::Field(28),
            17,
        ),
        c(
            "z bad char (DE35 '6000=25A2')",
            with(DE35, b"096000=25A2"),
            Validate,
            bad_char(b'A', Class::Z),
            Part::Field(35),
            21,
        ),
        c(
            "first offending field is the one reported (DE3 before DE41)",
            cat(&[
                b"0200",
                &[0x20, 0, 0, 0, 0, 0x80, 0, 0],
                b"0000x0",
                &[b'E', b'W', 0xFF, b'0', b'0', b'0', b'0', b'1'],
            ]),
            Validate,
            bad_char(b'x', Class::N),
            Part::Field(3),
            16,
        ),
        // --- size ---
        c(
            "buffer larger than the codec indexes",
            vec![b'0'; 70_000],
            Decode,
            ErrorKind::TooLarge {
                len: 70_000,
                max: 65_535,
            },
            Part::Mti,
            0,
        ),
    ]
}

fn check_error(name: &str, e: Error, kind: ErrorKind, part: Part, offset: usize, input: &[u8]) {
    assert_eq!(e.kind, kind, "{name}: kind");
    assert_eq!(e.part, part, "{name}: part");
    assert_eq!(e.offset, offset, "{name}: offset");
    assert_eq!(
        e.is_incomplete(),
        matches!(kind, ErrorKind::Incomplete { .. }),
        "{name}: is_incomplete"
    );
    let text = e.to_string();
    if !matches!(kind, ErrorKind::TooLarge { .. }) {
        assert!(
            text.contains(&format!("byte {offset}")),
            "{name}: display names the offset: {text}"
        );
    }
    if let Part::Field(n) = part {
        assert_eq!(e.field(), Some(n));
        assert!(text.contains(&format!("DE{n}")), "{name}: {text}");
    } else {
        assert_eq!(e.field(), None);
    }
    if let ErrorKind::BadChar { byte, .. } = kind {
        assert_eq!(input[offset], byte, "{name}: offset points at the byte");
    }
}

#[test]
fn malformed_table() {
    let cases = cases();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let mut incomplete_rows = 0;
    for c in &cases {
        let r = std::panic::catch_unwind(|| {
            let decoded = Message::decode(&c.bytes[..]);
            match c.stage {
                Stage::Decode => {
                    let e = decoded.expect_err(c.name);
                    check_error(c.name, e, c.kind, c.part, c.offset, &c.bytes);
                }
                Stage::Validate => {
                    let m = decoded.unwrap_or_else(|e| panic!("{}: decode: {e}", c.name));
                    let e = m.validate().expect_err(c.name);
                    check_error(c.name, e, c.kind, c.part, c.offset, &c.bytes);
                }
            }
        });
        if let Err(p) = r {
            std::panic::resume_unwind(p);
        }
        if matches!(c.kind, ErrorKind::Incomplete { .. }) {
            incomplete_rows += 1;
        }
    }
    assert!(incomplete_rows >= 5 && incomplete_rows < cases.len());
}

/// An Incomplete error is honest: the message it came from, completed, decodes.
#[test]
fn incomplete_means_more_bytes_would_help() {
    for g in common::all() {
        let full = g.message();
        for cut in 0..full.len() {
            let e = Message::decode(&full[..cut]).expect_err(g.name);
            assert!(e.is_incomplete(), "{} cut at {cut}: {e}", g.name);
            let ErrorKind::Incomplete { needed } = e.kind else {
                unreachable!()
            };
            assert!(
                needed >= 1 && cut + needed <= full.len(),
                "{} cut {cut}",
                g.name
            );
            assert!(e.offset <= cut, "{} cut {cut}: offset {}", g.name, e.offset);
        }
        Message::decode(&full[..]).unwrap();
    }
}

/// Errors carry positions, never the card number or other input values.
#[test]
fn errors_do_not_echo_values() {
    let m = with(DE2, b"166000020000000X20");
    let e = Message::decode(&m[..]).unwrap().validate().unwrap_err();
    assert_eq!(e.part, Part::Field(2));
    assert_eq!(e.offset, 14 + 13);
    let text = format!("{e} {e:?}");
    assert!(!text.contains("60000200"), "{text}");
}

// --- framing ---

fn frame(framing: Framing, input: &[u8]) -> (Result<Option<bytes::Bytes>, FrameError>, BytesMut) {
    let mut codec = FrameCodec::new(framing);
    let mut buf = BytesMut::from(input);
    let r = codec.decode(&mut buf);
    (r, buf)
}

#[test]
fn framing_zero_length() {
    let (r, _) = frame(Framing::TwoByte, &[0, 0, b'0', b'8']);
    assert!(matches!(r, Err(FrameError::ZeroLength)), "{r:?}");
    let (r, _) = frame(Framing::FourAscii, b"00000800");
    assert!(matches!(r, Err(FrameError::ZeroLength)), "{r:?}");
}

#[test]
fn framing_ffff_length_is_refused_without_allocating() {
    let (r, buf) = frame(Framing::TwoByte, &[0xFF, 0xFF, b'0', b'8', b'0', b'0']);
    assert!(
        matches!(
            r,
            Err(FrameError::TooLong {
                len: 65535,
                max: 4096
            })
        ),
        "{r:?}"
    );
    assert!(buf.capacity() < 4096, "capacity {}", buf.capacity());
}

#[test]
fn framing_4097_refused_4096_accepted() {
    let (r, buf) = frame(Framing::TwoByte, &[0x10, 0x01]);
    assert!(
        matches!(
            r,
            Err(FrameError::TooLong {
                len: 4097,
                max: 4096
            })
        ),
        "{r:?}"
    );
    assert!(buf.capacity() < 4096);
    let (r, _) = frame(Framing::FourAscii, b"4097");
    assert!(
        matches!(
            r,
            Err(FrameError::TooLong {
                len: 4097,
                max: 4096
            })
        ),
        "{r:?}"
    );
    let (r, _) = frame(Framing::FourAscii, b"9999");
    assert!(
        matches!(r, Err(FrameError::TooLong { len: 9999, .. })),
        "{r:?}"
    );

    // 4096 is the largest accepted: waits for the body, then yields it.
    let (r, buf) = frame(Framing::TwoByte, &[0x10, 0x00, b'0']);
    assert!(matches!(r, Ok(None)), "{r:?}");
    assert!(buf.capacity() <= 8192, "capacity {}", buf.capacity());
    let mut input = vec![0x10, 0x00];
    input.extend(std::iter::repeat_n(b'7', 4096));
    input.extend_from_slice(b"\x00");
    let (r, rest) = frame(Framing::TwoByte, &input);
    assert_eq!(r.unwrap().unwrap().len(), 4096);
    assert_eq!(&rest[..], b"\x00");
}

#[test]
fn framing_4a_non_digit_header() {
    for h in [&b"00a4"[..], b"-001", b" 041", b"004\xFF", b"0x10"] {
        let mut input = h.to_vec();
        input.extend_from_slice(b"0800");
        let (r, _) = frame(Framing::FourAscii, &input);
        assert!(matches!(r, Err(FrameError::BadHeader)), "{h:?}: {r:?}");
    }
}

#[test]
fn framing_partial_header_waits() {
    let (r, _) = frame(Framing::TwoByte, &[0x00]);
    assert!(matches!(r, Ok(None)));
    let (r, _) = frame(Framing::FourAscii, b"003");
    assert!(matches!(r, Ok(None)));
    let (r, _) = frame(Framing::FourAscii, b"");
    assert!(matches!(r, Ok(None)));
    // A whole header whose body has not all arrived.
    let (r, buf) = frame(Framing::FourAscii, b"0039080");
    assert!(matches!(r, Ok(None)));
    assert_eq!(&buf[..], b"0039080", "nothing consumed while waiting");
}

#[test]
fn framing_lower_cap() {
    let mut codec = FrameCodec::with_max(Framing::TwoByte, 100);
    let mut buf = BytesMut::from(&[0x00, 0x65][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLong { len: 101, max: 100 })
    ));
    // The cap never exceeds the interface's 4096.
    let mut codec = FrameCodec::with_max(Framing::TwoByte, 100_000);
    let mut buf = BytesMut::from(&[0x10, 0x01][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLong {
            len: 4097,
            max: 4096
        })
    ));
}
