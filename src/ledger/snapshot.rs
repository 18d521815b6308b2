//! Checkpoints and the full invariant check.
//!
//! Why: restart is checkpoint + replay (DESIGN §2). Storage writes a
//! [`Snapshot`] (or streams the same records from [`Ledger::accounts`],
//! [`Ledger::cards`] and [`Ledger::keys`]) and later hands it to
//! [`Ledger::restore`], then replays the journal after it. Restore trusts
//! nothing: it rebuilds the indexes and runs [`Ledger::check_invariants`],
//! the same full scan `kks-switch audit` runs.

use serde::{Deserialize, Serialize};

use super::config::LedgerConfig;
use super::hash::FastMap;
use super::machine::{cold_key, Books, Ledger, ACCOUNTS_MAX};
use super::state::{
    Account, AccountKind, Card, CardState, CardStatus, KeyOp, KeyRecord, Lots, LotsInline, Marks,
    SOURCE_ACCOUNT, TREASURY_ACCOUNT,
};
use super::types::{AccountId, CardId, Program, RequestKey};

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

/// The state a checkpoint writes, borrowed: non-wallet accounts, cards and
/// the lots that do not fit in them. From it come the account and card
/// records exactly as a [`Snapshot`] holds them.
#[derive(Clone, Copy)]
struct StateView<'a> {
    others: &'a [Account],
    other_ids: &'a [AccountId],
    cards: &'a [CardState],
    cold: &'a FastMap<u64, Lots>,
    replaced: &'a FastMap<CardId, CardId>,
}

impl<'a> StateView<'a> {
    fn of(ledger: &'a Ledger) -> StateView<'a> {
        StateView {
            others: &ledger.books.others,
            other_ids: &ledger.books.other_ids,
            cards: &ledger.cards,
            cold: &ledger.cold,
            replaced: &ledger.replaced,
        }
    }

    fn accounts_len(&self) -> usize {
        self.others.len() + 2 * self.cards.len()
    }

    fn card_record(&self, i: usize) -> Card {
        let id = CardId(i as u32);
        self.cards[i].record(
            |w| self.cold.get(&cold_key(id, w)).cloned(),
            self.replaced.get(&id).copied(),
        )
    }
}

/// Every account in id order, as a checkpoint writes them: the non-wallet
/// accounts merged with the cards' wallet pairs (both are in id order).
pub(crate) struct AccountRecords<'a> {
    others: &'a [Account],
    other_ids: &'a [AccountId],
    cards: &'a [CardState],
    next: u64,
    other: usize,
    card: usize,
}

impl<'a> AccountRecords<'a> {
    pub(crate) fn new(
        others: &'a [Account],
        other_ids: &'a [AccountId],
        cards: &'a [CardState],
    ) -> AccountRecords<'a> {
        AccountRecords {
            others,
            other_ids,
            cards,
            next: 0,
            other: 0,
            card: 0,
        }
    }
}

impl Iterator for AccountRecords<'_> {
    type Item = Account;

    fn next(&mut self) -> Option<Account> {
        let id = self.next;
        if self.other < self.other_ids.len() && u64::from(self.other_ids[self.other].0) == id {
            self.next += 1;
            self.other += 1;
            return Some(self.others[self.other - 1]);
        }
        let c = self.cards.get(self.card)?;
        let w = id.checked_sub(u64::from(c.account))?;
        if w > 1 {
            return None; // ids not covered: `check_invariants` reports it
        }
        let w = w as usize;
        self.next += 1;
        let card = CardId(self.card as u32);
        if w == 1 {
            self.card += 1;
        }
        Some(Account {
            kind: AccountKind::Wallet {
                card,
                program: Program::ALL[w],
            },
            balance: i64::try_from(c.wallets[w].balance()).unwrap_or(i64::MAX),
        })
    }
}

