//! `kks-sim crash`: crash trials under load (issue 7, item 1).
//!
//! Each trial, on a fresh database (SQLite file, or a fresh PostgreSQL
//! schema):
//!
//! 1. `kks-switch seed` + `disburse` (BPNT 2026-01, PKH 2026-T1), then the
//!    audit baseline and every bank's checkpoint (the replay starts there);
//! 2. `kks-switch serve` as a child; real ISO 8583 over TCP from the
//!    simulator's seeded request stream (purchases and withdrawals, several
//!    connections, pipelined, closed loop), every request's bytes kept;
//! 3. SIGKILL at a random moment (drawn from the seed); answers already in
//!    the sockets still count;
//! 4. `serve` again on the same database; every request left unanswered is
//!    sent again byte for byte (a terminal's repeat: same key, same content)
//!    and its answer taken as definitive; a sample of answered requests is
//!    sent again too and must get the very same DE39 and DE38;
//! 5. `serve` stopped (SIGTERM), then the comparison:
//!    - the journal, replayed from the checkpoint of step 1: every approval
//!      the client saw is applied exactly once (else *lost*), and every
//!      applied purchase or withdrawal was seen approved (else *extra*, as is
//!      a second application of one key); every answer's DE39 is the
//!      journal's;
//!    - `kks-switch audit --json`: no violation, and per card the ledger's
//!      purchases and withdrawals since the baseline equal the approved
//!      amounts the client saw.
//!
//! Prints one line per trial and a summary; exits 1 on any loss, extra
//! effect, mismatch or audit failure, 3 when PostgreSQL cannot be reached.

use crate::gen::{de7_at, encode_0200, read_answer, Generator, Kind};
use crate::population::Population;
use crate::rng::Rng;
use crate::scenario::Mix;
use crate::verify;
use bytes::{Buf, Bytes, BytesMut};
use kks_switch::iso8583::framing::frame_length;
use kks_switch::iso8583::{Framing, Message, FRAME_BYTES_MAX};
use kks_switch::ledger::{de39, Command, Effects, Ledger, Snapshot};
use kks_switch::shard::decode_commands;
use kks_switch::storage::Store;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long `serve` may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the repeats after the restart may take to be answered.
const RESEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest load phase when the kill never comes (a bug guard).
const LOAD_MAX: Duration = Duration::from_secs(120);
/// Answered requests sent again after the restart (a random sample).
const ANSWERED_REPEATS_MAX: usize = 300;
/// Exit code when the store cannot be reached.
pub const EXIT_UNAVAILABLE: u8 = 3;

/// The verb's options.
#[derive(clap::Args, Clone, Debug)]
pub struct CrashArgs {
    /// sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    pub store: String,
    /// Trials to run.
    #[arg(long, default_value_t = 20)]
    pub trials: u32,
    /// Seed of the trials (kill times, request streams); printed, so a run
    /// can be repeated.
    #[arg(long)]
    pub seed: Option<u64>,
    /// PostgreSQL base URL (default: KKS_TEST_PG_URL, else
    /// postgres://postgres@127.0.0.1:5432/test); each trial gets its own schema.
    #[arg(long)]
    pub pg_url: Option<String>,
    /// Families seeded per trial.
    #[arg(long, default_value_t = 600)]
    pub families: u64,
    /// TCP connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight over all connections (closed loop).
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Earliest kill, milliseconds after the load starts.
    #[arg(long, default_value_t = 300)]
    pub kill_min_ms: u64,
    /// Latest kill, milliseconds after the load starts.
    #[arg(long, default_value_t = 2500)]
    pub kill_max_ms: u64,
    /// Working directory (default: a new one under the temp directory,
    /// removed unless a trial fails or --keep).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep databases and logs of passing trials too.
    #[arg(long)]
    pub keep: bool,
    /// The kks-switch binary (default: next to kks-sim).
    #[arg(long)]
    pub kks_switch: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One trial's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Trial {
    pub trial: u32,
    pub seed: u64,
    pub kill_after_ms: u64,
    /// Requests sent before the kill.
    pub sent: u64,
    /// Of those, answered before the kill (and read after it).
    pub answered_before_kill: u64,
    /// Approvals (00) among the answers before the kill.
    pub approved_before_kill: u64,
    /// Sent again after the restart because unanswered.
    pub resent: u64,
    /// Of the repeats, answered with the original's response from the
    /// journal (applied before the kill, answer lost with the process).
    pub resent_replayed: u64,
    /// Answered requests sent again after the restart.
    pub repeats_of_answered: u64,
    /// Repeats of answered requests whose DE39/DE38 differed.
    pub repeat_mismatches: u64,
    /// Approvals in the end (before the kill + definitive repeats).
    pub approved: u64,
    /// Requests without any answer even after the restart.
    pub unresolved: u64,
    /// Approvals seen but not applied exactly once in the journal.
    pub lost: u64,
    /// Applied purchases/withdrawals not seen approved, or applied twice.
    pub extra: u64,
    /// Answers whose DE39 differs from the journal's.
    pub code_mismatches: u64,
    /// Cards whose ledger figures differ from the approved amounts seen.
    pub cards_mismatched: u64,
    pub audit_clean: bool,
    /// From spawning the second `serve` to `listening on`.
    pub restart_ms: u64,
    /// Problems, for the report.
    pub problems: Vec<String>,
    pub passed: bool,
}

