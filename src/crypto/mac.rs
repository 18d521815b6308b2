//! Message authentication for MAC terminals (DE64 / DE128).
//!
//! Why: INTERFACE §6 makes the MAC optional per terminal; when a terminal has
//! a MAC key, every 0200 and 04x0/04x1 from it and every response to it
//! carries `first 8 bytes of HMAC-SHA256(MAC key, message bytes from the MTI
//! up to but excluding the MAC field's 8 bytes)`.
//!
//! Where the MAC sits: the MAC field is DE64 in a message with only a
//! primary bitmap, DE128 when the secondary bitmap is present. Either is the
//! highest-numbered field its message can carry, and it is a fixed `b8`
//! field with no length prefix, so in an encoded message it is always the
//! last 8 bytes. The MAC input is therefore simply everything before those
//! 8 bytes: MTI, bitmap(s) (with the MAC bit set) and every other field —
//! never the 2- or 4-byte frame header. [`mac_input`] / [`split_mac`] rely on
//! that; the codec must only call them on a message it has parsed and found
//! to carry its MAC field.
//!
//! Verification compares in constant time and rejects any tag that is not
//! exactly 8 bytes (accepting a shorter prefix would let a 1-byte guess
//! pass one time in 256).
//!
//! [`retail_mac_x919`] (ANSI X9.19) is a tested helper for partners that
//! still speak it; it is not used on the wire.

use des::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use des::Des;
use hmac::Hmac;
use hmac::Mac as _;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::keys::MacKey;

/// Length of the MAC field (DE64 / DE128 are `b8`).
pub const MAC_LEN: usize = 8;

/// First [`MAC_LEN`] bytes of HMAC-SHA256(`key`, `data`).
pub fn compute_mac(key: &MacKey, data: &[u8]) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    // HMAC takes keys of any length, so this never fails; the all-zero
    // fallback is unreachable and keeps the function panic-free.
    if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()) {
        mac.update(data);
        out.copy_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
    }
    out
}

/// True when `mac` is exactly the 8-byte MAC of `data` under `key`.
/// Constant time; any other length is false.
pub fn verify_mac(key: &MacKey, data: &[u8], mac: &[u8]) -> bool {
    if mac.len() != MAC_LEN {
        return false;
    }
    bool::from(compute_mac(key, data).ct_eq(mac))
}

/// The MAC input of an encoded message (no frame header) whose last field is
/// its MAC field: every byte but the last 8. A message shorter than 8 bytes
/// gives an empty slice (and [`verify_message_mac`] then fails).
pub fn mac_input(msg: &[u8]) -> &[u8] {
    msg.get(..msg.len().saturating_sub(MAC_LEN)).unwrap_or(&[])
}

/// Splits an encoded message whose last field is its MAC field into
/// (MAC input, MAC). `None` when the message is shorter than 8 bytes.
pub fn split_mac(msg: &[u8]) -> Option<(&[u8], &[u8; MAC_LEN])> {
    let cut = msg.len().checked_sub(MAC_LEN)?;
    let (input, tail) = msg.split_at(cut);
    let mac: &[u8; MAC_LEN] = tail.try_into().ok()?;
    Some((input, mac))
}

/// Verifies the MAC carried in the last 8 bytes of an encoded message
/// (see the module header). False for a message shorter than 8 bytes.
pub fn verify_message_mac(key: &MacKey, msg: &[u8]) -> bool {
    match split_mac(msg) {
        Some((input, mac)) => verify_mac(key, input, mac),
        None => false,
    }
}

/// Writes the MAC into the last 8 bytes of an encoded message that was built
/// with a placeholder MAC field as its last field. Returns false, changing
/// nothing, when the message is shorter than 8 bytes.
#[must_use]
pub fn write_message_mac(key: &MacKey, msg: &mut [u8]) -> bool {
    let Some(cut) = msg.len().checked_sub(MAC_LEN) else {
        return false;
    };
    let mac = compute_mac(key, &msg[..cut]);
    msg[cut..].copy_from_slice(&mac);
    true
}

