//! Property tests: random command sequences run against the ledger and
//! against a deliberately naive reference model (plain maps, every lot kept,
//! content compared field by field instead of hashed). They must agree on
//! every outcome's code, on every account's balance, on card status and PIN
//! count, and on the sweep reports; the ledger's invariants must hold after
//! every batch; and replaying the same batches, or restoring a snapshot
//! half-way and continuing, must give identical state.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const PANS: usize = 8;

fn model_pan(i: usize) -> Pan {
    pan(10 + i as u64)
}

fn model_key(i: usize) -> RequestKey {
    key(&format!("K{i}"))
}

fn acceptors() -> [Acceptor; 6] {
    [
        ewarong(),
        agent(),
        shop(),
        acceptor(TerminalKind::Ewarong, BANK, "NOT-REGISTERED"),
        acceptor(TerminalKind::Agent, OTHER_BANK, "BNI-AGENT"),
        acceptor(TerminalKind::Ewarong, OTHER_BANK, "BNI-EWARONG"),
    ]
}

const PAY_AMOUNTS: [Amount; 10] = [
    0,
    1,
    20_000 * RP,
    50_000 * RP,
    50_000 * RP,
    100_000 * RP,
    200_000 * RP,
    400_000 * RP,
    1_000_000 * RP,
    1_000_000 * RP + 1,
];
const CREDIT_AMOUNTS: [Amount; 4] = [0, 200_000 * RP, 750_000 * RP, 1_000_000 * RP];
const STEPS: [u64; 7] = [0, 1, 3_600, DAY, 7 * DAY, 30 * DAY, 50 * DAY];

fn config(cash_allowed: bool) -> LedgerConfig {
    LedgerConfig {
        bank: BANK,
        rule_set: if cash_allowed {
            RuleSet::CashAllowed
        } else {
            RuleSet::FoodOnly
        },
        limits: Limits {
            withdrawal_day_amount_max: 1_500_000 * RP,
            withdrawal_day_count_max: 2,
            ..Limits::default()
        },
    }
}

/// Which key a keyed command uses: mostly a fresh one, sometimes one used
/// before (a conflict, or a late original of a tombstone).
#[derive(Clone, Copy, Debug)]
struct KeySel {
    fresh: bool,
    /// The key of an original that was reversed before it arrived.
    late: bool,
    back: usize,
}

fn key_sel() -> impl Strategy<Value = KeySel> {
    (0..20usize, 0..16usize).prop_map(|(roll, back)| KeySel {
        fresh: roll < 16,
        late: roll >= 18,
        back,
    })
}

/// Which PAN: mostly the cards opened at the start.
fn pan_sel() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0..3usize, 1 => 0..PANS]
}

/// A generated operation; indices into the pools above. Turned into a
/// [`Command`] against the reference model's state and history, so that
/// reversals mostly name a real original with its exact DE2/DE4 and
/// retransmissions repeat an earlier request exactly.
#[derive(Clone, Debug)]
enum Op {
    Open {
        pan: usize,
        family: u64,
        active: bool,
    },
    Credit {
        key: KeySel,
        fp: bool,
        program: usize,
        by_family: bool,
        pan: usize,
        family: u64,
        amount: usize,
    },
    Pay {
        withdrawal: bool,
        key: KeySel,
        fp: bool,
        wallet: usize,
        pan: usize,
        amount: usize,
        fitting: bool,
        acceptor: usize,
        pin: usize,
        precheck: usize,
    },
    Inquiry {
        key: KeySel,
        fp: bool,
        pan: usize,
        acceptor: usize,
        pin: usize,
        precheck: usize,
    },
    Reversal {
        key: KeySel,
        known: bool,
        back: usize,
        exact: bool,
        pan: usize,
        amount: usize,
    },
    Retransmit {
        back: usize,
        pin: usize,
    },
    Admin {
        what: usize,
        pan: usize,
        other: usize,
        pvv: bool,
    },
    Sweep {
        back: u64,
    },
    Expire {
        days: u64,
    },
    PeriodCredit {
        program: usize,
        period: u16,
        family: u64,
        amount: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..PANS, 0..6u64, any::<bool>()).prop_map(|(pan, family, active)| Op::Open { pan, family, active }),
        7 => (key_sel(), prop::bool::weighted(0.05), 0..2usize, prop::bool::weighted(0.3), pan_sel(), 0..6u64, 0..CREDIT_AMOUNTS.len())
            .prop_map(|(key, fp, program, by_family, pan, family, amount)| Op::Credit { key, fp, program, by_family, pan, family, amount }),
        12 => (any::<bool>(), key_sel(), prop::bool::weighted(0.05), 0..2usize, pan_sel(), 0..PAY_AMOUNTS.len(), prop::bool::weighted(0.8), 0..6usize, 0..20usize, 0..10usize)
            .prop_map(|(withdrawal, key, fp, wallet, pan, amount, fitting, acceptor, pin, precheck)| Op::Pay { withdrawal, key, fp, wallet, pan, amount, fitting, acceptor, pin, precheck }),
        2 => (key_sel(), prop::bool::weighted(0.05), pan_sel(), 0..6usize, 0..20usize, 0..10usize)
            .prop_map(|(key, fp, pan, acceptor, pin, precheck)| Op::Inquiry { key, fp, pan, acceptor, pin, precheck }),
        4 => (key_sel(), prop::bool::weighted(0.8), 0..8usize, prop::bool::weighted(0.85), pan_sel(), 0..PAY_AMOUNTS.len())
            .prop_map(|(key, known, back, exact, pan, amount)| Op::Reversal { key, known, back, exact, pan, amount }),
        2 => (0..8usize, 0..20usize).prop_map(|(back, pin)| Op::Retransmit { back, pin }),
        2 => (0..12usize, 0..PANS, 0..PANS, prop::bool::weighted(0.9)).prop_map(|(what, pan, other, pvv)| Op::Admin { what, pan, other, pvv }),
        1 => (0..3u64).prop_map(|back| Op::Sweep { back }),
        1 => (0..40u64).prop_map(|days| Op::Expire { days }),
        3 => (0..2usize, 0..6u16, 0..6u64, 0..CREDIT_AMOUNTS.len())
            .prop_map(|(program, period, family, amount)| Op::PeriodCredit { program, period, family, amount }),
    ]
}

