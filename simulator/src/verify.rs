//! The money check: what the simulator saw approved against what the
//! ledger holds (`kks-switch audit --json`, INTERFACE §8).
//!
//! Per card, with the ledger's figures taken as the change since the
//! baseline (the audit before the run, when there was one):
//!
//! - every approved debit is present: ledger purchases ≥ approved purchases
//!   seen, ledger withdrawals ≥ approved withdrawals seen;
//! - nothing unapproved is posted: ledger net debits (purchases +
//!   withdrawals − reversals) = approved debits seen, except for requests
//!   whose answer the simulator never got or ignored — it reversed those, so
//!   they net to zero — and reversals that stayed unanswered (the only
//!   slack: up to their amount);
//! - the ledger reversed no more than the simulator asked it to.
//!
//! Cards the simulator never touched must show no change at all.

use crate::stats::{LedgerFigures, MoneyCheck, Summary};
use kks_switch::pan::mask_pan;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mismatches listed in the verdict (the count covers all).
const MISMATCHES_LISTED_MAX: usize = 20;

/// The `kks-switch` binary: `explicit`, else next to this executable.
pub fn kks_switch_binary(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no directory for kks-sim")?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join("kks-switch");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "kks-switch not found next to {}; pass --kks-switch PATH",
        me.display()
    ))
}

/// Ledger figures per PAN and the audit's violations.
pub struct Audit {
    pub cards: BTreeMap<String, LedgerFigures>,
    pub violations: Vec<String>,
}

/// Run `kks-switch audit --db URL --json`.
pub fn audit(kks: &Path, db: &str) -> Result<Audit, String> {
    let out = Command::new(kks)
        .args(["audit", "--db", db, "--json"])
        .env("RUST_LOG", "error")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", kks.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| {
            format!(
                "kks-switch audit --json printed no JSON (exit {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("audit JSON: {e}"))?;
    let mut cards = BTreeMap::new();
    for c in v["cards"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let Some(pan) = c["pan"].as_str() else {
            continue;
        };
        let g = |k: &str| c[k].as_u64().unwrap_or(0);
        cards.insert(
            pan.to_string(),
            LedgerFigures {
                purchases: g("purchases"),
                withdrawals: g("withdrawals"),
                reversed: g("reversed"),
            },
        );
    }
    let violations = v["violations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("bank {}: {}", x["bank"], x["what"].as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    Ok(Audit { cards, violations })
}

/// Compare the run's figures with the ledger's.
pub fn check(sum: &Summary, after: &Audit) -> MoneyCheck {
    let zero = LedgerFigures::default();
    let base = sum.baseline.as_ref();
    let pans: BTreeSet<&String> = sum.money.keys().chain(after.cards.keys()).collect();
    let mut v = MoneyCheck {
        audit_violations: after.violations.clone(),
        ..MoneyCheck::default()
    };
    for pan in pans {
        let a = after.cards.get(pan).unwrap_or(&zero);
        let b = base.and_then(|b| b.get(pan)).unwrap_or(&zero);
        let dp = a.purchases as i128 - b.purchases as i128;
        let dw = a.withdrawals as i128 - b.withdrawals as i128;
        let dr = a.reversed as i128 - b.reversed as i128;
        let s = sum.money.get(pan).cloned().unwrap_or_default();
        if !sum.money.contains_key(pan) && dp == 0 && dw == 0 && dr == 0 {
            continue;
        }
        v.cards_checked += 1;
        let sim_net = (s.purchases + s.withdrawals) as i128;
        let ledger_net = dp + dw - dr;
        v.sim_net += s.purchases + s.withdrawals;
        v.ledger_net += ledger_net;
        let mut why = Vec::new();
        if !after.cards.contains_key(pan) {
            why.push("card not in the ledger".to_string());
        }
        if dp < s.purchases as i128 {
            why.push(format!(
                "approved purchases {} but ledger {dp}",
                s.purchases
            ));
        }
        if dw < s.withdrawals as i128 {
            why.push(format!(
                "approved withdrawals {} but ledger {dw}",
                s.withdrawals
            ));
        }
        if ledger_net < sim_net || ledger_net > sim_net + s.unresolved as i128 {
            why.push(format!(
                "net debits: approved {sim_net} (+ up to {} unresolved) but ledger {ledger_net}",
                s.unresolved
            ));
        }
        if dr > s.reversed_requested as i128 {
            why.push(format!(
                "ledger reversed {dr} but only {} was reversed",
                s.reversed_requested
            ));
        }
        if !why.is_empty() {
            v.cards_mismatched += 1;
            if v.mismatches.len() < MISMATCHES_LISTED_MAX {
                v.mismatches
                    .push(format!("{}: {}", mask_pan(pan), why.join("; ")));
            }
        }
    }
    v.passed = v.cards_mismatched == 0 && v.audit_violations.is_empty();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CardMoney;

    fn fig(p: u64, w: u64, r: u64) -> LedgerFigures {
        LedgerFigures {
            purchases: p,
            withdrawals: w,
            reversed: r,
        }
    }

    #[test]
    fn verdicts() {
        let mut sum = Summary::default();
        sum.money.insert(
            "6000020000000013".into(),
            CardMoney {
                purchases: 100,
                withdrawals: 50,
                reversed_requested: 30,
                reversed_approved: 30,
                unresolved: 0,
            },
        );
        let mut after = Audit {
            cards: BTreeMap::new(),
            violations: vec![],
        };
        // The timed-out 30 was posted and reversed: nets out.
        after
            .cards
            .insert("6000020000000013".into(), fig(130, 50, 30));
        after.cards.insert("6000020000000021".into(), fig(0, 0, 0));
        assert!(check(&sum, &after).passed);
        // An unapproved posting on an untouched card.
        after.cards.insert("6000020000000021".into(), fig(10, 0, 0));
        let c = check(&sum, &after);
        assert!(!c.passed);
        assert_eq!(c.cards_mismatched, 1);
        assert!(c.mismatches[0].starts_with("600002"));
        // A missing approval.
        after.cards.insert("6000020000000021".into(), fig(0, 0, 0));
        after
            .cards
            .insert("6000020000000013".into(), fig(60, 50, 0));
        assert!(!check(&sum, &after).passed);
        // With a baseline, only the change counts.
        after
            .cards
            .insert("6000020000000013".into(), fig(1100, 50, 0));
        let mut base = BTreeMap::new();
        base.insert("6000020000000013".into(), fig(1000, 0, 0));
        sum.baseline = Some(base);
        assert!(check(&sum, &after).passed);
    }
}
