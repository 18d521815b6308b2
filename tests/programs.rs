//! Program rules (DESIGN §3) from `specs/programs.toml`: every component,
//! every cap, the tahap split, BPNT cadence and periods, and load-time
//! validation that names the key and the line.

use kks_switch::ledger::{Program, RuleSet};
use kks_switch::programs::{Cadence, Month, Period, Programs, ProgramsConfig, PROGRAMS_TOML};

fn counts(p: &Programs, members: &[(&str, u8)]) -> Vec<u8> {
    let mut c = vec![0u8; p.pkh.components.len()];
    for (k, n) in members {
        c[p.component_index(k)
            .unwrap_or_else(|| panic!("component {k}"))] = *n;
    }
    c
}

const RP: u64 = 100; // DE4 units per rupiah

#[test]
fn every_component_pays_its_annual_amount_over_four_tahap() {
    let p = Programs::builtin();
    // (component, annual rupiah, per tahap rupiah): DESIGN §3.
    let table = [
        ("hamil", 3_000_000, 750_000),
        ("usia_dini", 3_000_000, 750_000),
        ("sd", 900_000, 225_000),
        ("smp", 1_500_000, 375_000),
        ("sma", 2_000_000, 500_000),
        ("disabilitas", 2_400_000, 600_000),
        ("lansia", 2_400_000, 600_000),
    ];
    assert_eq!(p.pkh.components.len(), table.len());
    for (key, annual, tahap) in table {
        let c = counts(&p, &[(key, 1)]);
        assert_eq!(p.pkh_annual(&c), annual * RP, "{key} annual");
        assert_eq!(p.pkh_tahap(&c), tahap * RP, "{key} per tahap");
        assert_eq!(p.pkh_tahap(&c) * 4, p.pkh_annual(&c), "{key} split");
    }
}

#[test]
fn caps_count_at_most_two_pregnancies_two_young_children_one_lansia_one_disabled() {
    let p = Programs::builtin();
    // (component, members, counted)
    let table = [
        ("hamil", 2, 2),
        ("hamil", 3, 2),
        ("usia_dini", 2, 2),
        ("usia_dini", 4, 2),
        ("disabilitas", 1, 1),
        ("disabilitas", 3, 1),
        ("lansia", 1, 1),
        ("lansia", 2, 1),
        // No cap in the table: every member counts.
        ("sd", 5, 5),
        ("smp", 3, 3),
        ("sma", 3, 3),
    ];
    for (key, members, counted) in table {
        let one = p.pkh_annual(&counts(&p, &[(key, 1)]));
        let got = p.pkh_annual(&counts(&p, &[(key, members)]));
        assert_eq!(got, one * counted, "{key} × {members} counts {counted}");
    }
    assert_eq!(p.pkh_annual(&counts(&p, &[])), 0);
}

#[test]
fn a_family_sums_its_capped_components() {
    let p = Programs::builtin();
    // 3 pregnancies (2 counted), 3 toddlers (2), 2 SD, 1 SMP, 2 lansia (1).
    let c = counts(
        &p,
        &[
            ("hamil", 3),
            ("usia_dini", 3),
            ("sd", 2),
            ("smp", 1),
            ("lansia", 2),
        ],
    );
    let annual = 2 * 3_000_000 + 2 * 3_000_000 + 2 * 900_000 + 1_500_000 + 2_400_000;
    assert_eq!(p.pkh_annual(&c), annual * RP);
    assert_eq!(p.pkh_tahap(&c), annual * RP / 4);
}

#[test]
fn tahap_are_credited_in_january_april_july_october() {
    let p = Programs::builtin();
    assert_eq!(p.tahap_per_year(), 4);
    let months: Vec<u8> = (1..=4)
        .map(|t| p.tahap_month(2026, t).map(|m| m.month).unwrap_or(0))
        .collect();
    assert_eq!(months, [1, 4, 7, 10]);
    assert_eq!(p.tahap_month(2026, 5), None);
    let cur = |m: u8| {
        p.current_period(
            Program::Pkh,
            Month {
                year: 2026,
                month: m,
            },
        )
        .to_string()
    };
    assert_eq!(cur(1), "2026-T1");
    assert_eq!(cur(3), "2026-T1");
    assert_eq!(cur(4), "2026-T2");
    assert_eq!(cur(9), "2026-T3");
    assert_eq!(cur(12), "2026-T4");
}

#[test]
fn bpnt_pays_200k_a_month_grouped_by_cadence() {
    let mut p = Programs::builtin();
    assert_eq!(p.bpnt.monthly, 200_000 * RP);
    assert_eq!(p.bpnt_amount(1), 200_000 * RP);
    assert_eq!(p.bpnt_amount(3), 600_000 * RP);
    assert_eq!(p.bpnt.cadence, Cadence::Quarterly);
    let may = Month {
        year: 2026,
        month: 5,
    };
    assert_eq!(
        p.current_period(Program::Bpnt, may).to_string(),
        "2026-04..2026-06"
    );
    p.bpnt.cadence = Cadence::TwoMonthly;
    assert_eq!(
        p.current_period(Program::Bpnt, may).to_string(),
        "2026-05..2026-06"
    );
    p.bpnt.cadence = Cadence::Monthly;
    assert_eq!(p.current_period(Program::Bpnt, may).to_string(), "2026-05");
}

