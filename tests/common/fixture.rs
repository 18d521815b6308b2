//! The authorization fixture (issue 5, item 9): a store holding the five
//! banks' PIN verification keys, a handful of terminals and cards in every
//! state, opened and credited through the real shards; then the real host
//! (`service::start`, or the `kks-switch serve` binary) on 127.0.0.1:0, and a
//! small ISO 8583 client that frames with the 2-byte header, builds PIN
//! blocks and MACs, and checks the echo fields of INTERFACE §3.
//!
//! The fixture's shards are shut down and its store closed before the host
//! starts, so the host's shards are the single writers.
//!
//! Every read has a timeout, so a hung server fails a test instead of
//! hanging it.

use super::db::TestDb;
use bytes::{Bytes, BytesMut};
use kks_switch::config::Config;
use kks_switch::crypto::{compute_mac, encrypt_pin_block, pin_verification_value};
use kks_switch::crypto::{MacKey, MasterKey, Pin, PinKey, PvKey};
use kks_switch::iso8583::{Builder, Fields, FrameCodec, Framing, Message};
use kks_switch::ledger::{
    BankCode, CardRef, CardStatus, Command, Credit, FamilyId, Fingerprint, MerchantId,
    Pan as LedgerPan, Program, Pvv, Request, RequestKey, TerminalKind,
};
use kks_switch::pan::{luhn_check_digit, Bank, Pan};
use kks_switch::registry::{save_bank_key, save_terminals, Terminal};
use kks_switch::service::{self, Running};
use kks_switch::shard::Shards;
use kks_switch::storage::Store;
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};

// ------------------------------------------------------------------ keys

/// Terminal PIN key of every fixture terminal (the golden vectors use it).
pub const PIN_KEY_HEX: &str = "042666B49184CF5C68DE9628D0397B36";
/// MAC key of the MAC terminals (the golden vectors' MAC key).
pub const MAC_KEY_HEX: &str = "00112233445566778899AABBCCDDEEFF";
/// Every fixture card's PIN.
pub const PIN: &str = "123456";
/// The golden PAN (BRI test BIN); its PIN block under the PIN key is
/// `43999FB45EBF1A5D`.
pub const GOLDEN_PAN: &str = "6000020000000120";

/// A fixed test PIN verification key per bank (32 bytes).
pub fn pvk_hex(bank: Bank) -> String {
    let b = match bank {
        Bank::Bri => "A1",
        Bank::Mandiri => "B2",
        Bank::Bni => "C3",
        Bank::Btn => "D4",
        Bank::Bsi => "E5",
    };
    format!("{}{}", b.repeat(16), "5F3C9E7A".repeat(4))
}

pub fn pvk(bank: Bank) -> PvKey {
    PvKey::from_hex(&pvk_hex(bank)).expect("test PVK")
}

pub fn pin_key() -> PinKey {
    PinKey::from_hex(PIN_KEY_HEX).expect("test PIN key")
}

pub fn mac_key() -> MacKey {
    MacKey::from_hex(MAC_KEY_HEX).expect("test MAC key")
}

/// The ISO-0 PIN block (3DES under the fixture PIN key) of `pin` for `pan`.
/// A PAN that does not parse (Luhn) gets the golden PAN's block: the host
/// must decline such a request before it ever looks at the PIN.
pub fn pin_block(pan: &str, pin: &str) -> [u8; 8] {
    let pin = Pin::new(pin.as_bytes()).expect("test PIN");
    let pan = Pan::parse(pan.as_bytes())
        .unwrap_or_else(|_| Pan::parse(GOLDEN_PAN.as_bytes()).expect("golden PAN"));
    encrypt_pin_block(&pin, &pan, &pin_key())
}

// ------------------------------------------------------------- terminals

/// A fixture terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Term {
    pub tid: &'static str,
    pub mid: &'static str,
    pub kind: TerminalKind,
    pub bank: Bank,
    pub mcc: &'static str,
    pub mac: bool,
}

impl Term {
    /// DE32: the terminal's bank code.
    pub fn acquirer(&self) -> &'static str {
        self.bank.code()
    }
}

