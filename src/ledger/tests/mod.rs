//! Tests for the ledger: one unit test per outcome and rule (`unit.rs`), and
//! a property test against a small reference model (`model.rs`).
//!
//! Shared here: a little world with a bank, three terminals and helpers to
//! build commands tersely.

mod model;
mod unit;

use super::*;

/// This ledger's bank (BRI).
pub(super) const BANK: BankCode = BankCode(2);
/// Another bank (BNI).
pub(super) const OTHER_BANK: BankCode = BankCode(9);
/// 2026-01-05 10:00 WIB.
pub(super) const T0: u64 = 1_767_582_000;
/// A day.
pub(super) const DAY: u64 = SECONDS_PER_DAY;
/// Rp1 in DE4 units.
pub(super) const RP: u64 = 100;

pub(super) const RIGHT: Pvv = Pvv([1; 32]);
pub(super) const WRONG: Pvv = Pvv([9; 32]);

pub(super) fn pan(n: u64) -> Pan {
    let digits = format!("600002{n:010}");
    Pan::from_digits(digits.as_bytes()).expect("test PAN")
}

pub(super) fn key(s: &str) -> RequestKey {
    RequestKey::new(s.as_bytes()).expect("test key")
}

pub(super) fn req(s: &str) -> Request {
    Request {
        key: key(s),
        fingerprint: Fingerprint::ZERO,
    }
}

pub(super) fn merchant_id(s: &str) -> MerchantId {
    MerchantId::new(s.as_bytes()).expect("test merchant")
}

pub(super) fn acceptor(kind: TerminalKind, bank: BankCode, id: &str) -> Acceptor {
    Acceptor {
        kind,
        bank,
        merchant: merchant_id(id),
    }
}

pub(super) fn ewarong() -> Acceptor {
    acceptor(TerminalKind::Ewarong, BANK, "EWARONG-1")
}

pub(super) fn agent() -> Acceptor {
    acceptor(TerminalKind::Agent, BANK, "AGENT-1")
}

pub(super) fn shop() -> Acceptor {
    acceptor(TerminalKind::Merchant, BANK, "SHOP-1")
}

pub(super) fn payment(
    k: &str,
    wallet: Program,
    card: Pan,
    amount: Amount,
    at: Acceptor,
) -> Payment {
    Payment {
        request: req(k),
        wallet,
        pan: card,
        amount,
        acceptor: at,
        pin: Some(RIGHT),
        precheck: Precheck::Passed,
    }
}

pub(super) fn purchase(k: &str, wallet: Program, card: Pan, amount: Amount) -> Command {
    let at = match wallet {
        Program::Pkh => shop(),
        Program::Bpnt => ewarong(),
    };
    Command::Purchase(payment(k, wallet, card, amount, at))
}

pub(super) fn withdrawal(k: &str, wallet: Program, card: Pan, amount: Amount) -> Command {
    Command::Withdrawal(payment(k, wallet, card, amount, agent()))
}

pub(super) fn inquiry(k: &str, card: Pan, pin: Option<Pvv>) -> Command {
    Command::BalanceInquiry(Inquiry {
        request: req(k),
        pan: card,
        acceptor: ewarong(),
        pin,
        precheck: Precheck::Passed,
    })
}

pub(super) fn credit(k: &str, program: Program, card: Pan, amount: Amount) -> Command {
    Command::Credit(Credit {
        request: req(k),
        program,
        card: CardRef::Pan(card),
        amount,
    })
}

pub(super) fn reversal(k: &str, original: &str, card: Pan, amount: Amount) -> Command {
    Command::Reversal(Reversal {
        request: req(k),
        original: key(original),
        pan: card,
        amount,
    })
}

pub(super) fn open(card: Pan, family: u64) -> Command {
    Command::OpenCard {
        pan: card,
        family: FamilyId(family),
        pvv: RIGHT,
        status: CardStatus::Active,
    }
}

/// A ledger with the three terminals of this bank and card 1 (family 1).
pub(super) struct World {
    pub ledger: Ledger,
    pub fx: Effects,
    pub now: u64,
}

impl World {
    pub fn new() -> World {
        World::with(LedgerConfig::new(BANK))
    }

    pub fn with(config: LedgerConfig) -> World {
        let mut w = World {
            ledger: Ledger::new(config),
            fx: Effects::default(),
            now: T0,
        };
        let setup = [
            Command::OpenTerminalAccount {
                merchant: merchant_id("EWARONG-1"),
                kind: TerminalKind::Ewarong,
            },
            Command::OpenTerminalAccount {
                merchant: merchant_id("AGENT-1"),
                kind: TerminalKind::Agent,
            },
            Command::OpenTerminalAccount {
                merchant: merchant_id("SHOP-1"),
                kind: TerminalKind::Merchant,
            },
            open(pan(1), 1),
        ];
        for o in w.run(&setup) {
            assert_eq!(o.code(), Code::Approved);
        }
        w
    }

    /// Applies a batch at `self.now` and checks every invariant.
    pub fn run(&mut self, batch: &[Command]) -> Vec<Outcome> {
        self.ledger.apply(batch, self.now, &mut self.fx);
        if let Err(e) = self.ledger.check_invariants() {
            panic!("{e}");
        }
        self.fx.outcomes.clone()
    }

    pub fn one(&mut self, command: Command) -> Outcome {
        self.run(&[command])[0]
    }

    pub fn code(&mut self, command: Command) -> Code {
        self.one(command).code()
    }

    pub fn balances(&self, card: Pan) -> Balances {
        self.ledger.balances(&card).expect("card exists")
    }

    pub fn card(&self, card: Pan) -> Card {
        let id = self.ledger.card_id(&card).expect("card exists");
        self.ledger.card(id).expect("card exists")
    }

    pub fn account_balance(&self, id: AccountId) -> i64 {
        self.ledger.account(id).expect("account exists").balance
    }

    pub fn terminal_balance(&self, id: &str) -> i64 {
        let a = self
            .ledger
            .terminal_account(&merchant_id(id))
            .expect("terminal registered");
        self.account_balance(a)
    }

    /// Credits a card with `pkh` and `bpnt`, skipping zeros (keys
    /// `C-PKH-n`/`C-BPNT-n`, n = keys stored before).
    pub fn fund(&mut self, card: Pan, pkh: Amount, bpnt: Amount) {
        let n = self.ledger.keys_len();
        let mut batch = Vec::new();
        if pkh > 0 {
            batch.push(credit(&format!("C-PKH-{n}"), Program::Pkh, card, pkh));
        }
        if bpnt > 0 {
            batch.push(credit(&format!("C-BPNT-{n}"), Program::Bpnt, card, bpnt));
        }
        let outs = self.run(&batch);
        for o in outs {
            assert_eq!(o.code(), Code::Approved);
        }
    }
}
