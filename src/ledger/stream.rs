//! Checkpoint bodies written and read piece by piece.
//!
//! Why: a bank of millions of cards has a checkpoint body of about a
//! gigabyte. Encoding it whole at shutdown ([`Ledger::snapshot_ref`]) or
//! reading it whole at start-up (every bank at once, then a whole
//! [`Snapshot`](super::Snapshot) decoded from it) held that gigabyte on top
//! of the ledger itself. [`BodyPieces`] writes the same bytes a record at a
//! time into pieces of a chosen size, and [`BodyReader`] reads them back a
//! piece at a time into a [`LedgerBuilder`], keeping only the record a piece
//! boundary cut in two. Either way at most a piece or two of the body is in
//! memory.
//!
//! The body is exactly `postcard::to_stdvec(&ledger.snapshot())`: the
//! [`Snapshot`](super::Snapshot) fields in order (config, counters,
//! accounts, cards, keys, marks), each list as a varint length and its
//! items. Checkpoints written before marks existed end after the keys; the
//! reader takes both.

use serde::Serialize;

use super::config::LedgerConfig;
use super::machine::{Ledger, ACCOUNTS_MAX};
use super::snapshot::{Counters, InvariantViolation, LedgerBuilder};
use super::state::{KeyRecord, Marks};
use super::types::{BankCode, RequestKey};

/// Why a checkpoint body could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// A record did not serialize, or the ledger's record accessors
    /// disagreed with its counts (the body would not read back).
    #[error("checkpoint encoding: {0}")]
    Encode(String),
    /// The bytes are not a checkpoint body. `at` is the offset in the body
    /// of the record (or length) that failed.
    #[error("checkpoint body at byte {at}: {what}")]
    Corrupt { at: u64, what: String },
    /// The records decode but break an invariant.
    #[error(transparent)]
    Invariant(#[from] InvariantViolation),
}

/// Appends what postcard writes to a `Vec`, a slice at a time where it can
/// (`to_extend` pushes byte by byte).
struct Append<'v>(&'v mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends one record (or list length) as postcard writes it inside the
/// whole body: a struct's fields are its items concatenated, so record by
/// record gives the same bytes.
fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), BodyError> {
    postcard::serialize_with_flavor(value, Append(out))
        .map_err(|e| BodyError::Encode(e.to_string()))
}

/// Where [`BodyPieces`] is in the body.
enum Part {
    /// Config, counters and the accounts' count next.
    Head,
    /// Account `i` next.
    Accounts(usize),
    /// Card `i` next.
    Cards(usize),
    /// The next key (the iterator's).
    Keys,
    /// Card `i`'s marks next.
    Marks(usize),
    Done,
}

/// A ledger's checkpoint body, produced in pieces: each call to
/// [`BodyPieces::next_piece`] encodes records until the piece is full, so
/// only the piece (and the part of one record that spilled past its end)
/// is held, never the body. The ledger is borrowed, so it cannot change
/// while its body is written.
pub struct BodyPieces<'a> {
    ledger: &'a Ledger,
    part: Part,
    accounts: usize,
    cards: usize,
    /// The accounts in id order ([`Ledger::account_records`]: one pass,
    /// where looking each wallet account up by id would search the cards).
    account_records: Box<dyn Iterator<Item = super::state::Account> + 'a>,
    keys: Box<dyn Iterator<Item = (&'a RequestKey, &'a KeyRecord)> + 'a>,
    /// Keys the body's length prefix promised and not yet written.
    keys_left: usize,
    /// Encoded bytes past the end of the last piece: `spill[spilled..]`.
    spill: Vec<u8>,
    spilled: usize,
}

