//! Small value types the ledger is keyed by: card numbers, family ids, bank
//! codes, merchant ids, idempotency keys, PIN verification values.
//!
//! Why fixed-size values instead of `String`s: the shard applies millions of
//! requests per second and a heap allocation per request would dominate the
//! cost of a posting. Every type here is `Copy` (or at least allocation-free),
//! hashes cheaply and has a stable, documented byte form for the journal.
//! Card numbers and PIN verification values never print in full (`Debug` masks
//! them, STYLE habit 10).

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Amounts are IDR with 2 implied decimals, exactly as DE4 carries them:
/// Rp200.000 is `20_000_000`.
pub type Amount = u64;

/// Seconds in a day; every day-based rule is counted in these.
pub const SECONDS_PER_DAY: u64 = 86_400;

/// WIB (UTC+7) offset, used to cut the withdrawal-limit day.
pub const WIB_OFFSET_SECONDS: u64 = 7 * 3_600;

/// The WIB calendar day of a unix timestamp (days since 1970-01-01 WIB).
///
/// The daily withdrawal limits reset when this number changes.
pub const fn wib_day(unix_seconds: u64) -> u64 {
    unix_seconds.saturating_add(WIB_OFFSET_SECONDS) / SECONDS_PER_DAY
}

/// Longest card number accepted (DE2 is n..19).
pub const PAN_DIGITS_MAX: usize = 19;

/// A card number (DE2), stored as its numeric value plus its digit count so
/// that leading zeros survive. 19 decimal digits always fit in a `u64`.
///
/// `Debug` prints only the first 6 and last 4 digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pan {
    value: u64,
    len: u8,
}

impl Pan {
    /// Parses 1 to 19 ASCII digits. No Luhn check: that is the switch's job
    /// (INTERFACE §5 step 4) and the ledger only needs an exact key.
    pub fn from_digits(digits: &[u8]) -> Option<Pan> {
        if digits.is_empty() || digits.len() > PAN_DIGITS_MAX {
            return None;
        }
        let mut value: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        Some(Pan {
            value,
            len: digits.len() as u8, // ≤ 19, checked above
        })
    }

    /// The digits written into `buf`; the returned slice is the PAN.
    pub fn write_digits<'a>(&self, buf: &'a mut [u8; PAN_DIGITS_MAX]) -> &'a [u8] {
        let len = usize::from(self.len);
        let mut v = self.value;
        for slot in buf[..len].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        &buf[..len]
    }

    /// The PAN with this value and digit count, if they fit together.
    pub(crate) fn from_parts(value: u64, digits: u8) -> Option<Pan> {
        let len = usize::from(digits);
        if len == 0 || len > PAN_DIGITS_MAX {
            return None;
        }
        let fits = len == PAN_DIGITS_MAX || value < 10u64.pow(u32::from(digits));
        fits.then_some(Pan { value, len: digits })
    }

    /// The numeric value of the digits.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The number of digits.
    pub fn digits(&self) -> u8 {
        self.len
    }

    /// The digits as an owned string (for storage and CSV; never for logs).
    pub fn to_digit_string(&self) -> String {
        let mut buf = [0u8; PAN_DIGITS_MAX];
        let digits = self.write_digits(&mut buf);
        digits.iter().map(|&b| char::from(b)).collect()
    }

    /// The masked form used everywhere a PAN could reach a log: first 6 and
    /// last 4 digits, the rest `*`. PANs of 10 digits or fewer print as `*`s.
    pub fn masked(&self) -> String {
        let mut buf = [0u8; PAN_DIGITS_MAX];
        crate::pan::mask_pan_bytes(self.write_digits(&mut buf))
    }
}

impl Hash for Pan {
    /// One word: the digit count folded into the top bits (a collision
    /// between PANs of different lengths only costs a probe).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.value ^ (u64::from(self.len) << 59));
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl Serialize for Pan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; PAN_DIGITS_MAX];
        let digits = self.write_digits(&mut buf);
        // Digits are ASCII, so this cannot fail; fall back to an error anyway.
        let text = std::str::from_utf8(digits).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

impl<'de> Deserialize<'de> for Pan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pan, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Pan::from_digits(text.as_bytes())
            .ok_or_else(|| serde::de::Error::custom("PAN must be 1 to 19 digits"))
    }
}

/// A family card number (Kartu Keluarga, 16 digits), the unit PKH and BPNT
/// pay. KK numbers start with a province code, never with 0, so the numeric
/// value is an exact key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct FamilyId(pub u64);

/// A bank code as carried in DE32 (`002` BRI, `008` Mandiri, `009` BNI,
/// `200` BTN, `451` BSI).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct BankCode(pub u16);

impl fmt::Display for BankCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

/// Width of DE42 (card acceptor id, ans15).
pub const MERCHANT_ID_LEN: usize = 15;

/// A card acceptor id (DE42, ans15): names an e-Warong, agent or merchant
/// and its settlement account in this bank's books.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MerchantId([u8; MERCHANT_ID_LEN]);

