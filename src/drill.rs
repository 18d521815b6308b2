//! `kks-switch drill`: drives the real shard and storage path (no wire) with
//! synthetic money movements. Two uses:
//!
//! - the crash test: `--mode requests` submits one request at a time per
//!   worker, like terminals do, and prints `ACK <bank> <key> <code>` on
//!   standard output for every answer it received, *after* the answer (which
//!   is only released once durable). A test kills the process with SIGKILL
//!   mid-load, restarts it, and checks every acknowledged key in the journal.
//! - the durable-commit bench: `--mode bulk` submits runs of commands
//!   (like a disbursement wave), so the figure is the commit path's, not the
//!   per-request channel overhead's.
//!
//! The population is opened on first run: `--cards` per bank, each card
//! credited Rp600.000 BPNT and Rp750.000 PKH, one e-Warong and one agent per
//! bank.

use crate::ledger::{
    Acceptor, BankCode, CardRef, CardStatus, Code, Command, Credit, FamilyId, Fingerprint,
    LedgerConfig, MerchantId, Pan, Payment, Precheck, Program, Pvv, Request, RequestKey, Reversal,
    TerminalKind,
};
use crate::pan::{luhn_check_digit, Bank};
use crate::shard::{ShardConfig, Shards};
use crate::storage::Store;
use hdrhistogram::Histogram;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the drill submits work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One request at a time per worker, acknowledged on stdout.
    Requests,
    /// Runs of `batch_size_max` commands per submission.
    Bulk,
}

/// Drill parameters.
#[derive(Clone, Debug)]
pub struct DrillConfig {
    pub cards_per_bank: u32,
    pub seconds: f64,
    pub workers: usize,
    pub mode: Mode,
    pub seed: u64,
    pub print_acks: bool,
    /// Commands prepared for bulk mode (the run ends when they are done or
    /// `seconds` pass).
    pub bulk_commands: u64,
}

/// The five banks' ledger configurations with default rules.
pub fn bank_configs() -> Vec<LedgerConfig> {
    Bank::ALL
        .iter()
        .map(|b| LedgerConfig::new(BankCode(b.code_number())))
        .collect()
}

/// Test PAN `i` of a bank: BIN + 9-digit index + Luhn digit.
pub fn test_pan(bank: Bank, i: u32) -> Pan {
    let mut digits = format!("{}{:09}", bank.test_bin(), i).into_bytes();
    let check = luhn_check_digit(&digits);
    digits.push(check);
    Pan::from_digits(&digits).expect("a 16-digit test PAN always parses")
}

/// The drill's PIN verification value (the drill's cards all share it).
pub const DRILL_PVV: Pvv = Pvv([7u8; 32]);

fn merchant(kind: &str, bank: Bank) -> MerchantId {
    MerchantId::new(format!("DRILL{kind}{}", bank.code()).as_bytes())
        .unwrap_or_else(|| MerchantId::new(b"DRILL").expect("short id"))
}

fn key(parts: &str) -> RequestKey {
    RequestKey::new(parts.as_bytes())
        .unwrap_or_else(|| RequestKey::new(b"drill:overlong").expect("short key"))
}

/// Open the population (idempotent: opening twice answers AlreadyExists).
pub async fn open_population(
    shards: &Shards,
    cards_per_bank: u32,
) -> Result<(), crate::shard::Unavailable> {
    for bank in Bank::ALL {
        let code = BankCode(bank.code_number());
        let mut cmds = vec![
            Command::OpenTerminalAccount {
                merchant: merchant("EW", bank),
                kind: TerminalKind::Ewarong,
            },
            Command::OpenTerminalAccount {
                merchant: merchant("AG", bank),
                kind: TerminalKind::Agent,
            },
        ];
        for i in 0..cards_per_bank {
            cmds.push(Command::OpenCard {
                pan: test_pan(bank, i),
                family: FamilyId(bank.code_number() as u64 * 1_000_000_000 + i as u64),
                pvv: DRILL_PVV,
                status: CardStatus::Active,
            });
        }
        for i in 0..cards_per_bank {
            for (program, amount) in [
                (Program::Bpnt, 60_000_000u64),
                (Program::Pkh, 75_000_000u64),
            ] {
                cmds.push(Command::Credit(Credit {
                    request: Request {
                        key: key(&format!("drill-credit:{program:?}:{}:{i}", bank.code())),
                        fingerprint: Fingerprint::ZERO,
                    },
                    program,
                    card: CardRef::Pan(test_pan(bank, i)),
                    amount,
                }));
            }
        }
        shards.execute_many(code, cmds, 4).await?;
    }
    Ok(())
}