/// The verb's JSON output.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub store: String,
    pub seed: u64,
    pub trials: Vec<Trial>,
    pub passed: bool,
}

/// Run the verb.
pub fn main(a: CrashArgs) -> u8 {
    let store = match a.store.as_str() {
        "sqlite" | "postgres" => a.store.clone(),
        s => {
            eprintln!("kks-sim crash: --store must be sqlite or postgres, not {s:?}");
            return 2;
        }
    };
    if a.kill_max_ms < a.kill_min_ms || a.connections == 0 || a.in_flight == 0 {
        eprintln!("kks-sim crash: need kill_min_ms <= kill_max_ms, connections and in_flight >= 1");
        return 2;
    }
    let kks = match verify::kks_switch_binary(a.kks_switch.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("kks-sim crash: {e}");
            return 2;
        }
    };
    let seed = a.seed.unwrap_or_else(random_seed);
    let (dir, temp) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("kks-crash-{}-{seed}", std::process::id())),
            true,
        ),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("kks-sim crash: cannot create {}: {e}", dir.display());
        return 2;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kks-sim crash: {e}");
            return 2;
        }
    };
    let pg_base = a
        .pg_url
        .clone()
        .or_else(|| std::env::var("KKS_TEST_PG_URL").ok())
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    if store == "postgres" {
        if let Err(e) = rt.block_on(pg_admin(&pg_base)) {
            eprintln!("kks-sim crash: PostgreSQL unavailable at {pg_base}: {e}");
            return EXIT_UNAVAILABLE;
        }
    }
    println!(
        "kks-sim crash: {} trial(s) on {store}, seed {seed} (--seed {seed} repeats it), dir {}",
        a.trials,
        dir.display()
    );
    let mut rng = Rng::new(seed);
    let mut report = Report {
        store: store.clone(),
        seed,
        ..Report::default()
    };
    let mut any_failed = false;
    for n in 0..a.trials {
        let span = a.kill_max_ms - a.kill_min_ms + 1;
        let kill_after_ms = a.kill_min_ms + rng.below(span);
        let trial_seed = rng.next_u64() >> 1;
        let tdir = dir.join(format!("trial-{n}"));
        let _ = std::fs::remove_dir_all(&tdir);
        if let Err(e) = std::fs::create_dir_all(&tdir) {
            eprintln!("kks-sim crash: cannot create {}: {e}", tdir.display());
            return 2;
        }
        let db = match store.as_str() {
            "sqlite" => Db {
                url: format!("sqlite://{}", tdir.join("kks.db").display()),
                schema: None,
            },
            _ => {
                let schema = format!(
                    "kks_crash_{}_{n}_{:08x}",
                    std::process::id(),
                    trial_seed as u32
                );
                if let Err(e) = rt.block_on(pg_exec(&pg_base, &format!("CREATE SCHEMA {schema}"))) {
                    eprintln!("kks-sim crash: creating schema {schema}: {e}");
                    return EXIT_UNAVAILABLE;
                }
                Db {
                    url: with_search_path(&pg_base, &schema),
                    schema: Some(schema),
                }
            }
        };
        let t0 = Instant::now();
        let mut t = Trial {
            trial: n,
            seed: trial_seed,
            kill_after_ms,
            ..Trial::default()
        };
        if let Err(e) = run_trial(&rt, &a, &kks, &db, &tdir, &mut t) {
            t.problems.push(e);
        }
        t.passed = t.problems.is_empty()
            && t.lost == 0
            && t.extra == 0
            && t.code_mismatches == 0
            && t.cards_mismatched == 0
            && t.repeat_mismatches == 0
            && t.unresolved == 0
            && t.audit_clean;
        println!(
            "trial {n:>2} ({store}, seed {trial_seed}): killed at {kill_after_ms} ms after {} sent ({} answered, {} approved); restart {} ms; {} resent ({} replayed from the journal); {} approved in all; lost {} extra {} code mismatches {} card mismatches {} repeat mismatches {}/{} unresolved {}; audit {}; {:.1} s: {}",
            t.sent,
            t.answered_before_kill,
            t.approved_before_kill,
            t.restart_ms,
            t.resent,
            t.resent_replayed,
            t.approved,
            t.lost,
            t.extra,
            t.code_mismatches,
            t.cards_mismatched,
            t.repeat_mismatches,
            t.repeats_of_answered,
            t.unresolved,
            if t.audit_clean { "clean" } else { "FAILED" },
            t0.elapsed().as_secs_f64(),
            if t.passed { "ok" } else { "FAILED" }
        );
        for p in &t.problems {
            println!("  {p}");
        }
        if !t.passed {
            any_failed = true;
            match &db.schema {
                Some(schema) => println!("  kept: {} (schema {schema})", tdir.display()),
                None => println!("  kept: {}", tdir.display()),
            }
        } else if !a.keep {
            let _ = std::fs::remove_dir_all(&tdir);
            if let Some(s) = &db.schema {
                if let Err(e) = rt.block_on(pg_exec(
                    &pg_base,
                    &format!("DROP SCHEMA IF EXISTS {s} CASCADE"),
                )) {
                    eprintln!("kks-sim crash: warning: dropping {s}: {e}");
                }
            }
        }
        report.trials.push(t);
    }
    report.passed = !any_failed;
    let sum = |f: fn(&Trial) -> u64| report.trials.iter().map(f).sum::<u64>();
    let restarts: Vec<u64> = report.trials.iter().map(|t| t.restart_ms).collect();
    println!(
        "summary ({store}, seed {seed}): {} trial(s), {} passed; approvals {}, resent {} ({} replayed), lost {}, extra {}, code mismatches {}, card mismatches {}, repeat mismatches {}, unresolved {}; kill after {}..{} ms; restart {}..{} ms",
        report.trials.len(),
        report.trials.iter().filter(|t| t.passed).count(),
        sum(|t| t.approved),
        sum(|t| t.resent),
        sum(|t| t.resent_replayed),
        sum(|t| t.lost),
        sum(|t| t.extra),
        sum(|t| t.code_mismatches),
        sum(|t| t.cards_mismatched),
        sum(|t| t.repeat_mismatches),
        sum(|t| t.unresolved),
        report.trials.iter().map(|t| t.kill_after_ms).min().unwrap_or(0),
        report.trials.iter().map(|t| t.kill_after_ms).max().unwrap_or(0),
        restarts.iter().min().copied().unwrap_or(0),
        restarts.iter().max().copied().unwrap_or(0),
    );
    if let Some(p) = &a.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => {
                if let Err(e) = std::fs::write(p, j) {
                    eprintln!("kks-sim crash: cannot write {}: {e}", p.display());
                }
            }
            Err(e) => eprintln!("kks-sim crash: {e}"),
        }
    }
    if !any_failed && temp && !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if any_failed {
        1
    } else {
        0
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() >> 1
}

