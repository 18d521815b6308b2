//! Commands: everything that can change a bank's books, as plain data.
//!
//! Why one enum for all of it: the shard is the single writer for ISO 8583
//! traffic, disbursement waves, card administration and the dormant sweep
//! alike (DESIGN §3), and the journal is simply the sequence of command
//! batches with their timestamps. Replaying it rebuilds the state exactly,
//! so every command derives `Serialize`/`Deserialize`.
//!
//! Commands that arrive from outside and move or show money (credit,
//! purchase, withdrawal, inquiry, reversal) carry a [`Request`] with an
//! idempotency key. Administrative commands are idempotent by nature (opening
//! a PAN twice is `AlreadyExists`, blocking a blocked card changes nothing)
//! and carry none, so the key store is not filled with one key per card.

use serde::{Deserialize, Serialize};

use super::types::{
    Amount, BankCode, FamilyId, Fingerprint, MerchantId, Pan, Program, Pvv, RequestKey,
    TerminalKind,
};
use super::CardStatus;

/// Idempotency identity of a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Request {
    /// The key (ISO: MTI class + DE32 + DE41 + DE11 + DE7; disbursement:
    /// e.g. `PKH:2026-T1:<kk>`).
    pub key: RequestKey,
    /// The caller's digest of content fields the ledger does not see; see
    /// [`Fingerprint`].
    pub fingerprint: Fingerprint,
}

/// The terminal a card transaction came from, as the switch resolved it from
/// DE41/DE42 and its terminal registry. Terminals themselves are not ledger
/// state; only their settlement accounts are.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Acceptor {
    /// What the terminal is allowed to do.
    pub kind: TerminalKind,
    /// The terminal's (acquiring) bank, DE32.
    pub bank: BankCode,
    /// DE42. For a terminal of this ledger's bank it names the settlement
    /// account registered with [`Command::OpenTerminalAccount`]; for another
    /// bank's terminal the counter account is the interbank account for that
    /// bank and this id is not looked up.
    pub merchant: MerchantId,
}

/// Declines the switch worked out from fields the ledger does not see, passed
/// in so that they fall into their place in INTERFACE §5's order of checks
/// (after the card and PIN checks, which only the ledger can do).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub enum Precheck {
    /// Nothing wrong that the ledger cannot see.
    #[default]
    Passed,
    /// DE3 unsupported or not matching the wallet (step 7, → 12). Send such a
    /// request as a [`Command::BalanceInquiry`]: it then checks card and PIN
    /// and moves nothing.
    Unsupported,
    /// The basket holds an item BPNT may not buy (step 7, → 57 with DE44
    /// `INELIGIBLE:<item>`).
    Ineligible {
        /// The first ineligible commodity code, in basket order.
        item: [u8; 4],
    },
    /// DE49 not `360`, or the basket's line amounts do not add up to DE4
    /// (step 8, → 13).
    BadAmount,
}

/// A purchase or a cash withdrawal (INTERFACE §3, 0200).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Payment {
    /// Idempotency identity.
    pub request: Request,
    /// The wallet that pays (from DE3's account type).
    pub wallet: Program,
    /// DE2.
    pub pan: Pan,
    /// DE4.
    pub amount: Amount,
    /// The terminal.
    pub acceptor: Acceptor,
    /// The PVV of the PIN the terminal sent (DE52, decrypted and hashed by
    /// the crypto module). `None` if the PIN block did not decode; that counts
    /// as a wrong PIN.
    pub pin: Option<Pvv>,
    /// Declines found by the switch, placed in the order of checks.
    pub precheck: Precheck,
}

/// A balance inquiry (DE3 `310000`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Inquiry {
    /// Idempotency identity.
    pub request: Request,
    /// DE2.
    pub pan: Pan,
    /// The terminal.
    pub acceptor: Acceptor,
    /// As for [`Payment::pin`]; wrong PINs on inquiries count too.
    pub pin: Option<Pvv>,
    /// Declines found by the switch.
    pub precheck: Precheck,
}

/// A reversal (0400/0401/0420/0421) of the request named by DE90.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Reversal {
    /// The reversal's own idempotency identity (it has its own DE11).
    pub request: Request,
    /// The original's key: DE90's MTI class + DE32 + DE11 + DE7 with the
    /// reversal's DE41.
    pub original: RequestKey,
    /// DE2; must equal the original's (else 12).
    pub pan: Pan,
    /// DE4; must equal the original's (else 12).
    pub amount: Amount,
}

