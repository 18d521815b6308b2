//! Authorization flows driven by messages that pyiso8583 builds (issue 5,
//! item 9): Python (`tests/py/auth_flows.py`, pyiso8583 4.x `default` spec)
//! encodes purchases, withdrawals, inquiries and reversals from the golden
//! field values of `shared/vectors/messages.md` (and MACs them with the
//! standard library's HMAC for MAC terminals); this test sends them over TCP
//! to the real host on a fixture store, and Python decodes the responses
//! (and verifies their MACs). Codes and balances are asserted on what
//! Python decoded.
//!
//! The interpreter is `$KKS_PYTHON` if set, else `.venv/bin/python` in the
//! crate, else `python3`. Without pyiso8583 the test is skipped with a
//! message, except under CI (`$CI` set), where that is a failure.

mod common;

use common::fixture::*;
use kks_switch::iso8583::{default_spec, Class, Fields};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

fn python() -> Option<PathBuf> {
    common::pyiso8583_python("pyiso8583 authorization flows")
}

/// The Python co-process.
struct Py {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Py {
    fn start(py: &PathBuf) -> Py {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/auth_flows.py");
        let mut child = Command::new(py)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Py {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, req: Value) -> Value {
        writeln!(self.stdin, "{req}").expect("write to python");
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from python");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("python answered {line:?}: {e}"));
        if let Some(e) = v.get("error") {
            panic!("python failed on {req}: {e}");
        }
        v
    }

    /// pyiso8583's encoding of `f` (MAC'd with the fixture key when asked).
    fn encode(&mut self, f: &Fields, mac: bool) -> Vec<u8> {
        let v = self.ask(json!({
            "op": "encode",
            "t": String::from_utf8_lossy(&f.mti),
            "fields": to_py(f),
            "mac_key": if mac { Value::from(MAC_KEY_HEX) } else { Value::Null },
        }));
        hex::decode(v["hex"].as_str().unwrap()).unwrap()
    }

    /// pyiso8583's decoding of a response.
    fn decode(&mut self, raw: &[u8], mac: bool) -> Decoded {
        let v = self.ask(json!({
            "op": "decode",
            "hex": hex::encode_upper(raw),
            "mac_key": if mac { Value::from(MAC_KEY_HEX) } else { Value::Null },
        }));
        Decoded {
            t: v["t"].as_str().unwrap().to_string(),
            fields: v["fields"].as_object().unwrap().clone(),
            mac_ok: v["mac_ok"].as_bool(),
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as pyiso8583 decoded it.
#[derive(Debug)]
struct Decoded {
    t: String,
    fields: Map<String, Value>,
    mac_ok: Option<bool>,
}

impl Decoded {
    fn get(&self, n: u8) -> Option<&str> {
        self.fields.get(&n.to_string()).and_then(Value::as_str)
    }
    fn code(&self) -> &str {
        self.get(39).expect("DE39")
    }
    fn balances(&self) -> (u64, u64) {
        parse_de54(self.get(54).unwrap_or_else(|| panic!("no DE54: {self:?}")))
    }
}

/// Our fields in pyiso8583's representation: text, or hex for `b` fields.
fn to_py(f: &Fields) -> Map<String, Value> {
    let spec = default_spec();
    f.fields
        .iter()
        .map(|(&n, v)| {
            let s = if spec.field(n).class == Class::B {
                hex::encode_upper(v)
            } else {
                String::from_utf8(v.clone()).unwrap()
            };
            (n.to_string(), Value::from(s))
        })
        .collect()
}

/// Send a pyiso8583-built request, return pyiso8583's decoding and the raw
/// response.
async fn exchange(py: &mut Py, c: &mut Client, f: &Fields, mac: bool) -> (Decoded, Vec<u8>) {
    exchange_as(py, c, f, mac, mac).await
}

/// As [`exchange`], MAC'ing the request when `sign` and expecting a MAC'd
/// response when `mac_terminal`.
async fn exchange_as(
    py: &mut Py,
    c: &mut Client,
    f: &Fields,
    sign: bool,
    mac: bool,
) -> (Decoded, Vec<u8>) {
    let msg = py.encode(f, sign);
    c.send(&msg).await;
    let frame = c
        .recv_frame()
        .await
        .expect("read")
        .expect("connection closed");
    let d = py.decode(&frame, mac);
    if mac {
        assert_eq!(
            d.mac_ok,
            Some(true),
            "response MAC verifies in Python: {d:?}"
        );
    } else {
        assert!(
            !d.fields.contains_key("64") && !d.fields.contains_key("128"),
            "no MAC to a non-MAC terminal: {d:?}"
        );
    }
    (d, frame.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiso8583_built_flows() {
    let Some(pyexe) = python() else { return };
    let mut py = Py::start(&pyexe);
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;

    // pyiso8583 builds the golden messages byte for byte.
    for g in common::all() {
        assert_eq!(
            py.encode(&g.fields, false),
            g.message(),
            "{}: pyiso8583's bytes are the golden bytes",
            g.name
        );
    }

    // Golden purchase (BPNT Rp93.000) at EW000001.
    let (r, first) = exchange(&mut py, &mut c, &common::purchase().fields, false).await;
    assert_eq!((r.t.as_str(), r.code()), ("0210", "00"), "{r:?}");
    assert_eq!(r.get(38).map(str::len), Some(6));
    assert_eq!(r.get(2), Some(GOLDEN_PAN));
    assert_eq!(r.get(11), Some("000101"));
    assert_eq!(r.get(37), Some("000000000101"));
    // Its retransmission: identical bytes.
    let (_, again) = exchange(&mut py, &mut c, &common::purchase().fields, false).await;
    assert_eq!(first, again, "retransmission replays the response");

    // Golden inquiry: DE54 as pyiso8583 reads it.
    let (r, _) = exchange(&mut py, &mut c, &common::inquiry().fields, false).await;
    assert_eq!(r.code(), "00");
    assert_eq!(r.get(54), Some("1002360C0000750000006002360C000050700000"));

    // Golden withdrawal (Rp100.000 PKH at AG000001), then inquiry.
    let (r, _) = exchange(&mut py, &mut c, &common::withdrawal().fields, false).await;
    assert_eq!((r.t.as_str(), r.code()), ("0210", "00"), "{r:?}");
    let q = inquiry(&AGENT, GOLDEN_PAN);
    let (r, _) = exchange(&mut py, &mut c, &q, false).await;
    assert_eq!(r.balances(), (65_000_000, 50_700_000));

    // Golden reversal of that withdrawal: 0410 00 with DE90 echoed.
    let rv = common::reversal();
    let (r, _) = exchange(&mut py, &mut c, &rv.fields, false).await;
    assert_eq!((r.t.as_str(), r.code()), ("0410", "00"), "{r:?}");
    assert_eq!(
        r.get(90),
        Some("020000010211250830000000000000200000000000")
    );
    assert_eq!(r.get(38), None, "no DE38 on a 0410");
    let (r, _) = exchange(&mut py, &mut c, &inquiry(&AGENT, GOLDEN_PAN), false).await;
    assert_eq!(r.balances(), (75_000_000, 50_700_000));
    // A second reversal: 00, no second credit.
    let rv2 = rv.fields.clone().with(11, "000105");
    let (r, _) = exchange(&mut py, &mut c, &rv2, false).await;
    assert_eq!(r.code(), "00");
    let (r, _) = exchange(&mut py, &mut c, &inquiry(&AGENT, GOLDEN_PAN), false).await;
    assert_eq!(r.balances(), (75_000_000, 50_700_000));

    // The golden purchase's fields from the MAC e-Warong, MAC'd by Python.
    let pm = common::purchase()
        .fields
        .with(11, "000201")
        .with(41, EWARONG_MAC.tid)
        .with(42, EWARONG_MAC.mid);
    let (r, _) = exchange(&mut py, &mut c, &pm, true).await;
    assert_eq!(r.code(), "00", "{r:?}");
    assert!(r.fields.contains_key("64"));
    // Unsigned: 63, and the 63 is MAC'd.
    let (r, _) = exchange_as(&mut py, &mut c, &pm.clone().with(11, "000202"), false, true).await;
    assert_eq!(r.code(), "63", "{r:?}");

    // Withdrawal and reversal from the MAC agent (DE128 on the reversal).
    let wm = common::withdrawal()
        .fields
        .with(11, "000301")
        .with(41, AGENT_MAC.tid)
        .with(42, AGENT_MAC.mid);
    let (r, _) = exchange(&mut py, &mut c, &wm, true).await;
    assert_eq!(r.code(), "00", "{r:?}");
    let rvm = rv
        .fields
        .clone()
        .with(11, "000302")
        .with(41, AGENT_MAC.tid)
        .with(42, AGENT_MAC.mid)
        .with(90, "020000030111250830000000000000200000000000");
    let (r, _) = exchange(&mut py, &mut c, &rvm, true).await;
    assert_eq!((r.t.as_str(), r.code()), ("0410", "00"), "{r:?}");
    assert!(r.fields.contains_key("128"), "0410 MAC in DE128: {r:?}");
    let (r, _) = exchange(&mut py, &mut c, &inquiry(&AGENT, GOLDEN_PAN), false).await;
    assert_eq!(r.balances(), (75_000_000, 50_700_000 - 9_300_000));

    // Declines, decoded by pyiso8583.
    let wrong = common::withdrawal()
        .fields
        .with(11, "000401")
        .with(52, pin_block(GOLDEN_PAN, "000000"));
    let (r, _) = exchange(&mut py, &mut c, &wrong, false).await;
    assert_eq!((r.code(), r.get(44)), ("55", Some("TRIES-LEFT:2")));
    let rokk = common::purchase()
        .fields
        .with(11, "000402")
        .with(4, "000009500000")
        .with(48, "BRAS0005000006500000ROKK0002000003000000");
    let (r, _) = exchange(&mut py, &mut c, &rokk, false).await;
    assert_eq!((r.code(), r.get(44)), ("57", Some("INELIGIBLE:ROKK")));
    let conflict = common::purchase().fields.with(4, "000009300001");
    let (r, _) = exchange(&mut py, &mut c, &conflict, false).await;
    assert_eq!(r.code(), "94", "golden key, other DE4: {r:?}");
    let big = common::withdrawal()
        .fields
        .with(11, "000403")
        .with(4, "000100000001");
    let (r, _) = exchange(&mut py, &mut c, &big, false).await;
    assert_eq!(r.code(), "61");

    // A BNI card at the golden BRI e-Warong.
    let bni = BNI.pan();
    let pb = common::purchase()
        .fields
        .with(2, &bni)
        .with(11, "000501")
        .with(52, pin_block(&bni, PIN));
    let (r, _) = exchange(&mut py, &mut c, &pb, false).await;
    assert_eq!(r.code(), "00", "{r:?}");
    let (r, _) = exchange(&mut py, &mut c, &inquiry(&AGENT, &bni), false).await;
    assert_eq!(r.balances(), (PKH_CREDIT, BPNT_CREDIT - 9_300_000));

    drop(c);
    stop(host).await;
}
