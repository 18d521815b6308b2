//! The records the ledger keeps: accounts, cards with their wallets and
//! credit lots, and idempotency key records.
//!
//! Why these are public plain data: storage checkpoints them row by row and
//! hands them back to [`Ledger::restore`](crate::ledger::Ledger::restore),
//! which validates every invariant before trusting them. Only the state
//! machine changes them while it runs.
//!
//! Credit lots (for the dormant sweep) are kept as positions on a wallet's
//! cumulative money line rather than as "remaining" amounts: a wallet has
//! received `credited` in all and paid out `consumed` in all (purchases,
//! withdrawals, returns, closure), and lot *i* covers the stretch
//! `[end(i-1), end(i))` of the credits. Spending first-in-first-out is then
//! just `consumed += amount` (O(1), no lot walking on the hot path), a lot's
//! unspent part is whatever of its stretch lies above `consumed`, and a
//! reversal (`consumed -= amount`) leaves the lots exactly as if the
//! reversed payment had never happened.

use serde::{Deserialize, Serialize};

use super::command::CardRef;
use super::outcome::{BlockReason, Reply};
use super::types::{
    AccountId, Amount, BankCode, CardId, FamilyId, Fingerprint, MerchantId, Pan, Program, Pvv,
    TerminalKind,
};

/// The ministry's disbursement source account (goes negative as it pays).
pub const SOURCE_ACCOUNT: AccountId = AccountId(0);
/// The treasury account that dormant and closed balances return to.
pub const TREASURY_ACCOUNT: AccountId = AccountId(1);

/// What an account is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum AccountKind {
    /// [`SOURCE_ACCOUNT`].
    Source,
    /// [`TREASURY_ACCOUNT`].
    Treasury,
    /// One of a card's two wallets; never below zero.
    Wallet {
        /// The card.
        card: CardId,
        /// Which wallet.
        program: Program,
    },
    /// Settlement account of one of this bank's acceptors.
    Terminal {
        /// DE42.
        merchant: MerchantId,
        /// What it is.
        kind: TerminalKind,
    },
    /// Settlement with another bank whose terminals this bank's cards used.
    Interbank {
        /// The acquiring bank.
        bank: BankCode,
    },
}

/// An account: a signed balance (holder's view: positive holds money).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Account {
    /// What it is.
    pub kind: AccountKind,
    /// Balance in DE4 units. The sum over all accounts is always zero.
    pub balance: i64,
}

/// Card status (INTERFACE §5 steps 5–6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum CardStatus {
    /// Issued, not activated yet (62).
    Inactive,
    /// Usable.
    Active,
    /// Blocked by the bank or as dormant (62).
    Blocked {
        /// Why.
        reason: BlockReason,
    },
    /// Blocked by wrong PINs (75) until unblocked or a new PIN is set.
    PinBlocked,
    /// Closed or replaced (62). Final.
    Closed,
}

/// One credit's stretch of a wallet's money line (see module header).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Lot {
    /// When the credit arrived (unix seconds, the batch timestamp).
    pub arrived_at: u64,
    /// Cumulative credited amount at the end of this lot.
    pub end: Amount,
}

/// A wallet's money line: the part every payment reads and writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[repr(C)]
pub struct Wallet {
    /// The wallet's account.
    pub account: AccountId,
    /// Everything ever credited (reversals do not count: they lower
    /// `consumed`).
    pub credited: Amount,
    /// Everything ever paid out (purchases, withdrawals, returns, closure),
    /// net of reversals. Balance = credited − consumed.
    pub consumed: Amount,
}

impl Wallet {
    /// credited − consumed.
    pub fn balance(&self) -> Amount {
        // consumed ≤ credited is an invariant, checked after every change.
        self.credited.saturating_sub(self.consumed)
    }
}

