//! Deterministic simulation of the switch core (issue 7, item 2).
//!
//! One thread, no tokio, no sockets, no clock: a world with a fake clock
//! (milliseconds), a seeded PRNG, simulated terminals that build real ISO 8583
//! frames (MACs, ISO-0 PIN blocks, DE48 baskets), a fake network that drops,
//! duplicates, delays and so reorders frames in both directions, and the real
//! server core: [`handle`](crate::switch::handler::handle) (decode, validate,
//! 0800), [`auth::decide`](crate::auth::decide) (MAC, terminal, BIN, Luhn,
//! basket, PIN → PVV, the ledger command), per-bank queues drained into
//! batches applied by the real [`Ledger`], a committer that makes batches
//! durable in a simulated journal (whose writes fail when told to) exactly as
//! `shard::committer` does (generations; a failed group answers 91 and the
//! bank rebuilds from checkpoint + journal), checkpoints, and server restarts
//! that lose everything in flight. Responses are built by
//! [`auth::from_done`](crate::auth::from_done).
//!
//! Terminals time out and then repeat the request (same key, same content)
//! or reverse it (0400, then 0401 repeats, DE90 naming it), as INTERFACE §5
//! says a terminal would; a 91 answer is treated like a timeout (reversed),
//! because another copy of the request may still be in flight. An operator
//! sends disbursement credits straight to the bank queues and repeats them
//! with the same key until one is answered.
//!
//! The auditor runs after every step: the invariants of every live ledger;
//! per idempotency key at most one payment effect and at most one reversal
//! effect in the durable journal, and no payment after its reversal; every
//! 00 a terminal received is backed by the durable journal; non-91 answers
//! to one key all agree (DE39, DE38); response MACs verify. After a restart
//! the recovered ledger must equal a replay of the whole durable journal
//! from empty. At the end the faults are switched off, the world drains, and
//! each card's balances must equal the terminals' and operator's model of
//! what was approved and not reversed. A failure carries the seed, the step
//! and the last events.
//!
//! Determinism: everything is driven by one [`SplitMix64`] and ordered maps,
//! so a seed replays exactly (`run` twice gives the same [`Report`]).

use crate::auth::{self, Decision};
use crate::crypto::{compute_mac, encrypt_pin_block, pin_verification_value, verify_mac};
use crate::crypto::{MacKey, Pin, PinKey, PvKey};
use crate::iso8583::{Builder, Fields, Message};
use crate::ledger::{
    BankCode, CardRef, CardStatus, Code, Command, Credit, Effects, FamilyId, Fingerprint, Ledger,
    LedgerConfig, MerchantId, Pan as LedgerPan, PostingKind, Program, Pvv, Request, RequestKey,
    RuleSet, Snapshot, TerminalKind,
};
use crate::pan::{luhn_check_digit, Bank, Pan};
use crate::registry::{Registry, Terminal};
use crate::seed::SplitMix64;
use crate::shard::{decode_commands, encode_commands, Done};
use crate::switch::handler::{handle, Authorizer, Reply, Sink};
use crate::switch::respond::Added;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

/// 2026-03-02 00:00:00 UTC: the ledger time of simulated millisecond 0.
const BASE_UNIX: u64 = 1_772_409_600;
/// Same as `shard::KEY_EXPIRY_INTERVAL_SECONDS`.
const KEY_EXPIRY_INTERVAL_SECONDS: u64 = 1;
/// Events kept for the failure trace.
const TRACE_LEN: usize = 80;
/// The PIN of every simulated card.
const PIN: &[u8] = b"123456";
const WRONG_PIN: &[u8] = b"654321";
const PIN_KEY_HEX: &str = "042666B49184CF5C68DE9628D0397B36";
const MAC_KEY_HEX: &str = "00112233445566778899AABBCCDDEEFF";

/// Fault rates, in parts per thousand unless named otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// A frame (either direction) is lost.
    pub drop: u64,
    /// A frame is delivered twice.
    pub duplicate: u64,
    /// A frame is held back 0.5–3 s (far behind later frames).
    pub long_delay: u64,
    /// Most network latency of an ordinary frame, ms.
    pub latency_max_ms: u64,
    /// A group commit fails (nothing written; its banks answer 91 and rebuild).
    pub commit_fail: u64,
    /// Per step: the server restarts (queues, uncommitted batches and
    /// frames in flight lost; ledgers rebuilt from checkpoint + journal).
    pub restart: u64,
    /// Per step: the clock jumps 1 minute to 12 hours.
    pub pause: u64,
}

impl Faults {
    /// The rates the CI seeds run with.
    pub const DEFAULT: Faults = Faults {
        drop: 40,
        duplicate: 40,
        long_delay: 20,
        latency_max_ms: 40,
        commit_fail: 30,
        restart: 2,
        pause: 1,
    };
    /// No faults (the drain at the end of every run).
    pub const NONE: Faults = Faults {
        drop: 0,
        duplicate: 0,
        long_delay: 0,
        latency_max_ms: 5,
        commit_fail: 0,
        restart: 0,
        pause: 0,
    };
}

/// A deliberate bug in the simulated server, to show that the auditor
/// catches it (the simulation's own test that it can fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Answer as soon as the batch is applied, before it is durable.
    AnswerBeforeCommit,
    /// After a failed commit, keep the ledger (with the lost batch in it)
    /// instead of rebuilding it from the store.
    NoRebuildAfterFailedCommit,
}

/// One simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Events processed with faults on (then the drain, faults off).
    pub steps: u64,
    pub faults: Faults,
    /// Cards per bank.
    pub cards_per_bank: u32,
    pub sabotage: Option<Sabotage>,
    /// Terminal policy: take a 91 to a 0200 as a final decline instead of
    /// reversing. Unsafe when copies of the request may still be in flight
    /// (a repeat, a network duplicate): one of them can be approved later.
    pub ninety_one_is_final: bool,
}

