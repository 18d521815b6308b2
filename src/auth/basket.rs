//! The e-Warong basket (DE48, INTERFACE §4): 1–40 items of exactly 20
//! characters: commodity code (4 × `A-Z`) + quantity (n4) + line amount
//! (n12, DE4 units). Parsing is pure; the eligibility list is data.

/// Most items in one basket.
pub const BASKET_ITEMS_MAX: usize = 40;
/// Characters per item.
pub const ITEM_LEN: usize = 20;

/// Food codes BPNT may buy under rule set `food-only` (INTERFACE §4).
pub const FOOD_ONLY_ALLOWED: [&[u8; 4]; 12] = [
    b"BRAS", b"JAGG", b"SAGU", b"TELR", b"DSAP", b"AYAM", b"IKAN", b"KCNG", b"TEMP", b"TAHU",
    b"SAYR", b"BUAH",
];

/// Why a DE48 is malformed (answered 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BasketError {
    /// Empty, longer than 40 items, or not a multiple of 20 characters.
    Length,
    /// A commodity code that is not four letters A–Z, at this item index.
    Code(usize),
    /// Quantity or amount not digits, at this item index.
    Digits(usize),
}

/// What a well-formed basket says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BasketCheck {
    /// Sum of line amounts (checked against DE4 by the caller: 13).
    pub total: u64,
    /// The first item not in `allowed`, in basket order (57).
    pub first_ineligible: Option<[u8; 4]>,
}

fn digits(v: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as u64;
    }
    Some(n)
}

/// Parse DE48 and check each item against `allowed`.
pub fn check_basket(de48: &[u8], allowed: &[&[u8; 4]]) -> Result<BasketCheck, BasketError> {
    if de48.is_empty()
        || !de48.len().is_multiple_of(ITEM_LEN)
        || de48.len() / ITEM_LEN > BASKET_ITEMS_MAX
    {
        return Err(BasketError::Length);
    }
    let mut total = 0u64;
    let mut first_ineligible = None;
    for (i, item) in de48.chunks_exact(ITEM_LEN).enumerate() {
        let code = &item[..4];
        if !code.iter().all(u8::is_ascii_uppercase) {
            return Err(BasketError::Code(i));
        }
        digits(&item[4..8]).ok_or(BasketError::Digits(i))?;
        let amount = digits(&item[8..20]).ok_or(BasketError::Digits(i))?;
        // 40 items × n12 cannot overflow u64 (40 × 10^12).
        total += amount;
        if first_ineligible.is_none() && !allowed.iter().any(|a| &a[..] == code) {
            let mut c = [0u8; 4];
            c.copy_from_slice(code);
            first_ineligible = Some(c);
        }
    }
    Ok(BasketCheck {
        total,
        first_ineligible,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baskets() {
        let ok = check_basket(
            b"BRAS0005000006500000TELR0001000002800000",
            &FOOD_ONLY_ALLOWED,
        )
        .unwrap();
        assert_eq!(ok.total, 9_300_000);
        assert_eq!(ok.first_ineligible, None);
        let bad = check_basket(
            b"BRAS0005000006500000ROKK0001000002800000MIEI0001000000100000",
            &FOOD_ONLY_ALLOWED,
        )
        .unwrap();
        assert_eq!(bad.first_ineligible, Some(*b"ROKK"));
        let unknown = check_basket(b"XXXX0001000000100000", &FOOD_ONLY_ALLOWED).unwrap();
        assert_eq!(unknown.first_ineligible, Some(*b"XXXX"));
        assert_eq!(
            check_basket(b"", &FOOD_ONLY_ALLOWED),
            Err(BasketError::Length)
        );
        assert_eq!(
            check_basket(b"BRAS000500000650000", &FOOD_ONLY_ALLOWED),
            Err(BasketError::Length)
        );
        assert_eq!(
            check_basket(b"bras0005000006500000", &FOOD_ONLY_ALLOWED),
            Err(BasketError::Code(0))
        );
        assert_eq!(
            check_basket(b"BRAS00050000065000X0", &FOOD_ONLY_ALLOWED),
            Err(BasketError::Digits(0))
        );
        assert_eq!(
            check_basket(&b"BRAS0001000000000100".repeat(41), &FOOD_ONLY_ALLOWED),
            Err(BasketError::Length)
        );
        assert!(check_basket(&b"BRAS0001000000000100".repeat(40), &FOOD_ONLY_ALLOWED).is_ok());
    }
}