/// How a credit names its card.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum CardRef {
    /// By card number.
    Pan(Pan),
    /// By family (KK): the family's current card, so a credit follows a
    /// replaced card without the caller looking it up first.
    Family(FamilyId),
}

/// A disbursement credit from the ministry's source account.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Credit {
    /// Idempotency identity, one key per (program, period, family), e.g.
    /// `PKH:2026-T1:<kk>` or `BPNT:2026-01:<kk>`.
    pub request: Request,
    /// The wallet credited.
    pub program: Program,
    /// The card credited.
    pub card: CardRef,
    /// Amount, > 0.
    pub amount: Amount,
}

/// A disbursement credit for one family's period of one program, from the
/// ministry's source account to the family's current card.
///
/// Why not a [`Credit`] with a key: a wave credits every family of a bank,
/// and its idempotency is exactly "once per (family, program, period)"
/// (DESIGN §4), for as long as the card exists, not for a key retention
/// window. The card keeps the periods credited as a bitmap
/// ([`Marks`](crate::ledger::Marks)), so a repeat is answered as already
/// credited (approved, replayed, no effect) whatever its amount, with no
/// key record stored. It is also the journal's smallest credit: no key,
/// no fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PeriodCredit {
    /// The wallet credited.
    pub program: Program,
    /// The period as one number: a BPNT month is `year * 12 + month - 1`, a
    /// PKH tahap `year * 12 + tahap - 1` (see
    /// [`period_number`](crate::disbursement::period_number)); at most
    /// [`PERIOD_MAX`](crate::ledger::PERIOD_MAX).
    pub period: u16,
    /// The family, whose current card is credited.
    pub family: FamilyId,
    /// Amount, > 0.
    pub amount: Amount,
}

/// Everything that can change the books. See the module header.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Collective account opening: a card with its two empty wallets.
    /// `AlreadyExists` if the PAN exists or the family already has a card
    /// that is not closed.
    OpenCard {
        /// The new card's number.
        pan: Pan,
        /// The family it belongs to.
        family: FamilyId,
        /// PIN verification value of the initial PIN.
        pvv: Pvv,
        /// Initial status (`Active` for seeded cards, `Inactive` for cards
        /// to be activated at hand-over).
        status: CardStatus,
    },
    /// Registers the settlement account of one of this bank's e-Warong,
    /// agents or merchants. `AlreadyExists` if registered.
    OpenTerminalAccount {
        /// DE42 of the acceptor.
        merchant: MerchantId,
        /// What it is (kept for reports; permissions come from the command's
        /// [`Acceptor`]).
        kind: TerminalKind,
    },
    /// A disbursement credit.
    Credit(Credit),
    /// A purchase paid from one wallet.
    Purchase(Payment),
    /// A cash withdrawal at an agent.
    Withdrawal(Payment),
    /// Both balances (DE54).
    BalanceInquiry(Inquiry),
    /// Full reversal of an earlier purchase or withdrawal.
    Reversal(Reversal),
    /// `Inactive` → `Active`.
    Activate {
        /// The card.
        pan: Pan,
    },
    /// A new PIN: stores its PVV, clears the wrong-PIN count and lifts a PIN
    /// block (the PIN has been reset).
    SetPin {
        /// The card.
        pan: Pan,
        /// PVV of the new PIN.
        pvv: Pvv,
    },
    /// Blocked by the bank.
    Block {
        /// The card.
        pan: Pan,
    },
    /// Lifts a bank, dormant or PIN block and clears the wrong-PIN count;
    /// restarts the dormancy clock.
    Unblock {
        /// The card.
        pan: Pan,
    },
    /// Issues `new_pan` in place of `old_pan`: balances move by postings,
    /// the credit history (for the dormant sweep) and today's withdrawal
    /// usage move with them, the old card is closed (→ 62 afterwards).
    Replace {
        /// The card being replaced.
        old_pan: Pan,
        /// The new card's number; must not exist.
        new_pan: Pan,
        /// PVV of the new card's PIN.
        pvv: Pvv,
    },
    /// Closes a card; any balance returns to the treasury account.
    Close {
        /// The card.
        pan: Pan,
    },
    /// The dormant sweep as of a moment (unix seconds): blocks active cards
    /// unused for `dormant_block_days`, returns credits unspent after
    /// `dormant_return_days` to the treasury, oldest first.
    Sweep {
        /// The moment the rules are evaluated at, e.g. 00:00 WIB of the
        /// `--as-of` date. An `as_of` earlier than a previous sweep's is
        /// treated as that previous one.
        as_of: u64,
    },
    /// Forgets idempotency keys recorded before `before` (unix seconds).
    /// After this a retransmission of such a request is processed anew, so
    /// `before` should be at least `key_retention_days` in the past.
    ExpireKeys {
        /// Keys with a timestamp strictly below this are dropped.
        before: u64,
    },
    /// A disbursement credit, idempotent per (family, program, period).
    /// Last in the enum: journals written before it existed decode as they
    /// were.
    PeriodCredit(PeriodCredit),
}

