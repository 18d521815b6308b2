//! Card numbers (PANs), the Luhn check and the Himbara banks' test BINs.
//!
//! Why a newtype: a PAN is personal data that must never reach a log line in
//! full (STYLE habit 10, INTERFACE §6). [`Pan`]'s `Debug` and `Display` both
//! print the masked form (first 6, `*` for the middle, last 4), so a PAN that
//! slips into a `tracing` field or a panic message is already masked. The
//! clear digits are reachable only through the explicit [`Pan::as_str`] /
//! [`Pan::digits`], which are easy to find in review.
//!
//! [`Pan::parse`] separates the two ways a PAN can be bad, because they map to
//! different places in the order of checks (INTERFACE §5): a field that is not
//! 12–19 digits is malformed (**30**), while a well-formed number that fails
//! Luhn is an invalid card (**14**).
//!
//! [`Bank`] is the one table of the five issuing banks: bank code (DE32),
//! name (as written in `terminals.csv` and payment orders) and test BIN
//! (INTERFACE §7). The BINs are test ranges, not real KKS ranges.

use std::fmt;
use std::str::FromStr;

/// Fewest digits a PAN may have (ISO/IEC 7812).
pub const PAN_LEN_MIN: usize = 12;
/// Most digits a PAN may have (ISO/IEC 7812; DE2 is `n..19`).
pub const PAN_LEN_MAX: usize = 19;
/// Length of a BIN (issuer identification number) in digits.
pub const BIN_LEN: usize = 6;

/// Why a byte string is not a valid PAN. Never carries the digits themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    /// Not between [`PAN_LEN_MIN`] and [`PAN_LEN_MAX`] characters long
    /// (a malformed DE2: response code 30).
    #[error("PAN length {len} is outside 12..=19")]
    Length {
        /// The length that was given.
        len: usize,
    },
    /// Contains a character that is not an ASCII digit (malformed: 30).
    #[error("PAN contains a non-digit at position {position}")]
    NonDigit {
        /// Zero-based index of the first offending byte.
        position: usize,
    },
    /// Well formed, but the Luhn check digit is wrong (invalid card: 14).
    #[error("PAN fails the Luhn check")]
    Luhn,
}

impl PanError {
    /// True for a malformed field (length or non-digit), false for a Luhn
    /// failure. Lets callers pick between response codes 30 and 14.
    pub fn is_malformed(&self) -> bool {
        !matches!(self, PanError::Luhn)
    }
}

/// A syntactically valid, Luhn-valid card number: 12..=19 ASCII digits.
///
/// `Debug` and `Display` print the masked form, e.g. `600002******0120`.
/// Use [`Pan::as_str`] or [`Pan::digits`] when the clear number is really
/// needed (PIN block, PVV, storage keys).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pan(String);

