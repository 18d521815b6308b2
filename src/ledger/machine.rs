//! The state machine: [`Ledger::apply`] runs a batch of commands at one
//! timestamp and reports what happened.
//!
//! Modelled on TigerBeetle's `state_machine.zig`: time comes in as an
//! argument, nothing here does I/O, every decline is a [`Code`], and the
//! books are checked around every change (each posting balances, no wallet
//! goes below zero, the running sum over all accounts stays zero). The order
//! of checks for card transactions is INTERFACE §5's; the first failing
//! check decides the code, and nothing after it runs.

use super::command::{
    Acceptor, CardRef, Command, Credit, Inquiry, Payment, PeriodCredit, Precheck, Reversal,
};
use super::config::{LedgerConfig, RuleSet};
use super::hash::FastMap;
use super::keys::KeyStore;
use super::outcome::{
    ApprovalCode, Balances, BlockReason, Code, Effects, Outcome, Posting, PostingKind, Reply, Span,
    SweepLine,
};
use super::state::{
    card_secs, Account, AccountKind, CardState, CardStatus, KeyOp, KeyRecord, Lot, Lots,
    LotsInline, MarkError, Posted, WalletLine, SOURCE_ACCOUNT, TREASURY_ACCOUNT,
};
use super::table::{prefetch, prefetch_address, FamilyIndex, PanIndex};
use super::types::{
    wib_day, AccountId, Amount, BankCode, CardId, FamilyId, Fingerprint, MerchantId, Pan, Program,
    Pvv, RequestKey, TerminalKind, SECONDS_PER_DAY,
};

/// Most commands in one batch. A shard drains at most this many requests
/// per group commit; the bound keeps posting indices in `u32` and a batch's
/// latency predictable.
pub const BATCH_COMMANDS_MAX: usize = 65_536;

/// Highest period number a [`PeriodCredit`] may carry (so a mark window
/// never runs past `u16::MAX`); the year 5000's last month is below it.
pub const PERIOD_MAX: u16 = u16::MAX - 64;

/// Most accounts (and cards) one ledger holds: ids are `u32`.
pub const ACCOUNTS_MAX: usize = u32::MAX as usize;

/// Commands warmed at a time (see `Ledger::warm`). Enough for many cache
/// misses in flight, few enough that what was warmed (lines and TLB
/// entries) is still there when the chunk executes: measured best between
/// 16 and 64 on the project machine.
const WARM_CHUNK: usize = 32;

/// A transfer would take a balance out of `i64`.
#[derive(Debug)]
struct Overflowed;

/// One side of a transfer: a wallet (whose balance the card holds) or any
/// other account (whose balance `Books` holds).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    /// Source, treasury, terminal or interbank.
    Other(AccountId),
    /// A card's wallet, with its balance before the transfer. The caller
    /// moves the card's own money line after a transfer succeeds.
    Wallet {
        /// The wallet's account id.
        id: AccountId,
        /// credited − consumed now.
        balance: Amount,
    },
}

impl Side {
    fn id(self) -> AccountId {
        match self {
            Side::Other(id) | Side::Wallet { id, .. } => id,
        }
    }
}

/// The accounts that are not wallets, the account id counter, and the
/// posting primitive. Kept apart from the cards so a posting can be made
/// while a card is borrowed.
///
/// Why wallets are not here: a bank has two wallet accounts per card and a
/// few thousand others; a row per wallet account would repeat, for every
/// card, a balance the card already keeps (credited − consumed) and cost
/// more than the rest of the card's money line. A card's wallet accounts are
/// consecutive ids, and `CardState::account` names the first.
#[derive(Clone, Debug)]
pub(crate) struct Books {
    /// Source, treasury, terminal and interbank accounts, in id order.
    pub(crate) others: Vec<Account>,
    /// Their ids, increasing, parallel to `others`.
    pub(crate) other_ids: Vec<AccountId>,
    /// Position in `others` by id (source and treasury are 0 and 1).
    index: FastMap<AccountId, u32>,
    /// Accounts opened so far, wallets included: the next id.
    pub(crate) count: u64,
    /// Next posting id.
    pub(crate) postings: u64,
    /// Running sum over all accounts' balance changes; starts at zero and
    /// must be zero after every batch (asserted, in release too).
    sum: i128,
}

impl Books {
    /// Books holding the source and treasury accounts only.
    pub(crate) fn new(postings: u64) -> Books {
        let mut books = Books {
            others: Vec::new(),
            other_ids: Vec::new(),
            index: FastMap::default(),
            count: 0,
            postings,
            sum: 0,
        };
        for kind in [AccountKind::Source, AccountKind::Treasury] {
            books.push_other(Account { kind, balance: 0 });
        }
        books
    }

    /// Appends a non-wallet account with the next id (restore and open).
    pub(crate) fn push_other(&mut self, account: Account) -> AccountId {
        let id = AccountId(self.count as u32); // callers check count < ACCOUNTS_MAX
        self.index.insert(id, self.others.len() as u32);
        self.others.push(account);
        self.other_ids.push(id);
        self.count += 1;
        id
    }

    /// Position in `others` of a non-wallet account.
    #[inline]
    pub(crate) fn position(&self, id: AccountId) -> Option<usize> {
        if id.0 < 2 {
            return Some(id.0 as usize);
        }
        self.index.get(&id).map(|&i| i as usize)
    }

    fn open(&mut self, kind: AccountKind, fx: &mut Effects) -> Option<AccountId> {
        if self.count >= ACCOUNTS_MAX as u64 {
            return None;
        }
        let id = self.push_other(Account { kind, balance: 0 });
        fx.accounts_opened.push(id);
        Some(id)
    }

    /// Two consecutive wallet account ids (PKH, then BPNT); the first.
    fn open_wallets(&mut self, fx: &mut Effects) -> Option<AccountId> {
        if self.count + 2 > ACCOUNTS_MAX as u64 {
            return None;
        }
        let first = AccountId(self.count as u32); // < ACCOUNTS_MAX, checked
        self.count += 2;
        fx.accounts_opened.push(first);
        fx.accounts_opened.push(AccountId(first.0 + 1));
        Some(first)
    }

    /// A non-wallet account's balance.
    pub(crate) fn balance(&self, id: AccountId) -> i64 {
        let i = self.position(id).expect("not a wallet account");
        self.others[i].balance
    }

