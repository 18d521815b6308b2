//! `kks-switch disburse`: payment orders → idempotent credit batches through
//! the shards, a reject report, and a summary that reconciles to the file's
//! control total (DESIGN §4, INTERFACE §8; the file format and the rules are
//! in `specs/disbursement.md`).
//!
//! Why one credit per (family, tahap) and per (family, month): the credit's
//! idempotency key is `PKH:<yyyy-Tn>:<kk>` or `BPNT:<yyyy-mm>:<kk>`, so
//! re-running a file, resuming after a crash, or paying a range of months
//! that overlaps an earlier wave credits every family once. The ledger
//! answers a repeated key with its first answer, marked as replayed, which
//! is what "already credited" counts.

mod orders;

pub use orders::{
    counts, from_entitlements, from_file, from_text, parse_amount, Context, Order, OrdersError,
    Part, Plan, COLUMNS,
};

use crate::admin::{Writer, WriterError};
use crate::ledger::{
    BankCode, Code, Command, FamilyId, Ledger, PeriodCredit, Program, BATCH_COMMANDS_MAX,
};
use crate::pan::Bank;
use crate::programs::{program_name, rupiah, Period, Programs};
use crate::seed::progress;
use crate::shard::{recover, ShardConfig, ShardError};
use crate::storage::{Store, StoreError};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;

/// Credits per submission to a shard (progress granularity).
const CHUNK: usize = 65_536;

/// Why an order (or a month of it) was not credited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A field is missing or malformed.
    BadRow,
    /// The order is for the other program.
    WrongProgram,
    /// The order is for another period than this run's.
    WrongPeriod,
    /// The same order_id or family appears earlier in the file.
    DuplicateLine,
    /// The NIK does not match the family's.
    NikMismatch,
    /// The family is not enrolled in this program.
    NotEnrolled,
    /// The amount differs from what the rules give.
    AmountMismatch,
    /// No card for the family at the order's bank.
    NoAccount,
    /// The family's card is closed.
    ClosedAccount,
    /// Credited before with a different amount (same key, other content).
    Conflict,
    /// Any other decline of the ledger.
    Declined,
}

impl Reason {
    /// The reason as written in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRow => "bad-row",
            Reason::WrongProgram => "wrong-program",
            Reason::WrongPeriod => "wrong-period",
            Reason::DuplicateLine => "duplicate-line",
            Reason::NikMismatch => "nik-mismatch",
            Reason::NotEnrolled => "not-enrolled",
            Reason::AmountMismatch => "amount-mismatch",
            Reason::NoAccount => "no-account",
            Reason::ClosedAccount => "closed-account",
            Reason::Conflict => "conflict",
            Reason::Declined => "declined",
        }
    }
}

/// Count and sum, DE4 units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub amount: u128,
}

impl Tally {
    fn add(&mut self, amount: u64) {
        self.count += 1;
        self.amount += u128::from(amount);
    }
}

/// What a run did (or, dry, would do).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub program: &'static str,
    pub period: String,
    /// Where the orders came from (file path or "entitlements").
    pub source: String,
    pub dry_run: bool,
    /// Orders in the file and their control total.
    pub file: Tally,
    /// Orders with at least one newly credited part; amounts are per part.
    pub credited: Tally,
    /// Orders wholly credited before (replayed keys).
    pub already: Tally,
    /// Orders rejected.
    pub rejected: Tally,
    /// Credits (keys) newly applied.
    pub credits: u64,
    /// Sum of the parts newly credited, already credited, rejected.
    pub credited_amount: u128,
    pub already_amount: u128,
    pub rejected_amount: u128,
    /// Rejects by reason: count of report lines and their amount.
    pub by_reason: Vec<(Reason, Tally)>,
    /// The reject report's path.
    pub report: Option<PathBuf>,
}