impl Pan {
    /// Parses a PAN from raw field bytes (DE2, a CSV cell, a CLI argument).
    ///
    /// Checks, in order: length 12..=19, every byte an ASCII digit, Luhn.
    /// No trimming: surrounding spaces are a malformed field.
    pub fn parse(bytes: &[u8]) -> Result<Pan, PanError> {
        if !(PAN_LEN_MIN..=PAN_LEN_MAX).contains(&bytes.len()) {
            return Err(PanError::Length { len: bytes.len() });
        }
        if let Some(position) = bytes.iter().position(|b| !b.is_ascii_digit()) {
            return Err(PanError::NonDigit { position });
        }
        if !luhn_valid(bytes) {
            return Err(PanError::Luhn);
        }
        // All bytes are ASCII digits, so this is valid UTF-8; the fallback
        // is unreachable but keeps the function panic-free.
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Pan(s.to_owned())),
            Err(_) => Err(PanError::NonDigit { position: 0 }),
        }
    }

    /// The clear digits as a string. Never log this; log the `Pan` itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The clear digits as ASCII bytes. Never log this.
    pub fn digits(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Number of digits (12..=19).
    #[allow(clippy::len_without_is_empty)] // a Pan is never empty
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The BIN: the first six digits.
    pub fn bin(&self) -> &str {
        // len >= 12, so the slice is in range; `get` keeps it panic-free.
        self.0.get(..BIN_LEN).unwrap_or("")
    }

    /// The last four digits (safe to show a cardholder or a log).
    pub fn last4(&self) -> &str {
        self.0.get(self.0.len().saturating_sub(4)..).unwrap_or("")
    }

    /// The issuing bank named by this PAN's BIN, if it is one of ours
    /// (`None` → response code 92).
    pub fn bank(&self) -> Option<Bank> {
        Bank::from_bin(self.bin())
    }

    /// The masked form, `600002******0120`; the same text `Display` prints.
    pub fn masked(&self) -> String {
        mask_pan(&self.0)
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl FromStr for Pan {
    type Err = PanError;

    fn from_str(s: &str) -> Result<Pan, PanError> {
        Pan::parse(s.as_bytes())
    }
}

/// Masks a card number for logging: first 6 characters, `*` for each middle
/// character, last 4 (`6000020000000120` → `600002******0120`).
///
/// Works on any input, including malformed DE2 values: a string of 10
/// characters or fewer is masked entirely, and any character that is not a
/// printable ASCII character is shown as `?` so raw field contents cannot
/// inject control characters into a log line.
pub fn mask_pan(raw: &str) -> String {
    mask_chars(raw.chars().collect())
}

/// [`mask_pan`] for raw field bytes that may not be UTF-8; each byte counts
/// as one character.
pub fn mask_pan_bytes(raw: &[u8]) -> String {
    mask_chars(raw.iter().map(|&b| b as char).collect())
}

fn mask_chars(chars: Vec<char>) -> String {
    let n = chars.len();
    if n <= 10 {
        return "*".repeat(n);
    }
    let shown = |c: char| if c.is_ascii_graphic() { c } else { '?' };
    let mut out = String::with_capacity(n);
    out.extend(chars[..6].iter().copied().map(shown));
    out.extend(std::iter::repeat_n('*', n - 10));
    out.extend(chars[n - 4..].iter().copied().map(shown));
    out
}

/// True when `digits` is a non-empty string of ASCII digits whose last digit
/// is a correct Luhn check digit. Any non-digit byte makes it false.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    luhn_sum(digits.iter().rev(), false) % 10 == 0
}

/// The Luhn check digit to append to `payload` (the PAN without its check
/// digit), returned as an ASCII digit `b'0'..=b'9'`, so
/// `pan.push(luhn_check_digit(payload) as char)` completes a PAN.
///
/// `payload` should be ASCII digits; any other byte is counted as its value
/// minus `b'0'`, modulo 10 (never panics). Validate the result with
/// [`Pan::parse`].
pub fn luhn_check_digit(payload: &[u8]) -> u8 {
    // With the check digit appended, the payload's last digit is doubled.
    let sum = luhn_sum(payload.iter().rev(), true);
    // sum % 10 < 10, so the result is a single digit.
    b'0' + ((10 - (sum % 10) as u8) % 10)
}

/// Sum of Luhn-weighted digits, rightmost first; `double_first` says whether
/// the first digit yielded is in a doubled position.
fn luhn_sum<'a>(rightmost_first: impl Iterator<Item = &'a u8>, double_first: bool) -> u32 {
    rightmost_first
        .enumerate()
        .map(|(i, &b)| {
            let d = u32::from(b.wrapping_sub(b'0') % 10);
            if (i % 2 == 0) == double_first {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum()
}

/// The five state-owned (Himbara) banks that issue KKS cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bank {
    /// Bank Rakyat Indonesia, code 002.
    Bri,
    /// Bank Mandiri, code 008.
    Mandiri,
    /// Bank Negara Indonesia, code 009.
    Bni,
    /// Bank Tabungan Negara, code 200.
    Btn,
    /// Bank Syariah Indonesia, code 451.
    Bsi,
}

impl Bank {
    /// Every bank, in bank-code order.
    pub const ALL: [Bank; 5] = [Bank::Bri, Bank::Mandiri, Bank::Bni, Bank::Btn, Bank::Bsi];

    /// The three-digit bank code used in DE32 (`002`, `008`, `009`, `200`,
    /// `451`).
    pub fn code(self) -> &'static str {
        match self {
            Bank::Bri => "002",
            Bank::Mandiri => "008",
            Bank::Bni => "009",
            Bank::Btn => "200",
            Bank::Bsi => "451",
        }
    }

    /// The bank code as a number (2, 8, 9, 200, 451).
    pub fn code_number(self) -> u16 {
        match self {
            Bank::Bri => 2,
            Bank::Mandiri => 8,
            Bank::Bni => 9,
            Bank::Btn => 200,
            Bank::Bsi => 451,
        }
    }

    /// The bank code right-justified and zero-filled to 11 digits, as in
    /// DE90's acquirer part (`00000000002`).
    pub fn code_n11(self) -> String {
        format!("{:0>11}", self.code())
    }

    /// The name as written in `terminals.csv` and payment orders (`BRI`,
    /// `MANDIRI`, `BNI`, `BTN`, `BSI`).
    pub fn name(self) -> &'static str {
        match self {
            Bank::Bri => "BRI",
            Bank::Mandiri => "MANDIRI",
            Bank::Bni => "BNI",
            Bank::Btn => "BTN",
            Bank::Bsi => "BSI",
        }
    }

    /// The bank's test BIN (INTERFACE §7; not a real KKS range).
    pub fn test_bin(self) -> &'static str {
        match self {
            Bank::Bri => "600002",
            Bank::Mandiri => "600008",
            Bank::Bni => "600009",
            Bank::Btn => "600200",
            Bank::Bsi => "600451",
        }
    }

    /// The bank whose BIN starts `bin`. Only the first six characters are
    /// looked at, so a BIN or a whole PAN both work; shorter input is `None`.
    pub fn from_bin(bin: &str) -> Option<Bank> {
        let prefix = bin.get(..BIN_LEN)?;
        Bank::ALL.into_iter().find(|b| b.test_bin() == prefix)
    }

    /// The bank with this code: `002`, or right-justified and zero-filled up
    /// to 11 digits (`00000000002`, as DE32/DE90 may carry it). Requires
    /// 3..=11 ASCII digits.
    pub fn from_code(code: &str) -> Option<Bank> {
        if !(3..=11).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: u64 = code.parse().ok()?;
        Bank::ALL
            .into_iter()
            .find(|b| u64::from(b.code_number()) == value)
    }

    /// The bank with this name (`BRI`, `MANDIRI`, `BNI`, `BTN`, `BSI`),
    /// ignoring ASCII case and surrounding whitespace.
    pub fn from_name(name: &str) -> Option<Bank> {
        let name = name.trim();
        Bank::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Bank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error from parsing a [`Bank`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bank name (expected BRI, MANDIRI, BNI, BTN or BSI)")]
pub struct UnknownBank;

impl FromStr for Bank {
    type Err = UnknownBank;

    /// Parses a bank name, as [`Bank::from_name`].
    fn from_str(s: &str) -> Result<Bank, UnknownBank> {
        Bank::from_name(s).ok_or(UnknownBank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_PAN: &str = "6000020000000120";

    #[test]
    fn parses_the_golden_pan() {
        let pan = Pan::parse(TEST_PAN.as_bytes()).expect("valid");
        assert_eq!(pan.as_str(), TEST_PAN);
        assert_eq!(pan.digits(), TEST_PAN.as_bytes());
        assert_eq!(pan.len(), 16);
        assert_eq!(pan.bin(), "600002");
        assert_eq!(pan.last4(), "0120");
        assert_eq!(pan.bank(), Some(Bank::Bri));
        assert_eq!(TEST_PAN.parse::<Pan>(), Ok(pan));
    }

    #[test]
    fn debug_and_display_are_masked() {
        let pan = Pan::parse(TEST_PAN.as_bytes()).expect("valid");
        assert_eq!(format!("{pan:?}"), "600002******0120");
        assert_eq!(format!("{pan}"), "600002******0120");
        assert_eq!(format!("{:?}", Some(&pan)), "Some(600002******0120)");
        assert!(!format!("{pan:?}").contains(TEST_PAN));
        assert!(!format!("{pan:#?}").contains("0000000"));
    }

    #[test]
    fn length_and_digit_errors_are_distinct_from_luhn() {
        assert_eq!(Pan::parse(b""), Err(PanError::Length { len: 0 }));
        assert_eq!(
            Pan::parse(b"60000200001"),
            Err(PanError::Length { len: 11 })
        );
        assert_eq!(
            Pan::parse(b"60000200000001200000"),
            Err(PanError::Length { len: 20 })
        );
        assert_eq!(
            Pan::parse(b"600002000000012X"),
            Err(PanError::NonDigit { position: 15 })
        );
        assert_eq!(
            Pan::parse(b" 600002000000012"),
            Err(PanError::NonDigit { position: 0 })
        );
        assert_eq!(Pan::parse(b"6000020000000121"), Err(PanError::Luhn));
        assert!(PanError::Length { len: 3 }.is_malformed());
        assert!(PanError::NonDigit { position: 3 }.is_malformed());
        assert!(!PanError::Luhn.is_malformed());
        // Errors never echo the digits.
        let e = Pan::parse(b"6000020000000121").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("6000020000000121"));
    }

    #[test]
    fn non_ascii_input_does_not_panic() {
        assert!(Pan::parse("6000020000000１20".as_bytes()).is_err());
        assert!(Pan::parse(&[0xff; 16]).is_err());
    }

    #[test]
    fn luhn_known_numbers() {
        assert!(luhn_valid(b"4012345678909"));
        assert!(luhn_valid(b"79927398713"));
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"0"));
        assert!(!luhn_valid(b"79927398710"));
        assert!(!luhn_valid(b"5555555551234567"));
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"4111 1111 1111 1111"));
    }

    #[test]
    fn luhn_check_digit_completes_pans() {
        assert_eq!(luhn_check_digit(b"7992739871"), b'3');
        assert_eq!(luhn_check_digit(b"600002000000012"), b'0');
        assert_eq!(luhn_check_digit(b"401234567890"), b'9');
        assert_eq!(luhn_check_digit(b""), b'0');
        // Every payload gets exactly one valid check digit.
        for bank in Bank::ALL {
            for n in 0..200u32 {
                let mut p = format!("{}{:09}", bank.test_bin(), n * 7919);
                p.push(luhn_check_digit(p.as_bytes()) as char);
                let pan = Pan::parse(p.as_bytes()).expect("generated PAN is valid");
                assert_eq!(pan.bank(), Some(bank));
                let valid = (b'0'..=b'9')
                    .filter(|&d| {
                        let mut q = p[..15].to_string();
                        q.push(d as char);
                        luhn_valid(q.as_bytes())
                    })
                    .count();
                assert_eq!(valid, 1);
            }
        }
        // Junk input never panics.
        let d = luhn_check_digit(b"\xff\x00abc");
        assert!(d.is_ascii_digit());
    }

    #[test]
    fn mask_pan_any_length() {
        assert_eq!(mask_pan("6000020000000120"), "600002******0120");
        assert_eq!(mask_pan("6000020000000120123"), "600002*********0123");
        assert_eq!(mask_pan("60000200001"), "600002*0001");
        assert_eq!(mask_pan("6000020001"), "**********");
        assert_eq!(mask_pan("123"), "***");
        assert_eq!(mask_pan(""), "");
        assert_eq!(mask_pan("600002\n00000\r0120"), "600002*******0120");
        assert_eq!(mask_pan("60\n002000000\r120"), "60?002******?120");
        assert_eq!(mask_pan("ĀĀĀĀĀĀĀĀĀĀĀĀ"), "??????**????");
        assert_eq!(mask_pan_bytes(b"6000020000000120"), "600002******0120");
        assert_eq!(mask_pan_bytes(&[0xff; 12]), "??????**????");
    }

    #[test]
    fn bank_table() {
        let rows = [
            (Bank::Bri, "002", "BRI", "600002"),
            (Bank::Mandiri, "008", "MANDIRI", "600008"),
            (Bank::Bni, "009", "BNI", "600009"),
            (Bank::Btn, "200", "BTN", "600200"),
            (Bank::Bsi, "451", "BSI", "600451"),
        ];
        assert_eq!(Bank::ALL.len(), rows.len());
        for (bank, code, name, bin) in rows {
            assert!(Bank::ALL.contains(&bank));
            assert_eq!(bank.code(), code);
            assert_eq!(bank.name(), name);
            assert_eq!(bank.to_string(), name);
            assert_eq!(bank.test_bin(), bin);
            assert_eq!(Bank::from_code(code), Some(bank));
            assert_eq!(Bank::from_code(&bank.code_n11()), Some(bank));
            assert_eq!(bank.code_n11().len(), 11);
            assert_eq!(Bank::from_name(name), Some(bank));
            assert_eq!(Bank::from_name(&name.to_lowercase()), Some(bank));
            assert_eq!(name.parse::<Bank>(), Ok(bank));
            assert_eq!(Bank::from_bin(bin), Some(bank));
        }
        assert_eq!(Bank::from_code("00000000002"), Some(Bank::Bri));
        assert_eq!(Bank::from_code("00000000451"), Some(Bank::Bsi));
        assert_eq!(Bank::from_code("000000000002"), None); // 12 digits
        assert_eq!(Bank::from_code("2"), None);
        assert_eq!(Bank::from_code("003"), None);
        assert_eq!(Bank::from_code("0x2"), None);
        assert_eq!(Bank::from_code(""), None);
        assert_eq!(Bank::from_name("BCA"), None);
        assert!("BCA".parse::<Bank>().is_err());
        assert_eq!(Bank::from_bin("60000"), None);
        assert_eq!(Bank::from_bin("6000020000000120"), Some(Bank::Bri));
        assert_eq!(Bank::from_bin("411111"), None);
        let foreign = Pan::parse(b"4111111111111111").expect("valid");
        assert_eq!(foreign.bank(), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_and_mask_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let parsed = Pan::parse(&bytes);
            if let Ok(pan) = &parsed {
                proptest::prop_assert_eq!(pan.digits(), &bytes[..]);
                proptest::prop_assert_eq!(format!("{pan:?}").len(), bytes.len());
            }
            let masked = mask_pan_bytes(&bytes);
            proptest::prop_assert_eq!(masked.chars().count(), bytes.len());
            let _ = mask_pan(&String::from_utf8_lossy(&bytes));
            let _ = luhn_valid(&bytes);
            proptest::prop_assert!(luhn_check_digit(&bytes).is_ascii_digit());
        }

        #[test]
        fn generated_pans_parse(payload in "[0-9]{11,18}") {
            let mut p = payload.clone();
            p.push(luhn_check_digit(p.as_bytes()) as char);
            proptest::prop_assert!(Pan::parse(p.as_bytes()).is_ok());
        }
    }
}