/// BRI e-Warong, no MAC (the golden purchase's terminal).
pub const EWARONG: Term = Term {
    tid: "EW000001",
    mid: "EWARONG00000001",
    kind: TerminalKind::Ewarong,
    bank: Bank::Bri,
    mcc: "5411",
    mac: false,
};
/// BRI e-Warong with a MAC key.
pub const EWARONG_MAC: Term = Term {
    tid: "EW000002",
    mid: "EWARONG00000002",
    kind: TerminalKind::Ewarong,
    bank: Bank::Bri,
    mcc: "5411",
    mac: true,
};
/// BRI agent, no MAC (the golden withdrawal's terminal).
pub const AGENT: Term = Term {
    tid: "AG000001",
    mid: "AGENT0000000001",
    kind: TerminalKind::Agent,
    bank: Bank::Bri,
    mcc: "6010",
    mac: false,
};
/// BRI agent with a MAC key (reversals from it carry DE128).
pub const AGENT_MAC: Term = Term {
    tid: "AG000003",
    mid: "AGENT0000000003",
    kind: TerminalKind::Agent,
    bank: Bank::Bri,
    mcc: "6010",
    mac: true,
};
/// BNI agent, no MAC.
pub const AGENT_BNI: Term = Term {
    tid: "AG000009",
    mid: "AGENT0000000009",
    kind: TerminalKind::Agent,
    bank: Bank::Bni,
    mcc: "6010",
    mac: false,
};
/// BRI plain merchant (PKH purchases only).
pub const MERCHANT: Term = Term {
    tid: "MR000001",
    mid: "MERCHANT0000001",
    kind: TerminalKind::Merchant,
    bank: Bank::Bri,
    mcc: "5999",
    mac: false,
};
/// A terminal that is not registered.
pub const UNREGISTERED: Term = Term {
    tid: "EW999999",
    mid: "EWARONG99999999",
    kind: TerminalKind::Ewarong,
    bank: Bank::Bri,
    mcc: "5411",
    mac: false,
};

pub const TERMINALS: [Term; 6] = [EWARONG, EWARONG_MAC, AGENT, AGENT_MAC, AGENT_BNI, MERCHANT];

fn registry_terminal(t: &Term) -> Terminal {
    let mut tid = [b' '; 8];
    tid[..t.tid.len()].copy_from_slice(t.tid.as_bytes());
    let mut mcc = [b'0'; 4];
    mcc.copy_from_slice(t.mcc.as_bytes());
    Terminal {
        terminal_id: tid,
        merchant: MerchantId::new(t.mid.as_bytes()).expect("merchant id"),
        kind: t.kind,
        bank: t.bank,
        mcc,
        pin_key: pin_key(),
        mac_key: t.mac.then(mac_key),
    }
}

// ----------------------------------------------------------------- cards

/// A fixture card's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Active,
    Inactive,
    Blocked,
    Closed,
}

/// A fixture card: PAN = bank BIN + 9-digit index + Luhn digit.
#[derive(Clone, Copy, Debug)]
pub struct CardSpec {
    pub bank: Bank,
    pub index: u32,
    pub state: State,
    /// Credited PKH, DE4 units.
    pub pkh: u64,
    /// Credited BPNT, DE4 units.
    pub bpnt: u64,
}

/// Rp750.000 PKH (one tahap), DE4 units.
pub const PKH_CREDIT: u64 = 75_000_000;
/// Rp600.000 BPNT (three months), DE4 units.
pub const BPNT_CREDIT: u64 = 60_000_000;
/// Spare active BRI cards, `active(0..ACTIVE_CARDS)`.
pub const ACTIVE_CARDS: u32 = 40;

/// Test PAN `index` of `bank`.
pub fn pan_of(bank: Bank, index: u32) -> String {
    let mut s = format!("{}{:09}", bank.test_bin(), index);
    let check = luhn_check_digit(s.as_bytes());
    s.push(check as char);
    s
}

impl CardSpec {
    pub fn pan(&self) -> String {
        pan_of(self.bank, self.index)
    }
}