/// A wallet's credit lots, for the dormant sweep, and the disbursement
/// periods credited to it: only credits, the sweep and replacement touch
/// them, so they live apart from the hot fields. 40 bytes in the card; the
/// kept lots are on the heap, allocated to their exact number.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Lots {
    /// Lots older than the ones kept are merged into one "floor" stretch
    /// `[0, floor_end)`; it only matters if a reversal lowers `consumed`
    /// below it.
    pub floor_end: Amount,
    /// Arrival of the newest lot merged into the floor (so a floor is never
    /// returned earlier than any of its lots would have been), unix seconds.
    pub floor_arrived_at: u32,
    /// The wallet's [`Marks`], split so the card stays 256 bytes. Not in the
    /// serialized form: a snapshot carries marks in its own field.
    #[serde(skip)]
    mark_base: u16,
    /// Kept lots, oldest first; ends strictly increasing, above `floor_end`,
    /// the last one (or the floor) ending at the wallet's `credited`.
    /// (Serialized as the list it is; a boxed slice, 16 bytes, rather than
    /// a `Vec`, 24, as it changes only when a credit arrives or the sweep
    /// merges lots.)
    #[serde(with = "boxed_lots")]
    pub lots: Box<[Lot]>,
    #[serde(skip)]
    mark_bits: u64,
}

impl Lots {
    /// The disbursement periods credited to the wallet.
    pub fn marks(&self) -> Marks {
        Marks {
            base: self.mark_base,
            bits: self.mark_bits,
        }
    }

    /// Replaces the wallet's marks.
    pub fn set_marks(&mut self, marks: Marks) {
        self.mark_base = marks.base;
        self.mark_bits = marks.bits;
    }

    /// Appends a lot.
    pub(crate) fn push(&mut self, lot: Lot) {
        // Allocated to the exact length: a Vec's growth (and shrinking
        // afterwards) would leave every wallet a fragment of unused heap.
        let mut v = Vec::with_capacity(self.lots.len() + 1);
        v.extend_from_slice(&self.lots);
        v.push(lot);
        self.lots = v.into_boxed_slice();
    }

    /// Drops the oldest `n` lots.
    pub(crate) fn drop_oldest(&mut self, n: usize) {
        self.lots = self.lots[n.min(self.lots.len())..].into();
    }
}

