//! Hostile clients (issue 7, item 3): the real host (`service::start` on a
//! fixture SQLite store, 127.0.0.1, port 0) under slowloris, connection
//! floods past `connections_max`, half-open connections, zero and oversize
//! length headers, garbage storms and clients that never read, each run
//! while a well-behaved terminal does purchases and withdrawals on the same
//! host.
//!
//! For every attack the test asserts that
//! - the well-behaved terminal's requests are answered as if the host were
//!   quiet: DE39 `00`, exactly the echo fields of INTERFACE §3, a MAC that
//!   verifies for MAC terminals, and balances that moved exactly once per
//!   approval (checked by inquiry at the end);
//! - the attack connections are treated as `src/switch/connection.rs` says:
//!   a frame not complete within the idle timeout closes the connection
//!   unanswered, a zero/oversize/non-digit header or an unparseable message
//!   closes it at once (nothing sent back), a request followed by a
//!   half-close is still answered, connections beyond the cap wait in the
//!   accept backlog and are served when a slot frees, and a client that
//!   never reads its answers is closed once the server's writes have made
//!   no progress for the idle timeout;
//! - nothing panics (a panic hook counts panics in this process, the host's
//!   tasks included), and the host still answers afterwards and shuts down
//!   cleanly.
//!
//! Idle timeouts are short (600–1000 ms) so the whole file runs in well under
//! a minute. Latency under attack is measured, not asserted, by
//! `cargo bench --bench hostile` (figures in RELIABILITY.md).

mod common;

use bytes::{Bytes, BytesMut};
use common::fixture::*;
use kks_switch::iso8583::{Fields, FrameCodec, Framing, Message};
use kks_switch::service::{self, Running};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_util::codec::{Decoder, Encoder};

/// How long any expected event may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------ panic watch

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Count every panic in this process (the host's tasks run here too).
fn watch_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            prev(info);
        }));
    });
}

fn assert_no_panics() {
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a panic happened in this process (see the output above)"
    );
}

// ------------------------------------------------------------------- host

/// The real host on the fixture store with the given listener settings.
async fn host(fx: &Fixture, framing: Framing, idle_ms: u64, connections_max: usize) -> Running {
    let mut cfg = config(fx.url(), "food-only");
    cfg.server.framing = framing;
    cfg.server.idle_timeout_ms = idle_ms;
    cfg.server.connections_max = connections_max;
    service::start(cfg).await.expect("service::start")
}

/// A connection with either header style.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Conn {
    async fn connect(addr: SocketAddr, framing: Framing) -> Conn {
        let stream = timeout(LIMIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: BytesMut::with_capacity(8192),
            codec: FrameCodec::new(framing),
        }
    }

    fn frame(&mut self, msg: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        self.codec.encode(msg, &mut out).unwrap();
        out.to_vec()
    }

    async fn send(&mut self, msg: &[u8]) {
        let f = self.frame(msg);
        self.stream.write_all(&f).await.expect("write");
    }

    /// Next frame, `None` at end of stream (or reset), `Err` after `d`.
    async fn next_within(&mut self, d: Duration) -> Result<Option<Bytes>, ()> {
        let Conn { stream, buf, codec } = self;
        timeout(d, async move {
            loop {
                match codec.decode(buf) {
                    Ok(Some(f)) => return Some(f),
                    Ok(None) => {}
                    Err(e) => panic!("server sent a bad frame: {e}"),
                }
                match stream.read_buf(buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| ())
    }

    async fn recv(&mut self) -> Resp {
        let f = self
            .next_within(LIMIT)
            .await
            .expect("timed out waiting for a response")
            .expect("connection closed while a response was expected");
        resp(&f)
    }

    async fn call(&mut self, t: &Term, f: &Fields) -> Resp {
        self.send(&encode_for(t, f)).await;
        self.recv().await
    }

    /// The server closes the connection within `d`; the frames it sent
    /// before closing.
    async fn closed_within(&mut self, d: Duration) -> Vec<Bytes> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Ok(Some(f)) => got.push(f),
                Ok(None) => return got,
                Err(()) => panic!("connection still open after {d:?} ({} frames)", got.len()),
            }
        }
    }
}