impl Summary {
    /// Whether the categories add up to the file's count and control total.
    pub fn reconciles(&self) -> bool {
        self.credited.count + self.already.count + self.rejected.count == self.file.count
            && self.credited_amount + self.already_amount + self.rejected_amount == self.file.amount
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "disburse {} {} from {}{}",
            self.program,
            self.period,
            self.source,
            if self.dry_run {
                " (dry run: nothing changed)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  orders            {:>10}  Rp {:>20}  (control total)",
            self.file.count,
            rupiah(self.file.amount)
        )?;
        writeln!(
            f,
            "  credited          {:>10}  Rp {:>20}  ({} credits)",
            self.credited.count,
            rupiah(self.credited_amount),
            self.credits
        )?;
        writeln!(
            f,
            "  already credited  {:>10}  Rp {:>20}",
            self.already.count,
            rupiah(self.already_amount)
        )?;
        writeln!(
            f,
            "  rejected          {:>10}  Rp {:>20}",
            self.rejected.count,
            rupiah(self.rejected_amount)
        )?;
        for (r, t) in &self.by_reason {
            writeln!(
                f,
                "    {:<16}{:>10}  Rp {:>20}",
                r.as_str(),
                t.count,
                rupiah(t.amount)
            )?;
        }
        if let Some(p) = &self.report {
            writeln!(f, "  reject report     {}", p.display())?;
        }
        if self.reconciles() {
            write!(
                f,
                "  reconciled: credited + already credited + rejected = orders and control total"
            )
        } else {
            write!(f, "  DOES NOT RECONCILE with the control total")
        }
    }
}

