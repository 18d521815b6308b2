//! Measurement: HDR histograms per message type (latency in µs), response
//! codes, a per-second timeline, the JSON summary, and k6-style thresholds.

use crate::gen::{Kind, Outcome, KINDS};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Highest latency the main histograms hold (1 hour, in µs); larger values
/// are clamped to it.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Per-second histograms are coarser (2 significant digits, up to 60 s) so
/// that an hour-long run stays within a few tens of MB.
const SECOND_LATENCY_US_MAX: u64 = 60_000_000;

fn hist(max: u64, sig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, max, sig).expect("valid histogram bounds")
}

struct KindStats {
    hist: Histogram<u64>,
    codes: BTreeMap<[u8; 2], u64>,
    totals: KindTotals,
}

struct Second {
    sent: u64,
    answered: u64,
    errors: u64,
    hist: Histogram<u64>,
}

/// Everything counted during a run.
pub struct Stats {
    kinds: Vec<KindStats>,
    all: Histogram<u64>,
    codes: BTreeMap<[u8; 2], u64>,
    seconds: Vec<Second>,
    pub totals: Totals,
}

/// Counters over the whole run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Requests written (seeded stream, retransmissions, reversals, sign-ons).
    pub sent: u64,
    /// Answers matched to a request (injected-timeout originals excluded).
    pub answered: u64,
    /// Answered as expected (approval, or the expected decline).
    pub ok: u64,
    /// Business declines (51, 61, 65, 62, 75).
    pub declines: u64,
    /// Answers that a correct host never gives here, plus everything below
    /// marked "error".
    pub errors: u64,
    /// No answer within `response_timeout_ms` (error).
    pub timeouts: u64,
    /// Answers to requests already given up on.
    pub late: u64,
    /// Answers that match no request (error).
    pub unmatched: u64,
    /// Answers to MAC terminals without a valid MAC (error).
    pub bad_mac: u64,
    /// Retransmissions answered differently from the original (error).
    pub retransmit_mismatch: u64,
    /// Answers the terminals ignored on purpose (injected timeouts).
    pub ignored: u64,
    pub reversals_sent: u64,
    pub reversals_approved: u64,
    /// Reversals still unanswered after every repeat (error).
    pub unresolved: u64,
    /// Requests that could not be sent (connection lost; error).
    pub not_sent: u64,
    /// errors / (answered + timeouts + not_sent).
    pub error_rate: f64,
}

/// Counters per message type.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KindTotals {
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub error_rate: f64,
}

/// Latency figures in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tick {
    pub t: u64,
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One bar of the latency distribution.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound of the bar, ms.
    pub le_ms: f64,
    pub count: u64,
}

fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