/// ANSI X9.19 retail MAC (ISO 9797-1 MAC algorithm 3, padding method 1):
/// single-DES CBC under KL over the zero-padded data, then the last block
/// decrypted under KR and encrypted under KL. `key` is KL ‖ KR. Empty data
/// is MACed as one zero block. A tested helper only; the wire uses HMAC.
pub fn retail_mac_x919(key: &[u8; 16], data: &[u8]) -> [u8; 8] {
    let mut kl = [0u8; 8];
    let mut kr = [0u8; 8];
    kl.copy_from_slice(&key[..8]);
    kr.copy_from_slice(&key[8..]);
    let left = Des::new((&kl).into());
    let right = Des::new((&kr).into());
    let mut state = des::cipher::Block::<Des>::default();
    let mut chunks = data.chunks(8).peekable();
    if chunks.peek().is_none() {
        left.encrypt_block(&mut state);
    }
    for chunk in chunks {
        for (s, d) in state.iter_mut().zip(chunk) {
            *s ^= d;
        }
        left.encrypt_block(&mut state);
    }
    right.decrypt_block(&mut state);
    left.encrypt_block(&mut state);
    let mut out = [0u8; 8];
    out.copy_from_slice(&state);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_KEY_HEX: &str = "00112233445566778899AABBCCDDEEFF";

    /// messages.md, "Same purchase from a MAC terminal": the 182-byte frame
    /// (2-byte header included), DE64 = B16B1D05E20FFE2A.
    const MAC_FRAME_HEX: &str = "00B4303230307238400108C1900131363630303030323030303030303031323030303030303030303030303933303030303031313235303833303030303030313031313533303030313132353534313130333030323030303030303030303130314557303030303031455741524F4E473030303030303031303430425241533030303530303030303635303030303054454C523030303130303030303238303030303033363043999FB45EBF1A5DB16B1D05E20FFE2A";

    fn key() -> MacKey {
        MacKey::from_hex(MAC_KEY_HEX).expect("key")
    }

    #[test]
    fn hmac_sha256_rfc4231_case2() {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // "Jefe" is shorter than a MacKey may be, so compute_mac's
        // truncation is checked on the golden frame and in
        // verify_rejects_wrong_mac_length_key_and_data instead.
    }

    #[test]
    fn golden_0200_frame_mac() {
        let frame = hex::decode(MAC_FRAME_HEX).expect("hex");
        assert_eq!(frame.len(), 182);
        let declared = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
        let msg = &frame[2..];
        assert_eq!(declared, msg.len());
        let mac = compute_mac(&key(), mac_input(msg));
        assert_eq!(hex::encode_upper(mac), "B16B1D05E20FFE2A");
        assert_eq!(&msg[msg.len() - 8..], &mac);
        assert!(verify_message_mac(&key(), msg));
        let (input, carried) = split_mac(msg).expect("long enough");
        assert_eq!(input, mac_input(msg));
        assert!(verify_mac(&key(), input, carried));
        // The frame header is not part of the MAC input.
        assert!(!verify_mac(&key(), &frame[..frame.len() - 8], carried));
    }

    #[test]
    fn write_then_verify() {
        let frame = hex::decode(MAC_FRAME_HEX).expect("hex");
        let mut msg = frame[2..].to_vec();
        let n = msg.len();
        msg[n - 8..].fill(0);
        assert!(!verify_message_mac(&key(), &msg));
        assert!(write_message_mac(&key(), &mut msg));
        assert_eq!(msg, &frame[2..]);
        let mut tiny = [0u8; 7];
        assert!(!write_message_mac(&key(), &mut tiny));
        assert_eq!(tiny, [0u8; 7]);
    }

    #[test]
    fn verify_rejects_wrong_mac_length_key_and_data() {
        let k = key();
        let data = b"0200 some message bytes";
        let mac = compute_mac(&k, data);
        assert!(verify_mac(&k, data, &mac));
        assert!(!verify_mac(&k, data, &mac[..7]));
        assert!(!verify_mac(&k, data, &mac[..1]));
        assert!(!verify_mac(&k, data, &[]));
        let mut longer = mac.to_vec();
        longer.push(0);
        assert!(!verify_mac(&k, data, &longer));
        let full = {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(k.as_bytes()).expect("key");
            m.update(data);
            m.finalize().into_bytes()
        };
        assert_eq!(&full[..8], &mac);
        assert!(!verify_mac(&k, data, &full));
        let mut flipped = mac;
        flipped[0] ^= 1;
        assert!(!verify_mac(&k, data, &flipped));
        assert!(!verify_mac(&k, b"0200 some message byteS", &mac));
        let other = MacKey::from_bytes(&[0x11; 32]).expect("key");
        assert!(!verify_mac(&other, data, &mac));
    }

    #[test]
    fn short_messages_never_panic() {
        for len in 0..8 {
            let msg = vec![0u8; len];
            assert_eq!(mac_input(&msg), &[] as &[u8]);
            assert!(split_mac(&msg).is_none());
            assert!(!verify_message_mac(&key(), &msg));
        }
        let eight = [0u8; 8];
        assert_eq!(mac_input(&eight), &[] as &[u8]);
        assert!(split_mac(&eight).is_some());
    }

    #[test]
    fn x919_retail_mac_vector() {
        let mut k = [0x41u8; 16];
        k[8..].fill(0x42);
        assert_eq!(
            hex::encode_upper(retail_mac_x919(&k, b"hello world")),
            "3DDE5C5511661CBF"
        );
        // Empty data does not panic.
        let _ = retail_mac_x919(&k, b"");
    }
}
