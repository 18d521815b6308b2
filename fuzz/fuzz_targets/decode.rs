//! Message decode on arbitrary bytes: structure, content validation, every
//! typed accessor, and re-encoding of whatever decoded. Must never panic.
#![no_main]
use kks_switch::iso8583::{Fields, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let valid = m.validate().is_ok();
        let _ = m.check_mandatory();
        let _ = (m.pan(), m.amount(), m.original(), m.mac(), m.pin_block());
        let f: Fields = m.to_fields();
        // An empty secondary bitmap is legal on the wire but is not
        // reproduced by the encoder, which sets DE1 only when needed.
        let empty_secondary = m.has(1) && m.bitmap() as u64 == 0;
        if let (Ok(bytes), false) = (f.to_vec(), empty_secondary) {
            // What decoded must re-encode to the same bytes.
            assert_eq!(bytes, data, "re-encoding differs (valid={valid})");
        }
    }
});