fn resp(frame: &[u8]) -> Resp {
    let m = Message::decode(frame).expect("response decodes");
    m.validate().expect("response fields valid for their class");
    Resp {
        raw: frame.to_vec(),
        f: m.to_fields(),
    }
}

fn echo_req(stan: &str) -> Vec<u8> {
    Fields::new("0800")
        .with(7, de7_now())
        .with(11, stan)
        .with(70, "301")
        .to_vec()
        .unwrap()
}

fn assert_echo_answer(r: &Resp, stan: &str) {
    assert_eq!(r.mti(), "0810", "{r:?}");
    assert_eq!(r.code(), "00", "{r:?}");
    assert_eq!(r.get(11), Some(stan), "{r:?}");
}

// ------------------------------------------------- the well-behaved terminal

/// What the well-behaved terminal did: approvals per card.
#[derive(Default)]
struct Tally {
    /// PAN → (PKH debited, BPNT debited), DE4 units.
    debits: BTreeMap<String, (u64, u64)>,
    approvals: usize,
    slowest: Duration,
}

/// The cards the well-behaved terminal uses. Card `i` gets request kind
/// `i % 4`, so cards 1, 3, 5, 7 take the withdrawals: `rounds / 8` each per
/// call, kept under the count of 10 a day over a test.
const CARDS: u32 = 8;
const PURCHASE: u64 = 500_000;
const CASH: u64 = 1_000_000;

/// `rounds` requests alternating purchase / withdrawal, plain and MAC
/// terminals in turn, `pause` between them; each must be approved with the
/// right echo fields.
async fn well_behaved(c: &mut Conn, rounds: usize, pause: Duration, tally: &mut Tally) {
    for i in 0..rounds {
        let card = active(i as u32 % CARDS).pan();
        let (t, f, pkh, bpnt) = match i % 4 {
            0 => (
                EWARONG,
                purchase(&EWARONG, &card, &rice(PURCHASE)),
                0,
                PURCHASE,
            ),
            1 => (AGENT, withdrawal(&AGENT, &card, CASH), CASH, 0),
            2 => (
                EWARONG_MAC,
                purchase(&EWARONG_MAC, &card, &rice(PURCHASE)),
                0,
                PURCHASE,
            ),
            _ => (AGENT_MAC, withdrawal(&AGENT_MAC, &card, CASH), CASH, 0),
        };
        let t0 = Instant::now();
        let r = c.call(&t, &f).await;
        tally.slowest = tally.slowest.max(t0.elapsed());
        assert_eq!(
            r.code(),
            "00",
            "well-behaved request {i} at {}: {r:?}",
            t.tid
        );
        if t.mac {
            r.assert_mac(&mac_key());
            assert_echo(&f, &r, &[38, 64]);
        } else {
            r.assert_no_mac();
            assert_echo(&f, &r, &[38]);
        }
        let d = tally.debits.entry(card).or_default();
        d.0 += pkh;
        d.1 += bpnt;
        tally.approvals += 1;
        sleep(pause).await;
    }
}

/// Every card's balances (by inquiry, on a new connection: the terminal's
/// own may have idled out meanwhile) are its credits less exactly what was
/// approved.
async fn assert_balances(addr: SocketAddr, framing: Framing, tally: &Tally) {
    let c = &mut Conn::connect(addr, framing).await;
    for (pan, (pkh, bpnt)) in &tally.debits {
        let r = c.call(&AGENT, &inquiry(&AGENT, pan)).await;
        assert_eq!(r.code(), "00", "inquiry: {r:?}");
        assert_eq!(
            r.balances(),
            (PKH_CREDIT - pkh, BPNT_CREDIT - bpnt),
            "balances of a well-behaved card"
        );
    }
}

/// The end of every test: the host still answers a new connection, then
/// shuts down cleanly, and nothing panicked.
async fn finish(addr: SocketAddr, framing: Framing, running: Running) {
    let mut c = Conn::connect(addr, framing).await;
    let stan = next_stan();
    c.send(&echo_req(&stan)).await;
    assert_echo_answer(&c.recv().await, &stan);
    drop(c);
    stop(running).await;
    assert_no_panics();
}

// ------------------------------------------------------------------ attacks