/// Small deterministic generator (xorshift64*), so a seed gives a stream.
struct Rng(u64);
impl Rng {
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

/// A random money movement (purchase, withdrawal, or a reversal of the
/// worker's previous request), keyed uniquely for this run.
fn movement(
    rng: &mut Rng,
    run: u64,
    worker: usize,
    seq: u64,
    pans: &[Vec<Pan>],
    prev: Option<(RequestKey, Pan, u64, Bank)>,
) -> (Bank, Command, RequestKey) {
    let mut buf = [0u8; 47];
    let n = {
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cur, "drill:{run:x}:{worker}:{seq}");
        cur.position() as usize
    };
    let k = RequestKey::new(&buf[..n]).unwrap_or_else(|| key("drill:overlong"));
    let request = Request {
        key: k,
        fingerprint: Fingerprint::ZERO,
    };
    if let (Some((orig, pan, amount, bank)), 0) = (prev, rng.below(10)) {
        return (
            bank,
            Command::Reversal(Reversal {
                request,
                original: orig,
                pan,
                amount,
            }),
            k,
        );
    }
    let bi = rng.below(5) as usize;
    let bank = Bank::ALL[bi];
    let pan = pans[bi][rng.below(pans[bi].len() as u64) as usize];
    let acquirer = Bank::ALL[rng.below(5) as usize];
    let amount = (1 + rng.below(20)) * 10_000;
    let cmd = if rng.below(2) == 0 {
        Command::Purchase(Payment {
            request,
            wallet: Program::Bpnt,
            pan,
            amount,
            acceptor: Acceptor {
                kind: TerminalKind::Ewarong,
                bank: BankCode(acquirer.code_number()),
                merchant: merchant("EW", acquirer),
            },
            pin: Some(DRILL_PVV),
            precheck: Precheck::Passed,
        })
    } else {
        Command::Withdrawal(Payment {
            request,
            wallet: Program::Pkh,
            pan,
            amount,
            acceptor: Acceptor {
                kind: TerminalKind::Agent,
                bank: BankCode(acquirer.code_number()),
                merchant: merchant("AG", acquirer),
            },
            pin: Some(DRILL_PVV),
            precheck: Precheck::Passed,
        })
    };
    (bank, cmd, k)
}

