//! Storage and shard tests on SQLite and PostgreSQL (issue 3 item 6): the
//! real `Shards` over a real `Store`, restarted on the same database.
//!
//! - restart: balances, per-card figures and bank totals after a restart
//!   equal those before it (and equal an independent model), audit clean;
//! - idempotency across a restart: same key and content → the stored reply,
//!   `replayed`, no new postings; same key, other content → 94;
//! - checkpoint + journal replay: with `checkpoint_every_batches = 3`, a
//!   ledger rebuilt from a mid-run checkpoint plus the journal after it
//!   equals the one rebuilt from the journal alone and the one shut down;
//! - tampering: changing or deleting one posting row makes `audit` (library
//!   and `kks-switch audit`) report a violation;
//! - PostgreSQL: the test schema really holds the tables and rows.
//!
//! Workloads are random from a printed seed; set `KKS_TEST_SEED` to repeat.

mod common;

use common::db::{self, Backend, TestDb};
use kks_switch::audit::{audit, CardFigures, Report};
use kks_switch::drill::{bank_configs, open_population, test_pan, DRILL_PVV};
use kks_switch::ledger::{
    Acceptor, Balances, BankCode, Code, Command, Fingerprint, Inquiry, MerchantId, Payment,
    PostingKind, Precheck, Program, Request, RequestKey, Reversal, TerminalKind,
};
use kks_switch::pan::Bank;
use kks_switch::shard::{recover, Done, ShardConfig, Shards};
use kks_switch::storage::{packed, PostingRow, Store, StoredPosting};
use std::collections::HashMap;
use std::time::Duration;