impl Command {
    /// The idempotency key, for commands that have one.
    pub fn key(&self) -> Option<&RequestKey> {
        match self {
            Command::Credit(c) => Some(&c.request.key),
            Command::Purchase(p) | Command::Withdrawal(p) => Some(&p.request.key),
            Command::BalanceInquiry(q) => Some(&q.request.key),
            Command::Reversal(r) => Some(&r.request.key),
            _ => None,
        }
    }

    /// A stable 64-bit hash of every field of a keyed command except the PIN
    /// and the acceptor's kind: the ledger's own half of "same key, same
    /// content". The PIN is left out because a retransmission may carry a
    /// fresh PIN block; the kind because it comes from the registry, not the
    /// message. `0` for commands without a key.
    ///
    /// The layout is a fixed sequence of 64-bit words per command kind (a
    /// tag word first), folded by a fixed multiply-rotate hash; it is stored in
    /// checkpoints, so it must never change.
    pub fn content_hash(&self) -> u64 {
        let mut h = ContentHasher::new();
        match self {
            Command::Credit(c) => {
                let (target_tag, value, len) = match c.card {
                    CardRef::Pan(pan) => (0, pan.value(), u64::from(pan.digits())),
                    CardRef::Family(f) => (1, f.0, 0),
                };
                h.word(1 | (c.program.index() as u64) << 8 | target_tag << 16);
                h.word(value);
                h.word(len);
                h.word(c.amount);
            }
            Command::Purchase(p) | Command::Withdrawal(p) => {
                let tag = if matches!(self, Command::Purchase(_)) {
                    2
                } else {
                    3
                };
                h.word(tag | (p.wallet.index() as u64) << 8 | precheck_bits(&p.precheck) << 16);
                h.pan(&p.pan);
                h.word(p.amount);
                h.acceptor(&p.acceptor);
            }
            Command::BalanceInquiry(q) => {
                h.word(4 | precheck_bits(&q.precheck) << 16);
                h.pan(&q.pan);
                h.acceptor(&q.acceptor);
            }
            Command::Reversal(r) => {
                h.word(5);
                h.pan(&r.pan);
                h.word(r.amount);
                h.words(&r.original.words());
            }
            _ => return 0,
        }
        h.finish()
    }
}

/// A precheck as 40 bits: its tag, and the ineligible item's 4 bytes.
fn precheck_bits(p: &Precheck) -> u64 {
    match p {
        Precheck::Passed => 0,
        Precheck::Unsupported => 1,
        Precheck::Ineligible { item } => 2 | u64::from(u32::from_le_bytes(*item)) << 8,
        Precheck::BadAmount => 3,
    }
}

/// Folds 64-bit words with `h = (rotl(h, 5) ^ w) * K` (K odd). Each step is
/// a bijection in `h` for a fixed word and in the word for a fixed `h`, so
/// two word sequences of the same length that differ anywhere never
/// collide; each command kind has a fixed length. One multiply per word.
struct ContentHasher(u64);

impl ContentHasher {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new() -> ContentHasher {
        ContentHasher(0xcbf2_9ce4_8422_2325)
    }

    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(ContentHasher::K);
    }

    fn words(&mut self, ws: &[u64]) {
        for &w in ws {
            self.word(w);
        }
    }

    fn pan(&mut self, pan: &Pan) {
        self.word(pan.value());
        self.word(u64::from(pan.digits()));
    }

    fn acceptor(&mut self, a: &Acceptor) {
        self.word(u64::from(a.bank.0));
        self.words(&a.merchant.words());
    }

    fn finish(self) -> u64 {
        // One more round so the last word is mixed into the high bits too.
        let mut h = self;
        h.word(0);
        h.0
    }
}
