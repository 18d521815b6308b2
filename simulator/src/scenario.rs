//! Scenario files (TOML): how much load, of what kind, for how long, and
//! what counts as a pass. Every field has a default so that a scenario names
//! only what it changes; `scenarios/disbursement-day.toml` lists them all.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One scenario.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the report.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of the request stream (overridden by `--seed`). The same seed,
    /// population and scenario give the same requests in the same order.
    #[serde(default = "one")]
    pub seed: u64,
    #[serde(default)]
    pub load: Load,
    #[serde(default)]
    pub mix: Mix,
    #[serde(default)]
    pub terminal: TerminalBehaviour,
    /// Commands run before the rush (the credit wave).
    #[serde(default)]
    pub wave: Wave,
    /// k6-style pass conditions, e.g. `"p99_ms < 10"`, `"error_rate < 0.01"`,
    /// `"purchase.p99_ms < 20"`. Any missed → exit code 1.
    #[serde(default)]
    pub thresholds: Vec<String>,
}

fn default_name() -> String {
    "unnamed".into()
}
fn one() -> u64 {
    1
}

/// Open loop: requests are due at a target rate whether or not answers come
/// back, and latency is measured from the time a request was due (so a
/// stalled host shows up as latency, not as a quietly lower rate:
/// no coordinated omission). Closed loop: a fixed number of requests in
/// flight, each answer lets the next one go (as fast as it goes).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    OpenLoop,
    ClosedLoop,
}

/// Shape and size of the load.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Load {
    pub mode: Mode,
    /// Open loop: target requests per second after the ramp.
    pub rate_per_s: f64,
    /// Closed loop: requests in flight (over all connections) after the ramp.
    pub in_flight: usize,
    /// Seconds to go linearly from 1 % to the full rate / in-flight count.
    pub ramp_s: f64,
    /// Seconds at full load after the ramp.
    pub duration_s: f64,
    /// Stop after this many generated requests (0: no limit).
    pub requests_max: u64,
    /// TCP connections the terminals share (each terminal's traffic is
    /// carried by the connection of the card it serves, so that one card's
    /// requests arrive in order).
    pub connections: usize,
    /// Open loop: most requests in flight before new ones wait (memory bound);
    /// waiting still counts as latency because it is measured from the due time.
    pub in_flight_max: usize,
    /// After the load stops, how long to wait for outstanding answers and
    /// reversals.
    pub drain_s: f64,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            mode: Mode::OpenLoop,
            rate_per_s: 1000.0,
            in_flight: 256,
            ramp_s: 0.0,
            duration_s: 10.0,
            requests_max: 0,
            connections: 8,
            in_flight_max: 200_000,
            drain_s: 10.0,
        }
    }
}

/// Relative weights of what cardholders do (need not sum to 1).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    /// Balance inquiry (310000) at the card's e-Warong or agent.
    pub balance_inquiry: f64,
    /// BPNT purchase (000000, DE48 basket) at the card's e-Warong.
    pub bpnt_purchase: f64,
    /// PKH cash withdrawal (010000) at the card's agent.
    pub pkh_withdrawal: f64,
    /// PKH purchase (001000) at the card's e-Warong.
    pub pkh_purchase: f64,
    /// A wrong PIN on an inquiry, followed by the cardholder retyping the
    /// right one (so no card is blocked by the load itself).
    pub wrong_pin: f64,
    /// Share of BPNT baskets that carry one item BPNT does not allow (57).
    pub ineligible_share: f64,
    /// Share of financial requests sent a second time, byte for byte, after
    /// the first answer (the host must answer the same and apply once).
    pub retransmit_share: f64,
    /// Share of purchases and withdrawals whose answer the terminal treats
    /// as timed out: it ignores the answer and sends a reversal after
    /// `terminal.injected_timeout_ms`.
    pub timeout_share: f64,
    /// Only cards enrolled in the program (from `families.csv` beside
    /// `cards.csv`, when present) get that program's requests.
    pub respect_enrolment: bool,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            balance_inquiry: 30.0,
            bpnt_purchase: 45.0,
            pkh_withdrawal: 20.0,
            pkh_purchase: 2.0,
            wrong_pin: 3.0,
            ineligible_share: 0.05,
            retransmit_share: 0.01,
            timeout_share: 0.005,
            respect_enrolment: true,
        }
    }
}

/// How the emulated terminals behave.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TerminalBehaviour {
    /// Wait this long for an answer before reversing (INTERFACE §1: 30 s).
    pub response_timeout_ms: u64,
    /// The injected timeouts (`mix.timeout_share`) reverse after this long.
    pub injected_timeout_ms: u64,
    /// Wait this long for a reversal's answer before repeating it as 0401.
    pub reversal_timeout_ms: u64,
    /// Give up on a reversal after this many repeats (counted unresolved).
    pub reversal_repeats_max: u32,
    /// Check the MAC on every answer to a MAC terminal.
    pub verify_response_mac: bool,
}

impl Default for TerminalBehaviour {
    fn default() -> Self {
        TerminalBehaviour {
            response_timeout_ms: 30_000,
            injected_timeout_ms: 5,
            reversal_timeout_ms: 5_000,
            reversal_repeats_max: 5,
            verify_response_mac: true,
        }
    }
}

/// Commands run, in order, before the rush: typically
/// `kks-switch disburse` through the running server's admin endpoint.
/// In each argument, `{db}` is replaced by `--db` and a first argument
/// `kks-switch` by the binary found next to `kks-sim` (or `--kks-switch`).
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Wave {
    pub commands: Vec<Vec<String>>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        let l = &self.load;
        if l.connections == 0 {
            return Err("load.connections must be at least 1".into());
        }
        if l.mode == Mode::OpenLoop && l.rate_per_s.is_nan() || l.rate_per_s <= 0.0 {
            return Err("load.rate_per_s must be > 0 in open-loop mode".into());
        }
        if l.mode == Mode::ClosedLoop && l.in_flight == 0 {
            return Err("load.in_flight must be at least 1 in closed-loop mode".into());
        }
        if l.duration_s.is_nan() || l.ramp_s.is_nan() || l.duration_s < 0.0 || l.ramp_s < 0.0 {
            return Err("load.duration_s and load.ramp_s must be >= 0".into());
        }
        let m = &self.mix;
        let w = [
            m.balance_inquiry,
            m.bpnt_purchase,
            m.pkh_withdrawal,
            m.pkh_purchase,
            m.wrong_pin,
        ];
        if w.iter().any(|x| x.is_nan() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
            return Err("mix weights must be >= 0 with a positive sum".into());
        }
        for (n, v) in [
            ("ineligible_share", m.ineligible_share),
            ("retransmit_share", m.retransmit_share),
            ("timeout_share", m.timeout_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("mix.{n} must be within 0..=1"));
            }
        }
        if m.retransmit_share + m.timeout_share > 1.0 {
            return Err("mix.retransmit_share + mix.timeout_share must be <= 1".into());
        }
        for t in &self.thresholds {
            crate::stats::Threshold::parse(t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse() {
        for f in ["disbursement-day.toml", "ci-smoke.toml", "headroom.toml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scenarios")
                .join(f);
            Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn defaults_and_errors() {
        let s = Scenario::parse("name = \"x\"").unwrap();
        assert_eq!(s.load.mode, Mode::OpenLoop);
        assert!(Scenario::parse("[load]\nconnections = 0").is_err());
        assert!(Scenario::parse("thresholds = [\"p99_ms <\"]").is_err());
        assert!(Scenario::parse("[mix]\nbogus = 1").is_err());
    }
}
