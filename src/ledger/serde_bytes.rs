//! Serde for short byte strings (request keys, merchant ids).
//!
//! Why by hand: serde's derive only covers arrays up to 32 elements, and these
//! values are ASCII almost always. They serialize as a string when they are
//! UTF-8 (readable in JSON checkpoints) and as bytes otherwise; either form,
//! or a sequence of numbers, deserializes.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// Serializes `bytes` as a string if they are UTF-8, else as bytes.
/// Binary formats (postcard, used by the journal and checkpoints) always
/// get bytes: they are not self-describing.
pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if !s.is_human_readable() {
        return s.serialize_bytes(bytes);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.serialize_bytes(bytes),
    }
}

/// Accepts a string, bytes or a sequence of `u8` from self-describing
/// formats; bytes from binary ones.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    if d.is_human_readable() {
        d.deserialize_any(BytesVisitor)
    } else {
        d.deserialize_bytes(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            // Keys are at most 47 bytes; refuse to buffer a hostile sequence.
            if out.len() > 64 {
                return Err(de::Error::invalid_length(out.len(), &self));
            }
            out.push(b);
        }
        Ok(out)
    }
}
