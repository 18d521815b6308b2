//! Resident memory per card of one bank's ledger, the state a disbursement
//! wave has to hold (issue #4 item 7: 20M families in ≤ 4 GiB, about 214
//! bytes per family with everything else included).
//!
//! Opens N cards (default 1,000,000; `cargo bench --bench memory -- N`),
//! credits a BPNT month, a PKH tahap and a second BPNT month to every
//! family, and prints the
//! process's resident memory growth per card after each step, the sizes of
//! the records involved, and the size of the bank's encoded checkpoint.
//! Memory, not time: the figures are read from `/proc/self/status`.

use kks_switch::ledger::{
    BankCode, Card, CardStatus, Command, Effects, FamilyId, Ledger, LedgerConfig, Pan,
    PeriodCredit, Program, Pvv,
};

const CHUNK: u64 = 4096;
const KK: u64 = 3_201_010_000_000_000;

/// Resident set size in bytes (0 where `/proc` is missing).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let base = rss();
    let per_card = |what: &str| {
        println!(
            "{what}: {:.0} bytes per card",
            (rss().saturating_sub(base)) as f64 / n as f64
        );
    };
    let mut ledger = Ledger::new(LedgerConfig::new(BankCode(2)));
    let mut fx = Effects::default();
    let mut t = 1_780_000_000u64;
    let mut run = |ledger: &mut Ledger, t: u64, make: &dyn Fn(u64) -> Command| {
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK).min(n);
            let batch: Vec<Command> = (start..end).map(make).collect();
            ledger.apply(&batch, t, &mut fx);
            assert!(fx
                .outcomes
                .iter()
                .all(|o| o.code() == kks_switch::ledger::Code::Approved));
            start = end;
        }
    };
    run(&mut ledger, t, &|i| Command::OpenCard {
        pan: Pan::from_digits(format!("6000020{i:09}").as_bytes()).expect("PAN"),
        family: FamilyId(KK + i),
        pvv: Pvv([7; 32]),
        status: CardStatus::Active,
    });
    per_card(&format!("{n} cards opened"));
    t += 30 * 86_400;
    run(&mut ledger, t, &|i| {
        Command::PeriodCredit(PeriodCredit {
            program: Program::Bpnt,
            period: 2026 * 12,
            family: FamilyId(KK + i),
            amount: 20_000_000,
        })
    });
    per_card("after a BPNT month");
    t += 86_400;
    run(&mut ledger, t, &|i| {
        Command::PeriodCredit(PeriodCredit {
            program: Program::Pkh,
            period: 2026 * 12,
            family: FamilyId(KK + i),
            amount: 75_000_000,
        })
    });
    per_card("after a PKH tahap");
    t += 30 * 86_400;
    run(&mut ledger, t, &|i| {
        Command::PeriodCredit(PeriodCredit {
            program: Program::Bpnt,
            period: 2026 * 12 + 1,
            family: FamilyId(KK + i),
            amount: 20_000_000,
        })
    });
    // Each BPNT wallet now keeps two lots: no longer inline.
    per_card("after a second BPNT month");
    let body = postcard::to_stdvec(&ledger.snapshot_ref()).expect("encodes");
    println!(
        "checkpoint body: {:.0} bytes per card",
        body.len() as f64 / n as f64
    );
    println!(
        "sizes: a card as the ledger holds it {} bytes (wallet balances and a wallet's first lot inside it; \
         PAN and family index slots 4 bytes each); its serialized form (Card) {} bytes",
        Ledger::held_card_bytes(),
        std::mem::size_of::<Card>(),
    );
}
