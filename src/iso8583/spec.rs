//! The field table: data in `specs/fields.toml`, built into the binary,
//! validated once and compiled into a 129-slot array so that a lookup during
//! decode is one index operation.
//!
//! The table mirrors pyiso8583's `default` spec field for field (lengths,
//! length prefixes, binary fields) and adds the ISO 8583:1987 content class
//! of each field, which the codec checks in [`crate::iso8583::Message::validate`].

use serde::Deserialize;
use std::fmt;
use std::sync::OnceLock;

/// The built-in field table, as shipped in `specs/fields.toml`.
pub const DEFAULT_FIELDS_TOML: &str = include_str!("../../specs/fields.toml");

/// How a field's length is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LenKind {
    /// Exactly `max` characters (bytes for class b).
    Fixed,
    /// Two ASCII digits of length, then that many characters (≤ 99).
    Llvar,
    /// Three ASCII digits of length, then that many characters (≤ 999).
    Lllvar,
}

impl LenKind {
    /// Number of length-prefix digits.
    pub const fn prefix_len(self) -> usize {
        match self {
            LenKind::Fixed => 0,
            LenKind::Llvar => 2,
            LenKind::Lllvar => 3,
        }
    }
}

/// ISO 8583 content class of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Digits.
    N = 0,
    /// Letters, digits, space.
    An = 1,
    /// Printable ASCII.
    Ans = 2,
    /// Track-2 characters: digits, `=`, `D`.
    Z = 3,
    /// `C`/`D` sign followed by digits.
    Xn = 4,
    /// Raw bytes.
    B = 5,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::N => "n",
            Class::An => "an",
            Class::Ans => "ans",
            Class::Z => "z",
            Class::Xn => "xn",
            Class::B => "b",
        })
    }
}

impl Class {
    /// Index of the first byte of `value` that is not allowed in this class.
    #[inline]
    pub fn first_invalid(self, value: &[u8]) -> Option<usize> {
        match self {
            Class::B => None,
            Class::Xn => match value.first() {
                None => None,
                Some(b'C' | b'D') => value[1..]
                    .iter()
                    .position(|&b| !ALLOWED[Class::N as usize][b as usize])
                    .map(|i| i + 1),
                Some(_) => Some(0),
            },
            Class::N => {
                // Eight bytes at a time: a byte is a digit iff its high
                // nibble is 3 and adding 6 keeps it so (0x30..=0x39).
                const HI: u64 = 0xF0F0_F0F0_F0F0_F0F0;
                const THREES: u64 = 0x3030_3030_3030_3030;
                const SIXES: u64 = 0x0606_0606_0606_0606;
                let mut chunks = value.chunks_exact(8);
                let mut base = 0;
                for c in chunks.by_ref() {
                    let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    if v & HI != THREES || (v.wrapping_add(SIXES)) & HI != THREES {
                        return c.iter().position(|b| !b.is_ascii_digit()).map(|i| base + i);
                    }
                    base += 8;
                }
                chunks
                    .remainder()
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map(|i| base + i)
            }
            Class::Ans => {
                // Eight bytes at a time: any byte below 0x20 or above 0x7E
                // (the classic "has less" / "has more" word tricks).
                const ONES: u64 = 0x0101_0101_0101_0101;
                const HIGH: u64 = 0x8080_8080_8080_8080;
                let mut chunks = value.chunks_exact(8);
                let mut base = 0;
                for c in chunks.by_ref() {
                    let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    let below = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
                    let above = (v.wrapping_add(ONES) | v) & HIGH;
                    if below | above != 0 {
                        return c
                            .iter()
                            .position(|b| !(0x20..=0x7E).contains(b))
                            .map(|i| base + i);
                    }
                    base += 8;
                }
                chunks
                    .remainder()
                    .iter()
                    .position(|b| !(0x20..=0x7E).contains(b))
                    .map(|i| base + i)
            }
            c => {
                let table = &ALLOWED[c as usize];
                value.iter().position(|&b| !table[b as usize])
            }
        }
    }
}

