//! README's main command, end to end: `kks-switch demo` on an empty
//! directory seeds, disburses and serves; a balance inquiry built from the
//! printed `cards.csv` and `terminals.csv` is approved with money on the card;
//! `disburse` run beside the live server goes through its admin endpoint;
//! SIGTERM stops it cleanly and the audit is clean.

mod common;

use bytes::BytesMut;
use common::db::run_cli;
use kks_switch::crypto::{compute_mac, encrypt_pin_block, MacKey, Pin, PinKey};
use kks_switch::iso8583::{Builder, FrameCodec, Framing, Message};
use kks_switch::pan::Pan;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

async fn call(stream: &mut tokio::net::TcpStream, msg: &[u8]) -> Vec<u8> {
    let mut codec = FrameCodec::new(Framing::TwoByte);
    let mut out = BytesMut::new();
    codec.encode(msg, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(f) = codec.decode(&mut buf).unwrap() {
                return f.to_vec();
            }
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "connection closed"
            );
        }
    })
    .await
    .expect("response within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_seeds_disburses_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kks-switch"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut printed = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no `listening on` line; printed so far: {printed:?}"));
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.to_string();
        }
        printed.push(line);
    };
    assert!(
        printed.iter().any(|l| l.contains("cards.csv")),
        "{printed:?}"
    );
    let cards = std::fs::read_to_string(dir.path().join("kks-demo/cards.csv")).unwrap();
    let terminals = std::fs::read_to_string(dir.path().join("kks-demo/terminals.csv")).unwrap();
    assert!(cards.starts_with("pan,bank,kk,pin,status\n"));
    assert!(
        terminals.starts_with("terminal_id,merchant_id,kind,bank,mcc,pin_key_hex,mac_key_hex\n")
    );

    // A balance inquiry for the first card at the first agent, built from the files.
    let card: Vec<&str> = cards.lines().nth(1).unwrap().split(',').collect();
    let agent: Vec<&str> = terminals
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|t| t[2] == "agent")
        .unwrap();
    let pan = Pan::parse(card[0].as_bytes()).unwrap();
    let block = encrypt_pin_block(
        &Pin::new(card[3].as_bytes()).unwrap(),
        &pan,
        &PinKey::from_hex(agent[5]).unwrap(),
    );
    let bank_code = kks_switch::pan::Bank::from_name(agent[3]).unwrap().code();
    let mut msg = BytesMut::new();
    let mut b = Builder::new(&mut msg, b"0200");
    for (n, v) in [
        (2u8, card[0].as_bytes()),
        (3, b"310000".as_slice()),
        (4, b"000000000000"),
        (7, b"1125083000"),
        (11, b"000001"),
        (32, bank_code.as_bytes()),
        (41, agent[0].as_bytes()),
        (42, agent[1].as_bytes()),
        (49, b"360"),
        (52, &block),
    ] {
        b.field(n, v).unwrap();
    }
    if agent[6].is_empty() {
        b.finish();
    } else {
        let k = MacKey::from_hex(agent[6]).unwrap();
        b.finish_with_mac(|m| compute_mac(&k, m)).unwrap();
    }
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let resp = call(&mut stream, &msg).await;
    let m = Message::decode(&resp[..]).unwrap();
    assert_eq!(
        m.get(39),
        Some(&b"00"[..]),
        "inquiry answered {:?}",
        m.get_str(39)
    );
    let de54 = m.get_str(54).expect("DE54 on an approved inquiry");
    let bpnt: u64 = de54[28..40].parse().unwrap();
    let pkh: u64 = de54[8..20].parse().unwrap();
    assert!(bpnt + pkh > 0, "the demo credited the card: {de54}");

    // disburse beside the running server goes through its admin endpoint.
    let db = format!("sqlite://{}", dir.path().join("kks.db").display());
    let (code, out, err) = run_cli(
        &[
            "--db",
            &db,
            "disburse",
            "--program",
            "PKH",
            "--period",
            "2020-T1",
            "--report",
            &dir.path().join("rejects.csv").display().to_string(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "disburse while serving:\n{out}\n{err}");
    assert!(
        err.contains("admin endpoint"),
        "disburse did not go through the server:\n{err}"
    );

    // SIGTERM: graceful stop, exit 0, then a clean audit.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stop = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < stop,
            "demo did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "demo exit status {status}");
    let (code, out, err) = run_cli(&["--db", &db, "audit"], Duration::from_secs(120));
    assert_eq!(code, Some(0), "audit:\n{out}\n{err}");
}
