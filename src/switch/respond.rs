//! Building responses from requests (INTERFACE §3): which request fields are
//! echoed per message class, then DE39 and the fields the answer adds.

use crate::iso8583::{de, response_mti, Builder, Message};
use bytes::BytesMut;

/// Fields a 0210 echoes from its 0200.
pub const ECHO_0210: &[u8] = &[2, 3, 4, 7, 11, 32, 37, 41, 42, 49];
/// Fields a 0410/0430 echoes from its reversal.
pub const ECHO_04X0: &[u8] = &[2, 3, 4, 7, 11, 32, 41, 42, 49, 90];
/// Fields a 0810 echoes from its 0800.
pub const ECHO_0810: &[u8] = &[7, 11, 41, 70];
/// Fields echoed for any other MTI's answer (enough for the client to match).
pub const ECHO_OTHER: &[u8] = &[2, 3, 4, 7, 11, 32, 41, 42];

/// The echo list for a request MTI.
pub fn echo_fields(mti: &[u8]) -> &'static [u8] {
    match mti {
        b"0200" => ECHO_0210,
        b"0400" | b"0401" | b"0420" | b"0421" => ECHO_04X0,
        b"0800" => ECHO_0810,
        _ => ECHO_OTHER,
    }
}

/// Signs a response: all message bytes before the MAC field → 8 MAC bytes.
pub type MacFn<'a> = &'a dyn Fn(&[u8]) -> [u8; 8];

/// What a response adds to the echoed fields, in DE order.
#[derive(Default, Clone, Copy)]
pub struct Added<'a> {
    pub approval: Option<&'a [u8; 6]>,
    pub response_data: Option<&'a [u8]>,
    pub balances: Option<&'a [u8]>,
}

/// Encode the response to `req` with response code `code` into `out`.
/// Echoed fields are copied only when their content is valid for their class,
/// so a request with a malformed DE11 still gets a decodable 30 (minus that
/// field). `mac` signs the response for MAC terminals (INTERFACE §6).
pub fn respond<B: AsRef<[u8]>>(
    req: &Message<B>,
    code: &[u8; 2],
    added: Added<'_>,
    mac: Option<MacFn<'_>>,
    out: &mut BytesMut,
) {
    let mti = response_mti(req.mti());
    let spec = crate::iso8583::default_spec();
    // At most 10 echoed fields + DE38, 39, 44, 54: a fixed array, no allocation.
    let mut parts: [(u8, &[u8]); 16] = [(0, &[]); 16];
    let mut len = 0;
    fn push<'a>(parts: &mut [(u8, &'a [u8]); 16], len: &mut usize, n: u8, v: &'a [u8]) {
        if *len < parts.len() {
            parts[*len] = (n, v);
            *len += 1;
        }
    }
    for &n in echo_fields(req.mti()) {
        if let Some(v) = req.get(n) {
            if spec.field(n).class.first_invalid(v).is_none() {
                push(&mut parts, &mut len, n, v);
            }
        }
    }
    push(&mut parts, &mut len, de::RESPONSE, code);
    if let Some(a) = added.approval {
        push(&mut parts, &mut len, de::APPROVAL, a);
    }
    if let Some(d) = added.response_data {
        push(&mut parts, &mut len, de::RESPONSE_DATA, d);
    }
    if let Some(bal) = added.balances {
        push(&mut parts, &mut len, de::BALANCES, bal);
    }
    let parts = &mut parts[..len];
    parts.sort_unstable_by_key(|p| p.0);
    let mut b = Builder::new(out, &mti);
    for &(n, v) in parts.iter() {
        // Lengths always fit: values come from a decoded request or from
        // fixed-size host data; a failure would only drop the field.
        let _ = b.field(n, v);
    }
    match mac {
        Some(f) => {
            let _ = b.finish_with_mac(f);
        }
        None => b.finish(),
    }
}