/// Per-class byte tables (indexed by `Class as usize`), built at compile
/// time, so a content check is one load per byte.
static ALLOWED: [[bool; 256]; 6] = build_tables();

const fn build_tables() -> [[bool; 256]; 6] {
    let mut t = [[false; 256]; 6];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let digit = c.is_ascii_digit();
        t[Class::N as usize][b] = digit;
        t[Class::An as usize][b] = c.is_ascii_alphanumeric() || c == b' ';
        t[Class::Ans as usize][b] = c >= 0x20 && c <= 0x7E;
        t[Class::Z as usize][b] = digit || c == b'=' || c == b'D';
        t[Class::Xn as usize][b] = digit;
        t[Class::B as usize][b] = true;
        b += 1;
    }
    t
}

/// One field definition as compiled for lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    pub len: LenKind,
    /// Fixed length, or maximum variable length.
    pub max: u16,
    pub class: Class,
    /// False for slot 0 and any field the table does not define.
    pub defined: bool,
}

const UNDEFINED: FieldDef = FieldDef {
    len: LenKind::Fixed,
    max: 0,
    class: Class::B,
    defined: false,
};

/// A compiled field table: slot `n` is DE`n` (slot 0 unused).
pub struct Spec {
    fields: [FieldDef; 129],
    names: Vec<String>,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.fields.iter().filter(|d| d.defined).count();
        write!(f, "Spec({n} fields)")
    }
}

/// Why a field table was refused; names the field (and TOML line where known).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("field table is not valid TOML: {0}")]
    Toml(String),
    #[error("DE{de}: {reason}")]
    Field { de: u16, reason: String },
    #[error("DE{de} is not defined; the table must cover DE1..DE128")]
    MissingField { de: u16 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    field: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    de: u16,
    name: String,
    class: Class,
    len: LenKind,
    max: u16,
}

impl Spec {
    /// Parse and validate a field table. Every DE from 1 to 128 must be
    /// defined once; binary fields are fixed-length; LLVAR ≤ 99, LLLVAR ≤ 999;
    /// DE1, DE65 are fixed 8-byte binary (bitmaps); DE64/DE128 are b8 (MAC).
    pub fn from_toml(text: &str) -> Result<Spec, SpecError> {
        let raw: RawTable = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        let mut fields = [UNDEFINED; 129];
        let mut names = vec![String::new(); 129];
        for f in raw.field {
            let de = f.de;
            let bad = |reason: &str| SpecError::Field {
                de,
                reason: reason.to_string(),
            };
            if !(1..=128).contains(&de) {
                return Err(bad("field number outside 1..=128"));
            }
            let slot = &mut fields[de as usize];
            if slot.defined {
                return Err(bad("defined twice"));
            }
            if f.max == 0 {
                return Err(bad("max must be at least 1"));
            }
            match f.len {
                LenKind::Llvar if f.max > 99 => return Err(bad("llvar max above 99")),
                LenKind::Lllvar if f.max > 999 => return Err(bad("lllvar max above 999")),
                _ => {}
            }
            if matches!(de, 1 | 64 | 65 | 128)
                && (f.class != Class::B || f.len != LenKind::Fixed || f.max != 8)
            {
                return Err(bad("bitmap and MAC fields must be class b, fixed, max 8"));
            }
            *slot = FieldDef {
                len: f.len,
                max: f.max,
                class: f.class,
                defined: true,
            };
            names[de as usize] = f.name;
        }
        if let Some(de) = (1..=128u16).find(|&d| !fields[d as usize].defined) {
            return Err(SpecError::MissingField { de });
        }
        Ok(Spec { fields, names })
    }

    /// The definition of DE`n` (an undefined slot for 0 or n > 128).
    #[inline(always)]
    pub fn field(&self, n: u8) -> &FieldDef {
        self.fields.get(n as usize).unwrap_or(&UNDEFINED)
    }