fn batches() -> impl Strategy<Value = (bool, Vec<(usize, Vec<Op>)>)> {
    let step = prop_oneof![6 => 0..4usize, 2 => 4..6usize, 1 => 6..7usize];
    (
        any::<bool>(),
        prop::collection::vec((step, prop::collection::vec(op(), 1..8)), 1..40),
    )
}

// ---- the reference model ---------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Acct {
    Source,
    Treasury,
    Wallet(usize, usize),
    Terminal(MerchantId),
    Interbank(BankCode),
}

#[derive(Clone, Debug, Default)]
struct RWallet {
    /// Every credit ever: (arrived, amount). Never pruned.
    lots: Vec<(u64, Amount)>,
    consumed: Amount,
    /// Periods paid by `PeriodCredit` (they move with the wallet).
    periods: Vec<u16>,
}

impl RWallet {
    fn credited(&self) -> Amount {
        self.lots.iter().map(|l| l.1).sum()
    }

    fn balance(&self) -> Amount {
        self.credited() - self.consumed
    }
}

#[derive(Clone, Debug)]
struct RCard {
    pan: Pan,
    family: u64,
    status: CardStatus,
    pvv: Pvv,
    tries: u8,
    wallets: [RWallet; 2],
    opened: u64,
    first_credit: Option<u64>,
    last_use: Option<u64>,
    reset: u64,
    day: u64,
    day_amount: Amount,
    day_count: u32,
    replaced_by: Option<usize>,
}

#[derive(Clone, Debug)]
struct RKey {
    at: u64,
    tombstone: bool,
    /// The command with PIN and terminal kind blanked: content compared by value.
    content: Option<Command>,
    fingerprint: Fingerprint,
    op: KeyOp,
    target: CardRef,
    amount: Amount,
    code: Code,
    /// (card, wallet, counter, day)
    posted: Option<(usize, usize, Acct, u64)>,
    reversed: bool,
}

struct Model {
    config: LedgerConfig,
    cards: Vec<RCard>,
    by_pan: HashMap<Pan, usize>,
    families: HashMap<u64, usize>,
    terminals: Vec<MerchantId>,
    balances: HashMap<Acct, i128>,
    keys: HashMap<RequestKey, RKey>,
    now: u64,
    last_sweep: u64,
    sweep_lines: Vec<(Pan, bool, [Amount; 2])>,
    /// Keyed commands sent so far (for reuse, reversal and retransmission).
    history: Vec<Command>,
    /// Fresh keys handed out so far.
    fresh: usize,
    /// Originals named by reversals before they were sent.
    unsent: Vec<RequestKey>,
}

fn normalized(c: &Command) -> Command {
    let mut c = *c;
    match &mut c {
        Command::Purchase(p) | Command::Withdrawal(p) => {
            p.pin = None;
            p.acceptor.kind = TerminalKind::Ewarong;
        }
        Command::BalanceInquiry(q) => {
            q.pin = None;
            q.acceptor.kind = TerminalKind::Ewarong;
        }
        _ => {}
    }
    c
}

impl Model {
    fn new(config: LedgerConfig) -> Model {
        Model {
            config,
            cards: Vec::new(),
            by_pan: HashMap::new(),
            families: HashMap::new(),
            terminals: Vec::new(),
            balances: HashMap::new(),
            keys: HashMap::new(),
            now: 0,
            last_sweep: 0,
            sweep_lines: Vec::new(),
            history: Vec::new(),
            fresh: 0,
            unsent: Vec::new(),
        }
    }

