//! The terminal registry and bank keys, as the switch holds them in memory:
//! loaded from the store at start, keys unwrapped under the master key.
//! Lookups by DE41 + DE42 are one hash probe per request.

use crate::crypto::keys::{label_bank_pvk, label_terminal_mac, label_terminal_pin};
use crate::crypto::{MacKey, MasterKey, PinKey, PvKey};
use crate::ledger::{MerchantId, TerminalKind};
use crate::pan::Bank;
use crate::storage::{Store, StoreError, TerminalRow};
use std::collections::HashMap;

/// A terminal as the switch needs it.
pub struct Terminal {
    pub terminal_id: [u8; 8],
    pub merchant: MerchantId,
    pub kind: TerminalKind,
    pub bank: Bank,
    pub mcc: [u8; 4],
    pub pin_key: PinKey,
    pub mac_key: Option<MacKey>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("terminal_id", &String::from_utf8_lossy(&self.terminal_id))
            .field("kind", &self.kind)
            .field("bank", &self.bank)
            .field("mac", &self.mac_key.is_some())
            .finish()
    }
}

/// Why the registry could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("terminal {terminal}: {what}")]
    Terminal { terminal: String, what: String },
    #[error("bank {bank}: PIN verification key cannot be unwrapped (wrong master key?)")]
    BankKey { bank: u16 },
}

/// Kind as stored / written in terminals.csv.
pub fn kind_name(kind: TerminalKind) -> &'static str {
    match kind {
        TerminalKind::Ewarong => "ewarong",
        TerminalKind::Agent => "agent",
        TerminalKind::Merchant => "merchant",
    }
}

/// Parse a stored kind.
pub fn kind_from_name(s: &str) -> Option<TerminalKind> {
    match s {
        "ewarong" => Some(TerminalKind::Ewarong),
        "agent" => Some(TerminalKind::Agent),
        "merchant" => Some(TerminalKind::Merchant),
        _ => None,
    }
}

/// DE41 (ans8) and DE42 (ans15) as fixed arrays, space-padded.
pub fn terminal_key(tid: &[u8], mid: &[u8]) -> Option<([u8; 8], [u8; 15])> {
    if tid.len() > 8 || mid.len() > 15 {
        return None;
    }
    let mut t = [b' '; 8];
    t[..tid.len()].copy_from_slice(tid);
    let mut m = [b' '; 15];
    m[..mid.len()].copy_from_slice(mid);
    Some((t, m))
}

/// The loaded registry.
#[derive(Default)]
pub struct Registry {
    terminals: HashMap<([u8; 8], [u8; 15]), Terminal>,
    pvks: HashMap<u16, PvKey>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Registry({} terminals, {} bank keys)",
            self.terminals.len(),
            self.pvks.len()
        )
    }
}

impl Registry {
    /// Load and unwrap everything.
    pub async fn load(store: &Store, master: &MasterKey) -> Result<Registry, RegistryError> {
        let mut reg = Registry::default();
        for (bank, wrapped) in store.bank_keys().await? {
            let key = master
                .unwrap_pv_key(&wrapped, &label_bank_pvk(&format!("{bank:03}")))
                .map_err(|_| RegistryError::BankKey { bank })?;
            reg.pvks.insert(bank, key);
        }
        for row in store.terminals().await? {
            let t = Self::unwrap_row(&row, master)?;
            reg.terminals
                .insert((t.terminal_id, *t.merchant.as_bytes()), t);
        }
        Ok(reg)
    }

    fn unwrap_row(row: &TerminalRow, master: &MasterKey) -> Result<Terminal, RegistryError> {
        let bad = |what: &str| RegistryError::Terminal {
            terminal: row.terminal_id.clone(),
            what: what.to_string(),
        };
        let (tid, _) = terminal_key(row.terminal_id.as_bytes(), b"")
            .ok_or_else(|| bad("terminal id longer than 8"))?;
        let merchant = MerchantId::new(row.merchant_id.as_bytes())
            .ok_or_else(|| bad("merchant id longer than 15"))?;
        let kind = kind_from_name(&row.kind).ok_or_else(|| bad("unknown kind"))?;
        let bank =
            Bank::from_code(&format!("{:03}", row.bank)).ok_or_else(|| bad("unknown bank"))?;
        let mut mcc = [b'0'; 4];
        if row.mcc.len() == 4 {
            mcc.copy_from_slice(row.mcc.as_bytes());
        }
        let pin_key = master
            .unwrap_pin_key(&row.pin_key, &label_terminal_pin(&row.terminal_id))
            .map_err(|_| bad("PIN key cannot be unwrapped (wrong master key?)"))?;
        let mac_key = match &row.mac_key {
            Some(w) => Some(
                master
                    .unwrap_mac_key(w, &label_terminal_mac(&row.terminal_id))
                    .map_err(|_| bad("MAC key cannot be unwrapped (wrong master key?)"))?,
            ),
            None => None,
        };
        Ok(Terminal {
            terminal_id: tid,
            merchant,
            kind,
            bank,
            mcc,
            pin_key,
            mac_key,
        })
    }

    /// Add (or replace) a terminal held in memory only: for tests and the
    /// deterministic simulation, which build a registry without a store.
    pub fn insert_terminal(&mut self, t: Terminal) {
        self.terminals
            .insert((t.terminal_id, *t.merchant.as_bytes()), t);
    }

    /// Add (or replace) a bank's PIN verification key, in memory only.
    pub fn insert_pvk(&mut self, bank: u16, key: PvKey) {
        self.pvks.insert(bank, key);
    }

    /// The terminal named by DE41 + DE42.
    pub fn terminal(&self, tid: &[u8], mid: &[u8]) -> Option<&Terminal> {
        let k = terminal_key(tid, mid)?;
        self.terminals.get(&k)
    }

    /// A bank's PIN verification key.
    pub fn pvk(&self, bank: u16) -> Option<&PvKey> {
        self.pvks.get(&bank)
    }

    /// Number of terminals.
    pub fn len(&self) -> usize {
        self.terminals.len()
    }

    /// True when no terminal is registered.
    pub fn is_empty(&self) -> bool {
        self.terminals.is_empty()
    }
}

/// Wrap and store terminals (clear keys in, wrapped keys stored).
pub async fn save_terminals(
    store: &Store,
    master: &MasterKey,
    terminals: &[Terminal],
) -> Result<(), RegistryError> {
    let rows: Vec<TerminalRow> = terminals
        .iter()
        .map(|t| {
            let tid = String::from_utf8_lossy(&t.terminal_id)
                .trim_end()
                .to_string();
            TerminalRow {
                pin_key: master.wrap_pin_key(&t.pin_key, &label_terminal_pin(&tid)),
                mac_key: t
                    .mac_key
                    .as_ref()
                    .map(|k| master.wrap_mac_key(k, &label_terminal_mac(&tid))),
                merchant_id: String::from_utf8_lossy(t.merchant.as_bytes())
                    .trim_end()
                    .to_string(),
                kind: kind_name(t.kind).to_string(),
                bank: t.bank.code_number(),
                mcc: String::from_utf8_lossy(&t.mcc).to_string(),
                terminal_id: tid,
            }
        })
        .collect();
    store.put_terminals(&rows).await?;
    Ok(())
}

/// Wrap and store a bank's PIN verification key.
pub async fn save_bank_key(
    store: &Store,
    master: &MasterKey,
    bank: Bank,
    key: &PvKey,
) -> Result<(), RegistryError> {
    let wrapped = master.wrap_pv_key(key, &label_bank_pvk(bank.code()));
    store.put_bank_key(bank.code_number(), &wrapped).await?;
    Ok(())
}