/// A [`Snapshot`] taken cheaply, for checkpoints: the idempotency records
/// share memory with the running ledger (copy-on-write blocks, see
/// `ledger/blocks.rs`), so taking one costs the bank's task a copy of its
/// cards and accounts only, not of millions of key records; encoding it can
/// then run elsewhere. It serializes exactly as the [`Snapshot`] of the same
/// state, and is read back as one.
#[derive(Clone, Debug)]
pub struct SnapshotImage {
    config: LedgerConfig,
    counters: Counters,
    others: Vec<Account>,
    other_ids: Vec<AccountId>,
    cards: Vec<CardState>,
    cold: FastMap<u64, Lots>,
    replaced: FastMap<CardId, CardId>,
    keys: super::keys::FrozenKeys,
}

impl SnapshotImage {
    /// Idempotency records held.
    pub fn keys_len(&self) -> usize {
        self.keys.len()
    }

    fn view(&self) -> StateView<'_> {
        StateView {
            others: &self.others,
            other_ids: &self.other_ids,
            cards: &self.cards,
            cold: &self.cold,
            replaced: &self.replaced,
        }
    }
}

impl Serialize for SnapshotImage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_parts(
            serializer,
            &self.config,
            &self.counters,
            self.view(),
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
    view: StateView<'a>,
    keys: super::keys::FrozenKeys,
}

impl Serialize for SnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_parts(
            serializer,
            &self.config,
            &self.counters,
            self.view,
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
    view: StateView<'_>,
    keys: &super::keys::FrozenKeys,
) -> Result<S::Ok, S::Error> {
    use serde::ser::{SerializeSeq, SerializeStruct};
    /// The keys as the `Vec<(RequestKey, KeyRecord)>` a snapshot holds.
    struct Keys<'a>(&'a super::keys::FrozenKeys);
    impl Serialize for Keys<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            // The length up front: postcard writes it before the items.
            let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
            for entry in self.0.iter() {
                seq.serialize_element(entry)?;
            }
            seq.end()
        }
    }
    /// The accounts as the `Vec<Account>` a snapshot holds.
    struct Accounts<'a>(StateView<'a>);
    impl Serialize for Accounts<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let v = self.0;
            let mut seq = serializer.serialize_seq(Some(v.accounts_len()))?;
            for account in AccountRecords::new(v.others, v.other_ids, v.cards) {
                seq.serialize_element(&account)?;
            }
            seq.end()
        }
    }
    /// The cards as the `Vec<Card>` a snapshot holds (marks left out).
    struct Cards<'a>(StateView<'a>);
    impl Serialize for Cards<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let v = self.0;
            let mut seq = serializer.serialize_seq(Some(v.cards.len()))?;
            for i in 0..v.cards.len() {
                seq.serialize_element(&v.card_record(i))?;
            }
            seq.end()
        }
    }
    /// The cards' marks as the `Vec<[Marks; 2]>` a snapshot holds.
    struct MarksOf<'a>(&'a [CardState]);
    impl Serialize for MarksOf<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
            for card in self.0 {
                seq.serialize_element(&[card.marks(0), card.marks(1)])?;
            }
            seq.end()
        }
    }
    let mut s = serializer.serialize_struct("Snapshot", 6)?;
    s.serialize_field("config", config)?;
    s.serialize_field("counters", counters)?;
    s.serialize_field("accounts", &Accounts(view))?;
    s.serialize_field("cards", &Cards(view))?;
    s.serialize_field("keys", &Keys(keys))?;
    s.serialize_field("marks", &MarksOf(view.cards))?;
    s.end()
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

/// One wallet's part of the check that the wallet accounts a body lists
/// and the cards' own wallet lines agree (see [`LedgerBuilder`]).
fn wallet_print(id: AccountId, card: CardId, w: usize, balance: i64) -> u64 {
    use std::hash::Hasher;
    let mut h = super::hash::FastHasher::fixed();
    h.write_u64(u64::from(id.0) << 32 | u64::from(card.0));
    h.write_u64(w as u64);
    h.write_u64(balance as u64);
    h.finish()
}

