//! PKH and BPNT rules as data (DESIGN §3): loaded from `specs/programs.toml`
//! (built in) or a replacement file named by the configuration, validated at
//! start, and turned into entitlements.
//!
//! Why data and not code: the amounts and caps change by ministerial decree
//! and the sources disagree (BPNT cadence); a bank must be able to change a
//! figure without a release, and every figure carries its source so that
//! the next person can check it.
//!
//! Money here is in DE4 units (rupiah × 100), like the ledger; the file is in
//! whole rupiah.

mod period;

pub use period::{
    civil_from_days, current_month_wib, days_from_civil, parse_date, Month, Period, PeriodError,
    RANGE_MONTHS_MAX,
};

use crate::ledger::{Amount, BankCode, LedgerConfig, Limits, Program, RuleSet};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The built-in rules.
pub const PROGRAMS_TOML: &str = include_str!("../../specs/programs.toml");

/// Largest annual PKH amount per member accepted from the file (rupiah); a
/// guard against a misplaced zero.
pub const PKH_ANNUAL_MAX_RUPIAH: u64 = 100_000_000;

/// Largest BPNT monthly amount accepted from the file (rupiah).
pub const BPNT_MONTHLY_MAX_RUPIAH: u64 = 10_000_000;

/// The `[programs]` section of the configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProgramsConfig {
    /// A programs file replacing the built-in `specs/programs.toml`
    /// (empty: the built-in one).
    pub file: String,
    /// Overrides `bpnt.cadence` (empty: as in the programs file).
    pub bpnt_cadence: String,
    /// Overrides `bpnt.rule_set` (empty: as in the programs file).
    pub rule_set: String,
}

/// How BPNT months are grouped into waves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cadence {
    /// One month per wave.
    Monthly,
    /// Two months per wave (Jan–Feb, Mar–Apr, …).
    TwoMonthly,
    /// Three months per wave (Jan–Mar, …), Rp600.000 at once.
    Quarterly,
}

impl Cadence {
    /// Parses `monthly`, `2-monthly` or `quarterly`.
    pub fn parse(s: &str) -> Option<Cadence> {
        match s {
            "monthly" => Some(Cadence::Monthly),
            "2-monthly" => Some(Cadence::TwoMonthly),
            "quarterly" => Some(Cadence::Quarterly),
            _ => None,
        }
    }

    /// Months per wave.
    pub fn months(self) -> u32 {
        match self {
            Cadence::Monthly => 1,
            Cadence::TwoMonthly => 2,
            Cadence::Quarterly => 3,
        }
    }
}

fn parse_rule_set(s: &str) -> Option<RuleSet> {
    match s {
        "food-only" => Some(RuleSet::FoodOnly),
        "cash-allowed" => Some(RuleSet::CashAllowed),
        _ => None,
    }
}

/// One PKH component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    /// Short name used in files (`hamil`, `sd`, …).
    pub key: String,
    /// Human name.
    pub name: String,
    /// Annual amount per member counted, DE4 units.
    pub annual: Amount,
    /// Most members of one family counted; `None` = all.
    pub cap: Option<u32>,
}

/// PKH rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkh {
    /// Calendar month of each tahap (tahap 1 first).
    pub tahap_months: Vec<u8>,
    /// The components, in file order.
    pub components: Vec<Component>,
}

/// BPNT rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bpnt {
    /// Per family per month, DE4 units.
    pub monthly: Amount,
    /// Months per wave.
    pub cadence: Cadence,
    /// `food-only` or `cash-allowed`.
    pub rule_set: RuleSet,
    /// Commodity codes BPNT may buy under `food-only`.
    pub allowed: Vec<[u8; 4]>,
    /// Known codes never allowed (any unknown code is not allowed either).
    pub never: Vec<[u8; 4]>,
}

/// The validated rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programs {
    pub pkh: Pkh,
    pub bpnt: Bpnt,
    /// Withdrawal limits, PIN tries and dormancy windows, as the ledger takes them.
    pub limits: Limits,
}

/// Why a programs file was refused. The message names the file, the key
/// and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum ProgramsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: line {line}: {key}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        key: String,
        message: String,
    },
}