impl<'a> BodyPieces<'a> {
    /// The body of `ledger`'s checkpoint, from its start.
    pub fn new(ledger: &'a Ledger) -> BodyPieces<'a> {
        BodyPieces {
            ledger,
            part: Part::Head,
            accounts: ledger.account_count(),
            cards: ledger.card_count(),
            account_records: Box::new(ledger.account_records()),
            keys: Box::new(ledger.keys()),
            keys_left: ledger.keys_len(),
            spill: Vec::new(),
            spilled: 0,
        }
    }

    /// Replaces `out` with the next `target` bytes of the body (fewer only
    /// for the last piece). Returns false, with `out` empty, once the whole
    /// body has been given. Pieces are exactly `target` bytes so that piece
    /// `n` starts at byte `n × target` whatever the record sizes.
    pub fn next_piece(&mut self, out: &mut Vec<u8>, target: usize) -> Result<bool, BodyError> {
        let target = target.max(1);
        out.clear();
        let from_spill = (self.spill.len() - self.spilled).min(target);
        out.extend_from_slice(&self.spill[self.spilled..self.spilled + from_spill]);
        self.spilled += from_spill;
        if self.spilled < self.spill.len() {
            // A record longer than a piece: the piece is full already.
            return Ok(true);
        }
        self.spill.clear();
        self.spilled = 0;
        while out.len() < target && self.encode_next(out)? {}
        if out.len() > target {
            self.spill.extend_from_slice(&out[target..]);
            out.truncate(target);
        }
        Ok(!out.is_empty())
    }

    /// Appends the next record (or list length) to `out`; false at the end.
    fn encode_next(&mut self, out: &mut Vec<u8>) -> Result<bool, BodyError> {
        let missing = |what: &str, i: usize| BodyError::Encode(format!("{what} {i} missing"));
        match self.part {
            Part::Head => {
                put(out, self.ledger.config())?;
                put(out, &self.ledger.counters())?;
                put(out, &self.accounts)?;
                self.part = Part::Accounts(0);
            }
            Part::Accounts(i) if i < self.accounts => {
                let account = self
                    .account_records
                    .next()
                    .ok_or_else(|| missing("account", i))?;
                put(out, &account)?;
                self.part = Part::Accounts(i + 1);
            }
            Part::Accounts(_) => {
                put(out, &self.cards)?;
                self.part = Part::Cards(0);
            }
            Part::Cards(i) if i < self.cards => {
                let card = self
                    .ledger
                    .card_record(i)
                    .ok_or_else(|| missing("card", i))?;
                put(out, &card)?;
                self.part = Part::Cards(i + 1);
            }
            Part::Cards(_) => {
                put(out, &self.keys_left)?;
                self.part = Part::Keys;
            }
            Part::Keys => match (self.keys.next(), self.keys_left) {
                (Some(entry), 1..) => {
                    put(out, &entry)?;
                    self.keys_left -= 1;
                }
                (None, 0) => {
                    // The marks: one pair per card.
                    put(out, &self.cards)?;
                    self.part = Part::Marks(0);
                }
                (_, left) => {
                    return Err(BodyError::Encode(format!(
                        "the key count and the keys disagree ({left} left)"
                    )))
                }
            },
            Part::Marks(i) if i < self.cards => {
                let marks = self
                    .ledger
                    .card_marks(i)
                    .ok_or_else(|| missing("marks of card", i))?;
                put(out, &marks)?;
                self.part = Part::Marks(i + 1);
            }
            Part::Marks(_) => {
                self.part = Part::Done;
                return Ok(false);
            }
            Part::Done => return Ok(false),
        }
        Ok(true)
    }
}

/// The lists of a body, in order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum List {
    Accounts,
    Cards,
    Keys,
    Marks,
}

/// Where [`BodyReader`] is in the body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Config,
    Counters,
    /// The list's length next.
    Length(List),
    /// This many of the list's items next (more than zero).
    Items(List, usize),
    /// After the marks: nothing may follow.
    Done,
}

/// Fewest bytes one record of a list takes in a body, from the fields the
/// format has always had (an account: kind and balance; a card: its 32-byte
/// PVV and a dozen more fields; a key: its 16-byte fingerprint and ten more
/// fields). Only used to size what a list's length reserves: a corrupt
/// length then reserves no more than a small multiple of what can still
/// follow.
const fn record_bytes_min(list: List) -> u64 {
    match list {
        List::Accounts => 2,
        List::Cards => 48,
        List::Keys => 24,
        List::Marks => 4,
    }
}

/// How many bytes a record cut by a piece boundary is first tried with from
/// the next piece; then twice as many each time, so a record of `n` bytes
/// costs O(n) decoding however it was cut.
const RETRY_BYTES_MIN: usize = 4096;

/// The decoding state: everything but the bytes waiting for the rest of
/// their record.
struct Records {
    /// The body's length, as storage gave it.
    len: u64,
    /// Offset in the body of the next byte to decode.
    at: u64,
    /// When set, the bank the ledger is for, whatever the body says.
    bank: Option<BankCode>,
    stage: Stage,
    config: Option<LedgerConfig>,
    builder: Option<LedgerBuilder>,
    /// Cards read (marks are one pair per card).
    cards: usize,
}

