//! Byte-literal round trips (INTERFACE §2): for each field type, hand-written
//! expected bytes; encoding the fields (through `Fields` and through
//! `Builder` directly) must give exactly those bytes, and decoding them must
//! give the same fields back. Then the golden frames of
//! `shared/vectors/messages.md`, made by pyiso8583 4.0.1: decode, check every
//! listed field, re-encode to the same bytes.

mod common;

use bytes::BytesMut;
use kks_switch::iso8583::{Builder, ErrorKind, Fields, Message, OriginalData, Part};

/// Concatenate byte pieces into one message.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Encode `fields` two ways (Fields::to_vec and a hand-driven Builder) and
/// compare with `expected`; decode `expected`, validate it, and compare the
/// fields and each value in place.
fn round_trip(fields: &Fields, expected: &[u8]) {
    let encoded = fields.to_vec().expect("encode");
    assert_eq!(
        hex::encode_upper(&encoded),
        hex::encode_upper(expected),
        "Fields::to_vec bytes"
    );

    let mut out = BytesMut::new();
    // Something already in the buffer: the builder must append after it.
    out.extend_from_slice(b"PREFIX");
    let mut b = Builder::new(&mut out, &fields.mti);
    for (&n, v) in &fields.fields {
        b.field(n, v).expect("builder field");
    }
    b.finish();
    assert_eq!(&out[..6], b"PREFIX");
    assert_eq!(
        hex::encode_upper(&out[6..]),
        hex::encode_upper(expected),
        "Builder bytes"
    );

    let m = Message::decode(expected).expect("decode");
    m.validate().expect("validate");
    assert_eq!(m.mti(), &fields.mti);
    assert_eq!(&m.to_fields(), fields);
    for (&n, v) in &fields.fields {
        assert_eq!(m.get(n), Some(v.as_slice()), "DE{n}");
    }
    let secondary = fields.fields.keys().any(|&n| n > 64);
    assert_eq!(m.has(1), secondary, "secondary bitmap presence");
    let mut want: Vec<u8> = fields.fields.keys().copied().collect();
    if secondary {
        want.insert(0, 1);
    }
    assert_eq!(m.present().collect::<Vec<_>>(), want);
}

#[test]
fn fixed_n() {
    // DE3 is bit 3: 0x20 in the first bitmap byte. DE4 bit 4: 0x10.
    let expected = cat(&[
        b"0200",
        &[0x30, 0, 0, 0, 0, 0, 0, 0],
        b"310000",
        b"000000012345",
    ]);
    round_trip(
        &Fields::new("0200")
            .with(3, "310000")
            .with(4, "000000012345"),
        &expected,
    );
    let m = Message::decode(&expected[..]).unwrap();
    assert_eq!(m.amount(), Some(12345));
    assert_eq!(m.processing_code(), Some(&b"310000"[..]));
    assert_eq!(m.offset_of(3), Some(12));
    assert_eq!(m.offset_of(4), Some(18));
}

#[test]
fn fixed_an() {
    // DE37 (bit 37: byte 5, 0x08), DE38 (0x04), DE39 (0x02).
    let expected = cat(&[
        b"0210",
        &[0, 0, 0, 0, 0x0E, 0, 0, 0],
        b"RRN 00000101",
        b"AB12 9",
        b"00",
    ]);
    round_trip(
        &Fields::new("0210")
            .with(37, "RRN 00000101")
            .with(38, "AB12 9")
            .with(39, "00"),
        &expected,
    );
}

#[test]
fn fixed_ans() {
    // DE41 (bit 41: byte 6, 0x80), DE42 (0x40), DE43 (0x20): printable
    // ASCII including punctuation, space and tilde.
    let name = "WARUNG BU SITI, JL. MERDEKA #7 ~ BOGOR  ";
    assert_eq!(name.len(), 40);
    let expected = cat(&[
        b"0200",
        &[0, 0, 0, 0, 0, 0xE0, 0, 0],
        b"EW-0001 ",
        b"EWARONG/0000001",
        name.as_bytes(),
    ]);
    round_trip(
        &Fields::new("0200")
            .with(41, "EW-0001 ")
            .with(42, "EWARONG/0000001")
            .with(43, name),
        &expected,
    );
}