fn code_text(c: &[u8; 2]) -> String {
    String::from_utf8_lossy(c).into_owned()
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            kinds: KINDS
                .iter()
                .map(|_| KindStats {
                    hist: hist(LATENCY_US_MAX, 3),
                    codes: BTreeMap::new(),
                    totals: KindTotals::default(),
                })
                .collect(),
            all: hist(LATENCY_US_MAX, 3),
            codes: BTreeMap::new(),
            seconds: Vec::new(),
            totals: Totals::default(),
        }
    }

    fn second(&mut self, now_ns: u64) -> &mut Second {
        let s = (now_ns / 1_000_000_000) as usize;
        while self.seconds.len() <= s {
            self.seconds.push(Second {
                sent: 0,
                answered: 0,
                errors: 0,
                hist: hist(SECOND_LATENCY_US_MAX, 2),
            });
        }
        &mut self.seconds[s]
    }

    pub fn sent(&mut self, kind: Kind, now_ns: u64) {
        self.totals.sent += 1;
        self.kinds[kind as usize].totals.sent += 1;
        self.second(now_ns).sent += 1;
    }

    /// An answer to a request of `kind`, due at `intended_ns`.
    pub fn answer(
        &mut self,
        kind: Kind,
        code: [u8; 2],
        outcome: Outcome,
        lat_ns: u64,
        now_ns: u64,
    ) {
        let us = (lat_ns / 1000).max(1);
        self.totals.answered += 1;
        match outcome {
            Outcome::Ok => self.totals.ok += 1,
            Outcome::Decline => self.totals.declines += 1,
            Outcome::Error => self.totals.errors += 1,
        }
        let k = &mut self.kinds[kind as usize];
        k.totals.answered += 1;
        if outcome == Outcome::Error {
            k.totals.errors += 1;
        }
        let _ = k.hist.record(us.min(LATENCY_US_MAX));
        *k.codes.entry(code).or_default() += 1;
        let _ = self.all.record(us.min(LATENCY_US_MAX));
        *self.codes.entry(code).or_default() += 1;
        let s = self.second(now_ns);
        s.answered += 1;
        if outcome == Outcome::Error {
            s.errors += 1;
        }
        let _ = s.hist.record(us.min(SECOND_LATENCY_US_MAX));
    }

    /// An error that is not an answer (timeout, bad MAC, mismatch, …),
    /// charged to `kind`.
    pub fn error(&mut self, kind: Kind, now_ns: u64) {
        self.totals.errors += 1;
        self.kinds[kind as usize].totals.errors += 1;
        self.second(now_ns).errors += 1;
    }

    pub fn timeout(&mut self, kind: Kind, now_ns: u64) {
        self.totals.timeouts += 1;
        self.kinds[kind as usize].totals.timeouts += 1;
        self.error(kind, now_ns);
    }

    /// p99 so far, ms (progress line).
    pub fn p99_ms(&self) -> f64 {
        self.all.value_at_quantile(0.99) as f64 / 1000.0
    }

    /// Answers in the last complete second (progress line).
    pub fn last_second_answered(&self, now_ns: u64) -> u64 {
        let s = (now_ns / 1_000_000_000) as usize;
        if s == 0 {
            return 0;
        }
        self.seconds.get(s - 1).map(|x| x.answered).unwrap_or(0)
    }

    /// Fill the measurement part of a summary.
    pub fn finish(&mut self, sum: &mut Summary) {
        let t = &mut self.totals;
        let denom = t.answered + t.timeouts + t.not_sent;
        t.error_rate = if denom == 0 {
            0.0
        } else {
            t.errors as f64 / denom as f64
        };
        sum.totals = t.clone();
        sum.latency_ms.insert("all".into(), latency(&self.all));
        sum.codes.insert(
            "all".into(),
            self.codes.iter().map(|(c, n)| (code_text(c), *n)).collect(),
        );
        for (kind, k) in KINDS.iter().zip(self.kinds.iter_mut()) {
            if k.totals.sent == 0 && k.totals.answered == 0 {
                continue;
            }
            let d = k.totals.answered + k.totals.timeouts;
            k.totals.error_rate = if d == 0 {
                0.0
            } else {
                k.totals.errors as f64 / d as f64
            };
            sum.by_kind.insert(kind.name().into(), k.totals.clone());
            sum.latency_ms.insert(kind.name().into(), latency(&k.hist));
            sum.codes.insert(
                kind.name().into(),
                k.codes.iter().map(|(c, n)| (code_text(c), *n)).collect(),
            );
        }
        sum.timeline = self
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let l = latency(&s.hist);
                Tick {
                    t: i as u64,
                    sent: s.sent,
                    answered: s.answered,
                    errors: s.errors,
                    p50_ms: l.p50_ms,
                    p90_ms: l.p90_ms,
                    p99_ms: l.p99_ms,
                    max_ms: l.max_ms,
                }
            })
            .collect();
        // Distribution: bars on a log scale, 4 per doubling from 10 µs.
        let mut bars = Vec::new();
        if !self.all.is_empty() {
            let mut lo = 0u64;
            let mut hi = 10.0f64;
            let max = self.all.max();
            loop {
                let h = hi as u64;
                let n = self.all.count_between(lo + 1, h);
                bars.push(Bucket {
                    le_ms: h as f64 / 1000.0,
                    count: if lo == 0 { n + self.all.count_at(0) } else { n },
                });
                if h >= max {
                    break;
                }
                lo = h;
                hi *= 2f64.powf(0.25);
            }
        }
        sum.distribution = bars;
    }
}

