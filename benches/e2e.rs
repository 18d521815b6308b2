//! End-to-end bench (issue 5 item 10): approved e-Warong BPNT purchases and
//! agent PKH cash withdrawals over loopback TCP, durability on, driven by a
//! small pipelining ISO 8583 client built on the project's codec
//! (`iso8583::Builder`, `Message`, `FrameCodec`) and crypto
//! (`encrypt_pin_block`, `compute_mac`).
//!
//! # Running
//!
//! ```text
//! cargo bench --bench e2e                       # defaults below
//! cargo bench --bench e2e -- --seconds 2 --families 5000   # a quick look
//! cargo bench --bench e2e -- --connections 64 --depth 16 --seconds 10 --rate 50000
//! ```
//!
//! `cargo bench` builds the `kks-switch` binary with the bench (release)
//! profile and hands its path to this file (`CARGO_BIN_EXE_kks-switch`), so
//! the host runs as a child process, `kks-switch serve --db sqlite://TMP/kks.db
//! --listen 127.0.0.1:0`, and client and server never share a runtime.
//! `--server inproc` runs it in this process instead, on a runtime of its own
//! (`service::start`).
//!
//! Options (after `--`; each also as an environment variable `KKS_E2E_<NAME>`,
//! e.g. `KKS_E2E_CONNECTIONS=32`; arguments win):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `--connections C` | 64 | TCP connections |
//! | `--depth D` | 16 | closed loop: requests in flight per connection |
//! | `--seconds S` | 10 | length of each measured phase |
//! | `--rate R` | 50000 | open loop: requests per second, over all connections |
//! | `--mode M` | both | `closed`, `open` or `both` (closed first) |
//! | `--warmup W` | 1 | seconds of closed loop before measuring, not reported |
//! | `--families N` | 100000 | population seeded (about 58% PKH, 98% BPNT) |
//! | `--withdraw-share F` | 0.3 | share of requests that are cash withdrawals |
//! | `--server K` | child | `child` (the release binary) or `inproc` |
//! | `--bin PATH` | | the `kks-switch` binary to run (default: cargo's) |
//! | `--host-config FILE` | | a `kks-switch` config for set-up and host (`serve --config`); its db and listen are replaced |
//! | `--keep` | | keep the temporary directory (printed) |
//! | `--timeline` | | also print, per second of each phase, answers, answers over 5 ms and the slowest |
//!
//! # Set-up (not timed)
//!
//! A fresh SQLite database in a temporary directory; `seed::run` (what
//! `kks-switch seed` calls) for N families, writing `cards.csv`,
//! `terminals.csv` and `families.csv`, which are read back for PANs, PINs,
//! program membership, terminal ids and keys; `disbursement::run` (what
//! `kks-switch disburse` calls) credits the current PKH tahap and BPNT wave
//! from the families' entitlements. Every card gets an e-Warong and an agent
//! of its own bank, and the ISO-0 PIN blocks under those terminals' PIN keys
//! are computed before anything is timed (3DES on the client would eat the
//! CPU the host needs). The host is then started and every phase opens C
//! fresh connections to it.
//!
//! # Requests
//!
//! - BPNT purchase (`0200`, DE3 `000000`) at the card's e-Warong: a basket
//!   (DE48) of 1–3 allowed food items, Rp100–1.000 a line, summing to DE4;
//!   a card is not used beyond Rp150.000 (one month's credit is Rp200.000).
//! - PKH cash withdrawal (`0200`, DE3 `010000`/`011000`) at the card's agent,
//!   Rp1.000–5.000; at most 10 per card over the whole run (the daily count
//!   limit), so the population bounds the withdrawals: once every PKH card of
//!   a connection has had its 10, that connection sends purchases instead
//!   (counted and printed as "withdrawals short").
//! - DE7 is the send second (UTC); DE11 is unique per connection (each
//!   connection owns a disjoint block of 1e6/C STANs and never reuses one
//!   within a DE7 second), so the duplicate key of INTERFACE §5 never
//!   repeats. DE64 is added for terminals with a MAC key. Cards are split
//!   between connections, so one card's requests travel on one connection.
//! - Responses are matched on MTI (`0210`) + DE11 + DE41; anything but DE39
//!   `00` counts as not approved, by code. Answers to MAC terminals must
//!   carry a DE64 that verifies (else counted and printed).
//!
//! # What it prints
//!
//! One `e2e closed-loop` line: requests sent, approved (DE39 00), the other
//! codes, **approved/s** over the phase (responses received before its end)
//! and latency p50/p99/p99.9/max from send to response.
//!
//! One `e2e open-loop` line: requests are sent at fixed intended times (rate
//! R spread evenly over the connections; a late send is sent as soon as
//! possible and keeps its intended time), so latency is measured **from the
//! intended send time** and a stall of the host cannot hide behind a client
//! that stopped sending (coordinated omission): p50/p99/p99.9/max, plus the
//! same from the actual send time. A pacer thread wakes the connections when
//! requests fall due (checking every 100 µs), so the client's own lateness in
//! sending is a fraction of a millisecond (it is the gap between the two).
//!
//! After each phase line, the CPU the host process and this client used over
//! the phase, in cores (from `/proc/PID/task/*/schedstat`): on a shared
//! machine this shows how much of it the pair actually got. The figures to
//! quote are closed-loop approved/s with its p99, and open-loop p99 from the
//! intended send time at the target rate.
//!
//! The bench stops by itself (a phase ends after S seconds, then waits up to
//! 30 s for answers still in flight, counting the missing ones), talks only to
//! 127.0.0.1, and at the end stops the host (SIGTERM, then SIGKILL after
//! 15 s) and removes the temporary directory. Ctrl-C ends the phase early and
//! cleans up the same way.
//!
//! The machine's other load matters: client and host share its cores; run
//! `uptime` beside the figures.

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use kks_switch::config::Config;
use kks_switch::crypto::mac::verify_message_mac;
use kks_switch::crypto::{compute_mac, encrypt_pin_block, MacKey, MasterKey, Pin, PinKey};
use kks_switch::disbursement::{self, DisburseConfig};
use kks_switch::iso8583::{Builder, FrameCodec, Framing, Message};
use kks_switch::ledger::Program;
use kks_switch::pan::{Bank, Pan};
use kks_switch::programs::{civil_from_days, current_month_wib, program_name};
use kks_switch::seed::{self, SeedConfig, SplitMix64, MAC_SHARE_DEFAULT};
use kks_switch::service;
use kks_switch::storage::Store;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

