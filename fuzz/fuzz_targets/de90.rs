//! The DE90 original-data-elements parser (`OriginalData::parse`) on
//! arbitrary bytes: never panics; accepts exactly 42 ASCII digits; what it
//! accepts re-encodes to the same first 31 digits (the forwarding
//! institution, digits 32–42, is not kept and encodes as zeros); and the
//! parse through a decoded message (`Message::original`) agrees with it.
#![no_main]
use kks_switch::iso8583::{Fields, Message, OriginalData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = OriginalData::parse(data);
    let well_formed = data.len() == 42 && data.iter().all(u8::is_ascii_digit);
    assert_eq!(parsed.is_some(), well_formed);
    if let Some(o) = parsed {
        let e = o.encode();
        assert_eq!(&e[..31], &data[..31]);
        assert!(e[31..].iter().all(|&b| b == b'0'));
        assert_eq!(OriginalData::parse(&e), Some(o));
    }
    // The same bytes as DE90 of a reversal, through the codec (DE90 is a
    // fixed n42 field, so only 42-byte values encode).
    if data.len() == 42 {
        let f = Fields::new("0400").with(11, "000001").with(90, data);
        if let Ok(bytes) = f.to_vec() {
            if let Ok(m) = Message::decode(&bytes[..]) {
                assert_eq!(m.original(), parsed);
            }
        }
    }
});
