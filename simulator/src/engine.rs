//! The load engine: terminals multiplexed over a few TCP connections, on one
//! thread (a current-thread runtime and a `LocalSet`, state in one
//! `RefCell`), so that the generator uses at most one core.
//!
//! Tasks: one driver (timers, open-loop schedule, progress line), and per
//! connection one reader (decodes frames in place, matches answers by MTI
//! class + DE11 + DE41, lets closed-loop requests go) and one writer (writes
//! whatever has been queued since its last write in one call, so requests
//! are pipelined and batched).
//!
//! A card's requests always travel on the same connection (card index mod
//! connections), so they reach the host in the order they were made: a
//! purchase before its reversal, a wrong PIN before the right one.

use crate::gen::{
    classify, de7_at, encode_0200, encode_reversal, encode_sign_on, read_answer, Expect, Generator,
    Kind, Original, Outcome, Req, F_INJECT_TIMEOUT, F_RETRANSMIT,
};
use crate::population::Population;
use crate::scenario::{Mode, Scenario, TerminalBehaviour};
use crate::stats::{CardMoney, Stats, Summary};
use bytes::{Buf, Bytes, BytesMut};
use kks_switch::crypto::mac::verify_message_mac;
use kks_switch::iso8583::framing::frame_length;
use kks_switch::iso8583::{Framing, Message, FRAME_BYTES_MAX};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Read buffer kept free per connection.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How often the driver wakes (timers, open-loop schedule).
const TICK: Duration = Duration::from_millis(1);
/// Connect timeout per connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const CLASS_0200: u64 = 0;
const CLASS_0400: u64 = 1;
const CLASS_0800: u64 = 2;
/// Terminal index of messages without DE41 (0800 sign-on).
const NO_TERMINAL: u32 = u32::MAX;

/// Matching key: MTI class + terminal (DE41) + STAN (DE11).
#[inline]
fn key(class: u64, term: u32, stan: u32) -> u64 {
    (class << 52) | ((term as u64) << 20) | stan as u64
}

/// Multiplicative hash for the integer keys (SipHash is not needed here).
#[derive(Default)]
struct IntHasher(u64);
impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01B3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
}
type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// A request waiting for its answer.
struct Pending {
    seq: u64,
    kind: Kind,
    expect: Expect,
    flags: u8,
    orig: Original,
    intended_ns: u64,
    /// The framed bytes, kept for an identical retransmission.
    bytes: Option<Bytes>,
    /// For a retransmission: the first answer's DE39 and DE38.
    prior: Option<([u8; 2], [u8; 6])>,
    /// For a reversal: 0 for the 0400, then 1.. for each 0401.
    attempt: u32,
}

#[derive(Default)]
struct Conn {
    out: BytesMut,
    notify: Rc<Notify>,
    pending: IntMap<u64, Pending>,
    /// (deadline, key, seq) of requests, in send order (one timeout, so
    /// deadlines are increasing).
    deadlines: VecDeque<(u64, u64, u64)>,
    rev_deadlines: VecDeque<(u64, u64, u64)>,
    /// Reversals due for injected timeouts: (due, original, STAN).
    injected: VecDeque<(u64, Original, u32)>,
    alive: bool,
}

struct Schedule {
    mode: Mode,
    rate: f64,
    in_flight: usize,
    in_flight_max: usize,
    ramp_ns: f64,
    end_ns: u64,
    requests_max: u64,
    next_due_ns: f64,
    done_at: Option<u64>,
}

impl Schedule {
    fn ramp_share(&self, t_ns: f64) -> f64 {
        if self.ramp_ns <= 0.0 || t_ns >= self.ramp_ns {
            1.0
        } else {
            0.01 + 0.99 * t_ns / self.ramp_ns
        }
    }
}

struct State {
    pop: Population,
    gen: Generator,
    conns: Vec<Conn>,
    stats: Stats,
    money: IntMap<u32, CardMoney>,
    beh: TerminalBehaviour,
    sched: Schedule,
    in_flight: usize,
    seq: u64,
    generated: u64,
    unix_start_ms: u64,
    de7_cache: (u64, [u8; 10]),
    timed_out: IntMap<u64, ()>,
    sign_on_stan: u32,
    stopping: bool,
}