struct Db {
    url: String,
    schema: Option<String>,
}

fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

async fn pg_admin(base: &str) -> Result<sqlx::PgPool, String> {
    let connect = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(base);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 10 s".into()),
    }
}

async fn pg_exec(base: &str, sql: &str) -> Result<(), String> {
    let pool = pg_admin(base).await?;
    let r = sqlx::query(sql).execute(&pool).await;
    pool.close().await;
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// Run `kks-switch ARGS` to completion; Err with its output when it fails.
fn kks_run(kks: &Path, args: &[&str]) -> Result<String, String> {
    let o = Process::new(kks)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", kks.display()))?;
    if !o.status.success() {
        return Err(format!(
            "kks-switch {} failed ({}): {} {}",
            args.first().copied().unwrap_or(""),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A running `kks-switch serve`.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Server {
    fn start(kks: &Path, db: &str, log: &Path) -> Result<Server, String> {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Process::new(kks)
            .args(["serve", "--db", db, "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env_remove("KKS_MASTER_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot start serve: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(a) = line.trim().strip_prefix("listening on ") {
                        let _ = tx.send(a.to_string());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => match a.parse() {
                Ok(addr) => Ok(Server { child, addr }),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(format!("serve printed a bad address {a:?}"))
                }
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "serve did not print `listening on` within {START_TIMEOUT:?} (log {})",
                    log.display()
                ))
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded), SIGKILL after that.
    fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = Process::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("serve exited with {st} on SIGTERM"))
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "serve did not stop within {STOP_TIMEOUT:?} of SIGTERM"
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// One request the client made.
#[derive(Clone, Debug)]
pub struct Sent {
    pub kind: Kind,
    pub card: u32,
    pub term: u32,
    pub stan: u32,
    pub de7: [u8; 10],
    pub amount: u64,
    pub bytes: Bytes,
    /// DE39 and DE38 of the answer, when one came.
    pub answer: Option<([u8; 2], [u8; 6])>,
}

fn run_trial(
    rt: &tokio::runtime::Runtime,
    a: &CrashArgs,
    kks: &Path,
    db: &Db,
    dir: &Path,
    t: &mut Trial,
) -> Result<(), String> {
    let pop_dir = dir.join("pop");
    let (pop_s, fam_s, seed_s) = (
        pop_dir.to_string_lossy().into_owned(),
        a.families.to_string(),
        (t.seed % 1_000_000 + 1).to_string(),
    );
    kks_run(
        kks,
        &[
            "seed",
            "--db",
            &db.url,
            "--families",
            &fam_s,
            "--seed",
            &seed_s,
            "--out",
            &pop_s,
        ],
    )?;
    for (program, period) in [("BPNT", "2026-01"), ("PKH", "2026-T1")] {
        let report = dir.join(format!("rejects-{program}.csv"));
        kks_run(
            kks,
            &[
                "disburse",
                "--db",
                &db.url,
                "--program",
                program,
                "--period",
                period,
                "--report",
                &report.to_string_lossy(),
            ],
        )?;
    }
    let baseline = verify::audit(kks, &db.url)?;
    if !baseline.violations.is_empty() {
        return Err(format!("audit before the load: {:?}", baseline.violations));
    }
    let checkpoints = rt.block_on(load_checkpoints(&db.url))?;

    let log = dir.join("serve.log");
    let mut server = Server::start(kks, &db.url, &log)?;
    let mut pop = Population::load(
        &pop_dir.join("cards.csv"),
        &pop_dir.join("terminals.csv"),
        t.seed,
    )?;
    let mix = Mix {
        balance_inquiry: 0.0,
        bpnt_purchase: 60.0,
        pkh_withdrawal: 30.0,
        pkh_purchase: 10.0,
        wrong_pin: 0.0,
        ineligible_share: 0.05,
        retransmit_share: 0.0,
        timeout_share: 0.0,
        respect_enrolment: true,
    };
    let gen = Generator::new(&pop, &mix, t.seed);
    if !gen.possible() {
        return Err("no card can make a purchase or withdrawal".into());
    }
    let n_conn = a.connections;
    let kill_after = Duration::from_millis(t.kill_after_ms);

    // Phase 1: load, SIGKILL.
    let mut sent: Vec<Sent> = Vec::new();
    {
        let addr = server.addr;
        let local = tokio::task::LocalSet::new();
        let mut src = Source::Gen {
            gen: Box::new(gen),
            pop: &mut pop,
            in_flight: a.in_flight,
        };
        let kill: &mut dyn FnMut() = &mut || server.kill();
        local.block_on(
            rt,
            exchange(
                addr,
                n_conn,
                &mut src,
                &mut sent,
                Some((kill_after, kill)),
                LOAD_MAX,
            ),
        )?;
    }
    t.sent = sent.len() as u64;
    t.answered_before_kill = sent.iter().filter(|s| s.answer.is_some()).count() as u64;
    t.approved_before_kill = sent
        .iter()
        .filter(|s| matches!(s.answer, Some((c, _)) if &c == b"00"))
        .count() as u64;
    if t.answered_before_kill == 0 {
        return Err(format!(
            "no answer in {} ms of load: the trial proves nothing (log {})",
            t.kill_after_ms,
            log.display()
        ));
    }
    drop(server);

    // Phase 2: restart, repeat what was unanswered (and a sample of the rest).
    let restart = Instant::now();
    let server = Server::start(kks, &db.url, &log)?;
    t.restart_ms = restart.elapsed().as_millis() as u64;
    let unanswered: Vec<usize> = (0..sent.len())
        .filter(|&i| sent[i].answer.is_none())
        .collect();
    let mut answered: Vec<usize> = (0..sent.len())
        .filter(|&i| sent[i].answer.is_some())
        .collect();
    let mut rng = Rng::new(t.seed ^ 0x5245_5045_4154); // "REPEAT"
    for i in (1..answered.len()).rev() {
        answered.swap(i, rng.below(i as u64 + 1) as usize);
    }
    answered.truncate(ANSWERED_REPEATS_MAX);
    answered.sort_unstable();
    let mut script: Vec<usize> = unanswered.iter().chain(&answered).copied().collect();
    script.sort_unstable();
    let mut repeats: Vec<Sent> = script
        .iter()
        .map(|&i| Sent {
            answer: None,
            ..sent[i].clone()
        })
        .collect();
    {
        let local = tokio::task::LocalSet::new();
        let mut src = Source::Script {
            queue: repeats.clone().into(),
        };
        let mut got = Vec::new();
        local.block_on(
            rt,
            exchange(
                server.addr,
                n_conn,
                &mut src,
                &mut got,
                None,
                RESEND_TIMEOUT,
            ),
        )?;
        repeats = got;
    }
    let by_key: HashMap<(u32, u32), usize> = script
        .iter()
        .map(|&i| ((sent[i].term, sent[i].stan), i))
        .collect();
    for r in &repeats {
        let Some(&i) = by_key.get(&(r.term, r.stan)) else {
            t.problems.push("a repeat matched no request".into());
            continue;
        };
        match (sent[i].answer, r.answer) {
            (None, Some(ans)) => {
                t.resent += 1;
                sent[i].answer = Some(ans);
            }
            (None, None) => {
                t.resent += 1;
                t.unresolved += 1;
            }
            (Some(first), again) => {
                t.repeats_of_answered += 1;
                if again != Some(first) {
                    t.repeat_mismatches += 1;
                    if t.problems.len() < 10 {
                        t.problems.push(format!(
                            "repeat of an answered request (terminal #{}, STAN {}): first {:?}, again {:?}",
                            r.term,
                            r.stan,
                            show(Some(first)),
                            show(again)
                        ));
                    }
                }
            }
        }
    }
    server.stop()?;
    t.approved = sent
        .iter()
        .filter(|s| matches!(s.answer, Some((c, _)) if &c == b"00"))
        .count() as u64;

    // Phase 3: compare with the journal and the audit.
    let journal = rt.block_on(read_journal(&db.url, &checkpoints))?;
    let tids: Vec<[u8; 8]> = pop.terminals.iter().map(|x| x.tid).collect();
    let cmp = compare(&sent, &tids, &journal);
    t.lost = cmp.lost;
    t.extra = cmp.extra;
    t.code_mismatches = cmp.code_mismatches;
    t.resent_replayed = unanswered
        .iter()
        .filter(|&&i| {
            let s = &sent[i];
            journal
                .get(&(tids[s.term as usize], s.stan, s.de7))
                .is_some_and(|j| j.replays > 0)
        })
        .count() as u64;
    t.problems.extend(cmp.problems);
    let after = verify::audit(kks, &db.url)?;
    t.audit_clean = after.violations.is_empty();
    for v in after.violations.iter().take(10) {
        t.problems.push(format!("audit: {v}"));
    }
    let mut seen: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for s in &sent {
        if matches!(s.answer, Some((c, _)) if &c == b"00") {
            let e = seen
                .entry(pop.cards[s.card as usize].pan.as_str())
                .or_default();
            if s.kind.is_withdrawal() {
                e.1 += s.amount;
            } else {
                e.0 += s.amount;
            }
        }
    }
    let zero = crate::stats::LedgerFigures::default();
    for (pan, f) in &after.cards {
        let b = baseline.cards.get(pan).unwrap_or(&zero);
        let dp = f.purchases.saturating_sub(b.purchases);
        let dw = f.withdrawals.saturating_sub(b.withdrawals);
        let dr = f.reversed.saturating_sub(b.reversed);
        let (sp, sw) = seen.remove(pan.as_str()).unwrap_or((0, 0));
        if (dp, dw, dr) != (sp, sw, 0) {
            t.cards_mismatched += 1;
            if t.problems.len() < 20 {
                t.problems.push(format!(
                    "{}: ledger purchases {dp} withdrawals {dw} reversed {dr}, approved seen {sp} / {sw}",
                    kks_switch::pan::mask_pan(pan)
                ));
            }
        }
    }
    // Approvals on cards the audit does not list.
    t.cards_mismatched += seen.len() as u64;
    Ok(())
}

fn show(a: Option<([u8; 2], [u8; 6])>) -> String {
    match a {
        Some((c, ap)) => format!(
            "{} {}",
            String::from_utf8_lossy(&c),
            String::from_utf8_lossy(&ap).trim()
        ),
        None => "no answer".into(),
    }
}

/// Every bank's checkpoint before the load: (bank, batch, snapshot bytes).
type Checkpoints = Vec<(u16, u64, Vec<u8>)>;

async fn load_checkpoints(url: &str) -> Result<Checkpoints, String> {
    let store = Store::open(url).await.map_err(|e| e.to_string())?;
    let cfg = kks_switch::config::Config::default();
    let configs = kks_switch::service::ledger_configs(&cfg).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for c in configs {
        let bank = c.bank.0;
        match store
            .load_checkpoint(bank)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(cp) => out.push((bank, cp.batch, cp.body)),
            None => {
                let snap =
                    postcard::to_stdvec(&Ledger::new(c).snapshot()).map_err(|e| e.to_string())?;
                out.push((bank, 0, snap));
            }
        }
    }
    store.close().await;
    Ok(out)
}

/// What the journal says about one purchase/withdrawal key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journaled {
    /// DE39 of the first application.
    pub code: String,
    /// Applications that were not replays (1 for every key; 2+ is a bug).
    pub applied: u32,
    /// Applications answered from the key store (a repeat).
    pub replays: u32,
}

/// Key of a client request as the journal spells it: terminal, STAN, DE7.
pub type ReqKey = ([u8; 8], u32, [u8; 10]);

/// Replay every bank's journal after the checkpoint of step 1 and collect
/// the purchase and withdrawal keys with their outcomes.
async fn read_journal(
    url: &str,
    checkpoints: &Checkpoints,
) -> Result<HashMap<ReqKey, Journaled>, String> {
    let store = Store::open(url).await.map_err(|e| e.to_string())?;
    let mut out: HashMap<ReqKey, Journaled> = HashMap::new();
    for (bank, batch, body) in checkpoints {
        let snap = Snapshot::decode(body).map_err(|e| format!("bank {bank}: checkpoint: {e}"))?;
        let mut ledger =
            Ledger::restore(snap).map_err(|e| format!("bank {bank}: checkpoint: {e}"))?;
        let mut fx = Effects::with_capacity(1024);
        let mut next = batch + 1;
        loop {
            let page = store
                .batches_from(*bank, next, 512)
                .await
                .map_err(|e| e.to_string())?;
            if page.is_empty() {
                break;
            }
            for b in page {
                if b.batch != next {
                    return Err(format!("bank {bank}: journal gap at batch {next}"));
                }
                next += 1;
                let cmds = decode_commands(&b.commands)
                    .map_err(|e| format!("bank {bank} batch {}: {e}", b.batch))?;
                fx.clear();
                ledger.apply(&cmds, b.ts, &mut fx);
                for (i, cmd) in cmds.iter().enumerate() {
                    let (Command::Purchase(p) | Command::Withdrawal(p)) = cmd else {
                        continue;
                    };
                    let Some(k) = parse_key(p.request.key.as_bytes()) else {
                        continue;
                    };
                    let o = &fx.outcomes[i];
                    let e = out.entry(k).or_default();
                    if o.replayed {
                        e.replays += 1;
                    } else {
                        if e.applied == 0 {
                            e.code = de39(o).to_string();
                        }
                        e.applied += 1;
                    }
                }
            }
        }
        if let Err(e) = ledger.check_invariants() {
            return Err(format!("bank {bank}: replayed ledger: {e}"));
        }
    }
    store.close().await;
    Ok(out)
}

/// Terminal, STAN and DE7 of an ISO key (INTERFACE §5: class 3 + DE32 11 +
/// DE41 8 + DE11 6 + DE7 10).
fn parse_key(k: &[u8]) -> Option<ReqKey> {
    if k.len() < 38 || &k[..3] != b"020" {
        return None;
    }
    let tid: [u8; 8] = k[14..22].try_into().ok()?;
    let stan = std::str::from_utf8(&k[22..28]).ok()?.parse().ok()?;
    let de7: [u8; 10] = k[28..38].try_into().ok()?;
    Some((tid, stan, de7))
}

/// The verdict of one trial.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub lost: u64,
    pub extra: u64,
    pub code_mismatches: u64,
    pub problems: Vec<String>,
}

/// Requests (with their final answers) against the journal.
pub fn compare(
    sent: &[Sent],
    tids: &[[u8; 8]],
    journal: &HashMap<ReqKey, Journaled>,
) -> Comparison {
    let mut c = Comparison::default();
    let note = |c: &mut Comparison, s: String| {
        if c.problems.len() < 20 {
            c.problems.push(s);
        }
    };
    let mut mine: HashMap<ReqKey, usize> = HashMap::with_capacity(sent.len());
    for (i, s) in sent.iter().enumerate() {
        let k = (tids[s.term as usize], s.stan, s.de7);
        mine.insert(k, i);
        let j = journal.get(&k);
        let approved = matches!(s.answer, Some((a, _)) if &a == b"00");
        match (approved, j) {
            (true, Some(j)) if j.applied == 1 && j.code == "00" => {}
            (true, j) => {
                c.lost += 1;
                note(
                    &mut c,
                    format!(
                        "LOST: terminal #{} STAN {} approved but the journal has {j:?}",
                        s.term, s.stan
                    ),
                );
            }
            (false, Some(j)) if j.code == "00" => {
                c.extra += 1;
                note(
                    &mut c,
                    format!(
                        "EXTRA: terminal #{} STAN {} answered {} but applied {j:?}",
                        s.term,
                        s.stan,
                        show(s.answer)
                    ),
                );
            }
            _ => {}
        }
        if let (Some((a, _)), Some(j)) = (s.answer, j) {
            if j.code.as_bytes() != a {
                c.code_mismatches += 1;
                note(
                    &mut c,
                    format!(
                        "terminal #{} STAN {} answered {} but the journal says {}",
                        s.term,
                        s.stan,
                        String::from_utf8_lossy(&a),
                        j.code
                    ),
                );
            }
        }
        if let Some(j) = j {
            if j.applied > 1 {
                c.extra += (j.applied - 1) as u64;
                note(
                    &mut c,
                    format!(
                        "EXTRA: terminal #{} STAN {} applied {} times",
                        s.term, s.stan, j.applied
                    ),
                );
            }
        }
    }
    for (k, j) in journal {
        if !mine.contains_key(k) && j.code == "00" {
            c.extra += j.applied as u64;
            note(
                &mut c,
                format!("EXTRA: applied {j:?} under a key the client never sent"),
            );
        }
    }
    c
}

/// Where requests come from.
enum Source<'a> {
    /// The seeded stream, keeping `in_flight` requests outstanding.
    Gen {
        gen: Box<Generator>,
        pop: &'a mut Population,
        in_flight: usize,
    },
    /// Fixed requests, all sent at once (pipelined).
    Script {
        queue: std::collections::VecDeque<Sent>,
    },
}

struct Conn {
    out: BytesMut,
    notify: Rc<Notify>,
    alive: bool,
}

struct Shared {
    conns: Vec<Conn>,
    /// (terminal, STAN) → index in `sent` of requests awaiting an answer.
    pending: HashMap<(u32, u32), usize>,
    /// Answers: (index, DE39, DE38).
    answers: Vec<(usize, [u8; 2], [u8; 6])>,
    tid_index: HashMap<[u8; 8], u32>,
    unmatched: u64,
}

/// Send requests over `n` connections to `addr`, pipelined, and collect
/// answers into `sent`. With `kill`: call it once `after` has passed since
/// the start, then read what is left in the sockets until they close. Ends
/// when nothing is outstanding (script), all connections are gone, or `max`.
async fn exchange(
    addr: std::net::SocketAddr,
    n: usize,
    src: &mut Source<'_>,
    sent: &mut Vec<Sent>,
    mut kill: Option<(Duration, &mut dyn FnMut())>,
    max: Duration,
) -> Result<(), String> {
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connection {i} to {addr}: timed out"))?
            .map_err(|e| format!("connection {i} to {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        streams.push(s);
    }
    let tid_index = match src {
        Source::Gen { pop, .. } => pop.tid_index.clone(),
        Source::Script { .. } => HashMap::new(),
    };
    let st = Rc::new(RefCell::new(Shared {
        conns: (0..n)
            .map(|_| Conn {
                out: BytesMut::new(),
                notify: Rc::new(Notify::new()),
                alive: true,
            })
            .collect(),
        pending: HashMap::new(),
        answers: Vec::new(),
        tid_index,
        unmatched: 0,
    }));
    // For scripts, terminals are found by the TID in the answer: build the
    // index from the requests themselves (TID is at a fixed place? no: keep
    // the request's terminal number and match on (term, STAN) via DE41).
    if let Source::Script { queue } = src {
        let mut g = st.borrow_mut();
        for r in queue.iter() {
            if let Some(tid) = tid_of(&r.bytes) {
                g.tid_index.insert(tid, r.term);
            }
        }
    }
    let mut tasks = Vec::new();
    for (ci, s) in streams.into_iter().enumerate() {
        let (mut rd, mut wr) = s.into_split();
        let st2 = st.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                buf.reserve(64 * 1024);
                let r = rd.read_buf(&mut buf).await;
                let mut g = st2.borrow_mut();
                match r {
                    Ok(0) | Err(_) => {
                        g.conns[ci].alive = false;
                        g.conns[ci].notify.notify_one();
                        return;
                    }
                    Ok(_) => {}
                }
                let mut off = 0;
                loop {
                    match frame_length(Framing::TwoByte, &buf[off..], FRAME_BYTES_MAX) {
                        Ok(Some(len)) if buf.len() - off >= 2 + len => {
                            on_frame(&mut g, &buf[off + 2..off + 2 + len]);
                            off += 2 + len;
                        }
                        Ok(_) => break,
                        Err(_) => {
                            g.conns[ci].alive = false;
                            return;
                        }
                    }
                }
                buf.advance(off);
            }
        }));
        let st2 = st.clone();
        let notify = st.borrow().conns[ci].notify.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut spare = BytesMut::new();
            loop {
                notify.notified().await;
                {
                    let mut g = st2.borrow_mut();
                    if !g.conns[ci].alive {
                        return;
                    }
                    std::mem::swap(&mut g.conns[ci].out, &mut spare);
                }
                if spare.is_empty() {
                    continue;
                }
                if wr.write_all(&spare).await.is_err() {
                    st2.borrow_mut().conns[ci].alive = false;
                    return;
                }
                spare.clear();
            }
        }));
    }

    let start = Instant::now();
    let unix_start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut killed: Option<Instant> = None;
    let mut buf = BytesMut::new();
    loop {
        let now = start.elapsed();
        {
            let mut g = st.borrow_mut();
            for (i, code, ap) in g.answers.drain(..) {
                sent[i].answer = Some((code, ap));
            }
            if killed.is_none() {
                match src {
                    Source::Gen {
                        gen,
                        pop,
                        in_flight,
                    } => {
                        while g.pending.len() < *in_flight {
                            let secs = (unix_start_ms + now.as_millis() as u64) / 1000;
                            let req = gen.next(pop, de7_at(secs));
                            let ci = req.card as usize % n;
                            if !g.conns[ci].alive {
                                break;
                            }
                            buf.clear();
                            encode_0200(&req, pop, &mut buf);
                            let bytes = buf.split().freeze();
                            g.conns[ci].out.extend_from_slice(&bytes);
                            let idx = sent.len();
                            if g.pending.insert((req.term, req.stan), idx).is_some() {
                                return Err(
                                    "two requests in flight with one terminal and STAN".into()
                                );
                            }
                            sent.push(Sent {
                                kind: req.kind,
                                card: req.card,
                                term: req.term,
                                stan: req.stan,
                                de7: req.de7,
                                amount: req.amount,
                                bytes,
                                answer: None,
                            });
                        }
                    }
                    Source::Script { queue } => {
                        while let Some(r) = queue.pop_front() {
                            let ci = r.card as usize % n;
                            g.conns[ci].out.extend_from_slice(&r.bytes);
                            let idx = sent.len();
                            g.pending.insert((r.term, r.stan), idx);
                            sent.push(r);
                        }
                    }
                }
            }
            for c in &g.conns {
                if !c.out.is_empty() {
                    c.notify.notify_one();
                }
            }
            let all_dead = g.conns.iter().all(|c| !c.alive);
            let script_done = matches!(src, Source::Script { queue } if queue.is_empty())
                && g.pending.is_empty()
                && g.answers.is_empty();
            if all_dead || script_done {
                break;
            }
            if let Some(k) = killed {
                // Whatever the dead process had written has arrived by now.
                if k.elapsed() > Duration::from_secs(10) {
                    break;
                }
            }
        }
        if let Some((after, f)) = kill.as_mut() {
            if killed.is_none() && now >= *after {
                f();
                killed = Some(Instant::now());
            }
        }
        if now >= max {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    {
        let mut g = st.borrow_mut();
        for (i, code, ap) in g.answers.drain(..) {
            sent[i].answer = Some((code, ap));
        }
        if g.unmatched > 0 {
            return Err(format!("{} answers matched no request", g.unmatched));
        }
        for c in &mut g.conns {
            c.alive = false;
            c.notify.notify_one();
        }
    }
    for t in tasks {
        t.abort();
    }
    if kill.is_some() && killed.is_none() {
        return Err(format!("the load ended before the kill (after {max:?})"));
    }
    Ok(())
}

/// DE41 of a framed request (2-byte header).
fn tid_of(framed: &[u8]) -> Option<[u8; 8]> {
    let m = Message::decode(framed.get(2..)?).ok()?;
    m.get(41).and_then(|t| <[u8; 8]>::try_from(t).ok())
}

fn on_frame(g: &mut Shared, bytes: &[u8]) {
    let Ok(m) = Message::decode(bytes) else {
        g.unmatched += 1;
        return;
    };
    let Some(a) = read_answer(&m) else {
        g.unmatched += 1;
        return;
    };
    let term = a.tid.and_then(|t| g.tid_index.get(&t).copied());
    let Some(i) = term.and_then(|t| g.pending.remove(&(t, a.stan))) else {
        g.unmatched += 1;
        return;
    };
    g.answers.push((i, a.code, a.approval));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse() {
        let mut k = Vec::new();
        k.extend_from_slice(b"020");
        k.extend_from_slice(b"00000000002");
        k.extend_from_slice(b"TERM0001");
        k.extend_from_slice(b"000042");
        k.extend_from_slice(b"1125223344");
        assert_eq!(parse_key(&k), Some((*b"TERM0001", 42, *b"1125223344")));
        k[0] = b'1';
        assert_eq!(parse_key(&k), None);
        assert_eq!(parse_key(b"PKH:2026-T1:1"), None);
    }

    fn req(term: u32, stan: u32, code: Option<&[u8; 2]>) -> Sent {
        Sent {
            kind: Kind::BpntPurchase,
            card: 0,
            term,
            stan,
            de7: *b"1125000000",
            amount: 100,
            bytes: Bytes::new(),
            answer: code.map(|c| (*c, *b"123456")),
        }
    }

    fn j(code: &str, applied: u32, replays: u32) -> Journaled {
        Journaled {
            code: code.into(),
            applied,
            replays,
        }
    }

    #[test]
    fn comparison_counts_lost_and_extra() {
        let tids = [*b"TERM0000", *b"TERM0001"];
        let k = |t: usize, s: u32| (tids[t], s, *b"1125000000");
        let sent = vec![
            req(0, 1, Some(b"00")),
            req(0, 2, Some(b"51")),
            req(1, 1, Some(b"00")),
        ];
        let mut jr = HashMap::new();
        jr.insert(k(0, 1), j("00", 1, 1));
        jr.insert(k(0, 2), j("51", 1, 0));
        jr.insert(k(1, 1), j("00", 1, 0));
        assert_eq!(compare(&sent, &tids, &jr), Comparison::default());
        // An approval missing from the journal is lost.
        let mut lost = jr.clone();
        lost.remove(&k(1, 1));
        let c = compare(&sent, &tids, &lost);
        assert_eq!((c.lost, c.extra), (1, 0));
        // Applied twice: extra.
        let mut twice = jr.clone();
        twice.insert(k(1, 1), j("00", 2, 0));
        let c = compare(&sent, &tids, &twice);
        assert_eq!((c.lost, c.extra), (1, 1));
        // Applied although the client saw a decline, or never sent it.
        let mut extra = jr.clone();
        extra.insert(k(0, 2), j("00", 1, 0));
        extra.insert(k(1, 9), j("00", 1, 0));
        let c = compare(&sent, &tids, &extra);
        assert_eq!((c.lost, c.extra, c.code_mismatches), (0, 2, 1));
        // An unanswered request applied is extra too (never resolved).
        let mut s2 = sent.clone();
        s2[2].answer = None;
        let c = compare(&s2, &tids, &jr);
        assert_eq!((c.lost, c.extra), (0, 1));
    }
}