/// Serde for [`Lots::lots`]: exactly as the `Vec<Lot>` it was.
mod boxed_lots {
    use super::Lot;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(lots: &[Lot], s: S) -> Result<S::Ok, S::Error> {
        lots.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[Lot]>, D::Error> {
        Ok(Vec::<Lot>::deserialize(d)?.into_boxed_slice())
    }
}

/// A unix time in seconds as the card keeps it (`u32`, which lasts until
/// 2106); later times are kept as `u32::MAX`.
pub(crate) fn card_secs(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// A KKS card and its two wallets.
///
/// Laid out by hand (`repr(C)`, 64-byte aligned, 256 bytes): everything a
/// card transaction reads or writes is in the first two cache lines, so a
/// purchase on a card that is not in cache costs two misses, not four. Times
/// are `u32` unix seconds, which keeps the card at four lines (and they
/// serialize exactly as the `u64`s they were: postcard writes both as the
/// same varint).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[repr(C, align(64))]
pub struct Card {
    // Cache line 0. (Fields are in the order checkpoints have always
    // written them.)
    /// Status.
    pub status: CardStatus,
    /// Consecutive wrong PINs.
    pub pin_tries: u8,
    /// Withdrawals on `day`, net of reversals.
    pub day_count: u32,
    /// The WIB day the withdrawal usage belongs to.
    pub day: u64,
    /// PIN verification value.
    pub pvv: Pvv,
    /// Withdrawn on `day`, net of reversals.
    pub day_amount: Amount,
    /// Approved purchases, net of reversals (for `audit --json`).
    pub purchased: Amount,
    // Cache line 1.
    /// PKH then BPNT, indexed by [`Program::index`].
    pub wallets: [Wallet; 2],
    /// Last cardholder transaction (unix seconds): any request that passed
    /// the PIN check. Credits do not count.
    pub last_use_at: Option<u32>,
    /// Approved withdrawals, net of reversals (for `audit --json`).
    pub withdrawn: Amount,
    // Cold.
    /// Card number (DE2).
    pub pan: Pan,
    /// Family (KK).
    pub family: FamilyId,
    /// When opened (or issued as a replacement), unix seconds.
    pub opened_at: u32,
    /// First credit ever (carried over on replacement), unix seconds.
    pub first_credit_at: Option<u32>,
    /// Last activation, unblock or replacement (unix seconds): restarts the
    /// dormancy clock so an unblocked card is not blocked again by the next
    /// sweep.
    pub clock_reset_at: u32,
    /// The card that replaced this one; reversals of this card's payments
    /// credit that card.
    pub replaced_by: Option<CardId>,
    /// Credit lots and credited periods of each wallet, indexed like
    /// `wallets`.
    pub lots: [Lots; 2],
}

impl Card {
    /// Both wallet balances.
    pub fn balances(&self) -> super::outcome::Balances {
        super::outcome::Balances {
            pkh: self.wallets[0].balance(),
            bpnt: self.wallets[1].balance(),
        }
    }

    /// The moment the dormancy clock runs from: the last cardholder
    /// transaction, else the first credit, else the opening; but never before
    /// the last activation, unblock or replacement.
    pub fn dormancy_anchor(&self) -> u64 {
        u64::from(
            self.last_use_at
                .or(self.first_credit_at)
                .unwrap_or(self.opened_at)
                .max(self.clock_reset_at),
        )
    }

    /// Disbursement periods credited to the wallet of `program`.
    pub fn marks(&self, program: Program) -> Marks {
        self.lots[program.index()].marks()
    }
}

/// The disbursement periods credited to one wallet, as a 64-period window:
/// bit `i` of `bits` is period `base + i` (a period is a number, see
/// [`PeriodCredit::period`](crate::ledger::PeriodCredit::period)).
///
/// Why a bitmap and not a key record per credit: a wave credits every
/// family of a bank once per period, and an idempotency record per credit
/// (~200 bytes with its index) would outweigh the card itself; the bitmap
/// costs ten bytes per wallet however many waves have paid it. 64 periods
/// are 5⅓ years of BPNT months or 16 years of PKH tahap. Bits that fall out
/// of the window (a period 64 or more below the newest credited) are
/// forgotten, and a credit for a period below the window is refused as
/// [`MarkError::TooOld`] rather than risk paying it twice.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Marks {
    /// Period of bit 0.
    pub base: u16,
    /// Credited periods in the window.
    pub bits: u64,
}

/// Why a period cannot be marked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MarkError {
    /// Credited before.
    Already,
    /// Below the window: whether it was credited is no longer known.
    TooOld,
}

impl Marks {
    /// Whether `period` is marked (false for periods outside the window).
    pub fn contains(&self, period: u16) -> bool {
        period >= self.base && period - self.base < 64 && self.bits >> (period - self.base) & 1 == 1
    }

    /// Whether `period` could be marked: not marked, and not below the
    /// window once it is moved to include `period`.
    pub fn check(&self, period: u16) -> Result<(), MarkError> {
        if self.contains(period) {
            return Err(MarkError::Already);
        }
        if self.bits != 0 {
            let highest = self.base + (63 - self.bits.leading_zeros() as u16);
            if period < highest && highest - period >= 64 {
                return Err(MarkError::TooOld);
            }
        }
        Ok(())
    }

    /// Marks `period` (which [`check`](Marks::check) accepted), moving the
    /// window so it holds `period` and as many of the older marks as fit.
    pub fn insert(&mut self, period: u16) {
        debug_assert!(self.check(period).is_ok());
        if self.bits == 0 {
            *self = Marks {
                base: period,
                bits: 1,
            };
            return;
        }
        let lowest = self.base + self.bits.trailing_zeros() as u16;
        let highest = self.base + (63 - self.bits.leading_zeros() as u16);
        // New window: from the lowest period kept to the highest, where
        // `period` may extend either end; the oldest marks fall out if the
        // span would exceed 64.
        let top = highest.max(period);
        let base = lowest.min(period).max(top.saturating_sub(63));
        let bits = if base >= self.base {
            let shift = u32::from(base - self.base);
            if shift >= 64 {
                0
            } else {
                self.bits >> shift
            }
        } else {
            // Only when `period` is below the old lowest mark, and then the
            // whole span fits (checked), so nothing is shifted out.
            self.bits << u32::from(self.base - base)
        };
        *self = Marks {
            base,
            bits: bits | 1 << (period - base),
        };
    }
}

