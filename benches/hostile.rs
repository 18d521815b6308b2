//! Hostile-client measurement (issue 7, item 3): latency of well-behaved
//! terminals on a quiet host, then under each attack of `tests/hostile.rs`
//! and under all of them at once, against a `kks-switch serve` child process
//! (the release binary `cargo bench` builds). Prints p50/p99/p99.9/max per
//! phase and the ratio of each phase's p99 to the quiet p99. Nothing is
//! asserted: the figures go to RELIABILITY.md.
//!
//! ```text
//! cargo bench --bench hostile                      # defaults below
//! cargo bench --bench hostile -- --seconds 3       # a quicker look
//! ```
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `--seconds S` | 8 | length of each phase |
//! | `--terminals T` | 8 | well-behaved connections, one request in flight each |
//! | `--interval-ms I` | 10 | each terminal sends one request every I ms (paced; a late one goes at once) |
//! | `--idle-ms M` | 2000 | the host's idle timeout (`serve --idle-timeout-ms`) |
//! | `--cap C` | 512 | the host's connection cap (`serve --connections-max`) |
//! | `--only P` | | run only the quiet phase and phase P (`slowloris`, `flood`, `half-open`, `bad-lengths`, `garbage`, `all`) |
//!
//! Set-up (not timed): the authorization fixture of `tests/common` (SQLite
//! in a temporary directory, 40 spare active cards credited), then `serve`
//! with the idle timeout and cap above. The well-behaved terminals connect
//! before any attack starts and stay connected (as acquirer links do); each
//! sends BPNT e-Warong purchases (one line of rice, Rp1) from plain and MAC
//! terminals and PKH purchases at a merchant, every one PIN-verified and
//! made durable. Latency is from write to response; answers other than 00
//! are counted and printed (`not00`), as are requests whose connection failed
//! (`lost`; the terminal reconnects). `att.conns`/`att.ans`: connections the
//! attackers made and frames they got back. `host%`, `bench%`, `all%`: CPU
//! used during the phase by the host process, by this process (terminals
//! and attackers), and by the whole machine (other users included), in % of
//! one core (from /proc).
//!
//! Attacks (each phase restarts its attackers; an attacker whose connection
//! is closed reconnects at once):
//!
//! - `slowloris`: 200 connections that send an 0800 a byte every 100 ms
//!   (never complete within the idle timeout) and 50 that send a byte every
//!   5 ms (complete, answered).
//! - `flood`: cap + 500 connections that connect and send nothing.
//! - `half-open`: 300 connections that send part of a header or frame, then
//!   nothing.
//! - `bad-lengths`: 16 loops of connect, zero/oversize header, close.
//! - `garbage`: 16 loops of connect, random bytes / random bodies / valid
//!   requests with a byte changed, read until closed.
//! - `all`: all of the above at once.
//!
//! The attackers run on a runtime of their own (one thread) so that the
//! measuring client's timers are not held up by them; the host has its
//! own process. On a 2-core machine all three still share the CPU.

#[path = "../tests/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;

use bytes::{Bytes, BytesMut};
use common::fixture::*;
use hdrhistogram::Histogram;
use kks_switch::iso8583::{Fields, FrameCodec, Framing};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

