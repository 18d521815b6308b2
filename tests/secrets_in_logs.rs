//! No secret reaches the logs (INTERFACE §6; issue 5, item 9): the
//! `kks-switch serve` binary runs on a fixture store with `RUST_LOG=trace`
//! and standard error captured to a file, through wrong-PIN sessions (with
//! distinct clear PINs), MAC sessions (right and wrong MACs, DE64 and
//! DE128), malformed messages and broken frames; it is stopped with SIGTERM
//! and must exit 0. Then the captured log must contain none of: each clear
//! PIN used, each DE52 sent (hex, both cases, and as a Debug byte list),
//! each clear ISO-0 PIN block and PIN field, the terminal PIN key, the MAC
//! key, every bank's PIN verification key and the master key (hex, both
//! cases, and as Debug byte lists), and the full PAN of any card used (the
//! masked form may appear, and must, since the trace level logs requests).
//!
//! Log lines start with a timestamp whose fraction of a second is six
//! digits; that prefix is removed before searching, so a PIN cannot match
//! a clock by chance.

mod common;

use common::fixture::*;
use kks_switch::crypto::MasterKey;
use kks_switch::iso8583::Fields;
use kks_switch::pan::Bank;

/// PINs sent in this test: unlikely to occur in a log by chance.
const WRONG_PINS: [&str; 6] = ["847361", "592038", "730419", "918273", "264850", "381957"];

fn hex_both(bytes: &[u8]) -> [String; 2] {
    [hex::encode_upper(bytes), hex::encode(bytes)]
}

/// The clear ISO-0 PIN field and PIN block of `pin` for `pan`.
fn clear_blocks(pan: &str, pin: &str) -> [Vec<u8>; 2] {
    let field = hex::decode(format!(
        "{:02X}{pin}{}",
        pin.len(),
        "F".repeat(14 - pin.len())
    ))
    .unwrap();
    let pan_field = hex::decode(format!("0000{}", &pan[pan.len() - 13..pan.len() - 1])).unwrap();
    let block = field.iter().zip(&pan_field).map(|(a, b)| a ^ b).collect();
    [field, block]
}

