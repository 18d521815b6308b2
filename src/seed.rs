//! `kks-switch seed`: a synthetic, deterministic population of N families,
//! opened at their banks the way a collective account opening does, with
//! e-Warong merchants and agents to transact at (INTERFACE §8; the files
//! are described in `specs/population.md`).
//!
//! Why deterministic: partners' load tests and our own tests compare runs,
//! so the same N and seed give byte-identical files. Everything is drawn
//! from one small PRNG ([`SplitMix64`]) in a fixed order, and keys are
//! derived by hashing the seed with the key's name, so adding a terminal
//! does not shift any card's PIN.
//!
//! Every change to cards goes through the shards (the single writers);
//! the `families` table records who the families are so that `disburse`
//! can compute entitlements.

use crate::admin::{Writer, WriterError};
use crate::crypto::{pin_verification_value, MacKey, MasterKey, Pin, PinKey, PvKey};
use crate::ledger::{BankCode, CardStatus, Code, Command, FamilyId, MerchantId, Pvv, TerminalKind};
use crate::pan::{luhn_check_digit, Bank};
use crate::programs::{rupiah, Programs};
use crate::registry::{save_bank_key, save_terminals, RegistryError, Terminal};
use crate::shard::ShardConfig;
use crate::storage::{FamilyRow, Store, StoreError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Families per e-Warong (DESIGN §3: about one per 1,000 families).
pub const FAMILIES_PER_EWARONG: u64 = 1_000;
/// Families per agent.
pub const FAMILIES_PER_AGENT: u64 = 1_000;
/// Default share of terminals that MAC their messages.
pub const MAC_SHARE_DEFAULT: f64 = 0.25;
/// Most families one seed run creates (PANs are BIN + 9-digit sequence per
/// bank; KKs carry a 10-digit sequence).
pub const FAMILIES_MAX: u64 = 100_000_000;
/// Commands per submission to a shard (progress granularity).
const CHUNK: usize = 65_536;

/// Share of families in PKH and BPNT both, in BPNT only, in PKH only
/// (‰). BPNT reached 18.27M families and PKH ~10M (DESIGN §3), almost all
/// PKH families also receive BPNT.
const MIX_PKH_BPNT: u64 = 530;
const MIX_BPNT_ONLY: u64 = 450;

/// Per PKH family, for each component of the built-in file by key: the
/// chance (‰) that the family has members in it, and then the chance (‰)
/// of 1, 2 or 3 members. Synthetic figures in the proportions PKH reports
/// show (school children most common, pregnancies rare).
const COMPONENT_MIX: &[(&str, u64, [u64; 3])] = &[
    ("hamil", 40, [900, 100, 0]),
    ("usia_dini", 350, [700, 230, 70]),
    ("sd", 450, [600, 300, 100]),
    ("smp", 250, [800, 180, 20]),
    ("sma", 180, [850, 150, 0]),
    ("disabilitas", 40, [900, 100, 0]),
    ("lansia", 220, [850, 150, 0]),
];

/// BPS province code, name, weight (share of welfare families, ‰ of the
/// total roughly), bank weights in [`Bank::ALL`] order (BRI, Mandiri, BNI,
/// BTN, BSI). Aceh is served by BSI alone (Qanun 11/2018 on Islamic
/// finance); elsewhere the Himbara banks share regions.
const PROVINCES: &[(u16, &str, u64, [u64; 5])] = &[
    (11, "Aceh", 20, [0, 0, 0, 0, 100]),
    (12, "Sumatera Utara", 55, SUMATRA),
    (13, "Sumatera Barat", 20, SUMATRA),
    (14, "Riau", 24, SUMATRA),
    (15, "Jambi", 13, SUMATRA),
    (16, "Sumatera Selatan", 31, SUMATRA),
    (17, "Bengkulu", 7, SUMATRA),
    (18, "Lampung", 33, SUMATRA),
    (19, "Kepulauan Bangka Belitung", 5, SUMATRA),
    (21, "Kepulauan Riau", 8, SUMATRA),
    (31, "DKI Jakarta", 40, JAVA),
    (32, "Jawa Barat", 180, JAVA),
    (33, "Jawa Tengah", 135, JAVA),
    (34, "DI Yogyakarta", 14, JAVA),
    (35, "Jawa Timur", 150, JAVA),
    (36, "Banten", 45, JAVA),
    (51, "Bali", 16, OUTER),
    (52, "Nusa Tenggara Barat", 20, OUTER),
    (53, "Nusa Tenggara Timur", 20, OUTER),
    (61, "Kalimantan Barat", 20, OUTER),
    (62, "Kalimantan Tengah", 10, OUTER),
    (63, "Kalimantan Selatan", 15, OUTER),
    (64, "Kalimantan Timur", 14, OUTER),
    (65, "Kalimantan Utara", 3, OUTER),
    (71, "Sulawesi Utara", 10, OUTER),
    (72, "Sulawesi Tengah", 11, OUTER),
    (73, "Sulawesi Selatan", 33, OUTER),
    (74, "Sulawesi Tenggara", 10, OUTER),
    (75, "Gorontalo", 4, OUTER),
    (76, "Sulawesi Barat", 5, OUTER),
    (81, "Maluku", 7, EAST),
    (82, "Maluku Utara", 5, EAST),
    (91, "Papua Barat", 4, EAST),
    (94, "Papua", 16, EAST),
];
const SUMATRA: [u64; 5] = [45, 25, 25, 5, 0];
const JAVA: [u64; 5] = [40, 20, 30, 10, 0];
const OUTER: [u64; 5] = [50, 15, 30, 5, 0];
const EAST: [u64; 5] = [40, 40, 20, 0, 0];

/// The province's name, for reports.
pub fn province_name(code: u16) -> Option<&'static str> {
    PROVINCES.iter().find(|p| p.0 == code).map(|p| p.1)
}