/// Cards per bank in every test.
const CARDS: u32 = 50;
/// What `open_population` credits each card.
const BPNT0: u64 = 60_000_000;
const PKH0: u64 = 75_000_000;
/// Bound on any one test body.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------- helpers

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed(test: &str) -> u64 {
    let s = std::env::var("KKS_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(db::random_u64);
    eprintln!("{test}: seed {s} (KKS_TEST_SEED={s} repeats it)");
    s
}

fn key(s: &str) -> RequestKey {
    RequestKey::new(s.as_bytes()).unwrap_or_else(|| panic!("key too long: {s}"))
}

fn merchant(kind: &str, bank: Bank) -> MerchantId {
    // The ids `open_population` registers (as src/drill.rs names them).
    MerchantId::new(format!("DRILL{kind}{}", bank.code()).as_bytes()).expect("short id")
}

fn code_of(bank: Bank) -> BankCode {
    BankCode(bank.code_number())
}

fn purchase(k: &str, bank: Bank, card: u32, amount: u64, acquirer: Bank) -> Command {
    Command::Purchase(Payment {
        request: Request {
            key: key(k),
            fingerprint: Fingerprint::ZERO,
        },
        wallet: Program::Bpnt,
        pan: test_pan(bank, card),
        amount,
        acceptor: Acceptor {
            kind: TerminalKind::Ewarong,
            bank: code_of(acquirer),
            merchant: merchant("EW", acquirer),
        },
        pin: Some(DRILL_PVV),
        precheck: Precheck::Passed,
    })
}

fn withdrawal(k: &str, bank: Bank, card: u32, amount: u64, acquirer: Bank) -> Command {
    Command::Withdrawal(Payment {
        request: Request {
            key: key(k),
            fingerprint: Fingerprint::ZERO,
        },
        wallet: Program::Pkh,
        pan: test_pan(bank, card),
        amount,
        acceptor: Acceptor {
            kind: TerminalKind::Agent,
            bank: code_of(acquirer),
            merchant: merchant("AG", acquirer),
        },
        pin: Some(DRILL_PVV),
        precheck: Precheck::Passed,
    })
}

fn reversal(k: &str, original: &str, bank: Bank, card: u32, amount: u64) -> Command {
    Command::Reversal(Reversal {
        request: Request {
            key: key(k),
            fingerprint: Fingerprint::ZERO,
        },
        original: key(original),
        pan: test_pan(bank, card),
        amount,
    })
}

fn inquiry(k: &str, bank: Bank, card: u32) -> Command {
    Command::BalanceInquiry(Inquiry {
        request: Request {
            key: key(k),
            fingerprint: Fingerprint::ZERO,
        },
        pan: test_pan(bank, card),
        acceptor: Acceptor {
            kind: TerminalKind::Agent,
            bank: code_of(bank),
            merchant: merchant("AG", bank),
        },
        pin: Some(DRILL_PVV),
        precheck: Precheck::Passed,
    })
}

async fn exec(shards: &Shards, bank: Bank, cmd: Command) -> Done {
    tokio::time::timeout(Duration::from_secs(30), shards.execute(code_of(bank), cmd))
        .await
        .expect("shard answered within 30 s")
        .expect("shard available")
}

async fn open(url: &str) -> Store {
    tokio::time::timeout(Duration::from_secs(30), Store::open(url))
        .await
        .expect("store opened within 30 s")
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

async fn start(store: &Store, cfg: ShardConfig) -> Shards {
    tokio::time::timeout(
        Duration::from_secs(60),
        Shards::start(store.clone(), bank_configs(), cfg),
    )
    .await
    .expect("shards started within 60 s")
    .expect("shards start")
}

async fn populate(shards: &Shards) {
    tokio::time::timeout(Duration::from_secs(60), open_population(shards, CARDS))
        .await
        .expect("population opened within 60 s")
        .expect("population opened");
}

async fn shutdown(shards: Shards) {
    tokio::time::timeout(Duration::from_secs(60), shards.shutdown())
        .await
        .expect("shutdown within 60 s");
}

async fn run_audit(store: &Store) -> Report {
    tokio::time::timeout(Duration::from_secs(60), audit(store, &bank_configs(), true))
        .await
        .expect("audit within 60 s")
        .expect("audit ran")
}

async fn audit_clean(store: &Store, when: &str) -> Report {
    let r = run_audit(store).await;
    assert!(r.ok(), "audit {when}: violations {:#?}", r.violations);
    r
}

/// What a restart must keep: per-card figures and per-bank totals.
#[derive(Debug, PartialEq, Eq)]
struct Figures {
    cards: Vec<CardFigures>,
    banks: Vec<(u16, u64, u64, u64, u64, i64, u64)>,
}

fn figures(r: &Report) -> Figures {
    let mut cards = r.cards.clone();
    cards.sort_by(|a, b| (a.bank, &a.pan).cmp(&(b.bank, &b.pan)));
    let banks = r
        .banks
        .iter()
        .map(|b| {
            (
                b.bank,
                b.batches,
                b.postings,
                b.accounts,
                b.cards,
                b.wallet_total,
                b.keys,
            )
        })
        .collect();
    Figures { cards, banks }
}

/// Per-bank posting count from the store.
async fn postings_count(store: &Store) -> Vec<(u16, u64, u64)> {
    store.posting_counts().await.expect("posting counts")
}

/// Execute raw SQL against the store's own pool.
async fn raw_exec(store: &Store, sql: &str) -> u64 {
    match store {
        Store::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        Store::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The store packs a batch's postings into its journal row: rewrites the
/// blob of `p`'s batch with `change` applied to `p`'s entry (`None` drops
/// it). Returns how many postings were changed (0 if `p` was not found).
async fn tamper_packed(
    store: &Store,
    bank: u16,
    p: &StoredPosting,
    change: impl FnOnce(PostingRow) -> Option<PostingRow>,
) -> u64 {
    let blob: Vec<u8> = match store {
        Store::Sqlite(pool) => {
            sqlx::query_scalar("SELECT postings FROM ledger_batches WHERE bank = ? AND batch = ?")
                .bind(i64::from(bank))
                .bind(p.batch as i64)
                .fetch_one(pool)
                .await
        }
        Store::Postgres(pool) => {
            sqlx::query_scalar("SELECT postings FROM ledger_batches WHERE bank = $1 AND batch = $2")
                .bind(i32::from(bank))
                .bind(p.batch as i64)
                .fetch_one(pool)
                .await
        }
    }
    .expect("batch row");
    let mut rows = packed::decode(&blob).expect("blob decodes");
    let Some(at) = rows.iter().position(|r| r.id == p.id) else {
        return 0;
    };
    match change(rows[at]) {
        Some(changed) => rows[at] = changed,
        None => {
            rows.remove(at);
        }
    }
    match store {
        Store::Sqlite(pool) => {
            sqlx::query("UPDATE ledger_batches SET postings = ? WHERE bank = ? AND batch = ?")
                .bind(packed::encode(&rows))
                .bind(i64::from(bank))
                .bind(p.batch as i64)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        }
        Store::Postgres(pool) => {
            sqlx::query("UPDATE ledger_batches SET postings = $1 WHERE bank = $2 AND batch = $3")
                .bind(packed::encode(&rows))
                .bind(i32::from(bank))
                .bind(p.batch as i64)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        }
    }
    .expect("rewrite blob")
}

/// Adds `delta` to one stored posting's amount; returns how many postings
/// changed.
async fn shift_amount(store: &Store, bank: u16, p: &StoredPosting, delta: i64) -> u64 {
    tamper_packed(store, bank, p, |r| {
        Some(PostingRow {
            amount: r.amount.wrapping_add_signed(delta),
            ..r
        })
    })
    .await
}

/// Removes one stored posting; returns how many were removed.
async fn remove_posting(store: &Store, bank: u16, p: &StoredPosting) -> u64 {
    tamper_packed(store, bank, p, |_| None).await
}

/// The latest posting of one of `kinds` in `bank` (a posting id is unique
/// in its bank, so the tampering helpers can name it alone).
async fn tamper_target(store: &Store, bank: u16, kinds: &[PostingKind]) -> StoredPosting {
    let all = store.postings_from(bank, 0).await.expect("postings");
    *all.iter()
        .rev()
        .find(|p| kinds.iter().any(|&k| p.kind == k as i16))
        .unwrap_or_else(|| panic!("bank {bank}: no {kinds:?} posting"))
}

/// `kks-switch --db URL audit`.
fn cli_audit(db: &TestDb) -> (Option<i32>, String, String) {
    db::run_cli(&["--db", &db.url, "audit"], Duration::from_secs(120))
}

// ---------------------------------------------------------------- model

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct CardModel {
    pkh: u64,
    bpnt: u64,
    purchases: u64,
    withdrawals: u64,
    reversed: u64,
    credits: u64,
    withdrawals_today: u32,
}

/// An approved payment that may still be reversed.
#[derive(Clone, Debug)]
struct Paid {
    key: String,
    card: u32,
    amount: u64,
    withdrawal: bool,
}

/// One bank's expected state.
struct BankModel {
    bank: Bank,
    cards: Vec<CardModel>,
    paid: Vec<Paid>,
    /// Every keyed command sent and the reply it got, for retransmission.
    sent: Vec<(Command, Done)>,
}

impl BankModel {
    fn new(bank: Bank) -> BankModel {
        BankModel {
            bank,
            cards: (0..CARDS)
                .map(|_| CardModel {
                    pkh: PKH0,
                    bpnt: BPNT0,
                    credits: PKH0 + BPNT0,
                    ..CardModel::default()
                })
                .collect(),
            paid: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn balances(&self, card: u32) -> Balances {
        let c = &self.cards[card as usize];
        Balances {
            pkh: c.pkh,
            bpnt: c.bpnt,
        }
    }
}

/// Run `n` random movements on one bank, one at a time, checking every reply
/// against the model.
async fn workload(shards: &Shards, m: &mut BankModel, rng: &mut Rng, tag: &str, n: u32) {
    let bank = m.bank;
    for j in 0..n {
        let k = format!("t:{tag}:{}:{j}", bank.code());
        let acquirer = Bank::ALL[rng.below(5) as usize];
        let roll = rng.below(10);
        if roll < 2 && !m.paid.is_empty() {
            let p = m.paid.swap_remove(rng.below(m.paid.len() as u64) as usize);
            let cmd = reversal(&k, &p.key, bank, p.card, p.amount);
            let done = exec(shards, bank, cmd).await;
            assert_eq!(
                done.reply.code,
                Code::Approved,
                "{k}: reversal of {}",
                p.key
            );
            assert!(!done.replayed, "{k}: fresh key answered as a replay");
            let c = &mut m.cards[p.card as usize];
            c.reversed += p.amount;
            if p.withdrawal {
                c.pkh += p.amount;
                c.withdrawals_today -= 1;
            } else {
                c.bpnt += p.amount;
            }
            m.sent.push((cmd, done));
            continue;
        }
        let card = rng.below(CARDS as u64) as u32;
        let amount = (1 + rng.below(400)) * 100_000;
        let is_withdrawal = roll >= 6 && m.cards[card as usize].withdrawals_today < 10;
        let cmd = if is_withdrawal {
            withdrawal(&k, bank, card, amount, acquirer)
        } else {
            purchase(&k, bank, card, amount, acquirer)
        };
        let done = exec(shards, bank, cmd).await;
        assert!(!done.replayed, "{k}: fresh key answered as a replay");
        let c = &mut m.cards[card as usize];
        let wallet = if is_withdrawal { c.pkh } else { c.bpnt };
        if wallet >= amount {
            assert_eq!(done.reply.code, Code::Approved, "{k}: {cmd:?}");
            if is_withdrawal {
                c.pkh -= amount;
                c.withdrawals += amount;
                c.withdrawals_today += 1;
            } else {
                c.bpnt -= amount;
                c.purchases += amount;
            }
            m.paid.push(Paid {
                key: k.clone(),
                card,
                amount,
                withdrawal: is_withdrawal,
            });
            assert_eq!(
                done.reply.balances,
                Some(m.balances(card)),
                "{k}: balances after approval"
            );
            assert!(done.reply.approval.is_some(), "{k}: approval code");
        } else {
            assert_eq!(
                done.reply.code,
                Code::InsufficientFunds,
                "{k}: wallet {wallet} < {amount}"
            );
        }
        m.sent.push((cmd, done));
    }
    // One certain decline per run: more than the BPNT wallet holds.
    let card = rng.below(CARDS as u64) as u32;
    let k = format!("t:{tag}:{}:nsf", bank.code());
    let over = m.cards[card as usize].bpnt + 1;
    let cmd = purchase(&k, bank, card, over, bank);
    let done = exec(shards, bank, cmd).await;
    assert_eq!(done.reply.code, Code::InsufficientFunds, "{k}");
    assert_eq!(done.reply.code.de39(), "51");
    m.sent.push((cmd, done));
}

/// The workload on all five banks at once (banks are independent shards).
async fn workload_all(shards: &Shards, models: &mut [BankModel], seed: u64, tag: &str, n: u32) {
    let futs = models.iter_mut().enumerate().map(|(i, m)| async move {
        let mut rng = Rng::new(seed.wrapping_add(i as u64 * 7919));
        workload(shards, m, &mut rng, tag, n).await;
    });
    futures::future::join_all(futs).await;
}

fn new_models() -> Vec<BankModel> {
    Bank::ALL.iter().map(|&b| BankModel::new(b)).collect()
}

/// Every card's audit figures equal the model's.
fn check_against_model(r: &Report, models: &[BankModel], when: &str) {
    let by_pan: HashMap<(u16, String), &CardFigures> = r
        .cards
        .iter()
        .map(|c| ((c.bank, c.pan.clone()), c))
        .collect();
    assert_eq!(
        r.cards.len(),
        models.len() * CARDS as usize,
        "{when}: cards in audit"
    );
    for m in models {
        for (i, c) in m.cards.iter().enumerate() {
            let pan = test_pan(m.bank, i as u32).to_digit_string();
            let f = by_pan
                .get(&(m.bank.code_number(), pan))
                .unwrap_or_else(|| panic!("{when}: card {i} of {} missing", m.bank.code()));
            let got = (
                f.pkh_balance,
                f.bpnt_balance,
                f.purchases,
                f.withdrawals,
                f.reversed,
                f.credits,
            );
            let want = (
                c.pkh as i64,
                c.bpnt as i64,
                c.purchases,
                c.withdrawals,
                c.reversed,
                c.credits,
            );
            assert_eq!(
                got,
                want,
                "{when}: bank {} card {i} (pkh, bpnt, purchases, withdrawals, reversed, credits)",
                m.bank.code()
            );
        }
    }
}

/// Ask the running shards for a few cards' balances (fresh keys).
async fn check_inquiries(shards: &Shards, models: &[BankModel], tag: &str) {
    for m in models {
        for card in [0, CARDS / 2, CARDS - 1] {
            let k = format!("q:{tag}:{}:{card}", m.bank.code());
            let d = exec(shards, m.bank, inquiry(&k, m.bank, card)).await;
            assert_eq!(d.reply.code, Code::Approved, "{k}");
            assert_eq!(d.reply.balances, Some(m.balances(card)), "{k}: balances");
        }
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::bounded(super::$name(super::Backend::Sqlite)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::bounded(super::$name(super::Backend::Postgres)).await
            }
        }
    )*};
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {TEST_TIMEOUT:?}"))
}

on_both!(
    restart_keeps_balances,
    idempotency_across_restart,
    checkpoint_and_journal_replay,
    audit_detects_tampering,
    audit_of_a_live_store,
    checkpoints_keep_coming_as_keys_grow,
    journal_with_rows_from_before_packing,
    checkpoints_in_chunks,
    checkpoint_reads_never_mix_checkpoints,
);

// ---------------------------------------------------------------- tests

/// Balances, figures and totals survive a restart, and agree with the model.
async fn restart_keeps_balances(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let seed = seed(&format!("restart_keeps_balances/{}", db.label()));
    let mut models = new_models();

    let store = open(&db.url).await;
    let shards = start(&store, ShardConfig::default()).await;
    populate(&shards).await;
    workload_all(&shards, &mut models, seed, "a", 60).await;
    let before = audit_clean(&store, "before restart").await;
    check_against_model(&before, &models, "before restart");
    shutdown(shards).await;
    store.close().await;

    let store = open(&db.url).await;
    let shards = start(&store, ShardConfig::default()).await;
    let after = audit_clean(&store, "after restart").await;
    assert_eq!(
        figures(&before),
        figures(&after),
        "figures changed across a restart"
    );
    // The running shards (not only the store) hold the same balances.
    check_inquiries(&shards, &models, "r1").await;
    // Reopening the population on restart (as the drill does) changes no
    // money: the credits are answered from their keys.
    let counts = postings_count(&store).await;
    populate(&shards).await;
    assert_eq!(counts, postings_count(&store).await, "re-opening posted");
    // More work after the restart continues from the restored state.
    workload_all(&shards, &mut models, seed ^ 1, "b", 30).await;
    shutdown(shards).await;
    let end = audit_clean(&store, "at the end").await;
    check_against_model(&end, &models, "at the end");
    store.close().await;
}

/// Retransmissions after a restart get the stored reply and post nothing;
/// the same key with other content gets 94.
async fn idempotency_across_restart(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let seed = seed(&format!("idempotency_across_restart/{}", db.label()));
    let mut models = new_models();

    let store = open(&db.url).await;
    let shards = start(&store, ShardConfig::default()).await;
    populate(&shards).await;
    workload_all(&shards, &mut models, seed, "i", 25).await;
    // A fixed trio on BRI: a purchase, a withdrawal at another bank's agent,
    // and a decline.
    let bri = Bank::Bri;
    let p = purchase("idem:p", bri, 3, 1_500_000, bri);
    let w = withdrawal("idem:w", bri, 4, 2_000_000, Bank::Bni);
    let d = withdrawal("idem:d", bri, 5, PKH0 * 2, bri);
    let (dp, dw, dd) = (
        exec(&shards, bri, p).await,
        exec(&shards, bri, w).await,
        exec(&shards, bri, d).await,
    );
    assert_eq!(dp.reply.code, Code::Approved);
    assert_eq!(dw.reply.code, Code::Approved);
    assert_ne!(dd.reply.code, Code::Approved, "over-limit withdrawal");
    // Same process: a retransmission is a replay.
    let again = exec(&shards, bri, p).await;
    assert!(again.replayed);
    assert_eq!(again.reply, dp.reply);
    shutdown(shards).await;
    store.close().await;
    let counts = {
        let s = open(&db.url).await;
        let c = postings_count(&s).await;
        s.close().await;
        c
    };

    let store = open(&db.url).await;
    let shards = start(&store, ShardConfig::default()).await;
    for (cmd, first) in [(p, &dp), (w, &dw), (d, &dd)] {
        let r = exec(&shards, bri, cmd).await;
        assert!(
            r.replayed,
            "{:?}: not answered as a replay after restart",
            cmd.key()
        );
        assert_eq!(r.reply, first.reply, "{:?}: reply changed", cmd.key());
    }
    // Every command of the random workload too (all banks).
    for m in &models {
        for (cmd, first) in &m.sent {
            let r = exec(&shards, m.bank, *cmd).await;
            assert!(r.replayed, "{:?}: not a replay after restart", cmd.key());
            assert_eq!(r.reply, first.reply, "{:?}: reply changed", cmd.key());
        }
    }
    assert_eq!(counts, postings_count(&store).await, "replays posted");
    // Same key, different amount / card / acceptor → 94, nothing posted.
    for (what, cmd) in [
        ("amount", purchase("idem:p", bri, 3, 1_500_001, bri)),
        ("card", purchase("idem:p", bri, 6, 1_500_000, bri)),
        ("acceptor", purchase("idem:p", bri, 3, 1_500_000, Bank::Btn)),
        ("kind", withdrawal("idem:p", bri, 3, 1_500_000, bri)),
    ] {
        let r = exec(&shards, bri, cmd).await;
        assert_eq!(r.reply.code, Code::KeyConflict, "different {what}");
        assert_eq!(r.reply.code.de39(), "94", "different {what}");
        assert!(!r.replayed, "different {what}: conflict reported as replay");
    }
    assert_eq!(counts, postings_count(&store).await, "a conflict posted");
    // The conflicts changed nothing, and the original still replays.
    let r = exec(&shards, bri, p).await;
    assert!(r.replayed && r.reply == dp.reply);
    shutdown(shards).await;
    // Through one more restart with nothing new: still the same.
    let store2 = open(&db.url).await;
    let shards = start(&store2, ShardConfig::default()).await;
    let r = exec(&shards, bri, w).await;
    assert!(r.replayed && r.reply == dw.reply);
    shutdown(shards).await;
    audit_clean(&store2, "at the end").await;
    assert_eq!(counts, postings_count(&store2).await);
    store2.close().await;
    store.close().await;
}

/// Recovery from a mid-run checkpoint plus the journal after it rebuilds
/// exactly the state that was shut down, as does replaying the whole journal.
async fn checkpoint_and_journal_replay(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let seed = seed(&format!("checkpoint_and_journal_replay/{}", db.label()));
    let cfg = ShardConfig {
        checkpoint_every_batches: 3,
        ..ShardConfig::default()
    };
    let configs = bank_configs();
    let mut models = new_models();

    let store = open(&db.url).await;
    let shards = start(&store, cfg.clone()).await;
    populate(&shards).await;
    workload_all(&shards, &mut models, seed, "c1", 20).await;
    // A checkpoint is written behind every third batch; take the ones on
    // disk now (waiting until each bank has one).
    let mut mid = HashMap::new();
    for c in &configs {
        let bank = c.bank.0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let cp = loop {
            if let Some(cp) = store.load_checkpoint(bank).await.expect("load checkpoint") {
                if cp.batch > 0 {
                    break cp;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "bank {bank}: no checkpoint within 20 s at checkpoint_every_batches = 3"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        mid.insert(bank, cp);
    }
    workload_all(&shards, &mut models, seed ^ 2, "c2", 20).await;
    shutdown(shards).await;
    let before = audit_clean(&store, "after shutdown").await;
    check_against_model(&before, &models, "after shutdown");

    // The state as shut down (final checkpoint, nothing to replay).
    let mut shut = HashMap::new();
    for c in &configs {
        let (l, replayed) = recover(&store, *c).await.expect("recover");
        assert_eq!(
            replayed, 0,
            "bank {}: final checkpoint not current",
            c.bank.0
        );
        shut.insert(c.bank.0, l.snapshot());
    }
    // Journal alone.
    raw_exec(&store, "DELETE FROM ledger_checkpoints").await;
    for c in &configs {
        let (l, replayed) = recover(&store, *c).await.expect("recover");
        let snap = l.snapshot();
        assert_eq!(
            replayed, snap.counters.batches,
            "bank {}: full replay",
            c.bank.0
        );
        assert!(
            snap == shut[&c.bank.0],
            "bank {}: journal replay differs from the shut-down state",
            c.bank.0
        );
    }
    // Mid-run checkpoint + journal after it (as after a crash).
    for c in &configs {
        let bank = c.bank.0;
        let cp = &mid[&bank];
        store
            .save_checkpoint(bank, cp)
            .await
            .expect("save checkpoint");
        let (l, replayed) = recover(&store, *c).await.expect("recover");
        let snap = l.snapshot();
        assert!(
            cp.batch < snap.counters.batches,
            "bank {bank}: checkpoint not mid-run"
        );
        assert_eq!(
            replayed,
            snap.counters.batches - cp.batch,
            "bank {bank}: batches replayed after the checkpoint"
        );
        assert!(
            snap == shut[&bank],
            "bank {bank}: checkpoint {} + replay differs from the shut-down state",
            cp.batch
        );
    }
    let after = audit_clean(&store, "from the mid-run checkpoint").await;
    assert_eq!(figures(&before), figures(&after));
    // And the shards start from it and carry on.
    let shards = start(&store, cfg).await;
    check_inquiries(&shards, &models, "c").await;
    workload_all(&shards, &mut models, seed ^ 3, "c3", 10).await;
    shutdown(shards).await;
    let end = audit_clean(&store, "at the end").await;
    check_against_model(&end, &models, "at the end");
    store.close().await;
}

/// One changed or missing posting row is a violation, for the library and
/// for `kks-switch audit` (exit code 1).
async fn audit_detects_tampering(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let seed = seed(&format!("audit_detects_tampering/{}", db.label()));
    let mut models = new_models();
    let store = open(&db.url).await;
    let shards = start(&store, ShardConfig::default()).await;
    populate(&shards).await;
    workload_all(&shards, &mut models, seed, "x", 20).await;
    shutdown(shards).await;
    audit_clean(&store, "before tampering").await;
    let (code, out, err) = cli_audit(&db);
    assert_eq!(code, Some(0), "CLI audit of a clean store:\n{out}\n{err}");
    assert!(out.contains("audit clean"), "{out}");

    // BRI's latest purchase posting, named by the columns the store
    // reports (how the store keeps it is the store's business).
    let first = tamper_target(&store, 2, &[PostingKind::Purchase]).await;
    let n = shift_amount(&store, 2, &first, 100).await;
    assert_eq!(n, 1, "tampering touched {n} rows");
    let r = run_audit(&store).await;
    assert!(!r.ok(), "audit missed a changed posting amount");
    assert!(
        r.violations.iter().all(|v| v.bank == 2),
        "violations outside the tampered bank: {:?}",
        r.violations
    );
    let (code, out, err) = cli_audit(&db);
    assert_eq!(
        code,
        Some(1),
        "CLI audit of a tampered store:\n{out}\n{err}"
    );
    assert!(out.contains("VIOLATION bank 002"), "{out}");

    // Undone: clean again (so the violation was that posting).
    let tampered = StoredPosting {
        amount: first.amount + 100,
        ..first
    };
    let n = shift_amount(&store, 2, &tampered, -100).await;
    assert_eq!(n, 1);
    audit_clean(&store, "after undoing the change").await;

    // A posting removed (a Mandiri payment).
    let gone = tamper_target(&store, 8, &[PostingKind::Withdrawal, PostingKind::Purchase]).await;
    let n = remove_posting(&store, 8, &gone).await;
    assert_eq!(n, 1, "deleting touched {n} rows");
    let r = run_audit(&store).await;
    assert!(!r.ok(), "audit missed a deleted posting");
    let (code, out, err) = cli_audit(&db);
    assert_eq!(
        code,
        Some(1),
        "CLI audit after a deleted posting:\n{out}\n{err}"
    );
    store.close().await;
}

/// Auditing while shards keep committing never reports a violation that is
/// not there: each audit either agrees with itself (clean) or says the
/// store kept changing. Its queries read the store one after another, so
/// without the journal-head check a batch committed between two of them
/// showed as balance mismatches.
async fn audit_of_a_live_store(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let mut models = new_models();
    let store = open(&db.url).await;
    let shards = start(&store, ShardConfig::default()).await;
    populate(&shards).await;
    let seed = seed(&format!("audit_of_a_live_store/{}", db.label()));
    let writing = workload_all(&shards, &mut models, seed, "l", 400);
    let auditing = async {
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            match audit(&store, &bank_configs(), false).await {
                Ok(report) => {
                    assert!(report.ok(), "live audit reported {:?}", report.violations);
                    outcomes.push("clean");
                }
                Err(kks_switch::shard::ShardError::Changing(_)) => outcomes.push("changing"),
                Err(e) => panic!("live audit failed: {e}"),
            }
        }
        outcomes
    };
    let ((), outcomes) = futures::join!(writing, auditing);
    eprintln!("live audits: {outcomes:?}");
    shutdown(shards).await;
    audit_clean(&store, "after the writers stopped").await;
    store.close().await;
}

/// The checkpoint threshold grows with the state (a checkpoint writes all
/// of it) but must still be reached: every keyed command adds a key, so a
/// threshold of "as many commands as the state has records now" would never
/// be met after the first checkpoint, and replay after a crash would grow
/// without bound. With `checkpoint_every_commands` small, each bank must
/// checkpoint again once it has taken more commands than its state had.
async fn checkpoints_keep_coming_as_keys_grow(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let cfg = ShardConfig {
        checkpoint_every_commands: 40,
        ..ShardConfig::default()
    };
    let mut models = new_models();
    let store = open(&db.url).await;
    let shards = start(&store, cfg).await;
    populate(&shards).await;
    // Quiet for a moment, so every checkpoint taken so far is on disk.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut first = HashMap::new();
    for bank in [2u16, 8, 9, 200, 451] {
        let cp = store
            .load_checkpoint(bank)
            .await
            .expect("load")
            .expect("a checkpoint");
        first.insert(bank, cp.batch);
    }
    // More keyed commands per bank than a bank's state has records (about
    // 400 accounts and 400 credit keys after `populate`).
    let seed = seed(&format!("checkpoints_keep_coming/{}", db.label()));
    workload_all(&shards, &mut models, seed, "k", 1_200).await;
    for bank in [2u16, 8, 9, 200, 451] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let cp = store
                .load_checkpoint(bank)
                .await
                .expect("load")
                .expect("a checkpoint");
            if cp.batch > first[&bank] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "bank {bank}: no checkpoint after batch {} although the state was outgrown",
                first[&bank]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    shutdown(shards).await;
    audit_clean(&store, "after the workload").await;
    store.close().await;
}

/// One number from raw SQL on the store's own pool.
async fn scalar_i64(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// While new checkpoints of a bank are committed in pieces, each read of
/// the bank's checkpoint gets one whole checkpoint: never one checkpoint's
/// row with another's pieces, or with its pieces already dropped.
async fn checkpoint_reads_never_mix_checkpoints(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let store = open(&db.url).await;
    // Checkpoint `batch` is 3 pieces of 700 bytes, every byte naming it.
    let body = |batch: u64| vec![(batch % 251) as u8; 2100];
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for batch in 1..=150u64 {
                for seq in 0..3u32 {
                    let piece = &body(batch)[seq as usize * 700..(seq as usize + 1) * 700];
                    store
                        .save_checkpoint_chunk(2, batch, seq, piece)
                        .await
                        .expect("piece");
                }
                store
                    .commit_chunked_checkpoint(2, batch, batch, 3)
                    .await
                    .expect("commit");
            }
        })
    };
    let mut reads = 0u64;
    while !writer.is_finished() {
        if let Some(cp) = store.load_checkpoint(2).await.expect("a whole checkpoint") {
            assert_eq!(cp.body, body(cp.batch), "checkpoint {} mixed", cp.batch);
            assert_eq!(cp.ts, cp.batch);
            reads += 1;
        }
    }
    writer.await.expect("writer");
    assert!(reads > 10, "only {reads} reads overlapped the writes");
    let last = store
        .load_checkpoint(2)
        .await
        .expect("load")
        .expect("a checkpoint");
    assert_eq!((last.batch, last.body.len()), (150, 2100));
    let pieces = scalar_i64(&store, "SELECT COUNT(*) FROM ledger_checkpoint_chunks").await;
    assert_eq!(pieces, 3, "pieces of earlier checkpoints left behind");
    store.close().await;
}

/// A checkpoint larger than `checkpoint_chunk_bytes` is written in pieces
/// between group commits: the stored checkpoint names its pieces, only the
/// current checkpoint's pieces are kept, and a restart from it (and the
/// journal after it) gives back the same books. The periodic checkpoints'
/// pieces are spaced (`checkpoint_piece_interval_ms`), so most are still
/// being written, or superseded, while batches commit around them.
async fn checkpoints_in_chunks(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let cfg = ShardConfig {
        checkpoint_every_batches: 3,
        checkpoint_chunk_bytes: 1000,
        checkpoint_piece_interval_ms: 2,
        ..ShardConfig::default()
    };
    let mut models = new_models();
    let store = open(&db.url).await;
    let shards = start(&store, cfg.clone()).await;
    populate(&shards).await;
    workload_all(&shards, &mut models, seed("chunks/a"), "c", 40).await;
    shutdown(shards).await;
    for config in bank_configs() {
        let bank = config.bank.0;
        let cp = store
            .load_checkpoint(bank)
            .await
            .expect("load")
            .expect("a checkpoint");
        let chunks = scalar_i64(
            &store,
            &format!("SELECT CAST(chunks AS BIGINT) FROM ledger_checkpoints WHERE bank = {bank}"),
        )
        .await;
        assert_eq!(
            chunks as usize,
            cp.body.len().div_ceil(1000),
            "bank {bank}: a {}-byte checkpoint in 1000-byte pieces",
            cp.body.len()
        );
        assert!(chunks > 1, "bank {bank}: checkpoint in {chunks} piece(s)");
        let kept = scalar_i64(
            &store,
            &format!("SELECT COUNT(*) FROM ledger_checkpoint_chunks WHERE bank = {bank}"),
        )
        .await;
        assert_eq!(
            kept, chunks,
            "bank {bank}: pieces of other checkpoints left behind"
        );
        let (ledger, replayed) = recover(&store, config).await.expect("recover");
        assert_eq!(
            replayed, 0,
            "bank {bank}: the shutdown checkpoint is current"
        );
        assert_eq!(ledger.counters().batches, cp.batch);
    }
    let report = audit_clean(&store, "after chunked checkpoints").await;
    check_against_model(&report, &models, "after chunked checkpoints");
    let shards = start(&store, cfg).await;
    check_inquiries(&shards, &models, "ck").await;
    workload_all(&shards, &mut models, seed("chunks/b"), "d", 20).await;
    shutdown(shards).await;
    let report = audit_clean(&store, "after a restart from chunks").await;
    check_against_model(&report, &models, "after a restart from chunks");
    store.close().await;
}

/// A journal written before postings were packed keeps them as rows in
/// `ledger_postings`; after the upgrade new batches carry blobs. Such a
/// mixed journal reads back the same postings and audits clean, and a
/// restart after it recovers the same books. Simulated by moving the first
/// half of each bank's batches' postings from their blobs into rows.
async fn journal_with_rows_from_before_packing(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let mut models = new_models();
    let store = open(&db.url).await;
    let shards = start(&store, ShardConfig::default()).await;
    populate(&shards).await;
    workload_all(&shards, &mut models, seed("packing/mixed"), "m", 20).await;
    shutdown(shards).await;
    let mut before = Vec::new();
    for bank in [2u16, 8, 9, 200, 451] {
        before.push(store.postings_from(bank, 0).await.expect("postings"));
        let batches: Vec<(i64, Vec<u8>)> = match &store {
            Store::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT batch, postings FROM ledger_batches WHERE bank = ? ORDER BY batch",
                )
                .bind(i64::from(bank))
                .fetch_all(pool)
                .await
            }
            Store::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT batch, postings FROM ledger_batches WHERE bank = $1 ORDER BY batch",
                )
                .bind(i32::from(bank))
                .fetch_all(pool)
                .await
            }
        }
        .expect("batches");
        assert!(batches.len() > 1, "bank {bank}: {} batches", batches.len());
        for (batch, blob) in &batches[..batches.len() / 2] {
            for p in packed::decode(blob).expect("blob") {
                match &store {
                    Store::Sqlite(pool) => sqlx::query(
                        "INSERT INTO ledger_postings (key, batch, cmd, debit, credit, amount, kind) \
                         VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(((u64::from(bank) << 40) | p.id) as i64)
                    .bind(batch)
                    .bind(i64::from(p.cmd))
                    .bind(p.debit as i64)
                    .bind(p.credit as i64)
                    .bind(p.amount as i64)
                    .bind(i64::from(p.kind))
                    .execute(pool)
                    .await
                    .map(|_| ()),
                    Store::Postgres(pool) => sqlx::query(
                        "INSERT INTO ledger_postings (bank, id, batch, cmd, debit, credit, amount, kind) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(i32::from(bank))
                    .bind(p.id as i64)
                    .bind(batch)
                    .bind(p.cmd as i32)
                    .bind(p.debit as i64)
                    .bind(p.credit as i64)
                    .bind(p.amount as i64)
                    .bind(p.kind)
                    .execute(pool)
                    .await
                    .map(|_| ()),
                }
                .expect("row");
            }
            let sql = format!(
                "UPDATE ledger_batches SET postings = NULL WHERE bank = {bank} AND batch = {batch}"
            );
            assert_eq!(raw_exec(&store, &sql).await, 1, "clear blob");
        }
    }
    let rows = raw_exec(&store, "UPDATE ledger_postings SET kind = kind").await;
    assert!(rows > 0, "no postings moved to rows");
    for (i, bank) in [2u16, 8, 9, 200, 451].into_iter().enumerate() {
        let after = store.postings_from(bank, 0).await.expect("postings");
        assert_eq!(after, before[i], "bank {bank}: postings differ once mixed");
    }
    let report = audit_clean(&store, "with a mixed journal").await;
    check_against_model(&report, &models, "with a mixed journal");
    let shards = start(&store, ShardConfig::default()).await;
    check_inquiries(&shards, &models, "mx").await;
    shutdown(shards).await;
    store.close().await;
}

/// A SQLite file whose journal is still in the layout before migration
/// `0005` (a WITHOUT ROWID table keyed by bank and batch) is migrated on
/// open: every batch survives with its commands and postings, recovery and
/// audit agree with what was written, and new batches append after the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_journal_from_before_rowid_keys() {
    bounded(async {
        let Some(db) = db::fresh(Backend::Sqlite).await else {
            return;
        };
        let mut models = new_models();
        let store = open(&db.url).await;
        let shards = start(&store, ShardConfig::default()).await;
        populate(&shards).await;
        workload_all(&shards, &mut models, seed("rowid/before"), "r", 20).await;
        shutdown(shards).await;
        let Store::Sqlite(pool) = &store else {
            unreachable!("sqlite URL")
        };
        let mut before = Vec::new();
        for bank in [2u16, 8, 9, 200, 451] {
            before.push(store.postings_from(bank, 0).await.expect("postings"));
        }
        let batches: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_batches")
            .fetch_one(pool)
            .await
            .expect("count");
        // Back to the layout migrations 0001-0004 left, and forget 0005,
        // on one connection so each statement sees the schema the previous
        // one left.
        let mut conn = pool.acquire().await.expect("connection");
        for sql in [
            "CREATE TABLE old_batches (bank INTEGER NOT NULL, batch INTEGER NOT NULL, \
             ts INTEGER NOT NULL, commands BLOB NOT NULL, postings BLOB, \
             PRIMARY KEY (bank, batch)) WITHOUT ROWID",
            "INSERT INTO old_batches SELECT bank, batch, ts, commands, postings FROM ledger_batches",
            "DROP TABLE ledger_batches",
            "ALTER TABLE old_batches RENAME TO ledger_batches",
            "DELETE FROM _sqlx_migrations WHERE version = 5",
        ] {
            sqlx::query(sql).execute(&mut *conn).await.expect(sql);
        }
        drop(conn);
        store.close().await;

        let store = open(&db.url).await;
        let Store::Sqlite(pool) = &store else {
            unreachable!("sqlite URL")
        };
        let keyed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ledger_batches WHERE key = (bank << 40) | batch",
        )
        .fetch_one(pool)
        .await
        .expect("migrated rows");
        assert_eq!(keyed, batches, "every batch row migrated with its key");
        for (i, bank) in [2u16, 8, 9, 200, 451].into_iter().enumerate() {
            let after = store.postings_from(bank, 0).await.expect("postings");
            assert_eq!(after, before[i], "bank {bank}: postings differ after migration");
        }
        let report = audit_clean(&store, "after the migration").await;
        check_against_model(&report, &models, "after the migration");
        let shards = start(&store, ShardConfig::default()).await;
        check_inquiries(&shards, &models, "ra").await;
        workload_all(&shards, &mut models, seed("rowid/after"), "s", 20).await;
        shutdown(shards).await;
        let report = audit_clean(&store, "after appending to the migrated journal").await;
        check_against_model(&report, &models, "after appending to the migrated journal");
        let shards = start(&store, ShardConfig::default()).await;
        check_inquiries(&shards, &models, "rb").await;
        shutdown(shards).await;
        store.close().await;
    })
    .await
}