const fn card(bank: Bank, index: u32, state: State, pkh: u64, bpnt: u64) -> CardSpec {
    CardSpec {
        bank,
        index,
        state,
        pkh,
        bpnt,
    }
}

/// The golden card (BRI, active, Rp750.000 PKH, Rp600.000 BPNT).
pub const GOLDEN: CardSpec = card(Bank::Bri, 12, State::Active, PKH_CREDIT, BPNT_CREDIT);
pub const INACTIVE: CardSpec = card(Bank::Bri, 200, State::Inactive, PKH_CREDIT, BPNT_CREDIT);
pub const BLOCKED: CardSpec = card(Bank::Bri, 201, State::Blocked, PKH_CREDIT, BPNT_CREDIT);
pub const CLOSED: CardSpec = card(Bank::Bri, 202, State::Closed, PKH_CREDIT, BPNT_CREDIT);
/// Rp10.000 in each wallet.
pub const LOW: CardSpec = card(Bank::Bri, 203, State::Active, 1_000_000, 1_000_000);
/// Rp10.000.000 PKH.
pub const RICH: CardSpec = card(Bank::Bri, 204, State::Active, 1_000_000_000, BPNT_CREDIT);
/// A second rich card.
pub const RICH2: CardSpec = card(Bank::Bri, 205, State::Active, 1_000_000_000, BPNT_CREDIT);
/// Active, never credited.
pub const EMPTY: CardSpec = card(Bank::Bri, 206, State::Active, 0, 0);
/// BNI card (test BIN 600009).
pub const BNI: CardSpec = card(Bank::Bni, 1, State::Active, PKH_CREDIT, BPNT_CREDIT);
pub const MANDIRI: CardSpec = card(Bank::Mandiri, 1, State::Active, PKH_CREDIT, BPNT_CREDIT);
pub const BTN: CardSpec = card(Bank::Btn, 1, State::Active, PKH_CREDIT, BPNT_CREDIT);
pub const BSI: CardSpec = card(Bank::Bsi, 1, State::Active, PKH_CREDIT, BPNT_CREDIT);

/// Spare active BRI card `i` (standard credits).
pub fn active(i: u32) -> CardSpec {
    assert!(i < ACTIVE_CARDS, "only {ACTIVE_CARDS} spare cards");
    card(Bank::Bri, 100 + i, State::Active, PKH_CREDIT, BPNT_CREDIT)
}

/// A Luhn-valid BRI PAN that no bank has opened (→ 14).
pub fn unknown_pan() -> String {
    pan_of(Bank::Bri, 999)
}

/// A Luhn-valid PAN whose BIN (999999) is not ours (→ 92).
pub fn foreign_pan() -> String {
    let mut s = "999999000000012".to_string();
    let check = luhn_check_digit(s.as_bytes());
    s.push(check as char);
    s
}

/// `pan` with its last digit changed so Luhn fails (→ 14).
pub fn bad_luhn(pan: &str) -> String {
    let mut b = pan.as_bytes().to_vec();
    let last = b.len() - 1;
    b[last] = b'0' + (b[last] - b'0' + 1) % 10;
    String::from_utf8(b).unwrap()
}

/// Every card the fixture opens.
pub fn cards() -> Vec<CardSpec> {
    let mut v = vec![
        GOLDEN, INACTIVE, BLOCKED, CLOSED, LOW, RICH, RICH2, EMPTY, BNI, MANDIRI, BTN, BSI,
    ];
    v.extend((0..ACTIVE_CARDS).map(active));
    v
}

fn ledger_pan(pan: &str) -> LedgerPan {
    LedgerPan::from_digits(pan.as_bytes()).expect("ledger PAN")
}

fn key(s: &str) -> RequestKey {
    RequestKey::new(s.as_bytes()).expect("fixture key fits")
}

// --------------------------------------------------------------- fixture

/// A built fixture store.
pub struct Fixture {
    pub db: TestDb,
}