/// SplitMix64: tiny, fast, and good enough for synthetic data; fixed
/// forever so that seeds keep giving the same population.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1; the modulo bias is negligible here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index drawn by weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// One synthetic family and its card. `Debug` masks the PAN and leaves
/// the PIN out.
#[derive(Clone)]
pub struct Family {
    /// KK number (16 digits).
    pub kk: u64,
    /// NIK of the head of family (16 digits).
    pub nik: String,
    /// Its bank.
    pub bank: Bank,
    /// BPS province code.
    pub province: u16,
    /// Enrolled in PKH.
    pub pkh: bool,
    /// Enrolled in BPNT.
    pub bpnt: bool,
    /// PKH members per component (programs file order).
    pub counts: Vec<u8>,
    /// Card number (16 digits).
    pub pan: String,
    /// The card's PIN (test data: written to cards.csv, stored only as PVV).
    pub pin: String,
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("kk", &self.kk)
            .field("bank", &self.bank)
            .field("province", &self.province)
            .field("pkh", &self.pkh)
            .field("bpnt", &self.bpnt)
            .field("counts", &self.counts)
            .field("pan", &crate::pan::mask_pan(&self.pan))
            .field("pin", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Family {
    /// Components as stored: `key=n` for each non-zero count.
    pub fn components_text(&self, programs: &Programs) -> String {
        let mut s = String::new();
        for (c, &n) in programs.pkh.components.iter().zip(&self.counts) {
            if n > 0 {
                if !s.is_empty() {
                    s.push(',');
                }
                s.push_str(&c.key);
                s.push('=');
                s.push_str(&n.to_string());
            }
        }
        s
    }
}

/// One e-Warong or agent terminal.
#[derive(Clone)]
pub struct TerminalSpec {
    /// DE41, e.g. `EW000001`.
    pub terminal_id: String,
    /// DE42, 15 characters, e.g. `EWARONG00000001`.
    pub merchant_id: String,
    /// e-Warong or agent.
    pub kind: TerminalKind,
    /// The bank that registered it.
    pub bank: Bank,
    /// DE18.
    pub mcc: &'static str,
    /// Test PIN key (16 bytes).
    pub pin_key: [u8; 16],
    /// Test MAC key (32 bytes), for MAC terminals.
    pub mac_key: Option<[u8; 32]>,
}

/// What `generate` made.
pub struct Population {
    pub families: Vec<Family>,
    pub terminals: Vec<TerminalSpec>,
}

fn derive(seed: u64, what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"kks-switch seed v1|");
    h.update(seed.to_be_bytes());
    h.update(b"|");
    h.update(what.as_bytes());
    h.finalize().into()
}

/// A bank's PIN verification key for this seed (test key material).
pub fn bank_pvk(seed: u64, bank: Bank) -> PvKey {
    // 32 bytes always make a PvKey.
    PvKey::from_bytes(&derive(seed, &format!("pvk|{}", bank.code())))
        .unwrap_or_else(|_| unreachable!("32-byte key"))
}

fn bank_index(bank: Bank) -> usize {
    Bank::ALL.iter().position(|&b| b == bank).unwrap_or(0)
}

/// Draws the population (pure: no I/O): [`Families`] collected, then
/// [`terminals`] for the families per bank.
pub fn generate(programs: &Programs, n: u64, seed: u64, mac_share: f64) -> Population {
    let mut gen = Families::new(programs, n, seed);
    let families: Vec<Family> = gen.by_ref().collect();
    let terminals = terminals(seed, mac_share, gen.per_bank());
    Population {
        families,
        terminals,
    }
}

/// The families of a population, drawn one at a time in order (so a bulk
/// seed of tens of millions never holds them all): the same N and seed
/// always give the same families.
pub struct Families {
    rng: SplitMix64,
    province_weights: Vec<u64>,
    /// Per component: chance (‰) of members, chances of 1, 2, 3.
    mix: Vec<(u64, [u64; 3])>,
    /// The component a PKH family with none drawn gets.
    fallback: usize,
    pan_seq: [u64; 5],
    next: u64,
    n: u64,
}

impl Families {
    /// The generator of `n` families for `seed`.
    pub fn new(programs: &Programs, n: u64, seed: u64) -> Families {
        // Component mix by the programs file's keys; unknown keys (a
        // replaced file) get a small default share.
        let mix = programs
            .pkh
            .components
            .iter()
            .map(|c| {
                COMPONENT_MIX
                    .iter()
                    .find(|m| m.0 == c.key)
                    .map_or((100, [900, 100, 0]), |m| (m.1, m.2))
            })
            .collect();
        Families {
            rng: SplitMix64::new(seed),
            province_weights: PROVINCES.iter().map(|p| p.2).collect(),
            mix,
            fallback: programs.component_index("sd").unwrap_or(0),
            pan_seq: [0; 5],
            next: 0,
            n,
        }
    }

