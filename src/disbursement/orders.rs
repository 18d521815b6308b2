//! Payment orders: the ministry's CSV (columns in `specs/disbursement.md`),
//! or orders computed from the families' entitlements, checked and split
//! into idempotent credits.

use super::Reason;
use crate::ledger::{Amount, Program, AMOUNT_WIRE_MAX};
use crate::pan::Bank;
use crate::programs::{program_name, Month, Period, Programs};
use crate::storage::FamilyRow;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// The columns of a payment-order file, in the documented order.
pub const COLUMNS: [&str; 7] = [
    "order_id", "program", "period", "bank", "kk", "nik", "amount",
];

/// One credit: a (family, tahap) or (family, month) with its own key.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    /// Index of the order in [`Plan::orders`].
    pub order: u32,
    /// Bank whose shard takes it.
    pub bank: Bank,
    /// The family.
    pub kk: u64,
    /// The BPNT month (None for PKH).
    pub month: Option<Month>,
    /// DE4 units.
    pub amount: Amount,
}

/// One order line.
#[derive(Clone, Debug)]
pub struct Order {
    /// 1-based line number in the file (header is line 1); 0 for computed orders.
    pub line: u64,
    pub order_id: String,
    pub kk: String,
    /// DE4 units; 0 when the amount did not parse.
    pub amount: Amount,
    /// Set when the order is rejected before reaching the ledger.
    pub reject: Option<(Reason, String)>,
}

/// Orders and their credits.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub orders: Vec<Order>,
    pub parts: Vec<Part>,
}

/// Why an orders file cannot be read at all (as opposed to a bad row).
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line 1: header must name the columns {expected}; got {got:?}")]
    Header {
        path: String,
        expected: String,
        got: String,
    },
}

/// Parses `600000.00` (rupiah, at most 2 decimals) into DE4 units.
pub fn parse_amount(s: &str) -> Option<Amount> {
    let d = Decimal::from_str(s.trim()).ok()?;
    if d.is_sign_negative() || d.normalize().scale() > 2 {
        return None;
    }
    let cents = (d * Decimal::from(100)).trunc().to_u64()?;
    (cents > 0 && cents <= AMOUNT_WIRE_MAX).then_some(cents)
}

fn parse_kk(s: &str) -> Option<u64> {
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0'))
        .then(|| s.parse().ok())
        .flatten()
}

/// What a plan is checked against.
pub struct Context<'a> {
    pub programs: &'a Programs,
    pub program: Program,
    pub period: Period,
    /// The period as given on the command line (orders must name the same).
    pub period_text: &'a str,
    /// Known families by KK (from `seed`), for the amount and NIK checks.
    pub families: &'a HashMap<u64, FamilyRow>,
}

impl Context<'_> {
    /// The family's entitlement in this period, if it is known.
    pub(crate) fn entitlement(&self, f: &FamilyRow) -> Amount {
        match self.program {
            Program::Pkh if f.pkh => self
                .programs
                .pkh_tahap(&counts(self.programs, &f.components)),
            Program::Bpnt if f.bpnt => self.programs.bpnt_amount(self.period.months().len() as u32),
            _ => 0,
        }
    }

    pub(crate) fn enrolled(&self, f: &FamilyRow) -> bool {
        match self.program {
            Program::Pkh => f.pkh,
            Program::Bpnt => f.bpnt,
        }
    }

    /// Splits a checked order into its credits.
    fn parts(
        &self,
        order: u32,
        bank: Bank,
        kk: u64,
        amount: Amount,
    ) -> Result<Vec<Part>, (Reason, String)> {
        match self.program {
            Program::Pkh => Ok(vec![Part {
                order,
                bank,
                kk,
                month: None,
                amount,
            }]),
            Program::Bpnt => {
                let months = self.period.months();
                let want = self.programs.bpnt_amount(months.len() as u32);
                if amount != want {
                    return Err((
                        Reason::AmountMismatch,
                        format!(
                            "BPNT pays {} for {} month(s), order says {}",
                            crate::programs::rupiah(want.into()),
                            months.len(),
                            crate::programs::rupiah(amount.into())
                        ),
                    ));
                }
                let monthly = self.programs.bpnt.monthly;
                Ok(months
                    .into_iter()
                    .map(|m| Part {
                        order,
                        bank,
                        kk,
                        month: Some(m),
                        amount: monthly,
                    })
                    .collect())
            }
        }
    }
}

/// PKH member counts from the stored `key=n,...` text, in programs order.
/// Unknown keys are ignored (a programs file that dropped a component).
pub fn counts(programs: &Programs, text: &str) -> Vec<u8> {
    let mut c = vec![0u8; programs.pkh.components.len()];
    for item in text.split(',').filter(|s| !s.is_empty()) {
        if let Some((k, n)) = item.split_once('=') {
            if let (Some(i), Ok(n)) = (programs.component_index(k), n.parse::<u8>()) {
                c[i] = n;
            }
        }
    }
    c
}

