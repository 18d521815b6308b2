//! Key newtypes and key wrapping under the master key.
//!
//! Why: INTERFACE §6 says keys never appear in logs or `Debug` output and are
//! stored only wrapped under a master key that is not in the database. So
//! every key is a newtype that
//!
//! - zeroizes its bytes on drop (`Zeroize + ZeroizeOnDrop`),
//! - prints as `PinKey(<redacted>)` under `Debug`, and has no `Display` and no
//!   `Serialize`, so it cannot reach a log line or a JSON body by accident,
//! - parses from hex with errors that never echo the input.
//!
//! The clear bytes are reachable only through the explicit `as_bytes()` /
//! `to_hex()` (for `seed`, which writes test keys to `terminals.csv`, and for
//! [`MasterKey::wrap`]).
//!
//! # Key wrapping construction (`KKS-KEYWRAP-v1`)
//!
//! A deterministic authenticated encryption in the SIV style (RFC 5297's
//! idea, built from AES-256 and HMAC-SHA256 because no RFC 3394/5649 crate
//! on the aes 0.9 generation is in the dependency set, and RFC 3394 has no
//! associated data to bind a label):
//!
//! ```text
//! K_mac = HMAC-SHA256(MK, "KKS-KEYWRAP-v1 mac")
//! K_enc = HMAC-SHA256(MK, "KKS-KEYWRAP-v1 enc")
//! T     = HMAC-SHA256(K_mac, "KKS-KEYWRAP-v1" || be32(len L) || L || be32(len P) || P)
//! C     = P XOR AES-256-CTR(K_enc, initial counter block = T[0..16])
//! blob  = 0x01 || T (32 bytes) || C
//! ```
//!
//! `MK` is the 32-byte master key, `L` the label (UTF-8), `P` the key being
//! wrapped. The counter block is a 128-bit big-endian integer incremented per
//! 16-byte block. Unwrapping decrypts `C` with the IV taken from the blob,
//! recomputes `T` over the label and the recovered plaintext and compares it
//! in constant time with the stored `T`; any difference (wrong master key,
//! wrong label, a flipped bit anywhere, truncation) is [`KeyError::Unwrap`]
//! and the recovered bytes are zeroized, never returned.
//!
//! Properties: the synthetic IV is derived from label and plaintext, so no
//! randomness is needed and a nonce can never be reused with different
//! plaintext; the cost is determinism (the same key wrapped twice under the
//! same label gives the same blob, which reveals only that equality). The
//! label binds a wrapped key to its purpose and owner, e.g.
//! `terminal-pin:EW000001` (see [`label_terminal_pin`] and friends), so a
//! blob copied to another row or another purpose fails to unwrap.

use std::fmt;

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes256;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

type HmacSha256 = Hmac<Sha256>;

/// Length of a double-length 3DES PIN key (K1 ‖ K2, used as K1 K2 K1).
pub const PIN_KEY_LEN: usize = 16;
/// Shortest accepted HMAC-SHA256 MAC key.
pub const MAC_KEY_LEN_MIN: usize = 16;
/// Longest accepted HMAC-SHA256 MAC key (one SHA-256 block; longer keys would
/// be hashed down by HMAC anyway).
pub const MAC_KEY_LEN_MAX: usize = 64;
/// Length of a bank PIN verification key.
pub const PV_KEY_LEN: usize = 32;
/// Length of the master key (AES-256 / HMAC-SHA256).
pub const MASTER_KEY_LEN: usize = 32;

/// The fixed string whose SHA-256 is the documented TEST master key
/// ([`MasterKey::test_default`]). Public on purpose: it protects nothing.
pub const TEST_MASTER_KEY_SEED: &str = "kks-switch test master key v1 — not for production";

/// Version byte that starts every wrapped-key blob.
pub const WRAP_VERSION: u8 = 0x01;
/// Length of the tag (synthetic IV) in a wrapped-key blob.
pub const WRAP_TAG_LEN: usize = 32;
/// Bytes a wrapped blob adds to the key it wraps (version + tag).
pub const WRAP_OVERHEAD: usize = 1 + WRAP_TAG_LEN;

