//! The ledger: one bank's books as a pure, deterministic state machine.
//!
//! Why pure: the shard that owns a bank applies batches of requests, makes
//! each batch durable in one database transaction and only then answers
//! (DESIGN §2). If the state machine reads no clock and does no I/O, then the
//! journal of command batches, replayed with their timestamps, rebuilds the
//! books exactly, and tests and simulations are reproducible.
//!
//! # Model
//!
//! - Accounts hold signed balances in DE4 units (IDR, 2 implied decimals).
//!   Account 0 is the ministry's disbursement source (goes negative as it
//!   pays), account 1 the treasury that dormant money returns to. Each card
//!   has a PKH wallet and a BPNT wallet (never below zero); each registered
//!   e-Warong, agent or merchant of this bank has a settlement account; each
//!   other bank whose terminals this bank's cards used has an interbank
//!   account. Every movement is a balanced [`Posting`] between two of them,
//!   so the sum over all accounts is always zero.
//! - Cards: PAN, family, status, PIN verification value and wrong-PIN count,
//!   dormancy clock, per-WIB-day withdrawal usage, credit lots.
//! - Idempotency keys: what each keyed request answered, so a
//!   retransmission gets the same answer with no second effect, and a
//!   reversal can find its original.
//!
//! # How the switch calls it
//!
//! Per request: resolve DE41/DE42 to the terminal record ([`Acceptor`]),
//! parse DE3 to a command and wallet, check the basket and DE49 (their
//! declines go in [`Precheck`], because INTERFACE §5 puts them after the
//! card and PIN checks), turn DE52 into a candidate [`Pvv`], build the
//! [`RequestKey`] and a [`Fingerprint`] of the content the ledger does not
//! see. Then queue the [`Command`] to the bank's shard. The shard calls
//! [`Ledger::apply`] with everything queued and one timestamp, journals the
//! batch, and answers each request from its [`Outcome`]: DE39 from
//! [`de39`], DE44 from [`de44`], DE38 from `reply.approval`, DE54 from
//! `reply.balances` on inquiries. Codes 30, 63, 03 (other banks'
//! terminals), 92, 91 and 96 for store failures are the switch's own.
//!
//! # How storage journals and restores
//!
//! - Journal: the batch's commands (they are `Serialize`) and its timestamp,
//!   plus, for querying, [`Effects::postings`] (each names its command by
//!   index). Replaying the journal's batches in order with the same
//!   timestamps on the restored state gives identical state and outcomes.
//! - Checkpoint: [`Ledger::snapshot`] (or the rows from [`Ledger::accounts`],
//!   [`Ledger::cards`], [`Ledger::keys`] and [`Ledger::counters`]); after a
//!   batch, [`Effects::cards`], [`Effects::accounts_opened`],
//!   [`Effects::keys`] and the postings' accounts are the rows that changed,
//!   for incremental checkpoints. [`Command::ExpireKeys`] drops every key
//!   recorded before its `before`.
//! - Restore: [`Ledger::restore`] checks every invariant before trusting a
//!   snapshot; [`Ledger::check_invariants`] is what `audit` runs.
//!
//! # Time
//!
//! Timestamps are unix seconds (UTC). Withdrawal limits count per WIB day
//! ([`wib_day`]); dormancy counts in days of 86 400 s from the relevant
//! moment.
//!
//! # Speed
//!
//! With a bank's cards and keys far larger than the CPU caches, a purchase
//! is bound by cache misses, not instructions (`benches/ledger.rs`). So: the
//! hot-path indexes (PAN → card, key digest → record, kept disbursement
//! credits included) are open-addressing tables with 16-byte slots
//! (`table.rs`); key records are appended in arrival order (`keys.rs`); a
//! card's hot fields sit in its first two cache lines ([`Card`]); hashing
//! is a seeded folded multiply (`hash.rs`); and `apply` first prefetches
//! what the next chunk of commands needs (index slots, records, cards,
//! accounts, and the slots the new key records will be written to), stage
//! by stage, so the misses overlap (`Ledger::warm`). The big tables can be
//! backed by huge pages (`huge.rs`, opt-in). A purchase allocates nothing
//! once the tables and the [`Effects`] vectors have grown.

mod blocks;
mod codes;
mod command;
mod config;
mod hash;
mod huge;
mod keys;
mod machine;
mod outcome;
mod query;
mod serde_bytes;
mod snapshot;
mod state;
mod stream;
mod table;
mod types;

#[cfg(test)]
mod tests;

pub use codes::{de39, de44, De44, DE44_LEN_MAX};
pub use command::{
    Acceptor, CardRef, Command, Credit, Inquiry, Payment, PeriodCredit, Precheck, Request, Reversal,
};
pub use config::{LedgerConfig, Limits, RuleSet, AMOUNT_WIRE_MAX};
pub use machine::{Ledger, ACCOUNTS_MAX, BATCH_COMMANDS_MAX, PERIOD_MAX};
pub use outcome::{
    ApprovalCode, Balances, BlockReason, Code, Effects, Outcome, Posting, PostingKind, Reply, Span,
    SweepLine,
};
pub use snapshot::{
    Counters, InvariantViolation, LedgerBuilder, Snapshot, SnapshotImage, SnapshotRef,
};
pub use state::{
    Account, AccountKind, Card, CardStatus, KeyOp, KeyRecord, Lot, Lots, MarkError, Marks, Posted,
    Wallet, SOURCE_ACCOUNT, TREASURY_ACCOUNT,
};
pub use stream::{BodyError, BodyPieces, BodyReader};
pub use types::{
    wib_day, AccountId, Amount, BankCode, CardId, FamilyId, Fingerprint, MerchantId, Pan, Program,
    Pvv, RequestKey, TerminalKind, MERCHANT_ID_LEN, PAN_DIGITS_MAX, REQUEST_KEY_LEN_MAX,
    SECONDS_PER_DAY, WIB_OFFSET_SECONDS,
};