/// The PostgreSQL test URL really confines the store to its own schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_isolation() {
    bounded(async {
        let Some(db) = db::postgres().await else {
            return;
        };
        let other = db::postgres().await.expect("second schema");
        let schema = db.schema.clone().expect("schema");
        let base = db.base_url.clone().expect("base url");
        let store = open(&db.url).await;
        let shards = start(&store, ShardConfig::default()).await;
        populate(&shards).await;
        shutdown(shards).await;
        let Store::Postgres(pool) = &store else {
            panic!("postgres URL opened {store:?}");
        };
        let current: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(pool)
            .await
            .expect("current_schema");
        assert_eq!(current, schema);
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(pool)
            .await
            .expect("synchronous_commit");
        assert_eq!(sync, "on");
        let mine: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_batches")
            .fetch_one(pool)
            .await
            .expect("count");
        assert!(mine > 0);

        let admin = db::admin_pool(&base).await.expect("admin connection");
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY 1",
        )
        .bind(&schema)
        .fetch_all(&admin)
        .await
        .expect("information_schema");
        for t in [
            "_sqlx_migrations",
            "ledger_batches",
            "ledger_checkpoints",
            "ledger_postings",
        ] {
            assert!(
                tables.iter().any(|x| x == t),
                "{t} not in {schema}: {tables:?}"
            );
        }
        let qualified: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {schema}.ledger_batches"))
                .fetch_one(&admin)
                .await
                .expect("qualified count");
        assert_eq!(qualified, mine, "the store's rows are not in {schema}");

        // Another test's schema sees none of them.
        let store2 = open(&other.url).await;
        let Store::Postgres(pool2) = &store2 else {
            unreachable!()
        };
        let theirs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_batches")
            .fetch_one(pool2)
            .await
            .expect("count");
        assert_eq!(theirs, 0, "schemas are not isolated");
        store2.close().await;
        store.close().await;

        // Dropping the TestDb removes the schema.
        drop(db);
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = $1",
        )
        .bind(&schema)
        .fetch_one(&admin)
        .await
        .expect("schemata");
        assert_eq!(left, 0, "schema {schema} not dropped");
        admin.close().await;
    })
    .await
}