    fn mv(&mut self, from: Acct, to: Acct, amount: Amount) {
        *self.balances.entry(from).or_default() -= i128::from(amount);
        *self.balances.entry(to).or_default() += i128::from(amount);
    }

    fn apply(&mut self, batch: &[Command], ts: u64) -> Vec<(Code, bool)> {
        self.now = self.now.max(ts);
        self.sweep_lines.clear();
        batch.iter().map(|c| self.one(c)).collect()
    }

    fn one(&mut self, c: &Command) -> (Code, bool) {
        let (key, fingerprint) = match c {
            Command::Credit(x) => (x.request.key, x.request.fingerprint),
            Command::Purchase(x) | Command::Withdrawal(x) => (x.request.key, x.request.fingerprint),
            Command::BalanceInquiry(x) => (x.request.key, x.request.fingerprint),
            Command::Reversal(x) => (x.request.key, x.request.fingerprint),
            Command::PeriodCredit(x) => return self.period_credit(x),
            _ => return (self.admin(c), false),
        };
        if let Some(r) = self.keys.get(&key) {
            if r.tombstone {
                return (Code::Reversed, false);
            }
            if r.content == Some(normalized(c)) && r.fingerprint == fingerprint {
                return (r.code, true);
            }
            return (Code::KeyConflict, false);
        }
        let (op, target, amount, code, posted) = match c {
            Command::Credit(x) => (KeyOp::Credit, x.card, x.amount, self.credit(x), None),
            Command::Purchase(p) => {
                let (code, posted) = self.pay(p, false);
                (KeyOp::Purchase, CardRef::Pan(p.pan), p.amount, code, posted)
            }
            Command::Withdrawal(p) => {
                let (code, posted) = self.pay(p, true);
                (
                    KeyOp::Withdrawal,
                    CardRef::Pan(p.pan),
                    p.amount,
                    code,
                    posted,
                )
            }
            Command::BalanceInquiry(q) => (
                KeyOp::Inquiry,
                CardRef::Pan(q.pan),
                0,
                self.inquire(q),
                None,
            ),
            Command::Reversal(r) => (
                KeyOp::Reversal,
                CardRef::Pan(r.pan),
                r.amount,
                self.reverse(r),
                None,
            ),
            _ => unreachable!(),
        };
        self.keys.insert(
            key,
            RKey {
                at: self.now,
                tombstone: false,
                content: Some(normalized(c)),
                fingerprint,
                op,
                target,
                amount,
                code,
                posted,
                reversed: false,
            },
        );
        (code, false)
    }

    fn counter(&self, a: &Acceptor) -> Option<Acct> {
        if a.bank == BANK {
            self.terminals
                .contains(&a.merchant)
                .then_some(Acct::Terminal(a.merchant))
        } else {
            Some(Acct::Interbank(a.bank))
        }
    }

    fn gate(&mut self, card: usize, pin: Option<Pvv>) -> Result<(), Code> {
        let max = self.config.limits.pin_tries_max;
        let now = self.now;
        let c = &mut self.cards[card];
        match c.status {
            CardStatus::Active => {}
            CardStatus::Inactive => return Err(Code::CardInactive),
            CardStatus::Blocked { reason } => return Err(Code::CardBlocked { reason }),
            CardStatus::Closed => return Err(Code::CardClosed),
            CardStatus::PinBlocked => return Err(Code::PinBlocked),
        }
        if pin == Some(c.pvv) {
            c.tries = 0;
            c.last_use = Some(now);
            return Ok(());
        }
        c.tries += 1;
        if c.tries >= max {
            c.status = CardStatus::PinBlocked;
            Err(Code::PinTriesExceeded)
        } else {
            Err(Code::WrongPin {
                tries_left: max - c.tries,
            })
        }
    }