#[test]
fn fixed_b() {
    // DE52 (bit 52: byte 7, 0x10) and DE64 (bit 64: byte 8, 0x01), raw bytes
    // including 0x00 and 0xFF, no length prefix.
    let pin = [0x00, 0xFF, 0x43, 0x99, 0x9F, 0xB4, 0x0D, 0x0A];
    let mac = [0xB1, 0x6B, 0x1D, 0x05, 0xE2, 0x0F, 0xFE, 0x2A];
    let expected = cat(&[b"0200", &[0, 0, 0, 0, 0, 0, 0x10, 0x01], &pin, &mac]);
    round_trip(&Fields::new("0200").with(52, pin).with(64, mac), &expected);
    let m = Message::decode(&expected[..]).unwrap();
    assert_eq!(m.pin_block(), Some(pin));
    assert_eq!(m.mac(), Some((64, &mac[..])));
}

#[test]
fn llvar_n() {
    // DE2 (bit 2: 0x40) with a 16-digit PAN; DE32 (bit 32: byte 4, 0x01).
    let expected = cat(&[
        b"0200",
        &[0x40, 0, 0, 0x01, 0, 0, 0, 0],
        b"16",
        b"6000020000000120",
        b"03",
        b"002",
    ]);
    round_trip(
        &Fields::new("0200")
            .with(2, "6000020000000120")
            .with(32, "002"),
        &expected,
    );
    let m = Message::decode(&expected[..]).unwrap();
    assert_eq!(m.pan(), Some("6000020000000120"));
    assert_eq!(m.acquirer(), Some("002"));
    // The value starts after its 2-digit prefix.
    assert_eq!(m.offset_of(2), Some(14));
    assert_eq!(m.offset_of(32), Some(32));
}

#[test]
fn llvar_n_at_its_limits() {
    // DE2 at its maximum of 19 digits; DE32 with 11 digits; DE33 empty.
    let expected = cat(&[
        b"0200",
        &[0x40, 0, 0, 0x01, 0x80, 0, 0, 0],
        b"19",
        b"6000020000000120123",
        b"11",
        b"00000000002",
        b"00",
    ]);
    round_trip(
        &Fields::new("0200")
            .with(2, "6000020000000120123")
            .with(32, "00000000002")
            .with(33, ""),
        &expected,
    );
    let e = Fields::new("0200")
        .with(2, "60000200000001201234")
        .to_vec()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::LengthOverMax { len: 20, max: 19 });
    assert_eq!(e.part, Part::Field(2));
}

#[test]
fn llvar_ans() {
    // DE44 (bit 44: byte 6, 0x10), response detail.
    let expected = cat(&[
        b"0210",
        &[0, 0, 0, 0, 0, 0x10, 0, 0],
        b"15",
        b"INELIGIBLE:ROKK",
    ]);
    round_trip(&Fields::new("0210").with(44, "INELIGIBLE:ROKK"), &expected);
    let full = "TRIES-LEFT:1 (x) ~!@#$%^&"; // 25 = DE44 maximum
    assert_eq!(full.len(), 25);
    let expected = cat(&[
        b"0210",
        &[0, 0, 0, 0, 0, 0x10, 0, 0],
        b"25",
        full.as_bytes(),
    ]);
    round_trip(&Fields::new("0210").with(44, full), &expected);
}

#[test]
fn lllvar_ans() {
    // DE48 (bit 48: byte 6, 0x01), a two-item basket.
    let basket = "BRAS0005000006500000TELR0001000002800000";
    let expected = cat(&[
        b"0200",
        &[0, 0, 0, 0, 0, 0x01, 0, 0],
        b"040",
        basket.as_bytes(),
    ]);
    round_trip(&Fields::new("0200").with(48, basket), &expected);
    // At its maximum, 999.
    let long: Vec<u8> = (0..999).map(|i| b'A' + (i % 26) as u8).collect();
    let expected = cat(&[b"0200", &[0, 0, 0, 0, 0, 0x01, 0, 0], b"999", &long]);
    round_trip(&Fields::new("0200").with(48, &long), &expected);
    // Short values keep all three prefix digits.
    let expected = cat(&[b"0200", &[0, 0, 0, 0, 0, 0x01, 0, 0], b"001", b"X"]);
    round_trip(&Fields::new("0200").with(48, "X"), &expected);
}