/// The host configuration for a fixture store: port 0, the documented test
/// master key (explicitly, so a `KKS_MASTER_KEY` in the environment cannot
/// change it), the given BPNT rule set.
pub fn config(db_url: &str, rule_set: &str) -> Config {
    let mut cfg = Config::default();
    cfg.store.db = db_url.to_string();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.shutdown_grace_ms = 5_000;
    cfg.rules.bpnt_rule_set = rule_set.into();
    cfg.security.master_key_hex = MasterKey::test_default().to_hex().to_string();
    cfg
}

impl Fixture {
    /// Populate `db`: bank keys, terminals, settlement accounts, cards and
    /// credits, blocks and closes; then shut the shards down.
    pub async fn build(db: TestDb) -> Fixture {
        let t0 = Instant::now();
        let master = MasterKey::test_default();
        let store = Store::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", db.label()));
        for bank in Bank::ALL {
            save_bank_key(&store, &master, bank, &pvk(bank))
                .await
                .expect("save bank key");
        }
        let terms: Vec<Terminal> = TERMINALS.iter().map(registry_terminal).collect();
        save_terminals(&store, &master, &terms)
            .await
            .expect("save terminals");
        let cfg = config(&db.url, "food-only");
        let shards = Shards::start(
            store.clone(),
            service::ledger_configs(&cfg).expect("ledger configurations"),
            cfg.shards.clone(),
        )
        .await
        .expect("start fixture shards");
        for bank in Bank::ALL {
            let mut cmds = Vec::new();
            for t in TERMINALS.iter().filter(|t| t.bank == bank) {
                cmds.push(Command::OpenTerminalAccount {
                    merchant: MerchantId::new(t.mid.as_bytes()).unwrap(),
                    kind: t.kind,
                });
            }
            let cards: Vec<CardSpec> = cards().into_iter().filter(|c| c.bank == bank).collect();
            for c in &cards {
                let pan = c.pan();
                let p = Pan::parse(pan.as_bytes()).expect("fixture PAN");
                let pvv =
                    pin_verification_value(&pvk(bank), &p, &Pin::new(PIN.as_bytes()).unwrap());
                cmds.push(Command::OpenCard {
                    pan: ledger_pan(&pan),
                    family: FamilyId(
                        u64::from(bank.code_number()) * 1_000_000 + u64::from(c.index),
                    ),
                    pvv: Pvv(pvv),
                    status: if c.state == State::Inactive {
                        CardStatus::Inactive
                    } else {
                        CardStatus::Active
                    },
                });
            }
            for c in &cards {
                let pan = c.pan();
                for (program, amount, name) in [
                    (Program::Pkh, c.pkh, "PKH"),
                    (Program::Bpnt, c.bpnt, "BPNT"),
                ] {
                    if amount == 0 {
                        continue;
                    }
                    cmds.push(Command::Credit(Credit {
                        request: Request {
                            key: key(&format!("FIX:{name}:{pan}")),
                            fingerprint: Fingerprint::ZERO,
                        },
                        program,
                        card: CardRef::Pan(ledger_pan(&pan)),
                        amount,
                    }));
                }
            }
            for c in &cards {
                match c.state {
                    State::Blocked => cmds.push(Command::Block {
                        pan: ledger_pan(&c.pan()),
                    }),
                    State::Closed => cmds.push(Command::Close {
                        pan: ledger_pan(&c.pan()),
                    }),
                    _ => {}
                }
            }
            let n = cmds.len();
            let done = shards
                .execute_many(BankCode(bank.code_number()), cmds, 1)
                .await
                .unwrap_or_else(|_| panic!("fixture commands for {bank} unavailable"));
            assert_eq!(done.len(), n);
            for (i, d) in done.iter().enumerate() {
                assert_eq!(
                    d.reply.code.de39(),
                    "00",
                    "fixture command {i} for {bank}: {:?}",
                    d.reply.code
                );
            }
        }
        shards.shutdown().await;
        store.close().await;
        eprintln!(
            "fixture built on {} in {} ms",
            db.label(),
            t0.elapsed().as_millis()
        );
        Fixture { db }
    }

