//! What applying a batch produces: one [`Outcome`] per command, the
//! [`Posting`]s that moved money, and the lists storage needs to persist the
//! batch ([`Effects`]).
//!
//! Why result codes and not `Result`: a decline is an ordinary answer of the
//! state machine (TigerBeetle's `create_transfer` results), mapped to DE39 in
//! one table (`codes.rs`). Nothing here is an error; a bug is an assertion.
//!
//! Why a caller-owned `Effects`: the shard applies a batch, journals it and
//! replies, over and over. Reusing the same vectors means the hot path
//! allocates nothing once they have grown to the batch size.

use serde::{Deserialize, Serialize};

use super::types::{AccountId, Amount, CardId, Pan, RequestKey};

/// Why a blocked card is blocked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum BlockReason {
    /// Blocked by the bank (`kks-switch card block`).
    Bank,
    /// Blocked by the dormant sweep.
    Dormant,
}

/// The result of one command. DE39 per variant is in `codes.rs`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Code {
    /// Done (00).
    Approved,
    /// Reversal of an original this ledger never saw: answered 00 and a
    /// tombstone kept, so the late original is declined `Reversed`.
    ReversalRecorded,
    /// Second reversal of the same original: 00, no second effect.
    ReversalRepeat,
    /// The acceptor is of this bank but has no registered account (03).
    UnknownTerminal,
    /// No card with this PAN (or family) at this bank (14).
    UnknownCard,
    /// The card is not activated yet (62).
    CardInactive,
    /// The card is blocked (62).
    CardBlocked {
        /// By whom.
        reason: BlockReason,
    },
    /// The card is closed, or was replaced (62).
    CardClosed,
    /// The card was already blocked by wrong PINs (75).
    PinBlocked,
    /// This wrong PIN was the last allowed; the card is now PIN-blocked (75).
    PinTriesExceeded,
    /// Wrong PIN (55, DE44 `TRIES-LEFT:<n>`).
    WrongPin {
        /// Wrong PINs still allowed before the card blocks.
        tries_left: u8,
    },
    /// Processing code unsupported or not matching the wallet (12).
    Unsupported,
    /// A reversal whose DE2 or DE4 differs from the original's, or whose
    /// original is not a card transaction (12); nothing reversed.
    ReversalMismatch,
    /// An administrative command that does not apply to the card's state,
    /// e.g. activating a blocked card (12).
    InvalidTransition,
    /// The transaction is not allowed at this kind of terminal (58).
    NotPermittedOnTerminal,
    /// BPNT cash withdrawal under rule set `food-only` (57).
    NotPermittedToCardholder,
    /// The basket holds an item BPNT may not buy (57, DE44 `INELIGIBLE:<item>`).
    Ineligible {
        /// The first ineligible commodity code.
        item: [u8; 4],
    },
    /// Amount zero or above the maximum, wrong currency, basket sum ≠ DE4 (13).
    AmountInvalid,
    /// Over the per-transaction or per-day withdrawal amount (61).
    AmountLimit,
    /// Over the daily withdrawal count (65).
    CountLimit,
    /// The paying wallet holds too little (51).
    InsufficientFunds,
    /// Same key, different content (94). Not stored; nothing changed.
    KeyConflict,
    /// The original of an earlier reversal arrived late (94, DE44
    /// `REVERSED`); never posted.
    Reversed,
    /// A PAN, family or terminal account that exists already (94).
    AlreadyExists,
    /// A balance or total would leave its range (96); nothing applied.
    Overflow,
}

impl Code {
    /// Whether the command took effect as asked (DE39 `00`).
    pub const fn is_approved(self) -> bool {
        matches!(
            self,
            Code::Approved | Code::ReversalRecorded | Code::ReversalRepeat
        )
    }
}

/// A 6-character approval code (DE38), derived from the ledger's approval
/// sequence: deterministic, so replay reproduces it, and unique for the
/// first 36⁶ (≈2.2 billion) approvals.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ApprovalCode(pub [u8; 6]);

impl ApprovalCode {
    const DIGITS: &'static [u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    /// Base-36 of `seq` modulo 36⁶, zero-padded.
    pub fn from_sequence(seq: u64) -> ApprovalCode {
        let mut v = seq;
        let mut out = [b'0'; 6];
        for slot in out.iter_mut().rev() {
            *slot = ApprovalCode::DIGITS[(v % 36) as usize];
            v /= 36;
        }
        ApprovalCode(out)
    }

    /// As text (always ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("000000")
    }
}

impl std::fmt::Debug for ApprovalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApprovalCode({})", self.as_str())
    }
}

/// Both wallet balances of a card, for DE54.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct Balances {
    /// PKH savings wallet (DE54 account type `10`).
    pub pkh: Amount,
    /// BPNT food wallet (DE54 account type `60`).
    pub bpnt: Amount,
}