// ------------------------------------------------------------------ options

const USAGE: &str = "usage: cargo bench --bench e2e -- [--connections C] [--depth D] \
[--seconds S] [--rate R] [--mode closed|open|both] [--warmup W] [--families N] \
[--withdraw-share F] [--server child|inproc] [--bin PATH] [--host-config FILE] [--keep] \
[--timeline]
(each also as KKS_E2E_CONNECTIONS, KKS_E2E_DEPTH, ...; see the top of benches/e2e.rs)";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Modes {
    Closed,
    Open,
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ServerKind {
    Child,
    InProc,
}

#[derive(Clone, Debug)]
struct Opts {
    connections: usize,
    depth: usize,
    seconds: f64,
    rate: f64,
    modes: Modes,
    warmup: f64,
    families: u64,
    withdraw_share: f64,
    server: ServerKind,
    bin: Option<PathBuf>,
    host_config: Option<PathBuf>,
    keep: bool,
    timeline: bool,
}

impl Opts {
    fn defaults() -> Opts {
        Opts {
            connections: 64,
            depth: 16,
            seconds: 10.0,
            rate: 50_000.0,
            modes: Modes::Both,
            warmup: 1.0,
            families: 100_000,
            withdraw_share: 0.3,
            server: ServerKind::Child,
            bin: None,
            host_config: None,
            keep: false,
            timeline: false,
        }
    }

    fn set(&mut self, name: &str, v: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("--{name}: cannot parse {v:?}"))
        }
        match name {
            "connections" => self.connections = num(name, v)?,
            "depth" => self.depth = num(name, v)?,
            "seconds" => self.seconds = num(name, v)?,
            "rate" => self.rate = num(name, v)?,
            "warmup" => self.warmup = num(name, v)?,
            "families" => self.families = num(name, v)?,
            "withdraw-share" => self.withdraw_share = num(name, v)?,
            "mode" => {
                self.modes = match v {
                    "closed" => Modes::Closed,
                    "open" => Modes::Open,
                    "both" => Modes::Both,
                    _ => return Err(format!("--mode: closed, open or both, not {v:?}")),
                }
            }
            "server" => {
                self.server = match v {
                    "child" => ServerKind::Child,
                    "inproc" => ServerKind::InProc,
                    _ => return Err(format!("--server: child or inproc, not {v:?}")),
                }
            }
            "bin" => self.bin = Some(PathBuf::from(v)),
            "host-config" => self.host_config = Some(PathBuf::from(v)),
            "keep" => self.keep = !matches!(v, "" | "0" | "false" | "no"),
            "timeline" => self.timeline = !matches!(v, "" | "0" | "false" | "no"),
            _ => return Err(format!("unknown option --{name}")),
        }
        Ok(())
    }

    /// Environment first, then arguments (cargo passes `--bench`; ignored).
    fn parse() -> Result<Opts, String> {
        let mut o = Opts::defaults();
        for name in [
            "connections",
            "depth",
            "seconds",
            "rate",
            "mode",
            "warmup",
            "families",
            "withdraw-share",
            "server",
            "bin",
            "host-config",
            "keep",
            "timeline",
        ] {
            let var = format!("KKS_E2E_{}", name.replace('-', "_").to_uppercase());
            if let Ok(v) = std::env::var(&var) {
                o.set(name, &v).map_err(|e| format!("{var}: {e}"))?;
            }
        }
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            i += 1;
            if a == "--bench" {
                continue;
            }
            if a == "--help" || a == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let Some(body) = a.strip_prefix("--") else {
                // A name filter as `cargo bench e2e` passes one: ignored.
                continue;
            };
            if let Some((k, v)) = body.split_once('=') {
                o.set(k, v)?;
            } else if body == "keep" {
                o.keep = true;
            } else if body == "timeline" {
                o.timeline = true;
            } else {
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("--{body} needs a value"))?;
                i += 1;
                o.set(body, v)?;
            }
        }
        if o.connections == 0 || o.connections > 10_000 {
            return Err("--connections must be 1..=10000".into());
        }
        if o.depth == 0 || o.depth > 1024 {
            return Err(
                "--depth must be 1..=1024 (the host's in-flight cap per connection)".into(),
            );
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !(positive(o.seconds) && o.warmup.is_finite() && o.warmup >= 0.0) {
            return Err("--seconds must be > 0 and --warmup >= 0".into());
        }
        if !positive(o.rate) {
            return Err("--rate must be > 0".into());
        }
        if !(0.0..=1.0).contains(&o.withdraw_share) {
            return Err("--withdraw-share must be within 0..=1".into());
        }
        if o.families == 0 {
            return Err("--families must be at least 1".into());
        }
        Ok(o)
    }
}

// --------------------------------------------------------------- population

/// BPNT food codes (INTERFACE §4, `food-only`).
const FOOD: [&[u8; 4]; 12] = [
    b"BRAS", b"JAGG", b"SAGU", b"TELR", b"DSAP", b"AYAM", b"IKAN", b"KCNG", b"TEMP", b"TAHU",
    b"SAYR", b"BUAH",
];
/// Most a card spends on purchases in a run (Rp150.000, DE4 units); the
/// smallest BPNT credit is one month's Rp200.000.
const BPNT_SPEND_CAP: u64 = 15_000_000;
/// Withdrawals per card per day (INTERFACE §3 default limit).
const WITHDRAWALS_PER_CARD: u8 = 10;
/// Answers still missing this long after a phase's end are counted lost.
const DRAIN: Duration = Duration::from_secs(30);
/// The open loop's pacer looks for due requests this often at most.
const PACER_TICK: Duration = Duration::from_micros(100);

struct Term {
    tid: [u8; 8],
    mid: Vec<u8>,
    /// DE32, e.g. `002`.
    acquirer: &'static str,
    mcc: Vec<u8>,
    mac: Option<MacKey>,
}

struct Card {
    pan: Vec<u8>,
    pkh: bool,
    bpnt: bool,
    ewarong: u32,
    agent: u32,
    pb_ewarong: [u8; 8],
    pb_agent: [u8; 8],
}

/// Everything the connections share, read-only.
struct Ctx {
    terms: Vec<Term>,
    cards: Vec<Card>,
    withdraw_ppm: u64,
}

fn read_csv(path: &Path) -> Result<Vec<Vec<String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect())
}