/// Builds a ledger record by record, in the order a checkpoint body holds
/// them (accounts, cards, keys, then each card's credited periods), so a
/// checkpoint can be read piece by piece without first materialising a whole
/// [`Snapshot`]. [`LedgerBuilder::finish`] checks every invariant, like
/// [`Ledger::restore`].
///
/// The body lists every account, wallets included, but the ledger keeps no
/// rows for wallets (see `Books`): a wallet account record is checked for
/// its place (the k-th wallet account is wallet k mod 2 of card k / 2) and
/// folded into a fingerprint of (id, card, wallet, balance); each card adds
/// the same fingerprint from its own wallet lines, and `finish` requires
/// the two to be equal. That holds the whole body's wallets to agreement in
/// constant memory; an accidental match is a 64-bit hash collision.
pub struct LedgerBuilder {
    ledger: Ledger,
    /// Account records seen.
    accounts: u64,
    /// Wallet account records seen.
    wallet_accounts: u64,
    /// Fingerprints from the account records and from the cards.
    from_accounts: u64,
    from_cards: u64,
    /// Marks pushed.
    marks: usize,
}

impl LedgerBuilder {
    /// A builder for a ledger with this configuration and these counters.
    pub fn new(config: LedgerConfig, counters: Counters) -> LedgerBuilder {
        let mut ledger = Ledger::new(config);
        ledger.books = Books::new(counters.postings);
        ledger.now = counters.now;
        ledger.approvals = counters.approvals;
        ledger.batches = counters.batches;
        ledger.last_sweep_as_of = counters.last_sweep_as_of;
        LedgerBuilder {
            ledger,
            accounts: 0,
            wallet_accounts: 0,
            from_accounts: 0,
            from_cards: 0,
            marks: 0,
        }
    }

    /// Room for this many more records of each kind (the counts a body
    /// gives before each list); capped, so a corrupt count cannot allocate
    /// without bound.
    pub fn reserve(&mut self, accounts: usize, cards: usize, keys: usize) {
        let _ = (accounts, keys);
        let cards = cards.min(1 << 26);
        let l = &mut self.ledger;
        if l.cards.is_empty() && cards > 0 {
            l.cards.reserve_exact(cards);
            l.pans = super::table::PanIndex::with_capacity(cards);
            l.families = super::table::FamilyIndex::with_capacity(cards);
        }
    }

    /// The next account (ids are positions: the first pushed is account 0).
    pub fn push_account(&mut self, account: Account) -> Result<(), InvariantViolation> {
        let next = self.accounts;
        if next >= ACCOUNTS_MAX as u64 {
            return broken("too many accounts".into());
        }
        let id = AccountId(next as u32);
        let books = &mut self.ledger.books;
        // Books::new made source and treasury (ids 0 and 1); from id 2 on,
        // the books' own count is the next id.
        let first = |kind: AccountKind| match kind {
            AccountKind::Source => Some(SOURCE_ACCOUNT),
            AccountKind::Treasury => Some(TREASURY_ACCOUNT),
            _ => None,
        };
        match first(account.kind) {
            Some(place) if place == id => {
                books.others[id.0 as usize].balance = account.balance;
                self.accounts += 1;
                return Ok(());
            }
            Some(_) => {
                return broken(format!("account {}: source or treasury out of place", id.0));
            }
            None if next < 2 || books.count != next => {
                return broken(format!("account {}: before source and treasury", id.0));
            }
            None => {}
        }
        match account.kind {
            AccountKind::Wallet { card, program } => {
                let k = self.wallet_accounts;
                if u64::from(card.0) != k / 2 || program.index() as u64 != k % 2 {
                    return broken(format!("account {}: wallet out of card order", id.0));
                }
                if account.balance < 0 {
                    return broken(format!("account {}: wallet below zero", id.0));
                }
                self.wallet_accounts += 1;
                self.from_accounts = self.from_accounts.wrapping_add(wallet_print(
                    id,
                    card,
                    program.index(),
                    account.balance,
                ));
                books.count += 1;
            }
            AccountKind::Terminal { merchant, .. } => {
                books.push_other(account);
                if self.ledger.terminals.insert(merchant, id).is_some() {
                    return broken(format!("terminal account {merchant:?} twice"));
                }
            }
            AccountKind::Interbank { bank } => {
                books.push_other(account);
                if self.ledger.interbank.iter().any(|(b, _)| *b == bank) {
                    return broken(format!("interbank account for {bank} twice"));
                }
                self.ledger.interbank.push((bank, id));
            }
            AccountKind::Source | AccountKind::Treasury => unreachable!("handled above"),
        }
        self.accounts += 1;
        Ok(())
    }