    /// Moves `amount` from `debit` to `credit`, all or nothing. For a
    /// wallet side only the checks are made here (the card moves its line).
    fn transfer(
        &mut self,
        debit: Side,
        credit: Side,
        amount: Amount,
        kind: PostingKind,
        command: u32,
        fx: &mut Effects,
    ) -> Result<(), Overflowed> {
        // Before: a real movement between two different accounts.
        let (debit_id, credit_id) = (debit.id(), credit.id());
        assert_ne!(debit_id, credit_id, "posting to itself");
        assert!(amount > 0, "empty posting");
        let signed = i64::try_from(amount).map_err(|_| Overflowed)?;
        let old = |side: Side| -> Result<(i64, Option<usize>), Overflowed> {
            Ok(match side {
                Side::Other(id) => {
                    let i = self.position(id).expect("unknown account");
                    (self.others[i].balance, Some(i))
                }
                Side::Wallet { balance, .. } => {
                    (i64::try_from(balance).map_err(|_| Overflowed)?, None)
                }
            })
        };
        let (d_old, d_at) = old(debit)?;
        let (c_old, c_at) = old(credit)?;
        let d_new = d_old.checked_sub(signed).ok_or(Overflowed)?;
        let c_new = c_old.checked_add(signed).ok_or(Overflowed)?;
        if let Some(i) = d_at {
            self.others[i].balance = d_new;
        }
        if let Some(i) = c_at {
            self.others[i].balance = c_new;
        }

        // After: the pair still sums to what it did, and no wallet is negative.
        let delta =
            (i128::from(d_new) - i128::from(d_old)) + (i128::from(c_new) - i128::from(c_old));
        assert_eq!(delta, 0, "unbalanced posting");
        self.sum += delta;
        if matches!(debit, Side::Wallet { .. }) {
            assert!(d_new >= 0, "wallet below zero");
        }

        fx.postings.push(Posting {
            id: self.postings,
            debit: debit_id,
            credit: credit_id,
            amount,
            kind,
            command,
        });
        self.postings += 1;
        Ok(())
    }
}

/// Where a card transaction's money goes.
#[derive(Clone, Copy)]
enum Counter {
    /// An existing account.
    Account(AccountId),
    /// The interbank account for a bank that has none yet (opened when the
    /// first payment is approved, so declines open nothing).
    NewInterbank(BankCode),
}

/// One bank's books. See the module header and `ledger/mod.rs`.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub(crate) config: LedgerConfig,
    pub(crate) books: Books,
    pub(crate) cards: Vec<CardState>,
    pub(crate) pans: PanIndex,
    pub(crate) families: FamilyIndex,
    /// The lots of wallets whose history does not fit inline in the card
    /// (see [`CardState`]), by [`cold_key`].
    pub(crate) cold: FastMap<u64, Lots>,
    /// Replaced cards and the card that replaced each (reversals of a
    /// replaced card's payments credit its replacement).
    pub(crate) replaced: FastMap<CardId, CardId>,
    pub(crate) terminals: FastMap<MerchantId, AccountId>,
    /// At most one per other bank (a handful): a vector beats a map.
    pub(crate) interbank: Vec<(BankCode, AccountId)>,
    /// Idempotency records, oldest first.
    pub(crate) keys: KeyStore,
    /// How many of `keys` are credits under a disbursement key
    /// ([`is_period_key`]; expiry keeps credits); derived, not state. While
    /// there are any, a [`PeriodCredit`] also looks for the keyed credit that
    /// paid its period before period credits existed.
    pub(crate) credit_keys: usize,
    /// Latest batch timestamp (timestamps are clamped to never go back).
    pub(crate) now: u64,
    /// Approvals so far (the approval code sequence).
    pub(crate) approvals: u64,
    /// Batches applied so far.
    pub(crate) batches: u64,
    /// The latest sweep's `as_of`.
    pub(crate) last_sweep_as_of: u64,
}

impl Ledger {
    /// An empty ledger: only the source and treasury accounts.
    pub fn new(config: LedgerConfig) -> Ledger {
        Ledger {
            config,
            books: Books::new(0),
            cards: Vec::new(),
            pans: PanIndex::new(),
            families: FamilyIndex::new(),
            cold: FastMap::default(),
            replaced: FastMap::default(),
            terminals: FastMap::default(),
            interbank: Vec::new(),
            keys: KeyStore::new(),
            credit_keys: 0,
            now: 0,
            approvals: 0,
            batches: 0,
            last_sweep_as_of: 0,
        }
    }

    /// Applies `batch` at `timestamp` (unix seconds, UTC) and writes one
    /// outcome per command, plus postings and changed records, into
    /// `effects` (cleared first).
    ///
    /// Deterministic: the same batches with the same timestamps, in the same
    /// order, from the same starting state, give the same state and effects;
    /// that is how the journal is replayed. A timestamp below the previous
    /// batch's is treated as the previous one (a clock step back must not
    /// reorder the key store or undo a day).
    ///
    /// # Panics
    ///
    /// If `batch` holds more than [`BATCH_COMMANDS_MAX`] commands, or if an
    /// invariant breaks (a bug: the books must not be written after that).
    pub fn apply(&mut self, batch: &[Command], timestamp: u64, effects: &mut Effects) {
        assert!(batch.len() <= BATCH_COMMANDS_MAX, "batch too large");
        effects.clear();
        self.batches += 1;
        effects.batch = self.batches;
        self.now = self.now.max(timestamp);
        assert_eq!(self.books.sum, 0);

        for (index, command) in batch.iter().enumerate() {
            if index % WARM_CHUNK == 0 {
                let end = (index + WARM_CHUNK).min(batch.len());
                self.warm(&batch[index..end]);
            }
            let postings_start = effects.postings.len();
            let sweep_start = effects.sweep.len();
            // index < BATCH_COMMANDS_MAX, so it fits.
            let (reply, replayed) = self.execute(index as u32, command, effects);
            effects.outcomes.push(Outcome {
                reply,
                replayed,
                postings: span(postings_start, effects.postings.len()),
                sweep: span(sweep_start, effects.sweep.len()),
            });
        }

        effects.cards.sort_unstable();
        effects.cards.dedup();
        assert_eq!(effects.outcomes.len(), batch.len());
        assert_eq!(self.books.sum, 0, "books out of balance after batch");
    }

