//! `seed` and `disburse` end to end through the binary, on SQLite and on
//! PostgreSQL: byte-identical files for the same seed, idempotent re-runs,
//! overlapping BPNT ranges, the reject report, a wave killed mid-way and
//! resumed, and `audit` clean with every wallet holding exactly what the
//! rules pay.

mod common;

use common::db::{self, run_cli, TestDb};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn cli(db: &TestDb, args: &[&str]) -> String {
    let mut all = vec!["--db", db.url.as_str()];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli(&all, LIMIT);
    assert_eq!(
        code,
        Some(0),
        "kks-switch {args:?} on {}\nstdout:\n{out}\nstderr:\n{err}",
        db.label()
    );
    out
}

/// (count, amount in rupiah text) of a summary line.
fn figure(summary: &str, label: &str) -> (u64, String) {
    let line = summary
        .lines()
        .map(str::trim)
        .find(|l| {
            l.strip_prefix(label).is_some_and(|rest| {
                rest.starts_with(' ') && rest.trim_start().starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{summary}"));
    let t: Vec<&str> = line[label.len()..].split_whitespace().collect();
    (t[0].parse().expect("count"), t[2].to_string())
}

fn rp(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// families.csv as maps by column name.
fn families(dir: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("families.csv")).expect("families.csv");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split(',')
        .map(String::from)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

fn cents(rupiah: &str) -> u64 {
    let (a, b) = rupiah.split_once('.').expect("decimal");
    a.parse::<u64>().expect("rupiah") * 100 + b.parse::<u64>().expect("sen")
}

/// Per PAN: (PKH, BPNT) balances from `audit --json`.
fn balances(db: &TestDb) -> HashMap<String, (i64, i64)> {
    let out = cli(db, &["audit", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("audit json");
    assert!(
        v["violations"].as_array().is_some_and(|a| a.is_empty()),
        "violations: {}",
        v["violations"]
    );
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

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kks-seed-")
        .tempdir()
        .expect("tempdir")
}

#[test]
fn seed_is_byte_identical_for_the_same_n_and_seed() {
    let (a, b, c) = (db::sqlite(), db::sqlite(), db::sqlite());
    let (da, dbb, dc) = (tempdir(), tempdir(), tempdir());
    for (d, dir, s) in [(&a, &da, "7"), (&b, &dbb, "7"), (&c, &dc, "8")] {
        cli(
            d,
            &[
                "seed",
                "--families",
                "500",
                "--seed",
                s,
                "--out",
                dir.path().to_str().expect("utf-8"),
            ],
        );
    }
    for f in ["cards.csv", "terminals.csv", "families.csv"] {
        let x = std::fs::read(da.path().join(f)).expect("file");
        let y = std::fs::read(dbb.path().join(f)).expect("file");
        let z = std::fs::read(dc.path().join(f)).expect("file");
        assert!(x == y, "{f} differs between two runs with the same seed");
        assert!(x != z, "{f} is the same for another seed");
    }
    let cards = std::fs::read_to_string(da.path().join("cards.csv")).expect("cards");
    assert!(cards.starts_with("pan,bank,kk,pin,status\n"));
    assert_eq!(cards.lines().count(), 501);
    for l in cards.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f[0].len(), 16);
        assert!(
            kks_switch::pan::Pan::parse(f[0].as_bytes()).is_ok(),
            "Luhn: {l}"
        );
        assert_eq!(
            kks_switch::pan::Bank::from_bin(f[0]).map(|b| b.name()),
            Some(f[1])
        );
        assert_eq!(f[3].len(), 6);
        assert_eq!(f[4], "active");
    }
    let terms = std::fs::read_to_string(da.path().join("terminals.csv")).expect("terminals");
    assert!(terms.starts_with("terminal_id,merchant_id,kind,bank,mcc,pin_key_hex,mac_key_hex\n"));
    for bank in ["BRI", "MANDIRI", "BNI", "BTN", "BSI"] {
        assert!(
            terms.contains(&format!(",ewarong,{bank},5411,")),
            "an e-Warong at {bank}"
        );
        assert!(
            terms.contains(&format!(",agent,{bank},6010,")),
            "an agent at {bank}"
        );
    }
    // Aceh is BSI's.
    for f in families(da.path()) {
        assert_eq!(f["province"] == "11", f["bank"] == "BSI", "{f:?}");
    }
    // A second seed of the same database is refused.
    let (code, _, err) = run_cli(
        &[
            "--db",
            &a.url,
            "seed",
            "--families",
            "5",
            "--out",
            da.path().to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("already holds 500 families"), "{err}");
}

/// Seed, pay waves that repeat and overlap, pay from an order file with
/// every kind of reject, and check every wallet.
fn waves(db: &TestDb) {
    let dir = tempdir();
    let d = dir.path();
    let ds = d.to_str().expect("utf-8");
    cli(
        db,
        &["seed", "--families", "300", "--seed", "3", "--out", ds],
    );
    let fams = families(d);
    let bpnt: Vec<_> = fams.iter().filter(|f| f["bpnt"] == "1").collect();
    let pkh: Vec<_> = fams.iter().filter(|f| f["pkh"] == "1").collect();
    let n_bpnt = bpnt.len() as u64;
    let pkh_total: u64 = pkh.iter().map(|f| cents(&f["pkh_per_tahap"])).sum();
    let month = 20_000_000u64;
    let report = |name: &str| d.join(name).display().to_string();

    // A quarter of BPNT, then the same again: all already credited.
    let r1 = report("r1.csv");
    let s = cli(
        db,
        &[
            "disburse",
            "--program",
            "BPNT",
            "--period",
            "2026-01..2026-03",
            "--report",
            &r1,
        ],
    );
    assert_eq!(
        figure(&s, "orders"),
        (n_bpnt, rp(3 * month * n_bpnt)),
        "{s}"
    );
    assert_eq!(
        figure(&s, "credited"),
        (n_bpnt, rp(3 * month * n_bpnt)),
        "{s}"
    );
    assert!(s.contains(&format!("({} credits)", 3 * n_bpnt)), "{s}");
    assert!(s.contains("reconciled"), "{s}");
    let s = cli(
        db,
        &[
            "disburse",
            "--program",
            "BPNT",
            "--period",
            "2026-01..2026-03",
            "--report",
            &r1,
        ],
    );
    assert_eq!(figure(&s, "credited"), (0, rp(0)), "{s}");
    assert_eq!(
        figure(&s, "already credited"),
        (n_bpnt, rp(3 * month * n_bpnt)),
        "{s}"
    );
    // A range overlapping it pays only the new month; a month of it alone pays nothing.
    let s = cli(
        db,
        &[
            "disburse",
            "--program",
            "BPNT",
            "--period",
            "2026-03..2026-04",
            "--report",
            &r1,
        ],
    );
    assert_eq!(figure(&s, "credited"), (n_bpnt, rp(month * n_bpnt)), "{s}");
    assert!(s.contains(&format!("({n_bpnt} credits)")), "{s}");
    assert_eq!(figure(&s, "already credited").1, rp(month * n_bpnt), "{s}");
    let s = cli(
        db,
        &[
            "disburse",
            "--program",
            "BPNT",
            "--period",
            "2026-02",
            "--report",
            &r1,
        ],
    );
    assert_eq!(
        figure(&s, "already credited"),
        (n_bpnt, rp(month * n_bpnt)),
        "{s}"
    );

    // PKH: a dry run changes nothing and says what the real run does.
    let dry = cli(
        db,
        &[
            "disburse",
            "--program",
            "PKH",
            "--period",
            "2026-T1",
            "--dry-run",
            "--report",
            &r1,
        ],
    );
    assert!(dry.contains("dry run"), "{dry}");
    assert_eq!(
        figure(&dry, "credited"),
        (pkh.len() as u64, rp(pkh_total)),
        "{dry}"
    );
    let real = cli(
        db,
        &[
            "disburse",
            "--program",
            "PKH",
            "--period",
            "2026-T1",
            "--report",
            &r1,
        ],
    );
    assert_eq!(
        figure(&real, "credited"),
        figure(&dry, "credited"),
        "{real}"
    );
    let again = cli(
        db,
        &[
            "disburse",
            "--program",
            "PKH",
            "--period",
            "2026-T1",
            "--report",
            &r1,
        ],
    );
    assert_eq!(
        figure(&again, "already credited"),
        (pkh.len() as u64, rp(pkh_total)),
        "{again}"
    );

    // Every wallet holds exactly one payment per (family, tahap/month).
    let bal = balances(db);
    for f in &fams {
        let want_pkh = cents(&f["pkh_per_tahap"]) as i64;
        let want_bpnt = 4 * cents(&f["bpnt_per_month"]) as i64;
        assert_eq!(
            bal.get(&f["pan"]),
            Some(&(want_pkh, want_bpnt)),
            "family {}",
            f["kk"]
        );
    }

    // An order file (PKH 2026-T2) with one of each reject.
    let p = |i: usize| pkh[i];
    let bpnt_only = fams
        .iter()
        .find(|f| f["pkh"] == "0")
        .expect("a BPNT-only family");
    let other_bank = if p(3)["bank"] == "BRI" { "BNI" } else { "BRI" };
    let line = |id: &str, f: &HashMap<String, String>, bank: &str, nik: &str, amount: &str| {
        format!("{id},PKH,2026-T2,{bank},{},{nik},{amount}\n", f["kk"])
    };
    let mut o = String::from("order_id,program,period,bank,kk,nik,amount\n");
    for i in 0..3 {
        o += &line(
            &format!("OK{i}"),
            p(i),
            &p(i)["bank"],
            &p(i)["nik"],
            &p(i)["pkh_per_tahap"],
        );
    }
    o += &line(
        "DUP",
        p(0),
        &p(0)["bank"],
        &p(0)["nik"],
        &p(0)["pkh_per_tahap"],
    );
    o += &line(
        "WRONGBANK",
        p(3),
        other_bank,
        &p(3)["nik"],
        &p(3)["pkh_per_tahap"],
    );
    o += &line("WRONGAMT", p(4), &p(4)["bank"], &p(4)["nik"], "1.00");
    o += &line(
        "WRONGNIK",
        p(5),
        &p(5)["bank"],
        "3200000000000000",
        &p(5)["pkh_per_tahap"],
    );
    o += &line(
        "NOTPKH",
        bpnt_only,
        &bpnt_only["bank"],
        &bpnt_only["nik"],
        "100000.00",
    );
    o += "UNKNOWN,PKH,2026-T2,BRI,3299999999999999,3299999999999999,750000.00\n";
    o += &line("BADAMT", p(6), &p(6)["bank"], &p(6)["nik"], "12.345");
    o += &line(
        "OTHERPERIOD",
        p(7),
        &p(7)["bank"],
        &p(7)["nik"],
        &p(7)["pkh_per_tahap"],
    )
    .replace("2026-T2", "2026-T3");
    o += "SHORT,PKH,2026-T2\n";
    let orders = d.join("orders.csv");
    std::fs::write(&orders, &o).expect("orders");
    let total: u64 = o
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(6))
        .filter_map(kks_switch::disbursement::parse_amount)
        .sum();
    let ok_total: u64 = (0..3).map(|i| cents(&p(i)["pkh_per_tahap"])).sum();
    let s = cli(
        db,
        &[
            "disburse",
            "--program",
            "PKH",
            "--period",
            "2026-T2",
            "--orders",
            orders.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(figure(&s, "orders"), (12, rp(total)), "{s}");
    assert_eq!(figure(&s, "credited"), (3, rp(ok_total)), "{s}");
    assert_eq!(figure(&s, "rejected"), (9, rp(total - ok_total)), "{s}");
    assert!(s.contains("reconciled"), "{s}");
    let rej = std::fs::read_to_string(format!("{}.rejects.csv", orders.display())).expect("report");
    assert!(
        rej.starts_with("order_id,line,kk,period,amount,reason,detail\n"),
        "{rej}"
    );
    let reason = |id: &str| {
        rej.lines()
            .find(|l| l.starts_with(&format!("{id},")))
            .and_then(|l| l.split(',').nth(5))
            .unwrap_or_else(|| panic!("{id} not in report:\n{rej}"))
            .to_string()
    };
    assert_eq!(reason("DUP"), "duplicate-line");
    assert_eq!(reason("WRONGBANK"), "no-account");
    assert_eq!(reason("UNKNOWN"), "no-account");
    assert_eq!(reason("WRONGAMT"), "amount-mismatch");
    assert_eq!(reason("WRONGNIK"), "nik-mismatch");
    assert_eq!(reason("NOTPKH"), "not-enrolled");
    assert_eq!(reason("BADAMT"), "bad-row");
    assert_eq!(reason("OTHERPERIOD"), "wrong-period");
    assert_eq!(reason("SHORT"), "bad-row");
    assert_eq!(rej.lines().count(), 10, "{rej}");
    assert!(rej.contains("DUP,5,"), "line numbers: {rej}");
    for i in 0..3 {
        assert!(!rej.contains(&format!("OK{i},")), "{rej}");
    }
    // The same file again: the three are already credited, the rest rejected again.
    let s = cli(
        db,
        &[
            "disburse",
            "--program",
            "PKH",
            "--period",
            "2026-T2",
            "--orders",
            orders.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(figure(&s, "already credited"), (3, rp(ok_total)), "{s}");
    assert_eq!(figure(&s, "credited"), (0, rp(0)), "{s}");
    let bal = balances(db);
    assert_eq!(
        bal.get(&p(0)["pan"]).map(|b| b.0),
        Some(2 * cents(&p(0)["pkh_per_tahap"]) as i64)
    );
}

#[test]
fn waves_are_idempotent_and_rejects_reported_on_sqlite() {
    let db = db::sqlite();
    waves(&db);
    // The writer lock is gone after each command.
    let lock = db.dir().expect("dir").join("kks.db.lock");
    assert!(!lock.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_are_idempotent_and_rejects_reported_on_postgres() {
    let Some(db) = db::postgres().await else {
        return;
    };
    tokio::task::spawn_blocking(move || waves(&db))
        .await
        .expect("scenario");
}

#[test]
fn a_wave_killed_mid_way_resumes_crediting_each_family_once() {
    let db = db::sqlite();
    let dir = tempdir();
    let ds = dir.path().to_str().expect("utf-8");
    cli(
        &db,
        &["seed", "--families", "20000", "--seed", "5", "--out", ds],
    );
    let report = dir.path().join("r.csv").display().to_string();
    // Kill -9 the wave at a few points; each run resumes where the last stopped.
    for delay_ms in [150u64, 400] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kks-switch"))
            .args([
                "--db",
                &db.url,
                "disburse",
                "--program",
                "BPNT",
                "--period",
                "2026-01..2026-03",
                "--report",
                &report,
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    // The lock file of the killed process is taken over; the rest is paid.
    let s = cli(
        &db,
        &[
            "disburse",
            "--program",
            "BPNT",
            "--period",
            "2026-01..2026-03",
            "--report",
            &report,
        ],
    );
    assert!(s.contains("reconciled"), "{s}");
    let (orders, _) = figure(&s, "orders");
    let (credited, _) = figure(&s, "credited");
    let (already, _) = figure(&s, "already credited");
    assert_eq!(credited + already, orders, "{s}");
    eprintln!("after the kills: {already} orders were already credited, {credited} credited now");
    let bal = balances(&db);
    for f in families(dir.path()) {
        let want = 3 * cents(&f["bpnt_per_month"]) as i64;
        assert_eq!(
            bal.get(&f["pan"]).map(|b| b.1),
            Some(want),
            "family {}",
            f["kk"]
        );
    }
}

#[test]
fn a_wave_from_entitlements_reports_a_family_without_a_card_and_times_its_credits() {
    let db = db::sqlite();
    let dir = tempdir();
    let ds = dir.path().to_str().expect("utf-8");
    cli(
        &db,
        &["seed", "--families", "200", "--seed", "9", "--out", ds],
    );
    let n_bpnt = families(dir.path())
        .iter()
        .filter(|f| f["bpnt"] == "1")
        .count() as u64;
    // A family the ministry lists at BRI whose card was never opened.
    let kk = 3_201_019_999_999_999u64;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = kks_switch::storage::Store::open(&db.url)
            .await
            .expect("store");
        store
            .put_families(&[kks_switch::storage::FamilyRow {
                kk,
                nik: "3201014101900001".into(),
                bank: 2,
                province: 32,
                pkh: false,
                bpnt: true,
                components: String::new(),
                pan: String::new(),
            }])
            .await
            .expect("family row");
        store.close().await;
    });
    let report = dir.path().join("w.csv");
    let r = report.display().to_string();
    let month = 20_000_000u64;
    let wave = || {
        cli(
            &db,
            &[
                "disburse",
                "--program",
                "BPNT",
                "--period",
                "2026-05",
                "--report",
                &r,
            ],
        )
    };
    let s = wave();
    assert_eq!(
        figure(&s, "orders"),
        (n_bpnt + 1, rp(month * (n_bpnt + 1))),
        "{s}"
    );
    assert_eq!(figure(&s, "credited"), (n_bpnt, rp(month * n_bpnt)), "{s}");
    assert_eq!(figure(&s, "rejected"), (1, rp(month)), "{s}");
    assert_eq!(figure(&s, "no-account"), (1, rp(month)), "{s}");
    assert!(s.contains("credit phase"), "{s}");
    assert!(s.contains("reconciled"), "{s}");
    let rej = std::fs::read_to_string(&report).expect("report");
    let lines: Vec<&str> = rej.lines().collect();
    assert_eq!(lines.len(), 2, "{rej}");
    assert_eq!(lines[0], "order_id,line,kk,period,amount,reason,detail");
    assert!(
        lines[1].starts_with(&format!(
            "BPNT-2026-05-{kk},0,{kk},2026-05,200000.00,no-account,ledger answered 14"
        )),
        "{rej}"
    );
    assert!(
        lines[1].ends_with(&format!("for key BPNT:2026-05:{kk}")),
        "{rej}"
    );
    // Again: the others are already credited, the family is reported again.
    let s = wave();
    assert_eq!(
        figure(&s, "already credited"),
        (n_bpnt, rp(month * n_bpnt)),
        "{s}"
    );
    assert_eq!(figure(&s, "rejected"), (1, rp(month)), "{s}");
}
