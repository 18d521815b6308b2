//! Checkpoints and the full invariant check.
//!
//! Why: restart is checkpoint + replay (DESIGN §2). Storage writes a
//! [`Snapshot`] (or streams the same records from [`Ledger::accounts`],
//! [`Ledger::cards`] and [`Ledger::keys`]) and later hands it to
//! [`Ledger::restore`], then replays the journal after it. Restore trusts
//! nothing: it rebuilds the indexes and runs [`Ledger::check_invariants`],
//! the same full scan `kks-switch audit` runs.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::config::LedgerConfig;
use super::machine::{Books, Ledger, ACCOUNTS_MAX};
use super::state::{
    Account, AccountKind, Card, CardStatus, KeyOp, KeyRecord, Marks, SOURCE_ACCOUNT,
    TREASURY_ACCOUNT,
};
use super::types::{CardId, Program, RequestKey};

/// The ledger's sequence numbers and clocks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Counters {
    /// Latest batch timestamp (unix seconds).
    pub now: u64,
    /// Approvals so far (next approval code is from `approvals + 1`).
    pub approvals: u64,
    /// Batches applied so far.
    pub batches: u64,
    /// Postings made so far (next posting id).
    pub postings: u64,
    /// The latest sweep's `as_of`.
    pub last_sweep_as_of: u64,
}

/// Everything needed to recreate a ledger exactly. Account and card ids are
/// positions in their vectors; keys are in the order they were recorded.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// The configuration it ran with.
    pub config: LedgerConfig,
    /// Sequence numbers and clocks.
    pub counters: Counters,
    /// All accounts, by id.
    pub accounts: Vec<Account>,
    /// All cards, by id.
    pub cards: Vec<Card>,
    /// All idempotency keys, oldest first.
    pub keys: Vec<(RequestKey, KeyRecord)>,
    /// Each card's credited periods ([`Card::marks`], which the card's own
    /// serialized form leaves out), by card id: as long as `cards`, or empty
    /// when read from a checkpoint written before marks existed. In a
    /// snapshot the cards' own `marks` fields are always empty.
    pub marks: Vec<[Marks; 2]>,
}

/// A snapshot as written before [`Snapshot::marks`] existed: the same
/// fields, in the same order, without the last one.
#[derive(Deserialize)]
struct SnapshotBeforeMarks {
    config: LedgerConfig,
    counters: Counters,
    accounts: Vec<Account>,
    cards: Vec<Card>,
    keys: Vec<(RequestKey, KeyRecord)>,
}

impl Snapshot {
    /// Reads a checkpoint body (postcard), of this version or of the one
    /// before [`Snapshot::marks`] (which then reads as empty).
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, postcard::Error> {
        match postcard::from_bytes::<Snapshot>(bytes) {
            Ok(s) => Ok(s),
            Err(e) => match postcard::from_bytes::<SnapshotBeforeMarks>(bytes) {
                Ok(old) => Ok(Snapshot {
                    config: old.config,
                    counters: old.counters,
                    accounts: old.accounts,
                    cards: old.cards,
                    keys: old.keys,
                    marks: Vec::new(),
                }),
                Err(_) => Err(e),
            },
        }
    }
}

/// A [`Snapshot`] taken cheaply, for checkpoints: the idempotency records
/// share memory with the running ledger (copy-on-write blocks, see
/// `ledger/blocks.rs`), so taking one costs the bank's task a copy of its
/// accounts and cards only, not of millions of key records; encoding it can
/// then run elsewhere. It serializes exactly as the [`Snapshot`] of the same
/// state, and is read back as one.
#[derive(Clone, Debug)]
pub struct SnapshotImage {
    config: LedgerConfig,
    counters: Counters,
    accounts: Vec<Account>,
    cards: Vec<Card>,
    keys: super::keys::FrozenKeys,
}

impl SnapshotImage {
    /// Idempotency records held.
    pub fn keys_len(&self) -> usize {
        self.keys.len()
    }
}