/// Send `frame` a byte at a time, `gap` apart. Returns how many bytes went
/// out before the server closed the connection (all of them if it did not).
async fn dribble(c: &mut Conn, frame: &[u8], gap: Duration) -> usize {
    for (i, b) in frame.iter().enumerate() {
        if c.stream.write_all(std::slice::from_ref(b)).await.is_err() {
            return i;
        }
        // Closed by the server? (A read of 0 or a reset ends it.)
        let mut probe = [0u8; 1];
        if let Ok(r) = timeout(gap, c.stream.peek(&mut probe)).await {
            match r {
                Ok(0) | Err(_) => return i + 1,
                Ok(_) => {}
            }
        }
    }
    frame.len()
}

/// Slowloris that is fast enough: each frame, sent a byte at a time, is
/// complete within the idle timeout, so it is answered (twice per
/// connection).
async fn patient_slowloris(addr: SocketAddr, framing: Framing, gap: Duration) {
    let mut c = Conn::connect(addr, framing).await;
    for _ in 0..2 {
        let stan = next_stan();
        let frame = c.frame(&echo_req(&stan));
        assert_eq!(dribble(&mut c, &frame, gap).await, frame.len());
        assert_echo_answer(&c.recv().await, &stan);
    }
}

/// Slowloris that is too slow: the frame cannot be complete within the
/// idle timeout, so the server closes the connection without an answer,
/// not before the timeout.
async fn hopeless_slowloris(addr: SocketAddr, framing: Framing, gap: Duration, idle: Duration) {
    let t0 = Instant::now();
    let mut c = Conn::connect(addr, framing).await;
    let frame = c.frame(&echo_req(&next_stan()));
    let sent = dribble(&mut c, &frame, gap).await;
    assert!(
        sent < frame.len(),
        "the whole frame went out ({sent} bytes)"
    );
    let got = c.closed_within(LIMIT).await;
    assert!(got.is_empty(), "an unfinished frame was answered");
    assert!(
        t0.elapsed() + Duration::from_millis(50) >= idle,
        "closed after {:?}, before the idle timeout {idle:?}",
        t0.elapsed()
    );
}

