//! ISO 9564 PIN blocks: format 0 under double-length 3DES (DE52), and a
//! format 3 clear-block decoder.
//!
//! Why: the terminal sends the cardholder's PIN in DE52 as an ISO 9564
//! format 0 block encrypted with its PIN key (INTERFACE §2). The host decrypts
//! it, checks the block's structure and recovers the PIN only long enough to
//! compute the PIN verification value ([`super::pvv`]).
//!
//! Format 0 clear block = PIN field XOR PAN field:
//!
//! ```text
//! PIN field: 0 | N | P1 .. PN | F .. F        (16 nibbles, N = 4..=12)
//! PAN field: 0 0 0 0 | 12 rightmost PAN digits excluding the check digit
//! ```
//!
//! The fill is always `F` (format 0 is never randomly padded). Encryption is
//! 3DES EDE with a double-length key (K1 K2 K1), ECB, one 8-byte block, via
//! the `des` crate's `TdesEde2`.
//!
//! Secrets: [`Pin`] zeroizes itself on drop and prints as `Pin(<redacted>)`;
//! it has no `Display`. Clear blocks are returned in [`Zeroizing`] buffers.
//! [`PinBlockError`] never carries the PIN, the block or the PIN length.
//!
//! Callers must answer every [`PinBlockError`] from [`decode_pin`] exactly
//! as a wrong PIN (response 55, counted as a try): a host that answers a bad
//! block differently from a wrong PIN gives an attacker, who can vary DE2
//! under a fixed DE52, an oracle on the PIN's digits.

use std::fmt;
use std::str::FromStr;

use des::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use des::TdesEde2;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::keys::PinKey;
use crate::pan::Pan;

/// Fewest PIN digits ISO 9564 allows.
pub const PIN_LEN_MIN: usize = 4;
/// Most PIN digits ISO 9564 allows.
pub const PIN_LEN_MAX: usize = 12;
/// Size of a PIN block in bytes (DE52 is `b8`).
pub const PIN_BLOCK_LEN: usize = 8;

/// Why a PIN or a PIN block was rejected. Deliberately carries no PIN, block
/// or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinBlockError {
    /// The PIN is not 4..=12 digits long.
    #[error("PIN length out of range")]
    PinLength,
    /// A PIN digit is not 0-9.
    #[error("PIN contains a non-digit")]
    NonDigit,
    /// The block's control nibble is not the expected format.
    #[error("PIN block has the wrong format")]
    Format,
    /// The fill after the PIN digits is wrong (not all `F` in format 0, not
    /// `A`-`F` in format 3).
    #[error("PIN block fill is invalid")]
    Fill,
}

/// A cardholder PIN: 4..=12 decimal digits. Zeroized on drop; `Debug` prints
/// `Pin(<redacted>)`; no `Display`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pin {
    digits: [u8; PIN_LEN_MAX],
    len: usize,
}

impl Pin {
    /// Builds a PIN from ASCII digits (`b"123456"`).
    pub fn new(ascii_digits: &[u8]) -> Result<Pin, PinBlockError> {
        if !(PIN_LEN_MIN..=PIN_LEN_MAX).contains(&ascii_digits.len()) {
            return Err(PinBlockError::PinLength);
        }
        if !ascii_digits.iter().all(u8::is_ascii_digit) {
            return Err(PinBlockError::NonDigit);
        }
        let mut pin = Pin {
            digits: [0u8; PIN_LEN_MAX],
            len: ascii_digits.len(),
        };
        pin.digits[..ascii_digits.len()].copy_from_slice(ascii_digits);
        Ok(pin)
    }

    /// The PIN's ASCII digits. Secret: never log them.
    pub fn digits(&self) -> &[u8] {
        &self.digits[..self.len]
    }

    /// Number of digits (4..=12).
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.len
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

impl FromStr for Pin {
    type Err = PinBlockError;

