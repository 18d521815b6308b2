//! A batch's postings packed into one blob, the SQLite journal's form.
//!
//! Why: a posting row per posting made SQLite parse, plan and B-tree-insert
//! one row per request on the writer's one thread, and a profile of
//! `kks-switch drill --mode bulk` showed that thread was the durable path's
//! limit (README's Speed table has the drill's figures before and after).
//! Packed into the batch's own journal row, a batch of 1024 postings costs
//! SQLite one more blob of about 12 KiB. Nothing is lost by it: the blob
//! holds every field a row held, `audit` and every report read it back
//! through [`decode`], and PostgreSQL, whose binary COPY takes rows as fast
//! as blobs, keeps rows.
//!
//! Format (version 1): the byte `1`, then the postings in id order, each as
//! unsigned LEB128 varints `id delta` (from the previous id, the first from
//! 0), `cmd`, `debit`, `credit`, `amount`, then `kind` as a zigzag varint.

use super::PostingRow;

const VERSION: u8 = 1;

/// The blob for `postings` (which must be in increasing id order, as a
/// batch's are).
pub fn encode(postings: &[PostingRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + postings.len() * 14);
    out.push(VERSION);
    let mut previous = 0u64;
    for p in postings {
        put(&mut out, p.id.wrapping_sub(previous));
        previous = p.id;
        put(&mut out, u64::from(p.cmd));
        put(&mut out, p.debit);
        put(&mut out, p.credit);
        put(&mut out, p.amount);
        let kind = i64::from(p.kind);
        put(&mut out, ((kind << 1) ^ (kind >> 63)) as u64);
    }
    out
}

/// The postings in `blob`, or why it is not a valid blob.
pub fn decode(blob: &[u8]) -> Result<Vec<PostingRow>, String> {
    let (&version, mut rest) = blob.split_first().ok_or("empty postings blob")?;
    if version != VERSION {
        return Err(format!("postings blob version {version}"));
    }
    let mut rows = Vec::with_capacity(rest.len() / 8);
    let mut id = 0u64;
    while !rest.is_empty() {
        id = id
            .checked_add(take(&mut rest)?)
            .ok_or("posting id overflows")?;
        let cmd = u32::try_from(take(&mut rest)?).map_err(|_| "posting cmd over u32")?;
        let debit = take(&mut rest)?;
        let credit = take(&mut rest)?;
        let amount = take(&mut rest)?;
        let zigzag = take(&mut rest)?;
        let kind = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        let kind = i16::try_from(kind).map_err(|_| "posting kind over i16")?;
        rows.push(PostingRow {
            id,
            cmd,
            debit,
            credit,
            amount,
            kind,
        });
    }
    Ok(rows)
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take(rest: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first().ok_or("postings blob cut short")?;
        *rest = tail;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err("postings blob varint overflows".into());
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("postings blob varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, kind: i16) -> PostingRow {
        PostingRow {
            id,
            cmd: (id % 1024) as u32,
            debit: id.wrapping_mul(3).wrapping_add(2),
            credit: u64::MAX - id,
            amount: id.wrapping_add(1_500_000),
            kind,
        }
    }

    proptest::proptest! {
        /// Any increasing run of postings round-trips exactly.
        #[test]
        fn storage_packed_postings_round_trip(
            start in 0u64..u64::MAX / 2,
            gaps in proptest::collection::vec(1u64..1_000_000, 0..200),
            kinds in proptest::collection::vec(proptest::num::i16::ANY, 200),
        ) {
            let mut id = start;
            let rows: Vec<PostingRow> = gaps
                .iter()
                .zip(&kinds)
                .map(|(g, &k)| {
                    id += g;
                    row(id, k)
                })
                .collect();
            proptest::prop_assert_eq!(decode(&encode(&rows)), Ok(rows));
        }

        /// Arbitrary bytes decode to postings or an error, never a panic.
        #[test]
        fn storage_packed_postings_reject_garbage(blob in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode(&blob);
        }
    }

    #[test]
    fn storage_packed_postings_errors_name_the_fault() {
        assert_eq!(decode(&[]), Err("empty postings blob".into()));
        assert_eq!(decode(&[2]), Err("postings blob version 2".into()));
        let blob = encode(&[row(7, 3)]);
        assert_eq!(
            decode(&blob[..blob.len() - 1]),
            Err("postings blob cut short".into())
        );
        let mut long = vec![VERSION];
        long.extend([0xff; 10]);
        long.push(0x01);
        assert!(decode(&long).is_err());
        assert_eq!(decode(&[VERSION]), Ok(vec![]));
    }
}