async fn slowloris(framing: Framing) {
    watch_panics();
    let fx = Fixture::sqlite().await;
    let idle = Duration::from_millis(1000);
    let h = host(&fx, framing, idle.as_millis() as u64, 1000).await;
    let addr = h.addr;
    let mut good = Conn::connect(addr, framing).await;
    let mut attackers = Vec::new();
    for _ in 0..20 {
        // ~40-byte echo frame at 10 ms a byte: ~0.4 s, inside the timeout.
        attackers.push(tokio::spawn(patient_slowloris(
            addr,
            framing,
            Duration::from_millis(10),
        )));
        // At 100 ms a byte: ~4 s, far beyond it.
        attackers.push(tokio::spawn(hopeless_slowloris(
            addr,
            framing,
            Duration::from_millis(100),
            idle,
        )));
    }
    let mut tally = Tally::default();
    well_behaved(&mut good, 48, Duration::from_millis(20), &mut tally).await;
    for a in attackers {
        timeout(LIMIT, a)
            .await
            .expect("slowloris client did not finish")
            .expect("slowloris assertion");
    }
    assert_balances(addr, framing, &tally).await;
    eprintln!(
        "slowloris ({framing:?}): {} approvals, slowest {:?}",
        tally.approvals, tally.slowest
    );
    drop(good);
    finish(addr, framing, h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_2b() {
    slowloris(Framing::TwoByte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_4a() {
    slowloris(Framing::FourAscii).await;
}

/// Connections past the cap wait in the accept backlog: while the flood
/// holds every slot no more than `cap - 1` of them (the well-behaved
/// terminal has one) are served; as idle ones are closed the rest get in;
/// in the end every flood connection was answered and closed by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_past_the_cap() {
    watch_panics();
    let fx = Fixture::sqlite().await;
    let cap = 16usize;
    let flood = 80usize;
    let idle = Duration::from_millis(600);
    let h = host(&fx, Framing::TwoByte, idle.as_millis() as u64, cap).await;
    let addr = h.addr;
    let mut good = Conn::connect(addr, Framing::TwoByte).await;
    // The well-behaved terminal's slot is taken before the flood.
    let mut tally = Tally::default();
    well_behaved(&mut good, 4, Duration::ZERO, &mut tally).await;

    let t0 = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..flood {
        let mut c = Conn::connect(addr, Framing::TwoByte).await;
        let stan = next_stan();
        c.send(&echo_req(&stan)).await;
        conns.push((c, stan));
    }
    let connected = t0.elapsed();
    let attackers: Vec<_> = conns
        .into_iter()
        .map(|(mut c, stan)| {
            tokio::spawn(async move {
                let r = c.recv().await;
                let answered = t0.elapsed();
                assert_echo_answer(&r, &stan);
                // Then it idles until the server closes it.
                let more = c.closed_within(LIMIT).await;
                assert!(more.is_empty());
                answered
            })
        })
        .collect();
    // A terminal that connects during the flood is served once a slot frees.
    let late = tokio::spawn(async move {
        let mut c = Conn::connect(addr, Framing::TwoByte).await;
        let f = withdrawal(&AGENT, &active(CARDS).pan(), CASH);
        let t = Instant::now();
        let r = c.call(&AGENT, &f).await;
        assert_eq!(r.code(), "00", "{r:?}");
        assert_echo(&f, &r, &[38]);
        t.elapsed()
    });
    well_behaved(&mut good, 60, Duration::from_millis(20), &mut tally).await;
    let mut times = Vec::new();
    for a in attackers {
        times.push(
            timeout(LIMIT, a)
                .await
                .expect("flood client")
                .expect("flood assertion"),
        );
    }
    let late_wait = timeout(LIMIT, late)
        .await
        .expect("late terminal")
        .expect("late terminal");
    tally.debits.entry(active(CARDS).pan()).or_default().0 += CASH;
    // Before the first idle timeout could free a slot, at most cap - 1 flood
    // connections can have been served.
    let early_cut = idle.saturating_sub(Duration::from_millis(100));
    assert!(
        connected < early_cut,
        "the flood took {connected:?} to connect; too slow to check the cap"
    );
    let early = times.iter().filter(|t| **t < early_cut).count();
    assert!(
        early <= cap - 1,
        "{early} flood connections answered before {early_cut:?} with a cap of {cap}"
    );
    assert!(early > 0, "no flood connection was served at once");
    assert_balances(addr, Framing::TwoByte, &tally).await;
    eprintln!(
        "flood: {flood} connections past a cap of {cap}: {early} answered at once, last after {:?}; \
         a terminal connecting during the flood waited {late_wait:?}; well-behaved slowest {:?}",
        times.iter().max().unwrap(),
        tally.slowest
    );
    drop(good);
    finish(addr, Framing::TwoByte, h).await;
}

/// Half-open connections: nothing, part of a header, a header and part of
/// the body, a header promising 4096 bytes; each is closed unanswered after
/// the idle timeout. A connection that sends one whole request and then part
/// of the next gets the first answered, then is closed. A request followed
/// by a half-close (FIN) is still answered before the server closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections() {
    watch_panics();
    let fx = Fixture::sqlite().await;
    let idle = Duration::from_millis(800);
    let h = host(&fx, Framing::TwoByte, idle.as_millis() as u64, 1000).await;
    let addr = h.addr;
    let mut good = Conn::connect(addr, Framing::TwoByte).await;

    let body = echo_req("000001");
    let whole = {
        let mut v = (body.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(&body);
        v
    };
    let partials: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", vec![]),
        ("one header byte", whole[..1].to_vec()),
        ("header only", whole[..2].to_vec()),
        (
            "header and half the body",
            whole[..2 + body.len() / 2].to_vec(),
        ),
        ("all but the last byte", whole[..whole.len() - 1].to_vec()),
        (
            "4096 promised, 10 sent",
            [&[0x10, 0x00][..], &[b'0'; 10]].concat(),
        ),
    ];
    let mut attackers = Vec::new();
    for (what, bytes) in partials {
        for _ in 0..8 {
            let bytes = bytes.clone();
            attackers.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let mut c = Conn::connect(addr, Framing::TwoByte).await;
                c.stream.write_all(&bytes).await.unwrap();
                let got = c.closed_within(LIMIT).await;
                assert!(got.is_empty(), "{what}: answered");
                assert!(
                    t0.elapsed() + Duration::from_millis(50) >= idle,
                    "{what}: closed after {:?}, before the idle timeout",
                    t0.elapsed()
                );
            }));
        }
        // One whole request first, then the partial.
        attackers.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr, Framing::TwoByte).await;
            let stan = next_stan();
            let mut out = c.frame(&echo_req(&stan));
            out.extend_from_slice(&bytes);
            c.stream.write_all(&out).await.unwrap();
            let got = c.closed_within(LIMIT).await;
            assert_eq!(got.len(), 1, "{what} after a whole request");
            assert_echo_answer(&resp(&got[0]), &stan);
        }));
    }
    // Half-close after a financial request: answered, then closed.
    let half_closed = tokio::spawn(async move {
        let mut out = Vec::new();
        for i in 0..3u32 {
            let mut c = Conn::connect(addr, Framing::TwoByte).await;
            let card = active(CARDS + 1 + i).pan();
            let f = purchase(&EWARONG, &card, &rice(PURCHASE));
            c.send(&encode(&f)).await;
            c.stream.shutdown().await.unwrap();
            let got = c.closed_within(LIMIT).await;
            assert_eq!(got.len(), 1, "request then FIN: one answer");
            let r = resp(&got[0]);
            assert_eq!(r.code(), "00", "{r:?}");
            assert_echo(&f, &r, &[38]);
            out.push(card);
        }
        out
    });
    let mut tally = Tally::default();
    well_behaved(&mut good, 48, Duration::from_millis(20), &mut tally).await;
    for a in attackers {
        timeout(LIMIT, a)
            .await
            .expect("half-open client")
            .expect("half-open assertion");
    }
    for card in timeout(LIMIT, half_closed).await.unwrap().unwrap() {
        tally.debits.entry(card).or_default().1 += PURCHASE;
    }
    assert_balances(addr, Framing::TwoByte, &tally).await;
    eprintln!(
        "half-open: {} approvals, slowest {:?}",
        tally.approvals, tally.slowest
    );
    drop(good);
    finish(addr, Framing::TwoByte, h).await;
}