/// Per card: what the simulator saw (amounts in DE4 minor units).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CardMoney {
    /// Approved purchases it saw answered 00.
    pub purchases: u64,
    /// Approved withdrawals it saw answered 00.
    pub withdrawals: u64,
    /// Originals it reversed (answer never seen, or ignored on purpose).
    pub reversed_requested: u64,
    /// Of those, reversals answered 00.
    pub reversed_approved: u64,
    /// Reversals never answered 00 (the ledger may or may not hold these).
    pub unresolved: u64,
}

/// The money check's verdict.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MoneyCheck {
    pub passed: bool,
    pub cards_checked: u64,
    pub cards_mismatched: u64,
    /// Sum over cards of approved debits the simulator saw.
    pub sim_net: u64,
    /// Net debits (purchases + withdrawals − reversals) the ledger gained.
    pub ledger_net: i128,
    /// Up to 20 mismatches, PANs masked.
    pub mismatches: Vec<String>,
    pub audit_violations: Vec<String>,
}

/// A wave command and how it went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WaveStep {
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub seconds: f64,
}

/// One threshold and its result.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub expr: String,
    pub value: Option<f64>,
    pub passed: bool,
}

/// CPU used by the simulator process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cpu {
    pub user_s: f64,
    pub system_s: f64,
    /// (user + system) / wall time of the load phase: cores in use.
    pub cores: f64,
    /// Runtime worker threads the generator ran on.
    pub runtime_threads: usize,
}

/// Per-card figures from `kks-switch audit --json`, before the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LedgerFigures {
    pub purchases: u64,
    pub withdrawals: u64,
    pub reversed: u64,
}

/// The JSON summary of a run (`summary.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub mode: String,
    pub target: String,
    pub started_unix_ms: u64,
    /// Seconds the load ran (ramp + duration, or less with requests_max).
    pub load_s: f64,
    /// Seconds including the drain.
    pub elapsed_s: f64,
    pub connections: usize,
    pub terminals: usize,
    pub cards: usize,
    pub totals: Totals,
    /// Answers per second over the load phase.
    pub throughput_rps: f64,
    pub by_kind: BTreeMap<String, KindTotals>,
    pub latency_ms: BTreeMap<String, Latency>,
    pub codes: BTreeMap<String, BTreeMap<String, u64>>,
    pub timeline: Vec<Tick>,
    pub distribution: Vec<Bucket>,
    pub thresholds: Vec<ThresholdResult>,
    pub cpu: Cpu,
    pub wave: Vec<WaveStep>,
    /// What the simulator saw per card (PAN → figures).
    pub money: BTreeMap<String, CardMoney>,
    /// Ledger figures before the run (when `--db` was given), PAN → figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BTreeMap<String, LedgerFigures>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub money_check: Option<MoneyCheck>,
    /// Thresholds met (and the money check, when run).
    pub passed: bool,
}

/// `[kind.]metric OP number`, e.g. `p99_ms < 10`, `bpnt_purchase.p99_ms < 20`.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub kind: Option<String>,
    pub metric: String,
    pub op: Op,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

const LATENCY_METRICS: [&str; 6] = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"];
const TOTAL_METRICS: [&str; 6] = [
    "error_rate",
    "errors",
    "timeouts",
    "unresolved",
    "throughput_rps",
    "answered",
];

impl Threshold {
    pub fn parse(s: &str) -> Result<Threshold, String> {
        let bad = || format!("threshold {s:?}: expected `[type.]metric < number` (or <=, >, >=)");
        let (lhs, op, rhs) = ["<=", ">=", "<", ">"]
            .iter()
            .find_map(|o| s.split_once(o).map(|(l, r)| (l, *o, r)))
            .ok_or_else(bad)?;
        let op = match op {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            _ => Op::Ge,
        };
        let value: f64 = rhs.trim().parse().map_err(|_| bad())?;
        let lhs = lhs.trim();
        let (kind, metric) = match lhs.split_once('.') {
            Some((k, m)) => (Some(k.to_string()), m.to_string()),
            None => (None, lhs.to_string()),
        };
        if let Some(k) = &kind {
            if !KINDS.iter().any(|x| x.name() == k) {
                return Err(format!("threshold {s:?}: unknown message type {k:?}"));
            }
            if !LATENCY_METRICS.contains(&metric.as_str()) && metric != "error_rate" {
                return Err(format!("threshold {s:?}: unknown metric {metric:?}"));
            }
        } else if !LATENCY_METRICS.contains(&metric.as_str())
            && !TOTAL_METRICS.contains(&metric.as_str())
        {
            return Err(format!("threshold {s:?}: unknown metric {metric:?}"));
        }
        Ok(Threshold {
            kind,
            metric,
            op,
            value,
        })
    }

