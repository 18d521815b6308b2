//! `kks-switch disburse`: payment orders → idempotent credit batches through
//! the shards, a reject report, and a summary that reconciles to the file's
//! control total (DESIGN §4, INTERFACE §8; the file format and the rules are
//! in `specs/disbursement.md`).
//!
//! Why one credit per (family, tahap) and per (family, month): each is a
//! [`PeriodCredit`], which the family's card marks as paid for that period
//! (a bitmap per wallet, see `ledger::Marks`), so re-running a file,
//! resuming after a crash, or paying a range of months that overlaps an
//! earlier wave credits every family once. The ledger answers a period
//! already paid as approved and replayed, which is what "already credited"
//! counts.

mod orders;

pub use orders::{
    counts, from_entitlements, from_file, from_text, parse_amount, Context, Order, OrdersError,
    Part, Plan, COLUMNS,
};

use crate::admin::{Writer, WriterError};
use crate::ledger::{
    Amount, BankCode, Code, Command, FamilyId, Ledger, PeriodCredit, Program, BATCH_COMMANDS_MAX,
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
    /// Wall time of the credit phase (first credit sent to last durable
    /// answer, pages of families read meanwhile), when measured.
    pub credit_seconds: Option<f64>,
}

impl Summary {
    /// Adds another part of the same run (a page of families).
    fn absorb(&mut self, other: Summary) {
        for (mine, theirs) in [
            (&mut self.file, other.file),
            (&mut self.credited, other.credited),
            (&mut self.already, other.already),
            (&mut self.rejected, other.rejected),
        ] {
            mine.count += theirs.count;
            mine.amount += theirs.amount;
        }
        self.credits += other.credits;
        self.credited_amount += other.credited_amount;
        self.already_amount += other.already_amount;
        self.rejected_amount += other.rejected_amount;
        for (reason, t) in other.by_reason {
            match self.by_reason.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, mine)) => {
                    mine.count += t.count;
                    mine.amount += t.amount;
                }
                None => self.by_reason.push((reason, t)),
            }
        }
        self.by_reason.sort_by_key(|(r, _)| *r);
    }

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
        if let Some(secs) = self.credit_seconds {
            writeln!(
                f,
                "  credit phase      {:>10.2} s  ({:.0} credits/s)",
                secs,
                self.credits as f64 / secs.max(1e-9)
            )?;
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
    #[error("the entitlement of family {kk} is {amount} (DE4 units), more than a wave from entitlements plans per family ({max}); check the program rules", max = u32::MAX)]
    EntitlementTooLarge { kk: u64, amount: Amount },
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
    let r = match (&writer, &cfg.orders) {
        // From entitlements, for real: planned a page of families at a
        // time into 16 bytes per order, then credited.
        (Some(w), None) => run_wave(store, programs, cfg, period, w).await,
        _ => run_with(store, programs, cfg, period, writer.as_ref()).await,
    };
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
    match writer {
        Some(w) => results = apply_plan_live(w, cfg.program, &period, &plan, &pb).await?,
        None => {
            for (code, idx) in by_bank(&plan) {
                let (mut ledger, _) = recover(store, programs.ledger_config(code)).await?;
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
                    &idx,
                    &mut results,
                    &pb,
                );
            }
        }
    }
    pb.finish_and_clear();

    let report_path = report_path(cfg);
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

/// Where the reject report goes.
fn report_path(cfg: &DisburseConfig) -> PathBuf {
    cfg.report.clone().unwrap_or_else(|| match &cfg.orders {
        Some(p) => PathBuf::from(format!("{}.rejects.csv", p.display())),
        None => PathBuf::from(format!(
            "disburse-{}-{}-rejects.csv",
            program_name(cfg.program),
            cfg.period.replace("..", "_")
        )),
    })
}

/// Families per page read while planning a wave from entitlements.
const PAGE: u32 = 1 << 16;

/// One family's order in a wave from entitlements: 12 bytes, so a wave of
/// 20M families plans in about 240 MB (the order id is derived from the KK).
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct Entry {
    kk: u64,
    /// The order's amount (PKH: the tahap; BPNT: all months of the period),
    /// in rupiah units of DE4; an entitlement above `u32::MAX` stops the
    /// wave before any credit (see [`DisburseError::EntitlementTooLarge`]).
    amount: u32,
}