    fn pay(&mut self, p: &Payment, withdrawal: bool) -> (Code, Option<(usize, usize, Acct, u64)>) {
        let Some(counter) = self.counter(&p.acceptor) else {
            return (Code::UnknownTerminal, None);
        };
        let Some(&card) = self.by_pan.get(&p.pan) else {
            return (Code::UnknownCard, None);
        };
        if let Err(code) = self.gate(card, p.pin) {
            return (code, None);
        }
        let l = self.config.limits;
        let w = p.wallet.index();
        let kind = p.acceptor.kind;
        let code = if p.precheck == Precheck::Unsupported {
            Some(Code::Unsupported)
        } else if withdrawal && kind != TerminalKind::Agent {
            Some(Code::NotPermittedOnTerminal)
        } else if withdrawal
            && p.wallet == Program::Bpnt
            && self.config.rule_set == RuleSet::FoodOnly
        {
            Some(Code::NotPermittedToCardholder)
        } else if !withdrawal && p.wallet == Program::Bpnt && kind != TerminalKind::Ewarong {
            Some(Code::NotPermittedOnTerminal)
        } else if let Precheck::Ineligible { item } = p.precheck {
            Some(Code::Ineligible { item })
        } else if p.amount == 0 || p.amount > l.amount_max || p.precheck == Precheck::BadAmount {
            Some(Code::AmountInvalid)
        } else {
            None
        };
        if let Some(code) = code {
            return (code, None);
        }
        let day = wib_day(self.now);
        let c = &self.cards[card];
        let (used, count) = if c.day == day {
            (c.day_amount, c.day_count)
        } else {
            (0, 0)
        };
        if withdrawal {
            if p.amount > l.withdrawal_amount_max || used + p.amount > l.withdrawal_day_amount_max {
                return (Code::AmountLimit, None);
            }
            if count >= l.withdrawal_day_count_max {
                return (Code::CountLimit, None);
            }
        }
        if c.wallets[w].balance() < p.amount {
            return (Code::InsufficientFunds, None);
        }
        self.mv(Acct::Wallet(card, w), counter, p.amount);
        let c = &mut self.cards[card];
        c.wallets[w].consumed += p.amount;
        if withdrawal {
            c.day = day;
            c.day_amount = used + p.amount;
            c.day_count = count + 1;
        }
        (Code::Approved, Some((card, w, counter, day)))
    }

    fn inquire(&mut self, q: &Inquiry) -> Code {
        if self.counter(&q.acceptor).is_none() {
            return Code::UnknownTerminal;
        }
        let Some(&card) = self.by_pan.get(&q.pan) else {
            return Code::UnknownCard;
        };
        if let Err(code) = self.gate(card, q.pin) {
            return code;
        }
        match q.precheck {
            Precheck::Passed => Code::Approved,
            Precheck::Unsupported => Code::Unsupported,
            Precheck::Ineligible { item } => Code::Ineligible { item },
            Precheck::BadAmount => Code::AmountInvalid,
        }
    }

    fn credit(&mut self, x: &Credit) -> Code {
        let card = match x.card {
            CardRef::Pan(p) => self.by_pan.get(&p).copied(),
            CardRef::Family(f) => self.families.get(&f.0).copied(),
        };
        let Some(card) = card else {
            return Code::UnknownCard;
        };
        if self.cards[card].status == CardStatus::Closed {
            return Code::CardClosed;
        }
        if x.amount == 0 {
            return Code::AmountInvalid;
        }
        let w = x.program.index();
        self.mv(Acct::Source, Acct::Wallet(card, w), x.amount);
        let now = self.now;
        let c = &mut self.cards[card];
        c.wallets[w].lots.push((now, x.amount));
        c.first_credit.get_or_insert(now);
        Code::Approved
    }

    /// Once per (card's wallet, period); the periods follow a replacement.
    fn period_credit(&mut self, x: &PeriodCredit) -> (Code, bool) {
        let Some(&card) = self.families.get(&x.family.0) else {
            return (Code::UnknownCard, false);
        };
        let w = x.program.index();
        if self.cards[card].wallets[w].periods.contains(&x.period) {
            return (Code::Approved, true);
        }
        if self.cards[card].status == CardStatus::Closed {
            return (Code::CardClosed, false);
        }
        if x.amount == 0 {
            return (Code::AmountInvalid, false);
        }
        self.mv(Acct::Source, Acct::Wallet(card, w), x.amount);
        let now = self.now;
        let c = &mut self.cards[card];
        c.wallets[w].lots.push((now, x.amount));
        c.wallets[w].periods.push(x.period);
        c.first_credit.get_or_insert(now);
        (Code::Approved, false)
    }

    fn reverse(&mut self, r: &Reversal) -> Code {
        if r.original == r.request.key {
            return Code::ReversalMismatch;
        }
        if !self.by_pan.contains_key(&r.pan) {
            return Code::UnknownCard;
        }
        let Some(o) = self.keys.get(&r.original).cloned() else {
            self.keys.insert(
                r.original,
                RKey {
                    at: self.now,
                    tombstone: true,
                    content: None,
                    fingerprint: Fingerprint::ZERO,
                    op: KeyOp::Tombstone,
                    target: CardRef::Pan(r.pan),
                    amount: r.amount,
                    code: Code::Reversed,
                    posted: None,
                    reversed: true,
                },
            );
            return Code::ReversalRecorded;
        };
        if o.tombstone {
            return Code::ReversalRepeat;
        }
        if matches!(o.op, KeyOp::Credit | KeyOp::Reversal) {
            return Code::ReversalMismatch;
        }
        if o.target != CardRef::Pan(r.pan) || o.amount != r.amount {
            return Code::ReversalMismatch;
        }
        if o.reversed {
            return Code::ReversalRepeat;
        }
        if let Some((card, w, counter, day)) = o.posted {
            let mut holder = card;
            while let Some(n) = self.cards[holder].replaced_by {
                holder = n;
            }
            self.mv(counter, Acct::Wallet(holder, w), r.amount);
            let h = &mut self.cards[holder];
            h.wallets[w].consumed -= r.amount;
            if o.op == KeyOp::Withdrawal && h.day == day {
                h.day_amount -= r.amount;
                h.day_count -= 1;
            }
        }
        if let Some(o) = self.keys.get_mut(&r.original) {
            o.reversed = true;
        }
        Code::Approved
    }