/// What a key was used for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum KeyOp {
    /// Disbursement credit.
    Credit,
    /// Purchase.
    Purchase,
    /// Cash withdrawal.
    Withdrawal,
    /// Balance inquiry.
    Inquiry,
    /// A reversal's own key.
    Reversal,
    /// Not a request: the key of an original that was reversed before it
    /// arrived. The original is declined `Reversed` if it ever comes.
    Tombstone,
}

/// An approved payment that a reversal can undo.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Posted {
    /// The card that paid.
    pub card: CardId,
    /// The wallet that paid.
    pub wallet: Program,
    /// The account that received (terminal or interbank).
    pub counter: AccountId,
    /// The WIB day of the payment (a reversed withdrawal gives its usage
    /// back only on the same day).
    pub day: u64,
}

/// What the ledger remembers about a key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    /// When recorded (unix seconds); `ExpireKeys` drops by this.
    pub at: u64,
    /// What kind of request.
    pub op: KeyOp,
    /// The caller's content fingerprint.
    pub fingerprint: Fingerprint,
    /// The ledger's content hash ([`Command::content_hash`](crate::ledger::Command::content_hash)).
    pub content: u64,
    /// DE2 (or the family, for a credit by family): a reversal must match it.
    pub target: CardRef,
    /// DE4: a reversal must match it.
    pub amount: Amount,
    /// The answer, returned again to a retransmission.
    pub reply: Reply,
    /// Set when an approved payment moved money.
    pub posted: Option<Posted>,
    /// Set once a reversal named this key.
    pub reversed: bool,
}

/// A wallet's money line as a card keeps it in memory: [`Wallet`] without
/// the account id (a card's two wallet accounts are consecutive, see
/// [`CardState::account`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct WalletLine {
    /// Everything ever credited.
    pub(crate) credited: Amount,
    /// Everything ever paid out, net of reversals.
    pub(crate) consumed: Amount,
}

impl WalletLine {
    /// credited − consumed.
    pub(crate) fn balance(&self) -> Amount {
        self.credited.saturating_sub(self.consumed)
    }
}

/// [`CardState::flags`]: `last_use_at` holds a time.
const HAS_LAST_USE: u8 = 1;
/// [`CardState::flags`]: `first_credit_at` holds a time.
const HAS_FIRST_CREDIT: u8 = 2;
/// [`CardState::flags`], per wallet: its lots are in the ledger's side table
/// (`Ledger::cold`), not inline.
pub(crate) const COLD_LOTS: [u8; 2] = [4, 8];
/// [`CardState::flags`], per wallet: the inline stretch is a floor (all of
/// `[0, credited)` merged by the sweep), not one kept lot.
pub(crate) const INLINE_FLOOR: [u8; 2] = [16, 32];

/// What a wallet's lots are, as the card holds them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LotsInline {
    /// Nothing credited yet.
    Empty,
    /// One lot `[0, credited)` that arrived at this time (unix seconds).
    One(u32),
    /// A floor `[0, credited)` whose newest lot arrived at this time.
    Floor(u32),
    /// In the ledger's side table.
    Cold,
}