impl MerchantId {
    /// The 15 bytes as two little-endian words (last byte zero).
    pub(crate) fn words(&self) -> [u64; 2] {
        let mut bytes = [0u8; 16];
        bytes[..MERCHANT_ID_LEN].copy_from_slice(&self.0);
        [
            u64::from_le_bytes(first_word(&bytes[..8])),
            u64::from_le_bytes(first_word(&bytes[8..])),
        ]
    }
}

impl Hash for MerchantId {
    /// Two words.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b] = self.words();
        state.write_u64(a);
        state.write_u64(b);
    }
}

/// The first 8 bytes of `bytes` (which has at least 8).
fn first_word(bytes: &[u8]) -> [u8; 8] {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    word
}

impl MerchantId {
    /// Up to 15 bytes; shorter ids are right-padded with spaces, as an
    /// ans15 field is on the wire. Longer input is refused.
    pub fn new(id: &[u8]) -> Option<MerchantId> {
        if id.len() > MERCHANT_ID_LEN {
            return None;
        }
        let mut bytes = [b' '; MERCHANT_ID_LEN];
        bytes[..id.len()].copy_from_slice(id);
        Some(MerchantId(bytes))
    }

    /// The 15 bytes as on the wire.
    pub fn as_bytes(&self) -> &[u8; MERCHANT_ID_LEN] {
        &self.0
    }
}

impl fmt::Debug for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerchantId({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for MerchantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::ledger::serde_bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for MerchantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MerchantId, D::Error> {
        let bytes = crate::ledger::serde_bytes::deserialize(d)?;
        MerchantId::new(&bytes).ok_or_else(|| serde::de::Error::custom("merchant id over 15 bytes"))
    }
}

/// Longest idempotency key, in bytes. An ISO key (MTI class 3 + DE32 ≤ 11 +
/// DE41 8 + DE11 6 + DE7 10 + separators) needs at most 42; a disbursement
/// key such as `BPNT:2026-01:3201234567890123` needs 29.
pub const REQUEST_KEY_LEN_MAX: usize = 47;

/// An idempotency key: at most [`REQUEST_KEY_LEN_MAX`] bytes, stored inline
/// (48 bytes in all) so that a request never allocates to be deduplicated.
/// The full key is kept, not a hash of it, so two keys never collide.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    len: u8,
    // Invariant: bytes[len..] are all zero, so the derived Eq/Hash are exact.
    bytes: [u8; REQUEST_KEY_LEN_MAX],
}

impl RequestKey {
    /// A key from raw bytes; `None` if longer than [`REQUEST_KEY_LEN_MAX`].
    pub fn new(key: &[u8]) -> Option<RequestKey> {
        if key.len() > REQUEST_KEY_LEN_MAX {
            return None;
        }
        let mut bytes = [0u8; REQUEST_KEY_LEN_MAX];
        bytes[..key.len()].copy_from_slice(key);
        Some(RequestKey {
            len: key.len() as u8, // ≤ 47, checked above
            bytes,
        })
    }

    /// A key from parts joined by `|`, e.g. the ISO key
    /// `[b"020", de32, de41, de11, de7]` (INTERFACE §5). The separator keeps
    /// variable-length parts such as DE32 from running into each other.
    pub fn from_parts(parts: &[&[u8]]) -> Option<RequestKey> {
        let mut bytes = [0u8; REQUEST_KEY_LEN_MAX];
        let mut len = 0usize;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                *bytes.get_mut(len)? = b'|';
                len += 1;
            }
            bytes.get_mut(len..len + part.len())?.copy_from_slice(part);
            len += part.len();
        }
        Some(RequestKey {
            len: len as u8, // ≤ 47: every write above was bounds-checked
            bytes,
        })
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl RequestKey {
    /// The length byte and the 47 key bytes (zero past the length) as six
    /// little-endian words: equal keys give equal words and no length prefix
    /// is needed.
    pub(crate) fn words(&self) -> [u64; 6] {
        let mut all = [0u8; REQUEST_KEY_LEN_MAX + 1];
        all[0] = self.len;
        all[1..].copy_from_slice(&self.bytes);
        let mut words = [0u64; 6];
        for (w, chunk) in words.iter_mut().zip(all.chunks_exact(8)) {
            *w = u64::from_le_bytes(first_word(chunk));
        }
        words
    }
}

impl Hash for RequestKey {
    /// Six words (see `words`).
    fn hash<H: Hasher>(&self, state: &mut H) {
        for w in self.words() {
            state.write_u64(w);
        }
    }
}

impl fmt::Debug for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RequestKey({:?})",
            String::from_utf8_lossy(self.as_bytes())
        )
    }
}

impl Serialize for RequestKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::ledger::serde_bytes::serialize(self.as_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for RequestKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RequestKey, D::Error> {
        let bytes = crate::ledger::serde_bytes::deserialize(d)?;
        RequestKey::new(&bytes).ok_or_else(|| serde::de::Error::custom("request key over 47 bytes"))
    }
}