    /// Brings the memory the next [`WARM_CHUNK`] commands will need (key
    /// index slots and records, PAN and family slots, cards) into cache
    /// before executing them, in stages: start loading every key's, PAN's
    /// and family's index line; then, as they arrive, start loading the
    /// records and cards they point at, and the key-store slots the chunk's
    /// new records will be appended to. Each stage
    /// issues its loads as prefetches ([`prefetch`]), so a chunk's misses
    /// are all in flight at once and the chunk waits about one memory
    /// latency per stage instead of one per miss (a random load costs
    /// ~130 ns on its own on the project machine). TigerBeetle's prefetch
    /// phase, in miniature. Reads only.
    fn warm(&self, batch: &[Command]) {
        let mut digests = [0u64; WARM_CHUNK];
        for (command, digest) in batch.iter().zip(digests.iter_mut()) {
            if let Some(key) = command.key() {
                *digest = self.keys.prefetch_slot(key);
            }
            if let Some(pan) = card_pan(command) {
                self.pans.prefetch(&pan);
            }
            if let Command::PeriodCredit(pc) = command {
                self.families.prefetch(pc.family);
            }
        }
        for (command, &digest) in batch.iter().zip(&digests) {
            if digest != 0 {
                self.keys.prefetch_record(digest);
            }
            // The cards the index slots point at, unconfirmed: confirming
            // means reading the card, the miss this stage is here to start.
            if let Some(card) = card_pan(command).and_then(|pan| self.pans.candidate(&pan)) {
                prefetch_card(&self.cards[card.0 as usize]);
            }
            if let Command::PeriodCredit(pc) = command {
                // A wave's credit: the family's card.
                if let Some(card) = self.families.candidate(pc.family) {
                    prefetch_card(&self.cards[card.0 as usize]);
                }
            }
        }
        self.keys.prefetch_appends(batch.len());
    }

    fn execute(&mut self, index: u32, command: &Command, fx: &mut Effects) -> (Reply, bool) {
        match command {
            Command::Credit(c) => {
                self.keyed(index, command, &c.request.key, c.request.fingerprint, fx)
            }
            Command::Purchase(p) | Command::Withdrawal(p) => {
                self.keyed(index, command, &p.request.key, p.request.fingerprint, fx)
            }
            Command::BalanceInquiry(q) => {
                self.keyed(index, command, &q.request.key, q.request.fingerprint, fx)
            }
            Command::Reversal(r) => {
                self.keyed(index, command, &r.request.key, r.request.fingerprint, fx)
            }
            Command::OpenCard {
                pan,
                family,
                pvv,
                status,
            } => (
                Reply::code(self.open_card(*pan, *family, *pvv, *status, fx)),
                false,
            ),
            Command::OpenTerminalAccount { merchant, kind } => {
                (Reply::code(self.open_terminal(*merchant, *kind, fx)), false)
            }
            Command::Activate { pan } => (Reply::code(self.activate(pan, fx)), false),
            Command::SetPin { pan, pvv } => (Reply::code(self.set_pin(pan, *pvv, fx)), false),
            Command::Block { pan } => (Reply::code(self.block(pan, fx)), false),
            Command::Unblock { pan } => (Reply::code(self.unblock(pan, fx)), false),
            Command::Replace {
                old_pan,
                new_pan,
                pvv,
            } => (
                Reply::code(self.replace(index, old_pan, *new_pan, *pvv, fx)),
                false,
            ),
            Command::Close { pan } => (Reply::code(self.close(index, pan, fx)), false),
            Command::Sweep { as_of } => (Reply::code(self.sweep(index, *as_of, fx)), false),
            Command::ExpireKeys { before } => (Reply::code(self.expire_keys(*before)), false),
            Command::PeriodCredit(c) => self.period_credit(index, c, fx),
        }
    }

    /// The idempotency gate around every keyed command (INTERFACE §5
    /// "Duplicates"; STYLE habit 8).
    fn keyed(
        &mut self,
        index: u32,
        command: &Command,
        key: &RequestKey,
        fingerprint: Fingerprint,
        fx: &mut Effects,
    ) -> (Reply, bool) {
        let content = command.content_hash();
        if let Some(record) = self.keys.get(key) {
            if record.op == KeyOp::Tombstone {
                return (Reply::code(Code::Reversed), false);
            }
            if record.fingerprint == fingerprint && record.content == content {
                return (record.reply, true);
            }
            return (Reply::code(Code::KeyConflict), false);
        }

        let (op, target, amount, (reply, posted)) = match command {
            Command::Credit(c) => (KeyOp::Credit, c.card, c.amount, self.credit(index, c, fx)),
            Command::Purchase(p) => (
                KeyOp::Purchase,
                CardRef::Pan(p.pan),
                p.amount,
                self.pay(index, p, false, fx),
            ),
            Command::Withdrawal(p) => (
                KeyOp::Withdrawal,
                CardRef::Pan(p.pan),
                p.amount,
                self.pay(index, p, true, fx),
            ),
            Command::BalanceInquiry(q) => (
                KeyOp::Inquiry,
                CardRef::Pan(q.pan),
                0,
                (self.inquire(q, fx), None),
            ),
            Command::Reversal(r) => (
                KeyOp::Reversal,
                CardRef::Pan(r.pan),
                r.amount,
                (self.reverse(index, r, fx), None),
            ),
            // `execute` only sends keyed commands here.
            _ => unreachable!("unkeyed command in keyed()"),
        };
        self.remember(
            *key,
            KeyRecord {
                at: self.now,
                op,
                fingerprint,
                content,
                target,
                amount,
                reply,
                posted,
                reversed: false,
            },
            fx,
        );
        (reply, false)
    }

    /// Stores a record for a key just looked up and not found.
    fn remember(&mut self, key: RequestKey, record: KeyRecord, fx: &mut Effects) {
        self.credit_keys += usize::from(is_period_key(&key, &record));
        self.keys.insert(key, record);
        fx.keys.push(key);
    }

    /// Notes a changed card; `apply` sorts and dedups the list at the end
    /// (cheaper than a per-card marker, which costs a cache miss).
    fn list_card(&mut self, card: CardId, fx: &mut Effects) {
        if fx.cards.last() != Some(&card) {
            fx.cards.push(card);
        }
    }

    fn next_approval(&mut self) -> ApprovalCode {
        self.approvals += 1;
        ApprovalCode::from_sequence(self.approvals)
    }

    fn approved(&mut self, balances: Option<Balances>) -> Reply {
        Reply {
            code: Code::Approved,
            approval: Some(self.next_approval()),
            balances,
        }
    }

