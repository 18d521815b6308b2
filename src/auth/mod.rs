//! Authorization over ISO 8583 (INTERFACE §3–§6): turns a validated 0200 or
//! reversal into a ledger command for the card's bank, in the order of
//! checks of INTERFACE §5, and builds the response once the ledger's answer
//! is durable.
//!
//! Checks made here, before the ledger: 30 for a malformed basket, 63 for a
//! missing or wrong MAC, 03 for an unregistered DE41/DE42, 92 for a BIN that
//! is not ours, 14 for a PAN that fails Luhn. The PIN block is decrypted here
//! with the terminal's PIN key and turned into a PIN verification value, so
//! the clear PIN never leaves this function's stack (and is zeroized there).
//! Basket eligibility and DE49 become a [`Precheck`], which the ledger places
//! after its card and PIN checks. Everything else is the ledger's.

pub mod basket;

use crate::crypto::{compute_mac, decode_pin, pin_verification_value, verify_mac};
use crate::iso8583::{de, Message};
use crate::ledger::{
    Acceptor, BankCode, Command, Fingerprint, Inquiry, Pan as LedgerPan, Payment, Precheck,
    Program, Pvv, Request, RequestKey, Reversal, RuleSet,
};
use crate::pan::{Bank, Pan, PanError};
use crate::registry::{Registry, Terminal};
use crate::shard::{Done, Respond, Shards};
use crate::switch::respond::{respond, Added};
use crate::switch::{Authorizer, Reply, Sink};
use basket::{check_basket, FOOD_ONLY_ALLOWED};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The issuer: registry, shards and the rule set in force.
pub struct Issuer {
    pub shards: Arc<Shards>,
    pub registry: Arc<Registry>,
    pub rule_set: RuleSet,
}

/// What DE3 asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Purchase(Program),
    Withdrawal(Program),
    Inquiry,
    Unsupported,
}

fn op_of(de3: &[u8]) -> Op {
    match de3 {
        b"000000" | b"006000" => Op::Purchase(Program::Bpnt),
        b"001000" => Op::Purchase(Program::Pkh),
        b"010000" | b"011000" => Op::Withdrawal(Program::Pkh),
        b"016000" => Op::Withdrawal(Program::Bpnt),
        b"310000" => Op::Inquiry,
        _ => Op::Unsupported,
    }
}

/// DE32 as 11 digits, right-justified and zero-filled, so that `002` (DE32)
/// and `00000000002` (DE90's acquirer) name the same institution.
fn acquirer11(v: &[u8]) -> [u8; 11] {
    let mut out = [b'0'; 11];
    let v = &v[v.len().saturating_sub(11)..];
    out[11 - v.len()..].copy_from_slice(v);
    out
}

/// The idempotency key (INTERFACE §5): MTI class + DE32 + DE41 + DE11 + DE7.
fn request_key(
    class: &[u8],
    acquirer: &[u8; 11],
    terminal: &[u8],
    stan: &[u8],
    transmission: &[u8],
) -> RequestKey {
    let mut buf = [0u8; 38];
    buf[..3].copy_from_slice(&class[..3.min(class.len())]);
    buf[3..14].copy_from_slice(acquirer);
    let t = &terminal[..terminal.len().min(8)];
    buf[14..14 + t.len()].copy_from_slice(t);
    let s = &stan[..stan.len().min(6)];
    buf[22..22 + s.len()].copy_from_slice(s);
    let d = &transmission[..transmission.len().min(10)];
    buf[28..28 + d.len()].copy_from_slice(d);
    RequestKey::new(&buf).unwrap_or_else(|| RequestKey::new(b"").unwrap_or_else(|| unreachable!()))
}

/// Digest of the content fields the ledger does not see itself (DE3, DE48,
/// DE49, DE90): with the ledger's own content hash this decides "same key,
/// same content" (replay) against "same key, different content" (94).
fn fingerprint<B: AsRef<[u8]>>(req: &Message<B>) -> Fingerprint {
    let mut h = Sha256::new();
    for n in [de::PROCESSING_CODE, de::BASKET, de::CURRENCY, de::ORIGINAL] {
        let v = req.get(n).unwrap_or_default();
        h.update([n, (v.len() >> 8) as u8, v.len() as u8]);
        h.update(v);
    }
    let d = h.finalize();
    let mut f = [0u8; 16];
    f.copy_from_slice(&d[..16]);
    Fingerprint(f)
}