    /// The next card, in its serialized form (its own marks are ignored:
    /// they come from [`LedgerBuilder::push_marks`]).
    pub fn push_card(&mut self, card: Card) -> Result<(), InvariantViolation> {
        let l = &mut self.ledger;
        let i = l.cards.len();
        if i >= ACCOUNTS_MAX / 2 {
            return broken("too many cards".into());
        }
        let id = CardId(i as u32);
        let Some((state, cold)) = CardState::from_record(&card, [Marks::default(); 2]) else {
            return broken(format!(
                "card {i}: wallet accounts, day or replacement unusable"
            ));
        };
        if let Some(last) = l.cards.last() {
            if state.account <= last.account.saturating_add(1) {
                return broken(format!("card {i}: wallet accounts out of order"));
            }
        }
        for w in 0..2 {
            let balance =
                i64::try_from(state.wallets[w].balance()).map_err(|_| InvariantViolation {
                    what: format!("card {i}: wallet balance past i64"),
                })?;
            if state.wallets[w].consumed > state.wallets[w].credited {
                return broken(format!("card {i}: consumed above credited"));
            }
            self.from_cards =
                self.from_cards
                    .wrapping_add(wallet_print(state.wallet_account(w), id, w, balance));
        }
        let (pan, family) = (card.pan, card.family);
        if let Some(next) = card.replaced_by {
            l.replaced.insert(id, next);
        }
        super::huge::push(&mut l.cards, state);
        if !l.pans.insert(pan, id, &l.cards) {
            return broken(format!("card {id:?}: PAN {pan:?} twice"));
        }
        // A family's latest card, as opening and replacing leave it.
        l.families.set(family, id, &l.cards);
        for (w, lots) in cold.into_iter().enumerate() {
            if let Some(lots) = lots {
                l.cold.insert(cold_key(id, w), lots);
            }
        }
        Ok(())
    }

    /// The next idempotency record, oldest first.
    pub fn push_key(
        &mut self,
        key: RequestKey,
        record: KeyRecord,
    ) -> Result<(), InvariantViolation> {
        let l = &mut self.ledger;
        if l.keys.get(&key).is_some() {
            return broken(format!("{key:?} twice"));
        }
        l.credit_keys += usize::from(super::machine::is_period_key(&key, &record));
        l.keys.insert(key, record);
        Ok(())
    }

    /// The credited periods of the next card (card 0 first). Either none
    /// are pushed (a checkpoint written before marks existed) or one per
    /// card.
    pub fn push_marks(&mut self, marks: [Marks; 2]) -> Result<(), InvariantViolation> {
        let Some(card) = self.ledger.cards.get_mut(self.marks) else {
            return broken("credited periods for more cards than there are".into());
        };
        for (w, m) in marks.into_iter().enumerate() {
            card.set_marks(w, m);
        }
        self.marks += 1;
        Ok(())
    }

