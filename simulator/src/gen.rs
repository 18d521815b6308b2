//! The request stream: what each cardholder does next (drawn from the seed
//! in a fixed order) and how a terminal encodes it (INTERFACE §2–§4, §6),
//! with the project's own codec (`Builder`) and crypto (ISO-0 PIN blocks,
//! HMAC MACs).

use crate::population::{Card, Population, Terminal};
use crate::rng::Rng;
use crate::scenario::Mix;
use bytes::BytesMut;
use kks_switch::crypto::{compute_mac, encrypt_pin_block, Pin};
use kks_switch::iso8583::{Builder, Message};

/// What a request is, for statistics and expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    BalanceInquiry = 0,
    BpntPurchase = 1,
    PkhWithdrawal = 2,
    PkhPurchase = 3,
    WrongPin = 4,
    Retransmission = 5,
    Reversal = 6,
    SignOn = 7,
}

pub const KINDS: [Kind; 8] = [
    Kind::BalanceInquiry,
    Kind::BpntPurchase,
    Kind::PkhWithdrawal,
    Kind::PkhPurchase,
    Kind::WrongPin,
    Kind::Retransmission,
    Kind::Reversal,
    Kind::SignOn,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::BalanceInquiry => "balance_inquiry",
            Kind::BpntPurchase => "bpnt_purchase",
            Kind::PkhWithdrawal => "pkh_withdrawal",
            Kind::PkhPurchase => "pkh_purchase",
            Kind::WrongPin => "wrong_pin",
            Kind::Retransmission => "retransmission",
            Kind::Reversal => "reversal",
            Kind::SignOn => "sign_on",
        }
    }

    /// DE3 of the request.
    pub fn de3(self) -> &'static [u8; 6] {
        match self {
            Kind::BalanceInquiry | Kind::WrongPin => b"310000",
            Kind::BpntPurchase => b"000000",
            Kind::PkhWithdrawal => b"010000",
            Kind::PkhPurchase => b"001000",
            _ => b"000000",
        }
    }

    /// Moves money off the card when approved.
    pub fn is_debit(self) -> bool {
        matches!(
            self,
            Kind::BpntPurchase | Kind::PkhWithdrawal | Kind::PkhPurchase
        )
    }

    pub fn is_withdrawal(self) -> bool {
        self == Kind::PkhWithdrawal
    }
}

/// What the answer should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// 00, or a business decline (51, 61, 65, …).
    Approve,
    /// 57: a basket with an item BPNT does not allow.
    Ineligible,
    /// 55: a wrong PIN.
    WrongPin,
}

/// How an answer counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// What was expected (an approval, or the expected decline).
    Ok,
    /// A business decline a real cardholder meets (51, 61, 65, 62, 75).
    Decline,
    /// Not what a correct host answers to this request.
    Error,
}

/// Codes that are never right for what the simulator sends.
const ERROR_CODES: [&[u8; 2]; 11] = [
    b"30", b"63", b"03", b"92", b"14", b"12", b"58", b"13", b"91", b"96", b"94",
];

pub fn classify(expect: Expect, code: &[u8]) -> Outcome {
    if ERROR_CODES.iter().any(|c| &c[..] == code) {
        return Outcome::Error;
    }
    match (expect, code) {
        (Expect::Approve, b"00") => Outcome::Ok,
        (Expect::Approve, b"57" | b"55") => Outcome::Error,
        (Expect::Ineligible, b"57") => Outcome::Ok,
        (Expect::WrongPin, b"55") => Outcome::Ok,
        (_, b"00") => Outcome::Error,
        (_, b"51" | b"61" | b"65" | b"62" | b"75") => Outcome::Decline,
        _ => Outcome::Error,
    }
}

/// Flags on a generated request.
pub const F_INJECT_TIMEOUT: u8 = 1;
pub const F_RETRANSMIT: u8 = 2;