    /// Families drawn so far per bank, in [`Bank::ALL`] order.
    pub fn per_bank(&self) -> [u64; 5] {
        self.pan_seq
    }
}

impl Iterator for Families {
    type Item = Family;

    fn next(&mut self) -> Option<Family> {
        if self.next >= self.n {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let rng = &mut self.rng;
        let p = &PROVINCES[rng.weighted(&self.province_weights)];
        let bank = Bank::ALL[rng.weighted(&p.3)];
        let regency = 1 + rng.below(20);
        let district = 1 + rng.below(30);
        let area = u64::from(p.0) * 10_000 + regency * 100 + district;
        let kk = area * 10_000_000_000 + (i + 1);
        // NIK: area + birth date (women +40 on the day) + 4-digit number.
        let day = 1 + rng.below(28) + if rng.below(2) == 0 { 40 } else { 0 };
        let month = 1 + rng.below(12);
        let year = 40 + rng.below(50);
        let nik = format!(
            "{area:06}{day:02}{month:02}{year:02}{:04}",
            1 + rng.below(9_999)
        );
        let m = rng.below(1_000);
        let (pkh, bpnt) = if m < MIX_PKH_BPNT {
            (true, true)
        } else if m < MIX_PKH_BPNT + MIX_BPNT_ONLY {
            (false, true)
        } else {
            (true, false)
        };
        let mut counts = vec![0u8; self.mix.len()];
        if pkh {
            for (slot, (chance, sizes)) in counts.iter_mut().zip(&self.mix) {
                if rng.below(1_000) < *chance {
                    *slot = 1 + rng.weighted(sizes) as u8;
                }
            }
            if counts.iter().all(|&c| c == 0) {
                // A PKH family has at least one member counted; school
                // children are the commonest case.
                counts[self.fallback] = 1;
            }
        }
        let bi = bank_index(bank);
        self.pan_seq[bi] += 1;
        let mut digits = format!("{}{:09}", bank.test_bin(), self.pan_seq[bi]).into_bytes();
        digits.push(luhn_check_digit(&digits));
        let pan = String::from_utf8(digits).unwrap_or_default();
        let pin = format!("{:06}", rng.below(1_000_000));
        Some(Family {
            kk,
            nik,
            bank,
            province: p.0,
            pkh,
            bpnt,
            counts,
            pan,
            pin,
        })
    }
}

/// The e-Warong and agents for a population with `per_bank` families per
/// bank ([`Bank::ALL`] order): about one of each per 1,000 families.
pub fn terminals(seed: u64, mac_share: f64, per_bank: [u64; 5]) -> Vec<TerminalSpec> {
    let mut terminals = Vec::new();
    let share_per_million = (mac_share.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
    for (kind, per, prefix, mid_prefix, mcc) in [
        (
            TerminalKind::Ewarong,
            FAMILIES_PER_EWARONG,
            "EW",
            "EWARONG",
            "5411",
        ),
        (
            TerminalKind::Agent,
            FAMILIES_PER_AGENT,
            "AG",
            "AGENT",
            "6010",
        ),
    ] {
        let mut k = 0u64;
        for (bi, &bank) in Bank::ALL.iter().enumerate() {
            let count = ((per_bank[bi] + per / 2) / per).max(1);
            for _ in 0..count {
                k += 1;
                let terminal_id = format!("{prefix}{k:06}");
                let merchant_id = format!("{mid_prefix}{k:0width$}", width = 15 - mid_prefix.len());
                let pin_seed = derive(seed, &format!("pin|{terminal_id}"));
                let mut pin_key = [0u8; 16];
                pin_key.copy_from_slice(&pin_seed[..16]);
                let pick = derive(seed, &format!("macpick|{terminal_id}"));
                let draw = u64::from_be_bytes(pick[..8].try_into().unwrap_or([0; 8])) % 1_000_000;
                let mac_key =
                    (draw < share_per_million).then(|| derive(seed, &format!("mac|{terminal_id}")));
                terminals.push(TerminalSpec {
                    terminal_id,
                    merchant_id,
                    kind,
                    bank,
                    mcc,
                    pin_key,
                    mac_key,
                });
            }
        }
    }
    terminals
}

/// What to seed.
#[derive(Clone, Debug)]
pub struct SeedConfig {
    /// Number of families.
    pub families: u64,
    /// PRNG seed.
    pub seed: u64,
    /// Where the CSV files go.
    pub out: PathBuf,
    /// Share of terminals with a MAC key, 0..=1.
    pub mac_share: f64,
    /// Skip writing the CSV files (bulk fixtures for benches).
    pub skip_files: bool,
}

/// What a seed run did.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    pub families: u64,
    pub ewarong: u64,
    pub agents: u64,
    pub mac_terminals: u64,
    pub per_bank: Vec<(Bank, u64)>,
    pub seconds: f64,
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("--families must be between 1 and {FAMILIES_MAX}")]
    Count,
    #[error("--mac-share must be between 0 and 1")]
    MacShare,
    #[error("the database already holds {0} families; seed a fresh database (--db)")]
    NotEmpty(u64),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error("a server is running on this database; stop it to seed (seeding registers keys and terminals it has already loaded)")]
    ServerRunning,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("a bank's shard stopped answering (91) while opening accounts: {0}")]
    Unavailable(WriterError),
    #[error("bank {bank}: {what} answered {code:?}")]
    Declined {
        bank: &'static str,
        what: String,
        code: Code,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A progress bar on standard error (hidden when it is not a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {human_pos}/{human_len} {per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Seed the database at `url` (opened as `store`): lock it, draw the
/// population, register keys and terminals, open every account through the
/// shards, record the families, and write the CSV files.
pub async fn run(
    url: &str,
    store: &Store,
    programs: &Programs,
    master: &MasterKey,
    shard_cfg: ShardConfig,
    cfg: &SeedConfig,
) -> Result<SeedReport, SeedError> {
    if cfg.families == 0 || cfg.families > FAMILIES_MAX {
        return Err(SeedError::Count);
    }
    if !(0.0..=1.0).contains(&cfg.mac_share) {
        return Err(SeedError::MacShare);
    }
    let started = Instant::now();
    // The single-writer rule: our own shards under the direct-writer lock
    // (which also keeps a server from starting meanwhile).
    let writer = Writer::open(url, programs.ledger_configs(), shard_cfg).await?;
    if writer.is_remote() {
        return Err(SeedError::ServerRunning);
    }
    let result = seed_locked(store, programs, master, cfg, &writer).await;
    writer.close().await;
    let mut report = result?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn seed_locked(
    store: &Store,
    programs: &Programs,
    master: &MasterKey,
    cfg: &SeedConfig,
    writer: &Writer,
) -> Result<SeedReport, SeedError> {
    let existing = store.family_count().await?;
    if existing > 0 {
        return Err(SeedError::NotEmpty(existing));
    }
    for bank in Bank::ALL {
        save_bank_key(store, master, bank, &bank_pvk(cfg.seed, bank)).await?;
    }

    // Families in chunks: each chunk's cards opened at all banks at once,
    // then its rows stored. Only the CSV files need every family at the
    // end; without them nothing is kept, so a bulk fixture of tens of
    // millions of families never holds them all.
    let pvks: Vec<PvKey> = Bank::ALL.iter().map(|&b| bank_pvk(cfg.seed, b)).collect();
    let mut gen = Families::new(programs, cfg.families, cfg.seed);
    let mut kept = Vec::new();
    let pb = progress(cfg.families, "families");
    loop {
        let chunk: Vec<Family> = gen.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        open_cards(writer, &chunk, &pvks).await?;
        let rows: Vec<FamilyRow> = chunk
            .iter()
            .map(|f| FamilyRow {
                kk: f.kk,
                nik: f.nik.clone(),
                bank: f.bank.code_number(),
                province: f.province,
                pkh: f.pkh,
                bpnt: f.bpnt,
                components: f.components_text(programs),
                pan: f.pan.clone(),
            })
            .collect();
        store.put_families(&rows).await?;
        pb.inc(chunk.len() as u64);
        if !cfg.skip_files {
            kept.extend(chunk);
        }
    }
    pb.finish_and_clear();
    let per_bank = gen.per_bank();

    let specs = terminals(cfg.seed, cfg.mac_share, per_bank);
    let registered: Vec<Terminal> = specs
        .iter()
        .map(|t| Terminal {
            terminal_id: pad8(&t.terminal_id),
            merchant: MerchantId::new(t.merchant_id.as_bytes())
                .unwrap_or_else(|| unreachable!("merchant ids are 15 characters")),
            kind: t.kind,
            bank: t.bank,
            mcc: mcc4(t.mcc),
            pin_key: PinKey::from_bytes(&t.pin_key).unwrap_or_else(|_| unreachable!("16 bytes")),
            mac_key: t
                .mac_key
                .map(|k| MacKey::from_bytes(&k).unwrap_or_else(|_| unreachable!("32 bytes"))),
        })
        .collect();
    save_terminals(store, master, &registered).await?;
    open_terminals(writer, &specs).await?;

    let mut report = SeedReport {
        families: cfg.families,
        ..SeedReport::default()
    };
    for t in &specs {
        match t.kind {
            TerminalKind::Ewarong => report.ewarong += 1,
            _ => report.agents += 1,
        }
        report.mac_terminals += u64::from(t.mac_key.is_some());
    }
    for (bank, n) in Bank::ALL.iter().zip(per_bank) {
        report.per_bank.push((*bank, n));
    }
    if !cfg.skip_files {
        let pop = Population {
            families: kept,
            terminals: specs,
        };
        write_files(&cfg.out, programs, &pop)?;
    }
    Ok(report)
}

fn pad8(s: &str) -> [u8; 8] {
    let mut t = [b' '; 8];
    let b = s.as_bytes();
    let n = b.len().min(8);
    t[..n].copy_from_slice(&b[..n]);
    t
}

fn mcc4(s: &str) -> [u8; 4] {
    let mut m = [b'0'; 4];
    if s.len() == 4 {
        m.copy_from_slice(s.as_bytes());
    }
    m
}

/// Fails unless every answer is an approval (or `AlreadyExists`: a seed
/// interrupted after opening and run again).
fn check_opened(
    bank: Bank,
    what: &dyn Fn(usize) -> String,
    done: &[crate::shard::Done],
) -> Result<(), SeedError> {
    for (i, d) in done.iter().enumerate() {
        if !matches!(d.reply.code, Code::Approved | Code::AlreadyExists) {
            return Err(SeedError::Declined {
                bank: bank.name(),
                what: what(i),
                code: d.reply.code,
            });
        }
    }
    Ok(())
}

/// Opens the cards of `families` at their banks, every bank at once.
async fn open_cards(writer: &Writer, families: &[Family], pvks: &[PvKey]) -> Result<(), SeedError> {
    let mut per_bank: Vec<(Bank, Vec<&Family>)> =
        Bank::ALL.iter().map(|&b| (b, Vec::new())).collect();
    for f in families {
        per_bank[bank_index(f.bank)].1.push(f);
    }
    let runs = per_bank
        .iter()
        .filter(|(_, fams)| !fams.is_empty())
        .map(|(bank, fams)| {
            let pvk = &pvks[bank_index(*bank)];
            let cmds: Vec<Command> = fams
                .iter()
                .map(|f| {
                    let pan = crate::pan::Pan::parse(f.pan.as_bytes())
                        .unwrap_or_else(|_| unreachable!("generated PANs are Luhn-valid"));
                    let pin: Pin = f.pin.parse().unwrap_or_else(|_| unreachable!("6 digits"));
                    Command::OpenCard {
                        pan: crate::ledger::Pan::from_digits(f.pan.as_bytes())
                            .unwrap_or_else(|| unreachable!("16 digits")),
                        family: FamilyId(f.kk),
                        pvv: Pvv(pin_verification_value(pvk, &pan, &pin)),
                        status: CardStatus::Active,
                    }
                })
                .collect();
            async move {
                let done = writer
                    .execute_many(BankCode(bank.code_number()), cmds)
                    .await
                    .map_err(SeedError::Unavailable)?;
                check_opened(*bank, &|i| format!("card of family {}", fams[i].kk), &done)
            }
        });
    for r in futures::future::join_all(runs).await {
        r?;
    }
    Ok(())
}

/// Opens the settlement accounts of the terminals at their banks.
async fn open_terminals(writer: &Writer, terminals: &[TerminalSpec]) -> Result<(), SeedError> {
    for bank in Bank::ALL {
        let terms: Vec<&TerminalSpec> = terminals.iter().filter(|t| t.bank == bank).collect();
        let cmds: Vec<Command> = terms
            .iter()
            .map(|t| Command::OpenTerminalAccount {
                merchant: MerchantId::new(t.merchant_id.as_bytes())
                    .unwrap_or_else(|| unreachable!("15 characters")),
                kind: t.kind,
            })
            .collect();
        let done = writer
            .execute_many(BankCode(bank.code_number()), cmds)
            .await
            .map_err(SeedError::Unavailable)?;
        check_opened(
            bank,
            &|i| format!("terminal account {}", terms[i].merchant_id),
            &done,
        )?;
    }
    Ok(())
}

fn create(path: &Path) -> Result<BufWriter<std::fs::File>, SeedError> {
    std::fs::File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|source| SeedError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// Writes `cards.csv`, `terminals.csv` and `families.csv` into `dir`.
pub fn write_files(dir: &Path, programs: &Programs, pop: &Population) -> Result<(), SeedError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SeedError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;

    let path = dir.join("cards.csv");
    let mut w = create(&path)?;
    (|| -> std::io::Result<()> {
        writeln!(w, "pan,bank,kk,pin,status")?;
        for f in &pop.families {
            writeln!(w, "{},{},{},{},active", f.pan, f.bank.name(), f.kk, f.pin)?;
        }
        w.flush()
    })()
    .map_err(io(&path))?;

    let path = dir.join("terminals.csv");
    let mut w = create(&path)?;
    (|| -> std::io::Result<()> {
        writeln!(
            w,
            "terminal_id,merchant_id,kind,bank,mcc,pin_key_hex,mac_key_hex"
        )?;
        for t in &pop.terminals {
            writeln!(
                w,
                "{},{},{},{},{},{},{}",
                t.terminal_id,
                t.merchant_id,
                crate::registry::kind_name(t.kind),
                t.bank.name(),
                t.mcc,
                hex::encode_upper(t.pin_key),
                t.mac_key.map(hex::encode_upper).unwrap_or_default()
            )?;
        }
        w.flush()
    })()
    .map_err(io(&path))?;

    let path = dir.join("families.csv");
    let mut w = create(&path)?;
    (|| -> std::io::Result<()> {
        write!(w, "kk,nik,bank,province,pkh,bpnt")?;
        for c in &programs.pkh.components {
            write!(w, ",{}", c.key)?;
        }
        writeln!(w, ",pkh_per_tahap,bpnt_per_month,pan")?;
        for f in &pop.families {
            write!(
                w,
                "{},{},{},{},{},{}",
                f.kk,
                f.nik,
                f.bank.name(),
                f.province,
                u8::from(f.pkh),
                u8::from(f.bpnt)
            )?;
            for n in &f.counts {
                write!(w, ",{n}")?;
            }
            let tahap = if f.pkh {
                programs.pkh_tahap(&f.counts)
            } else {
                0
            };
            let month = if f.bpnt { programs.bpnt.monthly } else { 0 };
            writeln!(
                w,
                ",{},{},{}",
                rupiah(tahap.into()),
                rupiah(month.into()),
                f.pan
            )?;
        }
        w.flush()
    })()
    .map_err(io(&path))?;
    Ok(())
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn family_debug_masks_the_pan_and_omits_the_pin() {
        let programs = Programs::builtin();
        let pop = generate(&programs, 3, 7, 0.25);
        for f in &pop.families {
            let s = format!("{f:?}");
            assert!(!s.contains(&f.pan) && !s.contains(&f.pin), "{s}");
        }
    }
}