#[test]
fn lllvar_b() {
    // DE55 (bit 55: byte 7, 0x02), EMV TLVs as raw bytes; the prefix counts bytes.
    let icc = [
        0x9F, 0x26, 0x08, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x82, 0x02,
    ];
    let expected = cat(&[b"0200", &[0, 0, 0, 0, 0, 0, 0x02, 0], b"013", &icc]);
    round_trip(&Fields::new("0200").with(55, icc), &expected);
    let big = [0xA5u8; 255];
    let expected = cat(&[b"0200", &[0, 0, 0, 0, 0, 0, 0x02, 0], b"255", &big]);
    round_trip(&Fields::new("0200").with(55, big), &expected);
    let e = Fields::new("0200")
        .with(55, [0u8; 256])
        .to_vec()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::LengthOverMax { len: 256, max: 255 });
}

#[test]
fn secondary_bitmap_de70() {
    // DE70 is bit 6 of the secondary bitmap (0x04); bit 1 of the primary
    // announces the secondary bitmap.
    let expected = cat(&[
        b"0800",
        &[0x82, 0x20, 0, 0, 0, 0, 0, 0],
        &[0x04, 0, 0, 0, 0, 0, 0, 0],
        b"1125083000",
        b"000001",
        b"301",
    ]);
    round_trip(
        &Fields::new("0800")
            .with(7, "1125083000")
            .with(11, "000001")
            .with(70, "301"),
        &expected,
    );
    let m = Message::decode(&expected[..]).unwrap();
    assert_eq!(m.network_code(), Some(&b"301"[..]));
    assert_eq!(m.offset_of(7), Some(20));
}

#[test]
fn secondary_bitmap_de90() {
    // DE90 is bit 26 of the secondary bitmap: byte 4, 0x40.
    let de90 = "020000010211250830000000000000200000000000";
    let expected = cat(&[
        b"0400",
        &[0x80, 0, 0, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0x40, 0, 0, 0, 0],
        de90.as_bytes(),
    ]);
    round_trip(&Fields::new("0400").with(90, de90), &expected);
    let o = Message::decode(&expected[..]).unwrap().original().unwrap();
    assert_eq!(
        o,
        OriginalData {
            mti: *b"0200",
            stan: *b"000102",
            transmission: *b"1125083000",
            acquirer: *b"00000000002",
        }
    );
}

#[test]
fn secondary_bitmap_de128() {
    // DE128 is the last bit of the secondary bitmap; with a secondary bitmap
    // the MAC accessor reads DE128, not DE64.
    let mac = [1, 2, 3, 4, 5, 6, 7, 0xFF];
    let expected = cat(&[
        b"0400",
        &[0x80, 0, 0, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0x40, 0, 0, 0, 0x01],
        b"020000010211250830000000000000200000000000",
        &mac,
    ]);
    round_trip(
        &Fields::new("0400")
            .with(90, "020000010211250830000000000000200000000000")
            .with(128, mac),
        &expected,
    );
    let m = Message::decode(&expected[..]).unwrap();
    assert_eq!(m.mac(), Some((128, &mac[..])));
    // Only DE128 alone (no other secondary field) still needs the bitmap.
    let expected = cat(&[
        b"0800",
        &[0x80, 0, 0, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0, 0, 0, 0, 0x01],
        &mac,
    ]);
    round_trip(&Fields::new("0800").with(128, mac), &expected);
}