    /// Parses a PIN from its digits, as [`Pin::new`].
    fn from_str(s: &str) -> Result<Pin, PinBlockError> {
        Pin::new(s.as_bytes())
    }
}

/// The 16 nibbles of an 8-byte block, high nibble first.
fn nibbles(block: &[u8; 8]) -> Zeroizing<[u8; 16]> {
    let mut n = Zeroizing::new([0u8; 16]);
    for (i, b) in block.iter().enumerate() {
        n[2 * i] = b >> 4;
        n[2 * i + 1] = b & 0x0F;
    }
    n
}

/// Packs 16 nibbles into 8 bytes.
fn pack(n: &[u8; 16]) -> Zeroizing<[u8; 8]> {
    let mut out = Zeroizing::new([0u8; 8]);
    for (i, o) in out.iter_mut().enumerate() {
        *o = (n[2 * i] << 4) | (n[2 * i + 1] & 0x0F);
    }
    out
}

/// The ISO 9564 PAN field from ASCII PAN digits: `0000` + the 12 rightmost
/// digits excluding the check digit, zero-padded on the left when shorter.
fn pan_field_digits(pan_digits: &[u8]) -> [u8; 8] {
    let without_check = pan_digits.split_last().map(|(_, rest)| rest).unwrap_or(&[]);
    let take = without_check.len().min(12);
    let tail = &without_check[without_check.len() - take..];
    let mut n = [0u8; 16];
    for (slot, d) in n[16 - take..].iter_mut().zip(tail) {
        *slot = d.wrapping_sub(b'0') & 0x0F;
    }
    *pack(&n)
}

/// The ISO 9564 PAN field for `pan` (formats 0 and 3).
pub fn pan_field(pan: &Pan) -> [u8; 8] {
    pan_field_digits(pan.digits())
}

fn clear_block_format0_digits(pin: &Pin, pan_digits: &[u8]) -> Zeroizing<[u8; 8]> {
    let mut n = Zeroizing::new([0x0Fu8; 16]);
    n[0] = 0x0;
    // len <= 12, fits in a nibble.
    n[1] = (pin.len() as u8) & 0x0F;
    for (slot, d) in n[2..].iter_mut().zip(pin.digits()) {
        *slot = d.wrapping_sub(b'0') & 0x0F;
    }
    let mut block = pack(&n);
    for (b, p) in block.iter_mut().zip(pan_field_digits(pan_digits)) {
        *b ^= p;
    }
    block
}

/// The clear ISO 9564 format 0 block for `pin` and `pan`. Secret.
pub fn clear_block_format0(pin: &Pin, pan: &Pan) -> Zeroizing<[u8; 8]> {
    clear_block_format0_digits(pin, pan.digits())
}

/// 3DES-EDE2 (K1 K2 K1) ECB encryption of one block under a PIN key.
pub fn encrypt_block(key: &PinKey, clear: &[u8; 8]) -> [u8; 8] {
    let cipher = TdesEde2::new(key.as_bytes().into());
    let mut block = des::cipher::Block::<TdesEde2>::from(*clear);
    cipher.encrypt_block(&mut block);
    let mut out = [0u8; 8];
    out.copy_from_slice(&block);
    block.as_mut_slice().zeroize();
    out
}

/// 3DES-EDE2 (K1 K2 K1) ECB decryption of one block under a PIN key. The
/// result is a clear PIN block: secret.
pub fn decrypt_block(key: &PinKey, encrypted: &[u8; 8]) -> Zeroizing<[u8; 8]> {
    let cipher = TdesEde2::new(key.as_bytes().into());
    let mut block = des::cipher::Block::<TdesEde2>::from(*encrypted);
    cipher.decrypt_block(&mut block);
    let mut out = Zeroizing::new([0u8; 8]);
    out.copy_from_slice(&block);
    block.as_mut_slice().zeroize();
    out
}

/// Builds and encrypts the format 0 PIN block for DE52, as a terminal does
/// (used by terminal emulators and tests).
pub fn encrypt_pin_block(pin: &Pin, pan: &Pan, key: &PinKey) -> [u8; 8] {
    encrypt_block(key, &clear_block_format0(pin, pan))
}

/// Recovers the PIN from a clear block whose control nibble must be
/// `control`, with fill nibbles accepted by `fill_ok`.
fn decode_clear(
    clear: &[u8; 8],
    pan_digits: &[u8],
    control: u8,
    fill_ok: fn(u8) -> bool,
) -> Result<Pin, PinBlockError> {
    let mut pin_field = Zeroizing::new(*clear);
    for (b, p) in pin_field.iter_mut().zip(pan_field_digits(pan_digits)) {
        *b ^= p;
    }
    let n = nibbles(&pin_field);
    if n[0] != control {
        return Err(PinBlockError::Format);
    }
    let len = usize::from(n[1]);
    if !(PIN_LEN_MIN..=PIN_LEN_MAX).contains(&len) {
        return Err(PinBlockError::PinLength);
    }
    let mut ascii = Zeroizing::new([0u8; PIN_LEN_MAX]);
    for (a, &d) in ascii.iter_mut().zip(&n[2..2 + len]) {
        if d > 9 {
            return Err(PinBlockError::NonDigit);
        }
        *a = b'0' + d;
    }
    if !n[2 + len..].iter().all(|&f| fill_ok(f)) {
        return Err(PinBlockError::Fill);
    }
    Pin::new(&ascii[..len])
}

fn decode_clear_format0_digits(clear: &[u8; 8], pan_digits: &[u8]) -> Result<Pin, PinBlockError> {
    decode_clear(clear, pan_digits, 0x0, |f| f == 0x0F)
}

fn decode_clear_format3_digits(clear: &[u8; 8], pan_digits: &[u8]) -> Result<Pin, PinBlockError> {
    decode_clear(clear, pan_digits, 0x3, |f| (0x0A..=0x0F).contains(&f))
}

/// Recovers the PIN from a clear ISO 9564 format 0 block, checking control
/// nibble 0, length 4..=12, decimal digits and an all-`F` fill.
pub fn decode_clear_format0(clear: &[u8; 8], pan: &Pan) -> Result<Pin, PinBlockError> {
    decode_clear_format0_digits(clear, pan.digits())
}

/// Recovers the PIN from a clear ISO 9564 format 3 block (control nibble 3,
/// fill nibbles `A`-`F`). Not used on the wire; here for completeness.
pub fn decode_clear_format3(clear: &[u8; 8], pan: &Pan) -> Result<Pin, PinBlockError> {
    decode_clear_format3_digits(clear, pan.digits())
}

/// Decrypts a DE52 format 0 PIN block under the terminal's PIN key and
/// recovers the PIN. Every error must be treated as a wrong PIN (see the
/// module header).
pub fn decode_pin(encrypted: [u8; 8], pan: &Pan, key: &PinKey) -> Result<Pin, PinBlockError> {
    let clear = decrypt_block(key, &encrypted);
    decode_clear_format0(&clear, pan)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_PAN: &str = "6000020000000120";
    const GOLDEN_KEY: &str = "042666B49184CF5C68DE9628D0397B36";

    fn pin(s: &str) -> Pin {
        s.parse().expect("valid PIN")
    }

    fn pan(s: &str) -> Pan {
        s.parse().expect("valid PAN")
    }

    fn key() -> PinKey {
        PinKey::from_hex(GOLDEN_KEY).expect("valid key")
    }

    fn h8(s: &str) -> [u8; 8] {
        hex::decode(s).expect("hex").try_into().expect("8 bytes")
    }

    #[test]
    fn format0_clear_block_vectors() {
        // (PIN, PAN, clear block) from /work/shared/vectors/crypto.md.
        let vectors = [
            ("1234", "5555555551234567", "041261AAAAEDCBA9"),
            ("123456789012", "5555555551234567", "0C1261032D8226A9"),
            ("1234", "43219876543210987", "0412AC89ABCDEF67"),
            ("1234", "4012345678909", "041274EDCBA9876F"),
        ];
        for (p, pan_digits, clear_hex) in vectors {
            let block = clear_block_format0_digits(&pin(p), pan_digits.as_bytes());
            assert_eq!(hex::encode_upper(*block), clear_hex, "{p} / {pan_digits}");
            let back = decode_clear_format0_digits(&h8(clear_hex), pan_digits.as_bytes())
                .expect("decodes");
            assert_eq!(back.digits(), p.as_bytes());
        }
        // The one Luhn-valid vector PAN through the public API too.
        let block = clear_block_format0(&pin("1234"), &pan("4012345678909"));
        assert_eq!(hex::encode_upper(*block), "041274EDCBA9876F");
    }

    #[test]
    fn format0_3des_vector() {
        // jPOS DUKPTTest: key 042666B4..., clear 041274EDCBA9876F.
        let enc = encrypt_block(&key(), &h8("041274EDCBA9876F"));
        assert_eq!(hex::encode_upper(enc), "1B9C1845EB993A7A");
        let dec = decrypt_block(&key(), &enc);
        assert_eq!(hex::encode_upper(*dec), "041274EDCBA9876F");
        let p = decode_pin(enc, &pan("4012345678909"), &key()).expect("decodes");
        assert_eq!(p.digits(), b"1234");
        assert_eq!(
            encrypt_pin_block(&pin("1234"), &pan("4012345678909"), &key()),
            enc
        );
    }

    #[test]
    fn golden_message_pin_block() {
        // messages.md: PIN 123456, PAN 6000020000000120, terminal PIN key.
        let enc = encrypt_pin_block(&pin("123456"), &pan(GOLDEN_PAN), &key());
        assert_eq!(hex::encode_upper(enc), "43999FB45EBF1A5D");
        let p = decode_pin(h8("43999FB45EBF1A5D"), &pan(GOLDEN_PAN), &key()).expect("decodes");
        assert_eq!(p.digits(), b"123456");
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn format3_vector() {
        let p = decode_clear_format3_digits(&h8("341261AAAAEDCBA9"), b"5555555551234567")
            .expect("decodes");
        assert_eq!(p.digits(), b"1234");
        // A format 3 block is not a format 0 block, and vice versa.
        assert_eq!(
            decode_clear_format0_digits(&h8("341261AAAAEDCBA9"), b"5555555551234567").unwrap_err(),
            PinBlockError::Format
        );
        assert_eq!(
            decode_clear_format3_digits(&h8("041261AAAAEDCBA9"), b"5555555551234567").unwrap_err(),
            PinBlockError::Format
        );
    }

    #[test]
    fn pan_field_rules() {
        assert_eq!(
            hex::encode_upper(pan_field(&pan(GOLDEN_PAN))),
            "0000002000000012"
        );
        // 12-digit PAN: 11 digits without the check digit, zero-padded.
        assert_eq!(
            hex::encode_upper(pan_field_digits(b"123456789012")),
            "0000012345678901"
        );
        assert_eq!(
            hex::encode_upper(pan_field_digits(b"6000020000000120123")),
            "0000000000012012"
        );
        assert_eq!(hex::encode_upper(pan_field_digits(b"")), "0000000000000000");
    }

    #[test]
    fn round_trip_every_length() {
        let mut digits = String::from("600009000000123");
        digits.push(crate::pan::luhn_check_digit(digits.as_bytes()) as char);
        let p = pan(&digits);
        for len in PIN_LEN_MIN..=PIN_LEN_MAX {
            let digits: String = "908172635445".chars().take(len).collect();
            let enc = encrypt_pin_block(&pin(&digits), &p, &key());
            let back = decode_pin(enc, &p, &key()).expect("round trip");
            assert_eq!(back.digits(), digits.as_bytes());
        }
    }

    #[test]
    fn decode_rejects_malformed_blocks() {
        let p = pan(GOLDEN_PAN);
        let pf = pan_field(&p);
        let enc_pin_field = |field: &str| {
            let mut b = h8(field);
            for (x, y) in b.iter_mut().zip(pf) {
                *x ^= y;
            }
            encrypt_block(&key(), &b)
        };
        let cases = [
            ("16123456FFFFFFFF", PinBlockError::Format),
            ("F6123456FFFFFFFF", PinBlockError::Format),
            ("03123FFFFFFFFFFF", PinBlockError::PinLength),
            ("0D1234567890123F", PinBlockError::PinLength),
            ("0012FFFFFFFFFFFF", PinBlockError::PinLength),
            ("06123A56FFFFFFFF", PinBlockError::NonDigit),
            ("06123456FFFFFFFE", PinBlockError::Fill),
            ("061234560FFFFFFF", PinBlockError::Fill),
            ("06123456AAAAAAAA", PinBlockError::Fill),
        ];
        for (field, want) in cases {
            assert_eq!(
                decode_pin(enc_pin_field(field), &p, &key()).unwrap_err(),
                want,
                "{field}"
            );
        }
        assert!(decode_pin(enc_pin_field("06123456FFFFFFFF"), &p, &key()).is_ok());
        // Wrong key or wrong PAN: an error, or at worst a different PIN,
        // never the right one.
        let enc = h8("43999FB45EBF1A5D");
        let other_key = PinKey::from_hex("0123456789ABCDEFFEDCBA9876543210").expect("key");
        if let Ok(x) = decode_pin(enc, &p, &other_key) {
            assert_ne!(x.digits(), b"123456");
        }
        let other_pan = pan("6000020000000138");
        if let Ok(x) = decode_pin(enc, &other_pan, &key()) {
            assert_ne!(x.digits(), b"123456");
        }
        // Every single-bit flip of the ciphertext fails or gives another PIN.
        for i in 0..64 {
            let mut t = enc;
            t[i / 8] ^= 0x80 >> (i % 8);
            if let Ok(x) = decode_pin(t, &p, &key()) {
                assert_ne!(x.digits(), b"123456");
            }
        }
    }

    #[test]
    fn pin_validation() {
        assert_eq!(Pin::new(b"123").unwrap_err(), PinBlockError::PinLength);
        assert_eq!(
            Pin::new(b"1234567890123").unwrap_err(),
            PinBlockError::PinLength
        );
        assert_eq!(Pin::new(b"12a4").unwrap_err(), PinBlockError::NonDigit);
        assert_eq!(Pin::new(b"").unwrap_err(), PinBlockError::PinLength);
        assert!(Pin::new(b"0000").is_ok());
        assert!(Pin::new(b"123456789012").is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let p = pin("123456");
        assert_eq!(format!("{p:?}"), "Pin(<redacted>)");
        assert!(!format!("{p:#?}").contains("123456"));
        let e = Pin::new(b"12a456").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("12a456"));
        let e = decode_pin([0u8; 8], &pan(GOLDEN_PAN), &key()).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("123456"));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(block in proptest::array::uniform8(proptest::num::u8::ANY)) {
            let p = pan(GOLDEN_PAN);
            let _ = decode_pin(block, &p, &key());
            let _ = decode_clear_format0(&block, &p);
            let _ = decode_clear_format3(&block, &p);
        }

        #[test]
        fn round_trip_any_pin(digits in "[0-9]{4,12}") {
            let p = pan(GOLDEN_PAN);
            let enc = encrypt_pin_block(&pin(&digits), &p, &key());
            let back = decode_pin(enc, &p, &key());
            proptest::prop_assert!(back.is_ok());
            if let Ok(back) = back {
                proptest::prop_assert_eq!(back.digits(), digits.as_bytes());
            }
        }
    }
}