    /// A fresh SQLite fixture.
    pub async fn sqlite() -> Fixture {
        Fixture::build(super::db::sqlite()).await
    }

    /// A fresh PostgreSQL fixture, or `None` (skip reason printed) when no
    /// server is reachable outside CI.
    pub async fn postgres() -> Option<Fixture> {
        Some(Fixture::build(super::db::postgres().await?).await)
    }

    pub fn url(&self) -> &str {
        &self.db.url
    }

    /// Start the real host on this store with rule set `food-only`.
    pub async fn start(&self) -> Running {
        self.start_with("food-only").await
    }

    /// Start the real host with a given BPNT rule set.
    pub async fn start_with(&self, rule_set: &str) -> Running {
        service::start(config(&self.db.url, rule_set))
            .await
            .unwrap_or_else(|e| panic!("service::start on {}: {e}", self.db.label()))
    }
}

/// Stop a host started in-process and wait (bounded) until it is down.
pub async fn stop(r: Running) {
    r.shutdown_token().cancel();
    timeout(Duration::from_secs(30), r.wait())
        .await
        .expect("host did not stop within 30 s")
        .expect("host stopped with an error");
}

// -------------------------------------------------------- the serve binary

/// `kks-switch serve` running as a child process.
pub struct ServeProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

/// Run `kks-switch serve --db URL --listen 127.0.0.1:0` with `envs`
/// (KKS_MASTER_KEY removed, so the documented test master key is used) and
/// standard error written to `stderr_file`; wait for `listening on ADDR`.
pub fn spawn_serve(db_url: &str, stderr_file: &Path, envs: &[(&str, &str)]) -> ServeProcess {
    let err = std::fs::File::create(stderr_file).expect("create log file");
    let mut cmd = Process::new(env!("CARGO_BIN_EXE_kks-switch"));
    cmd.args(["serve", "--db", db_url, "--listen", "127.0.0.1:0"])
        .env_remove("KKS_MASTER_KEY")
        .env_remove("KKS_FAULT_INTERNAL_STAN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn kks-switch serve");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(out).lines();
        let mut sent = false;
        // Keep draining after the address line so the child never blocks.
        while let Some(Ok(line)) = lines.next() {
            if !sent {
                if let Some(a) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(a.to_string());
                    sent = true;
                }
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a.parse().expect("listening address parses"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(stderr_file).unwrap_or_default();
            panic!("kks-switch serve printed no `listening on ADDR` within 60 s; stderr:\n{log}");
        }
    };
    ServeProcess { child, addr }
}

