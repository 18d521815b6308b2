//! `kks-sim crash` in CI (issue 7, item 1): 3 SIGKILL trials per store with
//! the real binaries, each compared with the journal and the audit.
//!
//! The seed is printed by the verb; `KKS_CRASH_SEED=<n>` repeats a run.
//! PostgreSQL: skipped with a message when no server is reachable outside CI
//! (neither `CI` nor `KKS_TEST_PG_URL` set), failed under CI.

mod common;

use common::{kks_switch, sim};
use std::process::Command;

const TRIALS: u64 = 3;

fn trials(store: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("crash.json");
    let mut cmd = Command::new(sim());
    cmd.args([
        "crash",
        "--store",
        store,
        "--trials",
        &TRIALS.to_string(),
        "--families",
        "300",
        "--kks-switch",
        kks_switch().to_str().unwrap(),
        "--dir",
        tmp.path().join("work").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    if let Some(s) = std::env::var("KKS_CRASH_SEED")
        .ok()
        .filter(|s| !s.is_empty())
    {
        cmd.args(["--seed", &s]);
    }
    let o = cmd.output().expect("run kks-sim crash");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{stdout}");
    if o.status.code() == Some(3)
        && std::env::var_os("CI").is_none()
        && std::env::var_os("KKS_TEST_PG_URL").is_none()
    {
        eprintln!("SKIPPED ({store}): {stderr}; set KKS_TEST_PG_URL or CI to make this a failure");
        return;
    }
    assert_eq!(
        o.status.code(),
        Some(0),
        "kks-sim crash --store {store}:\n{stdout}\n{stderr}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ts = r["trials"].as_array().expect("trials");
    assert_eq!(ts.len() as u64, TRIALS, "{r}");
    let n = |t: &serde_json::Value, k: &str| t[k].as_u64().unwrap_or(u64::MAX);
    let mut resent = 0;
    for t in ts {
        assert_eq!(t["passed"], true, "{t}");
        assert_eq!(t["audit_clean"], true, "{t}");
        for k in [
            "lost",
            "extra",
            "code_mismatches",
            "cards_mismatched",
            "repeat_mismatches",
            "unresolved",
        ] {
            assert_eq!(n(t, k), 0, "{k}: {t}");
        }
        assert!(
            n(t, "approved_before_kill") > 0,
            "no approval before the kill: {t}"
        );
        assert!(n(t, "approved") >= n(t, "approved_before_kill"), "{t}");
        assert!(n(t, "repeats_of_answered") > 0, "{t}");
        resent += n(t, "resent");
    }
    // The kills caught requests in flight (else nothing was tested).
    assert!(resent > 0, "no request was in flight at any kill: {r}");
    assert_eq!(r["passed"], true);
}

#[test]
fn crash_trials_sqlite() {
    trials("sqlite");
}

#[test]
fn crash_trials_postgres() {
    trials("postgres");
}