    /// The ledger, after checking every invariant.
    pub fn finish(self) -> Result<Ledger, InvariantViolation> {
        let l = self.ledger;
        if self.accounts < 2 {
            return broken("source and treasury must be accounts 0 and 1".into());
        }
        if self.marks != 0 && self.marks != l.cards.len() {
            return broken(format!(
                "{} cards but credited periods for {}",
                l.cards.len(),
                self.marks
            ));
        }
        if self.wallet_accounts != 2 * l.cards.len() as u64 {
            return broken(format!(
                "{} wallet accounts for {} cards",
                self.wallet_accounts,
                l.cards.len()
            ));
        }
        if self.from_accounts != self.from_cards {
            return broken("wallet accounts disagree with their cards".into());
        }
        super::huge::advise_vec(&l.cards);
        l.check_invariants()?;
        Ok(l)
    }
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

    /// A full copy of the state, in its serialized form.
    pub fn snapshot(&self) -> Snapshot {
        let view = StateView::of(self);
        Snapshot {
            config: self.config,
            counters: self.counters(),
            accounts: self.account_records().collect(),
            cards: (0..self.cards.len()).map(|i| view.card_record(i)).collect(),
            keys: self.keys().map(|(k, r)| (*k, *r)).collect(),
            marks: self
                .cards
                .iter()
                .map(|c| [c.marks(0), c.marks(1)])
                .collect(),
        }
    }

    /// The state as a [`SnapshotImage`]: copies accounts and cards, shares
    /// the idempotency records.
    pub fn snapshot_image(&self) -> SnapshotImage {
        SnapshotImage {
            config: self.config,
            counters: self.counters(),
            others: self.books.others.clone(),
            other_ids: self.books.other_ids.clone(),
            cards: self.cards.clone(),
            cold: self.cold.clone(),
            replaced: self.replaced.clone(),
            keys: self.keys.frozen(),
        }
    }