#[test]
fn periods_parse_as_the_interface_names_them() {
    let p = Programs::builtin();
    assert_eq!(
        p.parse_period(Program::Pkh, "2026-T1").ok(),
        Some(Period::Tahap {
            year: 2026,
            tahap: 1
        })
    );
    assert!(p.parse_period(Program::Pkh, "2026-T5").is_err());
    assert!(p.parse_period(Program::Pkh, "2026-01").is_err());
    let q = p
        .parse_period(Program::Bpnt, "2026-01..2026-03")
        .expect("range");
    assert_eq!(q.months().len(), 3);
    assert_eq!(
        p.parse_period(Program::Bpnt, "2026-01")
            .expect("month")
            .months()
            .len(),
        1
    );
    assert!(p.parse_period(Program::Bpnt, "2026-T1").is_err());
    assert!(p.parse_period(Program::Bpnt, "2026-04..2026-01").is_err());
}

#[test]
fn configuration_overrides_cadence_and_rule_set() {
    let p = Programs::load(&ProgramsConfig {
        bpnt_cadence: "monthly".into(),
        rule_set: "cash-allowed".into(),
        ..ProgramsConfig::default()
    })
    .expect("overrides");
    assert_eq!(p.bpnt.cadence, Cadence::Monthly);
    assert_eq!(p.bpnt.rule_set, RuleSet::CashAllowed);
    let e = Programs::load(&ProgramsConfig {
        bpnt_cadence: "weekly".into(),
        ..ProgramsConfig::default()
    })
    .expect_err("bad cadence");
    assert!(e.to_string().contains("programs.bpnt_cadence"), "{e}");
    // The ledger gets the rules' rule set and limits.
    let lc = p.ledger_config(kks_switch::ledger::BankCode(2));
    assert_eq!(lc.rule_set, RuleSet::CashAllowed);
    assert_eq!(lc.limits.withdrawal_amount_max, 1_000_000 * RP);
    assert_eq!(lc.limits.dormant_block_days, 90);
    assert_eq!(lc.limits.dormant_return_days, 105);
}

/// Replace the first occurrence of `from` in the built-in file.
fn edited(from: &str, to: &str) -> String {
    assert!(PROGRAMS_TOML.contains(from), "fixture text {from:?}");
    PROGRAMS_TOML.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).expect("needle");
    text[..at].matches('\n').count() + 1
}

#[test]
fn bad_files_are_refused_naming_the_key_and_line() {
    // Our own checks: key path and line.
    let cases = [
        (
            "cap = { value = 2, source = \"press 2021/2023: at most 2 pregnancies",
            "cap = { value = 0, source = \"press 2021/2023: at most 2 pregnancies",
            "pkh.components.hamil.cap",
        ),
        (
            "monthly = { value = 200000",
            "monthly = { value = 0",
            "bpnt.monthly",
        ),
        (
            "cadence = { value = \"quarterly\"",
            "cadence = { value = \"weekly\"",
            "bpnt.cadence",
        ),
        (
            "tahap_months = { value = [1, 4, 7, 10]",
            "tahap_months = { value = [1, 4, 7]",
            "pkh.tahap_months",
        ),
        (
            "annual = { value = 900000, source = \"press 2021 and 2025: Rp900.000 per year\" }",
            "annual = { value = 900000, source = \"\" }",
            "pkh.components.sd.annual",
        ),
        ("\"GULA\"", "\"BRAS\"", "bpnt.commodities.never"),
    ];
    for (from, to, key) in cases {
        let text = edited(from, to);
        let e = Programs::from_toml(&text, "my-programs.toml").expect_err(key);
        let m = e.to_string();
        let line = line_of(PROGRAMS_TOML, from);
        assert!(
            m.contains("my-programs.toml")
                && m.contains(key)
                && m.contains(&format!("line {line}")),
            "{key}: {m}"
        );
    }
    // TOML's own errors: wrong type and unknown keys, with the line.
    let text = edited(
        "pin_tries_max = { value = 3",
        "pin_tries_max = { value = \"three\"",
    );
    let m = Programs::from_toml(&text, "x.toml")
        .expect_err("type")
        .to_string();
    assert!(m.contains("line") && m.contains("x.toml"), "{m}");
    let text = edited(
        "[dormant]\n",
        "[dormant]\nsleep_days = { value = 1, source = \"x\" }\n",
    );
    let m = Programs::from_toml(&text, "x.toml")
        .expect_err("unknown")
        .to_string();
    assert!(m.contains("sleep_days") && m.contains("line"), "{m}");
}