impl Records {
    fn corrupt(&self, what: String) -> BodyError {
        BodyError::Corrupt { at: self.at, what }
    }

    /// Decodes as many whole records from the front of `bytes` as it holds;
    /// returns how many bytes they took. A record cut off at the end is not
    /// an error here: it is left for the next piece.
    fn decode(&mut self, bytes: &[u8]) -> Result<usize, BodyError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let before = rest.len();
            match self.step(&mut rest) {
                Ok(()) => self.at += (before - rest.len()) as u64,
                Err(Cut::Short) => break,
                Err(Cut::Bad(e)) => return Err(e),
            }
        }
        Ok(bytes.len() - rest.len())
    }

    /// Decodes the record the stage expects from the front of `rest`.
    fn step(&mut self, rest: &mut &[u8]) -> Result<(), Cut> {
        match self.stage {
            Stage::Config => {
                let mut config: LedgerConfig = take(rest, self.at)?;
                if let Some(bank) = self.bank {
                    config.bank = bank;
                }
                self.config = Some(config);
                self.stage = Stage::Counters;
            }
            Stage::Counters => {
                let counters: Counters = take(rest, self.at)?;
                let config = self
                    .config
                    .ok_or_else(|| self.corrupt("counters before the config".into()))?;
                self.builder = Some(LedgerBuilder::new(config, counters));
                self.stage = Stage::Length(List::Accounts);
            }
            Stage::Length(list) => {
                let n: usize = take(rest, self.at)?;
                self.start_list(list, n)?;
            }
            Stage::Items(list, left) => {
                let at = self.at;
                let Some(builder) = self.builder.as_mut() else {
                    return Err(self.corrupt("items before the counters".into()).into());
                };
                match list {
                    List::Accounts => builder.push_account(take(rest, at)?),
                    List::Cards => {
                        let card = take(rest, at)?;
                        self.cards += 1;
                        builder.push_card(card)
                    }
                    List::Keys => {
                        let (key, record): (RequestKey, KeyRecord) = take(rest, at)?;
                        builder.push_key(key, record)
                    }
                    List::Marks => builder.push_marks(take::<[Marks; 2]>(rest, at)?),
                }
                .map_err(BodyError::from)?;
                self.stage = if left > 1 {
                    Stage::Items(list, left - 1)
                } else {
                    next_after(list)
                };
            }
            Stage::Done => return Err(self.corrupt("bytes after the last list".into()).into()),
        }
        Ok(())
    }

    /// A list of `n` items starts (its length is at `at`).
    fn start_list(&mut self, list: List, n: usize) -> Result<(), BodyError> {
        // Every record takes at least a byte: a length beyond what can still
        // follow is corrupt, and no count is trusted with more memory than
        // the bytes left could fill.
        let left = self.len.saturating_sub(self.at);
        if n as u64 > left {
            return Err(self.corrupt(format!("{list:?}: {n} items, {left} bytes left")));
        }
        match list {
            List::Accounts | List::Cards if n > ACCOUNTS_MAX => {
                return Err(self.corrupt(format!("{list:?}: {n} items, over the maximum")))
            }
            List::Marks if n != 0 && n != self.cards => {
                return Err(self.corrupt(format!(
                    "credited periods for {n} cards, {} cards",
                    self.cards
                )))
            }
            _ => {}
        }
        let reserve = (n as u64).min(left / record_bytes_min(list)) as usize;
        if let Some(builder) = self.builder.as_mut() {
            match list {
                List::Accounts => builder.reserve(reserve, 0, 0),
                List::Cards => builder.reserve(0, reserve, 0),
                List::Keys => builder.reserve(0, 0, reserve),
                List::Marks => {}
            }
        }
        self.stage = if n == 0 {
            next_after(list)
        } else {
            Stage::Items(list, n)
        };
        Ok(())
    }
}

/// What follows the last item of `list`.
fn next_after(list: List) -> Stage {
    match list {
        List::Accounts => Stage::Length(List::Cards),
        List::Cards => Stage::Length(List::Keys),
        List::Keys => Stage::Length(List::Marks),
        List::Marks => Stage::Done,
    }
}

/// Why a record could not be decoded from the bytes at hand.
enum Cut {
    /// They end inside it: the rest is in the next piece (or, if there is
    /// none, the body is truncated).
    Short,
    /// It is not a valid record.
    Bad(BodyError),
}