/// A real wave from the families' entitlements, in two phases.
///
/// Planning reads the enrolled families a page at a time (only the columns
/// an entitlement needs) and keeps 16 bytes per order, by bank. The credit phase then sends every bank's credits to its
/// shard at once, in chunks, and adds each chunk's answers to the summary
/// and the reject report as they come back: no per-credit result is kept.
/// The summary gives the credit phase's wall time (`credit_seconds`).
async fn run_wave(
    store: &Store,
    programs: &Programs,
    cfg: &DisburseConfig,
    period: Period,
    writer: &Writer,
) -> Result<Summary, DisburseError> {
    let no_files = HashMap::new();
    let ctx = Context {
        programs,
        program: cfg.program,
        period,
        period_text: &cfg.period,
        families: &no_files,
    };
    let mut summary = Summary {
        program: program_name(cfg.program),
        source: "entitlements".into(),
        period: cfg.period.clone(),
        ..Summary::default()
    };

    // Plan.
    let mut banks: Vec<(Bank, Vec<Entry>)> = Bank::ALL.iter().map(|&b| (b, Vec::new())).collect();
    let pkh = cfg.program == Program::Pkh;
    let pb = progress(store.enrolled_count(pkh).await?, "planning");
    let mut after = None;
    loop {
        let rows = store.enrolled_page(pkh, after, PAGE).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = Some(last.kk);
        for f in &rows {
            if !ctx.enrolled(f) {
                continue;
            }
            let amount = ctx.entitlement(f);
            let bank = banks.iter_mut().find(|(b, _)| b.code_number() == f.bank);
            let (Some((_, entries)), true) = (bank, amount > 0) else {
                continue;
            };
            let Ok(small) = u32::try_from(amount) else {
                return Err(DisburseError::EntitlementTooLarge { kk: f.kk, amount });
            };
            entries.push(Entry {
                kk: f.kk,
                amount: small,
            });
            summary.file.add(amount);
        }
        pb.inc(rows.len() as u64);
    }
    pb.finish_and_clear();

    // Credit.
    let path = report_path(cfg);
    let io = |source| DisburseError::Io {
        path: path.display().to_string(),
        source,
    };
    let pb = progress(summary.file.count, "credits");
    let started = std::time::Instant::now();
    let runs = banks
        .iter()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(bank, entries)| credit_bank(writer, &ctx, *bank, entries, &pb));
    let mut lines = Vec::new();
    for got in futures::future::join_all(runs).await {
        let (part, rejects) = got?;
        summary.absorb(part);
        lines.extend(rejects);
    }
    summary.credit_seconds = Some(started.elapsed().as_secs_f64());
    pb.finish_and_clear();

    let mut report = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
    writeln!(report, "{REPORT_HEADER}").map_err(io)?;
    for line in lines {
        writeln!(report, "{line}").map_err(io)?;
    }
    report.flush().map_err(io)?;
    summary.report = Some(path);
    Ok(summary)
}

