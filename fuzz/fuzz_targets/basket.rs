//! The DE48 basket parser (`auth::basket::check_basket`) on arbitrary bytes:
//! never panics, and whatever it accepts agrees with a straightforward
//! re-reading of the INTERFACE §4 layout (1–40 items of 20 characters:
//! code `A-Z`×4, quantity n4, amount n12; total = sum of amounts; the first
//! code not in the allowed list is reported).
#![no_main]
use kks_switch::auth::basket::{check_basket, BasketError, FOOD_ONLY_ALLOWED, ITEM_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the allowed list, so both "everything eligible"
    // and the food-only list are explored.
    let (allowed, de48): (&[&[u8; 4]], &[u8]) = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => (&FOOD_ONLY_ALLOWED, rest),
        Some((_, rest)) => (&[], rest),
        None => (&FOOD_ONLY_ALLOWED, data),
    };
    match check_basket(de48, allowed) {
        Ok(c) => {
            assert!(!de48.is_empty() && de48.len() % ITEM_LEN == 0 && de48.len() <= 800);
            let mut total = 0u64;
            let mut first = None;
            for item in de48.chunks(ITEM_LEN) {
                assert!(item[..4].iter().all(|b| b.is_ascii_uppercase()));
                assert!(item[4..].iter().all(|b| b.is_ascii_digit()));
                let amount: u64 = std::str::from_utf8(&item[8..]).unwrap().parse().unwrap();
                total += amount;
                if first.is_none() && !allowed.iter().any(|a| a[..] == item[..4]) {
                    first = Some([item[0], item[1], item[2], item[3]]);
                }
            }
            assert_eq!(c.total, total);
            assert_eq!(c.first_ineligible, first);
        }
        Err(BasketError::Length) => {
            assert!(de48.is_empty() || de48.len() % ITEM_LEN != 0 || de48.len() > 800);
        }
        Err(BasketError::Code(i)) | Err(BasketError::Digits(i)) => {
            assert!(i < de48.len() / ITEM_LEN);
        }
    }
});