// ---- the file's shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sourced<T> {
    value: Spanned<T>,
    source: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pkh: RawPkh,
    bpnt: RawBpnt,
    limits: RawLimits,
    dormant: RawDormant,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkh {
    tahap_months: Sourced<Vec<u32>>,
    tahap_per_year: Sourced<u32>,
    components: Spanned<Vec<RawComponent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    key: Spanned<String>,
    name: String,
    annual: Sourced<u64>,
    cap: Option<Sourced<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBpnt {
    monthly: Sourced<u64>,
    cadence: Sourced<String>,
    rule_set: Sourced<String>,
    commodities: RawCommodities,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommodities {
    allowed: Sourced<Vec<String>>,
    never: Sourced<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    withdrawal_amount_max: Sourced<u64>,
    withdrawal_day_amount_max: Sourced<u64>,
    withdrawal_day_count_max: Sourced<u32>,
    pin_tries_max: Sourced<u32>,
    /// Optional: defaults to 30 days.
    #[serde(default)]
    key_retention_days: Option<Sourced<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDormant {
    block_days: Sourced<u32>,
    return_days: Sourced<u32>,
}

/// Turns spans into "line N" for validation errors.
struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        key: &str,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ProgramsError> {
        Err(ProgramsError::Invalid {
            origin: self.origin.to_string(),
            line: self.line(span.start),
            key: key.to_string(),
            message: message.into(),
        })
    }

    /// The value, after checking that its source is given.
    fn sourced<'v, T>(&self, key: &str, s: &'v Sourced<T>) -> Result<&'v T, ProgramsError> {
        if s.source.get_ref().trim().is_empty() {
            return self.err(key, s.source.span(), "source must not be empty");
        }
        Ok(s.value.get_ref())
    }

    fn positive(&self, key: &str, s: &Sourced<u64>, max: u64) -> Result<u64, ProgramsError> {
        let v = *self.sourced(key, s)?;
        if v == 0 || v > max {
            return self.err(
                key,
                s.value.span(),
                format!("must be in 1..={max}, got {v}"),
            );
        }
        Ok(v)
    }

    fn positive32(&self, key: &str, s: &Sourced<u32>, max: u32) -> Result<u32, ProgramsError> {
        let v = *self.sourced(key, s)?;
        if v == 0 || v > max {
            return self.err(
                key,
                s.value.span(),
                format!("must be in 1..={max}, got {v}"),
            );
        }
        Ok(v)
    }

    fn codes(&self, key: &str, s: &Sourced<Vec<String>>) -> Result<Vec<[u8; 4]>, ProgramsError> {
        let mut out = Vec::new();
        for c in self.sourced(key, s)? {
            let b = c.as_bytes();
            if b.len() != 4 || !b.iter().all(u8::is_ascii_uppercase) {
                return self.err(
                    key,
                    s.value.span(),
                    format!("commodity code {c:?} must be 4 letters A-Z"),
                );
            }
            let code = [b[0], b[1], b[2], b[3]];
            if out.contains(&code) {
                return self.err(
                    key,
                    s.value.span(),
                    format!("commodity code {c} listed twice"),
                );
            }
            out.push(code);
        }
        Ok(out)
    }
}

impl Programs {
    /// The built-in rules (`specs/programs.toml`).
    pub fn builtin() -> Programs {
        // The built-in file is checked by a unit test; a broken one cannot ship.
        Programs::from_toml(PROGRAMS_TOML, "specs/programs.toml")
            .unwrap_or_else(|e| panic!("built-in specs/programs.toml is invalid: {e}"))
    }

    /// Loads the rules the configuration names: the built-in file or
    /// `cfg.file`, then the single-value overrides.
    pub fn load(cfg: &ProgramsConfig) -> Result<Programs, ProgramsError> {
        let mut p = if cfg.file.is_empty() {
            Programs::from_toml(PROGRAMS_TOML, "specs/programs.toml")?
        } else {
            let text =
                std::fs::read_to_string(&cfg.file).map_err(|source| ProgramsError::Read {
                    path: cfg.file.clone(),
                    source,
                })?;
            Programs::from_toml(&text, &cfg.file)?
        };
        let invalid = |key: &str, message: String| ProgramsError::Invalid {
            origin: "configuration".into(),
            line: 0,
            key: key.into(),
            message,
        };
        if !cfg.bpnt_cadence.is_empty() {
            p.bpnt.cadence = Cadence::parse(&cfg.bpnt_cadence).ok_or_else(|| {
                invalid(
                    "programs.bpnt_cadence",
                    format!(
                        "must be monthly, 2-monthly or quarterly, got {:?}",
                        cfg.bpnt_cadence
                    ),
                )
            })?;
        }
        if !cfg.rule_set.is_empty() {
            p.bpnt.rule_set = parse_rule_set(&cfg.rule_set).ok_or_else(|| {
                invalid(
                    "programs.rule_set",
                    format!("must be food-only or cash-allowed, got {:?}", cfg.rule_set),
                )
            })?;
        }
        Ok(p)
    }

    /// Parses and validates a programs file; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Programs, ProgramsError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ProgramsError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let c = Checker { text, origin };

