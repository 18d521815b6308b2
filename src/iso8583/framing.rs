//! Framing: a 2-byte big-endian binary length (`2b`, the default) or 4 ASCII
//! decimal digits (`4a`) before each message (INTERFACE §1). The length parse
//! is pure ([`frame_length`]); [`FrameCodec`] adapts it to tokio-util and is
//! the only tokio-dependent code in the codec module.
//!
//! A zero or oversize length is refused before anything is reserved for it,
//! so a hostile header can never make the host allocate what it claims.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// Largest message accepted or sent (INTERFACE §1), header excluded.
pub const FRAME_BYTES_MAX: usize = 4096;

/// The length header in use on a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Framing {
    /// 2-byte big-endian binary length.
    #[default]
    #[serde(rename = "2b")]
    TwoByte,
    /// 4 ASCII decimal digits.
    #[serde(rename = "4a")]
    FourAscii,
}

impl Framing {
    /// Header size in bytes.
    pub const fn header_len(self) -> usize {
        match self {
            Framing::TwoByte => 2,
            Framing::FourAscii => 4,
        }
    }
}

impl std::str::FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "2b" => Ok(Framing::TwoByte),
            "4a" => Ok(Framing::FourAscii),
            _ => Err(format!("framing must be \"2b\" or \"4a\", not {s:?}")),
        }
    }
}

/// Why a frame was refused. Any of these closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length 0")]
    ZeroLength,
    #[error("frame length {len} exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("4a length header is not 4 ASCII digits")]
    BadHeader,
    #[error("outgoing message of {len} bytes exceeds the maximum of {max}")]
    OutgoingTooLong { len: usize, max: usize },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Parse a frame header: `Ok(None)` until the header is whole, then the
/// message length, validated against `max`.
pub fn frame_length(framing: Framing, src: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let h = framing.header_len();
    if src.len() < h {
        return Ok(None);
    }
    let len = match framing {
        Framing::TwoByte => u16::from_be_bytes([src[0], src[1]]) as usize,
        Framing::FourAscii => {
            let mut v = 0usize;
            for &c in &src[..4] {
                if !c.is_ascii_digit() {
                    return Err(FrameError::BadHeader);
                }
                v = v * 10 + (c - b'0') as usize;
            }
            v
        }
    };
    if len == 0 {
        return Err(FrameError::ZeroLength);
    }
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    Ok(Some(len))
}

/// tokio-util codec: yields whole messages (header stripped) as `Bytes`,
/// writes messages with the header prepended.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    framing: Framing,
    max: usize,
}

impl FrameCodec {
    /// A codec with the given header and the interface's 4096-byte cap.
    pub fn new(framing: Framing) -> Self {
        FrameCodec {
            framing,
            max: FRAME_BYTES_MAX,
        }
    }

    /// A codec with a lower cap (the cap can never exceed [`FRAME_BYTES_MAX`]).
    pub fn with_max(framing: Framing, max: usize) -> Self {
        FrameCodec {
            framing,
            max: max.clamp(1, FRAME_BYTES_MAX),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = frame_length(self.framing, src, self.max)? else {
            return Ok(None);
        };
        let h = self.framing.header_len();
        if src.len() < h + len {
            // Bounded by max + header: the length was validated above.
            src.reserve(h + len - src.len());
            return Ok(None);
        }
        src.advance(h);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        let m = msg.as_ref();
        if m.is_empty() || m.len() > self.max {
            return Err(FrameError::OutgoingTooLong {
                len: m.len(),
                max: self.max,
            });
        }
        dst.reserve(self.framing.header_len() + m.len());
        write_header(self.framing, m.len(), dst);
        dst.extend_from_slice(m);
        Ok(())
    }
}

/// Append a header for a message of `len` bytes (len ≤ 9999).
pub fn write_header(framing: Framing, len: usize, dst: &mut BytesMut) {
    match framing {
        Framing::TwoByte => dst.put_u16(len as u16),
        Framing::FourAscii => {
            let l = len.min(9999);
            dst.extend_from_slice(&[
                b'0' + (l / 1000) as u8,
                b'0' + (l / 100 % 10) as u8,
                b'0' + (l / 10 % 10) as u8,
                b'0' + (l % 10) as u8,
            ]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(framing: Framing, bytes: &[u8]) -> (Result<Option<Bytes>, FrameError>, BytesMut) {
        let mut c = FrameCodec::new(framing);
        let mut b = BytesMut::from(bytes);
        (c.decode(&mut b), b)
    }

    #[test]
    fn two_byte_header() {
        let (r, rest) = dec(Framing::TwoByte, b"\x00\x04abcdXY");
        assert_eq!(r.unwrap().unwrap(), Bytes::from_static(b"abcd"));
        assert_eq!(&rest[..], b"XY");
        assert!(dec(Framing::TwoByte, b"\x00").0.unwrap().is_none());
        assert!(dec(Framing::TwoByte, b"\x00\x05abc").0.unwrap().is_none());
    }

    #[test]
    fn four_ascii_header() {
        let (r, _) = dec(Framing::FourAscii, b"0004abcd");
        assert_eq!(r.unwrap().unwrap(), Bytes::from_static(b"abcd"));
        assert!(matches!(
            dec(Framing::FourAscii, b"00a4abcd").0,
            Err(FrameError::BadHeader)
        ));
        assert!(matches!(
            dec(Framing::FourAscii, b"9999").0,
            Err(FrameError::TooLong { len: 9999, .. })
        ));
    }

    #[test]
    fn zero_and_oversize_refused_without_allocating() {
        assert!(matches!(
            dec(Framing::TwoByte, b"\x00\x00").0,
            Err(FrameError::ZeroLength)
        ));
        let (r, buf) = dec(Framing::TwoByte, b"\xFF\xFF");
        assert!(matches!(
            r,
            Err(FrameError::TooLong {
                len: 65535,
                max: 4096
            })
        ));
        assert!(buf.capacity() < 4096, "capacity {}", buf.capacity());
        assert!(dec(Framing::TwoByte, b"\x10\x00").0.unwrap().is_none());
        assert!(matches!(
            dec(Framing::TwoByte, b"\x10\x01").0,
            Err(FrameError::TooLong { len: 4097, .. })
        ));
    }

    #[test]
    fn encoder_writes_headers() {
        let mut c = FrameCodec::new(Framing::FourAscii);
        let mut out = BytesMut::new();
        c.encode(&b"abc"[..], &mut out).unwrap();
        assert_eq!(&out[..], b"0003abc");
        let mut c = FrameCodec::new(Framing::TwoByte);
        let mut out = BytesMut::new();
        c.encode(&b"abc"[..], &mut out).unwrap();
        assert_eq!(&out[..], b"\x00\x03abc");
        assert!(c.encode(&[0u8; 4097][..], &mut out).is_err());
    }
}