/// A log line without what the clock wrote into it: the leading timestamp
/// (six digits of microseconds) and sqlx's `elapsed=` / `elapsed_secs=`
/// durations (up to nine digits of a fraction). Their digits come from
/// timers, not from any message, and could otherwise match a 6-digit PIN by
/// chance.
fn without_clocks(line: &str) -> String {
    let line = match line.split_once(' ') {
        Some((ts, rest)) if ts.starts_with("20") && ts.contains('T') => rest,
        _ => line,
    };
    line.split(' ')
        .filter(|tok| !tok.starts_with("elapsed=") && !tok.starts_with("elapsed_secs="))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Secrets {
    items: Vec<(String, String)>,
}

impl Secrets {
    fn add(&mut self, what: impl Into<String>, s: impl Into<String>) {
        self.items.push((what.into(), s.into()));
    }
    fn add_bytes(&mut self, what: &str, bytes: &[u8]) {
        for h in hex_both(bytes) {
            self.add(format!("{what} (hex)"), h);
        }
        self.add(format!("{what} (Debug bytes)"), format!("{bytes:?}"));
    }
}

/// Send `f` as `t` sends it, remembering its PIN and PIN block as secrets.
async fn send(c: &mut Client, t: &Term, f: &Fields, pin: &str, s: &mut Secrets) -> Resp {
    note_pin(f, pin, s);
    c.call(t, f).await
}

fn note_pin(f: &Fields, pin: &str, s: &mut Secrets) {
    let pan = String::from_utf8(f.fields[&2].clone()).unwrap();
    s.add("clear PIN", pin);
    if let Some(b) = f.fields.get(&52) {
        s.add_bytes("DE52 PIN block", b);
    }
    let [field, block] = clear_blocks(&pan, pin);
    s.add_bytes("clear PIN field", &field);
    s.add_bytes("clear PIN block", &block);
    s.add("full PAN", pan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pin_block_key_or_pan_in_trace_logs() {
    let fx = Fixture::sqlite().await;
    let log = fx.db.dir().unwrap().join("serve-trace.log");
    let srv = spawn_serve(fx.url(), &log, &[("RUST_LOG", "trace")]);
    let mut s = Secrets { items: Vec::new() };
    let mut c = Client::connect(srv.addr).await;
    let g = GOLDEN_PAN;

    // Wrong-PIN session: 55, 55, 75, then the right PIN still 75.
    for (i, pin) in WRONG_PINS[..3].iter().enumerate() {
        let f = with_pin(withdrawal(&AGENT, g, 1_000_000), pin);
        let r = send(&mut c, &AGENT, &f, pin, &mut s).await;
        assert_eq!(r.code(), if i < 2 { "55" } else { "75" }, "{r:?}");
    }
    let f = withdrawal(&AGENT, g, 1_000_000);
    let r = send(&mut c, &AGENT, &f, PIN, &mut s).await;
    assert_eq!(r.code(), "75", "{r:?}");
    // Another card: a wrong PIN on an inquiry, then the right one.
    let p = active(0).pan();
    let f = with_pin(inquiry(&AGENT, &p), WRONG_PINS[3]);
    let r = send(&mut c, &AGENT, &f, WRONG_PINS[3], &mut s).await;
    assert_eq!(r.code(), "55", "{r:?}");
    let f = inquiry(&AGENT, &p);
    assert_eq!(send(&mut c, &AGENT, &f, PIN, &mut s).await.code(), "00");

    // MAC sessions: right MAC, missing, wrong; DE64 and DE128.
    let t = EWARONG_MAC;
    let f = purchase(&t, &p, &rice(1_000_000));
    let r = send(&mut c, &t, &f, PIN, &mut s).await;
    assert_eq!(r.code(), "00", "{r:?}");
    let f = with_pin(purchase(&t, &p, &rice(1_000_000)), WRONG_PINS[4]);
    note_pin(&f, WRONG_PINS[4], &mut s);
    let r = c.call_raw(&encode(&f)).await;
    assert_eq!(r.code(), "63", "{r:?}");
    let wrong = kks_switch::crypto::MacKey::from_hex("FFEEDDCCBBAA99887766554433221100").unwrap();
    let r = c.call_raw(&encode_mac(&f, &wrong)).await;
    assert_eq!(r.code(), "63", "{r:?}");
    let r = send(&mut c, &t, &f, WRONG_PINS[4], &mut s).await;
    assert_eq!(r.code(), "55", "{r:?}");
    let w = withdrawal(&AGENT_MAC, &p, 2_000_000);
    assert_eq!(send(&mut c, &AGENT_MAC, &w, PIN, &mut s).await.code(), "00");
    let rv = reversal_of(&w, "0400");
    assert_eq!(c.call_raw(&encode(&rv)).await.code(), "63");
    assert_eq!(c.call(&AGENT_MAC, &rv).await.code(), "00");

    // Malformed messages carrying PIN blocks: 30.
    let f = with_pin(withdrawal(&AGENT, &p, 1_000_000), WRONG_PINS[5]).with(4, "00000001000A");
    note_pin(&f, WRONG_PINS[5], &mut s);
    assert_eq!(c.call_raw(&encode(&f)).await.code(), "30");
    let f = with_pin(purchase(&EWARONG, &p, &rice(100)), WRONG_PINS[5]).with(48, "BRAS0001");
    assert_eq!(c.call_raw(&encode(&f)).await.code(), "30");
    let f = without(with_pin(withdrawal(&AGENT, &p, 100), WRONG_PINS[5]), 42);
    assert_eq!(c.call_raw(&encode(&f)).await.code(), "30");
    let bad_pan = "60000200000001A0";
    let f = withdrawal(&AGENT, g, 100).with(2, bad_pan);
    s.add("malformed DE2", bad_pan);
    assert_eq!(c.call_raw(&encode(&f)).await.code(), "30");
    // An unknown BIN and a Luhn failure (PANs that are not ours are not
    // secrets of ours, but they must not be logged in full either).
    let f = withdrawal(&AGENT, &foreign_pan(), 100);
    s.add("full PAN", foreign_pan());
    assert_eq!(c.call_raw(&encode(&f)).await.code(), "92");
    let f = withdrawal(&AGENT, &bad_luhn(g), 100);
    s.add("full PAN", bad_luhn(g));
    assert_eq!(c.call_raw(&encode(&f)).await.code(), "14");

    // A frame whose structure does not parse (truncated after DE52 began):
    // the connection is closed.
    let f = with_pin(withdrawal(&AGENT, g, 100), WRONG_PINS[5]);
    let mut bytes = encode(&f);
    bytes.truncate(bytes.len() - 3);
    c.send(&bytes).await;
    assert!(
        c.recv_frame().await.ok().flatten().is_none(),
        "a structurally broken frame closes the connection"
    );
    // A zero-length header closes a connection too.
    let mut c2 = Client::connect(srv.addr).await;
    c2.send_raw(&[0, 0]).await;
    assert!(c2.recv_frame().await.ok().flatten().is_none());
    drop(c2);
    drop(c);

    assert_eq!(srv.terminate(), Some(0), "serve exits 0 on SIGTERM");

    // Keys.
    s.add_bytes("terminal PIN key", &hex::decode(PIN_KEY_HEX).unwrap());
    s.add_bytes("MAC key", &hex::decode(MAC_KEY_HEX).unwrap());
    for bank in Bank::ALL {
        s.add_bytes(&format!("{bank} PVK"), &hex::decode(pvk_hex(bank)).unwrap());
    }
    s.add_bytes(
        "master key",
        &hex::decode(MasterKey::test_default().to_hex().as_str()).unwrap(),
    );

    let text = std::fs::read_to_string(&log).expect("read the captured log");
    if std::env::var_os("KKS_TEST_SHOW_LOG").is_some() {
        eprintln!("{text}");
    }
    assert!(!text.trim().is_empty(), "the captured log is empty");
    let lines = text.lines().count();
    // The trace level must really have logged the traffic (else this test
    // proves nothing).
    assert!(lines > 20, "only {lines} log lines:\n{text}");
    assert!(
        text.contains("600002******0120"),
        "requests are logged with the masked PAN at this level"
    );
    let body: String = text
        .lines()
        .map(without_clocks)
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    for (what, secret) in &s.items {
        if let Some(at) = body.find(secret.as_str()) {
            let line = body[..at].lines().count();
            let start = body[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = body[at..].find('\n').map_or(body.len(), |i| at + i);
            found.push(format!(
                "{what} {secret:?} on line {line}: {}",
                &body[start..end]
            ));
        }
    }
    eprintln!(
        "checked {} secret strings against {lines} log lines ({} bytes)",
        s.items.len(),
        text.len()
    );
    assert!(
        found.is_empty(),
        "secrets in the log:\n{}",
        found.join("\n")
    );
}
