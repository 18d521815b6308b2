//! The switch over real TCP on 127.0.0.1, port 0 (INTERFACE §1, §3): network
//! management, format errors, pipelining, connection-level failures that
//! must touch no other connection, 4a framing, the idle timeout, graceful
//! shutdown and the connection cap. No ledger is attached (`NoIssuer`), so
//! financial requests are answered 91 after the same validation as always.
//!
//! Every read has a timeout, so a bug fails the test instead of hanging it.

mod common;

use bytes::{Bytes, BytesMut};
use kks_switch::config::ServerConfig;
use kks_switch::iso8583::{Fields, FrameCodec, Framing, Message};
use kks_switch::switch::handler::answer;
use kks_switch::switch::{serve, Authorizer, NoIssuer, Reply, Sink};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

/// Longest any single expected read may take before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a "nothing arrives" check waits.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------- harness

struct Server {
    addr: SocketAddr,
    token: CancellationToken,
    handle: JoinHandle<io::Result<()>>,
}

fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".into(),
        idle_timeout_ms: 60_000,
        shutdown_grace_ms: 5_000,
        ..ServerConfig::default()
    }
}

async fn start_with<A: Authorizer>(cfg: ServerConfig, auth: Arc<A>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(serve(listener, cfg, auth, token.clone()));
    Server {
        addr,
        token,
        handle,
    }
}

async fn start(cfg: ServerConfig) -> Server {
    start_with(cfg, Arc::new(NoIssuer)).await
}

impl Server {
    /// Cancel and check that serve() returns, cleanly, in time.
    async fn stop(self) {
        self.token.cancel();
        timeout(READ_TIMEOUT, self.handle)
            .await
            .expect("serve() did not return after shutdown")
            .expect("serve task panicked")
            .expect("serve() returned an error");
    }
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Self::connect_framed(addr, Framing::TwoByte).await
    }

    async fn connect_framed(addr: SocketAddr, framing: Framing) -> Client {
        let stream = timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::with_capacity(8192),
            codec: FrameCodec::new(framing),
        }
    }

    /// Write one message with its length header.
    async fn send(&mut self, msg: &[u8]) {
        let mut out = BytesMut::new();
        self.codec.encode(msg, &mut out).unwrap();
        self.send_raw(&out).await;
    }

    async fn send_fields(&mut self, f: &Fields) {
        self.send(&f.to_vec().unwrap()).await;
    }

    /// Write bytes as they are (headers included by the caller).
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame, `None` at end of stream, or `Err` when `d` passes.
    async fn recv_within(&mut self, d: Duration) -> Result<io::Result<Option<Bytes>>, ()> {
        let codec = &mut self.codec;
        let buf = &mut self.buf;
        let stream = &mut self.stream;
        timeout(d, async move {
            loop {
                if let Some(f) = codec.decode(buf).map_err(io::Error::other)? {
                    return Ok(Some(f));
                }
                if stream.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            }
        })
        .await
        .map_err(|_| ())
    }

    /// The next response, decoded and checked to be a valid message.
    async fn recv(&mut self) -> Fields {
        let frame = self
            .recv_within(READ_TIMEOUT)
            .await
            .expect("timed out waiting for a response")
            .expect("read error")
            .expect("connection closed while a response was expected");
        let m = Message::decode(&frame[..]).expect("response decodes");
        m.validate()
            .expect("response fields are valid for their class");
        m.to_fields()
    }

    async fn call(&mut self, f: &Fields) -> Fields {
        self.send_fields(f).await;
        self.recv().await
    }

    /// The server closed this connection: end of stream, nothing before it.
    async fn expect_closed(&mut self) {
        match self.recv_within(READ_TIMEOUT).await {
            Err(()) => panic!("connection still open after {READ_TIMEOUT:?}"),
            Ok(Ok(None)) => assert!(self.buf.is_empty(), "partial frame before close"),
            Ok(Ok(Some(f))) => panic!("expected close, got a frame of {} bytes", f.len()),
            Ok(Err(e)) => panic!("expected a clean close, got {e}"),
        }
    }

    /// Nothing arrives (and the connection is not closed) for `QUIET`.
    async fn expect_quiet(&mut self) {
        if let Ok(r) = self.recv_within(QUIET).await {
            panic!("expected silence, got {r:?}");
        }
    }
}