/// One generated request (before encoding).
#[derive(Clone, Copy, Debug)]
pub struct Req {
    pub kind: Kind,
    pub expect: Expect,
    pub flags: u8,
    pub card: u32,
    pub term: u32,
    pub stan: u32,
    pub amount: u64,
    pub de7: [u8; 10],
    /// STAN of the reversal an injected timeout sends (drawn with the stream).
    pub rev_stan: u32,
    /// Index of the basket in the generator's basket scratch (BPNT only).
    pub basket_len: u8,
    pub basket: [Item; BASKET_ITEMS_MAX],
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Item {
    pub code: [u8; 4],
    pub qty: u16,
    pub amount: u64,
}

/// Most items the generator puts in one basket.
pub const BASKET_ITEMS_MAX: usize = 6;

/// Food BPNT allows (INTERFACE §4), weight in baskets, price per unit (Rp),
/// and the quantities people buy.
const FOOD: [(&[u8; 4], f64, u64, &[u16]); 12] = [
    (b"BRAS", 35.0, 13_000, &[5, 10]),
    (b"TELR", 20.0, 28_000, &[1, 2]),
    (b"AYAM", 8.0, 38_000, &[1]),
    (b"IKAN", 6.0, 35_000, &[1]),
    (b"TEMP", 6.0, 6_000, &[1, 2, 3]),
    (b"TAHU", 6.0, 5_000, &[1, 2, 3]),
    (b"SAYR", 6.0, 8_000, &[1, 2, 3]),
    (b"BUAH", 4.0, 15_000, &[1, 2]),
    (b"KCNG", 4.0, 25_000, &[1]),
    (b"DSAP", 2.0, 130_000, &[1]),
    (b"JAGG", 2.0, 8_000, &[1, 2, 3]),
    (b"SAGU", 1.0, 12_000, &[1, 2]),
];
/// Known items BPNT never allows, with a unit price.
const NOT_FOOD: [(&[u8; 4], u64); 7] = [
    (b"MNYK", 18_000),
    (b"GULA", 17_000),
    (b"TPNG", 12_000),
    (b"SUSU", 25_000),
    (b"MIEI", 3_500),
    (b"ROKK", 30_000),
    (b"KLNG", 20_000),
];
/// Cash withdrawal amounts (Rp) and their weights.
const CASH: [(u64, f64); 6] = [
    (100_000, 20.0),
    (150_000, 10.0),
    (200_000, 25.0),
    (250_000, 10.0),
    (300_000, 20.0),
    (500_000, 15.0),
];
/// Rupiah to DE4 minor units (2 implied decimals).
const MINOR: u64 = 100;

/// Draws the request stream.
pub struct Generator {
    rng: Rng,
    mix: Mix,
    weights: [f64; 5],
    food_w: Vec<f64>,
    cash_w: Vec<f64>,
    /// Candidate cards per operation.
    any: Vec<u32>,
    bpnt: Vec<u32>,
    pkh_agent: Vec<u32>,
    pkh_ewarong: Vec<u32>,
    /// A wrong-PIN attempt is followed by the right PIN on the same card.
    queued: Option<Req>,
}

impl Generator {
    pub fn new(pop: &Population, mix: &Mix, seed: u64) -> Generator {
        let resp = mix.respect_enrolment;
        let pick = |f: &dyn Fn(&Card) -> bool| -> Vec<u32> {
            pop.cards
                .iter()
                .enumerate()
                .filter(|(_, c)| f(c))
                .map(|(i, _)| i as u32)
                .collect()
        };
        let any = pick(&|c| c.home_ewarong.is_some() || c.home_agent.is_some());
        let bpnt = pick(&|c| c.home_ewarong.is_some() && (c.bpnt || !resp));
        let pkh_agent = pick(&|c| c.home_agent.is_some() && (c.pkh || !resp));
        let pkh_ewarong = pick(&|c| c.home_ewarong.is_some() && (c.pkh || !resp));
        let mut weights = [
            mix.balance_inquiry,
            mix.bpnt_purchase,
            mix.pkh_withdrawal,
            mix.pkh_purchase,
            mix.wrong_pin,
        ];
        // An operation no card can do is dropped from the mix.
        for (w, list) in weights
            .iter_mut()
            .zip([&any, &bpnt, &pkh_agent, &pkh_ewarong, &any])
        {
            if list.is_empty() {
                *w = 0.0;
            }
        }
        Generator {
            rng: Rng::new(seed),
            mix: mix.clone(),
            weights,
            food_w: FOOD.iter().map(|f| f.1).collect(),
            cash_w: CASH.iter().map(|c| c.1).collect(),
            any,
            bpnt,
            pkh_agent,
            pkh_ewarong,
            queued: None,
        }
    }

