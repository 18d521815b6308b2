//! The crash test of issue 3 item 6, on SQLite and PostgreSQL.
//!
//! Each trial, on a fresh database: run `kks-switch drill --acks` (the real
//! shard and storage path in its own process, 32 concurrent submitters),
//! read its `ACK <bank> <key> <code>` lines for a random 300–1500 ms after
//! `READY`, then SIGKILL it mid-load. Then prove:
//!
//! (a) `kks-switch audit` exits 0 on what the killed process left;
//! (b) every acknowledged key is in the command journal, and replaying the
//!     journal gives it the acknowledged code; acknowledged purchases and
//!     withdrawals (00) have their postings;
//! (c) nothing is half-applied: replaying every journaled batch from an empty
//!     ledger produces exactly the posting rows stored for that batch (no
//!     batch without its postings, no postings without their batch), and the
//!     ledger recovered from checkpoint + journal equals that full replay;
//! (d) the store is usable: a second short drill runs and exits cleanly and
//!     the audit is still clean.
//!
//! Lines read after the kill count as acknowledged if they are complete
//! (newline-terminated): the drill writes a line only after the answer,
//! and the answer only after its batch is durable.
//!
//! The seed is printed; `KKS_CRASH_SEED=<n>` repeats a run's kill times.

mod common;

use common::db::{self, Backend, TestDb};
use kks_switch::audit::audit;
use kks_switch::drill::bank_configs;
use kks_switch::ledger::{Command, Effects, Ledger};
use kks_switch::shard::{decode_commands, recover};
use kks_switch::storage::{Store, StoredPosting};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TRIALS: u64 = 3;
const CARDS: &str = "200";
const WORKERS: &str = "32";
/// The drills checkpoint every few batches and write each checkpoint in
/// small pieces between group commits, so a kill lands in the middle of a
/// checkpoint being written about as often as not.
const CONFIG: &str = "[shards]\ncheckpoint_every_batches = 4\ncheckpoint_chunk_bytes = 4096\ncheckpoint_piece_interval_ms = 0\n";

/// [`CONFIG`] in a file that lives as long as the returned handle.
fn config_file() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("config file");
    std::io::Write::write_all(&mut f, CONFIG.as_bytes()).expect("write config");
    f
}

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

#[test]
fn crash_sqlite() {
    crash_trials(Backend::Sqlite);
}

#[test]
fn crash_postgres() {
    crash_trials(Backend::Postgres);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn crash_trials(backend: Backend) {
    let started = Instant::now();
    let rt = runtime();
    let seed = std::env::var("KKS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(db::random_u64);
    eprintln!("crash test ({backend:?}): seed {seed} (KKS_CRASH_SEED={seed} repeats it)");
    let mut rng = Rng::new(seed);
    for trial in 0..TRIALS {
        let Some(db) = rt.block_on(db::fresh(backend)) else {
            return;
        };
        let kill_after = Duration::from_millis(300 + rng.below(1201));
        let drill_seed = rng.next() >> 1;
        run_trial(&rt, &db, trial, kill_after, drill_seed);
    }
    eprintln!(
        "crash test ({backend:?}): {TRIALS} trials in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// One `ACK <bank> <key> <code>` line.
#[derive(Debug, Clone)]
struct Ack {
    bank: u16,
    key: String,
    code: String,
}

fn parse_ack(line: &str) -> Ack {
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        ["ACK", bank, key, code] => Ack {
            bank: bank
                .parse()
                .unwrap_or_else(|_| panic!("bad bank in {line:?}")),
            key: key.to_string(),
            code: code.to_string(),
        },
        _ => panic!("unexpected drill output line {line:?}"),
    }
}

/// Collects a child's stderr (last 64 KiB) for failure messages.
fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        let from = buf.len().saturating_sub(65_536);
        String::from_utf8_lossy(&buf[from..]).into_owned()
    })
}

/// Reads complete lines from the child's stdout into a channel; a final
/// line without its newline (cut by the kill) is not sent.
fn read_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) if buf.last() != Some(&b'\n') => break,
                Ok(_) => {
                    buf.pop();
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill(); // SIGKILL on unix
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => panic!("drill did not die within 20 s of SIGKILL"),
        }
    }
}