    fn open_card(&mut self, pan: Pan, family: u64, pvv: Pvv, status: CardStatus) -> usize {
        let id = self.cards.len();
        self.cards.push(RCard {
            pan,
            family,
            status,
            pvv,
            tries: 0,
            wallets: Default::default(),
            opened: self.now,
            first_credit: None,
            last_use: None,
            reset: self.now,
            day: 0,
            day_amount: 0,
            day_count: 0,
            replaced_by: None,
        });
        self.by_pan.insert(pan, id);
        self.families.insert(family, id);
        id
    }

    fn live(&self, pan: &Pan) -> Result<usize, Code> {
        let &c = self.by_pan.get(pan).ok_or(Code::UnknownCard)?;
        if self.cards[c].status == CardStatus::Closed {
            return Err(Code::CardClosed);
        }
        Ok(c)
    }

    fn admin(&mut self, c: &Command) -> Code {
        let now = self.now;
        match *c {
            Command::OpenTerminalAccount { merchant, .. } => {
                if self.terminals.contains(&merchant) {
                    return Code::AlreadyExists;
                }
                self.terminals.push(merchant);
                Code::Approved
            }
            Command::OpenCard {
                pan,
                family,
                pvv,
                status,
            } => {
                let family_open = self
                    .families
                    .get(&family.0)
                    .is_some_and(|&i| self.cards[i].status != CardStatus::Closed);
                if self.by_pan.contains_key(&pan) || family_open {
                    return Code::AlreadyExists;
                }
                self.open_card(pan, family.0, pvv, status);
                Code::Approved
            }
            Command::Activate { pan } => match self.live(&pan) {
                Err(code) => code,
                Ok(i) => match self.cards[i].status {
                    CardStatus::Active => Code::Approved,
                    CardStatus::Inactive => {
                        self.cards[i].status = CardStatus::Active;
                        self.cards[i].reset = now;
                        Code::Approved
                    }
                    _ => Code::InvalidTransition,
                },
            },
            Command::SetPin { pan, pvv } => match self.live(&pan) {
                Err(code) => code,
                Ok(i) => {
                    let card = &mut self.cards[i];
                    card.pvv = pvv;
                    card.tries = 0;
                    if card.status == CardStatus::PinBlocked {
                        card.status = CardStatus::Active;
                        card.reset = now;
                    }
                    Code::Approved
                }
            },
            Command::Block { pan } => match self.live(&pan) {
                Err(code) => code,
                Ok(i) => {
                    self.cards[i].status = CardStatus::Blocked {
                        reason: BlockReason::Bank,
                    };
                    Code::Approved
                }
            },
            Command::Unblock { pan } => match self.live(&pan) {
                Err(code) => code,
                Ok(i) => {
                    let card = &mut self.cards[i];
                    match card.status {
                        CardStatus::Inactive => return Code::InvalidTransition,
                        CardStatus::Active => {}
                        _ => {
                            card.status = CardStatus::Active;
                            card.reset = now;
                        }
                    }
                    card.tries = 0;
                    Code::Approved
                }
            },
            Command::Close { pan } => match self.live(&pan) {
                Err(code) => code,
                Ok(i) => {
                    for w in 0..2 {
                        let b = self.cards[i].wallets[w].balance();
                        if b > 0 {
                            self.mv(Acct::Wallet(i, w), Acct::Treasury, b);
                            self.cards[i].wallets[w].consumed += b;
                        }
                    }
                    self.cards[i].status = CardStatus::Closed;
                    Code::Approved
                }
            },
            Command::Replace {
                old_pan,
                new_pan,
                pvv,
            } => match self.live(&old_pan) {
                Err(code) => code,
                Ok(old) => {
                    if self.by_pan.contains_key(&new_pan) {
                        return Code::AlreadyExists;
                    }
                    let family = self.cards[old].family;
                    let new = self.open_card(new_pan, family, pvv, CardStatus::Active);
                    for w in 0..2 {
                        let b = self.cards[old].wallets[w].balance();
                        if b > 0 {
                            self.mv(Acct::Wallet(old, w), Acct::Wallet(new, w), b);
                        }
                        self.cards[new].wallets[w] =
                            std::mem::take(&mut self.cards[old].wallets[w]);
                    }
                    let o = self.cards[old].clone();
                    self.cards[old].status = CardStatus::Closed;
                    self.cards[old].replaced_by = Some(new);
                    let n = &mut self.cards[new];
                    n.first_credit = o.first_credit;
                    n.last_use = o.last_use;
                    n.day = o.day;
                    n.day_amount = o.day_amount;
                    n.day_count = o.day_count;
                    Code::Approved
                }
            },
            Command::Sweep { as_of } => {
                let as_of = as_of.max(self.last_sweep);
                self.last_sweep = as_of;
                let l = self.config.limits;
                for i in 0..self.cards.len() {
                    let card = &self.cards[i];
                    let anchor = card
                        .last_use
                        .or(card.first_credit)
                        .unwrap_or(card.opened)
                        .max(card.reset);
                    let blocked = card.status == CardStatus::Active
                        && as_of.saturating_sub(anchor) >= u64::from(l.dormant_block_days) * DAY;
                    if blocked {
                        self.cards[i].status = CardStatus::Blocked {
                            reason: BlockReason::Dormant,
                        };
                    }
                    let mut returned = [0; 2];
                    if let Some(cutoff) = as_of.checked_sub(u64::from(l.dormant_return_days) * DAY)
                    {
                        for (w, slot) in returned.iter_mut().enumerate() {
                            let wallet = &self.cards[i].wallets[w];
                            let mut start = 0;
                            let mut consumed = wallet.consumed;
                            for &(arrived, amount) in &wallet.lots {
                                let end = start + amount;
                                if end > consumed {
                                    if arrived > cutoff {
                                        break;
                                    }
                                    *slot += end - consumed.max(start);
                                    consumed = end;
                                }
                                start = end;
                            }
                            let total = *slot;
                            if total > 0 {
                                self.cards[i].wallets[w].consumed += total;
                                self.mv(Acct::Wallet(i, w), Acct::Treasury, total);
                            }
                        }
                    }
                    if blocked || returned != [0, 0] {
                        self.sweep_lines
                            .push((self.cards[i].pan, blocked, returned));
                    }
                }
                Code::Approved
            }
            Command::ExpireKeys { before } => {
                // Disbursement credits are never forgotten (DESIGN §4).
                self.keys
                    .retain(|_, r| r.at >= before || r.op == KeyOp::Credit);
                Code::Approved
            }
            _ => unreachable!(),
        }
    }

