//! ISO 8583:1987 codec (INTERFACE §2): ASCII MTI, binary primary/secondary
//! bitmaps, fixed, LLVAR and LLLVAR fields, driven by the field table in
//! `specs/fields.toml`. Pure code on `bytes`; only [`framing`] touches
//! tokio-util.
//!
//! - [`spec`]: the field table, validated and compiled to an array.
//! - [`message`]: decode in place ([`Message`]), validate content classes.
//! - [`encode`]: build a message into a `BytesMut` ([`Builder`]).
//! - [`fields`]: typed accessors, mandatory fields, DE90.
//! - [`framing`]: 2b/4a length headers, 4096-byte cap.
//! - [`error`]: one error type naming part, field and byte offset.

pub mod encode;
pub mod error;
pub mod fields;
pub mod framing;
pub mod message;
pub mod spec;

pub use encode::Builder;
pub use error::{Error, ErrorKind, Part};
pub use fields::{de, mandatory_fields, response_mti, OriginalData};
pub use framing::{FrameCodec, FrameError, Framing, FRAME_BYTES_MAX};
pub use message::{Fields, Message};
pub use spec::{default_spec, Class, LenKind, Spec};