#[test]
fn every_field_present_at_once() {
    // All 127 data elements (DE65 included, as the plain b8 field of our
    // table) with one value each: both bitmaps all ones, and the decode must
    // find every boundary.
    let spec = kks_switch::iso8583::default_spec();
    let mut f = Fields::new("0200");
    for n in 2..=128u8 {
        let d = spec.field(n);
        let len = match d.len {
            kks_switch::iso8583::LenKind::Fixed => d.max as usize,
            _ => (n as usize % 7).min(d.max as usize),
        };
        let v: Vec<u8> = match d.class {
            kks_switch::iso8583::Class::Xn => {
                let mut v = vec![b'C'];
                v.extend(std::iter::repeat_n(b'7', len - 1));
                v
            }
            kks_switch::iso8583::Class::B => {
                (0..len).map(|i| (i * 37 + n as usize) as u8).collect()
            }
            _ => (0..len)
                .map(|i| b'0' + ((i + n as usize) % 10) as u8)
                .collect(),
        };
        f = f.with(n, v);
    }
    let bytes = f.to_vec().unwrap();
    assert_eq!(&bytes[4..20], &[0xFF; 16], "both bitmaps all ones");
    let m = Message::decode(&bytes[..]).unwrap();
    m.validate().unwrap();
    assert_eq!(m.to_fields(), f);
    assert_eq!(m.present().count(), 128);
}

#[test]
fn golden_frames_decode_and_reencode() {
    for g in common::all() {
        let msg = g.message();
        let m = Message::decode(&msg[..]).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        m.validate().unwrap_or_else(|e| panic!("{}: {e}", g.name));
        m.check_mandatory()
            .unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_eq!(m.mti(), &g.fields.mti, "{}", g.name);
        for (&n, v) in &g.fields.fields {
            assert_eq!(m.get(n), Some(v.as_slice()), "{}: DE{n}", g.name);
        }
        assert_eq!(m.to_fields(), g.fields, "{}: field set", g.name);
        let re = g.fields.to_vec().unwrap();
        assert_eq!(
            hex::encode_upper(&re),
            hex::encode_upper(&msg),
            "{}: re-encoded bytes",
            g.name
        );
        // Re-encoding what was decoded (not the literal table) is the same.
        assert_eq!(m.to_fields().to_vec().unwrap(), msg, "{}", g.name);
    }
}

#[test]
fn golden_frames_typed_accessors() {
    let m = common::purchase().message();
    let m = Message::decode(&m[..]).unwrap();
    assert_eq!(m.pan(), Some("6000020000000120"));
    assert_eq!(m.amount(), Some(9_300_000));
    assert_eq!(m.stan(), Some(&b"000101"[..]));
    assert_eq!(m.terminal_id(), Some(&b"EW000001"[..]));
    assert_eq!(m.merchant_id(), Some(&b"EWARONG00000001"[..]));
    assert_eq!(m.currency(), Some(&b"360"[..]));
    assert_eq!(m.pin_block(), Some(common::PIN_BLOCK));
    assert_eq!(m.mac(), None);

    let m = common::purchase_mac().message();
    let m = Message::decode(&m[..]).unwrap();
    assert_eq!(m.mac(), Some((64, &common::MAC_0200[..])));

    let m = common::reversal().message();
    let m = Message::decode(&m[..]).unwrap();
    let o = m.original().unwrap();
    assert_eq!(&o.mti, b"0200");
    assert_eq!(&o.stan, b"000102");
    assert_eq!(&o.transmission, b"1125083000");
    assert_eq!(&o.acquirer, b"00000000002");
    assert_eq!(m.mac(), None);
}

/// The secondary bitmap is spliced in when DE90 arrives after fields ≤ 64:
/// the result is pyiso8583's golden 0400, byte for byte.
#[test]
fn secondary_bitmap_splice_matches_pyiso8583() {
    let g = common::reversal();
    let want = g.message();
    let mut out = BytesMut::new();
    let mut b = Builder::new(&mut out, b"0400");
    for (&n, v) in g.fields.fields.iter().filter(|(&n, _)| n <= 64) {
        b.field(n, v).unwrap();
    }
    assert!(!b.has_secondary());
    b.field(90, &g.fields.fields[&90]).unwrap();
    assert!(b.has_secondary());
    b.finish();
    assert_eq!(hex::encode_upper(&out), hex::encode_upper(&want));

    // Same for the 0800 echo: DE70 spliced after DE7 and DE11.
    let g = common::echo_0800();
    let mut out = BytesMut::new();
    let mut b = Builder::new(&mut out, b"0800");
    b.field(7, b"1125083000").unwrap();
    b.field(11, b"000001").unwrap();
    b.field(70, b"301").unwrap();
    b.finish();
    assert_eq!(&out[..], &g.message()[..]);
}