/// Why a run failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DisburseError {
    #[error(transparent)]
    Orders(#[from] OrdersError),
    #[error("{0}")]
    Period(#[from] crate::programs::PeriodError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Shards(#[from] ShardError),
    #[error("a bank's shard stopped answering ({0}); run again to resume (credits already made are not repeated)")]
    Unavailable(WriterError),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct DisburseConfig {
    pub program: Program,
    /// As given: `2026-T1`, `2026-01`, `2026-01..2026-03`.
    pub period: String,
    /// Payment-order file; `None` computes orders from entitlements.
    pub orders: Option<PathBuf>,
    /// Apply to a copy of the books in memory only.
    pub dry_run: bool,
    /// Where the reject report goes (default beside the orders file, or
    /// `disburse-<program>-<period>-rejects.csv` in the working directory).
    pub report: Option<PathBuf>,
}

/// The credit's name in reports, `PKH:<yyyy>-T<n>:<kk>` or
/// `BPNT:<yyyy-mm>:<kk>` (the idempotency key of the keyed credits earlier
/// builds sent, which the ledger still honours).
pub fn credit_key(program: Program, period: &Period, part: &Part) -> String {
    match part.month {
        Some(m) => format!("{}:{m}:{}", program_name(program), part.kk),
        None => format!("{}:{period}:{}", program_name(program), part.kk),
    }
}

/// The ledger's number for the period a part pays: `year * 12 + month - 1`
/// for a BPNT month, `year * 12 + tahap - 1` for a PKH tahap (at most 12
/// tahap a year, checked when `programs.toml` is loaded).
pub fn period_number(period: &Period, part: &Part) -> u16 {
    let (year, index) = match (part.month, period) {
        (Some(m), _) => (m.year, u16::from(m.month)),
        (None, Period::Tahap { year, tahap }) => (*year, u16::from(*tahap)),
        (None, Period::Months { first, .. }) => (first.year, u16::from(first.month)),
    };
    // Years are 2000..=2099 and index 1..=12: far below PERIOD_MAX.
    year * 12 + index - 1
}

fn command(program: Program, period: &Period, part: &Part) -> Command {
    Command::PeriodCredit(PeriodCredit {
        program,
        period: period_number(period, part),
        family: FamilyId(part.kk),
        amount: part.amount,
    })
}

/// The outcome of one part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartResult {
    Credited,
    Already,
    Rejected(Reason, Code),
}

fn classify(code: Code, replayed: bool) -> PartResult {
    match code {
        Code::Approved if replayed => PartResult::Already,
        Code::Approved => PartResult::Credited,
        Code::UnknownCard => PartResult::Rejected(Reason::NoAccount, code),
        Code::CardClosed => PartResult::Rejected(Reason::ClosedAccount, code),
        Code::KeyConflict => PartResult::Rejected(Reason::Conflict, code),
        other => PartResult::Rejected(Reason::Declined, other),
    }
}

/// Plan, apply and report one disbursement run on the database at `url`
/// (opened as `store`).
pub async fn run(
    url: &str,
    store: &Store,
    programs: &Programs,
    shard_cfg: ShardConfig,
    cfg: &DisburseConfig,
) -> Result<Summary, DisburseError> {
    let period = programs.parse_period(cfg.program, &cfg.period)?;
    // A dry run only reads. A real run writes through a running server's
    // admin endpoint, or through its own shards under the direct-writer
    // lock, held for the whole run.
    let writer = if cfg.dry_run {
        None
    } else {
        let w = Writer::open(url, programs.ledger_configs(), shard_cfg).await?;
        if w.is_remote() {
            eprintln!("disburse: a server is running on this database; writing through its admin endpoint");
        }
        Some(w)
    };
    let r = run_with(store, programs, cfg, period, writer.as_ref()).await;
    if let Some(w) = writer {
        w.close().await;
    }
    r
}

async fn run_with(
    store: &Store,
    programs: &Programs,
    cfg: &DisburseConfig,
    period: Period,
    writer: Option<&Writer>,
) -> Result<Summary, DisburseError> {
    let rows = store.families().await?;
    let families: HashMap<u64, crate::storage::FamilyRow> = match cfg.orders {
        Some(_) => rows.iter().map(|f| (f.kk, f.clone())).collect(),
        None => HashMap::new(),
    };
    let ctx = Context {
        programs,
        program: cfg.program,
        period,
        period_text: &cfg.period,
        families: &families,
    };
    let plan = match &cfg.orders {
        Some(p) => from_file(&ctx, &p.display().to_string())?,
        None => from_entitlements(&ctx, &rows),
    };
    drop(families);
    drop(rows);

    // Apply: every bank's shard at once (each bank is its own writer), or
    // bank by bank on in-memory copies for a dry run.
    let mut results = vec![PartResult::Credited; plan.parts.len()];
    let pb = progress(
        plan.parts.len() as u64,
        if cfg.dry_run { "dry run" } else { "credits" },
    );
    let mut per_bank: Vec<(BankCode, Vec<usize>)> = Bank::ALL
        .iter()
        .map(|b| (BankCode(b.code_number()), Vec::new()))
        .collect();
    for (i, part) in plan.parts.iter().enumerate() {
        if let Some(slot) = per_bank
            .iter_mut()
            .find(|(c, _)| c.0 == part.bank.code_number())
        {
            slot.1.push(i);
        }
    }
    per_bank.retain(|(_, idx)| !idx.is_empty());
    match writer {
        Some(w) => {
            let runs = per_bank
                .iter()
                .map(|(code, idx)| apply_live(w, *code, cfg.program, &period, &plan, idx, &pb));
            for (got, (_, idx)) in futures::future::join_all(runs)
                .await
                .into_iter()
                .zip(&per_bank)
            {
                for (r, &i) in got?.into_iter().zip(idx) {
                    results[i] = r;
                }
            }
        }
        None => {
            for (code, idx) in &per_bank {
                let (mut ledger, _) = recover(store, programs.ledger_config(*code)).await?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                apply_dry(
                    &mut ledger,
                    now,
                    cfg.program,
                    &period,
                    &plan,
                    idx,
                    &mut results,
                    &pb,
                );
            }
        }
    }
    pb.finish_and_clear();

    let report_path = cfg.report.clone().unwrap_or_else(|| match &cfg.orders {
        Some(p) => PathBuf::from(format!("{}.rejects.csv", p.display())),
        None => PathBuf::from(format!(
            "disburse-{}-{}-rejects.csv",
            program_name(cfg.program),
            cfg.period.replace("..", "_")
        )),
    });
    let mut summary = summarize(&plan, &results, cfg.program, &period);
    summary.source = match &cfg.orders {
        Some(p) => p.display().to_string(),
        None => "entitlements".into(),
    };
    summary.dry_run = cfg.dry_run;
    summary.period = cfg.period.clone();
    write_report(&report_path, &plan, &results, cfg.program, &period)?;
    summary.report = Some(report_path);
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn apply_dry(
    ledger: &mut Ledger,
    ts: u64,
    program: Program,
    period: &Period,
    plan: &Plan,
    idx: &[usize],
    results: &mut [PartResult],
    pb: &indicatif::ProgressBar,
) {
    let mut effects = crate::ledger::Effects::with_capacity(1024);
    for chunk in idx.chunks(BATCH_COMMANDS_MAX.min(4096)) {
        let cmds: Vec<Command> = chunk
            .iter()
            .map(|&i| command(program, period, &plan.parts[i]))
            .collect();
        ledger.apply(&cmds, ts, &mut effects);
        for (o, &i) in effects.outcomes.iter().zip(chunk) {
            results[i] = classify(o.reply.code, o.replayed);
        }
        pb.inc(chunk.len() as u64);
    }
}

/// One bank's parts (`idx`, into `plan.parts`) through its shard, in
/// chunks; the results in `idx` order.
async fn apply_live(
    writer: &Writer,
    bank: BankCode,
    program: Program,
    period: &Period,
    plan: &Plan,
    idx: &[usize],
    pb: &indicatif::ProgressBar,
) -> Result<Vec<PartResult>, DisburseError> {
    let mut results = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(CHUNK) {
        let cmds: Vec<Command> = chunk
            .iter()
            .map(|&i| command(program, period, &plan.parts[i]))
            .collect();
        let done = writer
            .execute_many(bank, cmds)
            .await
            .map_err(DisburseError::Unavailable)?;
        results.extend(done.iter().map(|d| classify(d.reply.code, d.replayed)));
        pb.inc(chunk.len() as u64);
    }
    Ok(results)
}

fn summarize(plan: &Plan, results: &[PartResult], program: Program, _period: &Period) -> Summary {
    let mut s = Summary {
        program: program_name(program),
        ..Summary::default()
    };
    let mut by_reason: HashMap<Reason, Tally> = HashMap::new();
    // Per order: did any part get credited / already / rejected.
    let mut state = vec![(false, false, false); plan.orders.len()];
    for (o, order) in plan.orders.iter().enumerate() {
        s.file.add(order.amount);
        if let Some((r, _)) = &order.reject {
            state[o].2 = true;
            s.rejected_amount += u128::from(order.amount);
            by_reason.entry(*r).or_default().add(order.amount);
        }
    }
    for (p, r) in plan.parts.iter().zip(results) {
        let st = &mut state[p.order as usize];
        match r {
            PartResult::Credited => {
                st.0 = true;
                s.credits += 1;
                s.credited_amount += u128::from(p.amount);
            }
            PartResult::Already => {
                st.1 = true;
                s.already_amount += u128::from(p.amount);
            }
            PartResult::Rejected(reason, _) => {
                st.2 = true;
                s.rejected_amount += u128::from(p.amount);
                by_reason.entry(*reason).or_default().add(p.amount);
            }
        }
    }
    for (o, st) in state.iter().enumerate() {
        let amount = plan.orders[o].amount;
        match st {
            (true, _, _) => s.credited.add(amount),
            (false, true, _) => s.already.add(amount),
            _ => s.rejected.add(amount),
        }
    }
    let mut v: Vec<(Reason, Tally)> = by_reason.into_iter().collect();
    v.sort_by_key(|(r, _)| *r);
    s.by_reason = v;
    s
}

fn write_report(
    path: &std::path::Path,
    plan: &Plan,
    results: &[PartResult],
    program: Program,
    period: &Period,
) -> Result<(), DisburseError> {
    let io = |source| DisburseError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::new(f);
    let mut go = || -> std::io::Result<()> {
        writeln!(w, "order_id,line,kk,period,amount,reason,detail")?;
        for o in &plan.orders {
            if let Some((r, detail)) = &o.reject {
                writeln!(
                    w,
                    "{},{},{},{},{},{},{}",
                    csv_field(&o.order_id),
                    o.line,
                    csv_field(&o.kk),
                    period,
                    rupiah(o.amount.into()),
                    r.as_str(),
                    csv_field(detail)
                )?;
            }
        }
        for (p, r) in plan.parts.iter().zip(results) {
            if let PartResult::Rejected(reason, code) = r {
                let o = &plan.orders[p.order as usize];
                let when = p.month.map_or(period.to_string(), |m| m.to_string());
                writeln!(
                    w,
                    "{},{},{},{},{},{},ledger answered {} ({:?}) for key {}",
                    csv_field(&o.order_id),
                    o.line,
                    p.kk,
                    when,
                    rupiah(p.amount.into()),
                    reason.as_str(),
                    code.de39(),
                    code,
                    credit_key(program, period, p)
                )?;
            }
        }
        w.flush()
    };
    go().map_err(io)
}

/// Quotes a field that holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