    /// Step 3: the acceptor's counter account. `None` for a terminal of this
    /// bank with no registered account.
    fn counter(&self, acceptor: &Acceptor) -> Option<Counter> {
        if acceptor.bank == self.config.bank {
            return self
                .terminals
                .get(&acceptor.merchant)
                .map(|&a| Counter::Account(a));
        }
        Some(
            match self
                .interbank
                .iter()
                .find(|(bank, _)| *bank == acceptor.bank)
            {
                Some(&(_, account)) => Counter::Account(account),
                None => Counter::NewInterbank(acceptor.bank),
            },
        )
    }

    fn counter_account(&mut self, counter: Counter, fx: &mut Effects) -> Option<AccountId> {
        match counter {
            Counter::Account(a) => Some(a),
            Counter::NewInterbank(bank) => {
                let account = self.books.open(AccountKind::Interbank { bank }, fx)?;
                self.interbank.push((bank, account));
                Some(account)
            }
        }
    }

    /// Steps 5 and 6: card status, then the PIN. A wrong PIN counts (and may
    /// block the card); a right one resets the count and is a cardholder
    /// transaction for the dormancy clock.
    fn gate(&mut self, card: CardId, pin: Option<Pvv>, fx: &mut Effects) -> Result<(), Code> {
        let tries_max = self.config.limits.pin_tries_max;
        let now = self.now;
        let c = &mut self.cards[card.0 as usize];
        match c.status {
            CardStatus::Active => {}
            CardStatus::Inactive => return Err(Code::CardInactive),
            CardStatus::Blocked { reason } => return Err(Code::CardBlocked { reason }),
            CardStatus::Closed => return Err(Code::CardClosed),
            CardStatus::PinBlocked => return Err(Code::PinBlocked),
        }
        let right = match pin {
            Some(candidate) => c.pvv.matches(&candidate),
            None => false,
        };
        let verdict = if right {
            c.pin_tries = 0;
            c.set_last_use_at(Some(card_secs(now)));
            Ok(())
        } else {
            c.pin_tries = c.pin_tries.saturating_add(1);
            if c.pin_tries >= tries_max {
                c.status = CardStatus::PinBlocked;
                Err(Code::PinTriesExceeded)
            } else {
                Err(Code::WrongPin {
                    tries_left: tries_max - c.pin_tries,
                })
            }
        };
        self.list_card(card, fx);
        verdict
    }

    /// Purchase (`withdrawal == false`) or cash withdrawal, INTERFACE §5
    /// steps 3 and 5–11.
    fn pay(
        &mut self,
        index: u32,
        p: &Payment,
        withdrawal: bool,
        fx: &mut Effects,
    ) -> (Reply, Option<Posted>) {
        let decline = |code| (Reply::code(code), None);
        let Some(counter) = self.counter(&p.acceptor) else {
            return decline(Code::UnknownTerminal);
        };
        let Some(card) = self.pans.get(&p.pan, &self.cards) else {
            return decline(Code::UnknownCard);
        };
        if let Err(code) = self.gate(card, p.pin, fx) {
            return decline(code);
        }
        if p.precheck == Precheck::Unsupported {
            return decline(Code::Unsupported);
        }
        let kind = p.acceptor.kind;
        if withdrawal {
            if kind != TerminalKind::Agent {
                return decline(Code::NotPermittedOnTerminal);
            }
            if p.wallet == Program::Bpnt && self.config.rule_set == RuleSet::FoodOnly {
                return decline(Code::NotPermittedToCardholder);
            }
        } else if p.wallet == Program::Bpnt && kind != TerminalKind::Ewarong {
            return decline(Code::NotPermittedOnTerminal);
        }
        if let Precheck::Ineligible { item } = p.precheck {
            return decline(Code::Ineligible { item });
        }
        let limits = self.config.limits;
        if p.amount == 0 || p.amount > limits.amount_max || p.precheck == Precheck::BadAmount {
            return decline(Code::AmountInvalid);
        }

        let day = wib_day(self.now);
        let c = &self.cards[card.0 as usize];
        let (used_amount, used_count) = if u64::from(c.day) == day.min(u64::from(u16::MAX)) {
            (c.day_amount, c.day_count)
        } else {
            (0, 0)
        };
        if withdrawal {
            let over_day = match used_amount.checked_add(p.amount) {
                Some(total) => total > limits.withdrawal_day_amount_max,
                None => true,
            };
            if p.amount > limits.withdrawal_amount_max || over_day {
                return decline(Code::AmountLimit);
            }
            if u32::from(used_count) >= limits.withdrawal_day_count_max {
                return decline(Code::CountLimit);
            }
        }
        let w = p.wallet.index();
        if c.wallets[w].balance() < p.amount {
            return decline(Code::InsufficientFunds);
        }

        let Some(counter) = self.counter_account(counter, fx) else {
            return decline(Code::Overflow);
        };
        let c = &self.cards[card.0 as usize];
        let wallet = Side::Wallet {
            id: c.wallet_account(w),
            balance: c.wallets[w].balance(),
        };
        let kind = if withdrawal {
            PostingKind::Withdrawal
        } else {
            PostingKind::Purchase
        };
        if self
            .books
            .transfer(wallet, Side::Other(counter), p.amount, kind, index, fx)
            .is_err()
        {
            return decline(Code::Overflow);
        }
        let c = &mut self.cards[card.0 as usize];
        // Funds were checked: consumed + amount ≤ credited.
        c.wallets[w].consumed += p.amount;
        if withdrawal {
            // Day numbers of u32 times fit (a later time is kept as u32::MAX).
            c.day = u16::try_from(day).unwrap_or(u16::MAX);
            c.day_amount = used_amount + p.amount; // ≤ day max, checked
            c.day_count = used_count.saturating_add(1); // ≤ count max, checked
            c.withdrawn = c.withdrawn.saturating_add(p.amount);
        } else {
            c.purchased = c.purchased.saturating_add(p.amount);
        }
        let balances = c.balances();
        self.list_card(card, fx);
        let reply = self.approved(Some(balances));
        (
            reply,
            Some(Posted {
                card,
                wallet: p.wallet,
                counter,
                day,
            }),
        )
    }