const WRAP_DOMAIN: &[u8] = b"KKS-KEYWRAP-v1";
const WRAP_MAC_SUBKEY: &[u8] = b"KKS-KEYWRAP-v1 mac";
const WRAP_ENC_SUBKEY: &[u8] = b"KKS-KEYWRAP-v1 enc";

/// Why a key could not be parsed or unwrapped. Never carries key material or
/// the text that was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not hexadecimal (the offending text is deliberately not
    /// included).
    #[error("key is not valid hex")]
    InvalidHex,
    /// The key has the wrong number of bytes.
    #[error("key has {got} bytes, expected {expected}")]
    InvalidLength {
        /// What this key type needs, e.g. `"16"` or `"16..=64"`.
        expected: &'static str,
        /// How many bytes were given.
        got: usize,
    },
    /// The wrapped blob is too short or has an unknown version byte.
    #[error("wrapped key blob is malformed")]
    MalformedWrapped,
    /// Authentication failed: wrong master key, wrong label, or the blob was
    /// altered. Nothing about the contents is revealed.
    #[error("wrapped key failed authentication (wrong master key, wrong label, or tampered)")]
    Unwrap,
}

/// Decodes hex (surrounding whitespace ignored, either case) into `out`,
/// which must already have the exact length wanted.
fn decode_hex_exact(
    hex_text: &str,
    out: &mut [u8],
    expected: &'static str,
) -> Result<(), KeyError> {
    let t = hex_text.trim();
    if t.len() % 2 == 1 {
        // An odd number of characters is not hex; the length in bytes is
        // not meaningful, so report it as a hex error.
        return Err(KeyError::InvalidHex);
    }
    if t.len() / 2 != out.len() {
        return Err(KeyError::InvalidLength {
            expected,
            got: t.len() / 2,
        });
    }
    hex::decode_to_slice(t, out).map_err(|_| {
        out.zeroize();
        KeyError::InvalidHex
    })
}