/// A card as the ledger keeps it in memory: 160 bytes, the fields a card
/// transaction reads first (money lines, PIN value, PAN, daily usage,
/// status: the first 112 bytes), then what credits, the sweep and
/// replacement use. Its serialized form, and what queries return, is
/// [`Card`]; the two convert exactly ([`CardState::from_record`],
/// [`CardState::record`]).
///
/// Why not [`Card`] itself: a disbursement wave holds every family's card
/// in one process (20 million of them for all of Indonesia), and `Card`
/// (256 bytes, with two 24-byte wallet accounts, 40-byte lot headers and a
/// heap allocation per credited wallet) put that at ~9 GB. Here:
/// - the wallet accounts are not rows: a card's two wallet accounts are
///   consecutive ids (`account`, `account + 1`) and their balances are the
///   wallets' own `credited − consumed`;
/// - a wallet's lots are inline while they are one lot (or one floor) that
///   starts at zero, which is what every wallet has after its first wave;
///   longer histories go to a side table keyed by card and wallet;
/// - the PAN is its numeric value and digit count, times are `u32` seconds
///   (as `Card` already kept them), and optional ones are flagged.
///
/// `Debug` is written out: the derived one would print `pan_value`, the
/// whole card number, where [`Pan`]'s own `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct CardState {
    /// PKH then BPNT, indexed by [`Program::index`].
    pub(crate) wallets: [WalletLine; 2],
    /// PIN verification value.
    pub(crate) pvv: Pvv,
    /// The PAN's numeric value (digit count in `pan_len`).
    pan_value: u64,
    /// Withdrawn on `day`, net of reversals.
    pub(crate) day_amount: Amount,
    /// Approved purchases, net of reversals.
    pub(crate) purchased: Amount,
    /// Approved withdrawals, net of reversals.
    pub(crate) withdrawn: Amount,
    /// Last cardholder transaction, if `flags` has [`HAS_LAST_USE`].
    last_use_at: u32,
    /// The PKH wallet's account id; the BPNT wallet's is the next.
    pub(crate) account: u32,
    /// The WIB day the withdrawal usage belongs to (days since 1970 fit
    /// `u16` until 2149; later days are kept as `u16::MAX`).
    pub(crate) day: u16,
    /// Withdrawals on `day`, net of reversals (saturating; a daily count
    /// limit is far below `u16::MAX`).
    pub(crate) day_count: u16,
    /// Status.
    pub(crate) status: CardStatus,
    /// Consecutive wrong PINs.
    pub(crate) pin_tries: u8,
    /// The PAN's digit count.
    pan_len: u8,
    /// Presence and lot-form bits (see the constants above).
    pub(crate) flags: u8,
    /// Family (KK).
    pub(crate) family: FamilyId,
    /// Each wallet's credited-period window: bits.
    pub(crate) mark_bits: [u64; 2],
    /// Each wallet's inline lot (or floor) arrival.
    lot_at: [u32; 2],
    /// When opened (or issued as a replacement).
    pub(crate) opened_at: u32,
    /// First credit ever, if `flags` has [`HAS_FIRST_CREDIT`].
    first_credit_at: u32,
    /// Last activation, unblock or replacement.
    pub(crate) clock_reset_at: u32,
    /// Each wallet's credited-period window: period of bit 0.
    pub(crate) mark_base: [u16; 2],
}