/// The splice moves everything written so far, LLLVAR fields included.
#[test]
fn secondary_bitmap_splice_after_long_fields() {
    let long: Vec<u8> = (0..999).map(|i| b' ' + (i % 95) as u8).collect();
    let f = Fields::new("0200")
        .with(2, "6000020000000120")
        .with(48, &long)
        .with(55, [0xEE; 200])
        .with(64, [9; 8])
        .with(70, "001")
        .with(127, "tail");
    let expected = cat(&[
        b"0200",
        &[0xC0, 0, 0, 0, 0, 0x01, 0x02, 0x01],
        &[0x04, 0, 0, 0, 0, 0, 0, 0x02],
        b"16",
        b"6000020000000120",
        b"999",
        &long,
        b"200",
        &[0xEE; 200],
        &[9; 8],
        b"001",
        b"004",
        b"tail",
    ]);
    round_trip(&f, &expected);
}

/// finish_with_mac: the MAC goes in DE64 without a secondary bitmap and in
/// DE128 with one; the closure sees every byte before the MAC with the MAC
/// bit already set. With the golden MAC frame the bytes match pyiso8583's.
#[test]
fn finish_with_mac_golden() {
    let g = common::purchase_mac();
    let want = g.message();
    let mut out = BytesMut::new();
    let mut b = Builder::new(&mut out, b"0200");
    for (&n, v) in g.fields.fields.iter().filter(|(&n, _)| n != 64) {
        b.field(n, v).unwrap();
    }
    let mut seen = Vec::new();
    b.finish_with_mac(|bytes| {
        seen = bytes.to_vec();
        common::MAC_0200
    })
    .unwrap();
    assert_eq!(seen, want[..want.len() - 8]);
    assert_eq!(hex::encode_upper(&out), hex::encode_upper(&want));

    // 0400 with DE90: MAC goes in DE128.
    let g = common::reversal();
    let mut out = BytesMut::new();
    let mut b = Builder::new(&mut out, b"0400");
    for (&n, v) in &g.fields.fields {
        b.field(n, v).unwrap();
    }
    b.finish_with_mac(|_| [0xAB; 8]).unwrap();
    let m = Message::decode(&out[..]).unwrap();
    assert_eq!(m.mac(), Some((128, &[0xAB; 8][..])));
    assert!(!m.has(64));
    let mut want = g.message();
    want[19] |= 0x01; // DE128 bit in the secondary bitmap
    want.extend_from_slice(&[0xAB; 8]);
    assert_eq!(hex::encode_upper(&out), hex::encode_upper(&want));
}

#[test]
fn builder_refuses_bad_input_and_stays_usable() {
    let mut out = BytesMut::new();
    let mut b = Builder::new(&mut out, b"0800");
    b.field(11, b"000001").unwrap();
    let e = b.field(7, b"1125083000").err().unwrap();
    assert_eq!((e.kind, e.part), (ErrorKind::OutOfOrder, Part::Field(7)));
    let e = b.field(11, b"000002").err().unwrap();
    assert_eq!((e.kind, e.part), (ErrorKind::OutOfOrder, Part::Field(11)));
    let e = b.field(12, b"12345").err().unwrap();
    assert_eq!(
        (e.kind, e.part),
        (
            ErrorKind::WrongLength {
                len: 5,
                expected: 6
            },
            Part::Field(12)
        )
    );
    let e = b.field(1, &[0u8; 8]).err().unwrap();
    assert_eq!(
        (e.kind, e.part),
        (ErrorKind::UndefinedField, Part::Field(1))
    );
    b.field(70, b"301").unwrap();
    b.finish();
    let m = Message::decode(&out[..]).unwrap();
    assert_eq!(
        m.to_fields(),
        Fields::new("0800").with(11, "000001").with(70, "301")
    );
}