impl Serialize for SnapshotImage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_parts(
            serializer,
            &self.config,
            &self.counters,
            &self.accounts,
            &self.cards,
            &self.keys,
        )
    }
}

/// The running ledger's state, serialized in place as its [`Snapshot`]:
/// for a checkpoint when nothing changes the ledger while it is encoded
/// (the last one, at shutdown), so not even accounts and cards are copied.
pub struct SnapshotRef<'a> {
    config: LedgerConfig,
    counters: Counters,
    accounts: &'a [Account],
    cards: &'a [Card],
    keys: super::keys::FrozenKeys,
}

impl Serialize for SnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_parts(
            serializer,
            &self.config,
            &self.counters,
            self.accounts,
            self.cards,
            &self.keys,
        )
    }
}

/// Field for field what `#[derive(Serialize)]` writes for [`Snapshot`],
/// from the parts a ledger keeps.
fn serialize_parts<S: serde::Serializer>(
    serializer: S,
    config: &LedgerConfig,
    counters: &Counters,
    accounts: &[Account],
    cards: &[Card],
    keys: &super::keys::FrozenKeys,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    /// The keys as the `Vec<(RequestKey, KeyRecord)>` a snapshot holds.
    struct Keys<'a>(&'a super::keys::FrozenKeys);
    impl Serialize for Keys<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            // The length up front: postcard writes it before the items.
            let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
            for entry in self.0.iter() {
                seq.serialize_element(entry)?;
            }
            seq.end()
        }
    }
    /// The cards' marks as the `Vec<[Marks; 2]>` a snapshot holds.
    struct MarksOf<'a>(&'a [Card]);
    impl Serialize for MarksOf<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
            for card in self.0 {
                seq.serialize_element(&[card.lots[0].marks(), card.lots[1].marks()])?;
            }
            seq.end()
        }
    }
    let mut s = serializer.serialize_struct("Snapshot", 6)?;
    s.serialize_field("config", config)?;
    s.serialize_field("counters", counters)?;
    s.serialize_field("accounts", accounts)?;
    s.serialize_field("cards", cards)?;
    s.serialize_field("keys", &Keys(keys))?;
    s.serialize_field("marks", &MarksOf(cards))?;
    s.end()
}

/// Builds a ledger record by record, in the order a checkpoint body holds
/// them (accounts, cards, keys, then each card's credited periods), so a
/// checkpoint can be read piece by piece without first materialising a whole
/// [`Snapshot`]. [`LedgerBuilder::finish`] checks every invariant, like
/// [`Ledger::restore`].
pub struct LedgerBuilder {
    snapshot: Snapshot,
}

impl LedgerBuilder {
    /// A builder for a ledger with this configuration and these counters.
    pub fn new(config: LedgerConfig, counters: Counters) -> LedgerBuilder {
        LedgerBuilder {
            snapshot: Snapshot {
                config,
                counters,
                accounts: Vec::new(),
                cards: Vec::new(),
                keys: Vec::new(),
                marks: Vec::new(),
            },
        }
    }

    /// Room for this many more records of each kind (the counts a body
    /// gives before each list); capped, so a corrupt count cannot allocate
    /// without bound.
    pub fn reserve(&mut self, accounts: usize, cards: usize, keys: usize) {
        let cap = |n: usize| n.min(ACCOUNTS_MAX);
        let s = &mut self.snapshot;
        s.accounts.reserve(cap(accounts));
        s.cards.reserve(cap(cards));
        s.keys.reserve(cap(keys));
    }

    /// The next account (ids are positions: the first pushed is account 0).
    pub fn push_account(&mut self, account: Account) -> Result<(), InvariantViolation> {
        if self.snapshot.accounts.len() >= ACCOUNTS_MAX {
            return broken("too many accounts".into());
        }
        self.snapshot.accounts.push(account);
        Ok(())
    }

    /// The next card, in its serialized form (its own marks are ignored:
    /// they come from [`LedgerBuilder::push_marks`]).
    pub fn push_card(&mut self, card: Card) -> Result<(), InvariantViolation> {
        if self.snapshot.cards.len() >= ACCOUNTS_MAX {
            return broken("too many cards".into());
        }
        self.snapshot.cards.push(card);
        Ok(())
    }

