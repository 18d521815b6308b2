//! Read-only access to the books, for the switch (balances, terminal
//! accounts), storage (rows to checkpoint after a batch) and `audit`.
//!
//! Why separate from `machine.rs`: nothing here changes state, and nothing
//! here is needed to understand how state changes.

use super::command::CardRef;
use super::config::LedgerConfig;
use super::machine::{cold_key, Ledger};
use super::outcome::Balances;
use super::state::{Account, AccountKind, Card, KeyRecord, Marks};
use super::types::{AccountId, BankCode, CardId, FamilyId, MerchantId, Pan, Program, RequestKey};

impl Ledger {
    /// The configuration.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// Switch to another configuration (rule set, limits) from the next
    /// batch on. The bank cannot change. Recovery calls this only after the
    /// journal has been replayed under the configuration it was applied with.
    pub fn set_config(&mut self, config: LedgerConfig) {
        if config.bank == self.config.bank {
            self.config = config;
        }
    }

    /// Bytes one card takes in a ledger's card table (its indexes and any
    /// lots kept beside it aside); for `benches/memory.rs`.
    pub const fn held_card_bytes() -> usize {
        std::mem::size_of::<super::state::CardState>()
    }

    /// Accounts opened (ids are `0..account_count()`), wallets included.
    pub fn account_count(&self) -> usize {
        self.books.count as usize
    }

    /// One account as a checkpoint writes it (a wallet's balance is its
    /// card's credited − consumed).
    pub fn account(&self, id: AccountId) -> Option<Account> {
        if let Some(i) = self.books.position(id) {
            return self.books.others.get(i).copied();
        }
        let (card, w) = self.wallet_of(id)?;
        let balance = self.cards[card.0 as usize].wallets[w].balance();
        Some(Account {
            kind: AccountKind::Wallet {
                card,
                program: Program::ALL[w],
            },
            // Wallet balances fit i64 (every transfer checks).
            balance: i64::try_from(balance).unwrap_or(i64::MAX),
        })
    }

    /// Account `i` as a checkpoint writes it (see [`Ledger::account`]; to
    /// walk them all, [`Ledger::account_records`] is faster).
    pub fn account_record(&self, i: usize) -> Option<Account> {
        self.account(AccountId(u32::try_from(i).ok()?))
    }

    /// The card and wallet of a wallet account id.
    pub(crate) fn wallet_of(&self, id: AccountId) -> Option<(CardId, usize)> {
        // Wallet accounts are consecutive pairs, increasing with the card id.
        let i = self
            .cards
            .partition_point(|c| c.account.saturating_add(1) < id.0);
        let c = self.cards.get(i)?;
        match id.0.checked_sub(c.account) {
            Some(w @ (0 | 1)) => Some((CardId(i as u32), w as usize)),
            _ => None,
        }
    }

    /// Every account in id order, as a checkpoint writes them.
    pub fn account_records(&self) -> impl Iterator<Item = Account> + '_ {
        super::snapshot::AccountRecords::new(&self.books.others, &self.books.other_ids, &self.cards)
    }

    /// Cards held (ids are `0..card_count()`).
    pub fn card_count(&self) -> usize {
        self.cards.len()
    }

    /// One card, credited periods included.
    pub fn card(&self, id: CardId) -> Option<Card> {
        let mut card = self.card_record(id.0 as usize)?;
        let marks = self.card_marks(id.0 as usize)?;
        for (lots, m) in card.lots.iter_mut().zip(marks) {
            lots.set_marks(m);
        }
        Some(card)
    }

    /// Every card in id order, credited periods included.
    pub fn cards(&self) -> impl Iterator<Item = Card> + '_ {
        (0..self.cards.len()).filter_map(|i| self.card(CardId(i as u32)))
    }

    /// Card `i` as a checkpoint writes it: its serialized form, with its
    /// credited periods left out (see [`Ledger::card_marks`]).
    pub fn card_record(&self, i: usize) -> Option<Card> {
        let c = self.cards.get(i)?;
        let id = CardId(i as u32);
        Some(c.record(
            |w| self.cold.get(&cold_key(id, w)).cloned(),
            self.replaced.get(&id).copied(),
        ))
    }

    /// Card `i`'s credited periods, PKH then BPNT.
    pub fn card_marks(&self, i: usize) -> Option<[Marks; 2]> {
        self.cards.get(i).map(|c| [c.marks(0), c.marks(1)])
    }

    /// The card with this PAN (closed ones included).
    pub fn card_id(&self, pan: &Pan) -> Option<CardId> {
        self.pans.get(pan, &self.cards)
    }

    /// The family's latest card (which may be closed).
    pub fn family_card(&self, family: FamilyId) -> Option<CardId> {
        self.families.get(family, &self.cards)
    }

    /// The card a credit with this reference would go to.
    pub fn resolve(&self, card: &CardRef) -> Option<CardId> {
        match card {
            CardRef::Pan(pan) => self.card_id(pan),
            CardRef::Family(family) => self.family_card(*family),
        }
    }

    /// Both wallet balances of the card with this PAN.
    pub fn balances(&self, pan: &Pan) -> Option<Balances> {
        self.card_id(pan)
            .map(|id| self.cards[id.0 as usize].balances())
    }

    /// The settlement account of one of this bank's acceptors.
    pub fn terminal_account(&self, merchant: &MerchantId) -> Option<AccountId> {
        self.terminals.get(merchant).copied()
    }

    /// The interbank account for another bank, once one of its terminals has
    /// been paid.
    pub fn interbank_account(&self, bank: BankCode) -> Option<AccountId> {
        self.interbank
            .iter()
            .find(|(b, _)| *b == bank)
            .map(|&(_, account)| account)
    }

    /// What is remembered about a key.
    pub fn key(&self, key: &RequestKey) -> Option<&KeyRecord> {
        self.keys.get(key)
    }

    /// All remembered keys, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = (&RequestKey, &KeyRecord)> + '_ {
        self.keys.iter()
    }

    /// Number of remembered keys.
    pub fn keys_len(&self) -> usize {
        self.keys.len()
    }
}
