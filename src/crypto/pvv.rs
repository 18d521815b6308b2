//! PIN verification values (PVV): what a bank stores instead of a PIN.
//!
//! Why: INTERFACE §6 says the bank keeps no clear PIN and no PIN block, only
//! `HMAC-SHA256(bank PIN verification key, "KKS-PVV-v1" ‖ PAN ‖ PIN)`, compared
//! in constant time. The PAN is in the input so equal PINs on different cards
//! give unrelated values; the domain tag `KKS-PVV-v1` keeps these MACs apart
//! from any other use of the key and leaves room for a v2.
//!
//! PAN and PIN are fed as their ASCII digits. Because a PIN has at most 12
//! digits and the PAN's length is fixed for a given card, the concatenation
//! is unambiguous for a given card.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::keys::PvKey;
use super::pinblock::Pin;
use crate::pan::Pan;

/// Domain-separation prefix of every PVV input (INTERFACE §6).
pub const PVV_DOMAIN: &[u8] = b"KKS-PVV-v1";
/// Length of a PIN verification value in bytes.
pub const PVV_LEN: usize = 32;

/// Computes the PIN verification value for `pan` and `pin` under the card's
/// bank's PIN verification key: HMAC-SHA256(key, `KKS-PVV-v1` ‖ PAN digits ‖
/// PIN digits).
pub fn pin_verification_value(key: &PvKey, pan: &Pan, pin: &Pin) -> [u8; PVV_LEN] {
    let mut out = [0u8; PVV_LEN];
    // HMAC takes keys of any length; a 32-byte key never fails. The
    // fallback (all zeros) is unreachable and keeps this panic-free; it
    // could never match a stored value made by this function.
    if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()) {
        mac.update(PVV_DOMAIN);
        mac.update(pan.digits());
        mac.update(pin.digits());
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// Compares a freshly computed PVV with the stored one in constant time.
pub fn verify_pvv(candidate: &[u8; PVV_LEN], stored: &[u8; PVV_LEN]) -> bool {
    bool::from(candidate.ct_eq(stored))
}

/// Computes the PVV for `pin` and compares it with `stored` in constant time.
pub fn verify_pin(key: &PvKey, pan: &Pan, pin: &Pin, stored: &[u8; PVV_LEN]) -> bool {
    verify_pvv(&pin_verification_value(key, pan, pin), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PV_KEY_HEX: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";

    fn key() -> PvKey {
        PvKey::from_hex(PV_KEY_HEX).expect("key")
    }

    fn pan(s: &str) -> Pan {
        s.parse().expect("pan")
    }

    fn pin(s: &str) -> Pin {
        s.parse().expect("pin")
    }

    #[test]
    fn matches_the_definition() {
        // Recomputed independently from the definition with a plain HMAC.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key().as_bytes()).expect("key");
        mac.update(b"KKS-PVV-v16000020000000120123456");
        let want = mac.finalize().into_bytes();
        let got = pin_verification_value(&key(), &pan("6000020000000120"), &pin("123456"));
        assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn known_answer() {
        // Pinned so a change to the construction is noticed: it would
        // invalidate every stored PVV. Computed with Python's hmac module:
        // hmac.new(bytes(range(32)), b"KKS-PVV-v16000020000000120123456", "sha256")
        let got = pin_verification_value(&key(), &pan("6000020000000120"), &pin("123456"));
        assert_eq!(hex::encode(got), KNOWN_PVV_HEX);
    }

    const KNOWN_PVV_HEX: &str = "5a12081a21335c061f7f7fc06ee9067a6f4d887f9ffa6ab80a6ca768514b45c2";

    #[test]
    fn verify() {
        let k = key();
        let p = pan("6000020000000120");
        let stored = pin_verification_value(&k, &p, &pin("123456"));
        assert!(verify_pvv(
            &pin_verification_value(&k, &p, &pin("123456")),
            &stored
        ));
        assert!(verify_pin(&k, &p, &pin("123456"), &stored));
        assert!(!verify_pin(&k, &p, &pin("123457"), &stored));
        assert!(!verify_pin(&k, &p, &pin("1234560"), &stored));
        assert!(!verify_pin(
            &k,
            &pan("6000020000000138"),
            &pin("123456"),
            &stored
        ));
        let other = PvKey::from_bytes(&[9u8; 32]).expect("key");
        assert!(!verify_pin(&other, &p, &pin("123456"), &stored));
        let mut flipped = stored;
        flipped[31] ^= 1;
        assert!(!verify_pvv(&flipped, &stored));
    }
}