impl From<BodyError> for Cut {
    fn from(e: BodyError) -> Cut {
        Cut::Bad(e)
    }
}

/// One value from the front of `rest` (at offset `at` of the body), which
/// then starts after it.
fn take<T: serde::de::DeserializeOwned>(rest: &mut &[u8], at: u64) -> Result<T, Cut> {
    match postcard::take_from_bytes::<T>(rest) {
        Ok((value, after)) => {
            *rest = after;
            Ok(value)
        }
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(Cut::Short),
        Err(e) => Err(Cut::Bad(BodyError::Corrupt {
            at,
            what: e.to_string(),
        })),
    }
}

/// Reads a checkpoint body fed a piece at a time (any split) into a
/// [`LedgerBuilder`]: whole records are decoded as they arrive, and only a
/// record cut by a piece boundary is kept until the rest of it comes, so
/// what is held besides the ledger being built is about one record (two
/// at worst while it is completed), not the body.
pub struct BodyReader {
    records: Records,
    /// The start of a record whose rest is in the next piece.
    tail: Vec<u8>,
    /// Bytes fed so far.
    fed: u64,
}

impl BodyReader {
    /// A reader for a body of `len` bytes (storage knows it before the
    /// first piece: list lengths are checked against what is left of it).
    pub fn new(len: u64) -> BodyReader {
        BodyReader {
            records: Records {
                len,
                at: 0,
                bank: None,
                stage: Stage::Config,
                config: None,
                builder: None,
                cards: 0,
            },
            tail: Vec::new(),
            fed: 0,
        }
    }

    /// The ledger will be `bank`'s, whatever bank the body's configuration
    /// names (recovery builds the bank it was asked for).
    pub fn for_bank(mut self, bank: BankCode) -> BodyReader {
        self.records.bank = Some(bank);
        self
    }