    /// The next idempotency record, oldest first.
    pub fn push_key(
        &mut self,
        key: RequestKey,
        record: KeyRecord,
    ) -> Result<(), InvariantViolation> {
        self.snapshot.keys.push((key, record));
        Ok(())
    }

    /// The credited periods of the next card (card 0 first). Either none
    /// are pushed (a checkpoint written before marks existed) or one per
    /// card.
    pub fn push_marks(&mut self, marks: [Marks; 2]) -> Result<(), InvariantViolation> {
        if self.snapshot.marks.len() >= self.snapshot.cards.len() {
            return broken("credited periods for more cards than there are".into());
        }
        self.snapshot.marks.push(marks);
        Ok(())
    }

    /// The ledger, after checking every invariant.
    pub fn finish(self) -> Result<Ledger, InvariantViolation> {
        Ledger::restore(self.snapshot)
    }
}

impl Ledger {
    /// Accounts held (ids are `0..account_count()`).
    pub fn account_count(&self) -> usize {
        self.books.accounts.len()
    }

    /// Account `i` as a checkpoint writes it.
    pub fn account_record(&self, i: usize) -> Option<Account> {
        self.books.accounts.get(i).copied()
    }

    /// Cards held (ids are `0..card_count()`).
    pub fn card_count(&self) -> usize {
        self.cards.len()
    }

    /// Card `i` as a checkpoint writes it: its serialized form, with its
    /// credited periods left out (see [`Ledger::card_marks`]).
    pub fn card_record(&self, i: usize) -> Option<Card> {
        self.cards.get(i).map(|c| {
            let mut c = c.clone();
            for lots in &mut c.lots {
                lots.set_marks(Marks::default());
            }
            c
        })
    }

    /// Card `i`'s credited periods, PKH then BPNT.
    pub fn card_marks(&self, i: usize) -> Option<[Marks; 2]> {
        self.cards
            .get(i)
            .map(|c| [c.lots[0].marks(), c.lots[1].marks()])
    }
}

/// A broken invariant, found by [`Ledger::check_invariants`] or refused by
/// [`Ledger::restore`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ledger invariant broken: {what}")]
pub struct InvariantViolation {
    /// What is wrong, with ids (never a full PAN).
    pub what: String,
}

fn broken<T>(what: String) -> Result<T, InvariantViolation> {
    Err(InvariantViolation { what })
}

impl Ledger {
    /// The sequence numbers and clocks.
    pub fn counters(&self) -> Counters {
        Counters {
            now: self.now,
            approvals: self.approvals,
            batches: self.batches,
            postings: self.books.postings,
            last_sweep_as_of: self.last_sweep_as_of,
        }
    }

    /// A full copy of the state. Storage with millions of cards may prefer to
    /// stream [`Ledger::accounts`], [`Ledger::cards`] and [`Ledger::keys`]
    /// and build the `Snapshot` only on restore.
    pub fn snapshot(&self) -> Snapshot {
        let mut cards = self.cards.clone();
        let marks = cards
            .iter_mut()
            .map(|c| {
                let marks = [c.lots[0].marks(), c.lots[1].marks()];
                for lots in &mut c.lots {
                    lots.set_marks(Marks::default());
                }
                marks
            })
            .collect();
        Snapshot {
            config: self.config,
            counters: self.counters(),
            accounts: self.books.accounts.clone(),
            cards,
            keys: self.keys().map(|(k, r)| (*k, *r)).collect(),
            marks,
        }
    }

    /// The state as a [`SnapshotImage`]: copies accounts and cards, shares
    /// the idempotency records.
    pub fn snapshot_image(&self) -> SnapshotImage {
        SnapshotImage {
            config: self.config,
            counters: self.counters(),
            accounts: self.books.accounts.clone(),
            cards: self.cards.clone(),
            keys: self.keys.frozen(),
        }
    }