/// What a drill run measured.
#[derive(Debug, Default)]
pub struct DrillReport {
    pub commands: u64,
    pub approved: u64,
    pub postings_estimate: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Run the drill against `db` until `seconds` have passed.
pub async fn run(
    db: &str,
    cfg: DrillConfig,
    shard_cfg: ShardConfig,
) -> Result<DrillReport, String> {
    let store = Store::open(db).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let shards = Arc::new(
        Shards::start(store.clone(), bank_configs(), shard_cfg.clone())
            .await
            .map_err(|e| e.to_string())?,
    );
    eprintln!("recovered in {:.3} s", started.elapsed().as_secs_f64());
    open_population(&shards, cfg.cards_per_bank)
        .await
        .map_err(|e| format!("opening population: {e}"))?;
    println!("READY");
    let _ = std::io::stdout().flush();
    let run_id = cfg.seed ^ (std::process::id() as u64) << 20 ^ started.elapsed().as_nanos() as u64;
    let pans: Arc<Vec<Vec<Pan>>> = Arc::new(
        Bank::ALL
            .iter()
            .map(|&b| {
                (0..cfg.cards_per_bank.max(1))
                    .map(|i| test_pan(b, i))
                    .collect()
            })
            .collect(),
    );
    let commands = Arc::new(AtomicU64::new(0));
    let approved = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    // Bulk mode measures the commit path, so its commands are generated
    // before the clock starts.
    let mut prepared_all: Vec<Vec<Vec<Command>>> = Vec::new();
    if cfg.mode == Mode::Bulk {
        let batch = shard_cfg.batch_size_max.max(1);
        let per_worker = (cfg.bulk_commands as usize / cfg.workers.max(1)).div_ceil(batch);
        for w in 0..cfg.workers {
            let bank = Bank::ALL[w % 5];
            let mut rng = Rng(cfg.seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut seq = 0u64;
            let mut batches = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let mut cmds = Vec::with_capacity(batch);
                while cmds.len() < batch {
                    let (b, cmd, _) = movement(&mut rng, run_id, w, seq, &pans, None);
                    seq += 1;
                    if b == bank {
                        cmds.push(cmd);
                    }
                }
                batches.push(cmds);
            }
            prepared_all.push(batches);
        }
        // Workers pop from the end: worker 0 must get bank 0's batches.
        prepared_all.reverse();
    }
    // The clock starts after bulk commands are prepared, which takes
    // seconds for millions of them.
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(cfg.seconds);
    let mut tasks = Vec::new();
    for w in 0..cfg.workers {
        let mut prepared = prepared_all.pop().unwrap_or_default();
        let shards = shards.clone();
        let (commands, approved, hist) = (commands.clone(), approved.clone(), hist.clone());
        let cfg = cfg.clone();
        let pans = pans.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(cfg
                .seed
                .wrapping_add((w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                | 1);
            let mut local =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut seq = 0u64;
            let mut prev = None;
            let mut out = std::io::stdout();
            while Instant::now() < deadline {
                match cfg.mode {
                    Mode::Requests => {
                        let (bank, cmd, k) = movement(&mut rng, run_id, w, seq, &pans, prev);
                        seq += 1;
                        let t = Instant::now();
                        let r = shards.execute(BankCode(bank.code_number()), cmd).await;
                        let _ = local.record(t.elapsed().as_micros() as u64);
                        commands.fetch_add(1, Ordering::Relaxed);
                        let Ok(done) = r else { continue };
                        let ok = matches!(done.reply.code, Code::Approved);
                        prev = match cmd {
                            Command::Purchase(p) | Command::Withdrawal(p) if ok => {
                                Some((k, p.pan, p.amount, bank))
                            }
                            _ => None,
                        };
                        if ok
                            || matches!(
                                done.reply.code,
                                Code::ReversalRecorded | Code::ReversalRepeat
                            )
                        {
                            approved.fetch_add(1, Ordering::Relaxed);
                        }
                        if cfg.print_acks {
                            let code = done.reply.code.de39();
                            let _ = writeln!(
                                out,
                                "ACK {} {} {code}",
                                bank.code_number(),
                                String::from_utf8_lossy(k.as_bytes())
                            );
                        }
                    }
                    Mode::Bulk => {
                        let bank = Bank::ALL[w % 5];
                        let Some(cmds) = prepared.pop() else { break };
                        let n = cmds.len() as u64;
                        let t = Instant::now();
                        let r = shards
                            .execute_many(BankCode(bank.code_number()), cmds, 1)
                            .await;
                        let _ = local.record(t.elapsed().as_micros() as u64);
                        commands.fetch_add(n, Ordering::Relaxed);
                        if let Ok(done) = r {
                            let ok = done
                                .iter()
                                .filter(|d| matches!(d.reply.code, Code::Approved))
                                .count() as u64;
                            approved.fetch_add(ok, Ordering::Relaxed);
                        }
                    }
                }
            }
            if let Ok(mut h) = hist.lock() {
                let _ = h.add(&local);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let shards = Arc::try_unwrap(shards).map_err(|_| "shards still shared".to_string())?;
    shards.shutdown().await;
    store.close().await;
    let h = hist.lock().map_err(|e| e.to_string())?;
    let approved = approved.load(Ordering::Relaxed);
    Ok(DrillReport {
        commands: commands.load(Ordering::Relaxed),
        approved,
        postings_estimate: approved,
        seconds,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    })
}