fn run_trial(
    rt: &tokio::runtime::Runtime,
    db: &TestDb,
    trial: u64,
    kill_after: Duration,
    drill_seed: u64,
) {
    let t0 = Instant::now();
    let label = format!("trial {trial} ({})", db.label());
    let config = config_file();
    let config_path = config.path().to_str().expect("utf-8 path").to_owned();
    let mut child = Process::new(env!("CARGO_BIN_EXE_kks-switch"))
        .args([
            "--config",
            &config_path,
            "--db",
            &db.url,
            "drill",
            "--cards",
            CARDS,
            "--seconds",
            "30",
            "--workers",
            WORKERS,
            "--acks",
            "--seed",
            &drill_seed.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kks-switch drill");
    let stderr = collect_stderr(&mut child);
    let lines = read_lines(&mut child);

    // READY, within a bound.
    match lines.recv_timeout(Duration::from_secs(60)) {
        Ok(l) if l == "READY" => {}
        Ok(l) => panic!("{label}: unexpected line before READY: {l:?}"),
        Err(e) => {
            kill_and_reap(&mut child);
            let err = stderr.join().unwrap_or_default();
            panic!("{label}: no READY within 60 s ({e:?}); stderr:\n{err}");
        }
    }
    let ready_at = t0.elapsed();

    // ACKs for `kill_after`, then SIGKILL.
    let mut acks = Vec::new();
    let kill_at = Instant::now() + kill_after;
    loop {
        let left = kill_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match lines.recv_timeout(left) {
            Ok(l) => acks.push(parse_ack(&l)),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let err = stderr.join().unwrap_or_default();
                panic!("{label}: drill stopped before the kill; stderr:\n{err}");
            }
        }
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "{label}: drill exited before the kill"
    );
    let before_kill = acks.len();
    kill_and_reap(&mut child);
    // Complete lines written before death still count.
    loop {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => acks.push(parse_ack(&l)),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{label}: stdout not closed 10 s after the kill")
            }
        }
    }
    let stderr_text = stderr.join().unwrap_or_default();
    let approved = acks.iter().filter(|a| a.code == "00").count();
    eprintln!(
        "{label}: READY after {:.2} s, killed after {} ms: {} ACKs ({} read after the kill), {} with 00",
        ready_at.as_secs_f64(),
        kill_after.as_millis(),
        acks.len(),
        acks.len() - before_kill,
        approved
    );
    assert!(
        !acks.is_empty(),
        "{label}: no ACK in {} ms of load; the test proves nothing. stderr:\n{stderr_text}",
        kill_after.as_millis()
    );

    // (a) the CLI audit of what the crash left.
    let (code, out, err) = db::run_cli(&["--db", &db.url, "audit"], Duration::from_secs(120));
    assert_eq!(
        code,
        Some(0),
        "{label}: audit after SIGKILL failed:\n{out}\n{err}\ndrill stderr:\n{stderr_text}"
    );

    // (b) + (c) from the journal itself.
    let journal = rt.block_on(verify_journal(&db.url, &label));
    for a in &acks {
        let e = journal
            .get(&(a.bank, a.key.clone()))
            .unwrap_or_else(|| panic!("{label}: acknowledged {a:?} is not in the journal"));
        assert_eq!(
            e.de39, a.code,
            "{label}: {a:?} acknowledged with {} but the journal replays to {}",
            a.code, e.de39
        );
        if a.code == "00" && e.payment {
            assert!(
                e.postings > 0,
                "{label}: acknowledged payment {a:?} has no postings"
            );
        }
    }
    let acked: std::collections::HashSet<(u16, &str)> =
        acks.iter().map(|a| (a.bank, a.key.as_str())).collect();
    let drill_keys = journal
        .keys()
        .filter(|(_, k)| k.starts_with("drill:"))
        .count();
    let unacked = journal
        .keys()
        .filter(|(b, k)| k.starts_with("drill:") && !acked.contains(&(*b, k.as_str())))
        .count();
    eprintln!(
        "{label}: journal holds {drill_keys} drill keys, {unacked} of them never acknowledged (in flight at the kill)"
    );

    // (d) usable after the crash: another short drill, then audit.
    let (code, out, err) = db::run_cli(
        &[
            "--config",
            &config_path,
            "--db",
            &db.url,
            "drill",
            "--cards",
            CARDS,
            "--seconds",
            "1",
            "--workers",
            "8",
            "--seed",
            &(drill_seed ^ 1).to_string(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        code,
        Some(0),
        "{label}: drill after the crash failed:\n{out}\n{err}"
    );
    let (code, out, err) = db::run_cli(&["--db", &db.url, "audit"], Duration::from_secs(120));
    assert_eq!(
        code,
        Some(0),
        "{label}: audit after the second drill:\n{out}\n{err}"
    );
    let after = rt.block_on(verify_journal(&db.url, &label));
    for a in &acks {
        assert!(
            after.contains_key(&(a.bank, a.key.clone())),
            "{label}: {a:?} lost after the second run"
        );
    }
    assert!(
        after.len() > journal.len(),
        "{label}: the second drill journaled nothing"
    );
    eprintln!("{label}: done in {:.1} s", t0.elapsed().as_secs_f64());
}

/// What the journal says about one key (its first occurrence).
#[derive(Debug)]
struct Journaled {
    de39: String,
    /// A purchase or withdrawal.
    payment: bool,
    /// Postings the command made.
    postings: usize,
}

type Row = (u64, u32, u64, u64, u64, i16);

fn row(p: &StoredPosting) -> Row {
    (p.id, p.cmd, p.debit, p.credit, p.amount, p.kind)
}

/// Replay every bank's journal from an empty ledger, check each batch's
/// stored postings against the replay's, check checkpoint + journal recovery
/// against it, and run the library audit. Returns every keyed command.
async fn verify_journal(url: &str, label: &str) -> HashMap<(u16, String), Journaled> {
    let store = tokio::time::timeout(Duration::from_secs(30), Store::open(url))
        .await
        .expect("store opened within 30 s")
        .expect("open store");
    let work = async {
        let mut keys = HashMap::new();
        for config in bank_configs() {
            let bank = config.bank.0;
            let mut by_batch: BTreeMap<u64, Vec<Row>> = BTreeMap::new();
            for p in store.postings_from(bank, 0).await.expect("postings") {
                by_batch.entry(p.batch).or_default().push(row(&p));
            }
            let mut ledger = Ledger::new(config);
            let mut fx = Effects::with_capacity(1024);
            let mut next = 1u64;
            loop {
                let page = store.batches_from(bank, next, 512).await.expect("batches");
                if page.is_empty() {
                    break;
                }
                for b in page {
                    assert_eq!(b.batch, next, "{label}: bank {bank}: journal gap");
                    next += 1;
                    let cmds = decode_commands(&b.commands)
                        .unwrap_or_else(|e| panic!("{label}: bank {bank} batch {}: {e}", b.batch));
                    ledger.apply(&cmds, b.ts, &mut fx);
                    let replayed: Vec<Row> = fx
                        .postings
                        .iter()
                        .map(|p| {
                            (
                                p.id,
                                p.command,
                                p.debit.0 as u64,
                                p.credit.0 as u64,
                                p.amount,
                                p.kind as i16,
                            )
                        })
                        .collect();
                    let stored = by_batch.remove(&b.batch).unwrap_or_default();
                    assert!(
                        stored == replayed,
                        "{label}: bank {bank} batch {}: {} postings stored, replay makes {} (half-applied batch)",
                        b.batch,
                        stored.len(),
                        replayed.len()
                    );
                    for (i, cmd) in cmds.iter().enumerate() {
                        let Some(k) = cmd.key() else { continue };
                        let o = &fx.outcomes[i];
                        keys.entry((bank, String::from_utf8_lossy(k.as_bytes()).into_owned()))
                            .or_insert(Journaled {
                                de39: o.reply.code.de39().to_string(),
                                payment: matches!(
                                    cmd,
                                    Command::Purchase(_) | Command::Withdrawal(_)
                                ),
                                postings: o.postings.len as usize,
                            });
                    }
                }
            }
            assert!(
                by_batch.is_empty(),
                "{label}: bank {bank}: postings of batches {:?} that are not in the journal",
                by_batch.keys().collect::<Vec<_>>()
            );
            if let Err(e) = ledger.check_invariants() {
                panic!("{label}: bank {bank}: replayed ledger: {e}");
            }
            let (recovered, _) = recover(&store, config)
                .await
                .unwrap_or_else(|e| panic!("{label}: bank {bank}: recover: {e}"));
            assert!(
                recovered.snapshot() == ledger.snapshot(),
                "{label}: bank {bank}: checkpoint + journal recovery differs from a full replay"
            );
        }
        let report = audit(&store, &bank_configs(), false).await.expect("audit");
        assert!(report.ok(), "{label}: audit: {:#?}", report.violations);
        keys
    };
    let keys = tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .unwrap_or_else(|_| panic!("{label}: journal check took over 120 s"));
    store.close().await;
    keys
}