fn echo(stan: &str) -> Fields {
    network(stan, "301")
}

fn network(stan: &str, code: &str) -> Fields {
    Fields::new("0800")
        .with(7, "1125083000")
        .with(11, stan)
        .with(70, code)
}

fn get(f: &Fields, n: u8) -> Option<&str> {
    f.fields.get(&n).map(|v| std::str::from_utf8(v).unwrap())
}

/// The golden purchase with another STAN.
fn purchase(stan: &str) -> Fields {
    let mut f = common::purchase().fields;
    f.fields.insert(11, stan.as_bytes().to_vec());
    f
}

// ---------------------------------------------------------------- 0800

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_answered_0810_00_echoing_de7_11_70() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    // The golden frame as bytes, header included.
    c.send_raw(&common::echo_0800().frame()).await;
    let r = c.recv().await;
    assert_eq!(
        r,
        Fields::new("0810")
            .with(7, "1125083000")
            .with(11, "000001")
            .with(39, "00")
            .with(70, "301")
    );
    // DE41, when sent, is echoed too.
    let r = c.call(&echo("000002").with(41, "EW000001")).await;
    assert_eq!(
        r,
        Fields::new("0810")
            .with(7, "1125083000")
            .with(11, "000002")
            .with(39, "00")
            .with(41, "EW000001")
            .with(70, "301")
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_on_and_sign_off_answered_00_connection_stays_usable() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    let r = c.call(&network("000010", "001").with(41, "AG000001")).await;
    assert_eq!(&r.mti, b"0810");
    assert_eq!(get(&r, 39), Some("00"));
    assert_eq!(get(&r, 70), Some("001"));
    assert_eq!(get(&r, 11), Some("000010"));
    let r = c.call(&network("000011", "002").with(41, "AG000001")).await;
    assert_eq!(get(&r, 39), Some("00"));
    assert_eq!(get(&r, 70), Some("002"));
    assert_eq!(get(&r, 11), Some("000011"));
    // Sign-off closes nothing.
    let r = c.call(&echo("000012")).await;
    assert_eq!(get(&r, 39), Some("00"));
    assert_eq!(get(&r, 11), Some("000012"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_network_code_answered_12() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    for code in ["999", "000", "161"] {
        let r = c.call(&network("000020", code)).await;
        assert_eq!(
            r,
            Fields::new("0810")
                .with(7, "1125083000")
                .with(11, "000020")
                .with(39, "12")
                .with(70, code),
            "DE70 {code}"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_pipelined_echoes_all_answered_matched_by_stan() {
    const N: usize = 1000;
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    let mut out = BytesMut::new();
    let mut codec = FrameCodec::new(Framing::TwoByte);
    for i in 1..=N {
        codec
            .encode(echo(&format!("{i:06}")).to_vec().unwrap(), &mut out)
            .unwrap();
    }
    c.send_raw(&out).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..N {
        let r = c.recv().await;
        assert_eq!(&r.mti, b"0810");
        assert_eq!(get(&r, 39), Some("00"));
        assert_eq!(get(&r, 70), Some("301"));
        *seen.entry(get(&r, 11).unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), N, "distinct STANs answered");
    for i in 1..=N {
        assert_eq!(seen.get(&format!("{i:06}")), Some(&1), "STAN {i}");
    }
    // Nothing extra.
    c.expect_quiet().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once() {
    let srv = start(config()).await;
    let mut tasks = Vec::new();
    for conn in 0..40 {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            for i in 0..25 {
                let stan = format!("{:06}", conn * 1000 + i);
                let r = c.call(&echo(&stan)).await;
                assert_eq!(get(&r, 11), Some(stan.as_str()));
                assert_eq!(get(&r, 39), Some("00"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    srv.stop().await;
}

/// A response MTI from a client (x1x0) is not answered; the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_response_is_ignored() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    c.send_fields(
        &Fields::new("0810")
            .with(7, "1125083000")
            .with(11, "000030")
            .with(39, "00")
            .with(70, "301"),
    )
    .await;
    let r = c.call(&echo("000031")).await;
    assert_eq!(get(&r, 11), Some("000031"), "first answer is the echo's");
    c.expect_quiet().await;
    srv.stop().await;
}

// ---------------------------------------------------------------- 30 / 12 / 91

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_mti_answered_with_its_response_mti_and_12() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    let req = Fields::new("0100")
        .with(2, "6000020000000120")
        .with(3, "000000")
        .with(4, "000000010000")
        .with(7, "1125083000")
        .with(11, "000040")
        .with(41, "EW000001");
    let r = c.call(&req).await;
    assert_eq!(&r.mti, b"0110");
    assert_eq!(get(&r, 39), Some("12"));
    assert_eq!(get(&r, 11), Some("000040"));
    assert_eq!(get(&r, 41), Some("EW000001"));
    // 0600 and 0300 too, and the connection stays usable.
    let r = c.call(&Fields::new("0600").with(11, "000041")).await;
    assert_eq!((&r.mti, get(&r, 39)), (b"0610", Some("12")));
    assert_eq!(get(&r, 11), Some("000041"));
    let r = c.call(&echo("000042")).await;
    assert_eq!(get(&r, 39), Some("00"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_mandatory_field_answered_30_echoing_stan_and_terminal() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    for missing in [52u8, 2, 49, 32] {
        let mut req = purchase("000050");
        req.fields.remove(&missing);
        let r = c.call(&req).await;
        assert_eq!(&r.mti, b"0210", "without DE{missing}");
        assert_eq!(get(&r, 39), Some("30"), "without DE{missing}");
        assert_eq!(get(&r, 11), Some("000050"), "without DE{missing}");
        assert_eq!(get(&r, 41), Some("EW000001"), "without DE{missing}");
        assert!(!r.fields.contains_key(&38), "no approval code on a 30");
    }
    // 0800 without DE70, 0400 without DE90.
    let r = c
        .call(&Fields::new("0800").with(7, "1125083000").with(11, "000051"))
        .await;
    assert_eq!((&r.mti, get(&r, 39)), (b"0810", Some("30")));
    assert_eq!(get(&r, 11), Some("000051"));
    let mut rev = common::reversal().fields;
    rev.fields.remove(&90);
    let r = c.call(&rev).await;
    assert_eq!((&r.mti, get(&r, 39)), (b"0410", Some("30")));
    assert_eq!(get(&r, 11), Some("000104"));
    assert_eq!(get(&r, 41), Some("AG000001"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_field_answered_30() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    // Non-digit in DE3 (n6): structure parses, content does not.
    let mut req = purchase("000060");
    req.fields.insert(3, b"00A000".to_vec());
    let r = c.call(&req).await; // recv() checks the 30 itself validates
    assert_eq!(&r.mti, b"0210");
    assert_eq!(get(&r, 39), Some("30"));
    assert_eq!(get(&r, 11), Some("000060"));
    assert_eq!(get(&r, 41), Some("EW000001"));
    // Non-ASCII in DE41 (ans8): answered 30, DE11 still echoed.
    let mut req = purchase("000061");
    req.fields
        .insert(41, vec![b'E', b'W', 0xC3, 0xA9, b'0', b'0', b'0', b'1']);
    let r = c.call(&req).await;
    assert_eq!(get(&r, 39), Some("30"));
    assert_eq!(get(&r, 11), Some("000061"));
    // A letter in the STAN itself: still answered 30 (the STAN cannot be echoed as is).
    let req = purchase("00006X");
    let r = c.call(&req).await;
    assert_eq!((&r.mti, get(&r, 39)), (b"0210", Some("30")));
    assert_eq!(get(&r, 41), Some("EW000001"));
    // The connection is still usable.
    let r = c.call(&echo("000062")).await;
    assert_eq!(get(&r, 39), Some("00"));
    srv.stop().await;
}

/// Without a ledger every well-formed financial request is answered 91, with
/// exactly the echo fields of INTERFACE §3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_requests_answered_91_with_the_interface_echo_fields() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;

    let echo_0210 = [2u8, 3, 4, 7, 11, 32, 37, 41, 42, 49];
    for g in [common::purchase(), common::withdrawal(), common::inquiry()] {
        c.send_raw(&g.frame()).await;
        let r = c.recv().await;
        let mut want = Fields::new("0210").with(39, "91");
        for n in echo_0210 {
            want = want.with(n, &g.fields.fields[&n]);
        }
        assert_eq!(r, want, "{}", g.name);
        for n in echo_0210 {
            assert_eq!(
                r.fields.get(&n),
                g.fields.fields.get(&n),
                "{}: DE{n}",
                g.name
            );
        }
    }

    // 0400/0401 → 0410 and 0420/0421 → 0430, echoing DE90 too.
    let echo_04x0 = [2u8, 3, 4, 7, 11, 32, 41, 42, 49, 90];
    for (mti, resp) in [
        ("0400", "0410"),
        ("0401", "0410"),
        ("0420", "0430"),
        ("0421", "0430"),
    ] {
        let mut req = common::reversal().fields;
        req.mti.copy_from_slice(mti.as_bytes());
        let r = c.call(&req).await;
        let mut want = Fields::new(resp).with(39, "91");
        for n in echo_04x0 {
            want = want.with(n, &req.fields[&n]);
        }
        assert_eq!(r, want, "{mti}");
    }
    srv.stop().await;
}

// ---------------------------------------------------------------- connection failures

/// The body of a frame whose structure cannot be parsed (DE2's length prefix is "1A").
fn garbage() -> Vec<u8> {
    let mut m = b"0200".to_vec();
    m.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(b"1A6000020000000120");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frame_closes_only_its_connection() {
    let srv = start(config()).await;
    let mut a = Client::connect(srv.addr).await;
    let mut b = Client::connect(srv.addr).await;
    assert_eq!(get(&b.call(&echo("000070")).await, 39), Some("00"));

    // A pipelines: an echo, the garbage, another echo. The first is answered,
    // then A is closed; the third is never answered.
    let mut out = BytesMut::new();
    let mut codec = FrameCodec::new(Framing::TwoByte);
    codec
        .encode(echo("000071").to_vec().unwrap(), &mut out)
        .unwrap();
    codec.encode(garbage(), &mut out).unwrap();
    codec
        .encode(echo("000072").to_vec().unwrap(), &mut out)
        .unwrap();
    a.send_raw(&out).await;
    let r = a.recv().await;
    assert_eq!(get(&r, 11), Some("000071"));
    a.expect_closed().await;

    // B is still served, and a new connection too.
    assert_eq!(get(&b.call(&echo("000073")).await, 11), Some("000073"));
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(get(&c.call(&echo("000074")).await, 39), Some("00"));

    // Other unparseable structures close too: bad MTI, trailing bytes.
    for body in [
        b"HELLO WORLD!".to_vec(),
        [common::echo_0800().message(), b"XY".to_vec()].concat(),
        b"08".to_vec(),
    ] {
        let mut d = Client::connect(srv.addr).await;
        d.send(&body).await;
        d.expect_closed().await;
    }
    assert_eq!(get(&b.call(&echo("000075")).await, 39), Some("00"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_length_headers_close_only_their_connection() {
    let srv = start(config()).await;
    let mut b = Client::connect(srv.addr).await;
    assert_eq!(get(&b.call(&echo("000080")).await, 39), Some("00"));

    let bodies: [&[u8]; 3] = [
        b"\x00\x00",                         // zero length
        b"\xFF\xFF0800\x82\x20\x00\x00\x00", // 65535 claimed
        b"\x10\x01",                         // 4097, one over the cap
    ];
    for raw in bodies {
        let mut a = Client::connect(srv.addr).await;
        a.send_raw(raw).await;
        a.expect_closed().await;
        let r = b.call(&echo("000081")).await;
        assert_eq!(get(&r, 39), Some("00"), "after {raw:02X?}");
    }
    srv.stop().await;
}

/// A 4096-byte message is the largest accepted: it is read and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_frame_is_answered() {
    let srv = start(config()).await;
    let mut c = Client::connect(srv.addr).await;
    // 12 + DE11 6 + 4 × (3 + 999) + (3 + 67) = 4096: a 0200 missing its
    // mandatory fields, so answered 30.
    let big = |ch: u8, n: usize| vec![ch; n];
    let req = Fields::new("0200")
        .with(11, "000090")
        .with(46, big(b'A', 999))
        .with(47, big(b'B', 999))
        .with(48, big(b'C', 999))
        .with(56, big(b'D', 999))
        .with(57, big(b'E', 67));
    let bytes = req.to_vec().unwrap();
    assert_eq!(bytes.len(), 4096);
    c.send(&bytes).await;
    let r = c.recv().await;
    assert_eq!((&r.mti, get(&r, 39)), (b"0210", Some("30")));
    assert_eq!(get(&r, 11), Some("000090"));
    srv.stop().await;
}

// ---------------------------------------------------------------- 4a framing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_ascii_framing_listener() {
    let srv = start(ServerConfig {
        framing: Framing::FourAscii,
        ..config()
    })
    .await;
    let mut c = Client::connect_framed(srv.addr, Framing::FourAscii).await;
    // The header is written by hand here: "0039" + the golden 0800.
    let mut raw = b"0039".to_vec();
    raw.extend_from_slice(&common::echo_0800().message());
    c.send_raw(&raw).await;
    // The response's header must be 4 ASCII digits with the right length.
    let frame = c.recv_within(READ_TIMEOUT).await.unwrap().unwrap().unwrap();
    let r = Message::decode(&frame[..]).unwrap().to_fields();
    assert_eq!(
        r,
        Fields::new("0810")
            .with(7, "1125083000")
            .with(11, "000001")
            .with(39, "00")
            .with(70, "301")
    );
    for i in 2..=50 {
        let r = c.call(&echo(&format!("{i:06}"))).await;
        assert_eq!(get(&r, 11), Some(format!("{i:06}").as_str()));
    }
    // A 2b header on a 4a listener is a non-digit header: closed.
    let mut d = Client::connect(srv.addr).await;
    d.send_raw(&common::echo_0800().frame()).await;
    d.expect_closed().await;
    let mut e = Client::connect_framed(srv.addr, Framing::FourAscii).await;
    e.send_raw(b"00a4").await;
    e.expect_closed().await;
    let mut z = Client::connect_framed(srv.addr, Framing::FourAscii).await;
    z.send_raw(b"0000").await;
    z.expect_closed().await;
    // c is unaffected.
    assert_eq!(get(&c.call(&echo("000099")).await, 39), Some("00"));
    srv.stop().await;
}

/// The raw bytes of a 4a response start with 4 ASCII digits giving its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_ascii_response_header_bytes() {
    let srv = start(ServerConfig {
        framing: Framing::FourAscii,
        ..config()
    })
    .await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut raw = b"0039".to_vec();
    raw.extend_from_slice(&common::echo_0800().message());
    s.write_all(&raw).await.unwrap();
    // 0810: MTI 4 + bitmaps 16 + DE7 10 + DE11 6 + DE39 2 + DE70 3 = 41.
    let mut got = vec![0u8; 4 + 41];
    timeout(READ_TIMEOUT, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..8], b"00410810");
    srv.stop().await;
}

// ---------------------------------------------------------------- idle timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed() {
    let srv = start(ServerConfig {
        idle_timeout_ms: 200,
        ..config()
    })
    .await;
    let started = Instant::now();
    let mut c = Client::connect(srv.addr).await;
    c.expect_closed().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(190),
        "closed after {waited:?}, before the idle timeout"
    );
    // A connection that was answered and then goes quiet is closed too.
    let mut d = Client::connect(srv.addr).await;
    assert_eq!(get(&d.call(&echo("000100")).await, 39), Some("00"));
    d.expect_closed().await;
    srv.stop().await;
}

/// `accepts_per_second_max` spaces new connections out (after a tenth of a
/// second's burst); every one is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_are_paced() {
    let srv = start(ServerConfig {
        accepts_per_second_max: 20, // 50 ms apart, burst of 100 ms = 2
        ..config()
    })
    .await;
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(Client::connect(srv.addr).await);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let stan = format!("{:06}", 300 + i);
        assert_eq!(get(&c.call(&echo(&stan)).await, 11), Some(stan.as_str()));
    }
    let waited = started.elapsed();
    // 12 accepts: 2 at once, then 10 more at 50 ms each.
    assert!(
        waited >= Duration::from_millis(450),
        "12 connections served in {waited:?}: accepts not paced"
    );
    srv.stop().await;
}

/// A connection that never completes a first frame is closed after
/// `first_frame_timeout_ms`, long before the idle timeout; one that has sent
/// a frame is then held to the idle timeout only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_new_connection_is_closed_after_the_first_frame_timeout() {
    let srv = start(ServerConfig {
        idle_timeout_ms: 60_000,
        first_frame_timeout_ms: 300,
        ..config()
    })
    .await;
    // Answered first, so its timer is the 60 s idle one from then on.
    let mut talker = Client::connect(srv.addr).await;
    assert_eq!(get(&talker.call(&echo("000201")).await, 39), Some("00"));
    let started = Instant::now();
    let mut silent = Client::connect(srv.addr).await;
    // Half a header is not a frame either.
    let mut partial = Client::connect(srv.addr).await;
    partial.send_raw(&[0x00]).await;
    silent.expect_closed().await;
    partial.expect_closed().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "closed after {waited:?}, before the first-frame timeout"
    );
    assert!(
        waited < Duration::from_secs(10),
        "closed after {waited:?}: the first-frame timeout was not applied"
    );
    // Well past the first-frame timeout, the talker is still served.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&talker.call(&echo("000202")).await, 39), Some("00"));
    srv.stop().await;
}

/// Each frame restarts the idle timer: a connection that talks more often
/// than the timeout is kept open well past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_connection_is_kept_open() {
    let srv = start(ServerConfig {
        idle_timeout_ms: 600,
        ..config()
    })
    .await;
    let mut c = Client::connect(srv.addr).await;
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        i += 1;
        let stan = format!("{i:06}");
        assert_eq!(get(&c.call(&echo(&stan)).await, 11), Some(stan.as_str()));
        // Sleeping is the point here: time passes between frames.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(i >= 5);
    srv.stop().await;
}

// ---------------------------------------------------------------- shutdown

/// An authorizer that holds every response until the test opens the gate,
/// so requests are really in flight when shutdown begins.
struct Gated {
    seen: AtomicUsize,
    seen_changed: tokio::sync::Notify,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl Authorizer for Gated {
    async fn authorize(&self, req: Message<Bytes>, _: &mut Option<Sink>) -> Reply {
        let resp = answer(&req, b"00");
        let mut gate = self.gate.clone();
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.seen_changed.notify_one();
        Reply::Later(Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            resp
        }))
    }
}

impl Gated {
    async fn wait_seen(&self, n: usize) {
        timeout(READ_TIMEOUT, async {
            while self.seen.load(Ordering::SeqCst) < n {
                self.seen_changed.notified().await;
            }
        })
        .await
        .expect("requests did not reach the authorizer");
    }
}

fn gated() -> (Arc<Gated>, tokio::sync::watch::Sender<bool>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let g = Arc::new(Gated {
        seen: AtomicUsize::new(0),
        seen_changed: tokio::sync::Notify::new(),
        gate: rx,
    });
    (g, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_in_flight_requests() {
    const N: usize = 20;
    let (auth, open) = gated();
    let srv = start_with(config(), auth.clone()).await;
    let mut c = Client::connect(srv.addr).await;
    let mut other = Client::connect(srv.addr).await;
    for i in 0..N {
        c.send_fields(&purchase(&format!("{:06}", 200 + i))).await;
    }
    auth.wait_seen(N).await;
    c.expect_quiet().await; // held at the gate

    srv.token.cancel();
    // Shutdown does not abandon in-flight work: serve() waits for it.
    tokio::task::yield_now().await;
    assert!(
        !srv.handle.is_finished(),
        "serve() returned with work in flight"
    );
    open.send(true).unwrap();

    let mut stans: Vec<String> = Vec::new();
    for _ in 0..N {
        let r = c.recv().await;
        assert_eq!((&r.mti, get(&r, 39)), (b"0210", Some("00")));
        stans.push(get(&r, 11).unwrap().to_string());
    }
    stans.sort();
    let want: Vec<String> = (0..N).map(|i| format!("{:06}", 200 + i)).collect();
    assert_eq!(stans, want);
    c.expect_closed().await;
    other.expect_closed().await;
    timeout(READ_TIMEOUT, srv.handle)
        .await
        .expect("serve() did not return")
        .unwrap()
        .unwrap();
    // The listener is gone.
    assert!(TcpStream::connect(srv.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_after_the_grace_period() {
    let (auth, _open) = gated();
    let srv = start_with(
        ServerConfig {
            shutdown_grace_ms: 300,
            ..config()
        },
        auth.clone(),
    )
    .await;
    let mut c = Client::connect(srv.addr).await;
    c.send_fields(&purchase("000300")).await;
    auth.wait_seen(1).await;
    let started = Instant::now();
    srv.token.cancel();
    timeout(READ_TIMEOUT, srv.handle)
        .await
        .expect("serve() did not return after its grace period")
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(5),
        "serve() returned after {waited:?} with a 300 ms grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_idle_connections_returns_promptly() {
    let srv = start(config()).await; // idle timeout 60 s: must not be waited for
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = Client::connect(srv.addr).await;
        assert_eq!(
            get(&c.call(&echo(&format!("{i:06}"))).await, 39),
            Some("00")
        );
        clients.push(c);
    }
    let started = Instant::now();
    srv.token.cancel();
    timeout(Duration::from_secs(3), srv.handle)
        .await
        .expect("serve() waited on idle connections")
        .unwrap()
        .unwrap();
    for c in &mut clients {
        c.expect_closed().await;
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---------------------------------------------------------------- connection cap

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_holds_further_connections_until_one_closes() {
    let srv = start(ServerConfig {
        connections_max: 2,
        ..config()
    })
    .await;
    let mut a = Client::connect(srv.addr).await;
    let mut b = Client::connect(srv.addr).await;
    assert_eq!(get(&a.call(&echo("000400")).await, 39), Some("00"));
    assert_eq!(get(&b.call(&echo("000401")).await, 39), Some("00"));

    // The third connects (backlog) but is not served while two are open.
    let mut c = Client::connect(srv.addr).await;
    c.send_fields(&echo("000402")).await;
    c.expect_quiet().await;

    // Closing one lets the third in; its waiting request is answered.
    drop(a);
    let r = c.recv().await;
    assert_eq!(get(&r, 11), Some("000402"));
    assert_eq!(get(&r, 39), Some("00"));
    assert_eq!(get(&b.call(&echo("000403")).await, 39), Some("00"));

    // And the cap still holds: a fourth waits while b and c are open.
    let mut d = Client::connect(srv.addr).await;
    d.send_fields(&echo("000404")).await;
    d.expect_quiet().await;
    drop(b);
    assert_eq!(get(&d.recv().await, 11), Some("000404"));
    srv.stop().await;
}