impl State {
    fn de7(&mut self, at_ns: u64) -> [u8; 10] {
        let s = (self.unix_start_ms + at_ns / 1_000_000) / 1000;
        if self.de7_cache.0 != s {
            self.de7_cache = (s, de7_at(s));
        }
        self.de7_cache.1
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn conn_of(&self, card: u32) -> usize {
        card as usize % self.conns.len()
    }

    /// Generate and queue one request of the seeded stream.
    fn generate(&mut self, intended_ns: u64, now_ns: u64) {
        let de7 = self.de7(intended_ns);
        let req = self.gen.next(&mut self.pop, de7);
        self.generated += 1;
        self.send_original(req, intended_ns, now_ns);
    }

    fn send_original(&mut self, req: Req, intended_ns: u64, now_ns: u64) {
        let ci = self.conn_of(req.card);
        if !self.conns[ci].alive {
            self.stats.totals.not_sent += 1;
            self.stats.error(req.kind, now_ns);
            return;
        }
        let seq = self.next_seq();
        let c = &mut self.conns[ci];
        let range = encode_0200(&req, &mut self.pop, &mut c.out);
        let bytes = (req.flags & F_RETRANSMIT != 0)
            .then(|| Bytes::copy_from_slice(&c.out[range.start - 2..range.end]));
        let k = key(CLASS_0200, req.term, req.stan);
        let orig = Original::from(&req);
        c.pending.insert(
            k,
            Pending {
                seq,
                kind: req.kind,
                expect: req.expect,
                flags: req.flags,
                orig,
                intended_ns,
                bytes,
                prior: None,
                attempt: 0,
            },
        );
        if req.flags & F_INJECT_TIMEOUT != 0 {
            let due = now_ns + self.beh.injected_timeout_ms * 1_000_000;
            c.injected.push_back((due, orig, req.rev_stan));
        } else {
            let dl = now_ns + self.beh.response_timeout_ms * 1_000_000;
            c.deadlines.push_back((dl, k, seq));
        }
        self.in_flight += 1;
        self.stats.sent(req.kind, now_ns);
    }

    /// Queue a reversal of `orig`: 0400 first, 0401 for each repeat.
    fn send_reversal(&mut self, orig: Original, attempt: u32, stan: u32, now_ns: u64) {
        let ci = self.conn_of(orig.card);
        if !self.conns[ci].alive {
            self.stats.totals.not_sent += 1;
            self.unresolved(&orig, now_ns);
            return;
        }
        let de7 = self.de7(now_ns);
        let seq = self.next_seq();
        let mti = if attempt == 0 { b"0400" } else { b"0401" };
        let c = &mut self.conns[ci];
        encode_reversal(&orig, mti, stan, &de7, &self.pop, &mut c.out);
        let k = key(CLASS_0400, orig.term, stan);
        c.pending.insert(
            k,
            Pending {
                seq,
                kind: Kind::Reversal,
                expect: Expect::Approve,
                flags: 0,
                orig,
                intended_ns: now_ns,
                bytes: None,
                prior: None,
                attempt,
            },
        );
        let dl = now_ns + self.beh.reversal_timeout_ms * 1_000_000;
        c.rev_deadlines.push_back((dl, k, seq));
        self.in_flight += 1;
        self.stats.totals.reversals_sent += 1;
        self.stats.sent(Kind::Reversal, now_ns);
    }

    fn repeat_reversal(&mut self, orig: Original, attempt: u32, now_ns: u64) {
        if attempt < self.beh.reversal_repeats_max {
            let stan = self.pop.terminals[orig.term as usize].next_repeat_stan();
            self.send_reversal(orig, attempt + 1, stan, now_ns);
        } else {
            self.unresolved(&orig, now_ns);
        }
    }

    fn unresolved(&mut self, orig: &Original, now_ns: u64) {
        self.stats.totals.unresolved += 1;
        self.stats.error(Kind::Reversal, now_ns);
        self.money.entry(orig.card).or_default().unresolved += orig.amount;
    }

    fn send_sign_on(&mut self, ci: usize, now_ns: u64) {
        self.sign_on_stan += 1;
        let stan = self.sign_on_stan;
        let de7 = self.de7(now_ns);
        let seq = self.next_seq();
        let c = &mut self.conns[ci];
        encode_sign_on(stan, &de7, &mut c.out);
        let k = key(CLASS_0800, NO_TERMINAL, stan);
        c.pending.insert(
            k,
            Pending {
                seq,
                kind: Kind::SignOn,
                expect: Expect::Approve,
                flags: 0,
                orig: Original {
                    kind: Kind::SignOn,
                    card: 0,
                    term: NO_TERMINAL,
                    stan,
                    amount: 0,
                    de7,
                },
                intended_ns: now_ns,
                bytes: None,
                prior: None,
                attempt: 0,
            },
        );
        let dl = now_ns + self.beh.response_timeout_ms * 1_000_000;
        c.deadlines.push_back((dl, k, seq));
        self.in_flight += 1;
        self.stats.sent(Kind::SignOn, now_ns);
    }

    /// One answer from connection `ci`.
    fn on_frame(&mut self, ci: usize, bytes: &[u8], now_ns: u64) {
        let unmatched = |s: &mut State| {
            s.stats.totals.unmatched += 1;
            s.stats.error(Kind::SignOn, now_ns);
        };
        let Ok(m) = Message::decode(bytes) else {
            return unmatched(self);
        };
        let Some(a) = read_answer(&m) else {
            return unmatched(self);
        };
        let class = match &a.mti[..3] {
            b"021" => CLASS_0200,
            b"041" | b"043" => CLASS_0400,
            b"081" => CLASS_0800,
            _ => return unmatched(self),
        };
        let term = match a.tid {
            Some(t) => match self.pop.tid_index.get(&t) {
                Some(&i) => i,
                None => return unmatched(self),
            },
            None => NO_TERMINAL,
        };
        let k = key(class, term, a.stan);
        let Some(p) = self.conns[ci].pending.remove(&k) else {
            if self.timed_out.remove(&k).is_some() {
                self.stats.totals.late += 1;
            } else {
                unmatched(self);
            }
            return;
        };
        self.in_flight -= 1;
        let code = a.code;
        if class != CLASS_0800 && self.beh.verify_response_mac {
            if let Some(mk) = &self.pop.terminals[term as usize].mac_key {
                if m.mac().is_none() || !verify_message_mac(mk, bytes) {
                    self.stats.totals.bad_mac += 1;
                    self.stats.error(p.kind, now_ns);
                }
            }
        }
        let lat = now_ns.saturating_sub(p.intended_ns);
        match p.kind {
            Kind::SignOn => {
                let o = if &code == b"00" {
                    Outcome::Ok
                } else {
                    Outcome::Error
                };
                self.stats.answer(Kind::SignOn, code, o, lat, now_ns);
            }
            Kind::Reversal => {
                if &code == b"00" {
                    self.stats
                        .answer(Kind::Reversal, code, Outcome::Ok, lat, now_ns);
                    self.stats.totals.reversals_approved += 1;
                    self.money.entry(p.orig.card).or_default().reversed_approved += p.orig.amount;
                } else {
                    // A reversal must be answered 00 (INTERFACE §5): repeat it.
                    self.stats
                        .answer(Kind::Reversal, code, Outcome::Error, lat, now_ns);
                    self.repeat_reversal(p.orig, p.attempt, now_ns);
                }
            }
            Kind::Retransmission => {
                let same = p.prior == Some((code, a.approval));
                if !same {
                    self.stats.totals.retransmit_mismatch += 1;
                }
                let o = if same { Outcome::Ok } else { Outcome::Error };
                self.stats
                    .answer(Kind::Retransmission, code, o, lat, now_ns);
            }
            kind => {
                if p.flags & F_INJECT_TIMEOUT != 0 {
                    // The terminal has given up on it (or will): ignored.
                    self.stats.totals.ignored += 1;
                    return;
                }
                let o = classify(p.expect, &code);
                self.stats.answer(kind, code, o, lat, now_ns);
                if &code == b"00" && kind.is_debit() {
                    let mo = self.money.entry(p.orig.card).or_default();
                    if kind.is_withdrawal() {
                        mo.withdrawals += p.orig.amount;
                    } else {
                        mo.purchases += p.orig.amount;
                    }
                }
                if let Some(b) = p.bytes {
                    // Send it again, byte for byte: same key, same content.
                    let seq = self.next_seq();
                    let c = &mut self.conns[ci];
                    c.out.extend_from_slice(&b);
                    c.pending.insert(
                        k,
                        Pending {
                            seq,
                            kind: Kind::Retransmission,
                            expect: p.expect,
                            flags: 0,
                            orig: p.orig,
                            intended_ns: now_ns,
                            bytes: None,
                            prior: Some((code, a.approval)),
                            attempt: 0,
                        },
                    );
                    let dl = now_ns + self.beh.response_timeout_ms * 1_000_000;
                    c.deadlines.push_back((dl, k, seq));
                    self.in_flight += 1;
                    self.stats.sent(Kind::Retransmission, now_ns);
                }
            }
        }
    }

    /// Expired timeouts and due reversals.
    fn timers(&mut self, now_ns: u64) {
        for ci in 0..self.conns.len() {
            while let Some(&(dl, k, seq)) = self.conns[ci].deadlines.front() {
                if dl > now_ns {
                    break;
                }
                self.conns[ci].deadlines.pop_front();
                let c = &mut self.conns[ci];
                if c.pending.get(&k).map(|p| p.seq) != Some(seq) {
                    continue;
                }
                let p = c.pending.remove(&k).expect("checked above");
                self.in_flight -= 1;
                self.timed_out.insert(k, ());
                self.stats.timeout(p.kind, now_ns);
                if p.kind.is_debit() {
                    // A real terminal reverses what it got no answer for.
                    self.money
                        .entry(p.orig.card)
                        .or_default()
                        .reversed_requested += p.orig.amount;
                    let stan = self.pop.terminals[p.orig.term as usize].next_repeat_stan();
                    self.send_reversal(p.orig, 0, stan, now_ns);
                }
            }
            while let Some(&(dl, k, seq)) = self.conns[ci].rev_deadlines.front() {
                if dl > now_ns {
                    break;
                }
                self.conns[ci].rev_deadlines.pop_front();
                let c = &mut self.conns[ci];
                if c.pending.get(&k).map(|p| p.seq) != Some(seq) {
                    continue;
                }
                let p = c.pending.remove(&k).expect("checked above");
                self.in_flight -= 1;
                self.timed_out.insert(k, ());
                self.stats.timeout(Kind::Reversal, now_ns);
                self.repeat_reversal(p.orig, p.attempt, now_ns);
            }
            while let Some(&(due, orig, stan)) = self.conns[ci].injected.front() {
                if due > now_ns {
                    break;
                }
                self.conns[ci].injected.pop_front();
                self.money.entry(orig.card).or_default().reversed_requested += orig.amount;
                self.send_reversal(orig, 0, stan, now_ns);
            }
        }
    }

    /// Let the seeded stream go as the mode allows.
    fn pump(&mut self, now_ns: u64) {
        if self.sched.done_at.is_some() || self.stopping {
            return;
        }
        let over = |s: &State| {
            (s.sched.requests_max > 0 && s.generated >= s.sched.requests_max)
                || now_ns >= s.sched.end_ns
        };
        match self.sched.mode {
            Mode::OpenLoop => {
                while (self.sched.next_due_ns as u64) <= now_ns
                    && self.in_flight < self.sched.in_flight_max
                    && (self.sched.next_due_ns as u64) < self.sched.end_ns
                    && !(self.sched.requests_max > 0 && self.generated >= self.sched.requests_max)
                {
                    let due = self.sched.next_due_ns;
                    self.generate(due as u64, now_ns);
                    let rate = self.sched.rate * self.sched.ramp_share(due);
                    self.sched.next_due_ns += 1e9 / rate;
                }
            }
            Mode::ClosedLoop => {
                let share = self.sched.ramp_share(now_ns as f64);
                let target = ((self.sched.in_flight as f64 * share).ceil() as usize).max(1);
                while self.in_flight < target && !over(self) {
                    self.generate(now_ns, now_ns);
                }
            }
        }
        if over(self)
            || (self.sched.mode == Mode::OpenLoop
                && (self.sched.next_due_ns as u64) >= self.sched.end_ns)
        {
            self.sched.done_at = Some(now_ns);
        }
    }

    fn flush(&self) {
        for c in &self.conns {
            if !c.out.is_empty() {
                c.notify.notify_one();
            }
        }
    }

    fn conn_lost(&mut self, ci: usize, now_ns: u64) {
        let c = &mut self.conns[ci];
        if !c.alive {
            return;
        }
        c.alive = false;
        c.out.clear();
        let lost: Vec<Pending> = c.pending.drain().map(|(_, p)| p).collect();
        c.deadlines.clear();
        c.rev_deadlines.clear();
        let injected: Vec<_> = c.injected.drain(..).collect();
        for p in lost {
            self.in_flight -= 1;
            self.stats.timeout(p.kind, now_ns);
            if p.kind == Kind::Reversal || (p.kind.is_debit() && p.flags & F_INJECT_TIMEOUT == 0) {
                self.unresolved(&p.orig, now_ns);
            }
        }
        for (_, orig, _) in injected {
            self.unresolved(&orig, now_ns);
        }
    }
}

/// What the caller passes.
pub struct RunOptions {
    pub target: SocketAddr,
    pub seed: u64,
    pub progress: bool,
}

fn ns_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Run a scenario's load (no wave, no report) against `target`. Must be
/// called inside a `LocalSet`.
pub async fn run(sc: &Scenario, pop: Population, opt: RunOptions) -> Result<Summary, String> {
    let gen = Generator::new(&pop, &sc.mix, opt.seed);
    if !gen.possible() {
        return Err(
            "no card can do any operation of the mix (no terminals of the right kind?)".into(),
        );
    }
    let n = sc.load.connections;
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(opt.target))
            .await
            .map_err(|_| format!("connection {i} to {}: timed out", opt.target))?
            .map_err(|e| format!("connection {i} to {}: {e}", opt.target))?;
        let _ = s.set_nodelay(true);
        streams.push(s);
    }
    let unix_start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = Instant::now();
    let (cpu_u0, cpu_s0) = crate::stats::cpu_seconds();
    let l = &sc.load;
    let sched = Schedule {
        mode: l.mode,
        rate: l.rate_per_s,
        in_flight: l.in_flight,
        in_flight_max: l.in_flight_max.max(1),
        ramp_ns: l.ramp_s * 1e9,
        end_ns: ((l.ramp_s + l.duration_s) * 1e9) as u64,
        requests_max: l.requests_max,
        next_due_ns: 0.0,
        done_at: None,
    };
    let terminals = pop.terminals.len();
    let cards = pop.cards.len();
    let state = Rc::new(RefCell::new(State {
        pop,
        gen,
        conns: (0..n)
            .map(|_| Conn {
                alive: true,
                out: BytesMut::with_capacity(READ_CHUNK_BYTES),
                ..Conn::default()
            })
            .collect(),
        stats: Stats::new(),
        money: IntMap::default(),
        beh: sc.terminal.clone(),
        sched,
        in_flight: 0,
        seq: 0,
        generated: 0,
        unix_start_ms,
        de7_cache: (u64::MAX, [b'0'; 10]),
        timed_out: IntMap::default(),
        sign_on_stan: 0,
        stopping: false,
    }));

    let mut tasks = Vec::new();
    for (ci, s) in streams.into_iter().enumerate() {
        let (mut rd, mut wr) = s.into_split();
        let st = state.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
            loop {
                buf.reserve(READ_CHUNK_BYTES);
                let r = rd.read_buf(&mut buf).await;
                let now = ns_since(start);
                let mut g = st.borrow_mut();
                match r {
                    Ok(0) | Err(_) => {
                        g.conn_lost(ci, now);
                        return;
                    }
                    Ok(_) => {}
                }
                let mut off = 0;
                loop {
                    match frame_length(Framing::TwoByte, &buf[off..], FRAME_BYTES_MAX) {
                        Ok(Some(len)) if buf.len() - off >= 2 + len => {
                            g.on_frame(ci, &buf[off + 2..off + 2 + len], now);
                            off += 2 + len;
                        }
                        Ok(_) => break,
                        Err(_) => {
                            g.conn_lost(ci, now);
                            return;
                        }
                    }
                }
                buf.advance(off);
                g.pump(now);
                g.flush();
            }
        }));
        let st = state.clone();
        let notify = state.borrow().conns[ci].notify.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut spare = BytesMut::with_capacity(READ_CHUNK_BYTES);
            loop {
                notify.notified().await;
                {
                    let mut g = st.borrow_mut();
                    if g.stopping || !g.conns[ci].alive {
                        return;
                    }
                    std::mem::swap(&mut g.conns[ci].out, &mut spare);
                }
                if spare.is_empty() {
                    continue;
                }
                if wr.write_all(&spare).await.is_err() {
                    let now = ns_since(start);
                    st.borrow_mut().conn_lost(ci, now);
                    return;
                }
                spare.clear();
            }
        }));
    }

    {
        let mut g = state.borrow_mut();
        for ci in 0..n {
            g.send_sign_on(ci, 0);
        }
        g.flush();
    }

    let tty = std::io::stderr().is_terminal();
    let drain_ns = (sc.load.drain_s * 1e9) as u64;
    let mut next_progress = 1_000_000_000u64;
    loop {
        let now = ns_since(start);
        let finished = {
            let mut g = state.borrow_mut();
            g.timers(now);
            g.pump(now);
            g.flush();
            if opt.progress && now >= next_progress {
                next_progress += 1_000_000_000;
                let t = &g.stats.totals;
                let line = format!(
                    "[{:>6.1}s] sent {} answered {} ({}/s) errors {} timeouts {} p99 {:.2} ms in flight {}",
                    now as f64 / 1e9,
                    t.sent,
                    t.answered,
                    g.stats.last_second_answered(now),
                    t.errors,
                    t.timeouts,
                    g.stats.p99_ms(),
                    g.in_flight
                );
                if tty {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
            }
            let all_dead = g.conns.iter().all(|c| !c.alive);
            match g.sched.done_at {
                Some(d) => {
                    let idle = g.in_flight == 0 && g.conns.iter().all(|c| c.injected.is_empty());
                    idle || now >= d + drain_ns || all_dead
                }
                None => all_dead,
            }
        };
        if finished {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    if opt.progress && tty {
        eprintln!();
    }
    let end = ns_since(start);
    let (cpu_u1, cpu_s1) = crate::stats::cpu_seconds();
    let mut g = state.borrow_mut();
    g.stopping = true;
    for c in &g.conns {
        c.notify.notify_one();
    }
    // Whatever is still waiting now never got an answer.
    let left: Vec<(usize, Pending)> = g
        .conns
        .iter_mut()
        .enumerate()
        .flat_map(|(ci, c)| c.pending.drain().map(move |(_, p)| (ci, p)))
        .collect();
    for (_, p) in left {
        if p.flags & F_INJECT_TIMEOUT != 0 {
            continue;
        }
        g.stats.timeout(p.kind, end);
        if p.kind == Kind::Reversal || p.kind.is_debit() {
            let o = p.orig;
            g.unresolved(&o, end);
        }
    }
    for t in tasks {
        t.abort();
    }
    let load_ns = g.sched.done_at.unwrap_or(end).max(1);
    let mut sum = Summary {
        scenario: sc.name.clone(),
        seed: opt.seed,
        mode: match sc.load.mode {
            Mode::OpenLoop => "open-loop".into(),
            Mode::ClosedLoop => "closed-loop".into(),
        },
        target: opt.target.to_string(),
        started_unix_ms: unix_start_ms,
        load_s: load_ns as f64 / 1e9,
        elapsed_s: end as f64 / 1e9,
        connections: n,
        terminals,
        cards,
        ..Summary::default()
    };
    g.stats.finish(&mut sum);
    // Throughput over the load phase (answers that came during the drain
    // belong to requests made during the load).
    sum.throughput_rps = sum.totals.answered as f64 / sum.load_s;
    let cpu = (cpu_u1 - cpu_u0) + (cpu_s1 - cpu_s0);
    sum.cpu = crate::stats::Cpu {
        user_s: cpu_u1 - cpu_u0,
        system_s: cpu_s1 - cpu_s0,
        cores: cpu / (end as f64 / 1e9),
        runtime_threads: 1,
    };
    let State { money, pop, .. } = &*g;
    sum.money = money
        .iter()
        .map(|(card, m)| {
            (
                pop.cards[*card as usize].pan.as_str().to_string(),
                m.clone(),
            )
        })
        .collect();
    Ok(sum)
}
