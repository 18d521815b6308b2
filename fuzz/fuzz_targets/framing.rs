//! The framing decoder on arbitrary byte streams, in both header styles:
//! never panics, never reserves beyond one maximal frame.
#![no_main]
use bytes::BytesMut;
use kks_switch::iso8583::{FrameCodec, Framing, FRAME_BYTES_MAX};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::TwoByte, Framing::FourAscii] {
        let mut codec = FrameCodec::new(framing);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            assert!(!frame.is_empty() && frame.len() <= FRAME_BYTES_MAX);
        }
        assert!(buf.capacity() <= data.len().max(FRAME_BYTES_MAX + 4) * 2);
    }
});