macro_rules! fixed_key {
    ($(#[$doc:meta])* $name:ident, $len:expr, $len_text:literal) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of this key in bytes.
            pub const LEN: usize = $len;

            /// Builds the key from raw bytes (exactly [`Self::LEN`]).
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| KeyError::InvalidLength {
                    expected: $len_text,
                    got: bytes.len(),
                })?;
                Ok(Self(arr))
            }

            /// Parses the key from hex (either case, surrounding whitespace
            /// ignored). Errors never include the text.
            pub fn from_hex(hex_text: &str) -> Result<Self, KeyError> {
                let mut key = Self([0u8; $len]);
                decode_hex_exact(hex_text, &mut key.0, $len_text)?;
                Ok(key)
            }

            /// The clear key bytes. Secret: never log them.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// The clear key as uppercase hex, zeroized when dropped. Secret:
            /// for writing test keys (`seed`), never for logs.
            pub fn to_hex(&self) -> Zeroizing<String> {
                Zeroizing::new(hex::encode_upper(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

fixed_key!(
    /// A terminal's PIN encryption key: double-length 3DES (K1 ‖ K2, applied
    /// as EDE with K1 K2 K1), under which DE52 PIN blocks arrive.
    PinKey,
    PIN_KEY_LEN,
    "16"
);

fixed_key!(
    /// A bank's PIN verification key: the HMAC-SHA256 key of the PIN
    /// verification value (INTERFACE §6).
    PvKey,
    PV_KEY_LEN,
    "32"
);

fixed_key!(
    /// The master key that wraps every stored key. Comes from the config or
    /// `KKS_MASTER_KEY`, never from the database; [`MasterKey::test_default`]
    /// is the documented test key.
    MasterKey,
    MASTER_KEY_LEN,
    "32"
);

/// A terminal's MAC key: an HMAC-SHA256 key of 16..=64 bytes (INTERFACE §6).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKey {
    bytes: [u8; MAC_KEY_LEN_MAX],
    len: usize,
}

impl MacKey {
    const LEN_TEXT: &'static str = "16..=64";

    /// Builds the key from raw bytes (16..=64 of them).
    pub fn from_bytes(bytes: &[u8]) -> Result<MacKey, KeyError> {
        if !(MAC_KEY_LEN_MIN..=MAC_KEY_LEN_MAX).contains(&bytes.len()) {
            return Err(KeyError::InvalidLength {
                expected: Self::LEN_TEXT,
                got: bytes.len(),
            });
        }
        let mut key = MacKey {
            bytes: [0u8; MAC_KEY_LEN_MAX],
            len: bytes.len(),
        };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(key)
    }

    /// Parses the key from hex (either case, surrounding whitespace ignored).
    /// Errors never include the text.
    pub fn from_hex(hex_text: &str) -> Result<MacKey, KeyError> {
        let t = hex_text.trim();
        if t.len() % 2 == 1 {
            return Err(KeyError::InvalidHex);
        }
        let len = t.len() / 2;
        if !(MAC_KEY_LEN_MIN..=MAC_KEY_LEN_MAX).contains(&len) {
            return Err(KeyError::InvalidLength {
                expected: Self::LEN_TEXT,
                got: len,
            });
        }
        let mut key = MacKey {
            bytes: [0u8; MAC_KEY_LEN_MAX],
            len,
        };
        decode_hex_exact(t, &mut key.bytes[..len], Self::LEN_TEXT)?;
        Ok(key)
    }

    /// The clear key bytes. Secret: never log them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The clear key as uppercase hex, zeroized when dropped. Secret.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode_upper(self.as_bytes()))
    }

    /// Key length in bytes (16..=64).
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.len
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// The canonical wrap label for a terminal's PIN key.
pub fn label_terminal_pin(terminal_id: &str) -> String {
    format!("terminal-pin:{terminal_id}")
}

/// The canonical wrap label for a terminal's MAC key.
pub fn label_terminal_mac(terminal_id: &str) -> String {
    format!("terminal-mac:{terminal_id}")
}

/// The canonical wrap label for a bank's PIN verification key; `bank_code`
/// is the three-digit code, e.g. `002`.
pub fn label_bank_pvk(bank_code: &str) -> String {
    format!("bank-pvk:{bank_code}")
}

/// HMAC-SHA256 of `parts` concatenated, under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    // HMAC accepts keys of any length, so this never fails; the fallback
    // (all zeros) is unreachable and keeps the code panic-free.
    let mut out = Zeroizing::new([0u8; 32]);
    if let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(key) {
        for p in parts {
            mac.update(p);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// XORs `data` in place with the AES-256-CTR keystream starting at `iv`.
fn aes256_ctr_xor(key: &[u8; 32], iv: &[u8; 16], data: &mut [u8]) {
    let cipher = Aes256::new(key.into());
    let mut counter = u128::from_be_bytes(*iv);
    for chunk in data.chunks_mut(16) {
        let mut block = aes::Block::from(counter.to_be_bytes());
        cipher.encrypt_block(&mut block);
        for (d, k) in chunk.iter_mut().zip(block.iter()) {
            *d ^= k;
        }
        block.as_mut_slice().zeroize();
        counter = counter.wrapping_add(1);
    }
}

impl MasterKey {
    /// The documented TEST master key: SHA-256 of [`TEST_MASTER_KEY_SEED`].
    /// It is the default when neither the config nor `KKS_MASTER_KEY` gives
    /// one, and it protects nothing: anyone can recompute it.
    pub fn test_default() -> MasterKey {
        let digest = Sha256::digest(TEST_MASTER_KEY_SEED.as_bytes());
        let mut key = MasterKey([0u8; MASTER_KEY_LEN]);
        key.0.copy_from_slice(&digest);
        key
    }

    /// True when this is [`MasterKey::test_default`] (so `serve` can warn).
    /// Compared in constant time.
    pub fn is_test_default(&self) -> bool {
        bool::from(self.0.ct_eq(&MasterKey::test_default().0))
    }

    fn subkeys(&self) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
        (
            hmac_sha256(&self.0, &[WRAP_MAC_SUBKEY]),
            hmac_sha256(&self.0, &[WRAP_ENC_SUBKEY]),
        )
    }

    fn wrap_tag(k_mac: &[u8; 32], key_bytes: &[u8], label: &str) -> Zeroizing<[u8; 32]> {
        // Lengths are prefixed so (label, key) pairs can never collide.
        let label_len = u32::try_from(label.len()).unwrap_or(u32::MAX).to_be_bytes();
        let key_len = u32::try_from(key_bytes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        hmac_sha256(
            k_mac,
            &[
                WRAP_DOMAIN,
                &label_len,
                label.as_bytes(),
                &key_len,
                key_bytes,
            ],
        )
    }

    /// Wraps `key_bytes` for storage, bound to `label` (its purpose and
    /// owner, e.g. [`label_terminal_pin`]`("EW000001")`). Deterministic; see
    /// the module header for the construction. The blob is
    /// [`WRAP_OVERHEAD`] bytes longer than the key.
    pub fn wrap(&self, key_bytes: &[u8], label: &str) -> Vec<u8> {
        let (k_mac, k_enc) = self.subkeys();
        let tag = Self::wrap_tag(&k_mac, key_bytes, label);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&tag[..16]);
        let mut out = Vec::with_capacity(WRAP_OVERHEAD + key_bytes.len());
        out.push(WRAP_VERSION);
        out.extend_from_slice(&tag[..]);
        let start = out.len();
        out.extend_from_slice(key_bytes);
        aes256_ctr_xor(&k_enc, &iv, &mut out[start..]);
        out
    }

    /// Unwraps a blob made by [`MasterKey::wrap`] with the same master key
    /// and the same label. Any mismatch or alteration is an error; the clear
    /// key is returned in a buffer that zeroizes itself on drop.
    pub fn unwrap(&self, wrapped: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let (version, rest) = wrapped.split_first().ok_or(KeyError::MalformedWrapped)?;
        if *version != WRAP_VERSION || rest.len() <= WRAP_TAG_LEN {
            return Err(KeyError::MalformedWrapped);
        }
        let (stored_tag, ciphertext) = rest.split_at(WRAP_TAG_LEN);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&stored_tag[..16]);
        let (k_mac, k_enc) = self.subkeys();
        let mut plain = Zeroizing::new(ciphertext.to_vec());
        aes256_ctr_xor(&k_enc, &iv, &mut plain);
        let tag = Self::wrap_tag(&k_mac, &plain, label);
        if bool::from(tag.ct_eq(stored_tag)) {
            Ok(plain)
        } else {
            // `plain` is zeroized as it drops here.
            Err(KeyError::Unwrap)
        }
    }

    /// Wraps a terminal PIN key (convenience over [`MasterKey::wrap`]).
    pub fn wrap_pin_key(&self, key: &PinKey, label: &str) -> Vec<u8> {
        self.wrap(key.as_bytes(), label)
    }

    /// Unwraps a terminal PIN key.
    pub fn unwrap_pin_key(&self, wrapped: &[u8], label: &str) -> Result<PinKey, KeyError> {
        PinKey::from_bytes(&self.unwrap(wrapped, label)?)
    }

    /// Wraps a terminal MAC key.
    pub fn wrap_mac_key(&self, key: &MacKey, label: &str) -> Vec<u8> {
        self.wrap(key.as_bytes(), label)
    }

    /// Unwraps a terminal MAC key.
    pub fn unwrap_mac_key(&self, wrapped: &[u8], label: &str) -> Result<MacKey, KeyError> {
        MacKey::from_bytes(&self.unwrap(wrapped, label)?)
    }

    /// Wraps a bank PIN verification key.
    pub fn wrap_pv_key(&self, key: &PvKey, label: &str) -> Vec<u8> {
        self.wrap(key.as_bytes(), label)
    }

    /// Unwraps a bank PIN verification key.
    pub fn unwrap_pv_key(&self, wrapped: &[u8], label: &str) -> Result<PvKey, KeyError> {
        PvKey::from_bytes(&self.unwrap(wrapped, label)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN_KEY_HEX: &str = "042666B49184CF5C68DE9628D0397B36";
    const MAC_KEY_HEX: &str = "00112233445566778899AABBCCDDEEFF";
    const PV_KEY_HEX: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";

    fn other_master() -> MasterKey {
        MasterKey::from_hex("FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100")
            .expect("valid")
    }

    #[test]
    fn parse_hex_keys() {
        let k = PinKey::from_hex(PIN_KEY_HEX).expect("valid");
        assert_eq!(k.to_hex().as_str(), PIN_KEY_HEX);
        assert_eq!(
            PinKey::from_hex(&PIN_KEY_HEX.to_lowercase())
                .expect("lowercase")
                .as_bytes(),
            k.as_bytes()
        );
        assert!(PinKey::from_hex(&format!(" {PIN_KEY_HEX}\n")).is_ok());
        let m = MacKey::from_hex(MAC_KEY_HEX).expect("valid");
        assert_eq!(m.len(), 16);
        assert_eq!(m.to_hex().as_str(), MAC_KEY_HEX);
        assert!(MacKey::from_hex(&"AB".repeat(64)).is_ok());
        assert!(MacKey::from_hex(&"AB".repeat(32)).is_ok());
        let p = PvKey::from_hex(PV_KEY_HEX).expect("valid");
        assert_eq!(p.as_bytes()[31], 0x1F);
    }

    #[test]
    fn hex_errors_do_not_echo_input() {
        let secret = "042666B49184CF5C68DE9628D0397BZZ";
        let e = PinKey::from_hex(secret).unwrap_err();
        assert_eq!(e, KeyError::InvalidHex);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("042666"));
        assert!(!shown.contains("ZZ"));
        assert_eq!(PinKey::from_hex("ABC").unwrap_err(), KeyError::InvalidHex);
        assert_eq!(
            PinKey::from_hex("0011").unwrap_err(),
            KeyError::InvalidLength {
                expected: "16",
                got: 2
            }
        );
        assert_eq!(
            MacKey::from_hex(&"AB".repeat(15)).unwrap_err(),
            KeyError::InvalidLength {
                expected: "16..=64",
                got: 15
            }
        );
        assert!(MacKey::from_hex(&"AB".repeat(65)).is_err());
        assert!(MacKey::from_hex(&"Zb".repeat(16)).is_err());
        assert!(PvKey::from_hex(PIN_KEY_HEX).is_err());
        assert!(MasterKey::from_hex("").is_err());
        assert!(MasterKey::from_hex("é").is_err());
        assert!(PinKey::from_bytes(&[0u8; 15]).is_err());
        assert!(MacKey::from_bytes(&[0u8; 65]).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let pin = PinKey::from_hex(PIN_KEY_HEX).expect("valid");
        let mac = MacKey::from_hex(MAC_KEY_HEX).expect("valid");
        let pv = PvKey::from_hex(PV_KEY_HEX).expect("valid");
        let mk = MasterKey::test_default();
        assert_eq!(format!("{pin:?}"), "PinKey(<redacted>)");
        assert_eq!(format!("{mac:?}"), "MacKey(<redacted>)");
        assert_eq!(format!("{pv:?}"), "PvKey(<redacted>)");
        assert_eq!(format!("{mk:?}"), "MasterKey(<redacted>)");
        let all = format!("{pin:#?}{mac:#?}{pv:#?}{mk:#?}").to_uppercase();
        for h in [
            PIN_KEY_HEX.to_string(),
            MAC_KEY_HEX.to_string(),
            PV_KEY_HEX.to_string(),
            mk.to_hex().to_string(),
        ] {
            assert!(!all.contains(&h[..8]));
        }
    }

    #[test]
    fn test_master_key_is_sha256_of_the_documented_string() {
        let mk = MasterKey::test_default();
        let expected =
            Sha256::digest("kks-switch test master key v1 — not for production".as_bytes());
        assert_eq!(&mk.as_bytes()[..], &expected[..]);
        assert!(mk.is_test_default());
        assert!(!other_master().is_test_default());
        let again = MasterKey::from_hex(&mk.to_hex()).expect("round trip");
        assert!(again.is_test_default());
    }

    #[test]
    fn wrap_round_trip() {
        let mk = MasterKey::test_default();
        let label = label_terminal_pin("EW000001");
        assert_eq!(label, "terminal-pin:EW000001");
        let key = PinKey::from_hex(PIN_KEY_HEX).expect("valid");
        let blob = mk.wrap_pin_key(&key, &label);
        assert_eq!(blob.len(), WRAP_OVERHEAD + PIN_KEY_LEN);
        assert_eq!(blob[0], WRAP_VERSION);
        // The blob does not contain the key in the clear.
        assert!(!blob.windows(16).any(|w| w == key.as_bytes()));
        let back = mk.unwrap_pin_key(&blob, &label).expect("unwraps");
        assert_eq!(back.as_bytes(), key.as_bytes());
        // Deterministic (synthetic IV).
        assert_eq!(mk.wrap(key.as_bytes(), &label), blob);

        for len in [1usize, 15, 16, 17, 32, 33, 64, 100] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let b = mk.wrap(&data, "x");
            assert_eq!(mk.unwrap(&b, "x").expect("unwraps").as_slice(), &data[..]);
        }

        let mac = MacKey::from_hex(MAC_KEY_HEX).expect("valid");
        let ml = label_terminal_mac("EW000001");
        let mb = mk.wrap_mac_key(&mac, &ml);
        assert_eq!(
            mk.unwrap_mac_key(&mb, &ml).expect("ok").as_bytes(),
            mac.as_bytes()
        );

        let pv = PvKey::from_hex(PV_KEY_HEX).expect("valid");
        let pl = label_bank_pvk("002");
        let pb = mk.wrap_pv_key(&pv, &pl);
        assert_eq!(
            mk.unwrap_pv_key(&pb, &pl).expect("ok").as_bytes(),
            pv.as_bytes()
        );
    }

    #[test]
    fn wrong_master_key_is_an_error() {
        let blob = MasterKey::test_default().wrap(&[7u8; 16], "terminal-pin:EW000001");
        assert_eq!(
            other_master()
                .unwrap(&blob, "terminal-pin:EW000001")
                .unwrap_err(),
            KeyError::Unwrap
        );
    }

    #[test]
    fn label_mismatch_is_an_error() {
        let mk = MasterKey::test_default();
        let key = PinKey::from_hex(PIN_KEY_HEX).expect("valid");
        let blob = mk.wrap_pin_key(&key, &label_terminal_pin("EW000001"));
        for wrong in [
            label_terminal_pin("EW000002"),
            label_terminal_mac("EW000001"),
            String::new(),
            "terminal-pin:EW00000".to_string(),
        ] {
            assert_eq!(mk.unwrap(&blob, &wrong).unwrap_err(), KeyError::Unwrap);
        }
    }

    #[test]
    fn tampering_is_an_error() {
        let mk = MasterKey::test_default();
        let label = "bank-pvk:002";
        let blob = mk.wrap(&[0x42u8; 32], label);
        for i in 0..blob.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = blob.clone();
                t[i] ^= bit;
                assert!(mk.unwrap(&t, label).is_err(), "flip byte {i}");
            }
        }
        // Truncated, extended, empty.
        for cut in 0..blob.len() {
            assert!(mk.unwrap(&blob[..cut], label).is_err());
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert_eq!(mk.unwrap(&longer, label).unwrap_err(), KeyError::Unwrap);
        assert_eq!(
            mk.unwrap(&[], label).unwrap_err(),
            KeyError::MalformedWrapped
        );
        let mut v2 = blob.clone();
        v2[0] = 2;
        assert_eq!(
            mk.unwrap(&v2, label).unwrap_err(),
            KeyError::MalformedWrapped
        );
        // A wrapped key of the wrong length for its type is an error too.
        let short = mk.wrap(&[1u8; 8], label);
        assert!(mk.unwrap_pin_key(&short, label).is_err());
    }

    #[test]
    fn aes_ctr_matches_nist_sp800_38a() {
        // NIST SP 800-38A F.5.5 CTR-AES256.Encrypt, first two blocks.
        let key: [u8; 32] =
            hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
                .expect("hex")
                .try_into()
                .expect("32");
        let iv: [u8; 16] = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            .expect("hex")
            .try_into()
            .expect("16");
        let mut data =
            hex::decode("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
                .expect("hex");
        aes256_ctr_xor(&key, &iv, &mut data);
        assert_eq!(
            hex::encode(&data),
            "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
        );
    }

    proptest::proptest! {
        #[test]
        fn unwrap_of_arbitrary_bytes_never_panics(
            blob in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
            label in ".{0,30}",
        ) {
            proptest::prop_assert!(MasterKey::test_default().unwrap(&blob, &label).is_err());
        }

        #[test]
        fn hex_parsers_never_panic(text in ".{0,140}") {
            let _ = PinKey::from_hex(&text);
            let _ = MacKey::from_hex(&text);
            let _ = PvKey::from_hex(&text);
            let _ = MasterKey::from_hex(&text);
        }
    }
}