/// DE54 for an inquiry: PKH then BPNT, each type n2 + amount type `02` +
/// currency `360` + sign + n12.
fn balances_de54(pkh: u64, bpnt: u64) -> String {
    format!("1002360C{pkh:012}6002360C{bpnt:012}")
}

/// The response to `req` with `code`, MAC'd when the terminal uses a MAC.
pub fn answer(
    req: &Message<Bytes>,
    term: Option<&Terminal>,
    code: &[u8; 2],
    added: Added<'_>,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(256);
    match term.and_then(|t| t.mac_key.as_ref()) {
        Some(k) => respond(
            req,
            code,
            added,
            Some(&|m: &[u8]| compute_mac(k, m)),
            &mut out,
        ),
        None => respond(req, code, added, None, &mut out),
    }
    out
}

/// Build the response from the ledger's durable answer.
pub fn from_done(req: &Message<Bytes>, term: Option<&Terminal>, done: &Done) -> BytesMut {
    let code = done.reply.code;
    let de39 = code.de39().as_bytes();
    let code2 = [de39[0], de39[1]];
    let approval = done.reply.approval.map(|a| a.0);
    let de44 = code.de44();
    let de54 = match (
        op_of(req.processing_code().unwrap_or_default()),
        done.reply.balances,
    ) {
        (Op::Inquiry, Some(b)) if req.mti() == b"0200" && de39 == b"00" => {
            Some(balances_de54(b.pkh, b.bpnt))
        }
        _ => None,
    };
    let approval = if de39 == b"00" && req.mti() == b"0200" {
        approval
    } else {
        None
    };
    let added = Added {
        approval: approval.as_ref(),
        response_data: de44.as_ref().map(|d| d.as_bytes()),
        balances: de54.as_deref().map(str::as_bytes),
    };
    answer(req, term, &code2, added)
}

/// What [`decide`] made of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answer now with this code.
    Answer([u8; 2]),
    /// Queue this command to the card's bank.
    Submit(BankCode, Command),
}

impl Issuer {
    fn decide(&self, req: &Message<Bytes>, term: Option<&Terminal>) -> Decision {
        decide(&self.registry, self.rule_set, req, term)
    }
}