struct Opts {
    seconds: u64,
    terminals: usize,
    interval_ms: u64,
    idle_ms: u64,
    cap: usize,
    only: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        seconds: 8,
        terminals: 8,
        interval_ms: 10,
        idle_ms: 2000,
        cap: 512,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seconds" => o.seconds = v.parse().expect("--seconds"),
            "--terminals" => o.terminals = v.parse().expect("--terminals"),
            "--interval-ms" => o.interval_ms = v.parse().expect("--interval-ms"),
            "--idle-ms" => o.idle_ms = v.parse().expect("--idle-ms"),
            "--cap" => o.cap = v.parse().expect("--cap"),
            "--only" => o.only = Some(v),
            // `cargo bench` passes --bench; ignore what we do not know.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

// ------------------------------------------------------------------ host

struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db_url: &str, o: &Opts, log: &std::path::Path) -> Serve {
    let err = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kks-switch"))
        .args([
            "serve",
            "--db",
            db_url,
            "--listen",
            "127.0.0.1:0",
            "--idle-timeout-ms",
            &o.idle_ms.to_string(),
            "--connections-max",
            &o.cap.to_string(),
        ])
        .env_remove("KKS_MASTER_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn kks-switch serve");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !sent {
                if let Some(a) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(a.to_string());
                    sent = true;
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("serve printed no address")
        .parse()
        .unwrap();
    Serve { child, addr }
}

// ------------------------------------------------------------- CPU use

/// utime + stime of a process, in clock ticks (100 a second on Linux).
fn proc_ticks(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = s
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let f = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    f(11) + f(12)
}

/// (busy, total) ticks of the whole machine, every process counted.
fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU use over a phase: host process, this process (client and
/// attackers), the whole machine (other users included), as % of one core.
struct Cpu {
    host: u64,
    me: u64,
    machine: (u64, u64),
    t: Instant,
}

impl Cpu {
    fn now(host_pid: &str) -> Cpu {
        Cpu {
            host: proc_ticks(host_pid),
            me: proc_ticks("self"),
            machine: machine_ticks(),
            t: Instant::now(),
        }
    }

    /// (host %, bench %, machine % of all cores × cores) since `self`.
    fn since(&self, host_pid: &str) -> (f64, f64, f64) {
        let secs = self.t.elapsed().as_secs_f64().max(0.001);
        let pct = |ticks: u64| ticks as f64 / secs;
        let (b, t) = machine_ticks();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = (b - self.machine.0) as f64 / ((t - self.machine.1).max(1)) as f64;
        (
            pct(proc_ticks(host_pid) - self.host),
            pct(proc_ticks("self") - self.me),
            busy * 100.0 * cores,
        )
    }
}

// ------------------------------------------------------- wire helpers

async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = s.set_nodelay(true);
    Some(s)
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    FrameCodec::new(Framing::TwoByte)
        .encode(msg, &mut out)
        .unwrap();
    out.to_vec()
}

/// Read frames until the server closes (or `limit` passes); how many.
async fn drain(s: &mut TcpStream, limit: Duration) -> usize {
    let mut codec = FrameCodec::new(Framing::TwoByte);
    let mut buf = BytesMut::with_capacity(4096);
    let mut n = 0;
    let _ = tokio::time::timeout(limit, async {
        loop {
            while let Ok(Some(_)) = codec.decode(&mut buf) {
                n += 1;
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    n
}

fn echo_req(stan: u32) -> Vec<u8> {
    Fields::new("0800")
        .with(7, "1125083000")
        .with(11, format!("{:06}", stan % 1_000_000))
        .with(70, "301")
        .to_vec()
        .unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ------------------------------------------------------------- attacks

#[derive(Default)]
struct AttackStats {
    connections: AtomicU64,
    answers: AtomicU64,
}

type Stop = Arc<AtomicBool>;

async fn slowloris(addr: SocketAddr, gap: Duration, stop: Stop, st: Arc<AttackStats>) {
    let mut stan = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = connect(addr).await else {
            continue;
        };
        st.connections.fetch_add(1, Ordering::Relaxed);
        'conn: while !stop.load(Ordering::Relaxed) {
            stan += 1;
            let f = framed(&echo_req(stan));
            for b in &f {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).await.is_err() {
                    break 'conn;
                }
                let mut p = [0u8; 1];
                if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(gap, s.peek(&mut p)).await {
                    break 'conn;
                }
            }
            let mut codec = FrameCodec::new(Framing::TwoByte);
            let mut buf = BytesMut::new();
            let got = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Ok(Some(_)) = codec.decode(&mut buf) {
                        return true;
                    }
                    match s.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            if got != Ok(true) {
                break;
            }
            st.answers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Connect, send `bytes`, hold until the server closes or the phase ends.
async fn holder(addr: SocketAddr, bytes: Vec<u8>, stop: Stop, st: Arc<AttackStats>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        st.connections.fetch_add(1, Ordering::Relaxed);
        if s.write_all(&bytes).await.is_err() {
            continue;
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let mut b = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
                Err(_) => {}
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {
                    st.answers.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn bad_lengths(addr: SocketAddr, seed: u64, stop: Stop, st: Arc<AttackStats>) {
    let headers: [&[u8]; 4] = [&[0, 0], &[0xFF, 0xFF], &[0x10, 0x01], &[0x80, 0x00]];
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = connect(addr).await else {
            continue;
        };
        st.connections.fetch_add(1, Ordering::Relaxed);
        let mut out = headers[rng.below(4) as usize].to_vec();
        out.extend(framed(&echo_req(1)));
        let _ = s.write_all(&out).await;
        let n = drain(&mut s, Duration::from_secs(10)).await;
        st.answers.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn garbage(addr: SocketAddr, seed: u64, stop: Stop, st: Arc<AttackStats>) {
    let mut rng = Rng(seed | 1);
    let template = encode(&purchase(&EWARONG, &RICH.pan(), &rice(100)));
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = connect(addr).await else {
            continue;
        };
        st.connections.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        for _ in 0..1 + rng.below(4) {
            match rng.below(3) {
                0 => out.extend((0..1 + rng.below(2048)).map(|_| rng.next() as u8)),
                1 => {
                    let body: Vec<u8> = (0..1 + rng.below(600)).map(|_| rng.next() as u8).collect();
                    out.extend(framed(&body));
                }
                _ => {
                    let mut m = template.clone();
                    let at = rng.below(m.len() as u64) as usize;
                    m[at] = rng.next() as u8;
                    out.extend(framed(&m));
                }
            }
        }
        let _ = s.write_all(&out).await;
        let n = drain(&mut s, Duration::from_secs(10)).await;
        st.answers.fetch_add(n as u64, Ordering::Relaxed);
    }
}

const PHASES: [&str; 6] = [
    "slowloris",
    "flood",
    "half-open",
    "bad-lengths",
    "garbage",
    "all",
];

/// Start `phase`'s attackers on `rt`; they stop when `stop` is set.
fn start_attack(
    rt: &tokio::runtime::Runtime,
    phase: &str,
    addr: SocketAddr,
    o: &Opts,
    stop: &Stop,
    st: &Arc<AttackStats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut v = Vec::new();
    let all = phase == "all";
    let s = || stop.clone();
    let t = || st.clone();
    if all || phase == "slowloris" {
        for _ in 0..200 {
            v.push(rt.spawn(slowloris(addr, Duration::from_millis(100), s(), t())));
        }
        for _ in 0..50 {
            v.push(rt.spawn(slowloris(addr, Duration::from_millis(5), s(), t())));
        }
    }
    if all || phase == "flood" {
        for _ in 0..o.cap + 500 {
            v.push(rt.spawn(holder(addr, Vec::new(), s(), t())));
        }
    }
    if all || phase == "half-open" {
        let whole = framed(&echo_req(7));
        let parts: [Vec<u8>; 4] = [
            whole[..1].to_vec(),
            whole[..2].to_vec(),
            whole[..whole.len() / 2].to_vec(),
            [&[0x10, 0x00][..], &[b'0'; 64][..]].concat(),
        ];
        for i in 0..300 {
            v.push(rt.spawn(holder(addr, parts[i % 4].clone(), s(), t())));
        }
    }
    if all || phase == "bad-lengths" {
        for i in 0..16 {
            v.push(rt.spawn(bad_lengths(addr, 0xBAD0 + i, s(), t())));
        }
    }
    if all || phase == "garbage" {
        for i in 0..16 {
            v.push(rt.spawn(garbage(addr, 0x6A4B_0000 + i, s(), t())));
        }
    }
    v
}

// ------------------------------------------------ well-behaved terminals

struct Measured {
    hist: Histogram<u64>,
    not_approved: u64,
    lost: u64,
}

/// One terminal, one request in flight, paced at `interval`, until
/// `until`. Cards `cards` (purchases only, so no daily count runs out).
async fn terminal(
    c: &mut Conn,
    cards: &[String],
    interval: Duration,
    until: Instant,
    n: &mut u64,
) -> Measured {
    let mut m = Measured {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        not_approved: 0,
        lost: 0,
    };
    let mut next = Instant::now();
    while Instant::now() < until {
        *n += 1;
        let card = &cards[*n as usize % cards.len()];
        let (t, f) = match *n % 3 {
            0 => (EWARONG, purchase(&EWARONG, card, &rice(100))),
            1 => (EWARONG_MAC, purchase(&EWARONG_MAC, card, &rice(100))),
            _ => (MERCHANT, req0200(&MERCHANT, card, "001000", 100)),
        };
        let msg = framed(&encode_for(&t, &f));
        let t0 = Instant::now();
        match c.call(&msg).await {
            Some(code) => {
                m.hist.saturating_record(t0.elapsed().as_micros() as u64);
                if code != *b"00" {
                    m.not_approved += 1;
                }
            }
            None => {
                m.lost += 1;
                *c = Conn::open(c.addr).await;
            }
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        } else {
            next = now;
        }
    }
    m
}

struct Conn {
    addr: SocketAddr,
    s: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            s: connect(addr).await.expect("terminal connects"),
            buf: BytesMut::with_capacity(4096),
            codec: FrameCodec::new(Framing::TwoByte),
        }
    }

    /// Send a framed request; DE39 of the answer, `None` if the connection
    /// failed or 30 s passed.
    async fn call(&mut self, framed: &[u8]) -> Option<[u8; 2]> {
        self.s.write_all(framed).await.ok()?;
        let Conn { s, buf, codec, .. } = self;
        let f: Bytes = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(Some(f)) = codec.decode(buf) {
                    return Some(f);
                }
                match s.read_buf(buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .ok()??;
        let m = kks_switch::iso8583::Message::decode(&f[..]).ok()?;
        m.get(39).and_then(|v| v.try_into().ok())
    }
}

async fn measure(
    conns: &mut [Conn],
    cards: &[Vec<String>],
    o: &Opts,
    d: Duration,
    n: &mut [u64],
) -> Measured {
    let until = Instant::now() + d;
    let interval = Duration::from_millis(o.interval_ms);
    let futs = conns
        .iter_mut()
        .zip(cards)
        .zip(n.iter_mut())
        .map(|((c, k), n)| terminal(c, k, interval, until, n));
    let all = futures::future::join_all(futs).await;
    let mut total = Measured {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        not_approved: 0,
        lost: 0,
    };
    for m in all {
        total.hist.add(&m.hist).unwrap();
        total.not_approved += m.not_approved;
        total.lost += m.lost;
    }
    total
}

fn main() {
    let o = opts();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fx = client.block_on(Fixture::sqlite());
    let log = fx.db.dir().unwrap().join("serve.log");
    let host = serve(fx.url(), &o, &log);
    let addr = host.addr;
    println!(
        "hostile: kks-switch serve (release) on {addr}, idle timeout {} ms, cap {}; \
         {} terminals, one request every {} ms each, {} s a phase",
        o.idle_ms, o.cap, o.terminals, o.interval_ms, o.seconds
    );
    let cards: Vec<Vec<String>> = (0..o.terminals)
        .map(|t| {
            (0..ACTIVE_CARDS)
                .filter(|i| *i as usize % o.terminals == t)
                .map(|i| active(i).pan())
                .collect()
        })
        .collect();
    let mut conns: Vec<Conn> = client.block_on(async {
        futures::future::join_all((0..o.terminals).map(|_| Conn::open(addr))).await
    });
    let mut n = vec![0u64; o.terminals];
    // Warm up (not reported).
    client.block_on(measure(
        &mut conns,
        &cards,
        &o,
        Duration::from_secs(2),
        &mut n,
    ));
    let phase_len = Duration::from_secs(o.seconds);

    let mut phases = vec!["quiet"];
    phases.extend(
        PHASES
            .iter()
            .filter(|p| o.only.as_deref().is_none_or(|x| x == **p)),
    );
    phases.push("quiet again");
    // The whole run stops by itself: a watchdog ends the process if it
    // takes far longer than its phases should.
    let phase_count = phases.len() as u64;
    let budget = Duration::from_secs(60 + phase_count * (o.seconds + o.idle_ms / 1000 + 1 + 60));
    let serve_pid = host.child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("hostile: still running after {budget:?}; giving up");
        let _ = Command::new("kill").args(["-KILL", &serve_pid]).status();
        std::process::exit(2);
    });
    let mut quiet_p99 = 0u64;
    let host_pid = host.child.id().to_string();
    println!(
        "{:<12} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5} {:>6} {:>9} {:>8} {:>6} {:>6} {:>6}",
        "phase",
        "answers",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "p99 ×",
        "not00",
        "lost",
        "att.conns",
        "att.ans",
        "host%",
        "bench%",
        "all%"
    );
    for phase in phases {
        let stop: Stop = Arc::new(AtomicBool::new(false));
        let st = Arc::new(AttackStats::default());
        let tasks = if phase.starts_with("quiet") {
            Vec::new()
        } else {
            start_attack(&attack_rt, phase, addr, &o, &stop, &st)
        };
        // Let the attack build up before measuring.
        if !tasks.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
        let cpu = Cpu::now(&host_pid);
        let m = client.block_on(measure(&mut conns, &cards, &o, phase_len, &mut n));
        let (host_cpu, bench_cpu, all_cpu) = cpu.since(&host_pid);
        stop.store(true, Ordering::Relaxed);
        // Attackers stop at their next check; any still busy after 5 s (a
        // connect waiting on a full backlog, say) are aborted.
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        attack_rt.block_on(async {
            let all = futures::future::join_all(tasks);
            let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
        });
        for a in aborts {
            a.abort();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        let p99 = m.hist.value_at_quantile(0.99);
        if phase == "quiet" {
            quiet_p99 = p99;
        }
        println!(
            "{:<12} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.2} {:>5} {:>6} {:>9} {:>8} {:>6.0} {:>6.0} {:>6.0}",
            phase,
            m.hist.len(),
            ms(m.hist.value_at_quantile(0.5)),
            ms(p99),
            ms(m.hist.value_at_quantile(0.999)),
            ms(m.hist.max()),
            p99 as f64 / quiet_p99.max(1) as f64,
            m.not_approved,
            m.lost,
            st.connections.load(Ordering::Relaxed),
            st.answers.load(Ordering::Relaxed),
            host_cpu,
            bench_cpu,
            all_cpu,
        );
        // Let the host close what the attack left before the next phase,
        // the terminals still sending (so they do not idle out; not reported).
        let settle = Duration::from_millis(o.idle_ms + 500);
        client.block_on(measure(&mut conns, &cards, &o, settle, &mut n));
    }
    drop(conns);
    drop(host);
}