    fn pick_key(&mut self, sel: KeySel) -> RequestKey {
        if sel.late && !self.unsent.is_empty() {
            return self.unsent[self.unsent.len() - 1 - sel.back % self.unsent.len()];
        }
        if !sel.fresh && !self.history.is_empty() {
            let i = self.history.len() - 1 - sel.back % self.history.len();
            if let Some(k) = self.history[i].key() {
                return *k;
            }
        }
        self.fresh += 1;
        model_key(self.fresh)
    }

    /// Turns a generated op into a command (see [`Op`]).
    fn command(&mut self, op: &Op, acceptors: &[Acceptor; 6]) -> Command {
        let fp = |on: bool| {
            if on {
                Fingerprint([1; 16])
            } else {
                Fingerprint::ZERO
            }
        };
        let pin = |i: usize| match i {
            0..=16 => Some(RIGHT),
            17 | 18 => Some(WRONG),
            _ => None,
        };
        let precheck = |i: usize| match i {
            0..=6 => Precheck::Passed,
            7 => Precheck::Unsupported,
            8 => Precheck::Ineligible { item: *b"ROKK" },
            _ => Precheck::BadAmount,
        };
        let program = |i: usize| if i == 0 { Program::Pkh } else { Program::Bpnt };
        let command = match *op {
            Op::Open {
                pan,
                family,
                active,
            } => Command::OpenCard {
                pan: model_pan(pan),
                family: FamilyId(family),
                pvv: RIGHT,
                status: if active {
                    CardStatus::Active
                } else {
                    CardStatus::Inactive
                },
            },
            Op::Credit {
                key,
                fp: f,
                program: p,
                by_family,
                pan,
                family,
                amount,
            } => Command::Credit(Credit {
                request: Request {
                    key: self.pick_key(key),
                    fingerprint: fp(f),
                },
                program: program(p),
                card: if by_family {
                    CardRef::Family(FamilyId(family))
                } else {
                    CardRef::Pan(model_pan(pan))
                },
                amount: CREDIT_AMOUNTS[amount],
            }),
            Op::PeriodCredit {
                program: p,
                period,
                family,
                amount,
            } => Command::PeriodCredit(PeriodCredit {
                program: program(p),
                period: 24_300 + period,
                family: FamilyId(family),
                amount: CREDIT_AMOUNTS[amount],
            }),
            Op::Pay {
                withdrawal,
                key,
                fp: f,
                wallet,
                pan,
                amount,
                fitting,
                acceptor,
                pin: p,
                precheck: c,
            } => {
                let wallet = program(wallet);
                // Mostly a terminal where the transaction is allowed.
                let at = match (fitting, withdrawal, wallet) {
                    (false, _, _) => acceptors[acceptor],
                    (true, true, _) => acceptors[if acceptor % 2 == 0 { 1 } else { 4 }],
                    (true, false, Program::Bpnt) => {
                        acceptors[if acceptor % 2 == 0 { 0 } else { 5 }]
                    }
                    (true, false, Program::Pkh) => acceptors[acceptor % 3],
                };
                let payment = Payment {
                    request: Request {
                        key: self.pick_key(key),
                        fingerprint: fp(f),
                    },
                    wallet,
                    pan: model_pan(pan),
                    amount: PAY_AMOUNTS[amount],
                    acceptor: at,
                    pin: pin(p),
                    precheck: precheck(c),
                };
                if withdrawal {
                    Command::Withdrawal(payment)
                } else {
                    Command::Purchase(payment)
                }
            }
            Op::Inquiry {
                key,
                fp: f,
                pan,
                acceptor,
                pin: p,
                precheck: c,
            } => Command::BalanceInquiry(Inquiry {
                request: Request {
                    key: self.pick_key(key),
                    fingerprint: fp(f),
                },
                pan: model_pan(pan),
                acceptor: acceptors[acceptor],
                pin: pin(p),
                precheck: precheck(c),
            }),
            Op::Reversal {
                key,
                known,
                back,
                exact,
                pan,
                amount,
            } => {
                let payments: Vec<&Payment> = self
                    .history
                    .iter()
                    .filter_map(|c| match c {
                        Command::Purchase(p) | Command::Withdrawal(p) => Some(p),
                        _ => None,
                    })
                    .collect();
                let (original, pan, amount) = if known && !payments.is_empty() {
                    let p = payments[payments.len() - 1 - back % payments.len()];
                    if exact {
                        (p.request.key, p.pan, p.amount)
                    } else {
                        (p.request.key, model_pan(pan), PAY_AMOUNTS[amount])
                    }
                } else {
                    // An original that never arrived (yet).
                    self.fresh += 1;
                    self.unsent.push(model_key(self.fresh));
                    (model_key(self.fresh), model_pan(pan), PAY_AMOUNTS[amount])
                };
                Command::Reversal(Reversal {
                    request: Request {
                        key: self.pick_key(key),
                        fingerprint: Fingerprint::ZERO,
                    },
                    original,
                    pan,
                    amount,
                })
            }
            Op::Retransmit { back, pin: p } => {
                if self.history.is_empty() {
                    return Command::ExpireKeys { before: 0 };
                }
                let mut c = self.history[self.history.len() - 1 - back % self.history.len()];
                match &mut c {
                    Command::Purchase(x) | Command::Withdrawal(x) => x.pin = pin(p),
                    Command::BalanceInquiry(x) => x.pin = pin(p),
                    _ => {}
                }
                c
            }
            Op::Admin {
                what,
                pan,
                other,
                pvv,
            } => {
                let pan = model_pan(pan);
                let pvv = if pvv { RIGHT } else { WRONG };
                match what {
                    0..=2 => Command::Activate { pan },
                    3 | 4 => Command::SetPin { pan, pvv },
                    5 | 6 => Command::Block { pan },
                    7..=9 => Command::Unblock { pan },
                    10 => Command::Close { pan },
                    _ => Command::Replace {
                        old_pan: pan,
                        new_pan: model_pan(other),
                        pvv,
                    },
                }
            }
            Op::Sweep { back } => Command::Sweep {
                as_of: self.now.saturating_sub(back * DAY),
            },
            Op::Expire { days } => Command::ExpireKeys {
                before: self.now.saturating_sub(days * DAY),
            },
        };
        if command.key().is_some() {
            self.history.push(command);
        }
        command
    }
}

