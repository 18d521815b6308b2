//! `kks-switch card` and `kks-switch sweep` end to end: a lost card's
//! balances move to its replacement and the old card is closed; the dormant
//! sweep blocks unused cards and returns unspent credits; `audit` clean.

mod common;

use common::db::{self, run_cli, TestDb};
use std::collections::HashMap;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn cli(db: &TestDb, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--db", db.url.as_str()];
    all.extend_from_slice(args);
    run_cli(&all, LIMIT)
}

fn ok(db: &TestDb, args: &[&str]) -> String {
    let (code, out, err) = cli(db, args);
    assert_eq!(code, Some(0), "{args:?} on {}: {out}\n{err}", db.label());
    out
}

fn balances(db: &TestDb) -> HashMap<String, (i64, i64)> {
    let v: serde_json::Value =
        serde_json::from_str(ok(db, &["audit", "--json"]).trim()).expect("json");
    assert!(v["violations"].as_array().is_some_and(|a| a.is_empty()));
    v["cards"]
        .as_array()
        .expect("cards")
        .iter()
        .map(|c| {
            (
                c["pan"].as_str().expect("pan").to_string(),
                (
                    c["pkh_balance"].as_i64().expect("pkh"),
                    c["bpnt_balance"].as_i64().expect("bpnt"),
                ),
            )
        })
        .collect()
}

fn scenario(db: &TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(
        db,
        &[
            "seed",
            "--families",
            "40",
            "--out",
            d.to_str().expect("utf-8"),
        ],
    );
    let r = d.join("r.csv").display().to_string();
    ok(
        db,
        &[
            "disburse",
            "--program",
            "BPNT",
            "--period",
            "2026-01",
            "--report",
            &r,
        ],
    );
    let cards = std::fs::read_to_string(d.join("cards.csv")).expect("cards");
    let pan = cards
        .lines()
        .nth(1)
        .expect("a card")
        .split(',')
        .next()
        .expect("pan")
        .to_string();
    let before = balances(db)[&pan];
    assert_eq!(before.1, 20_000_000);

    ok(db, &["card", "block", "--pan", &pan]);
    ok(db, &["card", "unblock", "--pan", &pan]);
    ok(db, &["card", "set-pin", "--pan", &pan, "--pin", "246810"]);
    let (code, _, err) = cli(db, &["card", "set-pin", "--pan", &pan, "--pin", "12"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("6 digits"), "{err}");

    // Lost card: balances move to the new card; the old one declines 62.
    let out = ok(db, &["card", "replace", "--pan", &pan, "--pin", "135790"]);
    let new_pan = out
        .split("new card: pan ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("new pan printed")
        .to_string();
    assert!(
        !out.contains(&pan),
        "the old PAN is printed masked only: {out}"
    );
    let after = balances(db);
    assert_eq!(after[&new_pan], before);
    assert_eq!(after[&pan], (0, 0));
    let (code, _, err) = cli(db, &["card", "block", "--pan", &pan]);
    assert_ne!(code, Some(0));
    assert!(err.contains("62"), "{err}");
    // A credit by family follows the replacement.
    ok(
        db,
        &[
            "disburse",
            "--program",
            "BPNT",
            "--period",
            "2026-02",
            "--report",
            &r,
        ],
    );
    assert_eq!(balances(db)[&new_pan].1, before.1 + 20_000_000);

    // The sweep, long after: every card dormant, every unspent credit returned.
    let report = d.join("sweep.csv");
    let out = ok(
        db,
        &[
            "sweep",
            "--as-of",
            "2030-01-01",
            "--report",
            report.to_str().expect("utf-8"),
        ],
    );
    assert!(out.contains("blocked as dormant"), "{out}");
    let text = std::fs::read_to_string(&report).expect("sweep report");
    assert!(
        text.starts_with("pan,bank,blocked,pkh_returned,bpnt_returned\n"),
        "{text}"
    );
    assert!(text.contains(&format!("{new_pan},")), "{text}");
    assert!(balances(db).values().all(|&(p, b)| p == 0 && b == 0));
    // Blocked as dormant until unblocked.
    ok(db, &["card", "unblock", "--pan", &new_pan]);
}

#[test]
fn lost_card_replacement_and_sweep_on_sqlite() {
    scenario(&db::sqlite());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_card_replacement_and_sweep_on_postgres() {
    let Some(db) = db::postgres().await else {
        return;
    };
    tokio::task::spawn_blocking(move || scenario(&db))
        .await
        .expect("scenario");
}
