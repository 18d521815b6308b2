//! `kks-switch audit`: re-derive every balance from the journal and check
//! the ledger's invariants, independently of the running host.
//!
//! Checks, per bank:
//! 1. the ledger rebuilt from checkpoint + journal passes
//!    [`Ledger::check_invariants`] (postings balance, no wallet below zero,
//!    accounts sum to zero);
//! 2. every account's balance equals credits − debits summed over the
//!    postings table (the journal of postings, independent of checkpoints);
//! 3. the postings journal sums to zero and its ids are gapless;
//! 4. one effect per key: every idempotency key's postings come from one
//!    command, and no original is reversed twice.

use crate::ledger::{AccountId, AccountKind, Command, Ledger, LedgerConfig, PostingKind, Program};
use crate::shard::{decode_commands, recover};
use crate::storage::Store;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One broken rule, with ids (never a full PAN).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Violation {
    pub bank: u16,
    pub what: String,
}

/// Per-card figures for load tools (`audit --json`).
#[derive(Clone, Debug, Serialize, Default, PartialEq, Eq)]
pub struct CardFigures {
    pub pan: String,
    pub bank: u16,
    pub pkh_balance: i64,
    pub bpnt_balance: i64,
    /// Sum of approved purchases posted from this card's wallets (gross).
    pub purchases: u64,
    /// Sum of approved cash withdrawals posted (gross).
    pub withdrawals: u64,
    /// Sum given back to this card by reversals.
    pub reversed: u64,
    /// Sum of disbursement credits.
    pub credits: u64,
}

/// What `audit` found.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Report {
    pub banks: Vec<BankSummary>,
    pub violations: Vec<Violation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cards: Vec<CardFigures>,
}