    /// The next piece of the body.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        let fed = self.fed + bytes.len() as u64;
        if fed > self.records.len {
            return Err(BodyError::Corrupt {
                at: self.fed,
                what: format!("more than the {} bytes stated", self.records.len),
            });
        }
        self.fed = fed;
        let mut at = 0;
        // First finish the record the last piece cut, taking from this piece
        // only what it needs (doubling the attempt each time).
        while !self.tail.is_empty() {
            if at == bytes.len() {
                return Ok(());
            }
            let more = self.tail.len().max(RETRY_BYTES_MIN).min(bytes.len() - at);
            self.tail.extend_from_slice(&bytes[at..at + more]);
            at += more;
            let used = self.records.decode(&self.tail)?;
            if used > 0 {
                // The cut record is done (it started the tail, so `used`
                // covers all the old tail): what is left came from this
                // piece, and is read from it directly.
                at -= self.tail.len() - used;
                self.tail.clear();
                self.tail.shrink_to(RETRY_BYTES_MIN);
            }
        }
        let used = self.records.decode(&bytes[at..])?;
        self.tail.extend_from_slice(&bytes[at + used..]);
        Ok(())
    }

    /// The ledger, once the whole body has been fed: it must end after the
    /// marks, or after the keys (a body from before marks existed).
    pub fn finish(self) -> Result<Ledger, BodyError> {
        let r = &self.records;
        if self.fed != r.len {
            return Err(r.corrupt(format!("{} of {} bytes", self.fed, r.len)));
        }
        if !self.tail.is_empty() {
            return Err(r.corrupt("ends inside a record".into()));
        }
        match r.stage {
            Stage::Done | Stage::Length(List::Marks) => {}
            stage => return Err(r.corrupt(format!("ends before {stage:?}"))),
        }
        match self.records.builder {
            Some(builder) => Ok(builder.finish()?),
            None => Err(BodyError::Corrupt {
                at: 0,
                what: "no counters".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::{BodyError, BodyPieces, BodyReader};

    const BANK: BankCode = BankCode(2);
    const T0: u64 = 1_767_582_000;

    fn pan(n: u64) -> Pan {
        Pan::from_digits(format!("600002{n:010}").as_bytes()).expect("test PAN")
    }

    fn req(s: &str) -> Request {
        Request {
            key: RequestKey::new(s.as_bytes()).expect("test key"),
            fingerprint: Fingerprint::ZERO,
        }
    }

    /// A ledger with terminals, cards (some with credited periods), credits,
    /// purchases and so keys: every list of a body is non-empty.
    fn ledger(cards: u64) -> Ledger {
        let mut ledger = Ledger::new(LedgerConfig::new(BANK));
        let mut fx = Effects::default();
        let shop = MerchantId::new(b"SHOP-1").expect("merchant");
        let mut setup = vec![Command::OpenTerminalAccount {
            merchant: shop,
            kind: TerminalKind::Merchant,
        }];
        for n in 0..cards {
            setup.push(Command::OpenCard {
                pan: pan(n),
                family: FamilyId(n),
                pvv: Pvv([1; 32]),
                status: CardStatus::Active,
            });
        }
        ledger.apply(&setup, T0, &mut fx);
        let mut batch = Vec::new();
        for n in 0..cards {
            batch.push(Command::Credit(Credit {
                request: req(&format!("C-{n}")),
                program: Program::Pkh,
                card: CardRef::Pan(pan(n)),
                amount: 1_000_000 + n,
            }));
            if n % 3 == 0 {
                batch.push(Command::PeriodCredit(PeriodCredit {
                    program: Program::Bpnt,
                    period: 24_312 + (n % 5) as u16,
                    family: FamilyId(n),
                    amount: 50_000,
                }));
            }
        }
        ledger.apply(&batch, T0 + 10, &mut fx);
        let mut buys = Vec::new();
        for n in (0..cards).step_by(2) {
            buys.push(Command::Purchase(Payment {
                request: req(&format!("P-{n}")),
                wallet: Program::Pkh,
                pan: pan(n),
                amount: 10_000,
                acceptor: Acceptor {
                    kind: TerminalKind::Merchant,
                    bank: BANK,
                    merchant: shop,
                },
                pin: Some(Pvv([1; 32])),
                precheck: Precheck::Passed,
            }));
        }
        ledger.apply(&buys, T0 + 20, &mut fx);
        ledger.check_invariants().expect("a valid test ledger");
        ledger
    }

    fn pieces(ledger: &Ledger, target: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut pieces = BodyPieces::new(ledger);
        let mut buf = Vec::new();
        while pieces.next_piece(&mut buf, target).expect("encodes") {
            out.push(buf.clone());
        }
        out
    }

    fn read(body: &[u8], split: usize) -> Result<Ledger, BodyError> {
        let mut reader = BodyReader::new(body.len() as u64);
        for piece in body.chunks(split.max(1)) {
            reader.feed(piece)?;
        }
        reader.finish()
    }

    #[test]
    fn pieces_are_the_snapshot_bytes() {
        for cards in [0, 1, 7, 40] {
            let ledger = ledger(cards);
            let snap = ledger.snapshot();
            assert!(cards == 0 || snap.marks.iter().any(|m| *m != <[Marks; 2]>::default()));
            let whole = postcard::to_stdvec(&snap).expect("encodes");
            for target in [1, 7, 100, 4096] {
                let pieces = pieces(&ledger, target);
                assert_eq!(
                    pieces.concat(),
                    whole,
                    "{cards} cards in pieces of {target}"
                );
                let (last, full) = pieces.split_last().expect("a piece");
                assert!(full.iter().all(|p| p.len() == target));
                assert!(!last.is_empty() && last.len() <= target);
            }
        }
    }

    #[test]
    fn any_split_reads_back() {
        for cards in [0, 3, 40] {
            let ledger = ledger(cards);
            let snap = ledger.snapshot();
            let body = postcard::to_stdvec(&snap).expect("encodes");
            for split in [1, 2, 7, 64, 333, 4096, body.len()] {
                let back = read(&body, split).expect("reads back");
                assert_eq!(back.snapshot(), snap, "{cards} cards split every {split}");
            }
        }
    }

    #[test]
    fn record_minimums_hold() {
        let ledger = ledger(9);
        let snap = ledger.snapshot();
        let len = |v: &dyn erased::Enc| v.len();
        for a in &snap.accounts {
            assert!(len(a) >= 2);
        }
        for c in &snap.cards {
            assert!(len(c) >= 48);
        }
        for k in &snap.keys {
            assert!(len(k) >= 24);
        }
        for m in &snap.marks {
            assert!(len(m) >= 4);
        }
    }

    mod erased {
        pub trait Enc {
            fn len(&self) -> usize;
        }
        impl<T: serde::Serialize> Enc for T {
            fn len(&self) -> usize {
                postcard::to_stdvec(self).expect("encodes").len()
            }
        }
    }

    #[test]
    fn bank_override() {
        let ledger = ledger(2);
        let body = postcard::to_stdvec(&ledger.snapshot()).expect("encodes");
        let mut reader = BodyReader::new(body.len() as u64).for_bank(BankCode(9));
        reader.feed(&body).expect("feeds");
        let back = reader.finish().expect("reads");
        assert_eq!(back.config().bank, BankCode(9));
    }

    #[test]
    fn old_layout_reads() {
        let ledger = ledger(5);
        let snap = ledger.snapshot();
        let old = postcard::to_stdvec(&(
            &snap.config,
            &snap.counters,
            &snap.accounts,
            &snap.cards,
            &snap.keys,
        ))
        .expect("encodes");
        for split in [1, 5, old.len()] {
            let back = read(&old, split).expect("old checkpoints load");
            let mut want = snap.clone();
            want.marks = back.snapshot().marks;
            assert_eq!(back.snapshot(), want);
            assert!(back
                .snapshot()
                .marks
                .iter()
                .all(|m| *m == <[Marks; 2]>::default()));
        }
    }

    #[test]
    fn truncated_or_trailing_bytes_are_errors() {
        let ledger = ledger(6);
        let body = postcard::to_stdvec(&ledger.snapshot()).expect("encodes");
        // Cut anywhere except the ends of the two layouts: never a ledger.
        for cut in 0..body.len() {
            for split in [1, 13, 4096] {
                let r = read(&body[..cut], split);
                if let Ok(l) = &r {
                    // Only a cut exactly after the keys is a valid (old) body.
                    assert!(l
                        .snapshot()
                        .marks
                        .iter()
                        .all(|m| *m == <[Marks; 2]>::default()));
                    assert_eq!(l.snapshot().cards, ledger.snapshot().cards, "cut at {cut}");
                }
            }
        }
        // Mid-record cuts are errors.
        assert!(read(&body[..body.len() - 1], 7).is_err());
        assert!(read(&body[..body.len() / 2], 7).is_err());
        // A length stated longer than what is fed.
        let mut reader = BodyReader::new(body.len() as u64 + 5);
        reader.feed(&body).expect("feeds");
        assert!(reader.finish().is_err());
        // More fed than stated.
        let mut reader = BodyReader::new(3);
        assert!(reader.feed(&body).is_err());
        // Trailing garbage after the marks.
        for tail in [&[0u8][..], &[1, 2, 3], &[0xff; 40]] {
            let mut bad = body.clone();
            bad.extend_from_slice(tail);
            for split in [1, 9, bad.len()] {
                assert!(read(&bad, split).is_err(), "trailing {tail:?}");
            }
        }
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        let ledger = ledger(3);
        let snap = ledger.snapshot();
        let head = postcard::to_stdvec(&(&snap.config, &snap.counters)).expect("encodes");
        for list in 0..3 {
            let mut body = head.clone();
            // Each list before `list` empty, then a huge count.
            body.extend(std::iter::repeat_n(0u8, list));
            body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
            body.extend_from_slice(&[7; 30]);
            let e = read(&body, 4).expect_err("refused");
            assert!(matches!(e, BodyError::Corrupt { .. }), "{e}");
        }
        // A card whose PAN claims more bytes than the body holds waits for
        // them, then the body ends: an error, not an allocation.
        let mut body = head.clone();
        body.push(0); // no accounts
        body.push(1); // one card
        body.extend_from_slice(&[0, 0, 0, 0]);
        body.extend_from_slice(&[1; 32]);
        body.extend_from_slice(&[0; 12]);
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        body.extend_from_slice(&[b'6'; 100]);
        assert!(read(&body, 3).is_err());
        // Random bytes never panic.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2_000 {
            let n = (x % 300) as usize;
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = read(&bytes, 1 + (x % 50) as usize);
            let mut prefixed = head.clone();
            prefixed.extend_from_slice(&bytes);
            let _ = read(&prefixed, 1 + (x % 50) as usize);
        }
    }

    #[test]
    fn invariant_breaks_are_errors() {
        let ledger = ledger(4);
        let mut snap = ledger.snapshot();
        snap.accounts[0].balance += 1;
        let body = postcard::to_stdvec(&snap).expect("encodes");
        assert!(matches!(read(&body, 10), Err(BodyError::Invariant(_))));
    }
}