/// The caller's digest of a request's content (INTERFACE §5: DE2, DE3, DE4,
/// DE42, DE48, DE49, DE90), e.g. the first 16 bytes of a SHA-256 over them.
///
/// The ledger also hashes every field it can see itself (see
/// [`Command::content_hash`](crate::ledger::Command::content_hash)), so a
/// caller that has nothing extra to cover may pass [`Fingerprint::ZERO`]; the
/// fingerprint is for what the ledger cannot see (DE3, DE48, DE49, DE90's
/// other parts).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// No caller-side content beyond what the ledger sees.
    pub const ZERO: Fingerprint = Fingerprint([0; 16]);
}

/// A PIN verification value: HMAC-SHA256(bank PVK, `KKS-PVV-v1` ‖ PAN ‖ PIN)
/// (INTERFACE §6), computed by the crypto module. Compared in constant time;
/// never printed.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct Pvv(pub [u8; 32]);

impl Pvv {
    /// Constant-time equality, so a timing side channel cannot reveal how
    /// much of a candidate matched: all 32 bytes are always compared (as four
    /// words whose differences are ored together) and only the final
    /// all-or-nothing result decides. Written out rather than `subtle`'s
    /// byte-wise `ct_eq`, which was 5% of a purchase's time.
    pub fn matches(&self, other: &Pvv) -> bool {
        let mut diff = 0u64;
        for (a, b) in self.0.chunks_exact(8).zip(other.0.chunks_exact(8)) {
            diff |= u64::from_le_bytes(first_word(a)) ^ u64::from_le_bytes(first_word(b));
        }
        std::hint::black_box(diff) == 0
    }
}

impl PartialEq for Pvv {
    fn eq(&self, other: &Pvv) -> bool {
        self.matches(other)
    }
}

impl Eq for Pvv {}

impl fmt::Debug for Pvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pvv(..)")
    }
}

/// Which of the card's two wallets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Program {
    /// PKH conditional cash: the savings wallet (DE3 account type `10`).
    Pkh,
    /// BPNT / Sembako: the food wallet (DE3 account type `60`).
    Bpnt,
}

impl Program {
    /// Both programs, PKH first (the order of DE54 entries).
    pub const ALL: [Program; 2] = [Program::Pkh, Program::Bpnt];

    /// Index into per-card wallet arrays.
    pub const fn index(self) -> usize {
        match self {
            Program::Pkh => 0,
            Program::Bpnt => 1,
        }
    }
}

/// What kind of card acceptor a terminal belongs to; decides which
/// transactions it may carry (INTERFACE §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum TerminalKind {
    /// Registered e-Warong shop (MCC 5411): BPNT food purchases, PKH purchases.
    Ewarong,
    /// Bank agent (BRILink, Agen46, …): cash withdrawals, PKH purchases.
    Agent,
    /// Other registered merchant: PKH purchases only.
    Merchant,
}

/// An account in this bank's books (index into the ledger's account table).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct AccountId(pub u32);

/// A card in this bank's books (index into the ledger's card table).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct CardId(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_pan_round_trips_and_masks() {
        let pan = Pan::from_digits(b"6000020000000016").expect("valid");
        assert_eq!(pan.to_digit_string(), "6000020000000016");
        assert_eq!(format!("{pan:?}"), "Pan(600002******0016)");
        let long = Pan::from_digits(b"9999999999999999999").expect("19 digits fit");
        assert_eq!(long.to_digit_string(), "9999999999999999999");
        let zero = Pan::from_digits(b"0012").expect("leading zeros");
        assert_ne!(Some(zero), Pan::from_digits(b"12"));
        assert_eq!(zero.to_digit_string(), "0012");
        assert!(Pan::from_digits(b"").is_none());
        assert!(Pan::from_digits(b"12a4").is_none());
        assert!(Pan::from_digits(b"12345678901234567890").is_none());
    }

    #[test]
    fn ledger_request_key_limits() {
        let k = RequestKey::from_parts(&[b"020", b"002", b"TERM0001", b"000123", b"0102030405"])
            .expect("fits");
        assert_eq!(k.as_bytes(), b"020|002|TERM0001|000123|0102030405");
        assert!(RequestKey::new(&[b'x'; 48]).is_none());
        assert!(RequestKey::new(&[b'x'; 47]).is_some());
        assert!(RequestKey::from_parts(&[&[b'x'; 40], &[b'y'; 7]]).is_none());
        assert!(RequestKey::from_parts(&[&[b'x'; 40], &[b'y'; 6]]).is_some());
    }

    #[test]
    fn ledger_wib_day_cuts_at_17_utc() {
        // 2026-01-01T16:59:59Z is 23:59:59 WIB; one second later is the next WIB day.
        let t = 1_767_286_799;
        assert_eq!(wib_day(t) + 1, wib_day(t + 1));
    }

    #[test]
    fn ledger_pvv_debug_is_redacted() {
        assert_eq!(format!("{:?}", Pvv([7; 32])), "Pvv(..)");
        assert!(Pvv([1; 32]).matches(&Pvv([1; 32])));
        assert!(!Pvv([1; 32]).matches(&Pvv([2; 32])));
    }
}