    /// Balance inquiry: steps 3, 5–8, then both balances.
    fn inquire(&mut self, q: &Inquiry, fx: &mut Effects) -> Reply {
        if self.counter(&q.acceptor).is_none() {
            return Reply::code(Code::UnknownTerminal);
        }
        let Some(card) = self.pans.get(&q.pan, &self.cards) else {
            return Reply::code(Code::UnknownCard);
        };
        if let Err(code) = self.gate(card, q.pin, fx) {
            return Reply::code(code);
        }
        match q.precheck {
            Precheck::Passed => {}
            Precheck::Unsupported => return Reply::code(Code::Unsupported),
            Precheck::Ineligible { item } => return Reply::code(Code::Ineligible { item }),
            Precheck::BadAmount => return Reply::code(Code::AmountInvalid),
        }
        let balances = self.cards[card.0 as usize].balances();
        self.approved(Some(balances))
    }

    /// Disbursement credit from the source account.
    fn credit(&mut self, index: u32, c: &Credit, fx: &mut Effects) -> (Reply, Option<Posted>) {
        let card = match c.card {
            CardRef::Pan(pan) => self.pans.get(&pan, &self.cards),
            CardRef::Family(family) => self.families.get(family, &self.cards),
        };
        let Some(card) = card else {
            return (Reply::code(Code::UnknownCard), None);
        };
        (
            self.post_credit(index, card, c.program, c.amount, None, fx),
            None,
        )
    }

    /// A credit for one (family, program, period): declined as the keyed
    /// credit is, answered "approved, replayed" with no effect if the period
    /// is marked, else posted and marked.
    #[inline(never)]
    fn period_credit(&mut self, index: u32, c: &PeriodCredit, fx: &mut Effects) -> (Reply, bool) {
        let Some(card) = self.families.get(c.family, &self.cards) else {
            return (Reply::code(Code::UnknownCard), false);
        };
        if c.period > PERIOD_MAX {
            return (Reply::code(Code::KeyConflict), false);
        }
        let w = c.program.index();
        let mut check = self.cards[card.0 as usize].marks(w).check(c.period);
        if check.is_ok() && self.credit_keys > 0 && self.paid_by_keyed_credit(c) {
            // Paid under its key: marked now, as a period credit would be.
            self.cards[card.0 as usize].mark(w, c.period);
            self.list_card(card, fx);
            check = Err(MarkError::Already);
        }
        let cs = &self.cards[card.0 as usize];
        match check {
            Ok(()) => {}
            Err(MarkError::Already) => {
                let reply = Reply {
                    code: Code::Approved,
                    approval: None,
                    balances: Some(cs.balances()),
                };
                return (reply, true);
            }
            Err(MarkError::TooOld) => return (Reply::code(Code::KeyConflict), false),
        }
        let reply = self.post_credit(index, card, c.program, c.amount, Some(c.period), fx);
        (reply, false)
    }

    /// Whether a keyed [`Credit`] with the key `disburse` used before period
    /// credits existed (`PKH:<yyyy>-T<n>:<kk>`, `BPNT:<yyyy-mm>:<kk>`) paid
    /// this period and is still remembered: a wave begun before an upgrade
    /// and resumed after it pays nobody twice.
    #[inline(never)]
    fn paid_by_keyed_credit(&self, c: &PeriodCredit) -> bool {
        let (year, index) = (c.period / 12, c.period % 12 + 1);
        let text = match c.program {
            Program::Pkh => format!("PKH:{year:04}-T{index}:{}", c.family.0),
            Program::Bpnt => format!("BPNT:{year:04}-{index:02}:{}", c.family.0),
        };
        let Some(key) = RequestKey::new(text.as_bytes()) else {
            return false;
        };
        self.keys.get(&key).is_some_and(|r| {
            r.op == KeyOp::Credit && r.reply.code == Code::Approved && r.amount > 0
        })
    }

    /// Credits `amount` to `card`'s wallet of `program`, marking `period`
    /// if given (its check passed).
    fn post_credit(
        &mut self,
        index: u32,
        card: CardId,
        program: Program,
        amount: Amount,
        period: Option<u16>,
        fx: &mut Effects,
    ) -> Reply {
        let w = program.index();
        let c = &self.cards[card.0 as usize];
        if c.status == CardStatus::Closed {
            return Reply::code(Code::CardClosed);
        }
        if amount == 0 {
            return Reply::code(Code::AmountInvalid);
        }
        let Some(credited) = c.wallets[w].credited.checked_add(amount) else {
            return Reply::code(Code::Overflow);
        };
        let wallet = Side::Wallet {
            id: c.wallet_account(w),
            balance: c.wallets[w].balance(),
        };
        if self
            .books
            .transfer(
                Side::Other(SOURCE_ACCOUNT),
                wallet,
                amount,
                PostingKind::Credit,
                index,
                fx,
            )
            .is_err()
        {
            return Reply::code(Code::Overflow);
        }
        let now = self.now;
        if let Some(period) = period {
            self.cards[card.0 as usize].mark(w, period);
        }
        self.add_lot(card, w, credited);
        let c = &mut self.cards[card.0 as usize];
        if c.first_credit_at().is_none() {
            c.set_first_credit_at(Some(card_secs(now)));
        }
        let balances = c.balances();
        self.list_card(card, fx);
        self.approved(Some(balances))
    }

    /// Raises wallet `w` of `card` to `credited` with a lot that arrived
    /// now: credits in one batch share an arrival, so one lot is enough.
    #[inline]
    fn add_lot(&mut self, card: CardId, w: usize, credited: Amount) {
        let now = self.now;
        let c = &mut self.cards[card.0 as usize];
        let form = c.lots_inline(w);
        match form {
            LotsInline::Empty => {
                if let Ok(at) = u32::try_from(now) {
                    c.wallets[w].credited = credited;
                    c.set_lots_inline(w, LotsInline::One(at));
                    return;
                }
            }
            LotsInline::One(at) if u64::from(at) == now => {
                c.wallets[w].credited = credited;
                return;
            }
            _ => {}
        }
        let mut lots = match form {
            LotsInline::Cold => self.cold.remove(&cold_key(card, w)).unwrap_or_default(),
            _ => c.lots(w, None),
        };
        match lots.lots.last_mut() {
            Some(lot) if lot.arrived_at == now => lot.end = credited,
            _ => lots.push(Lot {
                arrived_at: now,
                end: credited,
            }),
        }
        self.store_lots(card, w, credited, lots);
    }

    /// Wallet `w`'s lots in their serialized form (marks left out).
    pub(crate) fn lots_of(&self, card: CardId, w: usize) -> Lots {
        self.cards[card.0 as usize].lots(w, self.cold.get(&cold_key(card, w)))
    }