impl SimConfig {
    pub fn new(seed: u64, steps: u64) -> SimConfig {
        SimConfig {
            seed,
            steps,
            faults: Faults::DEFAULT,
            cards_per_bank: 4,
            sabotage: None,
            ninety_one_is_final: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    /// Events processed, drain included.
    pub steps: u64,
    pub drain_steps: u64,
    pub sim_ms: u64,
    pub transactions: u64,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    pub frames_duplicated: u64,
    pub requests_repeated: u64,
    pub reversals_sent: u64,
    pub approved: u64,
    pub declined: u64,
    pub reversed: u64,
    pub answered_91: u64,
    pub batches_committed: u64,
    pub commit_failures: u64,
    pub restarts: u64,
    pub pauses: u64,
    /// Originals that arrived after their reversal and were refused (94).
    pub late_originals_refused: u64,
    pub rebuilds: u64,
    pub checkpoints: u64,
    pub credits: u64,
}

/// A broken invariant, with what is needed to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    /// The step that failed.
    pub step: u64,
    /// The run's configured steps (to replay it).
    pub steps: u64,
    pub what: String,
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "DST failure: seed {} step {}: {}",
            self.seed, self.step, self.what
        )?;
        writeln!(
            f,
            "replay: KKS_DST_SEEDS={} KKS_DST_STEPS={} cargo test --test dst -- --ignored --nocapture long_run",
            self.seed, self.steps
        )?;
        writeln!(f, "last {} events:", self.trace.len())?;
        for t in &self.trace {
            writeln!(f, "  {t}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

// ------------------------------------------------------------------ world

/// The simulated terminal kinds of the population.
#[derive(Clone, Copy, Debug)]
struct TermSpec {
    tid: &'static str,
    mid: &'static str,
    kind: TerminalKind,
    bank: Bank,
    mac: bool,
}

const TERMINALS: [TermSpec; 8] = [
    TermSpec {
        tid: "EW000001",
        mid: "EWARONG00000001",
        kind: TerminalKind::Ewarong,
        bank: Bank::Bri,
        mac: false,
    },
    TermSpec {
        tid: "EW000002",
        mid: "EWARONG00000002",
        kind: TerminalKind::Ewarong,
        bank: Bank::Bri,
        mac: true,
    },
    TermSpec {
        tid: "EW000009",
        mid: "EWARONG00000009",
        kind: TerminalKind::Ewarong,
        bank: Bank::Bni,
        mac: false,
    },
    TermSpec {
        tid: "AG000001",
        mid: "AGENT0000000001",
        kind: TerminalKind::Agent,
        bank: Bank::Bri,
        mac: false,
    },
    TermSpec {
        tid: "AG000003",
        mid: "AGENT0000000003",
        kind: TerminalKind::Agent,
        bank: Bank::Bri,
        mac: true,
    },
    TermSpec {
        tid: "AG000009",
        mid: "AGENT0000000009",
        kind: TerminalKind::Agent,
        bank: Bank::Bni,
        mac: false,
    },
    TermSpec {
        tid: "AG000008",
        mid: "AGENT0000000008",
        kind: TerminalKind::Agent,
        bank: Bank::Mandiri,
        mac: true,
    },
    TermSpec {
        tid: "MR000001",
        mid: "MERCHANT0000001",
        kind: TerminalKind::Merchant,
        bank: Bank::Bri,
        mac: false,
    },
];

/// Banks whose cards and ledgers are simulated.
const BANKS: [Bank; 3] = [Bank::Bri, Bank::Bni, Bank::Mandiri];

fn pvk(bank: Bank) -> PvKey {
    let b = match bank {
        Bank::Bri => "A1",
        Bank::Mandiri => "B2",
        Bank::Bni => "C3",
        Bank::Btn => "D4",
        Bank::Bsi => "E5",
    };
    PvKey::from_hex(&format!("{}{}", b.repeat(16), "5F3C9E7A".repeat(4)))
        .unwrap_or_else(|_| unreachable!("fixed test key"))
}

fn pin_key() -> PinKey {
    PinKey::from_hex(PIN_KEY_HEX).unwrap_or_else(|_| unreachable!("fixed test key"))
}

fn mac_key() -> MacKey {
    MacKey::from_hex(MAC_KEY_HEX).unwrap_or_else(|_| unreachable!("fixed test key"))
}

fn pan_of(bank: Bank, index: u32) -> String {
    let mut s = format!("{}{:09}", bank.test_bin(), index);
    let check = luhn_check_digit(s.as_bytes());
    s.push(check as char);
    s
}

/// MMDDhhmmss (UTC) of a unix time.
fn de7(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        m,
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The authorizer the simulation hands to the real `handle`: it runs the
/// real `decide` and, instead of awaiting a shard, leaves the decision in a
/// slot for the world to queue. It never awaits, so `handle` completes on
/// its first poll.
struct SimAuth {
    registry: Registry,
    rule_set: RuleSet,
    slot: Mutex<Option<(Decision, Message<Bytes>)>>,
}

impl Authorizer for SimAuth {
    fn reject(&self, req: &Message<Bytes>, code: &[u8; 2]) -> BytesMut {
        let term = self.registry.terminal(
            req.terminal_id().unwrap_or_default(),
            req.merchant_id().unwrap_or_default(),
        );
        auth::answer(req, term, code, Added::default())
    }

    async fn authorize(&self, req: Message<Bytes>, _: &mut Option<Sink>) -> Reply {
        let term = self.registry.terminal(
            req.terminal_id().unwrap_or_default(),
            req.merchant_id().unwrap_or_default(),
        );
        match auth::decide(&self.registry, self.rule_set, &req, term) {
            Decision::Answer(code) => Reply::Now(auth::answer(&req, term, &code, Added::default())),
            d @ Decision::Submit(..) => {
                if let Ok(mut s) = self.slot.lock() {
                    *s = Some((d, req));
                }
                Reply::Nothing
            }
        }
    }
}

/// Who waits for a queued command's answer.
#[derive(Clone, Debug)]
enum Origin {
    /// A terminal, over the network: the request to answer.
    Wire { term: usize, req: Message<Bytes> },
    /// The operator's credit number `n`.
    Operator { n: usize },
}

struct Queued {
    origin: Origin,
    cmd: Command,
}

/// What the durable journal holds per batch (as the store's JournalBatch:
/// the encoded commands and the postings), plus the outcomes for the auditor.
#[derive(Clone)]
struct DurableBatch {
    batch: u64,
    ts: u64,
    commands: Vec<u8>,
    codes: Vec<Code>,
    postings: Vec<(u32, PostingKind)>,
}

#[derive(Clone)]
struct DurableCheckpoint {
    batch: u64,
    body: Vec<u8>,
}

enum CommitItem {
    Batch {
        bank: u16,
        generation: u64,
        record: DurableBatch,
        replies: Vec<(Origin, Done)>,
    },
    Checkpoint {
        bank: u16,
        generation: u64,
        checkpoint: DurableCheckpoint,
    },
}

/// One bank's shard (what `shard::Shard` holds).
struct BankShard {
    config: LedgerConfig,
    ledger: Option<Ledger>,
    queue: VecDeque<Queued>,
    /// The generation this shard's ledger belongs to.
    generation: u64,
    /// The committer's generation (raised by a failed commit).
    wanted: u64,
    last_ts: u64,
    next_key_expiry: u64,
    since_checkpoint: u64,
    apply_scheduled: bool,
}

/// What survives a restart.
#[derive(Default)]
struct Durable {
    journal: BTreeMap<u16, Vec<DurableBatch>>,
    checkpoint: BTreeMap<u16, DurableCheckpoint>,
}

/// Per idempotency key, what the durable journal did with it.
#[derive(Default, Clone, Copy, Debug)]
struct KeyEffects {
    /// Payment (purchase/withdrawal) postings made under this key.
    payments: u32,
    /// Credit postings under this key.
    credits: u32,
    /// Reversal postings that undid this key (as an original).
    reversal_postings: u32,
    /// Durable approved reversals naming this key (00: approved, recorded
    /// or repeat).
    reversals_ok: u32,
    /// Durable inquiry approvals under this key.
    inquiries_ok: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxKind {
    Purchase(Program),
    Withdrawal,
    Inquiry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxState {
    /// 0200 sent `sends` times; waiting.
    Awaiting,
    /// Reversal sent `rev_sends` times; waiting for its 00.
    Reversing,
}

/// A terminal's current transaction.
struct Tx {
    id: u64,
    card: usize,
    kind: TxKind,
    amount: u64,
    key: RequestKey,
    frame: Vec<u8>,
    fields: Fields,
    sends: u32,
    state: TxState,
    rev_key: RequestKey,
    rev_fields: Option<Fields>,
    rev_sends: u32,
    timer: u64,
}

struct Term {
    spec: TermSpec,
    stan: u32,
    current: Option<Tx>,
    /// Transactions started (used for the DE7/STAN uniqueness).
    wake_scheduled: bool,
}

struct Card {
    bank: Bank,
    pan: String,
    lpan: LedgerPan,
    /// The model: credited minus approved-and-not-reversed debits.
    pkh: u64,
    bpnt: u64,
}

struct OpCredit {
    card: usize,
    program: Program,
    amount: u64,
    cmd: Command,
    done: bool,
    sends: u32,
}

#[derive(Clone, Debug)]
enum Event {
    ToServer {
        term: usize,
        frame: Bytes,
        epoch: u64,
    },
    ToClient {
        term: usize,
        frame: Bytes,
        epoch: u64,
    },
    ClientWake {
        term: usize,
    },
    ClientTimer {
        term: usize,
        tx: u64,
        timer: u64,
    },
    Apply {
        bank: u16,
        epoch: u64,
    },
    Commit {
        epoch: u64,
    },
    OperatorWake,
    OperatorTimer {
        n: usize,
        sends: u32,
    },
    OperatorReply {
        n: usize,
        ok: bool,
        epoch: u64,
    },
}

/// Answers seen per key (non-91): DE39 and DE38.
type Seen = BTreeMap<Vec<u8>, (String, Option<String>)>;

/// The whole simulated world.
pub struct World {
    cfg: SimConfig,
    faults: Faults,
    rng: SplitMix64,
    now: u64,
    seq: u64,
    step: u64,
    events: BTreeMap<(u64, u64), Event>,
    auth: SimAuth,
    epoch: u64,
    banks: BTreeMap<u16, BankShard>,
    commit_q: VecDeque<CommitItem>,
    commit_scheduled: bool,
    durable: Durable,
    effects_by_key: BTreeMap<RequestKey, KeyEffects>,
    terms: Vec<Term>,
    cards: Vec<Card>,
    credits: Vec<OpCredit>,
    seen: Seen,
    /// 0200 keys a terminal closed as declined (after a non-00 answer).
    declined_keys: std::collections::BTreeSet<RequestKey>,
    /// New work is started (off during the drain).
    open: bool,
    trace: VecDeque<String>,
    report: Report,
    tx_ids: u64,
    checkpoint_every: u64,
    batch_max: usize,
}

fn key_label(key: &RequestKey) -> String {
    // MTI class + acquirer + terminal + STAN + DE7: no card data.
    String::from_utf8_lossy(key.as_bytes()).into_owned()
}

fn request_key_of(
    mti_class: &[u8],
    acquirer: &str,
    tid: &str,
    stan: &str,
    de7: &str,
) -> RequestKey {
    let mut buf = [0u8; 38];
    buf[..3].copy_from_slice(&mti_class[..3]);
    let acq = format!("{acquirer:0>11}");
    buf[3..14].copy_from_slice(acq.as_bytes());
    buf[14..14 + tid.len()].copy_from_slice(tid.as_bytes());
    buf[22..28].copy_from_slice(stan.as_bytes());
    buf[28..38].copy_from_slice(de7.as_bytes());
    RequestKey::new(&buf).unwrap_or_else(|| unreachable!("38 bytes fit a key"))
}

impl World {
    /// Build the world for `cfg`: registry, ledgers opened and credited
    /// (batch 1 of each bank, durable), an initial checkpoint.
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = SplitMix64::new(cfg.seed ^ 0xD57_D57_D57);
        let mut registry = Registry::default();
        for bank in Bank::ALL {
            registry.insert_pvk(bank.code_number(), pvk(bank));
        }
        for t in TERMINALS {
            let mut tid = [b' '; 8];
            tid[..t.tid.len()].copy_from_slice(t.tid.as_bytes());
            registry.insert_terminal(Terminal {
                terminal_id: tid,
                merchant: MerchantId::new(t.mid.as_bytes())
                    .unwrap_or_else(|| unreachable!("15 chars")),
                kind: t.kind,
                bank: t.bank,
                mcc: if t.kind == TerminalKind::Agent {
                    *b"6010"
                } else {
                    *b"5411"
                },
                pin_key: pin_key(),
                mac_key: t.mac.then(mac_key),
            });
        }
        let faults = cfg.faults;
        let mut cards = Vec::new();
        let mut banks = BTreeMap::new();
        let mut durable = Durable::default();
        for bank in BANKS {
            let code = bank.code_number();
            let config = LedgerConfig::new(BankCode(code));
            let mut cmds = Vec::new();
            for t in TERMINALS.iter().filter(|t| t.bank == bank) {
                cmds.push(Command::OpenTerminalAccount {
                    merchant: MerchantId::new(t.mid.as_bytes())
                        .unwrap_or_else(|| unreachable!("15 chars")),
                    kind: t.kind,
                });
            }
            for i in 0..cfg.cards_per_bank {
                let pan = pan_of(bank, 100 + i);
                let p = Pan::parse(pan.as_bytes()).unwrap_or_else(|_| unreachable!("valid PAN"));
                let pin = Pin::new(PIN).unwrap_or_else(|_| unreachable!("valid PIN"));
                let lpan = LedgerPan::from_digits(pan.as_bytes())
                    .unwrap_or_else(|| unreachable!("valid PAN"));
                cmds.push(Command::OpenCard {
                    pan: lpan,
                    family: FamilyId(u64::from(code) * 1_000_000 + u64::from(i)),
                    pvv: Pvv(pin_verification_value(&pvk(bank), &p, &pin)),
                    status: CardStatus::Active,
                });
                let pkh = 10_000_000 * (1 + rng.below(20));
                let bpnt = 20_000_000;
                for (program, amount, name) in
                    [(Program::Pkh, pkh, "PKH"), (Program::Bpnt, bpnt, "BPNT")]
                {
                    cmds.push(Command::Credit(Credit {
                        request: Request {
                            key: RequestKey::new(format!("DST:{name}:{pan}").as_bytes())
                                .unwrap_or_else(|| unreachable!("short key")),
                            fingerprint: Fingerprint::ZERO,
                        },
                        program,
                        card: CardRef::Pan(lpan),
                        amount,
                    }));
                }
                cards.push(Card {
                    bank,
                    pan,
                    lpan,
                    pkh,
                    bpnt,
                });
            }
            // As the real service: an initial checkpoint of the empty ledger,
            // then the opening batch in the journal.
            let empty = Ledger::new(config);
            durable.checkpoint.insert(
                code,
                DurableCheckpoint {
                    batch: 0,
                    body: postcard::to_stdvec(&empty.snapshot()).unwrap_or_default(),
                },
            );
            let mut ledger = empty;
            let mut fx = Effects::with_capacity(cmds.len());
            ledger.apply(&cmds, BASE_UNIX, &mut fx);
            assert!(
                fx.outcomes.iter().all(|o| o.reply.code.is_approved()),
                "opening batch of bank {code} declined something"
            );
            durable.journal.insert(
                code,
                vec![DurableBatch {
                    batch: fx.batch,
                    ts: BASE_UNIX,
                    commands: encode_commands(&cmds),
                    codes: fx.outcomes.iter().map(|o| o.reply.code).collect(),
                    postings: fx.postings.iter().map(|p| (p.command, p.kind)).collect(),
                }],
            );
            banks.insert(
                code,
                BankShard {
                    config,
                    ledger: Some(ledger),
                    queue: VecDeque::new(),
                    generation: 0,
                    wanted: 0,
                    last_ts: BASE_UNIX,
                    next_key_expiry: 0,
                    since_checkpoint: 0,
                    apply_scheduled: false,
                },
            );
        }
        let terms = TERMINALS
            .iter()
            .enumerate()
            .map(|(i, &spec)| Term {
                spec,
                stan: 1 + i as u32 * 10_000,
                current: None,
                wake_scheduled: false,
            })
            .collect();
        let checkpoint_every = 1 + rng.below(24);
        let batch_max = 1 + rng.below(16) as usize;
        let mut w = World {
            report: Report {
                seed: cfg.seed,
                ..Report::default()
            },
            cfg,
            faults,
            rng,
            now: 0,
            seq: 0,
            step: 0,
            events: BTreeMap::new(),
            auth: SimAuth {
                registry,
                rule_set: RuleSet::FoodOnly,
                slot: Mutex::new(None),
            },
            epoch: 0,
            banks,
            commit_q: VecDeque::new(),
            commit_scheduled: false,
            durable,
            effects_by_key: BTreeMap::new(),
            terms,
            cards,
            credits: Vec::new(),
            seen: BTreeMap::new(),
            declined_keys: std::collections::BTreeSet::new(),
            open: true,
            trace: VecDeque::with_capacity(TRACE_LEN),
            tx_ids: 0,
            checkpoint_every,
            batch_max,
        };
        for i in 0..w.terms.len() {
            let at = w.rng.below(50);
            w.terms[i].wake_scheduled = true;
            w.schedule(at, Event::ClientWake { term: i });
        }
        w.schedule(100, Event::OperatorWake);
        w
    }

    fn schedule(&mut self, after_ms: u64, e: Event) {
        self.seq += 1;
        self.events.insert((self.now + after_ms, self.seq), e);
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        per_mille > 0 && self.rng.below(1000) < per_mille
    }

    fn note(&mut self, s: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={} {s}", self.now));
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            seed: self.cfg.seed,
            step: self.step,
            steps: self.cfg.steps,
            what,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    /// Put a frame on the network, with the faults in force.
    fn send(&mut self, to_server: bool, term: usize, frame: Bytes) {
        self.report.frames_sent += 1;
        if self.chance(self.faults.drop) {
            self.report.frames_dropped += 1;
            self.note(format!(
                "net drop {} term {}",
                if to_server { "request" } else { "response" },
                term
            ));
            return;
        }
        let copies = if self.chance(self.faults.duplicate) {
            self.report.frames_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = 1 + self.rng.below(self.faults.latency_max_ms.max(1));
            if self.chance(self.faults.long_delay) {
                delay += 500 + self.rng.below(2_500);
            }
            let epoch = self.epoch;
            let e = if to_server {
                Event::ToServer {
                    term,
                    frame: frame.clone(),
                    epoch,
                }
            } else {
                Event::ToClient {
                    term,
                    frame: frame.clone(),
                    epoch,
                }
            };
            self.schedule(delay, e);
        }
    }

    /// Run the configured steps, then drain with faults off and check the
    /// end state.
    pub fn run(mut self) -> Result<Report, Failure> {
        while self.step < self.cfg.steps {
            self.step += 1;
            if self.chance(self.faults.restart) {
                self.restart()?;
            } else if self.chance(self.faults.pause) {
                // The host stalls for up to 12 hours (a suspended VM): every
                // timer is overdue at once, and WIB days and the periodic key
                // expiry come round (retention is 30 days, far longer).
                let ms = 60_000 + self.rng.below(12 * 3_600_000);
                self.now += ms;
                self.report.pauses += 1;
                self.note(format!("PAUSE of {ms} ms"));
            } else if !self.next_event()? {
                break;
            }
            self.audit()?;
        }
        // Drain: faults off, no new work, until everything settled.
        self.faults = Faults::NONE;
        self.open = false;
        let limit = self.step + 200_000;
        while !self.settled() {
            if self.step >= limit || !self.next_event()? {
                return Err(self.fail(format!(
                    "did not settle: {} events queued, busy terminals {:?}, open credits {}",
                    self.events.len(),
                    self.terms
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.current.is_some())
                        .map(|(i, _)| i)
                        .collect::<Vec<_>>(),
                    self.credits.iter().filter(|c| !c.done).count()
                )));
            }
            self.step += 1;
            self.report.drain_steps += 1;
            self.audit()?;
        }
        self.final_check()?;
        self.report.steps = self.step;
        self.report.sim_ms = self.now;
        Ok(self.report)
    }

    fn settled(&self) -> bool {
        self.terms.iter().all(|t| t.current.is_none())
            && self.credits.iter().all(|c| c.done)
            && self.commit_q.is_empty()
            && self.banks.values().all(|b| b.queue.is_empty())
    }

    /// Process the next event; false when there is none.
    fn next_event(&mut self) -> Result<bool, Failure> {
        let Some((&(at, seq), _)) = self.events.iter().next() else {
            return Ok(false);
        };
        let Some(e) = self.events.remove(&(at, seq)) else {
            return Ok(false);
        };
        self.now = self.now.max(at);
        match e {
            Event::ToServer { term, frame, epoch } => {
                if epoch == self.epoch {
                    self.server_receive(term, frame);
                }
            }
            Event::ToClient { term, frame, epoch } => {
                if epoch == self.epoch {
                    self.client_receive(term, frame)?;
                }
            }
            Event::ClientWake { term } => self.client_wake(term)?,
            Event::ClientTimer { term, tx, timer } => self.client_timer(term, tx, timer)?,
            Event::Apply { bank, epoch } => {
                if epoch == self.epoch {
                    self.apply(bank)?;
                }
            }
            Event::Commit { epoch } => {
                if epoch == self.epoch {
                    self.commit()?;
                }
            }
            Event::OperatorWake => self.operator_wake(),
            Event::OperatorTimer { n, sends } => {
                if !self.credits[n].done && self.credits[n].sends == sends {
                    self.note(format!("operator credit {n} timed out; repeated"));
                    self.operator_submit(n);
                }
            }
            Event::OperatorReply { n, ok, epoch } => {
                if epoch == self.epoch {
                    self.operator_reply(n, ok)?;
                }
            }
        }
        Ok(true)
    }

    // ------------------------------------------------------------ server

    fn server_receive(&mut self, term: usize, frame: Bytes) {
        let reply = handle(&self.auth, frame, "dst", &mut None)
            .now_or_never()
            .unwrap_or(Reply::Nothing);
        let decision = self.auth.slot.lock().ok().and_then(|mut s| s.take());
        match reply {
            Reply::Now(out) => {
                self.note(format!("server term {term}: answered at once"));
                self.send(false, term, out.freeze());
            }
            Reply::Close(e) => self.note(format!("server term {term}: close ({e})")),
            Reply::Later(_) | Reply::Taken => {
                self.note(format!("server term {term}: unexpected Later or Taken"))
            }
            Reply::Nothing => {
                if let Some((Decision::Submit(bank, cmd), req)) = decision {
                    self.note(format!(
                        "server term {term}: queued {} to bank {}",
                        cmd.key().map(key_label).unwrap_or_default(),
                        bank.0
                    ));
                    self.enqueue(bank.0, Origin::Wire { term, req }, cmd);
                }
            }
        }
    }

    fn enqueue(&mut self, bank: u16, origin: Origin, cmd: Command) {
        let epoch = self.epoch;
        let delay = self.rng.below(4);
        let Some(b) = self.banks.get_mut(&bank) else {
            return;
        };
        b.queue.push_back(Queued { origin, cmd });
        if !b.apply_scheduled {
            b.apply_scheduled = true;
            self.schedule(delay, Event::Apply { bank, epoch });
        }
    }

    /// Rebuild one bank's ledger from the durable checkpoint and journal,
    /// as `shard::recover` does.
    fn recover(&self, bank: u16) -> Result<Ledger, Failure> {
        let config = self.banks[&bank].config;
        let cp = &self.durable.checkpoint[&bank];
        let mut snap = Snapshot::decode(&cp.body)
            .map_err(|e| self.fail(format!("bank {bank}: checkpoint does not decode: {e}")))?;
        snap.config.bank = config.bank;
        let mut ledger = Ledger::restore(snap)
            .map_err(|e| self.fail(format!("bank {bank}: checkpoint restore: {e}")))?;
        if ledger.counters().batches != cp.batch {
            return Err(self.fail(format!(
                "bank {bank}: checkpoint says batch {} but holds {}",
                cp.batch,
                ledger.counters().batches
            )));
        }
        let mut fx = Effects::with_capacity(16);
        for b in &self.durable.journal[&bank] {
            if b.batch <= ledger.counters().batches {
                continue;
            }
            if b.batch != ledger.counters().batches + 1 {
                return Err(self.fail(format!(
                    "bank {bank}: journal gap: expected {}, found {}",
                    ledger.counters().batches + 1,
                    b.batch
                )));
            }
            let cmds = decode_commands(&b.commands)
                .map_err(|e| self.fail(format!("bank {bank}: batch {}: {e}", b.batch)))?;
            ledger.apply(&cmds, b.ts, &mut fx);
            let codes: Vec<Code> = fx.outcomes.iter().map(|o| o.reply.code).collect();
            if codes != b.codes {
                return Err(self.fail(format!(
                    "bank {bank}: replay of batch {} gave other outcomes than the original",
                    b.batch
                )));
            }
        }
        ledger.set_config(config);
        Ok(ledger)
    }

    /// The whole durable journal replayed on an empty ledger.
    fn replay_from_genesis(&self, bank: u16) -> Result<Ledger, Failure> {
        let config = self.banks[&bank].config;
        let mut ledger = Ledger::new(config);
        let mut fx = Effects::with_capacity(16);
        for b in &self.durable.journal[&bank] {
            let cmds = decode_commands(&b.commands)
                .map_err(|e| self.fail(format!("bank {bank}: batch {}: {e}", b.batch)))?;
            ledger.apply(&cmds, b.ts, &mut fx);
        }
        Ok(ledger)
    }

    fn apply(&mut self, bank: u16) -> Result<(), Failure> {
        let epoch = self.epoch;
        let take = self.batch_max;
        let sabotage = self.cfg.sabotage;
        {
            let Some(b) = self.banks.get_mut(&bank) else {
                return Ok(());
            };
            b.apply_scheduled = false;
            if b.queue.is_empty() {
                return Ok(());
            }
        }
        // A failed commit raised the wanted generation: rebuild first.
        let rebuild = {
            let b = &self.banks[&bank];
            (b.wanted != b.generation || b.ledger.is_none())
                && !(sabotage == Some(Sabotage::NoRebuildAfterFailedCommit) && b.ledger.is_some())
        };
        if rebuild {
            let l = self.recover(bank)?;
            self.report.rebuilds += 1;
            self.note(format!("bank {bank}: rebuilt from the store"));
            let Some(b) = self.banks.get_mut(&bank) else {
                return Ok(());
            };
            b.ledger = Some(l);
            b.generation = b.wanted;
        } else {
            let Some(b) = self.banks.get_mut(&bank) else {
                return Ok(());
            };
            b.generation = b.wanted;
        }
        let ts = BASE_UNIX + self.now / 1000;
        let Some(b) = self.banks.get_mut(&bank) else {
            return Ok(());
        };
        let ts = ts.max(b.last_ts);
        b.last_ts = ts;
        let n = take.min(b.queue.len());
        let jobs: Vec<Queued> = b.queue.drain(..n).collect();
        let mut cmds: Vec<Command> = jobs.iter().map(|j| j.cmd).collect();
        if ts >= b.next_key_expiry {
            cmds.push(Command::ExpireKeys {
                before: b.config.limits.key_expiry_cutoff(ts),
            });
            b.next_key_expiry = ts + KEY_EXPIRY_INTERVAL_SECONDS;
        }
        let Some(ledger) = b.ledger.as_mut() else {
            return Err(self.fail(format!("bank {bank}: no ledger after rebuild")));
        };
        let mut fx = Effects::with_capacity(cmds.len());
        ledger.apply(&cmds, ts, &mut fx);
        let record = DurableBatch {
            batch: fx.batch,
            ts,
            commands: encode_commands(&cmds),
            codes: fx.outcomes.iter().map(|o| o.reply.code).collect(),
            postings: fx.postings.iter().map(|p| (p.command, p.kind)).collect(),
        };
        let replies: Vec<(Origin, Done)> = jobs
            .into_iter()
            .zip(fx.outcomes.iter())
            .map(|(j, o)| {
                (
                    j.origin,
                    Done {
                        reply: o.reply,
                        replayed: o.replayed,
                        sweep: Vec::new(),
                    },
                )
            })
            .collect();
        let generation = b.generation;
        b.since_checkpoint += 1;
        let checkpoint = if b.since_checkpoint >= self.checkpoint_every {
            b.since_checkpoint = 0;
            Some(DurableCheckpoint {
                batch: ledger.counters().batches,
                body: postcard::to_stdvec(&ledger.snapshot()).unwrap_or_default(),
            })
        } else {
            None
        };
        let more = !b.queue.is_empty();
        self.note(format!(
            "bank {bank}: applied batch {} ({} commands, gen {generation})",
            record.batch,
            cmds.len()
        ));
        if sabotage == Some(Sabotage::AnswerBeforeCommit) {
            for (origin, done) in &replies {
                self.answer(origin.clone(), Some(done))?;
            }
        }
        self.commit_q.push_back(CommitItem::Batch {
            bank,
            generation,
            record,
            replies,
        });
        if let Some(checkpoint) = checkpoint {
            self.commit_q.push_back(CommitItem::Checkpoint {
                bank,
                generation,
                checkpoint,
            });
        }
        if !self.commit_scheduled {
            self.commit_scheduled = true;
            let d = self.rng.below(3);
            self.schedule(d, Event::Commit { epoch });
        }
        if more {
            if let Some(b) = self.banks.get_mut(&bank) {
                b.apply_scheduled = true;
            }
            let d = self.rng.below(2);
            self.schedule(d, Event::Apply { bank, epoch });
        }
        Ok(())
    }

    /// The committer (`shard::committer`): a group of queued items is
    /// written in one transaction, or none of it.
    fn commit(&mut self) -> Result<(), Failure> {
        self.commit_scheduled = false;
        if self.commit_q.is_empty() {
            return Ok(());
        }
        let k = 1 + self.rng.below(self.commit_q.len() as u64) as usize;
        let items: Vec<CommitItem> = self.commit_q.drain(..k).collect();
        let current = |w: &World, bank: u16, g: u64| w.banks[&bank].wanted == g;
        let in_group = items
            .iter()
            .filter(|it| matches!(it, CommitItem::Batch { bank, generation, .. } if current(self, *bank, *generation)))
            .count();
        let failed = in_group > 0 && self.chance(self.faults.commit_fail);
        if failed {
            self.report.commit_failures += 1;
            self.note(format!("commit of {in_group} batches FAILED (injected)"));
        } else {
            for it in &items {
                if let CommitItem::Batch {
                    bank,
                    generation,
                    record,
                    ..
                } = it
                {
                    if current(self, *bank, *generation) {
                        self.write_batch(*bank, record.clone())?;
                    }
                }
            }
        }
        for it in items {
            match it {
                CommitItem::Batch {
                    bank,
                    generation,
                    replies,
                    record,
                } => {
                    let cur = current(self, bank, generation);
                    let ok = !failed && cur;
                    if !ok && cur {
                        if let Some(b) = self.banks.get_mut(&bank) {
                            b.wanted += 1;
                        }
                    }
                    if !ok {
                        self.note(format!(
                            "bank {bank}: batch {} not durable; answering 91",
                            record.batch
                        ));
                    }
                    if self.cfg.sabotage == Some(Sabotage::AnswerBeforeCommit) {
                        continue;
                    }
                    for (origin, done) in replies {
                        self.answer(origin, ok.then_some(&done))?;
                    }
                }
                CommitItem::Checkpoint {
                    bank,
                    generation,
                    checkpoint,
                } => {
                    if !failed && current(self, bank, generation) {
                        self.report.checkpoints += 1;
                        self.durable.checkpoint.insert(bank, checkpoint);
                    }
                }
            }
        }
        if !self.commit_q.is_empty() && !self.commit_scheduled {
            self.commit_scheduled = true;
            let d = self.rng.below(3);
            let epoch = self.epoch;
            self.schedule(d, Event::Commit { epoch });
        }
        Ok(())
    }

    /// Append a batch to the durable journal and account its effects per key.
    fn write_batch(&mut self, bank: u16, record: DurableBatch) -> Result<(), Failure> {
        let journal_len = self.durable.journal[&bank].len() as u64;
        if record.batch != journal_len + 1 {
            return Err(self.fail(format!(
                "bank {bank}: batch {} written after {} (gap or overlap)",
                record.batch, journal_len
            )));
        }
        let cmds = decode_commands(&record.commands)
            .map_err(|e| self.fail(format!("bank {bank}: batch encodes badly: {e}")))?;
        for &(i, kind) in &record.postings {
            let cmd = &cmds[i as usize];
            match (kind, cmd) {
                (PostingKind::Purchase | PostingKind::Withdrawal, c) => {
                    let Some(key) = c.key() else { continue };
                    let e = self.effects_by_key.entry(*key).or_default();
                    e.payments += 1;
                    let e = *e;
                    if e.payments > 1 {
                        return Err(self.fail(format!(
                            "key {} has {} payment effects in the journal",
                            key_label(key),
                            e.payments
                        )));
                    }
                    if e.reversals_ok > 0 {
                        return Err(self.fail(format!(
                            "key {} posted after its reversal was approved",
                            key_label(key)
                        )));
                    }
                }
                (PostingKind::Credit, c) => {
                    let Some(key) = c.key() else { continue };
                    let e = self.effects_by_key.entry(*key).or_default();
                    e.credits += 1;
                    let e = *e;
                    if e.credits > 1 {
                        return Err(self.fail(format!(
                            "credit key {} has {} effects in the journal",
                            key_label(key),
                            e.credits
                        )));
                    }
                }
                (PostingKind::Reversal, Command::Reversal(r)) => {
                    let e = self.effects_by_key.entry(r.original).or_default();
                    e.reversal_postings += 1;
                    let e = *e;
                    if e.reversal_postings > 1 || e.payments != 1 {
                        return Err(self.fail(format!(
                            "original {}: {} reversal postings for {} payment effects",
                            key_label(&r.original),
                            e.reversal_postings,
                            e.payments
                        )));
                    }
                }
                (kind, _) => {
                    return Err(self.fail(format!(
                        "bank {bank}: unexpected posting kind {kind:?} in batch {}",
                        record.batch
                    )))
                }
            }
        }
        for (cmd, code) in cmds.iter().zip(&record.codes) {
            match cmd {
                Command::Reversal(r) if code.is_approved() => {
                    self.effects_by_key
                        .entry(r.original)
                        .or_default()
                        .reversals_ok += 1;
                }
                Command::BalanceInquiry(q) if code.is_approved() => {
                    self.effects_by_key
                        .entry(q.request.key)
                        .or_default()
                        .inquiries_ok += 1;
                }
                _ => {}
            }
        }
        self.report.batches_committed += 1;
        if let Some(j) = self.durable.journal.get_mut(&bank) {
            j.push(record);
        }
        Ok(())
    }

    /// Send the answer for a command: from the durable `done`, or 91.
    fn answer(&mut self, origin: Origin, done: Option<&Done>) -> Result<(), Failure> {
        match origin {
            Origin::Wire { term, req } => {
                let t = self.auth.registry.terminal(
                    req.terminal_id().unwrap_or_default(),
                    req.merchant_id().unwrap_or_default(),
                );
                let out = match done {
                    Some(d) => auth::from_done(&req, t, d),
                    None => auth::answer(&req, t, b"91", Added::default()),
                };
                self.send(false, term, out.freeze());
            }
            Origin::Operator { n } => {
                let ok = match done {
                    Some(d) if d.reply.code.is_approved() => true,
                    Some(d) => {
                        return Err(
                            self.fail(format!("operator credit {n} answered {:?}", d.reply.code))
                        )
                    }
                    None => false,
                };
                let epoch = self.epoch;
                self.schedule(1, Event::OperatorReply { n, ok, epoch });
            }
        }
        Ok(())
    }

    /// The server dies and starts again: queues, uncommitted batches and
    /// frames in flight are lost; each bank recovers from the store.
    fn restart(&mut self) -> Result<(), Failure> {
        self.report.restarts += 1;
        self.epoch += 1;
        self.commit_q.clear();
        self.commit_scheduled = false;
        let banks: Vec<u16> = self.banks.keys().copied().collect();
        for bank in banks {
            let l = self.recover(bank)?;
            let full = self.replay_from_genesis(bank)?;
            if l.snapshot() != full.snapshot() {
                return Err(self.fail(format!(
                    "bank {bank}: checkpoint + journal recovery differs from a full journal replay"
                )));
            }
            let Some(b) = self.banks.get_mut(&bank) else {
                return Ok(());
            };
            b.ledger = Some(l);
            b.queue.clear();
            b.generation = 0;
            b.wanted = 0;
            b.apply_scheduled = false;
            b.since_checkpoint = 0;
            b.next_key_expiry = 0;
        }
        // Frames on the old connections are gone.
        self.events.retain(|_, e| {
            !matches!(
                e,
                Event::ToServer { .. }
                    | Event::ToClient { .. }
                    | Event::Apply { .. }
                    | Event::Commit { .. }
                    | Event::OperatorReply { .. }
            )
        });
        self.note("SERVER RESTART: recovered every bank from checkpoint + journal".into());
        Ok(())
    }

    // ----------------------------------------------------------- operator

    fn operator_wake(&mut self) {
        if !self.open {
            return;
        }
        let card = self.rng.below(self.cards.len() as u64) as usize;
        let program = if self.rng.below(2) == 0 {
            Program::Pkh
        } else {
            Program::Bpnt
        };
        let amount = 5_000_000 * (1 + self.rng.below(10));
        let n = self.credits.len();
        let key = RequestKey::new(format!("DST:OP:{}:{n}", self.cfg.seed % 100_000).as_bytes())
            .unwrap_or_else(|| unreachable!("short key"));
        let cmd = Command::Credit(Credit {
            request: Request {
                key,
                fingerprint: Fingerprint::ZERO,
            },
            program,
            card: CardRef::Pan(self.cards[card].lpan),
            amount,
        });
        self.credits.push(OpCredit {
            card,
            program,
            amount,
            cmd,
            done: false,
            sends: 0,
        });
        self.report.credits += 1;
        self.operator_submit(n);
        let next = 200 + self.rng.below(800);
        self.schedule(next, Event::OperatorWake);
    }

    fn operator_submit(&mut self, n: usize) {
        self.credits[n].sends += 1;
        let sends = self.credits[n].sends;
        let card = self.credits[n].card;
        let bank = self.cards[card].bank.code_number();
        let cmd = self.credits[n].cmd;
        self.enqueue(bank, Origin::Operator { n }, cmd);
        self.schedule(500, Event::OperatorTimer { n, sends });
    }

    fn operator_reply(&mut self, n: usize, ok: bool) -> Result<(), Failure> {
        if self.credits[n].done {
            return Ok(());
        }
        if !ok {
            self.note(format!("operator credit {n}: 91; repeated"));
            self.operator_submit(n);
            return Ok(());
        }
        let key = self.credits[n].cmd.key().copied();
        let durable = key
            .and_then(|k| self.effects_by_key.get(&k))
            .is_some_and(|e| e.credits == 1);
        if !durable {
            return Err(self.fail(format!(
                "operator credit {n} approved but not in the durable journal"
            )));
        }
        let c = &mut self.credits[n];
        c.done = true;
        let (card, program, amount) = (c.card, c.program, c.amount);
        match program {
            Program::Pkh => self.cards[card].pkh += amount,
            Program::Bpnt => self.cards[card].bpnt += amount,
        }
        self.note(format!("operator credit {n}: approved"));
        Ok(())
    }

    // ----------------------------------------------------------- clients

    fn client_wake(&mut self, term: usize) -> Result<(), Failure> {
        self.terms[term].wake_scheduled = false;
        if !self.open || self.terms[term].current.is_some() {
            return Ok(());
        }
        let spec = self.terms[term].spec;
        let card = self.rng.below(self.cards.len() as u64) as usize;
        let pan = self.cards[card].pan.clone();
        let roll = self.rng.below(100);
        let (kind, de3, amount, basket) = match spec.kind {
            TerminalKind::Agent => {
                if roll < 75 {
                    let amount = 1_000_000 * (1 + self.rng.below(60));
                    (TxKind::Withdrawal, "010000", amount, None)
                } else {
                    (TxKind::Inquiry, "310000", 0, None)
                }
            }
            TerminalKind::Ewarong | TerminalKind::Merchant => {
                if roll < 60 && spec.kind == TerminalKind::Ewarong {
                    let (amount, basket) = self.basket();
                    (
                        TxKind::Purchase(Program::Bpnt),
                        "000000",
                        amount,
                        Some(basket),
                    )
                } else if roll < 85 {
                    let amount = 500_000 * (1 + self.rng.below(40));
                    (TxKind::Purchase(Program::Pkh), "001000", amount, None)
                } else {
                    (TxKind::Inquiry, "310000", 0, None)
                }
            }
        };
        let t = &mut self.terms[term];
        let stan = format!("{:06}", t.stan % 1_000_000);
        t.stan += 1;
        let secs = BASE_UNIX + self.now / 1000;
        let d7 = de7(secs);
        let wrong_pin = self.rng.below(100) < 3;
        let p = Pan::parse(pan.as_bytes()).unwrap_or_else(|_| unreachable!("valid PAN"));
        let pin = Pin::new(if wrong_pin { WRONG_PIN } else { PIN })
            .unwrap_or_else(|_| unreachable!("valid PIN"));
        let block = encrypt_pin_block(&pin, &p, &pin_key());
        let mut f = Fields::new("0200")
            .with(2, &pan)
            .with(3, de3)
            .with(4, format!("{amount:012}"))
            .with(7, &d7)
            .with(11, &stan)
            .with(12, &d7[4..])
            .with(13, &d7[..4])
            .with(
                18,
                if spec.kind == TerminalKind::Agent {
                    "6010"
                } else {
                    "5411"
                },
            )
            .with(32, spec.bank.code())
            .with(37, format!("000000{stan}"))
            .with(41, spec.tid)
            .with(42, spec.mid)
            .with(49, "360")
            .with(52, block);
        if let Some(b) = basket {
            f = f.with(48, b);
        }
        let frame = encode_frame(&f, spec.mac);
        let key = request_key_of(b"020", spec.bank.code(), spec.tid, &stan, &d7);
        self.tx_ids += 1;
        let id = self.tx_ids;
        self.report.transactions += 1;
        self.terms[term].current = Some(Tx {
            id,
            card,
            kind,
            amount,
            key,
            frame: frame.clone(),
            fields: f,
            sends: 1,
            state: TxState::Awaiting,
            rev_key: key,
            rev_fields: None,
            rev_sends: 0,
            timer: 0,
        });
        self.note(format!(
            "term {term}: sends 0200 {kind:?} {}",
            key_label(&key)
        ));
        self.send(true, term, Bytes::from(frame));
        self.arm_timer(term);
        Ok(())
    }

    /// A basket: mostly eligible food whose lines add up; sometimes an
    /// ineligible item or a wrong total (declined 57/13, nothing debited).
    fn basket(&mut self) -> (u64, String) {
        const FOOD: [&str; 6] = ["BRAS", "TELR", "AYAM", "SAYR", "TAHU", "IKAN"];
        let lines = 1 + self.rng.below(3);
        let mut total = 0u64;
        let mut s = String::new();
        for _ in 0..lines {
            let code = if self.rng.below(100) < 4 {
                "MIEI"
            } else {
                FOOD[self.rng.below(FOOD.len() as u64) as usize]
            };
            let qty = 1 + self.rng.below(3);
            let amount = 250_000 * (1 + self.rng.below(12));
            total += amount;
            s.push_str(&format!("{code}{qty:04}{amount:012}"));
        }
        if self.rng.below(100) < 3 {
            total += 100;
        }
        (total, s)
    }

    fn arm_timer(&mut self, term: usize) {
        let Some(tx) = self.terms[term].current.as_mut() else {
            return;
        };
        tx.timer += 1;
        let (id, timer) = (tx.id, tx.timer);
        let wait = 150 + self.rng.below(250);
        self.schedule(
            wait,
            Event::ClientTimer {
                term,
                tx: id,
                timer,
            },
        );
    }

    fn client_timer(&mut self, term: usize, id: u64, timer: u64) -> Result<(), Failure> {
        let Some(tx) = self.terms[term].current.as_ref() else {
            return Ok(());
        };
        if tx.id != id || tx.timer != timer {
            return Ok(());
        }
        match tx.state {
            TxState::Awaiting => {
                let repeat = tx.sends < 3 && self.rng.below(2) == 0;
                if repeat || tx.kind == TxKind::Inquiry && tx.sends < 6 {
                    let frame = tx.frame.clone();
                    self.report.requests_repeated += 1;
                    if let Some(tx) = self.terms[term].current.as_mut() {
                        tx.sends += 1;
                    }
                    self.note(format!("term {term}: timeout; repeats 0200"));
                    self.send(true, term, Bytes::from(frame));
                    self.arm_timer(term);
                } else if tx.kind == TxKind::Inquiry {
                    self.note(format!("term {term}: inquiry abandoned"));
                    self.finish(term);
                } else {
                    self.note(format!("term {term}: timeout; reverses"));
                    self.start_reversal(term);
                }
            }
            TxState::Reversing => {
                self.note(format!("term {term}: reversal timeout; repeats 0401"));
                self.send_reversal(term);
            }
        }
        Ok(())
    }

    fn start_reversal(&mut self, term: usize) {
        let spec = self.terms[term].spec;
        let t = &mut self.terms[term];
        let stan = format!("{:06}", t.stan % 1_000_000);
        t.stan += 1;
        let d7 = de7(BASE_UNIX + self.now / 1000);
        let Some(tx) = t.current.as_mut() else {
            return;
        };
        let g = |n: u8| tx.fields.fields.get(&n).cloned().unwrap_or_default();
        let s = |n: u8| String::from_utf8_lossy(&g(n)).into_owned();
        let de90 = format!("0200{}{}{:0>11}{}", s(11), s(7), s(32), "0".repeat(11));
        let f = Fields::new("0400")
            .with(2, g(2))
            .with(3, g(3))
            .with(4, g(4))
            .with(7, &d7)
            .with(11, &stan)
            .with(32, g(32))
            .with(41, g(41))
            .with(42, g(42))
            .with(49, g(49))
            .with(90, de90);
        tx.rev_key = request_key_of(b"040", spec.bank.code(), spec.tid, &stan, &d7);
        tx.rev_fields = Some(f);
        tx.state = TxState::Reversing;
        tx.rev_sends = 0;
        self.report.reversals_sent += 1;
        self.send_reversal(term);
    }

    /// Send the reversal: 0400 the first time, 0401 (repeat) after.
    fn send_reversal(&mut self, term: usize) {
        let mac = self.terms[term].spec.mac;
        let Some(tx) = self.terms[term].current.as_mut() else {
            return;
        };
        let Some(f) = tx.rev_fields.as_ref() else {
            return;
        };
        let mut f = f.clone();
        if tx.rev_sends > 0 {
            f.mti = *b"0401";
        }
        tx.rev_sends += 1;
        let frame = encode_frame(&f, mac);
        self.send(true, term, Bytes::from(frame));
        self.arm_timer(term);
    }

    fn finish(&mut self, term: usize) {
        self.terms[term].current = None;
        if self.open && !self.terms[term].wake_scheduled {
            self.terms[term].wake_scheduled = true;
            let think = self.rng.below(60);
            self.schedule(think, Event::ClientWake { term });
        }
    }

    fn client_receive(&mut self, term: usize, frame: Bytes) -> Result<(), Failure> {
        let spec = self.terms[term].spec;
        let msg = Message::decode(frame.clone())
            .map_err(|e| self.fail(format!("term {term}: response does not decode: {e}")))?;
        let field = |n: u8| msg.get(n).map(|v| String::from_utf8_lossy(v).into_owned());
        let mti = String::from_utf8_lossy(msg.mti()).into_owned();
        let code = field(39).unwrap_or_default();
        let approval = field(38);
        // INTERFACE §6: every response to a MAC terminal is signed.
        if spec.mac {
            let bytes = msg.bytes();
            let ok = match msg.mac() {
                Some((_, mac)) if bytes.len() >= 8 => {
                    verify_mac(&mac_key(), &bytes[..bytes.len() - 8], mac)
                }
                _ => false,
            };
            if !ok {
                return Err(self.fail(format!(
                    "term {term}: {mti} DE39 {code} without a valid MAC"
                )));
            }
        }
        let class: &[u8] = if mti == "0210" { b"020" } else { b"040" };
        let stan = field(11).unwrap_or_default();
        let d7 = field(7).unwrap_or_default();
        if stan.len() != 6 || d7.len() != 10 {
            return Err(self.fail(format!("term {term}: {mti} without DE7/DE11 echo")));
        }
        let key = request_key_of(class, spec.bank.code(), spec.tid, &stan, &d7);
        self.note(format!(
            "term {term}: got {mti} {code} for {}",
            key_label(&key)
        ));
        // Answers to one key agree, except 91 (nothing applied).
        if code != "91" {
            let entry = (code.clone(), approval.clone());
            match self.seen.get(key.as_bytes()) {
                Some(prev) if *prev != entry => {
                    return Err(self.fail(format!(
                        "key {}: answered {:?} and earlier {:?}",
                        key_label(&key),
                        entry,
                        prev
                    )))
                }
                Some(_) => {}
                None => {
                    self.seen.insert(key.as_bytes().to_vec(), entry);
                }
            }
        }
        // Every 00 a terminal sees is backed by the durable journal.
        if code == "00" {
            let e = self.effects_by_key.get(&key).copied().unwrap_or_default();
            let backed = if mti == "0210" {
                match msg.processing_code() {
                    Some(b"310000") => e.inquiries_ok >= 1,
                    _ => e.payments == 1,
                }
            } else {
                // A reversal's 00: the journal holds an approved reversal
                // of the original named in DE90.
                let orig = msg.original().map(|o| {
                    let acq = String::from_utf8_lossy(&o.acquirer).into_owned();
                    request_key_of(
                        &o.mti[..3],
                        &acq,
                        spec.tid,
                        &String::from_utf8_lossy(&o.stan),
                        &String::from_utf8_lossy(&o.transmission),
                    )
                });
                orig.and_then(|k| self.effects_by_key.get(&k).copied())
                    .is_some_and(|o| o.reversals_ok >= 1 && o.reversal_postings == o.payments)
            };
            if !backed {
                return Err(self.fail(format!(
                    "term {term}: received {mti} 00 for {} but the durable journal has no such effect ({e:?})",
                    key_label(&key)
                )));
            }
        }
        // A terminal that closed a transaction as declined must never see
        // it approved later.
        if mti == "0210" && code == "00" && self.declined_keys.contains(&key) {
            return Err(self.fail(format!(
                "term {term}: {} approved after the terminal closed it as declined (its model is now wrong)",
                key_label(&key)
            )));
        }
        // An original that arrived after its reversal: refused, never posted.
        if mti == "0210" && code == "94" && field(44).as_deref() == Some("REVERSED") {
            self.report.late_originals_refused += 1;
        }
        let Some(tx) = self.terms[term].current.as_ref() else {
            return Ok(());
        };
        match (tx.state, mti.as_str()) {
            (TxState::Awaiting, "0210") if key == tx.key => {
                let allowed = ["00", "51", "55", "57", "58", "61", "65", "75", "13", "91"];
                if !allowed.contains(&code.as_str()) {
                    return Err(self.fail(format!(
                        "term {term}: unexpected DE39 {code} for {} ({:?})",
                        key_label(&key),
                        tx.kind
                    )));
                }
                if code == "91" {
                    self.report.answered_91 += 1;
                    if tx.kind == TxKind::Inquiry || self.cfg.ninety_one_is_final {
                        // (A late approval of an inquiry moves nothing.)
                        self.report.declined += 1;
                        if tx.kind != TxKind::Inquiry {
                            self.declined_keys.insert(key);
                        }
                        self.finish(term);
                    } else {
                        // Another copy may still be in flight: reverse.
                        self.start_reversal(term);
                    }
                } else if code == "00" {
                    self.report.approved += 1;
                    let (card, kind, amount) = (tx.card, tx.kind, tx.amount);
                    match kind {
                        TxKind::Purchase(Program::Bpnt) => self.cards[card].bpnt -= amount,
                        TxKind::Purchase(Program::Pkh) | TxKind::Withdrawal => {
                            self.cards[card].pkh -= amount
                        }
                        TxKind::Inquiry => {}
                    }
                    self.finish(term);
                } else {
                    self.report.declined += 1;
                    self.declined_keys.insert(key);
                    self.finish(term);
                }
            }
            (TxState::Reversing, "0410") if key == tx.rev_key => match code.as_str() {
                "00" => {
                    self.report.reversed += 1;
                    self.finish(term);
                }
                "91" => {
                    self.report.answered_91 += 1;
                    self.send_reversal(term);
                }
                other => {
                    return Err(self.fail(format!(
                        "term {term}: reversal {} answered {other}",
                        key_label(&key)
                    )))
                }
            },
            _ => {}
        }
        Ok(())
    }

    // ----------------------------------------------------------- auditor

    /// After every step: each live ledger's invariants.
    fn audit(&self) -> Result<(), Failure> {
        for (bank, b) in &self.banks {
            if let Some(l) = &b.ledger {
                l.check_invariants()
                    .map_err(|e| self.fail(format!("bank {bank}: invariant broken: {e}")))?;
            }
        }
        Ok(())
    }

    /// After the drain: live ledgers equal the durable journal, and every
    /// card's balances equal the model.
    fn final_check(&mut self) -> Result<(), Failure> {
        let banks: Vec<u16> = self.banks.keys().copied().collect();
        for bank in banks {
            let recovered = self.recover(bank)?;
            let full = self.replay_from_genesis(bank)?;
            if recovered.snapshot() != full.snapshot() {
                return Err(self.fail(format!(
                    "bank {bank}: checkpoint + journal recovery differs from a full replay"
                )));
            }
            let b = &self.banks[&bank];
            let live_differs = match &b.ledger {
                Some(l) => b.generation == b.wanted && l.snapshot() != recovered.snapshot(),
                None => false,
            };
            if live_differs {
                return Err(self.fail(format!(
                    "bank {bank}: live ledger differs from the durable journal after the drain"
                )));
            }
            for c in self.cards.iter().filter(|c| c.bank.code_number() == bank) {
                let got = recovered.balances(&c.lpan).unwrap_or_default();
                if got.pkh != c.pkh || got.bpnt != c.bpnt {
                    return Err(self.fail(format!(
                        "card {}: ledger PKH {} BPNT {}, model PKH {} BPNT {}",
                        crate::pan::mask_pan(&c.pan),
                        got.pkh,
                        got.bpnt,
                        c.pkh,
                        c.bpnt
                    )));
                }
            }
        }
        Ok(())
    }
}

fn encode_frame(f: &Fields, mac: bool) -> Vec<u8> {
    if !mac {
        return f.to_vec().unwrap_or_default();
    }
    let mut out = BytesMut::new();
    let mut b = Builder::new(&mut out, &f.mti);
    for (&n, v) in &f.fields {
        if b.field(n, v).is_err() {
            return Vec::new();
        }
    }
    if b.finish_with_mac(|m| compute_mac(&mac_key(), m)).is_err() {
        return Vec::new();
    }
    out.to_vec()
}

/// Run one seed.
pub fn run(cfg: SimConfig) -> Result<Report, Failure> {
    World::new(cfg).run()
}
