//! `kks-switch card …` and `kks-switch sweep`: card lifecycle and the
//! dormant sweep as ledger commands through the banks' shards (so the
//! journal is their audit trail), via [`Writer`]: a running server's admin
//! endpoint, else this process's own shards under the direct-writer lock.

use crate::admin::{Writer, WriterError};
use crate::crypto::{pin_verification_value, MasterKey, Pin};
use crate::ledger::{BankCode, Code, Command, Pvv, SweepLine};
use crate::pan::{luhn_check_digit, Bank, Pan as CardPan};
use crate::programs::{parse_date, Programs};
use crate::registry::{Registry, RegistryError};
use crate::shard::ShardConfig;
use crate::storage::{Store, StoreError};
use std::io::Write;

/// A card command. `Debug` never prints a PIN.
#[derive(Clone)]
pub enum CardOp {
    Activate,
    /// New PIN (6 digits).
    SetPin(String),
    Block,
    Unblock,
    /// Replace a lost card: the new PAN (or one drawn on the bank's BIN) and
    /// its PIN (or a drawn one).
    Replace {
        new_pan: Option<String>,
        pin: Option<String>,
    },
}

/// Why a card or sweep command failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("--pan: {0}")]
    Pan(String),
    #[error("--pin must be 6 digits")]
    Pin,
    #[error("--as-of must be a date YYYY-MM-DD")]
    Date,
    #[error("no PIN verification key for bank {0}: seed the database first")]
    NoKey(&'static str),
    #[error("the ledger answered {de39} ({code:?})")]
    Declined { de39: &'static str, code: Code },
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn parse_pan(s: &str) -> Result<(CardPan, crate::ledger::Pan, Bank), LifecycleError> {
    let p = CardPan::parse(s.as_bytes()).map_err(|e| LifecycleError::Pan(e.to_string()))?;
    let bank = p
        .bank()
        .ok_or_else(|| LifecycleError::Pan("BIN is not one of the test BINs".into()))?;
    let l = crate::ledger::Pan::from_digits(p.digits())
        .ok_or_else(|| LifecycleError::Pan("not a card number".into()))?;
    Ok((p, l, bank))
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// What a card command did; `new_card` holds (PAN, PIN) of a replacement.
/// `Debug` prints the PAN masked and never the PIN.
pub struct CardResult {
    pub new_card: Option<(String, String)>,
}

impl std::fmt::Debug for CardOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardOp::Activate => f.write_str("Activate"),
            CardOp::SetPin(_) => f.write_str("SetPin(<redacted>)"),
            CardOp::Block => f.write_str("Block"),
            CardOp::Unblock => f.write_str("Unblock"),
            CardOp::Replace { new_pan, .. } => f
                .debug_struct("Replace")
                .field("new_pan", &new_pan.as_deref().map(crate::pan::mask_pan))
                .field("pin", &"<redacted>")
                .finish(),
        }
    }
}

impl std::fmt::Debug for CardResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardResult")
            .field(
                "new_card",
                &self
                    .new_card
                    .as_ref()
                    .map(|(p, _)| (crate::pan::mask_pan(p), "<redacted>")),
            )
            .finish()
    }
}

