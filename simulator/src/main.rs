//! kks-sim: e-Warong and agent terminal emulators and the disbursement-day
//! load generator for kks-switch (DESIGN §5). See simulator/README.md.
//!
//! - [`scenario`]: scenario files (TOML): load shape, mix, terminal behaviour, wave, thresholds.
//! - [`population`]: cards and terminals from `kks-switch seed`'s files.
//! - [`gen`]: the seeded request stream and its encoding (codec, PIN blocks, MACs).
//! - [`engine`]: connections, pipelining, matching, timeouts and reversals, on one thread.
//! - [`stats`]: HDR histograms, timeline, thresholds, the JSON summary.
//! - [`report`]: the self-contained HTML report.
//! - [`verify`]: the money check against `kks-switch audit --json`.
//! - [`echo`]: `echo-target`, a trivial responder to measure the generator alone.
//! - [`crash`]: `crash`, SIGKILL trials under load checked against the journal.

mod crash;
mod echo;
mod engine;
mod gen;
mod population;
mod report;
mod rng;
mod scenario;
mod stats;
mod verify;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "kks-sim",
    version,
    about = "Terminal emulators and load generator for kks-switch"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Play a scenario against a running host; write summary.json and
    /// report.html; exit 1 if a threshold or the money check fails.
    Run(RunArgs),
    /// Money check of a finished run: its summary against `kks-switch audit --json`.
    Verify {
        /// Ledger database of the host (as given to kks-switch).
        #[arg(long)]
        db: String,
        /// summary.json written by `run`.
        #[arg(long)]
        summary: PathBuf,
        /// The kks-switch binary (default: next to kks-sim).
        #[arg(long)]
        kks_switch: Option<PathBuf>,
    },
    /// Print the first COUNT requests of a scenario's seeded stream, one per
    /// line (type, flags, framed bytes in hex; DE7 fixed), without sending them.
    Stream {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        cards: PathBuf,
        #[arg(long)]
        terminals: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 100)]
        count: u64,
    },
    /// Crash trials: seed, serve, load, SIGKILL at a random moment, restart,
    /// repeat what was unanswered, compare every approval with the journal
    /// and the audit; exit 1 on any loss or extra effect.
    Crash(crash::CrashArgs),
    /// A trivial ISO 8583 responder (2b framing) for measuring the generator.
    EchoTarget {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// terminals.csv, so that answers to MAC terminals carry a MAC.
        #[arg(long)]
        terminals: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario file (TOML).
    #[arg(long)]
    scenario: PathBuf,
    /// Host address, e.g. 127.0.0.1:8583.
    #[arg(long)]
    target: String,
    /// cards.csv from `kks-switch seed` (families.csv beside it is used when present).
    #[arg(long)]
    cards: PathBuf,
    /// terminals.csv from `kks-switch seed`.
    #[arg(long)]
    terminals: PathBuf,
    /// Seed of the request stream (default: the scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for summary.json and report.html.
    #[arg(long, default_value = "kks-sim-out")]
    out: PathBuf,
    /// The host's database: enables `{db}` in wave commands and the money
    /// check (audit before and after the run).
    #[arg(long)]
    db: Option<String>,
    /// The kks-switch binary (default: next to kks-sim).
    #[arg(long)]
    kks_switch: Option<PathBuf>,
    /// Override the scenario's duration (seconds at full load).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Override the scenario's open-loop rate.
    #[arg(long)]
    rate: Option<f64>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Verify {
            db,
            summary,
            kks_switch,
        } => verify_cmd(&db, &summary, kks_switch.as_deref()),
        Cmd::Crash(a) => ExitCode::from(crash::main(a)),
        Cmd::EchoTarget { listen, terminals } => echo_target(&listen, terminals.as_deref()),
        Cmd::Stream {
            scenario,
            cards,
            terminals,
            seed,
            count,
        } => stream(&scenario, &cards, &terminals, seed, count),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("kks-sim: {msg}");
    ExitCode::from(2)
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn stream(
    scenario: &Path,
    cards: &Path,
    terminals: &Path,
    seed: Option<u64>,
    count: u64,
) -> ExitCode {
    use std::io::Write;
    let sc = match scenario::Scenario::load(scenario) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let seed = seed.unwrap_or(sc.seed);
    let mut pop = match population::Population::load(cards, terminals, seed) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut g = gen::Generator::new(&pop, &sc.mix, seed);
    if !g.possible() {
        return fail("no card can do any operation of the mix");
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut buf = bytes::BytesMut::new();
    for _ in 0..count {
        let r = g.next(&mut pop, *b"0101000000");
        buf.clear();
        gen::encode_0200(&r, &mut pop, &mut buf);
        let _ = writeln!(out, "{} {} {}", r.kind.name(), r.flags, hex_upper(&buf));
    }
    ExitCode::SUCCESS
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn echo_target(listen: &str, terminals: Option<&Path>) -> ExitCode {
    let keys = match terminals.map(echo::mac_keys).transpose() {
        Ok(k) => k.unwrap_or_default(),
        Err(e) => return fail(e),
    };
    let rt = match current_thread() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, echo::serve(listen, keys)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn run_wave(
    sc: &scenario::Scenario,
    db: Option<&str>,
    kks: &dyn Fn() -> Result<PathBuf, String>,
) -> Result<Vec<stats::WaveStep>, String> {
    let mut steps = Vec::new();
    for cmd in &sc.wave.commands {
        let mut args: Vec<String> = Vec::with_capacity(cmd.len());
        for a in cmd {
            if a.contains("{db}") {
                let db = db.ok_or("the wave uses {db}: pass --db")?;
                args.push(a.replace("{db}", db));
            } else {
                args.push(a.clone());
            }
        }
        let Some(first) = args.first() else { continue };
        let program = if first == "kks-switch" {
            kks()?
        } else {
            PathBuf::from(first)
        };
        eprintln!("kks-sim: wave: {}", args.join(" "));
        let t = Instant::now();
        let st = std::process::Command::new(&program)
            .args(&args[1..])
            .status()
            .map_err(|e| format!("wave: cannot run {}: {e}", program.display()))?;
        steps.push(stats::WaveStep {
            command: args.clone(),
            exit_code: st.code(),
            seconds: t.elapsed().as_secs_f64(),
        });
        if !st.success() {
            return Err(format!("wave command failed ({st}): {}", args.join(" ")));
        }
    }
    Ok(steps)
}

fn run(a: RunArgs) -> ExitCode {
    let mut sc = match scenario::Scenario::load(&a.scenario) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Some(d) = a.duration_s {
        sc.load.duration_s = d;
    }
    if let Some(r) = a.rate {
        sc.load.rate_per_s = r;
    }
    let seed = a.seed.unwrap_or(sc.seed);
    let target: std::net::SocketAddr = match std::net::ToSocketAddrs::to_socket_addrs(&a.target)
        .ok()
        .and_then(|mut i| i.next())
    {
        Some(t) => t,
        None => return fail(format!("--target {}: not an address", a.target)),
    };
    let t = Instant::now();
    let pop = match population::Population::load(&a.cards, &a.terminals, seed) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if !a.quiet {
        eprintln!(
            "kks-sim: {} cards, {} terminals loaded in {:.2} s{}",
            pop.cards.len(),
            pop.terminals.len(),
            t.elapsed().as_secs_f64(),
            if pop.enrolment_known {
                " (programs from families.csv)"
            } else {
                ""
            }
        );
    }
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        return fail(format!("cannot create {}: {e}", a.out.display()));
    }
    let kks = || verify::kks_switch_binary(a.kks_switch.as_deref());
    let wave = match run_wave(&sc, a.db.as_deref(), &kks) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let baseline = match &a.db {
        Some(db) => match kks().and_then(|k| verify::audit(&k, db)) {
            Ok(au) => Some(au.cards),
            Err(e) => return fail(format!("audit before the run: {e}")),
        },
        None => None,
    };
    let rt = match current_thread() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let local = tokio::task::LocalSet::new();
    let opt = engine::RunOptions {
        target,
        seed,
        progress: !a.quiet,
    };
    let mut sum = match local.block_on(&rt, engine::run(&sc, pop, opt)) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    drop(local);
    drop(rt);
    sum.wave = wave;
    sum.baseline = baseline;
    sum.thresholds = stats::evaluate(&sc.thresholds, &sum);
    let mut passed = sum.thresholds.iter().all(|t| t.passed);
    if let Some(db) = &a.db {
        match kks().and_then(|k| verify::audit(&k, db)) {
            Ok(after) => {
                let c = verify::check(&sum, &after);
                passed &= c.passed;
                sum.money_check = Some(c);
            }
            Err(e) => {
                eprintln!("kks-sim: audit after the run: {e}");
                passed = false;
            }
        }
    }
    sum.passed = passed;
    let json = match serde_json::to_string_pretty(&sum) {
        Ok(j) => j,
        Err(e) => return fail(e),
    };
    let sp = a.out.join("summary.json");
    let rp = a.out.join("report.html");
    if let Err(e) = std::fs::write(&sp, json) {
        return fail(format!("cannot write {}: {e}", sp.display()));
    }
    if let Err(e) = std::fs::write(&rp, report::html(&sum)) {
        return fail(format!("cannot write {}: {e}", rp.display()));
    }
    print_summary(&sum);
    println!("summary: {}", sp.display());
    println!("report:  {}", rp.display());
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_summary(s: &stats::Summary) {
    let t = &s.totals;
    println!(
        "{} ({}, seed {}): {} sent, {} answered in {:.1} s = {:.0}/s; errors {} ({:.4}%), timeouts {}, reversals {}/{}, unresolved {}",
        s.scenario,
        s.mode,
        s.seed,
        t.sent,
        t.answered,
        s.load_s,
        s.throughput_rps,
        t.errors,
        t.error_rate * 100.0,
        t.timeouts,
        t.reversals_approved,
        t.reversals_sent,
        t.unresolved
    );
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "type", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (k, l) in &s.latency_ms {
        println!(
            "{:<16} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            k, l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    }
    if let Some(all) = s.codes.get("all") {
        let codes: Vec<String> = all.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        println!("codes: {}", codes.join(" "));
    }
    println!(
        "cpu: {:.2} s user + {:.2} s system = {:.2} cores",
        s.cpu.user_s, s.cpu.system_s, s.cpu.cores
    );
    for th in &s.thresholds {
        println!(
            "threshold {:<28} {:>12} {}",
            th.expr,
            th.value.map(|v| format!("{v:.4}")).unwrap_or("-".into()),
            if th.passed { "ok" } else { "MISSED" }
        );
    }
    if let Some(m) = &s.money_check {
        println!(
            "money check: {} ({} cards, approved net {} vs ledger net {}, {} mismatched, {} audit violations)",
            if m.passed { "ok" } else { "FAILED" },
            m.cards_checked,
            m.sim_net,
            m.ledger_net,
            m.cards_mismatched,
            m.audit_violations.len()
        );
        for x in m.mismatches.iter().chain(&m.audit_violations) {
            println!("  {x}");
        }
    }
}

fn verify_cmd(db: &str, summary: &Path, kks: Option<&Path>) -> ExitCode {
    let text = match std::fs::read_to_string(summary) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", summary.display())),
    };
    let sum: stats::Summary = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", summary.display())),
    };
    let after = match verify::kks_switch_binary(kks).and_then(|k| verify::audit(&k, db)) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let c = verify::check(&sum, &after);
    println!(
        "money check: {} ({} cards, approved net {} vs ledger net {}, {} mismatched, {} audit violations)",
        if c.passed { "ok" } else { "FAILED" },
        c.cards_checked,
        c.sim_net,
        c.ledger_net,
        c.cards_mismatched,
        c.audit_violations.len()
    );
    for x in c.mismatches.iter().chain(&c.audit_violations) {
        println!("  {x}");
    }
    if c.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