    /// Sets wallet `w`'s `credited` and its lots, inline when they fit.
    pub(crate) fn store_lots(&mut self, card: CardId, w: usize, credited: Amount, lots: Lots) {
        let c = &mut self.cards[card.0 as usize];
        c.wallets[w].credited = credited;
        match CardState::inline_form(&lots, credited) {
            Some(form) => {
                if c.lots_inline(w) == LotsInline::Cold {
                    self.cold.remove(&cold_key(card, w));
                }
                c.set_lots_inline(w, form);
            }
            None => {
                c.set_lots_inline(w, LotsInline::Cold);
                self.cold.insert(cold_key(card, w), lots);
            }
        }
    }

    /// Reversal of the request named by `r.original` (INTERFACE §5
    /// "Reversals").
    fn reverse(&mut self, index: u32, r: &Reversal, fx: &mut Effects) -> Reply {
        if r.original == r.request.key {
            return Reply::code(Code::ReversalMismatch);
        }
        // INTERFACE §5 step 4 holds for reversals too: a PAN unknown at its
        // bank is 14, not a remembered unknown original.
        if self.card_id(&r.pan).is_none() {
            return Reply::code(Code::UnknownCard);
        }
        let Some(original) = self.keys.get(&r.original) else {
            // Unknown original: answer 00 and remember it, so the original
            // is declined `Reversed` if it arrives late.
            let tombstone = KeyRecord {
                at: self.now,
                op: KeyOp::Tombstone,
                fingerprint: Fingerprint::ZERO,
                content: 0,
                target: CardRef::Pan(r.pan),
                amount: r.amount,
                reply: Reply::code(Code::Reversed),
                posted: None,
                reversed: true,
            };
            self.remember(r.original, tombstone, fx);
            return Reply::code(Code::ReversalRecorded);
        };
        match original.op {
            KeyOp::Tombstone => return Reply::code(Code::ReversalRepeat),
            KeyOp::Credit | KeyOp::Reversal => return Reply::code(Code::ReversalMismatch),
            KeyOp::Purchase | KeyOp::Withdrawal | KeyOp::Inquiry => {}
        }
        if original.target != CardRef::Pan(r.pan) || original.amount != r.amount {
            return Reply::code(Code::ReversalMismatch);
        }
        if original.reversed {
            return Reply::code(Code::ReversalRepeat);
        }
        let withdrawal = original.op == KeyOp::Withdrawal;
        if let Some(posted) = original.posted {
            if self.undo(index, posted, r.amount, withdrawal, fx).is_err() {
                return Reply::code(Code::Overflow);
            }
        }
        if let Some(original) = self.keys.get_mut(&r.original) {
            original.reversed = true;
        }
        fx.keys.push(r.original);
        Reply::code(Code::Approved)
    }

    /// Undoes an approved payment: the money goes back to the card that
    /// holds the wallet now (a replacement, if any), FIFO position and the
    /// day's withdrawal usage are restored.
    fn undo(
        &mut self,
        index: u32,
        posted: Posted,
        amount: Amount,
        withdrawal: bool,
        fx: &mut Effects,
    ) -> Result<(), Overflowed> {
        let mut holder = posted.card;
        while let Some(&next) = self.replaced.get(&holder) {
            holder = next;
        }
        let w = posted.wallet.index();
        let h = &self.cards[holder.0 as usize];
        assert!(h.wallets[w].consumed >= amount);
        let wallet = Side::Wallet {
            id: h.wallet_account(w),
            balance: h.wallets[w].balance(),
        };
        self.books.transfer(
            Side::Other(posted.counter),
            wallet,
            amount,
            PostingKind::Reversal,
            index,
            fx,
        )?;
        let h = &mut self.cards[holder.0 as usize];
        h.wallets[w].consumed -= amount;
        if withdrawal && u64::from(h.day) == posted.day.min(u64::from(u16::MAX)) {
            h.day_amount = h.day_amount.saturating_sub(amount);
            h.day_count = h.day_count.saturating_sub(1);
        }
        let o = &mut self.cards[posted.card.0 as usize];
        if withdrawal {
            o.withdrawn = o.withdrawn.saturating_sub(amount);
        } else {
            o.purchased = o.purchased.saturating_sub(amount);
        }
        self.list_card(holder, fx);
        self.list_card(posted.card, fx);
        Ok(())
    }

    fn new_card(
        &mut self,
        pan: Pan,
        family: FamilyId,
        pvv: Pvv,
        status: CardStatus,
        fx: &mut Effects,
    ) -> Option<CardId> {
        if self.cards.len() >= ACCOUNTS_MAX / 2 || self.books.count + 2 > ACCOUNTS_MAX as u64 {
            return None;
        }
        let id = CardId(self.cards.len() as u32); // < u32::MAX, checked above
        let account = self.books.open_wallets(fx)?;
        super::huge::push(
            &mut self.cards,
            CardState::new(pan, family, pvv, status, account, card_secs(self.now)),
        );
        let inserted = self.pans.insert(pan, id, &self.cards);
        assert!(inserted, "PAN checked free by the caller");
        self.families.set(family, id, &self.cards);
        self.list_card(id, fx);
        Some(id)
    }

    fn family_has_open_card(&self, family: FamilyId) -> bool {
        self.families
            .get(family, &self.cards)
            .is_some_and(|c| self.cards[c.0 as usize].status != CardStatus::Closed)
    }

    fn open_card(
        &mut self,
        pan: Pan,
        family: FamilyId,
        pvv: Pvv,
        status: CardStatus,
        fx: &mut Effects,
    ) -> Code {
        if self.pans.get(&pan, &self.cards).is_some() || self.family_has_open_card(family) {
            return Code::AlreadyExists;
        }
        if matches!(status, CardStatus::Closed | CardStatus::PinBlocked) {
            return Code::InvalidTransition;
        }
        match self.new_card(pan, family, pvv, status, fx) {
            Some(_) => Code::Approved,
            None => Code::Overflow,
        }
    }

    fn open_terminal(
        &mut self,
        merchant: MerchantId,
        kind: TerminalKind,
        fx: &mut Effects,
    ) -> Code {
        if self.terminals.contains_key(&merchant) {
            return Code::AlreadyExists;
        }
        match self
            .books
            .open(AccountKind::Terminal { merchant, kind }, fx)
        {
            Some(account) => {
                self.terminals.insert(merchant, account);
                Code::Approved
            }
            None => Code::Overflow,
        }
    }