impl ServeProcess {
    /// SIGTERM, then wait (bounded) for the exit; the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let st = Process::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait().expect("wait for serve") {
                Some(s) => return s.code(),
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("kks-switch serve did not exit within 30 s of SIGTERM");
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --------------------------------------------------------------- messages

static STAN: AtomicU32 = AtomicU32::new(200_000);

/// A STAN not used before in this process (6 digits).
pub fn next_stan() -> String {
    format!("{:06}", STAN.fetch_add(1, Ordering::Relaxed) % 1_000_000)
}

/// DE7 now, MMDDhhmmss UTC.
pub fn de7_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
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

/// A 0200 from `t` for `pan`: DE2, 3, 4, 7, 11 (fresh), 12, 13, 18, 32, 37,
/// 41, 42, 49 `360`, 52 (PIN 123456).
pub fn req0200(t: &Term, pan: &str, de3: &str, amount: u64) -> Fields {
    let stan = next_stan();
    let de7 = de7_now();
    Fields::new("0200")
        .with(2, pan)
        .with(3, de3)
        .with(4, format!("{amount:012}"))
        .with(7, &de7)
        .with(11, &stan)
        .with(12, &de7[4..])
        .with(13, &de7[..4])
        .with(18, t.mcc)
        .with(32, t.acquirer())
        .with(37, format!("000000{stan}"))
        .with(41, t.tid)
        .with(42, t.mid)
        .with(49, "360")
        .with(52, pin_block(pan, PIN))
}

/// A basket (DE48) from (code, quantity, line amount) items.
pub fn basket(items: &[(&str, u32, u64)]) -> String {
    items
        .iter()
        .map(|(c, q, a)| format!("{c}{q:04}{a:012}"))
        .collect()
}

/// BPNT purchase (`000000`) with a basket whose lines add up to DE4.
pub fn purchase(t: &Term, pan: &str, items: &[(&str, u32, u64)]) -> Fields {
    let total: u64 = items.iter().map(|i| i.2).sum();
    req0200(t, pan, "000000", total).with(48, basket(items))
}

/// Rice for `amount`, one line.
pub fn rice(amount: u64) -> [(&'static str, u32, u64); 1] {
    [("BRAS", 1, amount)]
}

/// PKH cash withdrawal (`010000`).
pub fn withdrawal(t: &Term, pan: &str, amount: u64) -> Fields {
    req0200(t, pan, "010000", amount)
}

/// Balance inquiry (`310000`, DE4 zeros).
pub fn inquiry(t: &Term, pan: &str) -> Fields {
    req0200(t, pan, "310000", 0)
}

/// `f` with DE`n` removed.
pub fn without(mut f: Fields, n: u8) -> Fields {
    f.fields.remove(&n);
    f
}

/// `f` with a PIN block for `pin`.
pub fn with_pin(f: Fields, pin: &str) -> Fields {
    let pan = String::from_utf8(f.fields[&2].clone()).unwrap();
    f.with(52, pin_block(&pan, pin))
}

/// `f` with a new STAN (and so a new idempotency key).
pub fn restan(f: Fields) -> Fields {
    f.with(11, next_stan())
}

/// A reversal (`mti` 0400/0401/0420/0421) of `orig`: DE2, 3, 4, 32, 41, 42,
/// 49 copied, a fresh DE7 and DE11, DE90 naming the original.
pub fn reversal_of(orig: &Fields, mti: &str) -> Fields {
    let g = |n: u8| orig.fields.get(&n).cloned().unwrap_or_default();
    let s = |n: u8| String::from_utf8(g(n)).unwrap();
    let de90 = format!(
        "{}{}{}{:0>11}{}",
        String::from_utf8_lossy(&orig.mti),
        s(11),
        s(7),
        s(32),
        "0".repeat(11)
    );
    assert_eq!(de90.len(), 42);
    Fields::new(mti)
        .with(2, g(2))
        .with(3, g(3))
        .with(4, g(4))
        .with(7, de7_now())
        .with(11, next_stan())
        .with(32, g(32))
        .with(41, g(41))
        .with(42, g(42))
        .with(49, g(49))
        .with(90, de90)
}

/// Encode `f` as it is (any DE64/DE128 in `f` is sent as given).
pub fn encode(f: &Fields) -> Vec<u8> {
    f.to_vec().expect("request encodes")
}

/// Encode `f` and append a MAC under `key`: DE64, or DE128 when a secondary
/// bitmap is present (INTERFACE §6).
pub fn encode_mac(f: &Fields, key: &MacKey) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut b = Builder::new(&mut out, &f.mti);
    for (&n, v) in &f.fields {
        b.field(n, v).expect("field encodes");
    }
    b.finish_with_mac(|m| compute_mac(key, m))
        .expect("MAC field fits");
    out.to_vec()
}

/// Encode for terminal `t`: MAC'd with the fixture MAC key when it uses one.
pub fn encode_for(t: &Term, f: &Fields) -> Vec<u8> {
    if t.mac {
        encode_mac(f, &mac_key())
    } else {
        encode(f)
    }
}

// -------------------------------------------------------------- responses

/// A decoded response and its bytes.
#[derive(Clone)]
pub struct Resp {
    pub raw: Vec<u8>,
    pub f: Fields,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Resp");
        d.field("mti", &self.mti());
        for (n, v) in &self.f.fields {
            let shown = match n {
                52 | 64 | 128 => hex::encode_upper(v),
                _ => String::from_utf8_lossy(v).into_owned(),
            };
            d.field(&format!("DE{n}"), &shown);
        }
        d.finish()
    }
}