/// Zero, oversize and (4a) non-digit length headers, and whole frames
/// whose message cannot be parsed (too short for MTI and bitmap; a bitmap
/// naming DE2 with nothing after it), close the connection at once with
/// nothing sent back, even when a valid request follows, and even after an
/// earlier request on it was answered. Both framings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_and_oversize_lengths() {
    watch_panics();
    let fx = Fixture::sqlite().await;
    let mut tally = Tally::default();
    for (framing, headers) in [
        (
            Framing::TwoByte,
            vec![
                vec![0x00, 0x00],
                vec![0xFF, 0xFF],
                vec![0x10, 0x01],
                vec![0x80, 0x00],
                // Whole frames whose message cannot be parsed.
                [&[0x00, 0x03][..], b"020"].concat(),
                [&[0x00, 0x0C][..], b"0200", &[0x40, 0, 0, 0, 0, 0, 0, 0]].concat(),
            ],
        ),
        (
            Framing::FourAscii,
            vec![
                b"0000".to_vec(),
                b"9999".to_vec(),
                b"4097".to_vec(),
                b"00a4".to_vec(),
                b" 123".to_vec(),
                b"-001".to_vec(),
                vec![0x00, 0x2a, b'0', b'8'],
                b"0003020".to_vec(),
                [&b"00120200"[..], &[0x40, 0, 0, 0, 0, 0, 0, 0]].concat(),
            ],
        ),
    ] {
        let idle = Duration::from_millis(5_000);
        let h = host(&fx, framing, idle.as_millis() as u64, 1000).await;
        let addr = h.addr;
        let mut good = Conn::connect(addr, framing).await;
        let mut attackers = Vec::new();
        for hdr in headers {
            for answered_first in [false, true] {
                for _ in 0..4 {
                    let hdr = hdr.clone();
                    attackers.push(tokio::spawn(async move {
                        let mut c = Conn::connect(addr, framing).await;
                        let stan = next_stan();
                        let mut out = Vec::new();
                        if answered_first {
                            out.extend(c.frame(&echo_req(&stan)));
                        }
                        out.extend_from_slice(&hdr);
                        out.extend(c.frame(&echo_req(&next_stan())));
                        let t0 = Instant::now();
                        c.stream.write_all(&out).await.unwrap();
                        // Closed at once: well before the 5 s idle timeout.
                        let got = c.closed_within(Duration::from_secs(3)).await;
                        assert_eq!(
                            got.len(),
                            answered_first as usize,
                            "header {hdr:02x?}: frames before the close"
                        );
                        if answered_first {
                            assert_echo_answer(&resp(&got[0]), &stan);
                        }
                        t0.elapsed()
                    }));
                }
            }
        }
        well_behaved(&mut good, 24, Duration::from_millis(10), &mut tally).await;
        let mut slowest = Duration::ZERO;
        for a in attackers {
            slowest = slowest.max(timeout(LIMIT, a).await.unwrap().expect("bad-length client"));
        }
        assert_balances(addr, framing, &tally).await;
        eprintln!("bad lengths ({framing:?}): closed within {slowest:?}");
        drop(good);
        finish(addr, framing, h).await;
    }
}