/// Run one card command.
pub async fn card(
    url: &str,
    store: &Store,
    programs: &Programs,
    master: &MasterKey,
    shard_cfg: ShardConfig,
    pan: &str,
    op: CardOp,
) -> Result<CardResult, LifecycleError> {
    let (card_pan, lpan, bank) = parse_pan(pan)?;
    let registry = Registry::load(store, master).await?;
    let pvk = || {
        registry
            .pvk(bank.code_number())
            .ok_or(LifecycleError::NoKey(bank.name()))
    };
    let pvv = |p: &CardPan, pin: &str| -> Result<Pvv, LifecycleError> {
        let pin: Pin = pin.parse().map_err(|_| LifecycleError::Pin)?;
        if pin.digits().len() != 6 {
            return Err(LifecycleError::Pin);
        }
        Ok(Pvv(pin_verification_value(pvk()?, p, &pin)))
    };
    let code = BankCode(bank.code_number());
    let writer = Writer::open(url, vec![programs.ledger_config(code)], shard_cfg).await?;
    let result = async {
        let mut new_card = None;
        let cmd = match &op {
            CardOp::Activate => Command::Activate { pan: lpan },
            CardOp::SetPin(pin) => Command::SetPin {
                pan: lpan,
                pvv: pvv(&card_pan, pin)?,
            },
            CardOp::Block => Command::Block { pan: lpan },
            CardOp::Unblock => Command::Unblock { pan: lpan },
            CardOp::Replace { new_pan, pin } => {
                let pin = pin
                    .clone()
                    .unwrap_or_else(|| format!("{:06}", random_u64() % 1_000_000));
                let np = match new_pan {
                    Some(p) => p.clone(),
                    None => {
                        let mut d =
                            format!("{}{:09}", bank.test_bin(), random_u64() % 1_000_000_000)
                                .into_bytes();
                        d.push(luhn_check_digit(&d));
                        String::from_utf8(d).unwrap_or_default()
                    }
                };
                let (np_card, np_l, np_bank) = parse_pan(&np)?;
                if np_bank != bank {
                    return Err(LifecycleError::Pan(
                        "the new PAN must be on the same bank's BIN".into(),
                    ));
                }
                new_card = Some((np.clone(), pin.clone()));
                Command::Replace {
                    old_pan: lpan,
                    new_pan: np_l,
                    pvv: pvv(&np_card, &pin)?,
                }
            }
        };
        let done = writer.execute_many(code, vec![cmd]).await?;
        let Some(done) = done.into_iter().next() else {
            return Err(LifecycleError::Writer(WriterError::Admin(
                "no answer".into(),
            )));
        };
        if done.reply.code != Code::Approved {
            return Err(LifecycleError::Declined {
                de39: done.reply.code.de39(),
                code: done.reply.code,
            });
        }
        Ok(CardResult { new_card })
    }
    .await;
    writer.close().await;
    result
}

/// What the sweep did, per bank.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub lines: Vec<(Bank, SweepLine)>,
}

/// The dormant sweep as of 00:00 WIB of `as_of` (YYYY-MM-DD) at every bank;
/// writes the report CSV (`pan,bank,blocked,pkh_returned,bpnt_returned`)
/// to `out`.
pub async fn sweep(
    url: &str,
    programs: &Programs,
    shard_cfg: ShardConfig,
    as_of: &str,
    out: &mut dyn Write,
) -> Result<SweepReport, LifecycleError> {
    let days = parse_date(as_of).ok_or(LifecycleError::Date)?;
    let at = (days * 86_400 - crate::ledger::WIB_OFFSET_SECONDS as i64).max(0) as u64;
    let writer = Writer::open(url, programs.ledger_configs(), shard_cfg).await?;
    let mut report = SweepReport::default();
    let mut failed = None;
    for bank in Bank::ALL {
        match writer
            .execute_many(
                BankCode(bank.code_number()),
                vec![Command::Sweep { as_of: at }],
            )
            .await
        {
            Ok(done) => report
                .lines
                .extend(done.into_iter().flat_map(|d| d.sweep).map(|l| (bank, l))),
            Err(e) => failed = Some(LifecycleError::Writer(e)),
        }
    }
    writer.close().await;
    if let Some(e) = failed {
        return Err(e);
    }
    let _ = writeln!(out, "pan,bank,blocked,pkh_returned,bpnt_returned");
    for (bank, l) in &report.lines {
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            l.pan.to_digit_string(),
            bank.name(),
            u8::from(l.blocked),
            crate::programs::rupiah(l.returned[0].into()),
            crate::programs::rupiah(l.returned[1].into())
        );
    }
    Ok(report)
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_pin() {
        let ops = [
            CardOp::SetPin("847361".into()),
            CardOp::Replace {
                new_pan: Some("6000020000000120".into()),
                pin: Some("847361".into()),
            },
        ];
        for op in ops {
            let s = format!("{op:?}");
            assert!(
                !s.contains("847361") && !s.contains("6000020000000120"),
                "{s}"
            );
        }
        let r = CardResult {
            new_card: Some(("6000020000000120".into(), "847361".into())),
        };
        let s = format!("{r:?}");
        assert!(
            !s.contains("847361") && s.contains("600002******0120"),
            "{s}"
        );
    }
}