    /// The state as a [`SnapshotRef`], borrowing accounts and cards.
    pub fn snapshot_ref(&self) -> SnapshotRef<'_> {
        SnapshotRef {
            config: self.config,
            counters: self.counters(),
            accounts: &self.books.accounts,
            cards: &self.cards,
            keys: self.keys.frozen(),
        }
    }

    /// Recreates a ledger from a snapshot, after checking every invariant.
    pub fn restore(snapshot: Snapshot) -> Result<Ledger, InvariantViolation> {
        let Snapshot {
            config,
            counters,
            accounts,
            mut cards,
            keys,
            marks,
        } = snapshot;
        if accounts.len() > ACCOUNTS_MAX || cards.len() > ACCOUNTS_MAX {
            return broken("too many accounts or cards".into());
        }
        if !marks.is_empty() && marks.len() != cards.len() {
            return broken(format!(
                "{} cards but credited periods for {}",
                cards.len(),
                marks.len()
            ));
        }
        for (card, m) in cards.iter_mut().zip(marks) {
            for (lots, marks) in card.lots.iter_mut().zip(m) {
                lots.set_marks(marks);
            }
        }
        let mut ledger = Ledger::new(config);
        super::huge::advise_vec(&accounts);
        ledger.books = Books::new(accounts, counters.postings);
        ledger.now = counters.now;
        ledger.approvals = counters.approvals;
        ledger.batches = counters.batches;
        ledger.last_sweep_as_of = counters.last_sweep_as_of;

        for (i, account) in ledger.books.accounts.iter().enumerate() {
            let id = super::types::AccountId(i as u32); // ≤ ACCOUNTS_MAX, checked
            match account.kind {
                AccountKind::Terminal { merchant, .. } => {
                    let previous = ledger.terminals.insert(merchant, id);
                    if previous.is_some() {
                        return broken(format!("terminal account {merchant:?} twice"));
                    }
                }
                AccountKind::Interbank { bank } => {
                    if ledger.interbank.iter().any(|(b, _)| *b == bank) {
                        return broken(format!("interbank account for {bank} twice"));
                    }
                    ledger.interbank.push((bank, id));
                }
                _ => {}
            }
        }
        for (i, card) in cards.iter().enumerate() {
            let id = CardId(i as u32); // ≤ ACCOUNTS_MAX, checked
            if !ledger.pans.insert(card.pan, id) {
                return broken(format!("card {id:?}: PAN {:?} twice", card.pan));
            }
            // A family's latest card, as opening and replacing leave it.
            ledger.families.insert(card.family, id);
        }
        super::huge::advise_vec(&cards);
        ledger.cards = cards;
        for (key, record) in keys {
            if ledger.keys.get(&key).is_some() {
                return broken(format!("{key:?} twice"));
            }
            ledger.credit_keys += usize::from(super::machine::is_period_key(&key, &record));
            ledger.keys.insert(key, record);
        }
        ledger.check_invariants()?;
        Ok(ledger)
    }

    /// The full check, scanning everything: the books balance (the sum over
    /// all accounts is zero), no wallet is below zero and each equals its
    /// card's credited − consumed, lots are ordered, ids and indexes agree,
    /// at most one open card per family, keys are in time order. For tests,
    /// `audit` and restore; `apply` keeps only the cheap running checks.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let accounts = &self.books.accounts;
        if accounts.len() < 2
            || accounts[SOURCE_ACCOUNT.0 as usize].kind != AccountKind::Source
            || accounts[TREASURY_ACCOUNT.0 as usize].kind != AccountKind::Treasury
        {
            return broken("source and treasury must be accounts 0 and 1".into());
        }
        let mut sum: i128 = 0;
        for (i, account) in accounts.iter().enumerate() {
            sum += i128::from(account.balance);
            match account.kind {
                AccountKind::Source | AccountKind::Treasury if i > 1 => {
                    return broken(format!("account {i}: second source or treasury"));
                }
                AccountKind::Wallet { card, program } => {
                    let owner = self.cards.get(card.0 as usize);
                    if owner.map(|c| c.wallets[program.index()].account.0 as usize) != Some(i) {
                        return broken(format!(
                            "account {i}: wallet of {card:?} does not point back"
                        ));
                    }
                    if account.balance < 0 {
                        return broken(format!("account {i}: wallet below zero"));
                    }
                }
                AccountKind::Terminal { merchant, .. }
                    if self.terminals.get(&merchant).map(|a| a.0 as usize) != Some(i) =>
                {
                    return broken(format!("account {i}: terminal index disagrees"));
                }
                AccountKind::Interbank { bank } if bank == self.config.bank => {
                    return broken(format!("account {i}: interbank account for own bank"));
                }
                _ => {}
            }
        }
        if sum != 0 {
            return broken(format!("sum over all accounts is {sum}, not 0"));
        }
        if self.terminals.len()
            != accounts
                .iter()
                .filter(|a| matches!(a.kind, AccountKind::Terminal { .. }))
                .count()
        {
            return broken("terminal index has extra entries".into());
        }

        if self.pans.len() != self.cards.len() {
            return broken("card index size disagrees".into());
        }
        let mut open_families = HashSet::new();
        for (i, card) in self.cards.iter().enumerate() {
            let id = CardId(i as u32);
            if self.pans.get(&card.pan) != Some(id) {
                return broken(format!("card {i}: PAN index disagrees"));
            }
            if card.status != CardStatus::Closed && !open_families.insert(card.family) {
                return broken(format!("card {i}: family has two open cards"));
            }
            if let Some(next) = card.replaced_by {
                if next.0 as usize <= i || next.0 as usize >= self.cards.len() {
                    return broken(format!("card {i}: replaced by a bad card id"));
                }
                if card.status != CardStatus::Closed {
                    return broken(format!("card {i}: replaced but not closed"));
                }
            }
            for program in Program::ALL {
                let wallet = &card.wallets[program.index()];
                let account = accounts.get(wallet.account.0 as usize);
                match account {
                    Some(a) if a.kind == (AccountKind::Wallet { card: id, program }) => {
                        if wallet.consumed > wallet.credited {
                            return broken(format!("card {i}: consumed above credited"));
                        }
                        if i128::from(a.balance) != i128::from(wallet.credited - wallet.consumed) {
                            return broken(format!(
                                "card {i}: wallet balance ≠ credited − consumed"
                            ));
                        }
                    }
                    _ => return broken(format!("card {i}: wallet account is not its wallet")),
                }
                let lots = &card.lots[program.index()];
                let marks = lots.marks();
                if marks.bits != 0 && marks.base > super::machine::PERIOD_MAX {
                    return broken(format!("card {i}: credited periods past the last one"));
                }
                let mut end = lots.floor_end;
                let mut arrived = u64::from(lots.floor_arrived_at);
                for lot in &lots.lots {
                    if lot.end <= end || lot.arrived_at < arrived {
                        return broken(format!("card {i}: lots out of order"));
                    }
                    end = lot.end;
                    arrived = lot.arrived_at;
                }
                if end != wallet.credited {
                    return broken(format!("card {i}: lots do not add up to credited"));
                }
            }
        }
        for (family, card) in &self.families {
            if self.cards.get(card.0 as usize).map(|c| c.family) != Some(*family) {
                return broken(format!("family index points at {card:?} of another family"));
            }
        }

        if !self.keys.index_is_consistent() {
            return broken("key store index and records disagree".into());
        }
        let mut at = 0;
        for (key, record) in self.keys.iter() {
            if record.at < at || record.at > self.now {
                return broken(format!("{key:?} out of time order"));
            }
            at = record.at;
            if let Some(posted) = record.posted {
                let card_ok = (posted.card.0 as usize) < self.cards.len();
                let counter_ok = (posted.counter.0 as usize) < accounts.len();
                let op_ok = matches!(record.op, KeyOp::Purchase | KeyOp::Withdrawal);
                if !card_ok || !counter_ok || !op_ok {
                    return broken(format!("{key:?}: bad posted payment"));
                }
            }
        }
        Ok(())
    }
}
