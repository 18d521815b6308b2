//! `kks-sim echo-target`: a trivial ISO 8583 responder, to measure the
//! generator alone. Every request is answered at once with the response MTI,
//! its fields echoed (PIN block, basket and MAC dropped), DE39 `00` and, for
//! 0200, DE38; answers to MAC terminals (from `--terminals`) carry a MAC so
//! that the simulator's checks pass.

use bytes::{Buf, BytesMut};
use kks_switch::crypto::{compute_mac, MacKey};
use kks_switch::iso8583::framing::frame_length;
use kks_switch::iso8583::{response_mti, Builder, Framing, Message, FRAME_BYTES_MAX};
use std::collections::HashMap;
use std::rc::Rc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// DE41 → MAC key.
pub type MacKeys = HashMap<[u8; 8], MacKey>;

/// MAC keys of the terminals in a `terminals.csv`.
pub fn mac_keys(path: &std::path::Path) -> Result<MacKeys, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 7 || f[6].is_empty() || f[0].len() > 8 {
            continue;
        }
        let mut tid = [b' '; 8];
        tid[..f[0].len()].copy_from_slice(f[0].as_bytes());
        let k = MacKey::from_hex(f[6]).map_err(|_| format!("{}: bad MAC key", path.display()))?;
        out.insert(tid, k);
    }
    Ok(out)
}

/// Build the answer to one request into `out` (framed). False if the
/// request cannot be parsed (it is dropped).
pub fn answer(req: &[u8], keys: &MacKeys, out: &mut BytesMut) -> bool {
    let Ok(m) = Message::decode(req) else {
        return false;
    };
    let mti = response_mti(m.mti());
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut b = Builder::new(out, &mti);
    let financial = m.mti() == b"0200";
    let mut added = false;
    let add = |b: &mut Builder<'_>| {
        if financial {
            let _ = b.field(38, b"ECHO01");
        }
        let _ = b.field(39, b"00");
    };
    for n in m.present() {
        if matches!(n, 1 | 38 | 39 | 48 | 52 | 64 | 128) {
            continue;
        }
        if n > 39 && !added {
            add(&mut b);
            added = true;
        }
        if let Some(v) = m.get(n) {
            let _ = b.field(n, v);
        }
    }
    if !added {
        add(&mut b);
    }
    let key = m
        .get(41)
        .and_then(|t| <[u8; 8]>::try_from(t).ok())
        .and_then(|t| keys.get(&t))
        .filter(|_| m.mti() != b"0800");
    match key {
        Some(k) => {
            let _ = b.finish_with_mac(|x| compute_mac(k, x));
        }
        None => b.finish(),
    }
    let len = out.len() - at - 2;
    out[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
    true
}

async fn serve_conn(mut s: TcpStream, keys: Rc<MacKeys>) {
    let _ = s.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        buf.reserve(64 * 1024);
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut off = 0;
        loop {
            match frame_length(Framing::TwoByte, &buf[off..], FRAME_BYTES_MAX) {
                Ok(Some(len)) if buf.len() - off >= 2 + len => {
                    answer(&buf[off + 2..off + 2 + len], &keys, &mut out);
                    off += 2 + len;
                }
                Ok(_) => break,
                Err(_) => return,
            }
        }
        buf.advance(off);
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// Accept and answer until killed. Prints `listening on ADDR`.
pub async fn serve(listen: &str, keys: MacKeys) -> Result<(), String> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let keys = Rc::new(keys);
    loop {
        let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_local(serve_conn(s, keys.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kks_switch::iso8583::Fields;

    #[test]
    fn echoes_with_code_and_mac() {
        let req = Fields::new("0200")
            .with(2, "6000020000000120")
            .with(3, "310000")
            .with(11, "000001")
            .with(41, "EW000001")
            .with(52, [0u8; 8])
            .to_vec()
            .unwrap();
        let mut keys = MacKeys::new();
        keys.insert(
            *b"EW000001",
            MacKey::from_hex("00112233445566778899AABBCCDDEEFF").unwrap(),
        );
        let mut out = BytesMut::new();
        assert!(answer(&req, &keys, &mut out));
        let m = Message::decode(&out[2..]).unwrap();
        assert_eq!(m.mti(), b"0210");
        assert_eq!(m.get(39), Some(&b"00"[..]));
        assert_eq!(m.get(11), Some(&b"000001"[..]));
        assert!(m.get(52).is_none());
        assert!(kks_switch::crypto::mac::verify_message_mac(
            keys.get(b"EW000001").unwrap(),
            &out[2..]
        ));
    }
}