    /// The state as a [`SnapshotRef`], borrowing accounts and cards.
    pub fn snapshot_ref(&self) -> SnapshotRef<'_> {
        SnapshotRef {
            config: self.config,
            counters: self.counters(),
            view: StateView::of(self),
            keys: self.keys.frozen(),
        }
    }

    /// Recreates a ledger from a snapshot, after checking every invariant.
    pub fn restore(snapshot: Snapshot) -> Result<Ledger, InvariantViolation> {
        let Snapshot {
            config,
            counters,
            accounts,
            cards,
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
        let mut b = LedgerBuilder::new(config, counters);
        b.reserve(accounts.len(), cards.len(), keys.len());
        for a in accounts {
            b.push_account(a)?;
        }
        for c in cards {
            b.push_card(c)?;
        }
        for (k, r) in keys {
            b.push_key(k, r)?;
        }
        for m in marks {
            b.push_marks(m)?;
        }
        b.finish()
    }

    /// The full check, scanning everything: the books balance (the sum over
    /// all accounts is zero), no wallet is below zero, lots are ordered,
    /// ids and indexes agree, at most one open card per family, keys are in
    /// time order. For tests, `audit` and restore; `apply` keeps only the
    /// cheap running checks.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let books = &self.books;
        let others = &books.others;
        if others.len() < 2
            || books.other_ids.len() != others.len()
            || others[SOURCE_ACCOUNT.0 as usize].kind != AccountKind::Source
            || others[TREASURY_ACCOUNT.0 as usize].kind != AccountKind::Treasury
            || books.other_ids[0] != SOURCE_ACCOUNT
            || books.other_ids[1] != TREASURY_ACCOUNT
        {
            return broken("source and treasury must be accounts 0 and 1".into());
        }
        if books.count != (others.len() + 2 * self.cards.len()) as u64 {
            return broken("account count disagrees with accounts and cards".into());
        }
        let mut sum: i128 = 0;
        let mut previous: Option<AccountId> = None;
        for (i, (account, &id)) in others.iter().zip(&books.other_ids).enumerate() {
            if previous.is_some_and(|p| p >= id) || u64::from(id.0) >= books.count {
                return broken(format!("account {}: ids out of order", id.0));
            }
            previous = Some(id);
            if books.position(id) != Some(i) {
                return broken(format!("account {}: account index disagrees", id.0));
            }
            sum += i128::from(account.balance);
            match account.kind {
                AccountKind::Source | AccountKind::Treasury if i > 1 => {
                    return broken(format!("account {}: second source or treasury", id.0));
                }
                AccountKind::Wallet { .. } => {
                    return broken(format!("account {}: wallet among the others", id.0));
                }
                AccountKind::Terminal { merchant, .. }
                    if self.terminals.get(&merchant) != Some(&id) =>
                {
                    return broken(format!("account {}: terminal index disagrees", id.0));
                }
                AccountKind::Interbank { bank } if bank == self.config.bank => {
                    return broken(format!("account {}: interbank account for own bank", id.0));
                }
                _ => {}
            }
        }
        if self.terminals.len()
            != others
                .iter()
                .filter(|a| matches!(a.kind, AccountKind::Terminal { .. }))
                .count()
        {
            return broken("terminal index has extra entries".into());
        }
        // Every id is exactly one account: the merge of the others and the
        // cards' wallet pairs covers 0..count.
        if self.account_records().count() as u64 != books.count {
            return broken("wallet account ids collide with other accounts".into());
        }

        if self.pans.len() != self.cards.len() {
            return broken("card index size disagrees".into());
        }
        let mut cold_wallets = 0usize;
        for (i, card) in self.cards.iter().enumerate() {
            let id = CardId(i as u32);
            if self.pans.get(&card.pan(), &self.cards) != Some(id) {
                return broken(format!("card {i}: PAN index disagrees"));
            }
            match self.families.get(card.family, &self.cards) {
                Some(latest) if latest == id => {}
                Some(latest) if latest.0 > id.0 && card.status == CardStatus::Closed => {}
                _ => {
                    return broken(format!(
                        "card {i}: family index disagrees (or the family has two open cards)"
                    ))
                }
            }
            if let Some(&next) = self.replaced.get(&id) {
                if next.0 as usize <= i || next.0 as usize >= self.cards.len() {
                    return broken(format!("card {i}: replaced by a bad card id"));
                }
                if card.status != CardStatus::Closed {
                    return broken(format!("card {i}: replaced but not closed"));
                }
            }
            for program in Program::ALL {
                let w = program.index();
                let wallet = &card.wallets[w];
                if wallet.consumed > wallet.credited {
                    return broken(format!("card {i}: consumed above credited"));
                }
                let Ok(balance) = i64::try_from(wallet.balance()) else {
                    return broken(format!("card {i}: wallet balance past i64"));
                };
                sum += i128::from(balance);
                let marks = card.marks(w);
                if marks.bits != 0 && marks.base > super::machine::PERIOD_MAX {
                    return broken(format!("card {i}: credited periods past the last one"));
                }
                let cold = card.lots_inline(w) == LotsInline::Cold;
                if cold {
                    cold_wallets += 1;
                    if !self.cold.contains_key(&cold_key(id, w)) {
                        return broken(format!("card {i}: lots missing"));
                    }
                }
                let lots = self.lots_of(id, w);
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
        if self
            .replaced
            .keys()
            .any(|c| c.0 as usize >= self.cards.len())
        {
            return broken("a replacement recorded for a card that does not exist".into());
        }
        if cold_wallets != self.cold.len() {
            return broken("lots kept for wallets that hold theirs inline".into());
        }
        if sum != 0 {
            return broken(format!("sum over all accounts is {sum}, not 0"));
        }
        for card in self.families.cards() {
            let family = self.cards.get(card.0 as usize).map(|c| c.family);
            if family.and_then(|f| self.families.get(f, &self.cards)) != Some(card) {
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
                let counter_ok = u64::from(posted.counter.0) < books.count;
                let op_ok = matches!(record.op, KeyOp::Purchase | KeyOp::Withdrawal);
                if !card_ok || !counter_ok || !op_ok {
                    return broken(format!("{key:?}: bad posted payment"));
                }
            }
        }
        Ok(())
    }
}