/// A client that sends requests and never reads the answers (small receive
/// buffer): once its buffers are full the server's writes make no progress,
/// and after the idle timeout the server closes the connection (our writes
/// then fail) instead of holding it, or growing memory, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads() {
    watch_panics();
    let fx = Fixture::sqlite().await;
    let idle = Duration::from_millis(800);
    let h = host(&fx, Framing::TwoByte, idle.as_millis() as u64, 1000).await;
    let addr = h.addr;
    let mut good = Conn::connect(addr, Framing::TwoByte).await;
    let mut readers_not = Vec::new();
    for _ in 0..4 {
        readers_not.push(tokio::spawn(async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let mut s = sock.connect(addr).await.expect("connect");
            let mut batch = BytesMut::new();
            let mut codec = FrameCodec::new(Framing::TwoByte);
            for i in 0..100u32 {
                codec
                    .encode(&echo_req(&format!("{i:06}"))[..], &mut batch)
                    .unwrap();
            }
            let t0 = Instant::now();
            let mut sent = 0usize;
            let r = timeout(LIMIT, async {
                loop {
                    if let Err(e) = s.write_all(&batch).await {
                        return e;
                    }
                    sent += 100;
                }
            })
            .await;
            let e = r.unwrap_or_else(|_| {
                panic!("still writable after {LIMIT:?} and {sent} requests unread")
            });
            assert!(
                t0.elapsed() + Duration::from_millis(50) >= idle,
                "closed after {:?} ({e}), before the idle timeout",
                t0.elapsed()
            );
            (sent, t0.elapsed())
        }));
    }
    let mut tally = Tally::default();
    well_behaved(&mut good, 48, Duration::from_millis(20), &mut tally).await;
    let mut most = (0, Duration::ZERO);
    for r in readers_not {
        let (sent, took) = timeout(LIMIT * 2, r).await.unwrap().expect("non-reader");
        most = most.max((sent, took));
    }
    assert_balances(addr, Framing::TwoByte, &tally).await;
    eprintln!(
        "non-readers: closed after at most {} unread requests / {:?}; well-behaved slowest {:?}",
        most.0, most.1, tally.slowest
    );
    drop(good);
    finish(addr, Framing::TwoByte, h).await;
}

// ----------------------------------------------------------- garbage storm

/// xorshift64*: reproducible garbage.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One storm connection's garbage: random bytes, a valid header with a
/// random body, or a valid request (for a card the well-behaved terminal
/// does not use) with one byte changed, in a few writes.
fn garbage(rng: &mut Rng, framing: Framing) -> Vec<u8> {
    let mut codec = FrameCodec::new(framing);
    let mut out = BytesMut::new();
    for _ in 0..1 + rng.below(4) {
        match rng.below(3) {
            0 => {
                let n = 1 + rng.below(2048) as usize;
                out.extend_from_slice(&rng.bytes(n))
            }
            1 => {
                let n = 1 + rng.below(600) as usize;
                let body = rng.bytes(n);
                codec.encode(&body[..], &mut out).unwrap();
            }
            _ => {
                let f = purchase(&EWARONG, &RICH.pan(), &rice(PURCHASE));
                let mut m = encode(&f);
                let at = rng.below(m.len() as u64) as usize;
                m[at] = rng.next() as u8;
                codec.encode(&m[..], &mut out).unwrap();
            }
        }
    }
    out.to_vec()
}