/// Read the seed's files back and precompute every PIN block.
fn load_population(dir: &Path) -> Result<(Vec<Term>, Vec<Card>), String> {
    let mut terms = Vec::new();
    let mut pin_keys = Vec::new();
    let mut by_bank: HashMap<(&'static str, bool), Vec<u32>> = HashMap::new();
    for r in read_csv(&dir.join("terminals.csv"))? {
        if r.len() < 7 {
            return Err(format!("terminals.csv: short row {r:?}"));
        }
        let bank = Bank::from_name(&r[3]).ok_or_else(|| format!("unknown bank {}", r[3]))?;
        let ewarong = match r[2].as_str() {
            "ewarong" => true,
            "agent" => false,
            _ => continue,
        };
        let mut tid = [b' '; 8];
        tid[..r[0].len().min(8)].copy_from_slice(&r[0].as_bytes()[..r[0].len().min(8)]);
        let mac = if r[6].is_empty() {
            None
        } else {
            Some(MacKey::from_hex(&r[6]).map_err(|e| format!("MAC key of {}: {e}", r[0]))?)
        };
        by_bank
            .entry((bank.name(), ewarong))
            .or_default()
            .push(terms.len() as u32);
        pin_keys.push(PinKey::from_hex(&r[5]).map_err(|e| format!("PIN key of {}: {e}", r[0]))?);
        terms.push(Term {
            tid,
            mid: r[1].as_bytes().to_vec(),
            acquirer: bank.code(),
            mcc: r[4].as_bytes().to_vec(),
            mac,
        });
    }
    let mut programs: HashMap<String, (bool, bool)> = HashMap::new();
    for r in read_csv(&dir.join("families.csv"))? {
        if r.len() < 7 {
            return Err(format!("families.csv: short row {r:?}"));
        }
        programs.insert(r[r.len() - 1].clone(), (r[4] == "1", r[5] == "1"));
    }
    let rows = read_csv(&dir.join("cards.csv"))?;
    let mut cards = Vec::with_capacity(rows.len());
    let mut rng = SplitMix64::new(0xE2E);
    for r in rows {
        if r.len() < 5 || r[4] != "active" {
            continue;
        }
        let bank = Bank::from_name(&r[1]).ok_or_else(|| format!("unknown bank {}", r[1]))?;
        let &(pkh, bpnt) = programs.get(&r[0]).ok_or_else(|| {
            format!(
                "card {} not in families.csv",
                kks_switch::pan::mask_pan(&r[0])
            )
        })?;
        let pan = Pan::parse(r[0].as_bytes()).map_err(|e| format!("cards.csv PAN: {e}"))?;
        let pin = Pin::new(r[3].as_bytes()).map_err(|e| format!("cards.csv PIN: {e}"))?;
        // On-us: an e-Warong and an agent of the card's own bank.
        let mut pick = |ewarong: bool| -> Result<u32, String> {
            let v = by_bank.get(&(bank.name(), ewarong)).ok_or_else(|| {
                format!(
                    "no {} of {}",
                    if ewarong { "e-Warong" } else { "agent" },
                    bank.name()
                )
            })?;
            Ok(v[rng.below(v.len() as u64) as usize])
        };
        let ewarong = pick(true)?;
        let agent = pick(false)?;
        let pb_ewarong = if bpnt {
            encrypt_pin_block(&pin, &pan, &pin_keys[ewarong as usize])
        } else {
            [0; 8]
        };
        let pb_agent = if pkh {
            encrypt_pin_block(&pin, &pan, &pin_keys[agent as usize])
        } else {
            [0; 8]
        };
        cards.push(Card {
            pan: r[0].as_bytes().to_vec(),
            pkh,
            bpnt,
            ewarong,
            agent,
            pb_ewarong,
            pb_agent,
        });
    }
    Ok((terms, cards))
}

/// The configuration of set-up and of an in-process host: the built-in
/// defaults or `--host-config`, on the temporary database, on loopback, with
/// the documented test master key unless the file names one (the child host
/// gets the same file and, without `KKS_MASTER_KEY`, the same key).
fn bench_config(db_url: &str, file: Option<&Path>) -> Result<Config, String> {
    let mut cfg = Config::load(file).map_err(|e| e.to_string())?;
    cfg.store.db = db_url.to_string();
    cfg.server.listen = "127.0.0.1:0".into();
    if cfg.security.master_key_hex.is_empty() {
        cfg.security.master_key_hex = MasterKey::test_default().to_hex().to_string();
    }
    Ok(cfg)
}

/// Seed and disburse through the library, as `kks-switch seed` and
/// `kks-switch disburse` do.
async fn prepare(cfg: &Config, families: u64, dir: &Path) -> Result<(), String> {
    let programs = cfg.programs().map_err(|e| e.to_string())?;
    let (master, _) = cfg.master_key().map_err(|e| e.to_string())?;
    let url = &cfg.store.db;
    let store = Store::open(url).await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let sc = SeedConfig {
        families,
        seed: 1,
        out: dir.to_path_buf(),
        mac_share: MAC_SHARE_DEFAULT,
        skip_files: false,
    };
    let r = seed::run(url, &store, &programs, &master, cfg.shards.clone(), &sc)
        .await
        .map_err(|e| format!("seed: {e}"))?;
    eprintln!(
        "e2e: seeded {} families, {} e-Warong, {} agents ({} with MAC) in {:.1} s",
        r.families,
        r.ewarong,
        r.agents,
        r.mac_terminals,
        t.elapsed().as_secs_f64()
    );
    let month = current_month_wib();
    for program in [Program::Pkh, Program::Bpnt] {
        let t = Instant::now();
        let period = programs.current_period(program, month).to_string();
        let dc = DisburseConfig {
            program,
            period: period.clone(),
            orders: None,
            dry_run: false,
            report: Some(dir.join(format!("rejects-{}.csv", program_name(program)))),
        };
        let s = disbursement::run(url, &store, &programs, cfg.shards.clone(), &dc)
            .await
            .map_err(|e| format!("disburse {}: {e}", program_name(program)))?;
        eprintln!(
            "e2e: disbursed {} {period}: {} credited, {} rejected, in {:.1} s",
            program_name(program),
            s.credited.count,
            s.rejected.count,
            t.elapsed().as_secs_f64()
        );
        if s.rejected.count > 0 {
            return Err(format!(
                "disburse {}: {} rejected",
                program_name(program),
                s.rejected.count
            ));
        }
    }
    store.close().await;
    Ok(())
}

// ------------------------------------------------------------------- server

/// The host under load; stopped on drop.
enum Server {
    Child {
        child: Child,
        log: PathBuf,
    },
    InProc {
        rt: Option<tokio::runtime::Runtime>,
        running: Option<service::Running>,
    },
}

fn find_binary(o: &Opts) -> Option<PathBuf> {
    if let Some(b) = &o.bin {
        return Some(b.clone());
    }
    if let Some(b) = option_env!("CARGO_BIN_EXE_kks-switch") {
        let p = PathBuf::from(b);
        if p.exists() {
            return Some(p);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let p = target.join("release").join("kks-switch");
    p.exists().then_some(p)
}

fn spawn_child(
    bin: &Path,
    db_url: &str,
    host_config: Option<&Path>,
    log: PathBuf,
) -> Result<(Server, SocketAddr), String> {
    let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Process::new(bin);
    if let Some(c) = host_config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .args(["serve", "--db", db_url, "--listen", "127.0.0.1:0"])
        .env_remove("KKS_MASTER_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // Keep draining after the address line so the child never blocks.
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
    let server = Server::Child { child, log };
    let addr = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(a) => a
            .parse::<SocketAddr>()
            .map_err(|e| format!("`listening on {a}`: {e}"))?,
        Err(_) => {
            let tail = server.log_tail();
            drop(server);
            return Err(format!(
                "kks-switch serve printed no `listening on ADDR`; its log:\n{tail}"
            ));
        }
    };
    Ok((server, addr))
}

impl Server {
    fn log_tail(&self) -> String {
        match self {
            Server::Child { log, .. } => {
                let t = std::fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
            Server::InProc { .. } => String::new(),
        }
    }

    /// The child host's process id.
    fn pid(&self) -> Option<u32> {
        match self {
            Server::Child { child, .. } => Some(child.id()),
            Server::InProc { .. } => None,
        }
    }

    /// Whether a child host has exited (crashed) already.
    fn exited(&mut self) -> Option<String> {
        match self {
            Server::Child { child, .. } => match child.try_wait() {
                Ok(Some(st)) => Some(st.to_string()),
                _ => None,
            },
            Server::InProc { .. } => None,
        }
    }

    fn stop(&mut self) {
        match self {
            Server::Child { child, .. } => {
                if let Ok(None) = child.try_wait() {
                    let _ = Process::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    let deadline = Instant::now() + Duration::from_secs(15);
                    loop {
                        match child.try_wait() {
                            Ok(Some(_)) | Err(_) => break,
                            Ok(None) if Instant::now() >= deadline => {
                                eprintln!(
                                    "e2e: host did not stop within 15 s of SIGTERM; killing it"
                                );
                                let _ = child.kill();
                                let _ = child.wait();
                                break;
                            }
                            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                }
            }
            Server::InProc { rt, running } => {
                if let (Some(rt), Some(r)) = (rt.as_ref(), running.take()) {
                    r.shutdown_token().cancel();
                    match rt.block_on(tokio::time::timeout(Duration::from_secs(30), r.wait())) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => eprintln!("e2e: host stopped with an error: {e}"),
                        Err(_) => eprintln!("e2e: host did not stop within 30 s"),
                    }
                }
                if let Some(rt) = rt.take() {
                    rt.shutdown_timeout(Duration::from_secs(5));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------ client

/// One connection's request generator; lives across phases so that card
/// budgets and STANs carry over.
struct Gen {
    rng: SplitMix64,
    stan_base: u32,
    stan_span: u64,
    stan_ctr: u64,
    /// DE7 cache: the second it was made for, and the STAN counter then.
    sec: u64,
    de7: [u8; 10],
    sec_first_ctr: u64,
    /// Cards of this connection with BPNT room left, and what each spent.
    bpnt: Vec<(u32, u64)>,
    bpnt_pos: usize,
    /// Cards of this connection with withdrawals left, and how many made.
    pkh: Vec<(u32, u8)>,
    pkh_pos: usize,
    /// Withdrawals drawn but sent as purchases (no PKH budget left).
    withdrawals_short: u64,
    /// Requests not sent: no card had room left at all.
    exhausted: bool,
    msg: BytesMut,
    codec: FrameCodec,
}

#[derive(Clone, Copy)]
struct Pending {
    intended: Instant,
    sent: Instant,
    term: u32,
    withdrawal: bool,
}

fn digits<const N: usize>(mut v: u64) -> [u8; N] {
    let mut out = [b'0'; N];
    for o in out.iter_mut().rev() {
        *o = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
}

impl Gen {
    fn new(ctx: &Ctx, id: usize, conns: usize) -> Gen {
        let mut bpnt = Vec::new();
        let mut pkh = Vec::new();
        for (i, c) in ctx.cards.iter().enumerate().skip(id).step_by(conns) {
            if c.bpnt {
                bpnt.push((i as u32, 0));
            }
            if c.pkh {
                pkh.push((i as u32, 0));
            }
        }
        let span = 1_000_000 / conns as u64;
        Gen {
            rng: SplitMix64::new(0x5EED_0000 + id as u64),
            stan_base: (id as u64 * span) as u32,
            stan_span: span,
            stan_ctr: 0,
            sec: 0,
            de7: [b'0'; 10],
            sec_first_ctr: 0,
            bpnt,
            bpnt_pos: 0,
            pkh,
            pkh_pos: 0,
            withdrawals_short: 0,
            exhausted: false,
            msg: BytesMut::with_capacity(512),
            codec: FrameCodec::new(Framing::TwoByte),
        }
    }

    /// DE7 for now, or `None` when this connection has used its whole STAN
    /// block within the current second (wait for the next one).
    fn de7(&mut self) -> Option<[u8; 10]> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.sec {
            let (_, m, d) = civil_from_days((secs / 86_400) as i64);
            let r = secs % 86_400;
            let mut s = [b'0'; 10];
            s[0..2].copy_from_slice(&digits::<2>(u64::from(m)));
            s[2..4].copy_from_slice(&digits::<2>(u64::from(d)));
            s[4..6].copy_from_slice(&digits::<2>(r / 3600));
            s[6..8].copy_from_slice(&digits::<2>(r / 60 % 60));
            s[8..10].copy_from_slice(&digits::<2>(r % 60));
            self.sec = secs;
            self.de7 = s;
            self.sec_first_ctr = self.stan_ctr;
        }
        (self.stan_ctr - self.sec_first_ctr < self.stan_span).then_some(self.de7)
    }

    /// Append one framed request to `out`; its STAN and what it is, or
    /// `None` (nothing appended) when it must wait or nothing is left.
    fn next(&mut self, ctx: &Ctx, out: &mut BytesMut) -> Option<(u32, u32, bool)> {
        if self.exhausted {
            return None;
        }
        let de7 = self.de7()?;
        let stan = self.stan_base + (self.stan_ctr % self.stan_span) as u32;
        let de11 = digits::<6>(u64::from(stan));
        let mut withdrawal = self.rng.below(1_000_000) < ctx.withdraw_ppm;
        if withdrawal && self.pkh.is_empty() {
            withdrawal = false;
            self.withdrawals_short += 1;
        }
        let mut basket = [0u8; 60];
        let (card_ix, term, de3, amount, basket_len): (u32, u32, &[u8], u64, usize) = if withdrawal
        {
            if self.pkh_pos >= self.pkh.len() {
                self.pkh_pos = 0;
            }
            let slot = self.pkh_pos;
            let (ci, n) = &mut self.pkh[slot];
            let ci = *ci;
            *n += 1;
            let done = *n >= WITHDRAWALS_PER_CARD;
            if done {
                self.pkh.swap_remove(slot);
            } else {
                self.pkh_pos += 1;
            }
            let amount = (1 + self.rng.below(5)) * 100_000;
            let de3: &[u8] = if self.rng.below(2) == 0 {
                b"010000"
            } else {
                b"011000"
            };
            (ci, ctx.cards[ci as usize].agent, de3, amount, 0)
        } else {
            let items = 1 + self.rng.below(3) as usize;
            let mut total = 0;
            for k in 0..items {
                let code = FOOD[self.rng.below(FOOD.len() as u64) as usize];
                let qty = 1 + self.rng.below(3);
                let line = (1 + self.rng.below(10)) * 10_000;
                total += line;
                let b = &mut basket[k * 20..k * 20 + 20];
                b[..4].copy_from_slice(code);
                b[4..8].copy_from_slice(&digits::<4>(qty));
                b[8..20].copy_from_slice(&digits::<12>(line));
            }
            // The next card with room for this basket; full cards leave.
            let ci = loop {
                if self.bpnt.is_empty() {
                    self.exhausted = true;
                    return None;
                }
                if self.bpnt_pos >= self.bpnt.len() {
                    self.bpnt_pos = 0;
                }
                let slot = self.bpnt_pos;
                let (ci, spent) = &mut self.bpnt[slot];
                if *spent + total <= BPNT_SPEND_CAP {
                    *spent += total;
                    self.bpnt_pos += 1;
                    break *ci;
                }
                self.bpnt.swap_remove(slot);
            };
            (
                ci,
                ctx.cards[ci as usize].ewarong,
                b"000000",
                total,
                items * 20,
            )
        };
        self.stan_ctr += 1;
        let card = &ctx.cards[card_ix as usize];
        let t = &ctx.terms[term as usize];
        let pb = if withdrawal {
            &card.pb_agent
        } else {
            &card.pb_ewarong
        };
        let msg = &mut self.msg;
        msg.clear();
        let mut b = Builder::new(msg, b"0200");
        let ok = (|| {
            b.field(2, &card.pan)?;
            b.field(3, de3)?;
            b.field(4, &digits::<12>(amount))?;
            b.field(7, &de7)?;
            b.field(11, &de11)?;
            b.field(18, &t.mcc)?;
            b.field(32, t.acquirer.as_bytes())?;
            b.field(41, &t.tid)?;
            b.field(42, &t.mid)?;
            if basket_len > 0 {
                b.field(48, &basket[..basket_len])?;
            }
            b.field(49, b"360")?;
            b.field(52, pb)?;
            Ok::<(), kks_switch::iso8583::Error>(())
        })();
        ok.expect("bench request fits the field table");
        match &t.mac {
            Some(k) => b
                .finish_with_mac(|m| compute_mac(k, m))
                .expect("MAC field fits"),
            None => b.finish(),
        }
        self.codec
            .encode(&self.msg[..], out)
            .expect("bench request under 4096 bytes");
        Some((stan, term, withdrawal))
    }
}

/// One phase's counts and latencies for one connection (merged after).
struct Stats {
    sent: u64,
    answered: u64,
    approved: u64,
    /// Approved answers received before the phase's end, by kind.
    approved_in_window: [u64; 2],
    codes: BTreeMap<String, u64>,
    unmatched: u64,
    /// Answers to MAC terminals whose DE64 is missing or wrong.
    bad_mac: u64,
    lost: u64,
    errors: Vec<String>,
    from_intended: Histogram<u64>,
    from_sent: Histogram<u64>,
    /// Per second since the phase's start, by when the answer came:
    /// (answers, answers over 5 ms from intended send, slowest in µs).
    start: Instant,
    seconds: Vec<(u64, u64, u64)>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

impl Stats {
    fn new(start: Instant) -> Stats {
        Stats {
            sent: 0,
            answered: 0,
            approved: 0,
            approved_in_window: [0; 2],
            codes: BTreeMap::new(),
            unmatched: 0,
            bad_mac: 0,
            lost: 0,
            errors: Vec::new(),
            from_intended: histogram(),
            from_sent: histogram(),
            start,
            seconds: Vec::new(),
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.approved += o.approved;
        self.approved_in_window[0] += o.approved_in_window[0];
        self.approved_in_window[1] += o.approved_in_window[1];
        for (k, v) in &o.codes {
            *self.codes.entry(k.clone()).or_default() += v;
        }
        self.unmatched += o.unmatched;
        self.bad_mac += o.bad_mac;
        self.lost += o.lost;
        self.errors.extend(o.errors.iter().cloned());
        let _ = self.from_intended.add(&o.from_intended);
        let _ = self.from_sent.add(&o.from_sent);
        if self.seconds.len() < o.seconds.len() {
            self.seconds.resize(o.seconds.len(), (0, 0, 0));
        }
        for (a, b) in self.seconds.iter_mut().zip(&o.seconds) {
            a.0 += b.0;
            a.1 += b.1;
            a.2 = a.2.max(b.2);
        }
    }
}

/// One connection's socket side: pending requests, buffers.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    inbuf: BytesMut,
    out: BytesMut,
    codec: FrameCodec,
    pending: HashMap<u32, Pending>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (rd, wr) = stream.into_split();
        Ok(Conn {
            rd,
            wr,
            inbuf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::with_capacity(64 * 1024),
            codec: FrameCodec::new(Framing::TwoByte),
            pending: HashMap::new(),
        })
    }

    /// Build one request into the output buffer and remember it.
    fn queue(&mut self, g: &mut Gen, ctx: &Ctx, st: &mut Stats, intended: Instant) -> bool {
        match g.next(ctx, &mut self.out) {
            Some((stan, term, withdrawal)) => {
                let p = Pending {
                    intended,
                    sent: Instant::now(),
                    term,
                    withdrawal,
                };
                if self.pending.insert(stan, p).is_some() {
                    st.errors
                        .push(format!("STAN {stan} reused while in flight"));
                }
                st.sent += 1;
                true
            }
            None => false,
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        if !self.out.is_empty() {
            self.wr
                .write_all(&self.out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            self.out.clear();
        }
        Ok(())
    }

    /// Decode every whole frame in the input buffer; the number answered.
    fn take_answers(&mut self, ctx: &Ctx, st: &mut Stats, end: Instant) -> Result<usize, String> {
        let mut n = 0;
        let now = Instant::now();
        while let Some(frame) = self
            .codec
            .decode(&mut self.inbuf)
            .map_err(|e| format!("bad frame from host: {e}"))?
        {
            n += 1;
            let m = match Message::decode(&frame[..]) {
                Ok(m) => m,
                Err(e) => {
                    st.errors.push(format!("undecodable response: {e}"));
                    st.unmatched += 1;
                    continue;
                }
            };
            let stan = m
                .get(11)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|s| s.parse::<u32>().ok());
            let p = match stan.and_then(|s| self.pending.get(&s).copied().map(|p| (s, p))) {
                Some((s, p))
                    if m.mti() == b"0210"
                        && m.get(41) == Some(&ctx.terms[p.term as usize].tid[..]) =>
                {
                    self.pending.remove(&s);
                    p
                }
                _ => {
                    st.unmatched += 1;
                    continue;
                }
            };
            st.answered += 1;
            if let Some(k) = &ctx.terms[p.term as usize].mac {
                if !(m.has(64) && verify_message_mac(k, &frame[..])) {
                    st.bad_mac += 1;
                }
            }
            let us = |d: Duration| (d.as_micros() as u64).max(1);
            st.from_intended
                .saturating_record(us(now.saturating_duration_since(p.intended)));
            st.from_sent
                .saturating_record(us(now.saturating_duration_since(p.sent)));
            let lat = us(now.saturating_duration_since(p.intended));
            let sec = now.saturating_duration_since(st.start).as_secs() as usize;
            if st.seconds.len() <= sec {
                st.seconds.resize(sec + 1, (0, 0, 0));
            }
            let b = &mut st.seconds[sec];
            b.0 += 1;
            b.1 += u64::from(lat > 5_000);
            b.2 = b.2.max(lat);
            match m.get(39) {
                Some(b"00") => {
                    st.approved += 1;
                    if now <= end {
                        st.approved_in_window[usize::from(p.withdrawal)] += 1;
                    }
                }
                other => {
                    let code = other
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .unwrap_or_else(|| "none".into());
                    *st.codes.entry(code).or_default() += 1;
                }
            }
        }
        Ok(n)
    }

    /// Read once (waiting at most until `until`); false at end of stream.
    async fn read(&mut self, until: Instant) -> Result<bool, String> {
        match tokio::time::timeout_at(until.into(), self.rd.read_buf(&mut self.inbuf)).await {
            Err(_) => Ok(true),
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(format!("read: {e}")),
        }
    }
}

/// Closed loop: `depth` requests in flight; each answer sends the next.
async fn closed_loop(
    ctx: Arc<Ctx>,
    mut g: Gen,
    mut c: Conn,
    depth: usize,
    end: Instant,
    stop: CancellationToken,
) -> (Gen, Stats) {
    let mut st = Stats::new(Instant::now());
    let r: Result<(), String> = async {
        let mut owed = depth;
        loop {
            let sending = Instant::now() < end && !stop.is_cancelled() && !g.exhausted;
            if sending {
                while owed > 0 {
                    if c.queue(&mut g, &ctx, &mut st, Instant::now()) {
                        owed -= 1;
                    } else if g.exhausted {
                        break;
                    } else {
                        // STAN block used up within this second.
                        c.flush().await?;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                c.flush().await?;
            } else if c.pending.is_empty() || Instant::now() >= end + DRAIN {
                return Ok(());
            }
            let until = if sending { end } else { end + DRAIN };
            if !c.read(until).await? {
                return Err("host closed the connection".into());
            }
            owed += c.take_answers(&ctx, &mut st, end)?;
        }
    }
    .await;
    if let Err(e) = r {
        st.errors.push(e);
    }
    st.lost += c.pending.len() as u64;
    (g, st)
}

/// Open loop: request k is due at `first + k * interval`, sent when due (or
/// as soon as possible after), and timed from when it was due. The pacer
/// thread wakes the connection through `tick` when something falls due.
#[allow(clippy::too_many_arguments)]
async fn open_loop(
    ctx: Arc<Ctx>,
    mut g: Gen,
    mut c: Conn,
    first: Instant,
    interval: Duration,
    end: Instant,
    tick: Arc<Notify>,
    stop: CancellationToken,
) -> (Gen, Stats) {
    let mut st = Stats::new(Instant::now());
    let r: Result<(), String> = async {
        let mut k: u32 = 0;
        let mut due = first;
        loop {
            let now = Instant::now();
            let sending = due < end && !stop.is_cancelled() && !g.exhausted;
            let mut blocked = false;
            if sending {
                while due <= now && due < end {
                    if !c.queue(&mut g, &ctx, &mut st, due) {
                        // STAN block used up within this second.
                        blocked = true;
                        break;
                    }
                    k += 1;
                    due = first + interval * k;
                }
            } else if c.out.is_empty() && (c.pending.is_empty() || now >= end + DRAIN) {
                return Ok(());
            }
            let sending = due < end && !stop.is_cancelled() && !g.exhausted;
            // Writing never blocks reading: a host that falls far behind
            // stops reading us (its in-flight cap), and a client stuck in a
            // write would stop reading it in turn.
            tokio::select! {
                r = tokio::time::timeout_at((end + DRAIN).into(), c.rd.read_buf(&mut c.inbuf)) => {
                    match r {
                        Err(_) => {}
                        Ok(Ok(0)) => return Err("host closed the connection".into()),
                        Ok(Ok(_)) => {
                            c.take_answers(&ctx, &mut st, end)?;
                        }
                        Ok(Err(e)) => return Err(format!("read: {e}")),
                    }
                }
                w = c.wr.write(&c.out), if !c.out.is_empty() => {
                    let n = w.map_err(|e| format!("write: {e}"))?;
                    c.out.advance(n);
                }
                _ = tick.notified(), if sending => {}
                _ = stop.cancelled(), if sending => {}
                _ = tokio::time::sleep(Duration::from_millis(5)), if blocked => {}
            }
        }
    }
    .await;
    if let Err(e) = r {
        st.errors.push(e);
    }
    st.lost += c.pending.len() as u64;
    (g, st)
}

/// Wake every connection whose next request has fallen due, checking every
/// [`PACER_TICK`]; sleeping on the runtime's 1 ms timer instead would make
/// each send up to ~2 ms late, and that lateness would count as latency.
fn pace(
    firsts: Vec<Instant>,
    interval: Duration,
    end: Instant,
    ticks: Vec<Arc<Notify>>,
    stop: CancellationToken,
) {
    let mut next = firsts;
    loop {
        let now = Instant::now();
        if stop.is_cancelled() {
            for t in &ticks {
                t.notify_one();
            }
            return;
        }
        let mut soonest = end;
        for (due, t) in next.iter_mut().zip(&ticks) {
            if *due <= now && *due < end {
                t.notify_one();
                let behind = (now - *due).as_nanos() / interval.as_nanos().max(1);
                *due += interval * (behind as u32 + 1);
            }
            soonest = soonest.min(*due);
        }
        if soonest >= end {
            return;
        }
        let wait = soonest.saturating_duration_since(Instant::now());
        std::thread::sleep(wait.max(PACER_TICK));
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Closed { depth: usize },
    Open { rate: f64 },
}

struct Outcome {
    st: Stats,
    seconds: f64,
    withdrawals_short: u64,
    exhausted: usize,
}

async fn run_phase(
    ctx: &Arc<Ctx>,
    gens: Vec<Gen>,
    addr: SocketAddr,
    phase: Phase,
    seconds: f64,
    stop: &CancellationToken,
) -> Result<(Vec<Gen>, Outcome), String> {
    let mut conns = Vec::with_capacity(gens.len());
    for _ in 0..gens.len() {
        conns.push(Conn::open(addr).await?);
    }
    let n = gens.len();
    let short_before: u64 = gens.iter().map(|g| g.withdrawals_short).sum();
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(seconds);
    // Open loop: connection i's requests fall due at first_i + k * interval.
    let interval = match phase {
        Phase::Open { rate } => Duration::from_secs_f64(n as f64 / rate),
        Phase::Closed { .. } => Duration::ZERO,
    };
    let firsts: Vec<Instant> = (0..n)
        .map(|i| start + interval.mul_f64(i as f64 / n as f64))
        .collect();
    let ticks: Vec<Arc<Notify>> = (0..n).map(|_| Arc::new(Notify::new())).collect();
    let pacer = match phase {
        Phase::Open { .. } => {
            let (firsts, ticks, stop) = (firsts.clone(), ticks.clone(), stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("e2e-pacer".into())
                    .spawn(move || pace(firsts, interval, end, ticks, stop))
                    .map_err(|e| format!("pacer thread: {e}"))?,
            )
        }
        Phase::Closed { .. } => None,
    };
    let mut tasks = Vec::with_capacity(n);
    for (i, (g, c)) in gens.into_iter().zip(conns).enumerate() {
        let ctx = ctx.clone();
        let stop = stop.clone();
        let (first, tick) = (firsts[i], ticks[i].clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            match phase {
                Phase::Closed { depth } => closed_loop(ctx, g, c, depth, end, stop).await,
                Phase::Open { .. } => open_loop(ctx, g, c, first, interval, end, tick, stop).await,
            }
        }));
    }
    let mut st = Stats::new(start);
    let mut gens = Vec::with_capacity(n);
    for t in tasks {
        let (g, s) = t.await.map_err(|e| format!("connection task: {e}"))?;
        st.merge(&s);
        gens.push(g);
    }
    if let Some(p) = pacer {
        let _ = p.join();
    }
    let seconds = (end.min(Instant::now()) - start).as_secs_f64();
    let withdrawals_short = gens.iter().map(|g| g.withdrawals_short).sum::<u64>() - short_before;
    let exhausted = gens.iter().filter(|g| g.exhausted).count();
    Ok((
        gens,
        Outcome {
            st,
            seconds,
            withdrawals_short,
            exhausted,
        },
    ))
}

/// CPU time (ns) used so far by the live threads of process `pid`
/// (`/proc/PID/task/*/schedstat`, Linux).
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(e) = e else { continue };
        if let Ok(t) = std::fs::read_to_string(e.path().join("schedstat")) {
            total += t.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn codes_text(st: &Stats) -> String {
    if st.codes.is_empty() {
        return "none".into();
    }
    st.codes
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(name: &str, what: &str, o: &Outcome, timeline: bool) {
    let st = &o.st;
    let declined: u64 = st.codes.values().sum();
    let in_window = st.approved_in_window[0] + st.approved_in_window[1];
    let h = &st.from_intended;
    let s = &st.from_sent;
    let latency = if name == "open-loop" {
        format!(
            "latency from intended send p50 {} p99 {} p99.9 {} max {} (from actual send p50 {} p99 {} p99.9 {})",
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            ms(s.value_at_quantile(0.50)),
            ms(s.value_at_quantile(0.99)),
            ms(s.value_at_quantile(0.999)),
        )
    } else {
        format!(
            "latency p50 {} p99 {} p99.9 {} max {}",
            ms(s.value_at_quantile(0.50)),
            ms(s.value_at_quantile(0.99)),
            ms(s.value_at_quantile(0.999)),
            ms(s.max()),
        )
    };
    println!(
        "e2e {name} {what}, {:.1} s: sent {}, approved {} (00), not approved {} [{}], no answer {}; \
         {:.0} approved/s ({:.0} purchases/s + {:.0} withdrawals/s); {latency}",
        o.seconds,
        st.sent,
        st.approved,
        declined,
        codes_text(st),
        st.lost,
        in_window as f64 / o.seconds,
        st.approved_in_window[0] as f64 / o.seconds,
        st.approved_in_window[1] as f64 / o.seconds,
    );
    if st.unmatched > 0 {
        println!(
            "e2e {name}: {} answers matched no request in flight",
            st.unmatched
        );
    }
    if st.bad_mac > 0 {
        println!(
            "e2e {name}: {} answers to MAC terminals had a missing or wrong DE64",
            st.bad_mac
        );
    }
    if o.withdrawals_short > 0 {
        println!(
            "e2e {name}: withdrawals short: {} drawn withdrawals were sent as purchases (PKH cards used their 10 a day; raise --families)",
            o.withdrawals_short
        );
    }
    if o.exhausted > 0 {
        println!(
            "e2e {name}: {} connection(s) ran out of cards with BPNT room and stopped sending (raise --families)",
            o.exhausted
        );
    }
    if timeline {
        for (i, &(n, over, max)) in st.seconds.iter().enumerate() {
            println!(
                "e2e {name}: second {i:>3}: {n:>7} answers, {over:>7} over 5 ms, slowest {}",
                ms(max)
            );
        }
    }
    let mut errors = st.errors.clone();
    errors.sort();
    errors.dedup();
    for e in errors.iter().take(5) {
        println!("e2e {name}: error: {e}");
    }
}

// -------------------------------------------------------------------- main

fn main() {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("e2e: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match run(opts) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("e2e: {e}");
            std::process::exit(1);
        }
    }
}

fn run(o: Opts) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix("kks-e2e-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let dir = tmp.path().to_path_buf();
    let result = run_in(&o, &dir);
    if o.keep {
        let kept = tmp.keep();
        eprintln!("e2e: kept {}", kept.display());
    } else {
        drop(tmp);
    }
    result
}

fn run_in(o: &Opts, dir: &Path) -> Result<(), String> {
    let db_url = format!("sqlite://{}/kks.db", dir.display());
    let cfg = bench_config(&db_url, o.host_config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("e2e-client")
        .build()
        .map_err(|e| format!("runtime: {e}"))?;

    // Set-up: seed, disburse, read the files back, PIN blocks.
    let pop_dir = dir.join("population");
    rt.block_on(prepare(&cfg, o.families, &pop_dir))?;
    let t = Instant::now();
    let (terms, cards) = load_population(&pop_dir)?;
    let pkh_cards = cards.iter().filter(|c| c.pkh).count();
    let bpnt_cards = cards.iter().filter(|c| c.bpnt).count();
    eprintln!(
        "e2e: {} cards ({pkh_cards} PKH, {bpnt_cards} BPNT), {} terminals ({} with MAC); PIN blocks in {:.1} s; withdrawal budget {}",
        cards.len(),
        terms.len(),
        terms.iter().filter(|t| t.mac.is_some()).count(),
        t.elapsed().as_secs_f64(),
        pkh_cards * usize::from(WITHDRAWALS_PER_CARD)
    );
    let ctx = Arc::new(Ctx {
        terms,
        cards,
        withdraw_ppm: (o.withdraw_share * 1_000_000.0).round() as u64,
    });

    // The host.
    let (mut server, addr) = match (o.server, find_binary(o)) {
        (ServerKind::Child, Some(bin)) => {
            eprintln!("e2e: host: {} serve (child process)", bin.display());
            spawn_child(
                &bin,
                &db_url,
                o.host_config.as_deref(),
                dir.join("serve.log"),
            )?
        }
        (kind, _) => {
            if kind == ServerKind::Child {
                eprintln!("e2e: no kks-switch binary found (cargo build --release, or --bin PATH); running the host in-process");
            } else {
                eprintln!("e2e: host: in-process, on a runtime of its own");
            }
            let srt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("e2e-host")
                .build()
                .map_err(|e| format!("host runtime: {e}"))?;
            let running = srt
                .block_on(service::start(cfg.clone()))
                .map_err(|e| format!("service::start: {e}"))?;
            let addr = running.addr;
            (
                Server::InProc {
                    rt: Some(srt),
                    running: Some(running),
                },
                addr,
            )
        }
    };
    if !addr.ip().is_loopback() {
        return Err(format!("host listens on {addr}, not loopback"));
    }
    eprintln!("e2e: host listening on {addr}");

    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("e2e: interrupted; ending the phase and cleaning up");
                stop.cancel();
            }
        });
    }

    let phases: Vec<(&str, Phase, f64)> = {
        let closed = Phase::Closed { depth: o.depth };
        let mut v = Vec::new();
        if o.warmup > 0.0 {
            v.push(("warm-up", closed, o.warmup));
        }
        if o.modes != Modes::Open {
            v.push(("closed-loop", closed, o.seconds));
        }
        if o.modes != Modes::Closed {
            v.push(("open-loop", Phase::Open { rate: o.rate }, o.seconds));
        }
        v
    };
    let mut gens: Vec<Gen> = (0..o.connections)
        .map(|i| Gen::new(&ctx, i, o.connections))
        .collect();
    let mut result = Ok(());
    for (name, phase, secs) in phases {
        if stop.is_cancelled() {
            break;
        }
        let what = match phase {
            Phase::Closed { depth } => format!("{} conn x {depth} in flight", o.connections),
            Phase::Open { rate } => format!("{rate:.0}/s target over {} conn", o.connections),
        };
        let me = std::process::id();
        let cpu0 = (cpu_ns(me), server.pid().and_then(cpu_ns), Instant::now());
        let (g, out) = match rt.block_on(run_phase(&ctx, gens, addr, phase, secs, &stop)) {
            Ok(x) => x,
            Err(e) => {
                result = Err(e);
                gens = Vec::new();
                break;
            }
        };
        gens = g;
        if name == "warm-up" {
            eprintln!(
                "e2e: warm-up {:.1} s: {} sent, {} approved",
                out.seconds, out.st.sent, out.st.approved
            );
        } else {
            report(name, &what, &out, o.timeline);
            let wall = cpu0.2.elapsed().as_secs_f64();
            let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:.2}", b.saturating_sub(a) as f64 / 1e9 / wall),
                _ => "?".into(),
            };
            match server.pid() {
                Some(pid) => println!(
                    "e2e {name}: CPU over the phase's {wall:.1} s (connect and drain included): host {} cores, client {} cores",
                    cores(cpu0.1, cpu_ns(pid)),
                    cores(cpu0.0, cpu_ns(me)),
                ),
                None => println!(
                    "e2e {name}: CPU over the phase's {wall:.1} s: host and client together {} cores",
                    cores(cpu0.0, cpu_ns(me)),
                ),
            }
        }
        if let Some(st) = server.exited() {
            result = Err(format!(
                "the host exited ({st}); its log:\n{}",
                server.log_tail()
            ));
            break;
        }
    }
    let left: u64 = gens
        .iter()
        .flat_map(|g| g.pkh.iter())
        .map(|&(_, n)| u64::from(WITHDRAWALS_PER_CARD - n))
        .sum();
    eprintln!("e2e: withdrawal budget left at the end: {left}");
    drop(gens);
    server.stop();
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}