/// Totals per bank.
#[derive(Clone, Debug, Serialize, Default)]
pub struct BankSummary {
    pub bank: u16,
    pub batches: u64,
    pub postings: u64,
    pub accounts: u64,
    pub cards: u64,
    pub wallet_total: i64,
    pub keys: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Run every check on `store` for `banks`. `with_cards` fills per-card figures.
///
/// The checks read the store in several queries, so a batch committed
/// between two of them (by a running server, or by the transaction of a
/// process that was killed after sending its COMMIT, which the database
/// may still finish) would make them disagree. So the journal's head is
/// read before and after: if it moved, the audit runs again, up to
/// [`AUDIT_ATTEMPTS`] times, and then fails rather than report what may be
/// a false violation.
pub async fn audit(
    store: &Store,
    configs: &[LedgerConfig],
    with_cards: bool,
) -> Result<Report, crate::shard::ShardError> {
    let mut last_heads = Vec::new();
    for _ in 0..AUDIT_ATTEMPTS {
        let before = store.journal_heads().await?;
        let report = audit_once(store, configs, with_cards).await?;
        let after = store.journal_heads().await?;
        if before == after {
            return Ok(report);
        }
        last_heads = after;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(crate::shard::ShardError::Changing(format!(
        "the journal kept growing during {AUDIT_ATTEMPTS} audits (heads now {last_heads:?}); \
         stop the server or audit a copy"
    )))
}

/// Audits tried before giving up on a store that keeps changing.
pub const AUDIT_ATTEMPTS: usize = 5;

async fn audit_once(
    store: &Store,
    configs: &[LedgerConfig],
    with_cards: bool,
) -> Result<Report, crate::shard::ShardError> {
    let mut report = Report::default();
    let derived = store.derived_balances().await?;
    let counts = store.posting_counts().await?;
    let mut derived_by_bank: HashMap<u16, BTreeMap<u64, i128>> = HashMap::new();
    for (bank, account, bal) in derived {
        derived_by_bank
            .entry(bank)
            .or_default()
            .insert(account, bal);
    }
    for config in configs {
        let bank = config.bank.0;
        let mut bad = |what: String| report.violations.push(Violation { bank, what });
        let (ledger, _) = recover(store, *config).await?;
        if let Err(e) = ledger.check_invariants() {
            bad(e.to_string());
        }
        // 2 + 3: postings journal against the ledger.
        let empty = BTreeMap::new();
        let d = derived_by_bank.get(&bank).unwrap_or(&empty);
        let total: i128 = d.values().sum();
        if total != 0 {
            bad(format!("postings journal sums to {total}, not zero"));
        }
        for (id, acct) in ledger.account_records().enumerate() {
            let from_journal = d.get(&(id as u64)).copied().unwrap_or(0);
            if from_journal != acct.balance as i128 {
                bad(format!(
                    "account {id}: ledger balance {} but postings give {from_journal}",
                    acct.balance
                ));
            }
            if matches!(acct.kind, AccountKind::Wallet { .. }) && from_journal < 0 {
                bad(format!("wallet account {id} below zero ({from_journal})"));
            }
        }
        if let Some(&max) = d.keys().next_back() {
            if max as usize >= ledger.account_count() {
                bad(format!(
                    "postings name account {max}, which the ledger does not have"
                ));
            }
        }
        let (count, next) = counts
            .iter()
            .find(|(b, _, _)| *b == bank)
            .map(|&(_, c, n)| (c, n))
            .unwrap_or((0, 0));
        if count != next {
            bad(format!(
                "posting ids not gapless: {count} rows, highest id {}",
                next.saturating_sub(1)
            ));
        }
        if next != ledger.counters().postings {
            bad(format!(
                "ledger made {} postings, journal holds {next}",
                ledger.counters().postings
            ));
        }
        // 4: one effect per key, from the command journal.
        // key → (batch, command, batch time, is a disbursement credit)
        let mut effect_of: HashMap<Vec<u8>, (u64, u32, u64, bool)> = HashMap::new();
        let mut reversed: HashMap<Vec<u8>, (u64, u32, u64, bool)> = HashMap::new();
        let mut figures: HashMap<u32, CardFigures> = HashMap::new();
        let mut from = 0u64;
        let mut pid = 0u64;
        let postings = store.postings_from(bank, 0).await?;
        let mut postings = postings.into_iter().peekable();
        loop {
            let page = store.batches_from(bank, from, 512).await?;
            if page.is_empty() {
                break;
            }
            for b in &page {
                from = b.batch + 1;
                let cmds = match decode_commands(&b.commands) {
                    Ok(c) => c,
                    Err(e) => {
                        bad(format!("batch {} undecodable: {e}", b.batch));
                        continue;
                    }
                };
                while let Some(p) = postings.peek().filter(|p| p.batch == b.batch).copied() {
                    postings.next();
                    if p.id != pid {
                        bad(format!("posting {} out of order (expected {pid})", p.id));
                    }
                    pid = p.id + 1;
                    let Some(cmd) = cmds.get(p.cmd as usize) else {
                        bad(format!(
                            "posting {} names command {} of a {}-command batch",
                            p.id,
                            p.cmd,
                            cmds.len()
                        ));
                        continue;
                    };
                    let Some(key) = cmd.key() else { continue };
                    let here = (b.batch, p.cmd, b.ts, matches!(cmd, Command::Credit(_)));
                    if let Command::Reversal(r) = cmd {
                        let prev = reversed
                            .entry(r.original.as_bytes().to_vec())
                            .or_insert(here);
                        if *prev != here {
                            bad(format!(
                                "original reversed by two commands (batches {} and {})",
                                prev.0, here.0
                            ));
                        }
                    }
                    let slot = effect_of.entry(key.as_bytes().to_vec()).or_insert(here);
                    if *slot != here {
                        bad(format!(
                            "key has effects from two commands (batches {} and {})",
                            slot.0, here.0
                        ));
                    }
                    if with_cards {
                        tally(&ledger, &mut figures, p.kind, p.debit, p.credit, p.amount);
                    }
                }
                // Keys past retention may legitimately be used again; the
                // ledger keeps disbursement credits' keys for ever.
                for c in &cmds {
                    if let Command::ExpireKeys { before } = c {
                        effect_of.retain(|_, v| v.2 >= *before || v.3);
                        reversed.retain(|_, v| v.2 >= *before);
                    }
                }
            }
        }
        if postings.peek().is_some() {
            bad("postings exist for batches missing from the journal".into());
        }
        let wallet_total: i64 = ledger
            .account_records()
            .filter(|a| matches!(a.kind, AccountKind::Wallet { .. }))
            .map(|a| a.balance)
            .sum();
        report.banks.push(BankSummary {
            bank,
            batches: ledger.counters().batches,
            postings: ledger.counters().postings,
            accounts: ledger.account_count() as u64,
            cards: ledger.card_count() as u64,
            wallet_total,
            keys: ledger.keys_len() as u64,
        });
        if with_cards {
            for (i, card) in ledger.cards().enumerate() {
                let mut f = figures.remove(&(i as u32)).unwrap_or_default();
                f.pan = card.pan.to_digit_string();
                f.bank = bank;
                let balance = |p: Program| {
                    ledger
                        .account(card.wallets[p.index()].account)
                        .map_or(0, |a| a.balance)
                };
                f.pkh_balance = balance(Program::Pkh);
                f.bpnt_balance = balance(Program::Bpnt);
                report.cards.push(f);
            }
        }
    }
    Ok(report)
}

fn tally(
    ledger: &Ledger,
    figures: &mut HashMap<u32, CardFigures>,
    kind: i16,
    debit: u64,
    credit: u64,
    amount: u64,
) {
    let card_of = |acct: u64| {
        let id = AccountId(u32::try_from(acct).ok()?);
        ledger.wallet_of(id).map(|(card, _)| card.0)
    };
    let is = |k: PostingKind| kind == k as i16;
    if is(PostingKind::Purchase) || is(PostingKind::Withdrawal) {
        if let Some(c) = card_of(debit) {
            let f = figures.entry(c).or_default();
            if is(PostingKind::Purchase) {
                f.purchases += amount;
            } else {
                f.withdrawals += amount;
            }
        }
    } else if is(PostingKind::Credit) {
        if let Some(c) = card_of(credit) {
            figures.entry(c).or_default().credits += amount;
        }
    } else if is(PostingKind::Reversal) {
        if let Some(c) = card_of(credit) {
            figures.entry(c).or_default().reversed += amount;
        }
    }
}
