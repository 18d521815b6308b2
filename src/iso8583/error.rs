//! Codec errors: one enum for the layer, every variant naming the field (DE)
//! and the byte offset where the problem starts, so a partner can find the
//! bad byte in a capture. "Need more bytes" (`Incomplete`) is a separate
//! variant from every "malformed" one: a streaming caller waits on the first
//! and rejects on the others.

use std::fmt;

/// Where in a message an error was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The 4-digit message type indicator.
    Mti,
    /// The primary bitmap.
    PrimaryBitmap,
    /// A data element (1 = secondary bitmap).
    Field(u8),
    /// Bytes after the last field the bitmap announces.
    Trailer,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Mti => f.write_str("MTI"),
            Part::PrimaryBitmap => f.write_str("primary bitmap"),
            Part::Field(1) => f.write_str("DE1 (secondary bitmap)"),
            Part::Field(n) => write!(f, "DE{n}"),
            Part::Trailer => f.write_str("trailer"),
        }
    }
}

/// What went wrong. Values that came from the input are never copied into an
/// error (a PAN or PIN block must not reach a log through an error message);
/// only positions, lengths and the offending byte's value for content errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The buffer ends before the part is complete; `needed` more bytes at least.
    Incomplete { needed: usize },
    /// The MTI is not four ASCII digits.
    BadMti,
    /// A length prefix holds something other than ASCII digits.
    BadLengthPrefix,
    /// A variable-length field declares more than its maximum.
    LengthOverMax { len: usize, max: usize },
    /// Bytes remain after the last field announced by the bitmaps.
    TrailingBytes { count: usize },
    /// A content byte is outside the field's class (n, an, ans, z, xn).
    BadChar { byte: u8, class: super::spec::Class },
    /// The field is present but empty where a value is required.
    Empty,
    /// A field is not defined in the field table in use.
    UndefinedField,
    /// While encoding: the value's length does not fit the field definition.
    WrongLength { len: usize, expected: usize },
    /// While encoding: fields added out of ascending order or twice.
    OutOfOrder,
    /// A mandatory field for this message type is missing.
    Missing,
    /// The buffer is larger than a message may be (offsets are 16-bit).
    TooLarge { len: usize, max: usize },
}

/// A codec error: what, where (part) and at which byte offset of the message
/// (offset 0 is the first MTI byte; the frame header is not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub part: Part,
    pub offset: usize,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, part: Part, offset: usize) -> Self {
        Error { kind, part, offset }
    }

    /// True when more input could complete the message (streaming callers wait).
    pub fn is_incomplete(&self) -> bool {
        matches!(self.kind, ErrorKind::Incomplete { .. })
    }

    /// The field number, when the error is about a data element.
    pub fn field(&self) -> Option<u8> {
        match self.part {
            Part::Field(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        let part = self.part;
        match self.kind {
            ErrorKind::Incomplete { needed } => {
                write!(
                    f,
                    "{part} at byte {at}: incomplete, need {needed} more byte(s)"
                )
            }
            ErrorKind::BadMti => write!(f, "{part} at byte {at}: not 4 ASCII digits"),
            ErrorKind::BadLengthPrefix => {
                write!(f, "{part} at byte {at}: length prefix is not ASCII digits")
            }
            ErrorKind::LengthOverMax { len, max } => {
                write!(f, "{part} at byte {at}: length {len} exceeds maximum {max}")
            }
            ErrorKind::TrailingBytes { count } => {
                write!(
                    f,
                    "{count} trailing byte(s) at byte {at} after the last field"
                )
            }
            ErrorKind::BadChar { byte, class } => write!(
                f,
                "{part} at byte {at}: byte 0x{byte:02X} not allowed in class {class}"
            ),
            ErrorKind::Empty => write!(f, "{part} at byte {at}: empty"),
            ErrorKind::UndefinedField => write!(f, "{part} at byte {at}: not in the field table"),
            ErrorKind::WrongLength { len, expected } => {
                write!(f, "{part}: value length {len}, field takes {expected}")
            }
            ErrorKind::OutOfOrder => write!(f, "{part}: added out of ascending order"),
            ErrorKind::Missing => write!(f, "{part}: mandatory field missing"),
            ErrorKind::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the codec limit of {max}")
            }
        }
    }
}

impl std::error::Error for Error {}