/// Orders computed from the families' entitlements: one per family enrolled
/// in the program with a non-zero amount, in KK order.
pub fn from_entitlements(ctx: &Context<'_>, families: &[FamilyRow]) -> Plan {
    let mut plan = Plan::default();
    for f in families {
        if !ctx.enrolled(f) {
            continue;
        }
        let amount = ctx.entitlement(f);
        if amount == 0 {
            continue;
        }
        let Some(bank) = Bank::from_code(&format!("{:03}", f.bank)) else {
            continue;
        };
        let idx = plan.orders.len() as u32;
        let mut order = Order {
            line: 0,
            order_id: format!("{}-{}-{}", program_name(ctx.program), ctx.period_text, f.kk),
            kk: f.kk.to_string(),
            amount,
            reject: None,
        };
        match ctx.parts(idx, bank, f.kk, amount) {
            Ok(p) => plan.parts.extend(p),
            Err(r) => order.reject = Some(r),
        }
        plan.orders.push(order);
    }
    plan
}

/// Reads and checks a payment-order file.
pub fn from_file(ctx: &Context<'_>, path: &str) -> Result<Plan, OrdersError> {
    let text = std::fs::read_to_string(path).map_err(|source| OrdersError::Read {
        path: path.to_string(),
        source,
    })?;
    from_text(ctx, &text, path)
}

/// Checks the text of a payment-order file; `path` names it in errors.
pub fn from_text(ctx: &Context<'_>, text: &str, path: &str) -> Result<Plan, OrdersError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or("");
    let names: Vec<String> = header
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut col = [usize::MAX; 7];
    for (i, want) in COLUMNS.iter().enumerate() {
        match names.iter().position(|n| n == want) {
            Some(p) => col[i] = p,
            None => {
                return Err(OrdersError::Header {
                    path: path.to_string(),
                    expected: COLUMNS.join(","),
                    got: header.to_string(),
                })
            }
        }
    }
    let mut plan = Plan::default();
    let mut seen_kk: HashSet<u64> = HashSet::new();
    let mut seen_id: HashSet<String> = HashSet::new();
    for (i, raw) in lines {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').map(str::trim).collect();
        let get = |c: usize| fields.get(col[c]).copied().unwrap_or("");
        let idx = plan.orders.len() as u32;
        let mut order = Order {
            line: i as u64 + 1,
            order_id: get(0).to_string(),
            kk: get(4).to_string(),
            amount: parse_amount(get(6)).unwrap_or(0),
            reject: None,
        };
        let checked = check_row(
            ctx,
            &fields,
            names.len(),
            &get,
            &mut seen_kk,
            &mut seen_id,
            &order,
        );
        match checked.and_then(|(bank, kk)| ctx.parts(idx, bank, kk, order.amount)) {
            Ok(p) => plan.parts.extend(p),
            Err(r) => order.reject = Some(r),
        }
        plan.orders.push(order);
    }
    Ok(plan)
}

fn check_row<'f>(
    ctx: &Context<'_>,
    fields: &[&'f str],
    width: usize,
    get: &dyn Fn(usize) -> &'f str,
    seen_kk: &mut HashSet<u64>,
    seen_id: &mut HashSet<String>,
    order: &Order,
) -> Result<(Bank, u64), (Reason, String)> {
    let bad = |d: String| Err((Reason::BadRow, d));
    if fields.len() != width {
        return bad(format!("{} fields, the header has {width}", fields.len()));
    }
    if order.order_id.is_empty() {
        return bad("empty order_id".into());
    }
    let Some(program) = crate::programs::parse_program(get(1)) else {
        return bad(format!("program {:?} is not PKH or BPNT", get(1)));
    };
    if program != ctx.program {
        return Err((
            Reason::WrongProgram,
            format!("order is for {}", program_name(program)),
        ));
    }
    if get(2) != ctx.period_text {
        return Err((
            Reason::WrongPeriod,
            format!(
                "order is for {:?}, this run pays {}",
                get(2),
                ctx.period_text
            ),
        ));
    }
    let Some(bank) = Bank::from_name(get(3)) else {
        return bad(format!(
            "bank {:?} is not BRI, BNI, MANDIRI, BTN or BSI",
            get(3)
        ));
    };
    let Some(kk) = parse_kk(get(4)) else {
        return bad("kk must be 16 digits".into());
    };
    let nik = get(5);
    if nik.len() != 16 || !nik.bytes().all(|b| b.is_ascii_digit()) {
        return bad("nik must be 16 digits".into());
    }
    if order.amount == 0 {
        return bad(format!(
            "amount {:?} is not a positive rupiah amount with at most 2 decimals",
            get(6)
        ));
    }
    if !seen_id.insert(order.order_id.clone()) || !seen_kk.insert(kk) {
        return Err((
            Reason::DuplicateLine,
            "order_id or kk already in this file".into(),
        ));
    }
    if let Some(f) = ctx.families.get(&kk) {
        if f.nik != nik {
            return Err((Reason::NikMismatch, "nik differs from the family's".into()));
        }
        if !ctx.enrolled(f) {
            return Err((
                Reason::NotEnrolled,
                format!("family is not enrolled in {}", program_name(ctx.program)),
            ));
        }
        let want = ctx.entitlement(f);
        if ctx.program == Program::Pkh && want != order.amount {
            return Err((
                Reason::AmountMismatch,
                format!("entitlement is {}", crate::programs::rupiah(want.into())),
            ));
        }
    }
    Ok((bank, kk))
}