on_both!(final_checkpoint_in_small_pieces);

/// The shutdown checkpoint is encoded and written piece by piece (here in
/// 64-byte pieces, so nearly every record is cut by a piece boundary) and
/// recovery decodes it piece by piece: across a restart, and after more
/// work, each bank's recovered books are exactly those a replay of its
/// whole journal gives, and the stored body is byte for byte the encoding
/// of their snapshot.
async fn final_checkpoint_in_small_pieces(backend: Backend) {
    let Some(db) = db::fresh(backend).await else {
        return;
    };
    let cfg = ShardConfig {
        checkpoint_chunk_bytes: 64,
        checkpoint_piece_interval_ms: 0,
        ..ShardConfig::default()
    };
    let mut models = new_models();
    let store = open(&db.url).await;
    let shards = start(&store, cfg.clone()).await;
    populate(&shards).await;
    workload_all(&shards, &mut models, seed("small_pieces/a"), "s", 30).await;
    shutdown(shards).await;
    pieces_recover_as_the_journal(&store, 64, "after the first shutdown").await;

    let shards = start(&store, cfg).await;
    check_inquiries(&shards, &models, "sp").await;
    workload_all(&shards, &mut models, seed("small_pieces/b"), "t", 15).await;
    shutdown(shards).await;
    pieces_recover_as_the_journal(&store, 64, "after the restart").await;
    let report = audit_clean(&store, "after checkpoints in small pieces").await;
    check_against_model(&report, &models, "after checkpoints in small pieces");
    store.close().await;
}