/// Storm connections until `until`: every frame the server sends back is a
/// valid response message; every storm connection ends (closed at once, or
/// after the idle timeout when the garbage left a frame unfinished).
async fn storm(addr: SocketAddr, framing: Framing, seed: u64, until: Instant) -> (usize, usize) {
    let mut rng = Rng(seed | 1);
    let (mut conns, mut answers) = (0, 0);
    while Instant::now() < until {
        let mut c = Conn::connect(addr, framing).await;
        let g = garbage(&mut rng, framing);
        // The server may close mid-write; that is fine.
        let _ = c.stream.write_all(&g).await;
        for f in c.closed_within(LIMIT).await {
            let m = Message::decode(&f[..]).expect("storm answer decodes");
            m.validate().expect("storm answer valid");
            // A response MTI: function digit odd (request's + 1), last 0.
            let mti = m.mti();
            assert!(
                matches!(mti[2], b'1' | b'3' | b'5' | b'7' | b'9') && mti[3] == b'0',
                "answer MTI {:?}",
                String::from_utf8_lossy(mti)
            );
            assert!(m.get(39).is_some(), "answer without DE39");
            answers += 1;
        }
        conns += 1;
    }
    (conns, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_storm() {
    watch_panics();
    let fx = Fixture::sqlite().await;
    // The two framings run one after the other on the same store.
    let mut tally = Tally::default();
    for framing in [Framing::TwoByte, Framing::FourAscii] {
        let h = host(&fx, framing, 600, 1000).await;
        let addr = h.addr;
        let mut good = Conn::connect(addr, framing).await;
        let until = Instant::now() + Duration::from_secs(3);
        let storms: Vec<_> = (0..12u64)
            .map(|i| tokio::spawn(storm(addr, framing, 0x5EED_0000 + i, until)))
            .collect();
        well_behaved(&mut good, 32, Duration::from_millis(30), &mut tally).await;
        let (mut conns, mut answers) = (0, 0);
        for s in storms {
            let (c, a) = timeout(LIMIT * 2, s)
                .await
                .expect("storm")
                .expect("storm assertion");
            conns += c;
            answers += a;
        }
        assert!(conns >= 12, "storm made {conns} connections");
        assert_balances(addr, framing, &tally).await;
        eprintln!(
            "garbage storm ({framing:?}): {conns} connections, {answers} answers, \
             {} well-behaved approvals, slowest {:?}",
            tally.approvals, tally.slowest
        );
        drop(good);
        finish(addr, framing, h).await;
    }
}

/// All of the above at once, against one host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_attacks_together() {
    watch_panics();
    let fx = Fixture::sqlite().await;
    let idle = Duration::from_millis(800);
    let cap = 64;
    let h = host(&fx, Framing::TwoByte, idle.as_millis() as u64, cap).await;
    let addr = h.addr;
    let mut good = Conn::connect(addr, Framing::TwoByte).await;
    let until = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        tasks.push(tokio::spawn(async move {
            storm(addr, Framing::TwoByte, 0xA11_0000 + i, until).await;
        }));
    }
    for _ in 0..6 {
        tasks.push(tokio::spawn(patient_slowloris(
            addr,
            Framing::TwoByte,
            Duration::from_millis(10),
        )));
        tasks.push(tokio::spawn(hopeless_slowloris(
            addr,
            Framing::TwoByte,
            Duration::from_millis(100),
            idle,
        )));
    }
    for hdr in [[0u8, 0], [0xFF, 0xFF], [0x10, 0x01]] {
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr, Framing::TwoByte).await;
            c.stream.write_all(&hdr).await.unwrap();
            assert!(c.closed_within(Duration::from_secs(3)).await.is_empty());
        }));
    }
    // Half-open connections that fill the remaining slots for a while.
    for _ in 0..(cap * 2) {
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr, Framing::TwoByte).await;
            c.stream.write_all(&[0x00]).await.unwrap();
            assert!(c.closed_within(LIMIT).await.is_empty());
        }));
    }
    let mut tally = Tally::default();
    well_behaved(&mut good, 64, Duration::from_millis(20), &mut tally).await;
    for t in tasks {
        timeout(LIMIT * 2, t)
            .await
            .expect("attacker")
            .expect("attacker assertion");
    }
    assert_balances(addr, Framing::TwoByte, &tally).await;
    eprintln!(
        "all attacks: {} approvals, slowest {:?}",
        tally.approvals, tally.slowest
    );
    drop(good);
    finish(addr, Framing::TwoByte, h).await;
}