fn setup() -> Vec<Command> {
    let mut v: Vec<Command> = ["EWARONG-1", "AGENT-1", "SHOP-1"]
        .iter()
        .zip([
            TerminalKind::Ewarong,
            TerminalKind::Agent,
            TerminalKind::Merchant,
        ])
        .map(|(m, kind)| Command::OpenTerminalAccount {
            merchant: merchant_id(m),
            kind,
        })
        .collect();
    for i in 0..4 {
        v.push(Command::OpenCard {
            pan: model_pan(i),
            family: FamilyId(i as u64),
            pvv: RIGHT,
            status: if i == 3 {
                CardStatus::Inactive
            } else {
                CardStatus::Active
            },
        });
    }
    v
}

fn compare(ledger: &Ledger, model: &Model, fx: &Effects) -> Result<(), TestCaseError> {
    if let Err(e) = ledger.check_invariants() {
        return Err(TestCaseError::fail(format!("{e}")));
    }
    let mut seen: HashMap<Acct, i128> = HashMap::new();
    for a in ledger.account_records() {
        let acct = match a.kind {
            AccountKind::Source => Acct::Source,
            AccountKind::Treasury => Acct::Treasury,
            AccountKind::Wallet { card, program } => Acct::Wallet(card.0 as usize, program.index()),
            AccountKind::Terminal { merchant, .. } => Acct::Terminal(merchant),
            AccountKind::Interbank { bank } => Acct::Interbank(bank),
        };
        seen.insert(acct, i128::from(a.balance));
    }
    for (acct, balance) in &model.balances {
        prop_assert_eq!(
            seen.get(acct).copied().unwrap_or(0),
            *balance,
            "balance of {:?}",
            acct
        );
    }
    for (acct, balance) in &seen {
        prop_assert_eq!(
            model.balances.get(acct).copied().unwrap_or(0),
            *balance,
            "balance of {:?}",
            acct
        );
    }
    prop_assert_eq!(ledger.card_count(), model.cards.len());
    for (c, r) in ledger.cards().zip(&model.cards) {
        prop_assert_eq!(c.pan, r.pan);
        prop_assert_eq!(c.status, r.status, "status of {:?}", c.pan);
        prop_assert_eq!(c.pin_tries, r.tries);
        prop_assert_eq!(
            (c.day, c.day_amount, c.day_count),
            (r.day, r.day_amount, r.day_count)
        );
        for w in 0..2 {
            prop_assert_eq!(c.wallets[w].balance(), r.wallets[w].balance());
        }
    }
    let lines: Vec<(Pan, bool, [Amount; 2])> = fx
        .sweep
        .iter()
        .map(|l| (l.pan, l.blocked, l.returned))
        .collect();
    prop_assert_eq!(&lines, &model.sweep_lines);
    prop_assert_eq!(ledger.keys_len(), model.keys.len());
    Ok(())
}

