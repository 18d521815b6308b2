//! Read-only access to the books, for the switch (balances, terminal
//! accounts), storage (rows to checkpoint after a batch) and `audit`.
//!
//! Why separate from `machine.rs`: nothing here changes state, and nothing
//! here is needed to understand how state changes.

use super::command::CardRef;
use super::config::LedgerConfig;
use super::machine::Ledger;
use super::outcome::Balances;
use super::state::{Account, Card, KeyRecord};
use super::types::{AccountId, BankCode, CardId, FamilyId, MerchantId, Pan, RequestKey};

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

    /// All accounts, by id.
    pub fn accounts(&self) -> &[Account] {
        &self.books.accounts
    }

    /// One account.
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.books.accounts.get(id.0 as usize)
    }

    /// All cards, by id.
    pub fn cards(&self) -> &[Card] {
        &self.cards
    }

    /// One card.
    pub fn card(&self, id: CardId) -> Option<&Card> {
        self.cards.get(id.0 as usize)
    }

    /// The card with this PAN (closed ones included).
    pub fn card_id(&self, pan: &Pan) -> Option<CardId> {
        self.pans.get(pan)
    }

    /// The family's latest card (which may be closed).
    pub fn family_card(&self, family: FamilyId) -> Option<CardId> {
        self.families.get(&family).copied()
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
