//! Typed accessors for the data elements the interface uses (INTERFACE §2),
//! the mandatory-field table of INTERFACE §3, and the DE90 layout.
//! Accessors read in place; call [`Message::validate`] first so that n fields
//! are digits.

use super::error::{Error, ErrorKind, Part};
use super::message::Message;

/// Data element numbers used by the interface, named.
pub mod de {
    pub const PAN: u8 = 2;
    pub const PROCESSING_CODE: u8 = 3;
    pub const AMOUNT: u8 = 4;
    pub const TRANSMISSION: u8 = 7;
    pub const STAN: u8 = 11;
    pub const LOCAL_TIME: u8 = 12;
    pub const LOCAL_DATE: u8 = 13;
    pub const MCC: u8 = 18;
    pub const ACQUIRER: u8 = 32;
    pub const RRN: u8 = 37;
    pub const APPROVAL: u8 = 38;
    pub const RESPONSE: u8 = 39;
    pub const TERMINAL: u8 = 41;
    pub const MERCHANT: u8 = 42;
    pub const RESPONSE_DATA: u8 = 44;
    pub const BASKET: u8 = 48;
    pub const CURRENCY: u8 = 49;
    pub const PIN_BLOCK: u8 = 52;
    pub const BALANCES: u8 = 54;
    pub const MAC: u8 = 64;
    pub const NETWORK_CODE: u8 = 70;
    pub const ORIGINAL: u8 = 90;
    pub const MAC2: u8 = 128;
}

/// Message classes the host answers, with their mandatory fields (INTERFACE §3).
pub fn mandatory_fields(mti: &[u8]) -> &'static [u8] {
    match mti {
        b"0200" => &[2, 3, 4, 7, 11, 32, 41, 42, 49, 52],
        b"0400" | b"0401" | b"0420" | b"0421" => &[2, 3, 4, 7, 11, 32, 41, 42, 49, 90],
        b"0800" => &[7, 11, 70],
        _ => &[],
    }
}

/// The response MTI for a request MTI: third digit + 1 (0200→0210, 0401→0410,
/// 0421→0430, 0800→0810); repeat flags (last digit) are cleared.
pub fn response_mti(mti: &[u8]) -> [u8; 4] {
    let mut r = [b'0'; 4];
    if mti.len() >= 3 {
        r[0] = mti[0];
        r[1] = mti[1];
        r[2] = if mti[2].is_ascii_digit() && mti[2] < b'9' {
            mti[2] + 1
        } else {
            mti[2]
        };
    }
    r
}

/// DE90, original data elements: MTI n4 + STAN n6 + DE7 n10 + acquirer n11
/// (right-justified, zero-filled) + forwarding institution n11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalData {
    pub mti: [u8; 4],
    pub stan: [u8; 6],
    pub transmission: [u8; 10],
    pub acquirer: [u8; 11],
}

impl OriginalData {
    /// Parse a 42-digit DE90 value.
    pub fn parse(v: &[u8]) -> Option<OriginalData> {
        if v.len() != 42 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut o = OriginalData {
            mti: [0; 4],
            stan: [0; 6],
            transmission: [0; 10],
            acquirer: [0; 11],
        };
        o.mti.copy_from_slice(&v[0..4]);
        o.stan.copy_from_slice(&v[4..10]);
        o.transmission.copy_from_slice(&v[10..20]);
        o.acquirer.copy_from_slice(&v[20..31]);
        Some(o)
    }

    /// Encode to the 42-digit layout.
    pub fn encode(&self) -> [u8; 42] {
        let mut out = [b'0'; 42];
        out[0..4].copy_from_slice(&self.mti);
        out[4..10].copy_from_slice(&self.stan);
        out[10..20].copy_from_slice(&self.transmission);
        out[20..31].copy_from_slice(&self.acquirer);
        out
    }
}

impl<B: AsRef<[u8]>> Message<B> {
    /// The first mandatory field (INTERFACE §3) that is missing, as an error.
    pub fn check_mandatory(&self) -> Result<(), Error> {
        match mandatory_fields(self.mti()).iter().find(|&&n| !self.has(n)) {
            Some(&n) => Err(Error::new(ErrorKind::Missing, Part::Field(n), 0)),
            None => Ok(()),
        }
    }

    /// DE2, the PAN digits (mask before logging: [`crate::pan::mask_pan_bytes`]).
    pub fn pan(&self) -> Option<&str> {
        self.get_str(de::PAN)
    }
    /// DE3 as its 6 ASCII digits.
    pub fn processing_code(&self) -> Option<&[u8]> {
        self.get(de::PROCESSING_CODE)
    }
    /// DE4 in minor units (2 implied decimals).
    pub fn amount(&self) -> Option<u64> {
        self.get_u64(de::AMOUNT)
    }
    /// DE7 MMDDhhmmss.
    pub fn transmission(&self) -> Option<&[u8]> {
        self.get(de::TRANSMISSION)
    }
    /// DE11 STAN.
    pub fn stan(&self) -> Option<&[u8]> {
        self.get(de::STAN)
    }
    /// DE32 acquiring institution code.
    pub fn acquirer(&self) -> Option<&str> {
        self.get_str(de::ACQUIRER)
    }
    /// DE41 terminal ID.
    pub fn terminal_id(&self) -> Option<&[u8]> {
        self.get(de::TERMINAL)
    }
    /// DE42 card acceptor ID.
    pub fn merchant_id(&self) -> Option<&[u8]> {
        self.get(de::MERCHANT)
    }
    /// DE48 basket text.
    pub fn basket(&self) -> Option<&[u8]> {
        self.get(de::BASKET)
    }
    /// DE49 currency.
    pub fn currency(&self) -> Option<&[u8]> {
        self.get(de::CURRENCY)
    }
    /// DE52 encrypted PIN block (never log it).
    pub fn pin_block(&self) -> Option<[u8; 8]> {
        self.get(de::PIN_BLOCK).and_then(|v| v.try_into().ok())
    }
    /// DE70 network management code.
    pub fn network_code(&self) -> Option<&[u8]> {
        self.get(de::NETWORK_CODE)
    }
    /// DE90 parsed.
    pub fn original(&self) -> Option<OriginalData> {
        self.get(de::ORIGINAL).and_then(OriginalData::parse)
    }
    /// The MAC field in use (DE128 when the secondary bitmap is present, else
    /// DE64) and its value, if the message carries one.
    pub fn mac(&self) -> Option<(u8, &[u8])> {
        let n = if self.has(1) { de::MAC2 } else { de::MAC };
        self.get(n).map(|v| (n, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_mtis() {
        assert_eq!(&response_mti(b"0200"), b"0210");
        assert_eq!(&response_mti(b"0401"), b"0410");
        assert_eq!(&response_mti(b"0421"), b"0430");
        assert_eq!(&response_mti(b"0800"), b"0810");
        assert_eq!(&response_mti(b"0100"), b"0110");
    }

    #[test]
    fn de90_round_trip() {
        let v = b"020000010211250830000000000000200000000000";
        let o = OriginalData::parse(v).unwrap();
        assert_eq!(&o.mti, b"0200");
        assert_eq!(&o.stan, b"000102");
        assert_eq!(&o.transmission, b"1125083000");
        assert_eq!(&o.acquirer, b"00000000002");
        assert_eq!(&o.encode(), v);
        assert!(OriginalData::parse(&v[..41]).is_none());
        assert!(OriginalData::parse(b"02000001021125083000000000000020000000000A").is_none());
    }
}
