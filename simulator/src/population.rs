//! The population the terminals serve, read from the files `kks-switch seed`
//! writes (INTERFACE §8): `cards.csv`, `terminals.csv`, and, when it sits
//! beside `cards.csv`, `families.csv` (which programs each card is in).
//!
//! Each card gets a home e-Warong and a home agent of its own bank when the
//! bank has one (people shop and draw cash near home), drawn from the seed,
//! so its PIN blocks can be computed once per (card, terminal) and reused.

use kks_switch::crypto::{MacKey, Pin, PinKey};
use kks_switch::pan::{Bank, Pan};
use std::collections::HashMap;
use std::path::Path;

/// One emulated terminal.
pub struct Terminal {
    pub tid: [u8; 8],
    pub mid: Vec<u8>,
    pub agent: bool,
    pub bank: Bank,
    pub mcc: [u8; 4],
    pub pin_key: PinKey,
    pub mac_key: Option<MacKey>,
    /// Next STAN of the request stream (1..=899999).
    pub stan: u32,
    /// Next STAN for reversals the run decides on the fly (real timeouts,
    /// 0401 repeats): 900000..=999999, kept apart so that the seeded stream's
    /// STANs never depend on timing.
    pub repeat_stan: u32,
}

impl Terminal {
    /// A new STAN for the seeded stream.
    pub fn next_stan(&mut self) -> u32 {
        let s = self.stan;
        self.stan = if s >= 899_999 { 1 } else { s + 1 };
        s
    }

    /// A new STAN for a reversal decided at run time.
    pub fn next_repeat_stan(&mut self) -> u32 {
        let s = self.repeat_stan;
        self.repeat_stan = if s >= 999_999 { 900_000 } else { s + 1 };
        s
    }
}

/// One card.
pub struct Card {
    pub pan: Pan,
    pub pin: Pin,
    pub pkh: bool,
    pub bpnt: bool,
    pub home_ewarong: Option<u32>,
    pub home_agent: Option<u32>,
    /// Cached PIN blocks under the home e-Warong's / agent's PIN key.
    pub block_ewarong: Option<[u8; 8]>,
    pub block_agent: Option<[u8; 8]>,
}

pub struct Population {
    pub cards: Vec<Card>,
    pub terminals: Vec<Terminal>,
    pub tid_index: HashMap<[u8; 8], u32>,
    /// Whether families.csv was found (program enrolment known).
    pub enrolment_known: bool,
}

