//! Decoding: a message is parsed in place. [`Message`] keeps the buffer it
//! was decoded from (a `&[u8]` or a `Bytes`) and, per data element, only the
//! offset and length of its value, so no field data is copied.
//!
//! Decoding is in two steps, because the switch answers them differently:
//! [`Message::decode`] finds the structure (MTI, bitmaps, every field's
//! boundaries; failure here means the frame cannot be answered), and
//! [`Message::validate`] checks each present field's content class (failure
//! here is answered with DE39 30, echoing DE11 and DE41).

use super::error::{Error, ErrorKind, Part};
use super::spec::{default_spec, LenKind, Spec};
use std::collections::BTreeMap;
use std::fmt;

/// Largest buffer the codec indexes (offsets are stored as u16). The wire
/// cap (4096) is far below it.
pub const MESSAGE_BYTES_MAX: usize = u16::MAX as usize;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u16,
    len: u16,
}

/// Bit mask for DE`n` (1..=128) in the combined 128-bit bitmap, where DE1 is
/// the most significant bit, exactly as the two 8-byte bitmaps sit on the wire.
#[inline(always)]
pub const fn bit(n: u8) -> u128 {
    1u128 << (128 - n as u32)
}

/// A decoded message: the buffer plus an index of where each field lies.
#[derive(Clone)]
pub struct Message<B> {
    buf: B,
    bitmap: u128,
    /// The first content-class error, found during decode while the bytes
    /// are in cache; reported by [`Message::validate`].
    content: Option<Error>,
    spans: [Span; 129],
}

/// Debug never prints field values (a PAN, PIN block or MAC could be among
/// them): only the MTI and which fields are present.
impl<B: AsRef<[u8]>> fmt::Debug for Message<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<u8> = self.present().collect();
        f.debug_struct("Message")
            .field("mti", &String::from_utf8_lossy(self.mti()))
            .field("fields", &fields)
            .finish()
    }
}

#[inline]
fn digits_value(b: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as usize;
    }
    Some(v)
}

impl<B: AsRef<[u8]>> Message<B> {
    /// Decode the structure of one message with the built-in field table.
    /// The buffer must hold exactly one message (no frame header): bytes left
    /// after the last field are an error, running out early is `Incomplete`.
    pub fn decode(buf: B) -> Result<Self, Error> {
        Self::decode_with(default_spec(), buf)
    }