impl Resp {
    pub fn mti(&self) -> &str {
        std::str::from_utf8(&self.f.mti).unwrap()
    }

    /// DE`n` as text.
    pub fn get(&self, n: u8) -> Option<&str> {
        self.f
            .fields
            .get(&n)
            .map(|v| std::str::from_utf8(v).expect("text field"))
    }

    /// DE39.
    pub fn code(&self) -> &str {
        self.get(39).expect("response has DE39")
    }

    /// DE44, if any.
    pub fn de44(&self) -> Option<&str> {
        self.get(44)
    }

    /// Present DEs (bitmap bit 1 excluded).
    pub fn present(&self) -> BTreeSet<u8> {
        self.f.fields.keys().copied().collect()
    }

    /// DE54 parsed as (PKH, BPNT), checking the layout of INTERFACE §3.
    pub fn balances(&self) -> (u64, u64) {
        let s = self
            .get(54)
            .unwrap_or_else(|| panic!("no DE54 in {self:?}"));
        parse_de54(s)
    }

    /// The MAC (DE64, or DE128 with a secondary bitmap) is present, last, and
    /// verifies under `key` over every byte before it.
    pub fn assert_mac(&self, key: &MacKey) {
        let n = if self.raw.len() > 12 && self.raw[4] & 0x80 != 0 {
            128
        } else {
            64
        };
        let mac = self
            .f
            .fields
            .get(&n)
            .unwrap_or_else(|| panic!("response carries no DE{n} MAC: {self:?}"));
        let at = self.raw.len() - 8;
        assert_eq!(&self.raw[at..], &mac[..], "the MAC is the last 8 bytes");
        assert_eq!(
            compute_mac(key, &self.raw[..at]),
            self.raw[at..],
            "response MAC does not verify: {self:?}"
        );
    }

    pub fn assert_no_mac(&self) {
        assert!(
            !self.f.fields.contains_key(&64) && !self.f.fields.contains_key(&128),
            "unexpected MAC in {self:?}"
        );
    }
}

/// Parse DE54: two 20-character entries, PKH (`10`) first then BPNT (`60`),
/// each type n2 + `02` + `360` + `C` + n12.
pub fn parse_de54(s: &str) -> (u64, u64) {
    assert_eq!(s.len(), 40, "DE54 {s:?} is two 20-character entries");
    let entry = |e: &str, ty: &str| -> u64 {
        assert_eq!(&e[..2], ty, "DE54 {s:?}: account type");
        assert_eq!(&e[2..4], "02", "DE54 {s:?}: amount type");
        assert_eq!(&e[4..7], "360", "DE54 {s:?}: currency");
        assert_eq!(&e[7..8], "C", "DE54 {s:?}: sign");
        assert!(e[8..].bytes().all(|b| b.is_ascii_digit()), "DE54 {s:?}");
        e[8..].parse().unwrap()
    };
    (entry(&s[..20], "10"), entry(&s[20..], "60"))
}

/// Fields a 0210 echoes (INTERFACE §3).
pub const ECHO_0210: &[u8] = &[2, 3, 4, 7, 11, 32, 37, 41, 42, 49];
/// Fields a 0410/0430 echoes.
pub const ECHO_04X0: &[u8] = &[2, 3, 4, 7, 11, 32, 41, 42, 49, 90];

/// The response to `req` has exactly the echo fields of its class (those
/// the request carried), with the request's values, plus DE39 and `added`
/// (e.g. 38, 44, 54, 64), and its MTI is the request's response MTI.
pub fn assert_echo(req: &Fields, resp: &Resp, added: &[u8]) {
    let rm = String::from_utf8_lossy(&req.mti).into_owned();
    let (want_mti, echo) = match rm.as_str() {
        "0200" => ("0210", ECHO_0210),
        "0400" | "0401" => ("0410", ECHO_04X0),
        "0420" | "0421" => ("0430", ECHO_04X0),
        other => panic!("no echo rule for {other}"),
    };
    assert_eq!(resp.mti(), want_mti, "response MTI to {rm}: {resp:?}");
    let mut want: BTreeSet<u8> = echo
        .iter()
        .copied()
        .filter(|n| req.fields.contains_key(n))
        .collect();
    want.insert(39);
    want.extend(added.iter().copied());
    assert_eq!(resp.present(), want, "response fields of {resp:?}");
    for &n in echo {
        if let Some(v) = req.fields.get(&n) {
            assert_eq!(
                resp.f.fields.get(&n),
                Some(v),
                "DE{n} echoed unchanged in {resp:?}"
            );
        }
    }
    if let Some(a) = resp.get(38) {
        assert_eq!(a.len(), 6, "DE38 an6");
    }
}