impl std::fmt::Debug for CardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardState")
            .field("pan", &self.pan())
            .field("family", &self.family)
            .field("status", &self.status)
            .field("pin_tries", &self.pin_tries)
            .field("pvv", &self.pvv)
            .field("wallets", &self.wallets)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl CardState {
    /// A newly opened card.
    pub(crate) fn new(
        pan: Pan,
        family: FamilyId,
        pvv: Pvv,
        status: CardStatus,
        account: AccountId,
        now: u32,
    ) -> CardState {
        CardState {
            wallets: [WalletLine::default(); 2],
            day_amount: 0,
            pvv,
            purchased: 0,
            withdrawn: 0,
            pan_value: pan.value(),
            family,
            mark_bits: [0; 2],
            day: 0,
            day_count: 0,
            last_use_at: 0,
            account: account.0,
            lot_at: [0; 2],
            opened_at: now,
            first_credit_at: 0,
            clock_reset_at: now,
            mark_base: [0; 2],
            status,
            pin_tries: 0,
            pan_len: pan.digits(),
            flags: 0,
        }
    }

    /// The card number.
    pub(crate) fn pan(&self) -> Pan {
        // Built from a valid `Pan` and never changed.
        Pan::from_parts(self.pan_value, self.pan_len)
            .unwrap_or_else(|| unreachable!("a card's PAN parts come from a valid PAN"))
    }

    /// Whether this card's PAN is `pan` (no `Pan` built).
    #[inline]
    pub(crate) fn has_pan(&self, pan: &Pan) -> bool {
        self.pan_value == pan.value() && self.pan_len == pan.digits()
    }

    /// Wallet `w`'s account id.
    #[inline]
    pub(crate) fn wallet_account(&self, w: usize) -> AccountId {
        AccountId(self.account + w as u32)
    }

    /// Both wallet balances.
    pub(crate) fn balances(&self) -> super::outcome::Balances {
        super::outcome::Balances {
            pkh: self.wallets[0].balance(),
            bpnt: self.wallets[1].balance(),
        }
    }

    pub(crate) fn last_use_at(&self) -> Option<u32> {
        (self.flags & HAS_LAST_USE != 0).then_some(self.last_use_at)
    }

    pub(crate) fn set_last_use_at(&mut self, at: Option<u32>) {
        self.last_use_at = at.unwrap_or(0);
        self.set_flag(HAS_LAST_USE, at.is_some());
    }

    pub(crate) fn first_credit_at(&self) -> Option<u32> {
        (self.flags & HAS_FIRST_CREDIT != 0).then_some(self.first_credit_at)
    }

    pub(crate) fn set_first_credit_at(&mut self, at: Option<u32>) {
        self.first_credit_at = at.unwrap_or(0);
        self.set_flag(HAS_FIRST_CREDIT, at.is_some());
    }

    fn set_flag(&mut self, bit: u8, on: bool) {
        if on {
            self.flags |= bit;
        } else {
            self.flags &= !bit;
        }
    }

    /// See [`Card::dormancy_anchor`].
    pub(crate) fn dormancy_anchor(&self) -> u64 {
        u64::from(
            self.last_use_at()
                .or(self.first_credit_at())
                .unwrap_or(self.opened_at)
                .max(self.clock_reset_at),
        )
    }

    /// Wallet `w`'s credited periods.
    #[inline]
    pub(crate) fn marks(&self, w: usize) -> Marks {
        Marks {
            base: self.mark_base[w],
            bits: self.mark_bits[w],
        }
    }

    pub(crate) fn set_marks(&mut self, w: usize, marks: Marks) {
        self.mark_base[w] = marks.base;
        self.mark_bits[w] = marks.bits;
    }

    /// Marks `period` credited in wallet `w` ([`Marks::insert`]; its check
    /// passed).
    pub(crate) fn mark(&mut self, w: usize, period: u16) {
        let mut marks = self.marks(w);
        marks.insert(period);
        self.set_marks(w, marks);
    }

    /// Wallet `w`'s lots as the card holds them.
    #[inline]
    pub(crate) fn lots_inline(&self, w: usize) -> LotsInline {
        if self.flags & COLD_LOTS[w] != 0 {
            LotsInline::Cold
        } else if self.wallets[w].credited == 0 {
            LotsInline::Empty
        } else if self.flags & INLINE_FLOOR[w] != 0 {
            LotsInline::Floor(self.lot_at[w])
        } else {
            LotsInline::One(self.lot_at[w])
        }
    }

    /// Sets wallet `w`'s lot form. `Empty` and `One`/`Floor` describe
    /// `[0, credited)`; the caller keeps `credited` in step.
    pub(crate) fn set_lots_inline(&mut self, w: usize, form: LotsInline) {
        let (cold, floor, at) = match form {
            LotsInline::Empty => (false, false, 0),
            LotsInline::One(at) => (false, false, at),
            LotsInline::Floor(at) => (false, true, at),
            LotsInline::Cold => (true, false, 0),
        };
        self.set_flag(COLD_LOTS[w], cold);
        self.set_flag(INLINE_FLOOR[w], floor);
        self.lot_at[w] = at;
    }

    /// Wallet `w`'s lots in their serialized form, marks left out; `cold` is
    /// what the side table holds for it, if anything.
    pub(crate) fn lots(&self, w: usize, cold: Option<&Lots>) -> Lots {
        let credited = self.wallets[w].credited;
        match self.lots_inline(w) {
            LotsInline::Empty => Lots::default(),
            LotsInline::One(at) => Lots {
                lots: vec![Lot {
                    arrived_at: u64::from(at),
                    end: credited,
                }]
                .into_boxed_slice(),
                ..Lots::default()
            },
            LotsInline::Floor(at) => Lots {
                floor_end: credited,
                floor_arrived_at: at,
                ..Lots::default()
            },
            LotsInline::Cold => {
                let mut lots = cold.cloned().unwrap_or_default();
                lots.set_marks(Marks::default());
                lots
            }
        }
    }

    /// The inline form of `lots` for a wallet that has credited `credited`,
    /// if it has one.
    pub(crate) fn inline_form(lots: &Lots, credited: Amount) -> Option<LotsInline> {
        let short = |t: u64| u32::try_from(t).ok();
        match (&*lots.lots, lots.floor_end, lots.floor_arrived_at) {
            ([], 0, 0) if credited == 0 => Some(LotsInline::Empty),
            ([lot], 0, 0) if lot.end == credited => short(lot.arrived_at).map(LotsInline::One),
            ([], end, at) if end == credited && end > 0 => Some(LotsInline::Floor(at)),
            _ => None,
        }
    }

    /// The card as its serialized [`Card`], marks left out; `cold` gives
    /// the side table's lots for a wallet, `replaced_by` the card that
    /// replaced it (kept beside the cards: few cards have one).
    pub(crate) fn record(
        &self,
        cold: impl Fn(usize) -> Option<Lots>,
        replaced_by: Option<CardId>,
    ) -> Card {
        let lots = |w: usize| {
            let c = cold(w);
            self.lots(w, c.as_ref())
        };
        Card {
            status: self.status,
            pin_tries: self.pin_tries,
            day_count: u32::from(self.day_count),
            day: u64::from(self.day),
            pvv: self.pvv,
            day_amount: self.day_amount,
            purchased: self.purchased,
            wallets: [0, 1].map(|w| Wallet {
                account: self.wallet_account(w),
                credited: self.wallets[w].credited,
                consumed: self.wallets[w].consumed,
            }),
            last_use_at: self.last_use_at(),
            withdrawn: self.withdrawn,
            pan: self.pan(),
            family: self.family,
            opened_at: self.opened_at,
            first_credit_at: self.first_credit_at(),
            clock_reset_at: self.clock_reset_at,
            replaced_by,
            lots: [lots(0), lots(1)],
        }
    }

    /// A card from its serialized form and its marks; the lots that need the
    /// side table are returned with it (the replacement, if any, is the
    /// record's `replaced_by`). `None` if the record cannot be held: its
    /// wallet accounts are not consecutive, or a day number or daily count
    /// past `u16`.
    pub(crate) fn from_record(
        card: &Card,
        marks: [Marks; 2],
    ) -> Option<(CardState, [Option<Lots>; 2])> {
        let account = card.wallets[0].account;
        if card.wallets[1].account.0 != account.0.checked_add(1)? {
            return None;
        }
        let mut state = CardState::new(
            card.pan,
            card.family,
            card.pvv,
            card.status,
            account,
            card.opened_at,
        );
        state.pin_tries = card.pin_tries;
        state.day_count = u16::try_from(card.day_count).ok()?;
        state.day = u16::try_from(card.day).ok()?;
        state.day_amount = card.day_amount;
        state.purchased = card.purchased;
        state.withdrawn = card.withdrawn;
        state.set_last_use_at(card.last_use_at);
        state.set_first_credit_at(card.first_credit_at);
        state.clock_reset_at = card.clock_reset_at;
        let mut cold = [None, None];
        for w in 0..2 {
            state.wallets[w] = WalletLine {
                credited: card.wallets[w].credited,
                consumed: card.wallets[w].consumed,
            };
            state.set_marks(w, marks[w]);
            let mut lots = card.lots[w].clone();
            lots.set_marks(Marks::default());
            match CardState::inline_form(&lots, state.wallets[w].credited) {
                Some(form) => state.set_lots_inline(w, form),
                None => {
                    state.set_lots_inline(w, LotsInline::Cold);
                    cold[w] = Some(lots);
                }
            }
        }
        Some((state, cold))
    }
}