/// The pure part of authorization: INTERFACE §5 steps 1–4 on a validated
/// request, the PIN turned into its PVV, and the ledger command for the
/// card's bank, or the code to answer at once. No I/O and no clock, so the
/// deterministic simulation (`crate::dst`) drives exactly this code.
pub fn decide(
    registry: &Registry,
    rule_set: RuleSet,
    req: &Message<Bytes>,
    term: Option<&Terminal>,
) -> Decision {
    let mti = req.mti();
    let reversal = mti != b"0200";
    let field = |n| req.get(n).unwrap_or_default();
    // Step 1 (rest): the basket, on BPNT purchases under food-only.
    let op = op_of(field(de::PROCESSING_CODE));
    let mut precheck = Precheck::Passed;
    if !reversal && op == Op::Purchase(Program::Bpnt) && rule_set == RuleSet::FoodOnly {
        let Some(de48) = req.basket() else {
            return Decision::Answer(*b"30");
        };
        match check_basket(de48, &FOOD_ONLY_ALLOWED) {
            Err(_) => return Decision::Answer(*b"30"),
            Ok(b) => {
                if let Some(item) = b.first_ineligible {
                    precheck = Precheck::Ineligible { item };
                } else if Some(b.total) != req.amount() {
                    precheck = Precheck::BadAmount;
                }
            }
        }
    }
    // Step 2: MAC, for terminals that use one.
    if let Some(key) = term.and_then(|t| t.mac_key.as_ref()) {
        let bytes = req.bytes();
        let ok = match req.mac() {
            Some((_, mac))
                if bytes.len() >= 8
                    && std::ptr::eq(mac.as_ptr(), bytes[bytes.len() - 8..].as_ptr()) =>
            {
                verify_mac(key, &bytes[..bytes.len() - 8], mac)
            }
            _ => false,
        };
        if !ok {
            return Decision::Answer(*b"63");
        }
    }
    // Step 3: the terminal.
    let Some(t) = term else {
        return Decision::Answer(*b"03");
    };
    // Step 4: BIN, then Luhn.
    let pan_digits = field(de::PAN);
    let Some(bank) = Bank::from_bin(std::str::from_utf8(pan_digits).unwrap_or("")) else {
        return Decision::Answer(*b"92");
    };
    let pan = match Pan::parse(pan_digits) {
        Ok(p) => p,
        Err(PanError::Luhn) | Err(_) => return Decision::Answer(*b"14"),
    };
    let Some(lpan) = LedgerPan::from_digits(pan.digits()) else {
        return Decision::Answer(*b"14");
    };
    let acquirer = acquirer11(field(de::ACQUIRER));
    let class = &mti[..3];
    let key = request_key(
        class,
        &acquirer,
        field(de::TERMINAL),
        field(de::STAN),
        field(de::TRANSMISSION),
    );
    let request = Request {
        key,
        fingerprint: fingerprint(req),
    };
    let issuer = BankCode(bank.code_number());
    let amount = req.amount().unwrap_or(0);
    if reversal {
        let Some(o) = req.original() else {
            return Decision::Answer(*b"30");
        };
        let original = request_key(
            &o.mti[..3],
            &o.acquirer,
            field(de::TERMINAL),
            &o.stan,
            &o.transmission,
        );
        return Decision::Submit(
            issuer,
            Command::Reversal(Reversal {
                request,
                original,
                pan: lpan,
                amount,
            }),
        );
    }
    if field(de::CURRENCY) != b"360" && matches!(precheck, Precheck::Passed) {
        precheck = Precheck::BadAmount;
    }
    // Steps 5–6 happen in the ledger; here the PIN becomes its PVV.
    let pin = match (req.pin_block(), registry.pvk(bank.code_number())) {
        (Some(block), Some(pvk)) => decode_pin(block, &pan, &t.pin_key)
            .ok()
            .map(|p| Pvv(pin_verification_value(pvk, &pan, &p))),
        _ => None,
    };
    let acceptor = Acceptor {
        kind: t.kind,
        bank: BankCode(t.bank.code_number()),
        merchant: t.merchant,
    };
    let cmd = match op {
        Op::Purchase(wallet) => Command::Purchase(Payment {
            request,
            wallet,
            pan: lpan,
            amount,
            acceptor,
            pin,
            precheck,
        }),
        Op::Withdrawal(wallet) => Command::Withdrawal(Payment {
            request,
            wallet,
            pan: lpan,
            amount,
            acceptor,
            pin,
            precheck,
        }),
        Op::Inquiry => Command::BalanceInquiry(Inquiry {
            request,
            pan: lpan,
            acceptor,
            pin,
            precheck,
        }),
        Op::Unsupported => Command::BalanceInquiry(Inquiry {
            request,
            pan: lpan,
            acceptor,
            pin,
            precheck: Precheck::Unsupported,
        }),
    };
    Decision::Submit(issuer, cmd)
}

/// Fault hook for the test suite, compiled into debug builds only: a
/// request whose DE11 equals `KKS_FAULT_INTERNAL_STAN` is answered 96
/// (internal error) with nothing applied, as a real internal failure would be.
#[cfg(debug_assertions)]
fn injected_internal_error<B: AsRef<[u8]>>(req: &Message<B>) -> bool {
    static STAN: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    let stan = STAN.get_or_init(|| {
        std::env::var("KKS_FAULT_INTERNAL_STAN")
            .ok()
            .map(String::into_bytes)
    });
    matches!((stan, req.stan()), (Some(s), Some(r)) if s.as_slice() == r)
}

