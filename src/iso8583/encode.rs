//! Encoding straight into a `BytesMut`: fields are appended in ascending DE
//! order with their length prefixes; the bitmaps are patched in at the end.
//! A secondary bitmap is spliced in when the first field above 64 arrives
//! (a copy of the few bytes written so far, never a second pass).

use super::error::{Error, ErrorKind, Part};
use super::message::bit;
use super::spec::{default_spec, LenKind, Spec};
use bytes::BytesMut;

/// Appends one message to a buffer. Errors leave the builder usable; the
/// offending field is not written.
pub struct Builder<'b> {
    out: &'b mut BytesMut,
    start: usize,
    bitmap: u128,
    last: u8,
    spec: &'static Spec,
}

impl<'b> Builder<'b> {
    /// Start a message with this MTI at the end of `out`.
    #[inline]
    pub fn new(out: &'b mut BytesMut, mti: &[u8; 4]) -> Self {
        Self::with_spec(default_spec(), out, mti)
    }

    /// Start a message using a given (static) field table.
    #[inline]
    pub fn with_spec(spec: &'static Spec, out: &'b mut BytesMut, mti: &[u8; 4]) -> Self {
        let start = out.len();
        out.reserve(256);
        out.extend_from_slice(mti);
        out.extend_from_slice(&[0u8; 8]);
        Builder {
            out,
            start,
            bitmap: 0,
            last: 1,
            spec,
        }
    }

    /// Whether a field above 64 has been added (the MAC then goes in DE128).
    pub fn has_secondary(&self) -> bool {
        self.bitmap & bit(1) != 0
    }

    /// Append DE`n`. Fields must come in ascending order, each once; the
    /// value's length must fit the table (content classes are the caller's
    /// responsibility on this path; [`super::Message::validate`] checks them
    /// on the way in).
    #[inline]
    pub fn field(&mut self, n: u8, value: &[u8]) -> Result<&mut Self, Error> {
        let def = self.spec.field(n);
        if !def.defined || n == 1 {
            return Err(Error::new(ErrorKind::UndefinedField, Part::Field(n), 0));
        }
        if n <= self.last {
            return Err(Error::new(ErrorKind::OutOfOrder, Part::Field(n), 0));
        }
        let len = value.len();
        let max = def.max as usize;
        match def.len {
            LenKind::Fixed if len != max => {
                return Err(Error::new(
                    ErrorKind::WrongLength { len, expected: max },
                    Part::Field(n),
                    0,
                ))
            }
            LenKind::Llvar | LenKind::Lllvar if len > max => {
                return Err(Error::new(
                    ErrorKind::LengthOverMax { len, max },
                    Part::Field(n),
                    0,
                ))
            }
            _ => {}
        }
        if n > 64 && !self.has_secondary() {
            self.splice_secondary();
        }
        match def.len {
            LenKind::Fixed => {}
            LenKind::Llvar => {
                self.out
                    .extend_from_slice(&[b'0' + (len / 10) as u8, b'0' + (len % 10) as u8]);
            }
            LenKind::Lllvar => {
                self.out.extend_from_slice(&[
                    b'0' + (len / 100) as u8,
                    b'0' + (len / 10 % 10) as u8,
                    b'0' + (len % 10) as u8,
                ]);
            }
        }
        self.out.extend_from_slice(value);
        self.bitmap |= bit(n);
        self.last = n;
        Ok(self)
    }

    #[cold]
    fn splice_secondary(&mut self) {
        let at = self.start + 12;
        let old_len = self.out.len();
        self.out.extend_from_slice(&[0u8; 8]);
        self.out.copy_within(at..old_len, at + 8);
        self.out[at..at + 8].fill(0);
        self.bitmap |= bit(1);
    }

    fn write_bitmaps(&mut self) {
        let s = self.start;
        let primary = ((self.bitmap >> 64) as u64).to_be_bytes();
        self.out[s + 4..s + 12].copy_from_slice(&primary);
        if self.has_secondary() {
            let secondary = (self.bitmap as u64).to_be_bytes();
            self.out[s + 12..s + 20].copy_from_slice(&secondary);
        }
    }

    /// Write the bitmaps; the message is complete in `out`.
    pub fn finish(mut self) {
        self.write_bitmaps();
    }

    /// Finish with a MAC as the last field: DE128 when a secondary bitmap is
    /// present, else DE64 (INTERFACE §6). `mac` receives every message byte
    /// from the MTI up to the MAC field, with the MAC's bitmap bit already
    /// set, and returns the 8 MAC bytes.
    pub fn finish_with_mac(mut self, mac: impl FnOnce(&[u8]) -> [u8; 8]) -> Result<(), Error> {
        let n = if self.has_secondary() { 128 } else { 64 };
        if n <= self.last {
            return Err(Error::new(ErrorKind::OutOfOrder, Part::Field(n), 0));
        }
        self.bitmap |= bit(n);
        self.write_bitmaps();
        let m = mac(&self.out[self.start..]);
        self.out.extend_from_slice(&m);
        Ok(())
    }
}