/// One bank's orders of a wave through its shard; its part of the summary
/// and its reject report lines.
async fn credit_bank(
    writer: &Writer,
    ctx: &Context<'_>,
    bank: Bank,
    entries: &[Entry],
    pb: &indicatif::ProgressBar,
) -> Result<(Summary, Vec<String>), DisburseError> {
    let program = ctx.program;
    let period = &ctx.period;
    let months = period.months();
    let monthly = ctx.programs.bpnt.monthly;
    let code = BankCode(bank.code_number());
    let mut summary = Summary::default();
    let mut by_reason: HashMap<Reason, Tally> = HashMap::new();
    let mut lines = Vec::new();
    let parts_of = |e: &Entry| -> Vec<Part> {
        match program {
            Program::Pkh => vec![Part {
                order: 0,
                bank,
                kk: e.kk,
                month: None,
                amount: Amount::from(e.amount),
            }],
            Program::Bpnt => months
                .iter()
                .map(|&m| Part {
                    order: 0,
                    bank,
                    kk: e.kk,
                    month: Some(m),
                    amount: monthly,
                })
                .collect(),
        }
    };
    // Orders per chunk so a chunk stays near CHUNK credits.
    let per_chunk = (CHUNK / months.len().max(1)).max(1);
    for chunk in entries.chunks(per_chunk) {
        let parts: Vec<Vec<Part>> = chunk.iter().map(parts_of).collect();
        let cmds: Vec<Command> = parts
            .iter()
            .flatten()
            .map(|p| command(program, period, p))
            .collect();
        let done = writer
            .execute_many(code, cmds)
            .await
            .map_err(DisburseError::Unavailable)?;
        let mut answers = done.iter();
        for (e, ps) in chunk.iter().zip(&parts) {
            let (mut credited, mut already) = (false, false);
            for p in ps {
                let Some(d) = answers.next() else {
                    return Err(DisburseError::Unavailable(WriterError::Admin(
                        "fewer answers than credits".into(),
                    )));
                };
                match classify(d.reply.code, d.replayed) {
                    PartResult::Credited => {
                        credited = true;
                        summary.credits += 1;
                        summary.credited_amount += u128::from(p.amount);
                    }
                    PartResult::Already => {
                        already = true;
                        summary.already_amount += u128::from(p.amount);
                    }
                    PartResult::Rejected(reason, code) => {
                        summary.rejected_amount += u128::from(p.amount);
                        by_reason.entry(reason).or_default().add(p.amount);
                        let order_id =
                            format!("{}-{}-{}", program_name(program), ctx.period_text, { e.kk });
                        lines.push(ledger_reject_line(
                            &order_id, 0, p, reason, code, program, period,
                        ));
                    }
                }
            }
            if credited {
                summary.credited.add(Amount::from(e.amount));
            } else if already {
                summary.already.add(Amount::from(e.amount));
            } else {
                summary.rejected.add(Amount::from(e.amount));
            }
        }
        pb.inc(chunk.len() as u64);
    }
    summary.by_reason = by_reason.into_iter().collect();
    Ok((summary, lines))
}

/// The plan's parts per bank (indices into `plan.parts`), banks in
/// [`Bank::ALL`] order, banks without parts left out.
fn by_bank(plan: &Plan) -> Vec<(BankCode, Vec<usize>)> {
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
    per_bank
}

/// Every part of `plan` through its bank's shard, all banks at once (each
/// bank is its own writer); the results in part order.
async fn apply_plan_live(
    writer: &Writer,
    program: Program,
    period: &Period,
    plan: &Plan,
    pb: &indicatif::ProgressBar,
) -> Result<Vec<PartResult>, DisburseError> {
    let mut results = vec![PartResult::Credited; plan.parts.len()];
    let per_bank = by_bank(plan);
    let runs = per_bank
        .iter()
        .map(|(code, idx)| apply_live(writer, *code, program, period, plan, idx, pb));
    for (got, (_, idx)) in futures::future::join_all(runs)
        .await
        .into_iter()
        .zip(&per_bank)
    {
        for (r, &i) in got?.into_iter().zip(idx) {
            results[i] = r;
        }
    }
    Ok(results)
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

/// The reject report's header line.
const REPORT_HEADER: &str = "order_id,line,kk,period,amount,reason,detail";

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
    writeln!(w, "{REPORT_HEADER}").map_err(io)?;
    report_lines(&mut w, plan, results, program, period).map_err(io)?;
    w.flush().map_err(io)
}

/// The report's lines for `plan`'s rejected orders and credits.
fn report_lines(
    w: &mut impl Write,
    plan: &Plan,
    results: &[PartResult],
    program: Program,
    period: &Period,
) -> std::io::Result<()> {
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
            let line = ledger_reject_line(&o.order_id, o.line, p, *reason, *code, program, period);
            writeln!(w, "{line}")?;
        }
    }
    Ok(())
}

/// A report line for a credit the ledger declined.
fn ledger_reject_line(
    order_id: &str,
    line: u64,
    p: &Part,
    reason: Reason,
    code: Code,
    program: Program,
    period: &Period,
) -> String {
    let when = p.month.map_or(period.to_string(), |m| m.to_string());
    format!(
        "{},{},{},{},{},{},ledger answered {} ({:?}) for key {}",
        csv_field(order_id),
        line,
        p.kk,
        when,
        rupiah(p.amount.into()),
        reason.as_str(),
        code.de39(),
        code,
        credit_key(program, period, p)
    )
}

/// Quotes a field that holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