// ----------------------------------------------------------------- client

/// Longest a single response may take (the 91 case waits out a 5 s busy
/// timeout).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A terminal connection: 2-byte headers.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::with_capacity(8192),
            codec: FrameCodec::new(Framing::TwoByte),
        }
    }

    /// Send one message (header added).
    pub async fn send(&mut self, msg: &[u8]) {
        let mut out = BytesMut::new();
        self.codec.encode(msg, &mut out).unwrap();
        self.send_raw(&out).await;
    }

    /// Send bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame, or `None` at end of stream.
    pub async fn recv_frame(&mut self) -> io::Result<Option<Bytes>> {
        let codec = &mut self.codec;
        let buf = &mut self.buf;
        let stream = &mut self.stream;
        timeout(READ_TIMEOUT, async move {
            loop {
                if let Some(f) = codec.decode(buf).map_err(io::Error::other)? {
                    return Ok(Some(f));
                }
                if stream.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            }
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response within READ_TIMEOUT"))?
    }

    /// The next response, decoded and validated.
    pub async fn recv(&mut self) -> Resp {
        let frame = self
            .recv_frame()
            .await
            .expect("reading a response")
            .expect("connection closed while a response was expected");
        let m = Message::decode(&frame[..]).expect("response decodes");
        m.validate().expect("response fields valid for their class");
        Resp {
            raw: frame.to_vec(),
            f: m.to_fields(),
        }
    }

    /// Send encoded bytes, wait for the response.
    pub async fn call_raw(&mut self, msg: &[u8]) -> Resp {
        self.send(msg).await;
        self.recv().await
    }

    /// Send `f` as terminal `t` sends it (MAC'd when `t` uses a MAC).
    pub async fn call(&mut self, t: &Term, f: &Fields) -> Resp {
        self.call_raw(&encode_for(t, f)).await
    }

    /// Balances of `pan` by an inquiry from `t` (must be approved).
    pub async fn balances(&mut self, t: &Term, pan: &str) -> (u64, u64) {
        let q = inquiry(t, pan);
        let r = self.call(t, &q).await;
        assert_eq!(r.code(), "00", "inquiry for balances: {r:?}");
        r.balances()
    }
}

/// `kks-switch audit --db URL` on a stopped host's store: every ledger
/// invariant holds (exit 0).
pub fn assert_audit_clean(db_url: &str) {
    let (code, out, err) = super::db::run_cli(&["audit", "--db", db_url], Duration::from_secs(60));
    assert_eq!(code, Some(0), "audit failed:\n{out}\n{err}");
    assert!(out.contains("audit clean"), "audit output:\n{out}\n{err}");
}

/// Per-card (PKH, BPNT) balances from `kks-switch audit --json` on a
/// stopped host's store (also for cards an inquiry cannot reach, such as
/// PIN-blocked ones).
pub fn audit_balances(db_url: &str) -> std::collections::HashMap<String, (i64, i64)> {
    let (code, out, err) = super::db::run_cli(
        &["audit", "--db", db_url, "--json"],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "audit --json failed:\n{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("audit JSON");
    v["cards"]
        .as_array()
        .expect("cards in audit JSON")
        .iter()
        .map(|c| {
            (
                c["pan"].as_str().unwrap().to_string(),
                (
                    c["pkh_balance"].as_i64().unwrap(),
                    c["bpnt_balance"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}