/// Every bank's checkpoint is in pieces of `piece` bytes, is current, and
/// recovers (piece by piece) to what a replay of the whole journal gives.
async fn pieces_recover_as_the_journal(store: &Store, piece: usize, when: &str) {
    use kks_switch::ledger::{Effects, Ledger};
    use kks_switch::shard::decode_commands;
    for config in bank_configs() {
        let bank = config.bank.0;
        let cp = store
            .load_checkpoint(bank)
            .await
            .expect("load")
            .expect("a checkpoint");
        let chunks = scalar_i64(
            store,
            &format!("SELECT CAST(chunks AS BIGINT) FROM ledger_checkpoints WHERE bank = {bank}"),
        )
        .await;
        assert_eq!(
            chunks as usize,
            cp.body.len().div_ceil(piece),
            "{when}: bank {bank}: a {}-byte body in {piece}-byte pieces",
            cp.body.len()
        );
        assert!(chunks > 1, "{when}: bank {bank}: {chunks} piece(s)");
        let (ledger, replayed) = recover(store, config).await.expect("recover");
        assert_eq!(replayed, 0, "{when}: bank {bank}: checkpoint not current");
        assert_eq!(
            postcard::to_stdvec(&ledger.snapshot()).expect("encodes"),
            cp.body,
            "{when}: bank {bank}: stored body is not the snapshot's encoding"
        );
        let mut full = Ledger::new(config);
        let mut fx = Effects::default();
        let mut next = 1;
        loop {
            let page = store.batches_from(bank, next, 512).await.expect("batches");
            if page.is_empty() {
                break;
            }
            for b in page {
                let cmds = decode_commands(&b.commands).expect("journaled commands decode");
                full.apply(&cmds, b.ts, &mut fx);
                next = b.batch + 1;
            }
        }
        assert_eq!(
            full.snapshot(),
            ledger.snapshot(),
            "{when}: bank {bank}: recovered books differ from a full replay"
        );
    }
}