    /// Looks a card up for an administrative command; closed cards answer
    /// `CardClosed`.
    fn admin_card(&self, pan: &Pan) -> Result<CardId, Code> {
        let card = self.pans.get(pan, &self.cards).ok_or(Code::UnknownCard)?;
        if self.cards[card.0 as usize].status == CardStatus::Closed {
            return Err(Code::CardClosed);
        }
        Ok(card)
    }

    fn activate(&mut self, pan: &Pan, fx: &mut Effects) -> Code {
        let card = match self.admin_card(pan) {
            Ok(card) => card,
            Err(code) => return code,
        };
        let now = self.now;
        let c = &mut self.cards[card.0 as usize];
        match c.status {
            CardStatus::Active => return Code::Approved,
            CardStatus::Inactive => {
                c.status = CardStatus::Active;
                c.clock_reset_at = card_secs(now);
            }
            _ => return Code::InvalidTransition,
        }
        self.list_card(card, fx);
        Code::Approved
    }

    fn set_pin(&mut self, pan: &Pan, pvv: Pvv, fx: &mut Effects) -> Code {
        let card = match self.admin_card(pan) {
            Ok(card) => card,
            Err(code) => return code,
        };
        let now = self.now;
        let c = &mut self.cards[card.0 as usize];
        c.pvv = pvv;
        c.pin_tries = 0;
        if c.status == CardStatus::PinBlocked {
            c.status = CardStatus::Active;
            c.clock_reset_at = card_secs(now);
        }
        self.list_card(card, fx);
        Code::Approved
    }

    fn block(&mut self, pan: &Pan, fx: &mut Effects) -> Code {
        let card = match self.admin_card(pan) {
            Ok(card) => card,
            Err(code) => return code,
        };
        let c = &mut self.cards[card.0 as usize];
        let blocked = CardStatus::Blocked {
            reason: BlockReason::Bank,
        };
        if c.status != blocked {
            c.status = blocked;
            self.list_card(card, fx);
        }
        Code::Approved
    }

    fn unblock(&mut self, pan: &Pan, fx: &mut Effects) -> Code {
        let card = match self.admin_card(pan) {
            Ok(card) => card,
            Err(code) => return code,
        };
        let now = self.now;
        let c = &mut self.cards[card.0 as usize];
        match c.status {
            CardStatus::Inactive => return Code::InvalidTransition,
            CardStatus::Active => {}
            CardStatus::Blocked { .. } | CardStatus::PinBlocked => {
                c.status = CardStatus::Active;
                c.clock_reset_at = card_secs(now);
            }
            // admin_card refused closed cards.
            CardStatus::Closed => return Code::CardClosed,
        }
        c.pin_tries = 0;
        self.list_card(card, fx);
        Code::Approved
    }

    fn replace(
        &mut self,
        index: u32,
        old_pan: &Pan,
        new_pan: Pan,
        pvv: Pvv,
        fx: &mut Effects,
    ) -> Code {
        let old = match self.admin_card(old_pan) {
            Ok(card) => card,
            Err(code) => return code,
        };
        if self.pans.get(&new_pan, &self.cards).is_some() {
            return Code::AlreadyExists;
        }
        let family = self.cards[old.0 as usize].family;
        let Some(new) = self.new_card(new_pan, family, pvv, CardStatus::Active, fx) else {
            return Code::Overflow;
        };
        for program in Program::ALL {
            let w = program.index();
            let from = self.cards[old.0 as usize].wallet_account(w);
            let to = self.cards[new.0 as usize].wallet_account(w);
            let balance = self.cards[old.0 as usize].wallets[w].balance();
            if balance > 0 {
                // The new account is empty and the old one holds `balance`:
                // this cannot overflow.
                let moved = self.books.transfer(
                    Side::Wallet { id: from, balance },
                    Side::Wallet { id: to, balance: 0 },
                    balance,
                    PostingKind::Replace,
                    index,
                    fx,
                );
                assert!(moved.is_ok());
            }
            // The money line, lots and credited periods move over whole.
            let o = &mut self.cards[old.0 as usize];
            let form = o.lots_inline(w);
            let marks = o.marks(w);
            let line = std::mem::take(&mut o.wallets[w]);
            o.set_lots_inline(w, LotsInline::Empty);
            o.set_marks(w, Default::default());
            let n = &mut self.cards[new.0 as usize];
            n.wallets[w] = line;
            n.set_lots_inline(w, form);
            n.set_marks(w, marks);
            if form == LotsInline::Cold {
                if let Some(lots) = self.cold.remove(&cold_key(old, w)) {
                    self.cold.insert(cold_key(new, w), lots);
                }
            }
        }
        let (first_credit_at, last_use_at, day, day_amount, day_count) = {
            let o = &mut self.cards[old.0 as usize];
            o.status = CardStatus::Closed;
            self.replaced.insert(old, new);
            (
                o.first_credit_at(),
                o.last_use_at(),
                o.day,
                o.day_amount,
                o.day_count,
            )
        };
        let n = &mut self.cards[new.0 as usize];
        n.set_first_credit_at(first_credit_at);
        n.set_last_use_at(last_use_at);
        n.day = day;
        n.day_amount = day_amount;
        n.day_count = day_count;
        self.list_card(old, fx);
        Code::Approved
    }

    fn close(&mut self, index: u32, pan: &Pan, fx: &mut Effects) -> Code {
        let card = match self.admin_card(pan) {
            Ok(card) => card,
            Err(code) => return code,
        };
        // Only the treasury could overflow: check both moves before making
        // either, so an overflow applies nothing.
        let balances = self.cards[card.0 as usize].balances();
        let room = i128::from(i64::MAX) - i128::from(self.books.balance(TREASURY_ACCOUNT));
        if i128::from(balances.pkh) + i128::from(balances.bpnt) > room {
            return Code::Overflow;
        }
        for program in Program::ALL {
            let w = program.index();
            let c = &self.cards[card.0 as usize];
            let (account, balance) = (c.wallet_account(w), c.wallets[w].balance());
            if balance > 0 {
                let moved = self.books.transfer(
                    Side::Wallet {
                        id: account,
                        balance,
                    },
                    Side::Other(TREASURY_ACCOUNT),
                    balance,
                    PostingKind::Close,
                    index,
                    fx,
                );
                assert!(moved.is_ok(), "room checked above");
                self.cards[card.0 as usize].wallets[w].consumed += balance;
            }
        }
        self.cards[card.0 as usize].status = CardStatus::Closed;
        self.list_card(card, fx);
        Code::Approved
    }