    /// The metric's value in `sum` (None when that type never ran).
    pub fn value_in(&self, sum: &Summary) -> Option<f64> {
        let key = self.kind.as_deref().unwrap_or("all");
        if LATENCY_METRICS.contains(&self.metric.as_str()) {
            let l = sum.latency_ms.get(key)?;
            return Some(match self.metric.as_str() {
                "p50_ms" => l.p50_ms,
                "p90_ms" => l.p90_ms,
                "p99_ms" => l.p99_ms,
                "p999_ms" => l.p999_ms,
                "max_ms" => l.max_ms,
                _ => l.mean_ms,
            });
        }
        if let Some(k) = &self.kind {
            return sum.by_kind.get(k).map(|t| t.error_rate);
        }
        let t = &sum.totals;
        Some(match self.metric.as_str() {
            "error_rate" => t.error_rate,
            "errors" => t.errors as f64,
            "timeouts" => t.timeouts as f64,
            "unresolved" => t.unresolved as f64,
            "answered" => t.answered as f64,
            _ => sum.throughput_rps,
        })
    }

    pub fn check(&self, v: f64) -> bool {
        match self.op {
            Op::Lt => v < self.value,
            Op::Le => v <= self.value,
            Op::Gt => v > self.value,
            Op::Ge => v >= self.value,
        }
    }
}

/// Evaluate every threshold; a metric that has no value (type never ran)
/// passes, as in k6.
pub fn evaluate(exprs: &[String], sum: &Summary) -> Vec<ThresholdResult> {
    exprs
        .iter()
        .map(|e| match Threshold::parse(e) {
            Ok(t) => {
                let v = t.value_in(sum);
                ThresholdResult {
                    expr: e.clone(),
                    value: v,
                    passed: v.map(|v| t.check(v)).unwrap_or(true),
                }
            }
            Err(_) => ThresholdResult {
                expr: e.clone(),
                value: None,
                passed: false,
            },
        })
        .collect()
}

/// CPU seconds (user, system) of this process, from /proc/self/stat.
pub fn cpu_seconds() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let tick = 100.0; // USER_HZ on Linux
    let g = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (g(11), g(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_check() {
        let t = Threshold::parse("p99_ms < 10").unwrap();
        assert_eq!(t.metric, "p99_ms");
        assert!(t.check(9.9) && !t.check(10.0));
        let t = Threshold::parse("bpnt_purchase.p99_ms <= 20").unwrap();
        assert_eq!(t.kind.as_deref(), Some("bpnt_purchase"));
        assert!(Threshold::parse("error_rate < 0.01").is_ok());
        assert!(Threshold::parse("nope < 1").is_err());
        assert!(Threshold::parse("p99_ms ~ 1").is_err());
        assert!(Threshold::parse("fish.p99_ms < 1").is_err());
    }

    #[test]
    fn summary_figures() {
        let mut s = Stats::new();
        for i in 1..=1000u64 {
            s.sent(Kind::BalanceInquiry, i * 1_000_000);
            s.answer(
                Kind::BalanceInquiry,
                *b"00",
                Outcome::Ok,
                i * 1000,
                i * 1_000_000,
            );
        }
        s.timeout(Kind::BpntPurchase, 5);
        let mut sum = Summary::default();
        s.finish(&mut sum);
        let l = &sum.latency_ms["all"];
        assert!((l.p50_ms - 0.5).abs() < 0.01, "{l:?}");
        assert_eq!(sum.codes["all"]["00"], 1000);
        assert_eq!(sum.totals.errors, 1);
        assert!((sum.totals.error_rate - 1.0 / 1001.0).abs() < 1e-9);
        assert_eq!(sum.distribution.iter().map(|b| b.count).sum::<u64>(), 1000);
        let r = evaluate(&["p50_ms < 1".into(), "error_rate < 0.0001".into()], &sum);
        assert!(r[0].passed && !r[1].passed);
    }
}