    /// Whether any operation is possible with this population.
    pub fn possible(&self) -> bool {
        self.weights.iter().sum::<f64>() > 0.0
    }

    /// The next request; `de7` is the transmission time to stamp on it.
    /// STANs come from the terminals in generation order.
    pub fn next(&mut self, pop: &mut Population, de7: [u8; 10]) -> Req {
        if let Some(mut q) = self.queued.take() {
            q.stan = pop.terminals[q.term as usize].next_stan();
            q.de7 = de7;
            return q;
        }
        let r = &mut self.rng;
        let op = r.weighted(&self.weights);
        let mut req = Req {
            kind: Kind::BalanceInquiry,
            expect: Expect::Approve,
            flags: 0,
            card: 0,
            term: 0,
            stan: 0,
            amount: 0,
            de7,
            rev_stan: 0,
            basket_len: 0,
            basket: [Item::default(); BASKET_ITEMS_MAX],
        };
        let draw = |r: &mut Rng, l: &[u32]| l[r.below(l.len() as u64) as usize];
        match op {
            0 | 4 => {
                let card = draw(r, &self.any);
                let c = &pop.cards[card as usize];
                let at_agent = match (c.home_ewarong, c.home_agent) {
                    (Some(_), Some(_)) => r.chance(0.5),
                    (None, _) => true,
                    _ => false,
                };
                req.card = card;
                req.term = if at_agent {
                    c.home_agent
                } else {
                    c.home_ewarong
                }
                .unwrap_or(0);
                if op == 4 {
                    req.kind = Kind::WrongPin;
                    req.expect = Expect::WrongPin;
                    let mut again = req;
                    again.kind = Kind::BalanceInquiry;
                    again.expect = Expect::Approve;
                    self.queued = Some(again);
                }
            }
            1 => {
                let card = draw(r, &self.bpnt);
                req.kind = Kind::BpntPurchase;
                req.card = card;
                req.term = pop.cards[card as usize].home_ewarong.unwrap_or(0);
                let n = 1 + r.weighted(&[30.0, 35.0, 20.0, 10.0, 5.0]);
                let mut taken = [false; FOOD.len()];
                let mut len = 0usize;
                for _ in 0..n {
                    let i = r.weighted(&self.food_w);
                    if taken[i] {
                        continue;
                    }
                    taken[i] = true;
                    let (code, _, price, qtys) = FOOD[i];
                    let qty = qtys[r.below(qtys.len() as u64) as usize];
                    req.basket[len] = Item {
                        code: *code,
                        qty,
                        amount: price * qty as u64 * MINOR,
                    };
                    len += 1;
                }
                if r.chance(self.mix.ineligible_share) {
                    let (code, price) = NOT_FOOD[r.below(NOT_FOOD.len() as u64) as usize];
                    let at = r.below(len as u64 + 1) as usize;
                    req.basket.copy_within(at..len, at + 1);
                    req.basket[at] = Item {
                        code: *code,
                        qty: 1,
                        amount: price * MINOR,
                    };
                    len += 1;
                    req.expect = Expect::Ineligible;
                }
                req.basket_len = len as u8;
                req.amount = req.basket[..len].iter().map(|i| i.amount).sum();
            }
            2 => {
                let card = draw(r, &self.pkh_agent);
                req.kind = Kind::PkhWithdrawal;
                req.card = card;
                req.term = pop.cards[card as usize].home_agent.unwrap_or(0);
                req.amount = CASH[r.weighted(&self.cash_w)].0 * MINOR;
            }
            _ => {
                let card = draw(r, &self.pkh_ewarong);
                req.kind = Kind::PkhPurchase;
                req.card = card;
                req.term = pop.cards[card as usize].home_ewarong.unwrap_or(0);
                req.amount = (20_000 + 5_000 * r.below(17)) * MINOR;
            }
        }
        // Follow-up behaviour, drawn for every request so that the stream
        // does not depend on which branch was taken.
        let u = r.unit();
        if req.kind != Kind::WrongPin && req.expect == Expect::Approve {
            if req.kind.is_debit() && u < self.mix.timeout_share {
                req.flags |= F_INJECT_TIMEOUT;
            } else if u >= self.mix.timeout_share
                && u < self.mix.timeout_share + self.mix.retransmit_share
            {
                req.flags |= F_RETRANSMIT;
            }
        }
        let t = &mut pop.terminals[req.term as usize];
        req.stan = t.next_stan();
        if req.flags & F_INJECT_TIMEOUT != 0 {
            req.rev_stan = t.next_stan();
        }
        req
    }
}

#[inline]
fn put_num(out: &mut BytesMut, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    for i in (0..width).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

#[inline]
fn num<const W: usize>(mut v: u64) -> [u8; W] {
    let mut buf = [b'0'; W];
    for i in (0..W).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf
}

/// The ISO-0 PIN block of `card` at `term` (right PIN cached per home
/// terminal; a wrong PIN is the right one with its last digit changed).
fn pin_block(card: &mut Card, term: &Terminal, term_idx: u32, wrong: bool) -> [u8; 8] {
    if wrong {
        let mut d = card.pin.digits().to_vec();
        if let Some(last) = d.last_mut() {
            *last = b'0' + (*last - b'0' + 1) % 10;
        }
        let pin = Pin::new(&d).expect("a PIN with one digit changed is a PIN");
        return encrypt_pin_block(&pin, &card.pan, &term.pin_key);
    }
    let slot = if card.home_agent == Some(term_idx) {
        &mut card.block_agent
    } else if card.home_ewarong == Some(term_idx) {
        &mut card.block_ewarong
    } else {
        return encrypt_pin_block(&card.pin, &card.pan, &term.pin_key);
    };
    *slot.get_or_insert_with(|| encrypt_pin_block(&card.pin, &card.pan, &term.pin_key))
}

/// Start a 2b frame: returns where the header goes.
#[inline]
fn begin_frame(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

#[inline]
fn end_frame(out: &mut BytesMut, at: usize) {
    let len = out.len() - at - 2;
    out[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
}

fn finish(b: Builder<'_>, term: &Terminal) {
    match &term.mac_key {
        Some(k) => b
            .finish_with_mac(|m| compute_mac(k, m))
            .expect("MAC field comes last"),
        None => b.finish(),
    }
}

/// Append `req` as a framed (2b) 0200 to `out`; returns the message's
/// range in `out` (without the header), for retransmissions.
pub fn encode_0200(req: &Req, pop: &mut Population, out: &mut BytesMut) -> std::ops::Range<usize> {
    let at = begin_frame(out);
    let term = &pop.terminals[req.term as usize];
    let card = &mut pop.cards[req.card as usize];
    let block = pin_block(card, term, req.term, req.kind == Kind::WrongPin);
    let stan = num::<6>(req.stan as u64);
    let mut basket = [0u8; BASKET_ITEMS_MAX * 20];
    let mut blen = 0;
    for it in &req.basket[..req.basket_len as usize] {
        basket[blen..blen + 4].copy_from_slice(&it.code);
        basket[blen + 4..blen + 8].copy_from_slice(&num::<4>(it.qty as u64));
        basket[blen + 8..blen + 20].copy_from_slice(&num::<12>(it.amount));
        blen += 20;
    }
    let mut b = Builder::new(out, b"0200");
    let e = "fields fit the table";
    b.field(2, card.pan.digits()).expect(e);
    b.field(3, req.kind.de3()).expect(e);
    b.field(4, &num::<12>(req.amount)).expect(e);
    b.field(7, &req.de7).expect(e);
    b.field(11, &stan).expect(e);
    b.field(12, &req.de7[4..]).expect(e);
    b.field(13, &req.de7[..4]).expect(e);
    b.field(18, &term.mcc).expect(e);
    b.field(32, term.bank.code().as_bytes()).expect(e);
    b.field(41, &term.tid).expect(e);
    b.field(42, &term.mid).expect(e);
    if blen > 0 {
        b.field(48, &basket[..blen]).expect(e);
    }
    b.field(49, b"360").expect(e);
    b.field(52, &block).expect(e);
    finish(b, term);
    end_frame(out, at);
    at + 2..out.len()
}

/// What a reversal needs to name its original.
#[derive(Clone, Copy, Debug)]
pub struct Original {
    pub kind: Kind,
    pub card: u32,
    pub term: u32,
    pub stan: u32,
    pub amount: u64,
    pub de7: [u8; 10],
}

impl From<&Req> for Original {
    fn from(r: &Req) -> Self {
        Original {
            kind: r.kind,
            card: r.card,
            term: r.term,
            stan: r.stan,
            amount: r.amount,
            de7: r.de7,
        }
    }
}

/// Append a framed reversal (`mti` 0400 or 0401) of `orig` with its own
/// STAN and DE7 (INTERFACE §3: DE90 names the original).
pub fn encode_reversal(
    orig: &Original,
    mti: &[u8; 4],
    stan: u32,
    de7: &[u8; 10],
    pop: &Population,
    out: &mut BytesMut,
) {
    let at = begin_frame(out);
    let term = &pop.terminals[orig.term as usize];
    let card = &pop.cards[orig.card as usize];
    let mut de90 = [b'0'; 42];
    de90[..4].copy_from_slice(b"0200");
    de90[4..10].copy_from_slice(&num::<6>(orig.stan as u64));
    de90[10..20].copy_from_slice(&orig.de7);
    de90[20..31].copy_from_slice(&num::<11>(term.bank.code_number() as u64));
    let mut b = Builder::new(out, mti);
    let e = "fields fit the table";
    b.field(2, card.pan.digits()).expect(e);
    b.field(3, orig.kind.de3()).expect(e);
    b.field(4, &num::<12>(orig.amount)).expect(e);
    b.field(7, de7).expect(e);
    b.field(11, &num::<6>(stan as u64)).expect(e);
    b.field(32, term.bank.code().as_bytes()).expect(e);
    b.field(41, &term.tid).expect(e);
    b.field(42, &term.mid).expect(e);
    b.field(49, b"360").expect(e);
    b.field(90, &de90).expect(e);
    finish(b, term);
    end_frame(out, at);
}

/// Append a framed 0800 sign-on (DE70 001; never MAC'd).
pub fn encode_sign_on(stan: u32, de7: &[u8; 10], out: &mut BytesMut) {
    let at = begin_frame(out);
    let mut b = Builder::new(out, b"0800");
    b.field(7, de7).expect("DE7");
    b.field(11, &num::<6>(stan as u64)).expect("DE11");
    b.field(70, b"001").expect("DE70");
    b.finish();
    end_frame(out, at);
}

/// DE7 (MMDDhhmmss, UTC) for a Unix time in seconds.
pub fn de7_at(unix_secs: u64) -> [u8; 10] {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let mut out = BytesMut::with_capacity(10);
    put_num(&mut out, m, 2);
    put_num(&mut out, d, 2);
    put_num(&mut out, rem / 3600, 2);
    put_num(&mut out, rem / 60 % 60, 2);
    put_num(&mut out, rem % 60, 2);
    let mut a = [0u8; 10];
    a.copy_from_slice(&out);
    a
}

/// A parsed answer: the fields the simulator reads.
pub struct Answer<'a> {
    pub mti: &'a [u8],
    pub stan: u32,
    pub tid: Option<[u8; 8]>,
    pub code: [u8; 2],
    pub approval: [u8; 6],
}

/// Read MTI, DE11, DE41, DE39, DE38 of an answer; `None` if it lacks them.
pub fn read_answer<'a>(m: &'a Message<&'a [u8]>) -> Option<Answer<'a>> {
    let stan = m.get_u64(11)? as u32;
    let tid = m.get(41).and_then(|t| <[u8; 8]>::try_from(t).ok());
    let code = m.get(39).and_then(|c| <[u8; 2]>::try_from(c).ok())?;
    let mut approval = [b' '; 6];
    if let Some(a) = m.get(38) {
        let n = a.len().min(6);
        approval[..n].copy_from_slice(&a[..n]);
    }
    Some(Answer {
        mti: m.mti(),
        stan,
        tid,
        code,
        approval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn de7_known_date() {
        // 2026-01-15 08:30:00 UTC
        assert_eq!(&de7_at(1_768_465_800), b"0115083000");
    }

    #[test]
    fn classify_codes() {
        assert_eq!(classify(Expect::Approve, b"00"), Outcome::Ok);
        assert_eq!(classify(Expect::Approve, b"51"), Outcome::Decline);
        assert_eq!(classify(Expect::Approve, b"96"), Outcome::Error);
        assert_eq!(classify(Expect::Ineligible, b"00"), Outcome::Error);
        assert_eq!(classify(Expect::Ineligible, b"57"), Outcome::Ok);
        assert_eq!(classify(Expect::WrongPin, b"55"), Outcome::Ok);
        assert_eq!(classify(Expect::Approve, b"55"), Outcome::Error);
    }
}