proptest! {
    // 256 cases unless PROPTEST_CASES says otherwise; failing seeds are kept
    // beside this file (model.proptest-regressions).
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// The ledger agrees with the reference model on every outcome, balance,
    /// card state and sweep report; invariants hold after every batch.
    #[test]
    fn ledger_matches_reference_model((cash, plan) in batches()) {
        let accs = acceptors();
        let mut ledger = Ledger::new(config(cash));
        let mut model = Model::new(config(cash));
        let mut fx = Effects::default();
        let mut now = T0;
        let setup = setup();
        ledger.apply(&setup, now, &mut fx);
        model.apply(&setup, now);
        compare(&ledger, &model, &fx)?;
        for (step, ops) in &plan {
            now += STEPS[*step];
            model.now = model.now.max(now);
            let batch: Vec<Command> = ops.iter().map(|op| model.command(op, &accs)).collect();
            ledger.apply(&batch, now, &mut fx);
            let expected = model.apply(&batch, now);
            let got: Vec<(Code, bool)> = fx.outcomes.iter().map(|o| (o.code(), o.replayed)).collect();
            prop_assert_eq!(&got, &expected, "batch {:?}", batch);
            compare(&ledger, &model, &fx)?;
        }
    }

    /// Replaying the same batches with the same timestamps gives identical
    /// state and outcomes; so does restoring a snapshot half-way and
    /// replaying the rest.
    #[test]
    fn ledger_replay_is_deterministic((cash, plan) in batches()) {
        let accs = acceptors();
        let mut model = Model::new(config(cash));
        let mut journal: Vec<(Vec<Command>, u64)> = vec![(setup(), T0)];
        model.apply(&setup(), T0);
        let mut now = T0;
        for (step, ops) in &plan {
            now += STEPS[*step];
            model.now = model.now.max(now);
            let batch: Vec<Command> = ops.iter().map(|op| model.command(op, &accs)).collect();
            model.apply(&batch, now);
            journal.push((batch, now));
        }

        let run = |from: Option<(Snapshot, usize)>| {
            let (mut ledger, start) = match from {
                Some((snap, start)) => (Ledger::restore(snap).expect("valid snapshot"), start),
                None => (Ledger::new(config(cash)), 0),
            };
            let mut fx = Effects::default();
            let mut outcomes = Vec::new();
            let mut postings = Vec::new();
            for (batch, ts) in &journal[start..] {
                ledger.apply(batch, *ts, &mut fx);
                outcomes.extend(fx.outcomes.iter().copied());
                postings.extend(fx.postings.iter().copied());
            }
            (ledger, outcomes, postings)
        };
        let (a, a_out, a_post) = run(None);
        let (b, b_out, b_post) = run(None);
        prop_assert_eq!(a.snapshot(), b.snapshot());
        prop_assert_eq!(&a_out, &b_out);
        prop_assert_eq!(&a_post, &b_post);

        // Checkpoint half-way (through serde, as storage would) and replay the rest.
        let half = journal.len() / 2;
        let mut c = Ledger::new(config(cash));
        let mut fx = Effects::default();
        for (batch, ts) in &journal[..half] {
            c.apply(batch, *ts, &mut fx);
        }
        let json = serde_json::to_string(&c.snapshot()).expect("serializes");
        let snap: Snapshot = serde_json::from_str(&json).expect("deserializes");
        let (d, _, _) = run(Some((snap, half)));
        prop_assert_eq!(d.snapshot(), a.snapshot());
    }
}