fn split(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

fn header_index(header: &str, names: &[&str], file: &Path) -> Result<Vec<usize>, String> {
    let cols = split(header);
    names
        .iter()
        .map(|n| {
            cols.iter()
                .position(|c| c == n)
                .ok_or_else(|| format!("{}: no column {n:?}", file.display()))
        })
        .collect()
}

impl Population {
    /// Read the files; `seed` picks the home terminals.
    pub fn load(cards_csv: &Path, terminals_csv: &Path, seed: u64) -> Result<Population, String> {
        let rd = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let text = rd(terminals_csv)?;
        let mut lines = text.lines();
        let header = lines.next().ok_or("terminals.csv is empty")?;
        let ix = header_index(
            header,
            &[
                "terminal_id",
                "merchant_id",
                "kind",
                "bank",
                "mcc",
                "pin_key_hex",
                "mac_key_hex",
            ],
            terminals_csv,
        )?;
        let mut terminals = Vec::new();
        let mut tid_index = HashMap::new();
        for (n, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let f = split(line);
            let bad = |what: &str| format!("{} line {}: {what}", terminals_csv.display(), n + 2);
            let get = |i: usize| f.get(ix[i]).copied().unwrap_or("");
            let tid_s = get(0);
            if tid_s.is_empty() || tid_s.len() > 8 {
                return Err(bad("terminal_id must be 1..=8 characters"));
            }
            let mut tid = [b' '; 8];
            tid[..tid_s.len()].copy_from_slice(tid_s.as_bytes());
            let mid = get(1);
            if mid.is_empty() || mid.len() > 15 {
                return Err(bad("merchant_id must be 1..=15 characters"));
            }
            let mut mid_b = mid.as_bytes().to_vec();
            mid_b.resize(15, b' ');
            let agent = match get(2) {
                "agent" => true,
                "ewarong" => false,
                _ => continue, // other kinds (plain merchants) are not emulated
            };
            let bank = Bank::from_name(get(3)).ok_or_else(|| bad("unknown bank"))?;
            let mut mcc = [b'0'; 4];
            if get(4).len() == 4 {
                mcc.copy_from_slice(get(4).as_bytes());
            }
            let pin_key = PinKey::from_hex(get(5)).map_err(|_| bad("bad pin_key_hex"))?;
            let mac_key = match get(6) {
                "" => None,
                h => Some(MacKey::from_hex(h).map_err(|_| bad("bad mac_key_hex"))?),
            };
            tid_index.insert(tid, terminals.len() as u32);
            terminals.push(Terminal {
                tid,
                mid: mid_b,
                agent,
                bank,
                mcc,
                pin_key,
                mac_key,
                stan: 1,
                repeat_stan: 900_000,
            });
        }
        if terminals.is_empty() {
            return Err(format!(
                "{}: no e-Warong or agent terminals",
                terminals_csv.display()
            ));
        }

        // Programs per PAN from families.csv beside cards.csv, if present.
        let mut programs: HashMap<String, (bool, bool)> = HashMap::new();
        let families = cards_csv.with_file_name("families.csv");
        let enrolment_known = families.exists();
        if enrolment_known {
            let text = rd(&families)?;
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let ix = header_index(header, &["pkh", "bpnt", "pan"], &families)?;
            for line in lines {
                let f = split(line);
                if let (Some(p), Some(b), Some(pan)) = (f.get(ix[0]), f.get(ix[1]), f.get(ix[2])) {
                    programs.insert(pan.to_string(), (*p == "1", *b == "1"));
                }
            }
        }

        // Terminals by bank and kind, for home assignment.
        let mut by_bank: HashMap<(Bank, bool), Vec<u32>> = HashMap::new();
        let mut by_kind: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        for (i, t) in terminals.iter().enumerate() {
            by_bank.entry((t.bank, t.agent)).or_default().push(i as u32);
            by_kind[t.agent as usize].push(i as u32);
        }
        let mut rng = crate::rng::Rng::new(seed ^ 0x484f_4d45); // "HOME"
        let mut home = |bank: Bank, agent: bool| -> Option<u32> {
            let list = by_bank
                .get(&(bank, agent))
                .filter(|l| !l.is_empty())
                .unwrap_or(&by_kind[agent as usize]);
            if list.is_empty() {
                None
            } else {
                Some(list[rng.below(list.len() as u64) as usize])
            }
        };

        let text = rd(cards_csv)?;
        let mut lines = text.lines();
        let header = lines.next().ok_or("cards.csv is empty")?;
        let ix = header_index(header, &["pan", "bank", "pin", "status"], cards_csv)?;
        let mut cards = Vec::new();
        for (n, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let f = split(line);
            let bad = |what: &str| format!("{} line {}: {what}", cards_csv.display(), n + 2);
            let get = |i: usize| f.get(ix[i]).copied().unwrap_or("");
            if get(3) != "active" {
                continue;
            }
            let pan = Pan::parse(get(0).as_bytes()).map_err(|_| bad("bad PAN"))?;
            let bank = Bank::from_name(get(1)).ok_or_else(|| bad("unknown bank"))?;
            let pin = Pin::new(get(2).as_bytes()).map_err(|_| bad("bad PIN"))?;
            let (pkh, bpnt) = programs.get(get(0)).copied().unwrap_or((true, true));
            cards.push(Card {
                home_ewarong: home(bank, false),
                home_agent: home(bank, true),
                pan,
                pin,
                pkh,
                bpnt,
                block_ewarong: None,
                block_agent: None,
            });
        }
        if cards.is_empty() {
            return Err(format!("{}: no active cards", cards_csv.display()));
        }
        Ok(Population {
            cards,
            terminals,
            tid_index,
            enrolment_known,
        })
    }
}
