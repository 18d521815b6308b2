//! The one table from ledger outcomes to ISO 8583 response fields: DE39
//! (response code) and DE44 (additional response data).
//!
//! Why one place: INTERFACE §5 is a table, and the switch, the simulator's
//! expectations and `specs/` must agree with it. Codes the ledger never
//! produces (30, 63, 03 for unknown terminals of other banks, 92, 91, 96 for
//! store failures) are the switch's.

use super::outcome::{Code, Outcome};

impl Code {
    /// DE39 for this code (INTERFACE §5).
    pub const fn de39(self) -> &'static str {
        match self {
            Code::Approved | Code::ReversalRecorded | Code::ReversalRepeat => "00",
            Code::UnknownTerminal => "03",
            Code::UnknownCard => "14",
            Code::CardInactive | Code::CardBlocked { .. } | Code::CardClosed => "62",
            Code::PinBlocked | Code::PinTriesExceeded => "75",
            Code::WrongPin { .. } => "55",
            Code::Unsupported | Code::ReversalMismatch | Code::InvalidTransition => "12",
            Code::NotPermittedOnTerminal => "58",
            Code::NotPermittedToCardholder | Code::Ineligible { .. } => "57",
            Code::AmountInvalid => "13",
            Code::AmountLimit => "61",
            Code::CountLimit => "65",
            Code::InsufficientFunds => "51",
            Code::KeyConflict | Code::Reversed | Code::AlreadyExists => "94",
            Code::Overflow => "96",
        }
    }

    /// DE44 for this code, if any: `TRIES-LEFT:<n>`, `REVERSED`,
    /// `INELIGIBLE:<item>`.
    pub fn de44(self) -> Option<De44> {
        match self {
            Code::WrongPin { tries_left } => {
                let mut d = De44::from_str("TRIES-LEFT:");
                let mut digits = [0u8; 3];
                let mut n = tries_left;
                let mut len = 0;
                loop {
                    digits[len] = b'0' + n % 10;
                    len += 1;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                for &b in digits[..len].iter().rev() {
                    d.push(b);
                }
                Some(d)
            }
            Code::Reversed => Some(De44::from_str("REVERSED")),
            Code::Ineligible { item } => {
                let mut d = De44::from_str("INELIGIBLE:");
                for b in item {
                    d.push(b);
                }
                Some(d)
            }
            _ => None,
        }
    }
}

/// DE39 for an outcome (a replay answers with the original's code).
pub fn de39(outcome: &Outcome) -> &'static str {
    outcome.reply.code.de39()
}

/// DE44 for an outcome, if any.
pub fn de44(outcome: &Outcome) -> Option<De44> {
    outcome.reply.code.de44()
}

/// Longest DE44 (ans..25).
pub const DE44_LEN_MAX: usize = 25;

/// A DE44 value held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct De44 {
    buf: [u8; DE44_LEN_MAX],
    len: u8,
}

impl De44 {
    fn from_str(s: &str) -> De44 {
        let mut d = De44 {
            buf: [0; DE44_LEN_MAX],
            len: 0,
        };
        for &b in s.as_bytes() {
            d.push(b);
        }
        d
    }

    /// Appends a byte; bytes past the field's maximum are dropped (never
    /// reached by the texts above).
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(usize::from(self.len)) {
            *slot = b;
            self.len += 1;
        }
    }

    /// The bytes as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// As text. Basket codes are checked `A-Z` by the switch; anything else
    /// would show as `?`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("?")
    }
}

impl std::fmt::Debug for De44 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "De44({:?})", self.as_str())
    }
}
