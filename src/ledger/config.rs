//! The ledger's configuration: which bank it keeps the books of, the BPNT
//! rule set, and every limit the program rules name (DESIGN §3).
//!
//! Why a plain struct passed to [`Ledger::new`](crate::ledger::Ledger::new):
//! the state machine reads no files and no environment; the config module
//! loads `specs/` and the TOML overrides and hands the values in. The same
//! values must be passed when a ledger is rebuilt by replay, so the config is
//! part of every checkpoint.

use serde::{Deserialize, Serialize};

use super::types::{Amount, BankCode};

/// Largest amount DE4 (n12) can carry: Rp9.999.999.999,99.
pub const AMOUNT_WIRE_MAX: Amount = 999_999_999_999;

/// Which BPNT rule set is in force (INTERFACE §3).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub enum RuleSet {
    /// e-Warong era (default): BPNT buys listed food only and cannot be
    /// withdrawn as cash (57).
    #[default]
    FoodOnly,
    /// Since March 2023: BPNT may be withdrawn at agents like PKH. The basket
    /// check is skipped by the caller.
    CashAllowed,
}

/// Limits and time windows. Amounts in DE4 units (2 implied decimals),
/// durations in days of 86 400 s.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Limits {
    /// Largest single cash withdrawal (default Rp1.000.000); over it → 61.
    pub withdrawal_amount_max: Amount,
    /// Largest total of withdrawals per card per WIB day, PKH and BPNT
    /// together (default Rp5.000.000); over it → 61.
    pub withdrawal_day_amount_max: Amount,
    /// Most withdrawals per card per WIB day (default 10); over it → 65.
    pub withdrawal_day_count_max: u32,
    /// Largest purchase or withdrawal amount accepted at all (default the n12
    /// maximum); over it → 13.
    pub amount_max: Amount,
    /// Consecutive wrong PINs that block the card (default 3) → 75.
    pub pin_tries_max: u8,
    /// Days without a cardholder transaction after which the sweep blocks an
    /// active card as dormant (default 90).
    pub dormant_block_days: u32,
    /// Days after which a credit still unspent returns to the treasury
    /// (default 105).
    pub dormant_return_days: u32,
    /// Days an idempotency key is kept (default 30). The ledger uses it only
    /// to decide when a spent credit lot's history can be forgotten; keys are
    /// dropped by an explicit [`Command::ExpireKeys`](crate::ledger::Command::ExpireKeys).
    pub key_retention_days: u32,
}

impl Limits {
    /// The `before` for a [`Command::ExpireKeys`](crate::ledger::Command::ExpireKeys)
    /// issued at `now` (unix seconds) that keeps `key_retention_days`.
    pub fn key_expiry_cutoff(&self, now: u64) -> u64 {
        now.saturating_sub(u64::from(self.key_retention_days) * super::types::SECONDS_PER_DAY)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            withdrawal_amount_max: 100_000_000,     // Rp1.000.000
            withdrawal_day_amount_max: 500_000_000, // Rp5.000.000
            withdrawal_day_count_max: 10,
            amount_max: AMOUNT_WIRE_MAX,
            pin_tries_max: 3,
            dormant_block_days: 90,
            dormant_return_days: 105,
            key_retention_days: 30,
        }
    }
}

/// Everything a ledger needs to be created (and recreated identically).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LedgerConfig {
    /// The bank whose books these are; acceptors of other banks post against
    /// the interbank account for their bank.
    pub bank: BankCode,
    /// BPNT rule set.
    pub rule_set: RuleSet,
    /// Limits and windows.
    pub limits: Limits,
}

impl LedgerConfig {
    /// Defaults for `bank`: rule set `food-only`, default limits.
    pub fn new(bank: BankCode) -> LedgerConfig {
        LedgerConfig {
            bank,
            rule_set: RuleSet::default(),
            limits: Limits::default(),
        }
    }
}