    /// Decode with a given field table.
    #[inline]
    pub fn decode_with(spec: &Spec, buf: B) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() > MESSAGE_BYTES_MAX {
            return Err(Error::new(
                ErrorKind::TooLarge {
                    len: b.len(),
                    max: MESSAGE_BYTES_MAX,
                },
                Part::Mti,
                0,
            ));
        }
        if b.len() < 4 {
            let needed = 4 - b.len();
            return Err(Error::new(ErrorKind::Incomplete { needed }, Part::Mti, 0));
        }
        if !b[..4].iter().all(u8::is_ascii_digit) {
            return Err(Error::new(ErrorKind::BadMti, Part::Mti, 0));
        }
        if b.len() < 12 {
            let needed = 12 - b.len();
            return Err(Error::new(
                ErrorKind::Incomplete { needed },
                Part::PrimaryBitmap,
                4,
            ));
        }
        let primary = u64::from_be_bytes(b[4..12].try_into().unwrap_or([0; 8]));
        let mut bitmap = (primary as u128) << 64;
        let mut spans = [Span::default(); 129];
        let mut content = None;
        let mut pos = 12usize;
        if bitmap & bit(1) != 0 {
            if b.len() < 20 {
                let needed = 20 - b.len();
                return Err(Error::new(
                    ErrorKind::Incomplete { needed },
                    Part::Field(1),
                    12,
                ));
            }
            let secondary = u64::from_be_bytes(b[12..20].try_into().unwrap_or([0; 8]));
            bitmap |= secondary as u128;
            spans[1] = Span { start: 12, len: 8 };
            pos = 20;
        }
        // Walk the set bits from DE2 upward.
        let mut rest = bitmap & !bit(1);
        while rest != 0 {
            let n = (rest.leading_zeros() + 1) as u8;
            rest &= !bit(n);
            let def = spec.field(n);
            if !def.defined {
                return Err(Error::new(ErrorKind::UndefinedField, Part::Field(n), pos));
            }
            let field_start = pos;
            let len = match def.len {
                LenKind::Fixed => def.max as usize,
                kind => {
                    let p = kind.prefix_len();
                    if b.len() < pos + p {
                        let needed = pos + p - b.len();
                        return Err(Error::new(
                            ErrorKind::Incomplete { needed },
                            Part::Field(n),
                            pos,
                        ));
                    }
                    let len = digits_value(&b[pos..pos + p]).ok_or(Error::new(
                        ErrorKind::BadLengthPrefix,
                        Part::Field(n),
                        pos,
                    ))?;
                    if len > def.max as usize {
                        return Err(Error::new(
                            ErrorKind::LengthOverMax {
                                len,
                                max: def.max as usize,
                            },
                            Part::Field(n),
                            pos,
                        ));
                    }
                    pos += p;
                    len
                }
            };
            if b.len() < pos + len {
                let needed = pos + len - b.len();
                return Err(Error::new(
                    ErrorKind::Incomplete { needed },
                    Part::Field(n),
                    field_start,
                ));
            }
            spans[n as usize] = Span {
                start: pos as u16,
                len: len as u16,
            };
            if content.is_none() {
                let v = &b[pos..pos + len];
                if let Some(i) = def.class.first_invalid(v) {
                    content = Some(Error::new(
                        ErrorKind::BadChar {
                            byte: v[i],
                            class: def.class,
                        },
                        Part::Field(n),
                        pos + i,
                    ));
                }
            }
            pos += len;
        }
        if pos < b.len() {
            return Err(Error::new(
                ErrorKind::TrailingBytes {
                    count: b.len() - pos,
                },
                Part::Trailer,
                pos,
            ));
        }
        Ok(Message {
            buf,
            bitmap,
            content,
            spans,
        })
    }

    /// Check every present field against its content class (with the
    /// table the message was decoded with). The first offending field is
    /// reported with the offset of the offending byte.
    #[inline]
    pub fn validate(&self) -> Result<(), Error> {
        match self.content {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The whole message bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> B {
        self.buf
    }

    /// The 4 MTI bytes.
    #[inline]
    pub fn mti(&self) -> &[u8] {
        &self.buf.as_ref()[..4]
    }

    /// The combined 128-bit bitmap (DE1 is the most significant bit).
    #[inline]
    pub fn bitmap(&self) -> u128 {
        self.bitmap
    }

    /// Whether DE`n` is present.
    #[inline]
    pub fn has(&self, n: u8) -> bool {
        (1..=128).contains(&n) && self.bitmap & bit(n) != 0
    }

    /// Present data elements in ascending order (DE1 included when set).
    pub fn present(&self) -> Present {
        Present(self.bitmap)
    }

    /// The raw value of DE`n` (without its length prefix).
    #[inline]
    pub fn get(&self, n: u8) -> Option<&[u8]> {
        if !self.has(n) {
            return None;
        }
        let s = self.spans[n as usize];
        Some(&self.buf.as_ref()[s.start as usize..(s.start + s.len) as usize])
    }

    /// Byte offset of DE`n`'s value in the message.
    pub fn offset_of(&self, n: u8) -> Option<usize> {
        self.has(n).then(|| self.spans[n as usize].start as usize)
    }

    /// DE`n` as text. `None` when absent or not UTF-8 (validated fields of
    /// every class but b are ASCII).
    #[inline]
    pub fn get_str(&self, n: u8) -> Option<&str> {
        self.get(n).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// DE`n` as an unsigned number (n fields up to 19 digits).
    pub fn get_u64(&self, n: u8) -> Option<u64> {
        let v = self.get(n)?;
        if v.is_empty() || v.len() > 19 {
            return None;
        }
        digits_value(v).map(|x| x as u64)
    }

    /// Copy out into an owned, order-preserving map (for tests and tools;
    /// the hot path reads fields in place).
    pub fn to_fields(&self) -> Fields {
        let mut mti = [0u8; 4];
        mti.copy_from_slice(self.mti());
        let fields = self
            .present()
            .filter(|&n| n != 1)
            .filter_map(|n| self.get(n).map(|v| (n, v.to_vec())))
            .collect();
        Fields { mti, fields }
    }
}

/// Iterator over the set bits of a bitmap as DE numbers, ascending.
#[derive(Clone, Copy, Debug)]
pub struct Present(u128);

impl Iterator for Present {
    type Item = u8;
    #[inline]
    fn next(&mut self) -> Option<u8> {
        if self.0 == 0 {
            return None;
        }
        let n = (self.0.leading_zeros() + 1) as u8;
        self.0 &= !bit(n);
        Some(n)
    }
}

/// An owned message: MTI and field values by DE number (bitmaps are derived).
/// Used by tests, tools and the simulator's scripted messages.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Fields {
    pub mti: [u8; 4],
    pub fields: BTreeMap<u8, Vec<u8>>,
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&u8> = self.fields.keys().collect();
        f.debug_struct("Fields")
            .field("mti", &String::from_utf8_lossy(&self.mti))
            .field("fields", &keys)
            .finish()
    }
}

impl Fields {
    /// A new message with this MTI and no fields.
    pub fn new(mti: &str) -> Self {
        let mut m = [b'0'; 4];
        let src = mti.as_bytes();
        let n = src.len().min(4);
        m[..n].copy_from_slice(&src[..n]);
        Fields {
            mti: m,
            fields: BTreeMap::new(),
        }
    }

    /// Set DE`n` (builder style).
    pub fn with(mut self, n: u8, value: impl AsRef<[u8]>) -> Self {
        self.fields.insert(n, value.as_ref().to_vec());
        self
    }

    /// Encode into `out` with the built-in table.
    pub fn encode(&self, out: &mut bytes::BytesMut) -> Result<(), Error> {
        let mut b = super::Builder::new(out, &self.mti);
        for (&n, v) in &self.fields {
            b.field(n, v)?;
        }
        b.finish();
        Ok(())
    }

    /// Encode into a fresh vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = bytes::BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.to_vec())
    }
}