    /// The dormant sweep (DESIGN §3), one pass over every card in id order.
    fn sweep(&mut self, index: u32, as_of: u64, fx: &mut Effects) -> Code {
        let as_of = as_of.max(self.last_sweep_as_of);
        self.last_sweep_as_of = as_of;
        let limits = self.config.limits;
        let block_after = u64::from(limits.dormant_block_days) * SECONDS_PER_DAY;
        let return_cutoff =
            as_of.checked_sub(u64::from(limits.dormant_return_days) * SECONDS_PER_DAY);
        let forget_after = (u64::from(limits.dormant_return_days)
            + u64::from(limits.key_retention_days))
            * SECONDS_PER_DAY;

        for i in 0..self.cards.len() {
            let card = CardId(i as u32); // cards.len() ≤ u32::MAX
            let c = &mut self.cards[i];
            let mut changed = false;
            let blocked = c.status == CardStatus::Active
                && as_of.saturating_sub(c.dormancy_anchor()) >= block_after;
            if blocked {
                c.status = CardStatus::Blocked {
                    reason: BlockReason::Dormant,
                };
                changed = true;
            }
            let mut returned = [0; 2];
            for (w, out) in returned.iter_mut().enumerate() {
                if self.cards[i].lots_inline(w) == LotsInline::Empty {
                    continue;
                }
                let mut lots = self.lots_of(card, w);
                let c = &mut self.cards[i];
                let account = c.wallet_account(w);
                let wallet = &mut c.wallets[w];
                if let Some(cutoff) = return_cutoff {
                    *out =
                        return_old_lots(wallet, account, &lots, cutoff, &mut self.books, index, fx);
                }
                if forget_spent_lots(wallet, &mut lots, as_of, forget_after) {
                    changed = true;
                    let credited = wallet.credited;
                    self.store_lots(card, w, credited, lots);
                }
            }
            let pan = self.cards[i].pan();
            if blocked || returned != [0, 0] {
                fx.sweep.push(SweepLine {
                    card,
                    pan,
                    blocked,
                    returned,
                });
            }
            if changed || returned != [0, 0] {
                self.list_card(card, fx);
            }
        }
        Code::Approved
    }

    fn expire_keys(&mut self, before: u64) -> Code {
        while let Some((_, record)) = self.keys.front() {
            if record.at >= before {
                break; // records are in time order
            }
            self.keys.pop_front();
        }
        Code::Approved
    }
}

/// Returns to the treasury every unspent stretch of the wallet's lots that
/// arrived at or before `cutoff`, oldest first, one posting per lot.
fn return_old_lots(
    wallet: &mut WalletLine,
    account: AccountId,
    lots: &Lots,
    cutoff: u64,
    books: &mut Books,
    index: u32,
    fx: &mut Effects,
) -> Amount {
    let mut returned: Amount = 0;
    // Stretch 0 is the floor, then the kept lots in order.
    for s in 0..=lots.lots.len() {
        let (arrived_at, end) = if s == 0 {
            (u64::from(lots.floor_arrived_at), lots.floor_end)
        } else {
            let lot = lots.lots[s - 1];
            (lot.arrived_at, lot.end)
        };
        if end <= wallet.consumed {
            continue;
        }
        if arrived_at > cutoff {
            break; // lots are in arrival order: the rest are younger
        }
        // Everything before this lot is spent or returned already.
        let amount = end - wallet.consumed;
        let side = Side::Wallet {
            id: account,
            balance: wallet.balance(),
        };
        if books
            .transfer(
                side,
                Side::Other(TREASURY_ACCOUNT),
                amount,
                PostingKind::Sweep,
                index,
                fx,
            )
            .is_err()
        {
            break; // only the treasury could overflow; return the rest later
        }
        wallet.consumed = end;
        returned += amount;
    }
    returned
}

/// Merges fully spent lots that are old enough that no payment touching them
/// can still be reversed into the floor; keeps a wallet's lot list short.
fn forget_spent_lots(wallet: &WalletLine, lots: &mut Lots, as_of: u64, forget_after: u64) -> bool {
    let spent = lots
        .lots
        .iter()
        .take_while(|lot| {
            lot.end <= wallet.consumed && lot.arrived_at.saturating_add(forget_after) <= as_of
        })
        .count();
    if spent == 0 {
        return false;
    }
    let newest = lots.lots[spent - 1];
    lots.floor_end = newest.end;
    lots.floor_arrived_at = card_secs(newest.arrived_at);
    lots.drop_oldest(spent);
    true
}

/// The side-table key of wallet `w` of `card`.
#[inline]
pub(crate) fn cold_key(card: CardId, w: usize) -> u64 {
    u64::from(card.0) << 1 | w as u64
}

/// Starts loading the lines of a card (see `Ledger::warm`): 160 bytes span
/// three lines at most.
#[inline(always)]
fn prefetch_card(card: &CardState) {
    let at = (card as *const CardState).cast::<u8>();
    prefetch(card);
    prefetch_address(at.wrapping_add(64));
    prefetch_address(at.wrapping_add(std::mem::size_of::<CardState>() - 1));
}

/// Whether a key record is a credit under the key `disburse` used before
/// period credits (`PKH:…` or `BPNT:…`).
pub(crate) fn is_period_key(key: &RequestKey, record: &KeyRecord) -> bool {
    record.op == KeyOp::Credit
        && (key.as_bytes().starts_with(b"PKH:") || key.as_bytes().starts_with(b"BPNT:"))
}

/// The card a card command names by PAN, for `Ledger::warm`.
fn card_pan(command: &Command) -> Option<Pan> {
    match command {
        Command::Purchase(p) | Command::Withdrawal(p) => Some(p.pan),
        Command::BalanceInquiry(q) => Some(q.pan),
        Command::Credit(Credit {
            card: CardRef::Pan(pan),
            ..
        }) => Some(*pan),
        _ => None,
    }
}

fn span(start: usize, end: usize) -> Span {
    // Both are bounded by the batch's postings, far below u32::MAX for any
    // batch within BATCH_COMMANDS_MAX except a sweep over > 2^31 lots.
    Span {
        start: u32::try_from(start).unwrap_or(u32::MAX),
        len: u32::try_from(end - start).unwrap_or(u32::MAX),
    }
}