/// A wire request queued to its bank: the response is encoded from the
/// ledger's answer on the bank's task and sent by the committer once it is
/// durable ([`Respond`]).
struct WireAnswer {
    req: Message<Bytes>,
    registry: Arc<Registry>,
    sink: Sink,
    prepared: Option<BytesMut>,
}

impl Respond for WireAnswer {
    fn prepare(&mut self, done: &Done) {
        let term = terminal_of(&self.registry, &self.req);
        self.prepared = Some(from_done(&self.req, term, done));
    }

    fn complete(self: Box<Self>, durable: bool) {
        let WireAnswer {
            req,
            registry,
            sink,
            prepared,
        } = *self;
        let resp = match prepared {
            Some(resp) if durable => resp,
            _ => answer(&req, terminal_of(&registry, &req), b"91", Added::default()),
        };
        sink.send(resp);
    }
}

/// The registered terminal a request names (DE41 + DE42).
fn terminal_of<'r>(registry: &'r Registry, req: &Message<Bytes>) -> Option<&'r Terminal> {
    registry.terminal(
        req.terminal_id().unwrap_or_default(),
        req.merchant_id().unwrap_or_default(),
    )
}

impl Authorizer for Issuer {
    fn reject(&self, req: &Message<Bytes>, code: &[u8; 2]) -> BytesMut {
        answer(
            req,
            terminal_of(&self.registry, req),
            code,
            Added::default(),
        )
    }

    async fn authorize(&self, req: Message<Bytes>, sink: &mut Option<Sink>) -> Reply {
        let term = terminal_of(&self.registry, &req);
        #[cfg(debug_assertions)]
        if injected_internal_error(&req) {
            tracing::error!(stan = %req.get_str(de::STAN).unwrap_or("-"), "internal error (injected by KKS_FAULT_INTERNAL_STAN); nothing applied");
            return Reply::Now(answer(&req, term, b"96", Added::default()));
        }
        match self.decide(&req, term) {
            Decision::Answer(code) => Reply::Now(answer(&req, term, &code, Added::default())),
            Decision::Submit(bank, cmd) => match sink.take() {
                Some(sink) => {
                    let answer = WireAnswer {
                        req,
                        registry: self.registry.clone(),
                        sink,
                        prepared: None,
                    };
                    self.shards.submit_to(bank, cmd, Box::new(answer)).await;
                    Reply::Taken
                }
                // No connection to answer through: wait on a ticket.
                None => match self.shards.submit(bank, cmd).await {
                    Err(_) => Reply::Now(answer(&req, term, b"91", Added::default())),
                    Ok(ticket) => {
                        let registry = self.registry.clone();
                        Reply::Later(Box::pin(async move {
                            let term = terminal_of(&registry, &req);
                            match ticket.await {
                                Ok(Ok(done)) => from_done(&req, term, &done),
                                _ => answer(&req, term, b"91", Added::default()),
                            }
                        }))
                    }
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalize_the_acquirer() {
        let a = request_key(
            b"020",
            &acquirer11(b"002"),
            b"AG000001",
            b"000102",
            b"1125083000",
        );
        let b = request_key(
            b"020",
            &acquirer11(b"00000000002"),
            b"AG000001",
            b"000102",
            b"1125083000",
        );
        assert_eq!(a, b);
        assert_eq!(a.as_bytes(), b"02000000000002AG0000010001021125083000");
    }

    #[test]
    fn de54_layout() {
        let s = balances_de54(75_000_000, 20_000_000);
        assert_eq!(s, "1002360C0000750000006002360C000020000000");
        assert_eq!(s.len(), 40);
    }

    #[test]
    fn processing_codes() {
        assert_eq!(op_of(b"000000"), Op::Purchase(Program::Bpnt));
        assert_eq!(op_of(b"006000"), Op::Purchase(Program::Bpnt));
        assert_eq!(op_of(b"001000"), Op::Purchase(Program::Pkh));
        assert_eq!(op_of(b"011000"), Op::Withdrawal(Program::Pkh));
        assert_eq!(op_of(b"016000"), Op::Withdrawal(Program::Bpnt));
        assert_eq!(op_of(b"310000"), Op::Inquiry);
        assert_eq!(op_of(b"200000"), Op::Unsupported);
    }
}