        // PKH
        let per_year = c.positive32("pkh.tahap_per_year", &raw.pkh.tahap_per_year, 12)?;
        let months = c.sourced("pkh.tahap_months", &raw.pkh.tahap_months)?;
        let span = raw.pkh.tahap_months.value.span();
        if months.len() != per_year as usize {
            return c.err(
                "pkh.tahap_months",
                span,
                format!(
                    "must list {per_year} months (pkh.tahap_per_year), got {}",
                    months.len()
                ),
            );
        }
        if months.iter().any(|m| !(1..=12).contains(m)) || months.windows(2).any(|w| w[0] >= w[1]) {
            return c.err(
                "pkh.tahap_months",
                span,
                "months must be 1..=12 in increasing order",
            );
        }
        let tahap_months = months.iter().map(|&m| m as u8).collect();
        let mut components: Vec<Component> = Vec::new();
        if raw.pkh.components.get_ref().is_empty() {
            return c.err(
                "pkh.components",
                raw.pkh.components.span(),
                "at least one component is needed",
            );
        }
        for rc in raw.pkh.components.get_ref() {
            let key = rc.key.get_ref().clone();
            let path = |field: &str| format!("pkh.components.{key}.{field}");
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return c.err(
                    "pkh.components.key",
                    rc.key.span(),
                    format!("{key:?} must be lower-case letters, digits and _"),
                );
            }
            if components.iter().any(|x| x.key == key) {
                return c.err(
                    "pkh.components.key",
                    rc.key.span(),
                    format!("component {key} listed twice"),
                );
            }
            let annual = c.positive(&path("annual"), &rc.annual, PKH_ANNUAL_MAX_RUPIAH)? * 100;
            if annual % u64::from(per_year) != 0 {
                return c.err(
                    &path("annual"),
                    rc.annual.value.span(),
                    format!("must divide into {per_year} tahap to the sen"),
                );
            }
            let cap = match &rc.cap {
                Some(s) => Some(c.positive32(&path("cap"), s, 100)?),
                None => None,
            };
            components.push(Component {
                key,
                name: rc.name.clone(),
                annual,
                cap,
            });
        }

        // BPNT
        let monthly = c.positive("bpnt.monthly", &raw.bpnt.monthly, BPNT_MONTHLY_MAX_RUPIAH)? * 100;
        let cad = c.sourced("bpnt.cadence", &raw.bpnt.cadence)?;
        let Some(cadence) = Cadence::parse(cad) else {
            return c.err(
                "bpnt.cadence",
                raw.bpnt.cadence.value.span(),
                format!("must be monthly, 2-monthly or quarterly, got {cad:?}"),
            );
        };
        let rs = c.sourced("bpnt.rule_set", &raw.bpnt.rule_set)?;
        let Some(rule_set) = parse_rule_set(rs) else {
            return c.err(
                "bpnt.rule_set",
                raw.bpnt.rule_set.value.span(),
                format!("must be food-only or cash-allowed, got {rs:?}"),
            );
        };
        let allowed = c.codes("bpnt.commodities.allowed", &raw.bpnt.commodities.allowed)?;
        let never = c.codes("bpnt.commodities.never", &raw.bpnt.commodities.never)?;
        if let Some(code) = never.iter().find(|x| allowed.contains(x)) {
            return c.err(
                "bpnt.commodities.never",
                raw.bpnt.commodities.never.value.span(),
                format!(
                    "{} is also in bpnt.commodities.allowed",
                    String::from_utf8_lossy(code)
                ),
            );
        }

        // Limits and dormancy
        let l = &raw.limits;
        let defaults = Limits::default();
        let limits = Limits {
            withdrawal_amount_max: c.positive(
                "limits.withdrawal_amount_max",
                &l.withdrawal_amount_max,
                9_999_999_999,
            )? * 100,
            withdrawal_day_amount_max: c.positive(
                "limits.withdrawal_day_amount_max",
                &l.withdrawal_day_amount_max,
                9_999_999_999,
            )? * 100,
            withdrawal_day_count_max: c.positive32(
                "limits.withdrawal_day_count_max",
                &l.withdrawal_day_count_max,
                10_000,
            )?,
            pin_tries_max: c.positive32("limits.pin_tries_max", &l.pin_tries_max, 9)? as u8,
            key_retention_days: match &l.key_retention_days {
                Some(k) => c.positive32("limits.key_retention_days", k, 3_650)?,
                None => defaults.key_retention_days,
            },
            dormant_block_days: c.positive32(
                "dormant.block_days",
                &raw.dormant.block_days,
                3_650,
            )?,
            dormant_return_days: c.positive32(
                "dormant.return_days",
                &raw.dormant.return_days,
                3_650,
            )?,
            ..defaults
        };
        Ok(Programs {
            pkh: Pkh {
                tahap_months,
                components,
            },
            bpnt: Bpnt {
                monthly,
                cadence,
                rule_set,
                allowed,
                never,
            },
            limits,
        })
    }

    /// Tahap per year.
    pub fn tahap_per_year(&self) -> u32 {
        self.pkh.tahap_months.len() as u32
    }

    /// The index of the component with this key.
    pub fn component_index(&self, key: &str) -> Option<usize> {
        self.pkh.components.iter().position(|c| c.key == key)
    }

    /// The family's PKH amount per year, DE4 units. `counts[i]` is the number
    /// of members in component `i` (file order); each is capped first.
    pub fn pkh_annual(&self, counts: &[u8]) -> Amount {
        self.pkh
            .components
            .iter()
            .zip(counts)
            .map(|(c, &n)| {
                let counted = c.cap.map_or(u32::from(n), |cap| u32::from(n).min(cap));
                c.annual * u64::from(counted)
            })
            .sum()
    }

    /// The family's PKH amount for one tahap: the annual amount ÷ tahap per
    /// year (exact: each annual amount divides, checked at load).
    pub fn pkh_tahap(&self, counts: &[u8]) -> Amount {
        self.pkh_annual(counts) / u64::from(self.tahap_per_year())
    }

    /// BPNT for `months` months.
    pub fn bpnt_amount(&self, months: u32) -> Amount {
        self.bpnt.monthly * u64::from(months)
    }

    /// The month a PKH tahap is credited in.
    pub fn tahap_month(&self, year: u16, tahap: u8) -> Option<Month> {
        let m = *self
            .pkh
            .tahap_months
            .get(usize::from(tahap).checked_sub(1)?)?;
        Some(Month { year, month: m })
    }

    /// The period of `program` a wave in `month` pays: the latest tahap
    /// credited in or before that month (PKH), or the cadence's group of
    /// months containing it (BPNT).
    pub fn current_period(&self, program: Program, month: Month) -> Period {
        match program {
            Program::Pkh => {
                let tahap = self
                    .pkh
                    .tahap_months
                    .iter()
                    .rposition(|&m| m <= month.month)
                    .map(|i| i as u8 + 1);
                match tahap {
                    Some(t) => Period::Tahap {
                        year: month.year,
                        tahap: t,
                    },
                    // Before the first tahap month: last year's last tahap.
                    None => Period::Tahap {
                        year: month.year - 1,
                        tahap: self.tahap_per_year() as u8,
                    },
                }
            }
            Program::Bpnt => {
                let n = self.bpnt.cadence.months() as u8;
                let start = (month.month - 1) / n * n + 1;
                let end = (start + n - 1).min(12);
                Period::Months {
                    first: Month {
                        year: month.year,
                        month: start,
                    },
                    last: Month {
                        year: month.year,
                        month: end,
                    },
                }
            }
        }
    }

    /// Parses a period of `program`.
    pub fn parse_period(&self, program: Program, s: &str) -> Result<Period, PeriodError> {
        match program {
            Program::Pkh => Period::parse_tahap(s, self.tahap_per_year()),
            Program::Bpnt => Period::parse_months(s),
        }
    }

    /// The ledger configuration of `bank` under these rules.
    pub fn ledger_config(&self, bank: BankCode) -> LedgerConfig {
        LedgerConfig {
            bank,
            rule_set: self.bpnt.rule_set,
            limits: self.limits,
        }
    }

    /// Every bank's ledger configuration under these rules.
    pub fn ledger_configs(&self) -> Vec<LedgerConfig> {
        crate::pan::Bank::ALL
            .iter()
            .map(|b| self.ledger_config(BankCode(b.code_number())))
            .collect()
    }
}

/// `PKH` or `BPNT` (any case).
pub fn parse_program(s: &str) -> Option<Program> {
    if s.eq_ignore_ascii_case("PKH") {
        Some(Program::Pkh)
    } else if s.eq_ignore_ascii_case("BPNT") {
        Some(Program::Bpnt)
    } else {
        None
    }
}

/// `PKH` or `BPNT`.
pub fn program_name(p: Program) -> &'static str {
    match p {
        Program::Pkh => "PKH",
        Program::Bpnt => "BPNT",
    }
}

/// An amount in DE4 units as rupiah with two decimals, `600000.00`.
pub fn rupiah(amount: u128) -> String {
    format!("{}.{:02}", amount / 100, amount % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_file_is_valid() {
        let p = Programs::builtin();
        assert_eq!(p.pkh.components.len(), 7);
        assert_eq!(p.bpnt.monthly, 20_000_000);
        // The file and the ledger's defaults say the same.
        assert_eq!(p.limits, Limits::default());
    }
}