    /// The descriptive name of DE`n`.
    pub fn name(&self, n: u8) -> &str {
        self.names.get(n as usize).map(String::as_str).unwrap_or("")
    }
}

/// The built-in table, compiled on first use. The built-in text is covered
/// by tests, so a failure here is a build defect, reported with its reason.
pub fn default_spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| match Spec::from_toml(DEFAULT_FIELDS_TOML) {
        Ok(s) => s,
        Err(e) => panic!("built-in specs/fields.toml is invalid: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_covers_all_128_fields() {
        let s = default_spec();
        for de in 1..=128u8 {
            assert!(s.field(de).defined, "DE{de}");
        }
        assert_eq!(s.field(2).len, LenKind::Llvar);
        assert_eq!(s.field(2).max, 19);
        assert_eq!(s.field(48).len, LenKind::Lllvar);
        assert_eq!(s.field(52).class, Class::B);
        assert_eq!(s.field(90).max, 42);
        assert!(!s.field(0).defined);
        assert!(!s.field(200).defined);
    }

    #[test]
    fn bad_tables_name_the_field() {
        let one = |body: &str| format!("[[field]]\n{body}\n");
        let e = Spec::from_toml(&one(
            "de = 2\nname = \"x\"\nclass = \"n\"\nlen = \"llvar\"\nmax = 120",
        ))
        .unwrap_err();
        assert_eq!(
            e,
            SpecError::Field {
                de: 2,
                reason: "llvar max above 99".into()
            }
        );
        let e = Spec::from_toml(&one(
            "de = 2\nname = \"x\"\nclass = \"n\"\nlen = \"llvar\"\nmax = 19",
        ))
        .unwrap_err();
        assert_eq!(e, SpecError::MissingField { de: 1 });
        let e = Spec::from_toml(&one(
            "de = 1\nname = \"x\"\nclass = \"n\"\nlen = \"fixed\"\nmax = 8",
        ))
        .unwrap_err();
        assert!(matches!(e, SpecError::Field { de: 1, .. }));
        let e = Spec::from_toml(
            "[[field]]\nde = 3\nname = \"x\"\nclass = \"q\"\nlen = \"fixed\"\nmax = 6\n",
        )
        .unwrap_err();
        assert!(
            matches!(e, SpecError::Toml(ref m) if m.contains("line")),
            "{e}"
        );
    }

    #[test]
    fn word_at_a_time_checks_agree_with_the_tables() {
        for class in [Class::N, Class::Ans] {
            for b in 0..=255u8 {
                for pos in 0..11 {
                    let mut v = vec![if class == Class::N { b'5' } else { b'A' }; 11];
                    v[pos] = b;
                    let expect = v.iter().position(|&x| !ALLOWED[class as usize][x as usize]);
                    assert_eq!(
                        class.first_invalid(&v),
                        expect,
                        "{class} byte {b:#x} at {pos}"
                    );
                }
            }
        }
    }

    #[test]
    fn classes() {
        assert_eq!(Class::N.first_invalid(b"0123"), None);
        assert_eq!(Class::N.first_invalid(b"01A3"), Some(2));
        assert_eq!(Class::An.first_invalid(b"AB 12"), None);
        assert_eq!(Class::An.first_invalid(b"AB-12"), Some(2));
        assert_eq!(Class::Ans.first_invalid(b"A-~ "), None);
        assert_eq!(Class::Ans.first_invalid(&[b'A', 0xC3]), Some(1));
        assert_eq!(Class::Z.first_invalid(b"6000=2512"), None);
        assert_eq!(Class::Xn.first_invalid(b"C0001"), None);
        assert_eq!(Class::Xn.first_invalid(b"X0001"), Some(0));
        assert_eq!(Class::B.first_invalid(&[0, 255]), None);
    }
}
