//! Payment periods as `disburse` names them (INTERFACE §8): a PKH tahap
//! (`2026-T1` … `2026-T4`), one BPNT month (`2026-01`) or a range of months
//! credited as one wave (`2026-01..2026-03`).
//!
//! Why months are the unit of BPNT idempotency: a month paid inside a range
//! must never be paid again alone (nor inside another range), so a range is
//! always credited month by month, one key per (family, month).

use std::fmt;

/// Most months in one BPNT range (a year).
pub const RANGE_MONTHS_MAX: u32 = 12;

/// A calendar month.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Month {
    /// Year, 2000..=2099.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
}

impl Month {
    /// Months since year 0 (for ranges).
    pub fn ordinal(self) -> u32 {
        u32::from(self.year) * 12 + u32::from(self.month) - 1
    }

    fn from_ordinal(o: u32) -> Month {
        Month {
            year: (o / 12) as u16,
            month: (o % 12 + 1) as u8,
        }
    }

    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Month> {
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit())
        {
            return None;
        }
        let year: u16 = s[..4].parse().ok()?;
        let month: u8 = s[5..].parse().ok()?;
        ((2000..=2099).contains(&year) && (1..=12).contains(&month))
            .then_some(Month { year, month })
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// What one `disburse` run pays.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Period {
    /// PKH tahap `tahap` (1-based) of `year`.
    Tahap {
        /// Year.
        year: u16,
        /// 1..=tahap_per_year.
        tahap: u8,
    },
    /// BPNT months `first..=last` (one month when equal).
    Months {
        /// First month paid.
        first: Month,
        /// Last month paid (inclusive).
        last: Month,
    },
}

/// Why a period string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// Not a PKH tahap.
    #[error("PKH period must be YYYY-T<n> with n in 1..={max}, e.g. 2026-T1; got {got:?}")]
    Tahap { got: String, max: u32 },
    /// Not a BPNT month or range.
    #[error("BPNT period must be YYYY-MM or YYYY-MM..YYYY-MM (at most {RANGE_MONTHS_MAX} months, first ≤ last), e.g. 2026-01..2026-03; got {got:?}")]
    Months { got: String },
}

impl Period {
    /// A PKH tahap, `YYYY-T<n>`, with `tahap_per_year` tahap in a year.
    pub fn parse_tahap(s: &str, tahap_per_year: u32) -> Result<Period, PeriodError> {
        let bad = || PeriodError::Tahap {
            got: s.to_string(),
            max: tahap_per_year,
        };
        let (y, t) = s.split_once("-T").ok_or_else(bad)?;
        let year = Month::parse(&format!("{y}-01")).ok_or_else(bad)?.year;
        if t.is_empty() || t.len() > 2 || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let tahap: u8 = t.parse().map_err(|_| bad())?;
        if tahap == 0 || u32::from(tahap) > tahap_per_year {
            return Err(bad());
        }
        Ok(Period::Tahap { year, tahap })
    }

    /// A BPNT month `YYYY-MM` or range `YYYY-MM..YYYY-MM`.
    pub fn parse_months(s: &str) -> Result<Period, PeriodError> {
        let bad = || PeriodError::Months { got: s.to_string() };
        let (a, b) = s.split_once("..").unwrap_or((s, s));
        let first = Month::parse(a).ok_or_else(bad)?;
        let last = Month::parse(b).ok_or_else(bad)?;
        if last < first || last.ordinal() - first.ordinal() >= RANGE_MONTHS_MAX {
            return Err(bad());
        }
        Ok(Period::Months { first, last })
    }

    /// The months of a BPNT period, in order (empty for a tahap).
    pub fn months(&self) -> Vec<Month> {
        match *self {
            Period::Tahap { .. } => Vec::new(),
            Period::Months { first, last } => (first.ordinal()..=last.ordinal())
                .map(Month::from_ordinal)
                .collect(),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Tahap { year, tahap } => write!(f, "{year:04}-T{tahap}"),
            Period::Months { first, last } if first == last => write!(f, "{first}"),
            Period::Months { first, last } => write!(f, "{first}..{last}"),
        }
    }
}

/// The civil date (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`), so no date crate is needed.
pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD` to days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i32 = s[..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..].parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Today's month in WIB (UTC+7), from the system clock.
pub fn current_month_wib() -> Month {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = crate::ledger::wib_day(secs) as i64;
    let (y, m, _) = civil_from_days(days);
    Month {
        year: y.clamp(2000, 2099) as u16,
        month: m as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_print() {
        assert_eq!(
            Period::parse_tahap("2026-T1", 4).unwrap(),
            Period::Tahap {
                year: 2026,
                tahap: 1
            }
        );
        assert!(Period::parse_tahap("2026-T5", 4).is_err());
        assert!(Period::parse_tahap("2026-T0", 4).is_err());
        assert!(Period::parse_tahap("2026-01", 4).is_err());
        let p = Period::parse_months("2026-11..2027-02").unwrap();
        assert_eq!(p.to_string(), "2026-11..2027-02");
        let m: Vec<String> = p.months().iter().map(|m| m.to_string()).collect();
        assert_eq!(m, ["2026-11", "2026-12", "2027-01", "2027-02"]);
        assert_eq!(
            Period::parse_months("2026-01").unwrap().to_string(),
            "2026-01"
        );
        assert!(Period::parse_months("2026-03..2026-01").is_err());
        assert!(Period::parse_months("2026-13").is_err());
        assert!(Period::parse_months("2026-01..2027-01").is_err());
        assert!(Period::parse_months("2026-1").is_err());
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(parse_date("2026-03-01"), Some(days_from_civil(2026, 3, 1)));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(parse_date("2025-02-29"), None);
        for d in [-1000i64, 0, 19_000, 20_454, 30_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
