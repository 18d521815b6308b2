//! Ledger apply throughput: batches of 1024 purchases spread over 100 000
//! cards, each purchase one posting. Criterion reports elements/s, which is
//! postings/s here. Goal (DESIGN §2): ≥ 5M postings/s on one core.
//!
//! Only `Ledger::apply` is timed: building the commands is the switch's
//! work, and expiring keys (done untimed every few batches to keep memory
//! flat across millions of iterations) is a maintenance command.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kks_switch::ledger::{
    Acceptor, BankCode, CardRef, CardStatus, Code, Command, Credit, Effects, FamilyId, Fingerprint,
    Ledger, LedgerConfig, MerchantId, Pan, Payment, Precheck, Program, Pvv, Request, RequestKey,
    TerminalKind,
};

const CARDS: u64 = 100_000;
/// Keys are expired every this many batches, keeping between one and two
/// such windows (262 144 to 524 288 keys) live, like a shard's sliding
/// retention window.
const KEPT_BATCHES: u64 = 256;
const BATCH: usize = 1024;
const TERMINALS: u64 = 64;
const PVV: Pvv = Pvv([7; 32]);

/// `600002` + n in 10 digits, without allocating.
fn pan(n: u64) -> Pan {
    let mut digits = *b"6000020000000000";
    let mut v = n;
    for d in digits[6..].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    Pan::from_digits(&digits).expect("valid PAN")
}

fn merchant(n: u64) -> MerchantId {
    MerchantId::new(format!("EWARONG{n:08}").as_bytes()).expect("15 bytes")
}

/// `<prefix>|002|TERM0001|<n, 16 digits>`, without allocating.
fn key(prefix: &str, n: u64) -> RequestKey {
    let mut digits = [b'0'; 16];
    let mut v = n;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    RequestKey::from_parts(&[prefix.as_bytes(), b"002", b"TERM0001", &digits]).expect("short")
}

/// A ledger with `CARDS` funded cards and `TERMINALS` e-Warong.
fn world() -> Ledger {
    let mut ledger = Ledger::new(LedgerConfig::new(BankCode(2)));
    let mut fx = Effects::default();
    let mut setup: Vec<Command> = (0..TERMINALS)
        .map(|t| Command::OpenTerminalAccount {
            merchant: merchant(t),
            kind: TerminalKind::Ewarong,
        })
        .collect();
    for n in 0..CARDS {
        setup.push(Command::OpenCard {
            pan: pan(n),
            family: FamilyId(3_201_000_000_000_000 + n),
            pvv: PVV,
            status: CardStatus::Active,
        });
        setup.push(Command::Credit(Credit {
            request: Request {
                key: key("BPNT", n),
                fingerprint: Fingerprint::ZERO,
            },
            program: Program::Bpnt,
            card: CardRef::Pan(pan(n)),
            amount: 1_000_000_000_000,
        }));
    }
    for chunk in setup.chunks(60_000) {
        ledger.apply(chunk, 1_767_582_000, &mut fx);
    }
    ledger
}

fn batch(seq: &mut u64, rng: &mut u64, merchants: &[MerchantId]) -> Vec<Command> {
    (0..BATCH)
        .map(|_| {
            *seq += 1;
            // xorshift: cards and terminals spread like a real wave.
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            let card = *rng % CARDS;
            Command::Purchase(Payment {
                request: Request {
                    key: key("020", *seq),
                    fingerprint: Fingerprint([3; 16]),
                },
                wallet: Program::Bpnt,
                pan: pan(card),
                amount: 1_500_000,
                acceptor: Acceptor {
                    kind: TerminalKind::Ewarong,
                    bank: BankCode(2),
                    merchant: merchants[(card % TERMINALS) as usize],
                },
                pin: Some(PVV),
                precheck: Precheck::Passed,
            })
        })
        .collect()
}

fn purchases(c: &mut Criterion) {
    let mut ledger = world();
    let mut fx = Effects::with_capacity(BATCH);
    let mut seq = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut ts = 1_767_600_000u64;
    let merchants: Vec<MerchantId> = (0..TERMINALS).map(merchant).collect();
    let mut batches = 0u64;

    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("purchases_1024_over_100k_cards", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let commands = batch(&mut seq, &mut rng, &merchants);
                ts += 1;
                let start = Instant::now();
                ledger.apply(black_box(&commands), ts, &mut fx);
                timed += start.elapsed();
                assert!(fx.outcomes.iter().all(|o| o.code() == Code::Approved));
                assert_eq!(fx.postings.len(), BATCH);
                batches += 1;
                if batches.is_multiple_of(KEPT_BATCHES) {
                    ledger.apply(
                        &[Command::ExpireKeys {
                            before: ts - KEPT_BATCHES,
                        }],
                        ts,
                        &mut fx,
                    );
                }
            }
            timed
        })
    });
    group.finish();
    assert!(ledger.check_invariants().is_ok());
}

criterion_group!(benches, purchases);
criterion_main!(benches);