/// The answer to a keyed request as it is stored with the key, so that a
/// retransmission gets exactly the same DE39, DE38, DE44 and DE54.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Reply {
    /// The result.
    pub code: Code,
    /// DE38 when approved.
    pub approval: Option<ApprovalCode>,
    /// Balances after an approved card transaction or inquiry.
    pub balances: Option<Balances>,
}

impl Reply {
    /// A reply with only a code.
    pub const fn code(code: Code) -> Reply {
        Reply {
            code,
            approval: None,
            balances: None,
        }
    }
}

/// A range of entries in one of the [`Effects`] vectors.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Span {
    /// First index.
    pub start: u32,
    /// Number of entries.
    pub len: u32,
}

impl Span {
    /// As a `Range` for slicing.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start as usize + self.len as usize)
    }
}

/// The result of one command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Outcome {
    /// Code, approval code and balances (the stored reply for a replay).
    pub reply: Reply,
    /// `true` when this is a retransmission answered from the key store: the
    /// reply is the original's and nothing changed (INTERFACE §5).
    pub replayed: bool,
    /// The postings this command made, in [`Effects::postings`].
    pub postings: Span,
    /// The sweep report lines this command made, in [`Effects::sweep`].
    pub sweep: Span,
}

impl Outcome {
    /// The result code.
    pub fn code(&self) -> Code {
        self.reply.code
    }
}

/// Why money moved.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum PostingKind {
    /// Disbursement: source → wallet.
    Credit,
    /// Purchase: wallet → terminal or interbank account.
    Purchase,
    /// Cash withdrawal: wallet → agent or interbank account.
    Withdrawal,
    /// Reversal: the original's counter account → wallet.
    Reversal,
    /// Dormant return: wallet → treasury.
    Sweep,
    /// Card replacement: old card's wallet → new card's wallet.
    Replace,
    /// Card closure: wallet → treasury.
    Close,
}

/// One balanced movement between two accounts of this bank. The debited
/// account's balance goes down by `amount`, the credited one's up.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Posting {
    /// The ledger-wide posting sequence number (gapless, from 0).
    pub id: u64,
    /// Account that pays.
    pub debit: AccountId,
    /// Account that receives.
    pub credit: AccountId,
    /// Amount, > 0.
    pub amount: Amount,
    /// Why.
    pub kind: PostingKind,
    /// Index of the command in its batch (its key, if any, is
    /// `batch[command].key()`).
    pub command: u32,
}

/// One card in a sweep report.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SweepLine {
    /// The card.
    pub card: CardId,
    /// Its number.
    pub pan: Pan,
    /// Blocked as dormant by this sweep.
    pub blocked: bool,
    /// Returned to the treasury from each wallet, indexed by
    /// [`Program::index`](crate::ledger::Program::index).
    pub returned: [Amount; 2],
}

/// Everything a batch produced, for the shard to journal and answer with.
/// Cleared by every `apply`; the vectors keep their capacity.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    /// The ledger's batch sequence number of this batch.
    pub batch: u64,
    /// One per command, in order.
    pub outcomes: Vec<Outcome>,
    /// Every posting, in order.
    pub postings: Vec<Posting>,
    /// Cards whose stored state changed (each once per batch), to upsert.
    pub cards: Vec<CardId>,
    /// Accounts opened by this batch (cards' wallets, terminal and interbank
    /// accounts), to insert before the postings that use them.
    pub accounts_opened: Vec<AccountId>,
    /// Idempotency keys inserted or updated (a reversal marks its original),
    /// to upsert; a key may appear more than once.
    pub keys: Vec<RequestKey>,
    /// Sweep report lines.
    pub sweep: Vec<SweepLine>,
}

impl Effects {
    /// Empty effects with room for `commands` commands.
    pub fn with_capacity(commands: usize) -> Effects {
        Effects {
            batch: 0,
            outcomes: Vec::with_capacity(commands),
            postings: Vec::with_capacity(commands),
            cards: Vec::with_capacity(commands),
            accounts_opened: Vec::new(),
            keys: Vec::with_capacity(commands),
            sweep: Vec::new(),
        }
    }

    /// Empties every list, keeping capacity.
    pub fn clear(&mut self) {
        self.outcomes.clear();
        self.postings.clear();
        self.cards.clear();
        self.accounts_opened.clear();
        self.keys.clear();
        self.sweep.clear();
    }

    /// The postings of one outcome.
    pub fn postings_of(&self, outcome: &Outcome) -> &[Posting] {
        self.postings.get(outcome.postings.range()).unwrap_or(&[])
    }

    /// The sweep lines of one outcome.
    pub fn sweep_of(&self, outcome: &Outcome) -> &[SweepLine] {
        self.sweep.get(outcome.sweep.range()).unwrap_or(&[])
    }
}
