//! Authorization end to end over real TCP (issue 5, item 9): the real host
//! (`service::start`: store → shards → registry → listener) on a fixture
//! store, driven by a terminal client that frames with the 2-byte header,
//! builds ISO-0 PIN blocks under the terminal PIN key and MACs requests.
//!
//! Every response code of INTERFACE §5 is reached, and where two checks
//! fail at once the test asserts that the earlier check of §5 decides:
//!
//! | case | codes that apply | expected |
//! |---|---|---|
//! | malformed DE48 from a MAC terminal without MAC | 30, 63 | 30 |
//! | missing DE52 at an unregistered terminal | 30, 03 | 30 |
//! | bad MAC + unknown BIN | 63, 92 | 63 |
//! | bad MAC + wrong PIN | 63, 55 | 63 (and no PIN try counted) |
//! | unregistered terminal + Luhn failure / unknown BIN | 03, 14 / 92 | 03 |
//! | unknown BIN + Luhn failure | 92, 14 | 92 |
//! | unknown PAN + wrong PIN / ineligible basket | 14, 55 / 57 | 14 |
//! | blocked card + wrong PIN | 62, 55 | 62 (and no PIN try counted) |
//! | PIN-blocked card + right PIN | 75, 00 | 75 |
//! | wrong PIN + ineligible basket / unsupported DE3 / DE49 840 | 55, 57 / 12 / 13 | 55 |
//! | BPNT purchase with ineligible basket at an agent | 58, 57 | 58 |
//! | BPNT cash-out at an e-Warong | 58, 57 | 58 |
//! | ineligible basket + basket sum ≠ DE4 / + too little money | 57, 13 / 51 | 57 |
//! | DE49 840 + withdrawal over the per-transaction limit | 13, 61 | 13 |
//! | basket sum ≠ DE4 + too little money | 13, 51 | 13 |
//! | over the per-transaction limit + too little money | 61, 51 | 61 |
//! | 11th withdrawal of the day + too little money | 65, 51 | 65 |
//!
//! Each test builds its own fixture store (SQLite; one flow on PostgreSQL)
//! and its own host, so tests are independent. 96 is reached through the
//! debug-build fault hook in a `kks-switch serve` child process (the hook's
//! variable is read once per process).

mod common;

use common::fixture::*;
use kks_switch::crypto::MacKey;
use kks_switch::iso8583::Fields;
use std::time::{Duration, Instant};

async fn expect(c: &mut Client, t: &Term, f: &Fields, code: &str, why: &str) -> Resp {
    let r = c.call(t, f).await;
    assert_eq!(r.code(), code, "{why}: {r:?}");
    if t.mac {
        r.assert_mac(&mac_key());
    } else {
        r.assert_no_mac();
    }
    r
}

fn wrong_mac_key() -> MacKey {
    MacKey::from_hex("FFEEDDCCBBAA99887766554433221100").unwrap()
}

// ------------------------------------------------------------------ 00

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_echo_fields_de54_and_balances() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let g = GOLDEN.pan();
    assert_eq!(g, GOLDEN_PAN, "fixture's golden card is the vectors' PAN");

    // The golden purchase, byte for byte as pyiso8583 built it.
    let p = common::purchase();
    let r = c.call_raw(&p.message()).await;
    assert_eq!(r.code(), "00", "golden BPNT purchase: {r:?}");
    assert_echo(&p.fields, &r, &[38]);
    r.assert_no_mac();
    let approval1 = r.get(38).unwrap().to_string();

    // The golden inquiry: DE54 = PKH then BPNT, 20 characters each.
    let q = common::inquiry();
    let r = c.call_raw(&q.message()).await;
    assert_eq!(r.code(), "00", "golden inquiry: {r:?}");
    assert_echo(&q.fields, &r, &[38, 54]);
    assert_eq!(
        r.get(54),
        Some("1002360C0000750000006002360C000050700000"),
        "DE54 after the Rp93.000 purchase"
    );
    assert_eq!(r.balances(), (75_000_000, 50_700_000));

    // The golden withdrawal (Rp100.000 PKH at the agent).
    let w = common::withdrawal();
    let r = c.call_raw(&w.message()).await;
    assert_eq!(r.code(), "00", "golden withdrawal: {r:?}");
    assert_echo(&w.fields, &r, &[38]);
    assert_ne!(r.get(38).unwrap(), approval1, "a new approval code");
    assert_eq!(c.balances(&AGENT, &g).await, (65_000_000, 50_700_000));

    // The golden 0400 reversal of that withdrawal: 0410 echoes 2, 3, 4, 7,
    // 11, 32, 41, 42, 49, 90 and adds 39 only.
    let rv = common::reversal();
    let r = c.call_raw(&rv.message()).await;
    assert_eq!(r.code(), "00", "golden reversal: {r:?}");
    assert_echo(&rv.fields, &r, &[]);
    assert_eq!(c.balances(&AGENT, &g).await, (75_000_000, 50_700_000));

    // PKH purchases at any registered terminal kind.
    let mut pkh = 75_000_000;
    for t in [MERCHANT, AGENT, EWARONG] {
        let f = req0200(&t, &g, "001000", 1_000_000);
        let r = expect(&mut c, &t, &f, "00", "PKH purchase").await;
        assert_echo(&f, &r, &[38]);
        pkh -= 1_000_000;
    }
    // 006000 is a BPNT purchase too; 011000 a PKH withdrawal.
    let f = req0200(&EWARONG, &g, "006000", 500_000).with(48, basket(&[("TELR", 1, 500_000)]));
    let r = expect(&mut c, &EWARONG, &f, "00", "006000 purchase").await;
    assert_echo(&f, &r, &[38]);
    let f = req0200(&AGENT, &g, "011000", 2_000_000);
    let r = expect(&mut c, &AGENT, &f, "00", "011000 withdrawal").await;
    assert_echo(&f, &r, &[38]);
    pkh -= 2_000_000;
    // An inquiry works at every terminal kind; DE37 is echoed only if sent.
    for t in [EWARONG, MERCHANT, AGENT] {
        let f = without(inquiry(&t, &g), 37);
        let r = expect(&mut c, &t, &f, "00", "inquiry").await;
        assert_echo(&f, &r, &[38, 54]);
        assert_eq!(r.balances(), (pkh, 50_200_000));
    }

    // Fields this host does not use are accepted, ignored and not echoed
    // (INTERFACE §2), from a plain and from a MAC terminal.
    for t in [AGENT, AGENT_MAC] {
        let f = withdrawal(&t, &g, 100)
            .with(14, "2812")
            .with(22, "051")
            .with(25, "00")
            .with(35, format!("{g}=28121010000000000"))
            .with(43, "AGEN BRILINK SEJAHTERA  JAKARTA       ID")
            .with(55, [0x9F, 0x26, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]);
        let r = expect(&mut c, &t, &f, "00", "unused fields").await;
        let mac = if t.mac { vec![38, 64] } else { vec![38] };
        assert_echo(&f, &r, &mac);
        pkh -= 100;
    }
    assert_eq!(c.balances(&AGENT, &g).await.0, pkh);

    // Network management still works on the same connection.
    let e = common::echo_0800();
    let r = c.call_raw(&e.message()).await;
    assert_eq!(r.mti(), "0810");
    assert_eq!(r.code(), "00");
    for n in [7, 11, 70] {
        assert_eq!(r.f.fields.get(&n), e.fields.fields.get(&n), "DE{n}");
    }
    drop(c);
    stop(host).await;
}

// ------------------------------------------------------------------ 30

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_errors_30_come_first() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let g = active(0).pan();

    // Each mandatory field of a 0200, missing.
    for n in [2u8, 3, 4, 7, 11, 32, 41, 42, 49, 52] {
        let f = without(withdrawal(&AGENT, &g, 1_000_000), n);
        let r = expect(&mut c, &AGENT, &f, "30", &format!("0200 without DE{n}")).await;
        assert_echo(&f, &r, &[]);
    }
    // A reversal without DE90.
    let w = withdrawal(&AGENT, &g, 1_000_000);
    let f = without(reversal_of(&w, "0400"), 90);
    let r = expect(&mut c, &AGENT, &f, "30", "0400 without DE90").await;
    assert_eq!(r.mti(), "0410");
    // A field of the wrong content class.
    let f = withdrawal(&AGENT, &g, 1_000_000).with(4, "00000001000A");
    expect(&mut c, &AGENT, &f, "30", "non-numeric DE4").await;

    // Malformed baskets.
    let good = basket(&[("BRAS", 1, 500_000), ("TELR", 1, 500_000)]);
    for (what, de48) in [
        ("length not a multiple of 20", good[..30].to_string()),
        ("empty", String::new()),
        ("quantity not digits", good.replacen("0001", "00X1", 1)),
        ("amount not digits", format!("{}A", &good[..19])),
        ("code not A-Z", good.replacen("BRAS", "bras", 1)),
        ("41 items", basket(&[("BRAS", 1, 1); 41])),
    ] {
        let f = req0200(&EWARONG, &g, "000000", 1_000_000).with(48, &de48);
        let r = expect(&mut c, &EWARONG, &f, "30", what).await;
        assert_echo(&f, &r, &[]);
    }
    // BPNT purchases without a basket.
    for de3 in ["000000", "006000"] {
        let f = req0200(&EWARONG, &g, de3, 1_000_000);
        expect(&mut c, &EWARONG, &f, "30", "BPNT purchase without DE48").await;
    }

    // 30 before 63: malformed basket from a MAC terminal, MAC missing or wrong.
    let f = req0200(&EWARONG_MAC, &g, "000000", 1_000_000).with(48, &good[..30]);
    let r = c.call_raw(&encode(&f)).await;
    assert_eq!(r.code(), "30", "malformed DE48 + no MAC: {r:?}");
    let r = c.call_raw(&encode_mac(&f, &wrong_mac_key())).await;
    assert_eq!(r.code(), "30", "malformed DE48 + wrong MAC: {r:?}");
    // 30 before 03: an unregistered terminal's malformed requests.
    let f = without(withdrawal(&UNREGISTERED, &g, 1_000_000), 52);
    expect(
        &mut c,
        &UNREGISTERED,
        &f,
        "30",
        "missing DE52 + unregistered",
    )
    .await;
    let f = req0200(&UNREGISTERED, &g, "000000", 1_000_000);
    expect(&mut c, &UNREGISTERED, &f, "30", "no DE48 + unregistered").await;
    // 30 before 92.
    let f = without(withdrawal(&AGENT, &foreign_pan(), 1_000_000), 49);
    expect(&mut c, &AGENT, &f, "30", "missing DE49 + unknown BIN").await;

    // Nothing was debited.
    assert_eq!(c.balances(&AGENT, &g).await, (PKH_CREDIT, BPNT_CREDIT));
    drop(c);
    stop(host).await;
}

/// INTERFACE §6: "Every response to such a terminal carries a MAC made the
/// same way, a 63 included." So does a 30 to a request that names a MAC
/// terminal by DE41 + DE42.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mac_terminal_format_error_30_responses_carry_a_mac() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let g = active(0).pan();
    let t = EWARONG_MAC;

    // Malformed basket (decided by the authorizer).
    let good = basket(&[("BRAS", 1, 500_000), ("TELR", 1, 500_000)]);
    let f = req0200(&t, &g, "000000", 1_000_000).with(48, &good[..30]);
    let r = c.call(&t, &f).await;
    assert_eq!(r.code(), "30", "{r:?}");
    r.assert_mac(&mac_key());

    // Missing mandatory DE52 (decided before the authorizer).
    let f = without(withdrawal(&AGENT_MAC, &g, 1_000_000), 52);
    let r = c.call(&AGENT_MAC, &f).await;
    assert_eq!(r.code(), "30", "{r:?}");
    r.assert_mac(&mac_key());
    drop(c);
    stop(host).await;
}

// ------------------------------------------------------------------ 63

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mac_63_missing_or_wrong_and_responses_macd() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let key = mac_key();
    let t = EWARONG_MAC;
    let g = active(1).pan();

    // Right MAC: approved, and the response's DE64 verifies.
    let p = purchase(&t, &g, &rice(1_000_000));
    let r = expect(&mut c, &t, &p, "00", "MAC'd purchase").await;
    assert_echo(&p, &r, &[38, 64]);

    // MAC missing: 63, itself MAC'd.
    let p = purchase(&t, &g, &rice(1_000_000));
    let r = c.call_raw(&encode(&p)).await;
    assert_eq!(r.code(), "63", "MAC missing: {r:?}");
    r.assert_mac(&key);
    assert_echo(&p, &r, &[64]);
    // MAC under another key.
    let p = purchase(&t, &g, &rice(1_000_000));
    let r = c.call_raw(&encode_mac(&p, &wrong_mac_key())).await;
    assert_eq!(r.code(), "63", "wrong MAC: {r:?}");
    r.assert_mac(&key);
    // A right MAC over other content (DE4 changed after MACing).
    let p = purchase(&t, &g, &rice(1_000_000));
    let signed = encode_mac(&p, &key);
    let mac = signed[signed.len() - 8..].to_vec();
    let tampered = p
        .clone()
        .with(4, "000000100001")
        .with(48, basket(&rice(100_001)))
        .with(64, &mac);
    let r = c.call_raw(&encode(&tampered)).await;
    assert_eq!(r.code(), "63", "MAC of other content: {r:?}");
    r.assert_mac(&key);

    // 63 before 92: bad MAC + unknown BIN.
    let f = purchase(&t, &foreign_pan(), &rice(1_000_000));
    let r = c.call_raw(&encode_mac(&f, &wrong_mac_key())).await;
    assert_eq!(r.code(), "63", "bad MAC + unknown BIN: {r:?}");
    r.assert_mac(&key);
    // 63 before 55, and the wrong PIN is not counted.
    let f = with_pin(purchase(&t, &g, &rice(1_000_000)), "000000");
    let r = c.call_raw(&encode(&f)).await;
    assert_eq!(r.code(), "63", "no MAC + wrong PIN: {r:?}");
    let f = with_pin(purchase(&t, &g, &rice(1_000_000)), "000000");
    let r = expect(&mut c, &t, &f, "55", "MAC'd wrong PIN").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:2"), "the 63 counted no try");
    assert_echo(&f, &r, &[44, 64]);

    // A DE64 from a terminal without a MAC key is ignored: the golden
    // MAC'd purchase names EW000001, which has none.
    let gm = common::purchase_mac();
    let r = c.call_raw(&gm.message()).await;
    assert_eq!(r.code(), "00", "DE64 from a non-MAC terminal: {r:?}");
    r.assert_no_mac();
    assert_echo(&gm.fields, &r, &[38]);

    // Reversals from a MAC terminal carry DE128 (DE90 sets the secondary
    // bitmap); so do the 0410s.
    let a = AGENT_MAC;
    let w = withdrawal(&a, &g, 5_000_000);
    let r = expect(&mut c, &a, &w, "00", "MAC'd withdrawal").await;
    assert_echo(&w, &r, &[38, 64]);
    let rv = reversal_of(&w, "0400");
    let r = c.call_raw(&encode(&rv)).await;
    assert_eq!(r.code(), "63", "reversal without DE128: {r:?}");
    r.assert_mac(&key);
    assert!(r.f.fields.contains_key(&128), "0410 MAC in DE128: {r:?}");
    let r = c.call_raw(&encode_mac(&rv, &wrong_mac_key())).await;
    assert_eq!(r.code(), "63", "reversal with a wrong DE128: {r:?}");
    let r = expect(&mut c, &a, &rv, "00", "MAC'd reversal").await;
    assert_echo(&rv, &r, &[128]);

    // Only the first purchase and nothing else moved money.
    assert_eq!(
        c.balances(&t, &g).await,
        (PKH_CREDIT, BPNT_CREDIT - 1_000_000)
    );
    // 0800 on the same connection: answered, never MAC'd.
    let e = common::echo_0800();
    let r = c.call_raw(&e.message()).await;
    assert_eq!((r.mti(), r.code()), ("0810", "00"));
    r.assert_no_mac();
    drop(c);
    stop(host).await;
}

// ------------------------------------------------------------ 03 92 14

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_03_then_92_then_14() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let g = active(2).pan();
    let u = UNREGISTERED;

    // 03: unregistered terminal, whatever else is wrong.
    let f = withdrawal(&u, &g, 1_000_000);
    let r = expect(&mut c, &u, &f, "03", "unregistered terminal").await;
    assert_echo(&f, &r, &[]);
    let f = withdrawal(&u, &bad_luhn(&g), 1_000_000);
    expect(&mut c, &u, &f, "03", "unregistered + Luhn failure").await;
    let f = withdrawal(&u, &foreign_pan(), 1_000_000);
    expect(&mut c, &u, &f, "03", "unregistered + unknown BIN").await;
    let f = with_pin(inquiry(&u, &g), "000000");
    expect(&mut c, &u, &f, "03", "unregistered + wrong PIN").await;
    let f = withdrawal(&u, &BLOCKED.pan(), 1_000_000);
    expect(&mut c, &u, &f, "03", "unregistered + blocked card").await;
    // A registered DE41 with another DE42 is not a registered terminal.
    let f = withdrawal(&AGENT, &g, 1_000_000).with(42, "AGENT0000000002");
    expect(
        &mut c,
        &AGENT,
        &f,
        "03",
        "DE41 of one terminal, DE42 unknown",
    )
    .await;
    let f = withdrawal(&AGENT, &g, 1_000_000).with(42, EWARONG.mid);
    expect(
        &mut c,
        &AGENT,
        &f,
        "03",
        "DE41 of one terminal, DE42 of another",
    )
    .await;

    // 92: not our BIN, before Luhn and the PIN.
    let f = withdrawal(&AGENT, &foreign_pan(), 1_000_000);
    let r = expect(&mut c, &AGENT, &f, "92", "unknown BIN").await;
    assert_echo(&f, &r, &[]);
    let f = withdrawal(&AGENT, &bad_luhn(&foreign_pan()), 1_000_000);
    expect(&mut c, &AGENT, &f, "92", "unknown BIN + Luhn failure").await;
    let f = with_pin(withdrawal(&AGENT, &foreign_pan(), 1_000_000), "000000");
    expect(&mut c, &AGENT, &f, "92", "unknown BIN + wrong PIN").await;

    // 14: Luhn failure, or unknown at its bank.
    let f = withdrawal(&AGENT, &bad_luhn(&g), 1_000_000);
    let r = expect(&mut c, &AGENT, &f, "14", "Luhn failure").await;
    assert_echo(&f, &r, &[]);
    let f = withdrawal(&AGENT, &unknown_pan(), 1_000_000);
    expect(&mut c, &AGENT, &f, "14", "unknown PAN at BRI").await;
    let f = withdrawal(&AGENT, &pan_of(kks_switch::pan::Bank::Bni, 999), 1_000_000);
    expect(&mut c, &AGENT, &f, "14", "unknown PAN at BNI").await;
    let f = with_pin(withdrawal(&AGENT, &unknown_pan(), 1_000_000), "000000");
    expect(&mut c, &AGENT, &f, "14", "unknown PAN + wrong PIN").await;
    let f = purchase(&EWARONG, &unknown_pan(), &[("ROKK", 1, 1_000_000)]);
    expect(
        &mut c,
        &EWARONG,
        &f,
        "14",
        "unknown PAN + ineligible basket",
    )
    .await;
    let f = withdrawal(&AGENT, "6000021234", 1_000_000);
    expect(&mut c, &AGENT, &f, "14", "a BRI BIN but too short").await;

    assert_eq!(c.balances(&AGENT, &g).await, (PKH_CREDIT, BPNT_CREDIT));
    drop(c);
    stop(host).await;
}

// ------------------------------------------------------------ 62 75 55

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_state_62_pin_55_and_75() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;

    // 62: inactive, blocked by the bank, closed; for every message type.
    for card in [INACTIVE, BLOCKED, CLOSED] {
        let pan = card.pan();
        for f in [
            withdrawal(&AGENT, &pan, 1_000_000),
            inquiry(&AGENT, &pan),
            purchase(&EWARONG, &pan, &rice(1_000_000)),
        ] {
            let t = if f.fields[&41] == AGENT.tid.as_bytes() {
                AGENT
            } else {
                EWARONG
            };
            let r = expect(&mut c, &t, &f, "62", &format!("{:?} card", card.state)).await;
            assert_echo(&f, &r, &[]);
        }
    }
    // 62 before 55: a blocked card's wrong PINs are not counted (no 75).
    for _ in 0..4 {
        let f = with_pin(withdrawal(&AGENT, &BLOCKED.pan(), 1_000_000), "000000");
        expect(&mut c, &AGENT, &f, "62", "blocked + wrong PIN").await;
    }

    // 55 TRIES-LEFT:2, TRIES-LEFT:1, then 75; then a right PIN gets 75.
    let p = active(3).pan();
    let f = with_pin(withdrawal(&AGENT, &p, 1_000_000), "111111");
    let r = expect(&mut c, &AGENT, &f, "55", "first wrong PIN").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:2"));
    assert_echo(&f, &r, &[44]);
    let f = with_pin(withdrawal(&AGENT, &p, 1_000_000), "222222");
    let r = expect(&mut c, &AGENT, &f, "55", "second wrong PIN").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:1"));
    let f = with_pin(withdrawal(&AGENT, &p, 1_000_000), "333333");
    let r = expect(&mut c, &AGENT, &f, "75", "third wrong PIN").await;
    assert_echo(&f, &r, &[]);
    let f = withdrawal(&AGENT, &p, 1_000_000);
    let r = expect(&mut c, &AGENT, &f, "75", "right PIN on a PIN-blocked card").await;
    assert_echo(&f, &r, &[]);
    let f = inquiry(&AGENT, &p);
    let r = expect(&mut c, &AGENT, &f, "75", "inquiry on a PIN-blocked card").await;
    assert_echo(&f, &r, &[]);
    let f = with_pin(purchase(&EWARONG, &p, &rice(1_000_000)), "444444");
    expect(&mut c, &EWARONG, &f, "75", "PIN-blocked + wrong PIN").await;

    // A PIN block that does not decode counts as a wrong PIN.
    let p = active(23).pan();
    let f = withdrawal(&AGENT, &p, 1_000_000).with(52, [0u8; 8]);
    let r = expect(&mut c, &AGENT, &f, "55", "undecodable PIN block").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:2"));
    let f = withdrawal(&AGENT, &p, 1_000_000).with(52, [0xFFu8; 8]);
    let r = expect(&mut c, &AGENT, &f, "55", "another undecodable PIN block").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:1"));
    // A PIN block made for another PAN does not verify either.
    let f = withdrawal(&AGENT, &p, 1_000_000).with(52, pin_block(&active(24).pan(), PIN));
    expect(&mut c, &AGENT, &f, "75", "PIN block of another card").await;

    // A right PIN before the third resets the count.
    let p = active(4).pan();
    let f = with_pin(withdrawal(&AGENT, &p, 1_000_000), "111111");
    let r = expect(&mut c, &AGENT, &f, "55", "wrong PIN").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:2"));
    let f = with_pin(withdrawal(&AGENT, &p, 1_000_000), "222222");
    let r = expect(&mut c, &AGENT, &f, "55", "wrong PIN").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:1"));
    expect(
        &mut c,
        &AGENT,
        &withdrawal(&AGENT, &p, 1_000_000),
        "00",
        "right PIN",
    )
    .await;
    let f = with_pin(withdrawal(&AGENT, &p, 1_000_000), "333333");
    let r = expect(&mut c, &AGENT, &f, "55", "wrong PIN after a right one").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:2"), "the count was reset");

    // Wrong PINs on inquiries count too, across message types.
    let p = active(5).pan();
    let f = with_pin(inquiry(&AGENT, &p), "111111");
    let r = expect(&mut c, &AGENT, &f, "55", "wrong PIN on an inquiry").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:2"));
    assert_echo(&f, &r, &[44]);
    let f = with_pin(purchase(&EWARONG, &p, &rice(1_000_000)), "222222");
    let r = expect(&mut c, &EWARONG, &f, "55", "wrong PIN on a purchase").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:1"));
    let f = with_pin(inquiry(&MERCHANT, &p), "333333");
    expect(
        &mut c,
        &MERCHANT,
        &f,
        "75",
        "third wrong PIN, on an inquiry",
    )
    .await;

    // 55 before step 7 and 8 declines (one wrong PIN per card).
    let p = active(6).pan();
    let f = with_pin(purchase(&EWARONG, &p, &[("ROKK", 1, 1_000_000)]), "000000");
    let r = expect(&mut c, &EWARONG, &f, "55", "wrong PIN + ineligible basket").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:2"));
    let p = active(7).pan();
    let f = with_pin(req0200(&AGENT, &p, "200000", 1_000_000), "000000");
    expect(&mut c, &AGENT, &f, "55", "wrong PIN + unsupported DE3").await;
    let p = active(8).pan();
    let f = with_pin(withdrawal(&AGENT, &p, 1_000_000).with(49, "840"), "000000");
    expect(&mut c, &AGENT, &f, "55", "wrong PIN + DE49 840").await;
    let p = active(9).pan();
    let f = with_pin(withdrawal(&AGENT, &p, 900_000_000), "000000");
    expect(
        &mut c,
        &AGENT,
        &f,
        "55",
        "wrong PIN + over limit + no money",
    )
    .await;
    let f = with_pin(purchase(&AGENT, &p, &rice(1_000_000)), "000000");
    expect(&mut c, &AGENT, &f, "55", "wrong PIN + BPNT at an agent").await;

    // No money moved for any of these cards.
    for i in 6..=9 {
        let pan = active(i).pan();
        assert_eq!(c.balances(&AGENT, &pan).await, (PKH_CREDIT, BPNT_CREDIT));
    }
    assert_eq!(
        c.balances(&AGENT, &active(4).pan()).await,
        (PKH_CREDIT - 1_000_000, BPNT_CREDIT)
    );
    drop(c);
    stop(host).await;
}

// ------------------------------------------------------------ 12 58 57

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_code_12_terminal_58_cardholder_57() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let p = active(10).pan();

    // 12: unsupported processing codes (checked after card and PIN).
    for de3 in ["200000", "002000", "400000", "010010", "316000"] {
        let f = req0200(&AGENT, &p, de3, 1_000_000);
        let r = expect(&mut c, &AGENT, &f, "12", &format!("DE3 {de3}")).await;
        assert_echo(&f, &r, &[]);
    }
    let f = req0200(&EWARONG, &INACTIVE.pan(), "200000", 1_000_000);
    expect(&mut c, &EWARONG, &f, "62", "62 before 12").await;

    // 58: BPNT purchases only at e-Warong; cash only at agents.
    for t in [AGENT, MERCHANT] {
        let f = purchase(&t, &p, &rice(1_000_000));
        let r = expect(&mut c, &t, &f, "58", "BPNT purchase off an e-Warong").await;
        assert_echo(&f, &r, &[]);
    }
    for t in [EWARONG, MERCHANT] {
        for de3 in ["010000", "011000"] {
            let f = req0200(&t, &p, de3, 1_000_000);
            expect(&mut c, &t, &f, "58", "cash withdrawal off an agent").await;
        }
    }
    // 58 before 57.
    let f = purchase(&AGENT, &p, &[("ROKK", 1, 1_000_000)]);
    expect(&mut c, &AGENT, &f, "58", "ineligible basket at an agent").await;
    let f = req0200(&EWARONG, &p, "016000", 1_000_000);
    expect(&mut c, &EWARONG, &f, "58", "BPNT cash-out at an e-Warong").await;
    // 58 before 13.
    let f = req0200(&EWARONG, &p, "010000", 0);
    expect(&mut c, &EWARONG, &f, "58", "zero withdrawal at an e-Warong").await;
    let f = purchase(&AGENT, &p, &rice(1_000_000)).with(4, "000000999999");
    expect(&mut c, &AGENT, &f, "58", "sum ≠ DE4 at an agent").await;
    // 12 before 13.
    let f = req0200(&AGENT, &p, "200000", 0).with(49, "840");
    expect(
        &mut c,
        &AGENT,
        &f,
        "12",
        "unsupported DE3 + zero + DE49 840",
    )
    .await;

    // 57: the first ineligible item, in basket order.
    let f = purchase(
        &EWARONG,
        &p,
        &[
            ("BRAS", 5, 6_500_000),
            ("ROKK", 2, 5_000_000),
            ("GULA", 1, 1_800_000),
        ],
    );
    let r = expect(&mut c, &EWARONG, &f, "57", "ROKK in the basket").await;
    assert_eq!(r.de44(), Some("INELIGIBLE:ROKK"));
    assert_echo(&f, &r, &[44]);
    let f = purchase(
        &EWARONG,
        &p,
        &[("GULA", 1, 1_800_000), ("ROKK", 2, 5_000_000)],
    );
    let r = expect(&mut c, &EWARONG, &f, "57", "GULA first").await;
    assert_eq!(r.de44(), Some("INELIGIBLE:GULA"));
    let f = purchase(&EWARONG, &p, &[("TELR", 1, 100_000), ("ZZZZ", 1, 100_000)]);
    let r = expect(&mut c, &EWARONG, &f, "57", "unknown code").await;
    assert_eq!(r.de44(), Some("INELIGIBLE:ZZZZ"));
    for code in ["MNYK", "TPNG", "SUSU", "MPAS", "KLNG", "MIEI", "PULS"] {
        let f = purchase(&EWARONG, &p, &[(code, 1, 100_000)]);
        let r = expect(&mut c, &EWARONG, &f, "57", code).await;
        assert_eq!(r.de44(), Some(format!("INELIGIBLE:{code}").as_str()));
    }
    // 57 before 13 and 51.
    let f = purchase(&EWARONG, &p, &[("ROKK", 1, 1_000_000)]).with(4, "000000999999");
    let r = expect(&mut c, &EWARONG, &f, "57", "ineligible + sum ≠ DE4").await;
    assert_eq!(r.de44(), Some("INELIGIBLE:ROKK"));
    let f = purchase(&EWARONG, &p, &[("ROKK", 1, 900_000_000)]);
    expect(&mut c, &EWARONG, &f, "57", "ineligible + too little money").await;
    let f = purchase(&EWARONG, &p, &[("ROKK", 1, 1_000_000)]).with(49, "840");
    let r = expect(&mut c, &EWARONG, &f, "57", "ineligible + DE49 840").await;
    assert_eq!(r.de44(), Some("INELIGIBLE:ROKK"));
    // BPNT cash-out under food-only.
    let f = req0200(&AGENT, &p, "016000", 1_000_000);
    let r = expect(&mut c, &AGENT, &f, "57", "BPNT cash-out, food-only").await;
    assert_echo(&f, &r, &[]);

    // Every allowed food code is accepted (one basket of all twelve).
    let foods = [
        "BRAS", "JAGG", "SAGU", "TELR", "DSAP", "AYAM", "IKAN", "KCNG", "TEMP", "TAHU", "SAYR",
        "BUAH",
    ];
    let items: Vec<(&str, u32, u64)> = foods.iter().map(|c| (*c, 1, 10_000)).collect();
    let f = purchase(&EWARONG, &p, &items);
    expect(&mut c, &EWARONG, &f, "00", "all twelve food codes").await;
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT, BPNT_CREDIT - 120_000),
        "only the food basket was debited"
    );
    drop(c);
    stop(host).await;
}

// --------------------------------------------------------- 13 61 65 51

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_13_limits_61_65_funds_51() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let p = active(11).pan();

    // 13: zero amounts, DE49 not 360, basket sum ≠ DE4.
    let f = req0200(&MERCHANT, &p, "001000", 0);
    let r = expect(&mut c, &MERCHANT, &f, "13", "zero PKH purchase").await;
    assert_echo(&f, &r, &[]);
    expect(
        &mut c,
        &AGENT,
        &withdrawal(&AGENT, &p, 0),
        "13",
        "zero withdrawal",
    )
    .await;
    let f = purchase(&EWARONG, &p, &[("BRAS", 1, 0)]);
    expect(&mut c, &EWARONG, &f, "13", "zero BPNT purchase").await;
    for cur in ["840", "000", "036"] {
        let f = withdrawal(&AGENT, &p, 1_000_000).with(49, cur);
        expect(&mut c, &AGENT, &f, "13", &format!("DE49 {cur}")).await;
        let f = purchase(&EWARONG, &p, &rice(1_000_000)).with(49, cur);
        expect(&mut c, &EWARONG, &f, "13", &format!("DE49 {cur}, BPNT")).await;
    }
    let f = purchase(&EWARONG, &p, &rice(1_000_000)).with(4, "000001000001");
    let r = expect(&mut c, &EWARONG, &f, "13", "basket sum ≠ DE4").await;
    assert_echo(&f, &r, &[]);
    // 13 before 61 and 51.
    let f = withdrawal(&AGENT, &p, 100_000_001).with(49, "840");
    expect(&mut c, &AGENT, &f, "13", "DE49 840 + over the limit").await;
    let f = purchase(&EWARONG, &p, &rice(900_000_000)).with(4, "000900000001");
    expect(&mut c, &EWARONG, &f, "13", "sum ≠ DE4 + too little money").await;
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));

    // 61: over Rp1.000.000 in one withdrawal; before 51 (LOW holds Rp10.000).
    let low = LOW.pan();
    let f = withdrawal(&AGENT, &low, 100_000_001);
    let r = expect(&mut c, &AGENT, &f, "61", "Rp1.000.000,01 withdrawal").await;
    assert_echo(&f, &r, &[]);
    let f = withdrawal(&AGENT, &low, 100_000_000);
    expect(&mut c, &AGENT, &f, "51", "Rp1.000.000 with Rp10.000").await;
    // 51: purchase or withdrawal above the wallet.
    let f = withdrawal(&AGENT, &low, 1_000_001);
    let r = expect(&mut c, &AGENT, &f, "51", "withdrawal above PKH").await;
    assert_echo(&f, &r, &[]);
    let f = req0200(&MERCHANT, &low, "001000", 1_000_001);
    expect(&mut c, &MERCHANT, &f, "51", "PKH purchase above PKH").await;
    let f = purchase(&EWARONG, &low, &rice(1_000_001));
    expect(&mut c, &EWARONG, &f, "51", "BPNT purchase above BPNT").await;
    let f = purchase(&EWARONG, &EMPTY.pan(), &rice(1));
    expect(&mut c, &EWARONG, &f, "51", "empty wallet").await;
    // Exactly the balance is fine.
    let f = purchase(&EWARONG, &low, &rice(1_000_000));
    expect(
        &mut c,
        &EWARONG,
        &f,
        "00",
        "BPNT purchase of the whole wallet",
    )
    .await;
    assert_eq!(c.balances(&AGENT, &low).await, (1_000_000, 0));

    // 61: over Rp5.000.000 in a day (RICH holds Rp10.000.000 PKH).
    let rich = RICH.pan();
    for i in 0..5 {
        let f = withdrawal(&AGENT, &rich, 100_000_000);
        expect(
            &mut c,
            &AGENT,
            &f,
            "00",
            &format!("Rp1.000.000 withdrawal {i}"),
        )
        .await;
    }
    let f = withdrawal(&AGENT, &rich, 1);
    expect(&mut c, &AGENT, &f, "61", "one sen over the daily total").await;
    // PKH purchases do not count against the withdrawal limits.
    let f = req0200(&MERCHANT, &rich, "001000", 100_000_000);
    expect(&mut c, &MERCHANT, &f, "00", "PKH purchase after the limit").await;
    assert_eq!(
        c.balances(&AGENT, &rich).await.0,
        1_000_000_000 - 600_000_000
    );

    // 65: the 11th withdrawal of the day (small amounts), before 51; a
    // reversed withdrawal gives its count (and amount) back. LOW now holds
    // Rp10.000 PKH.
    let mut done = Vec::new();
    for i in 0..10 {
        let f = withdrawal(&AGENT, &low, 100);
        expect(&mut c, &AGENT, &f, "00", &format!("withdrawal {}", i + 1)).await;
        done.push(f);
    }
    let f = withdrawal(&AGENT, &low, 100);
    let r = expect(&mut c, &AGENT, &f, "65", "11th withdrawal").await;
    assert_echo(&f, &r, &[]);
    let f = withdrawal(&AGENT, &low, 1_000_000);
    expect(
        &mut c,
        &AGENT,
        &f,
        "65",
        "11th withdrawal + too little money",
    )
    .await;
    let f = withdrawal(&AGENT, &low, 100_000_001);
    expect(
        &mut c,
        &AGENT,
        &f,
        "61",
        "11th withdrawal + over the limit: 61 first",
    )
    .await;
    let rv = reversal_of(&done[9], "0400");
    expect(&mut c, &AGENT, &rv, "00", "reversal of the 10th").await;
    let f = withdrawal(&AGENT, &low, 1_000_000);
    expect(&mut c, &AGENT, &f, "51", "count given back: now 51").await;
    let f = withdrawal(&AGENT, &low, 100);
    expect(&mut c, &AGENT, &f, "00", "the 10th again").await;
    let f = withdrawal(&AGENT, &low, 100);
    expect(&mut c, &AGENT, &f, "65", "and the 11th again").await;
    assert_eq!(c.balances(&AGENT, &low).await, (1_000_000 - 1_000, 0));

    // The day's amount is given back by a reversal too.
    let r2 = RICH2.pan();
    let mut last = None;
    for _ in 0..5 {
        let f = withdrawal(&AGENT, &r2, 100_000_000);
        expect(&mut c, &AGENT, &f, "00", "Rp1.000.000").await;
        last = Some(f);
    }
    expect(
        &mut c,
        &AGENT,
        &withdrawal(&AGENT, &r2, 100),
        "61",
        "over the day",
    )
    .await;
    let rv = reversal_of(last.as_ref().unwrap(), "0420");
    let r = expect(&mut c, &AGENT, &rv, "00", "reversal advice").await;
    assert_eq!(r.mti(), "0430");
    let f = withdrawal(&AGENT, &r2, 100_000_000);
    expect(&mut c, &AGENT, &f, "00", "room again after the reversal").await;
    assert_eq!(c.balances(&AGENT, &r2).await.0, 1_000_000_000 - 500_000_000);
    drop(c);
    stop(host).await;
    assert_audit_clean(fx.url());
}

// ------------------------------------------------------------ 94, replays

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_replay_identically_or_94() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let p = active(12).pan();

    // An identical retransmission gets the identical response, debited once.
    let f = purchase(&EWARONG, &p, &rice(2_500_000));
    let first = expect(&mut c, &EWARONG, &f, "00", "purchase").await;
    let again = expect(&mut c, &EWARONG, &f, "00", "retransmission").await;
    assert_eq!(first.raw, again.raw, "identical response bytes (DE38 too)");
    let again = c.call(&EWARONG, &f).await;
    assert_eq!(first.raw, again.raw, "third copy");
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT, BPNT_CREDIT - 2_500_000)
    );

    // Same key, different content: 94, and no effect.
    for (what, g) in [
        ("DE4 and basket", purchase(&EWARONG, &p, &rice(2_400_000))),
        (
            "basket order",
            f.clone().with(48, basket(&[("BRAS", 2, 2_500_000)])),
        ),
        ("DE3", f.clone().with(3, "006000")),
        ("DE49", f.clone().with(49, "840")),
        (
            "DE2",
            f.clone()
                .with(2, active(13).pan())
                .with(52, pin_block(&active(13).pan(), PIN)),
        ),
    ] {
        let mut g = g;
        for n in [7u8, 11] {
            g.fields.insert(n, f.fields[&n].clone());
        }
        let r = expect(&mut c, &EWARONG, &g, "94", what).await;
        assert_echo(&g, &r, &[]);
        assert_eq!(r.de44(), None, "plain 94 has no DE44");
    }
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT, BPNT_CREDIT - 2_500_000)
    );
    // A fresh PIN block (another PIN) on a retransmission is still the same
    // request: the PIN is not part of the content.
    let r = c.call(&EWARONG, &with_pin(f.clone(), "999999")).await;
    assert_eq!(r.raw, first.raw, "retransmission with another PIN block");

    // A declined request replays its decline: 55 TRIES-LEFT:2 twice counts once.
    let q = active(14).pan();
    let w = with_pin(withdrawal(&AGENT, &q, 1_000_000), "111111");
    let r1 = expect(&mut c, &AGENT, &w, "55", "wrong PIN").await;
    assert_eq!(r1.de44(), Some("TRIES-LEFT:2"));
    let r2 = c.call(&AGENT, &w).await;
    assert_eq!(r1.raw, r2.raw, "the 55 replayed with its DE44");
    let w2 = with_pin(withdrawal(&AGENT, &q, 1_000_000), "222222");
    let r = expect(&mut c, &AGENT, &w2, "55", "next wrong PIN").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:1"), "the replay counted no try");

    // An inquiry replays its DE54 as first answered.
    let i = inquiry(&AGENT, &p);
    let i1 = expect(&mut c, &AGENT, &i, "00", "inquiry").await;
    let before = i1.balances();
    expect(
        &mut c,
        &MERCHANT,
        &req0200(&MERCHANT, &p, "001000", 100),
        "00",
        "purchase",
    )
    .await;
    let i2 = c.call(&AGENT, &i).await;
    assert_eq!(i1.raw, i2.raw, "same DE38 and DE54");
    assert_eq!(i2.balances(), before);
    assert_eq!(c.balances(&AGENT, &p).await.0, PKH_CREDIT - 100);

    // The key is per terminal: the same DE11 + DE7 from another terminal
    // is another request.
    let mut other = withdrawal(&AGENT_BNI, &p, 1_000_000);
    for n in [7u8, 11] {
        other.fields.insert(n, f.fields[&n].clone());
    }
    expect(
        &mut c,
        &AGENT_BNI,
        &other,
        "00",
        "same STAN, other terminal",
    )
    .await;

    // The idempotency check comes before the card's state: an approved
    // purchase retransmitted after its card got PIN-blocked still replays.
    let b = active(22).pan();
    let pb = purchase(&EWARONG, &b, &rice(1_000_000));
    let first_b = expect(&mut c, &EWARONG, &pb, "00", "purchase").await;
    for (i, pin) in ["111111", "222222", "333333"].iter().enumerate() {
        let f = with_pin(inquiry(&AGENT, &b), pin);
        expect(
            &mut c,
            &AGENT,
            &f,
            if i < 2 { "55" } else { "75" },
            "wrong PIN",
        )
        .await;
    }
    let r = c.call(&EWARONG, &pb).await;
    assert_eq!(r.raw, first_b.raw, "replay after the card was PIN-blocked");
    drop(c);
    stop(host).await;

    // After a restart: replays, PIN counts and balances are all still there.
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let r = c.call(&EWARONG, &f).await;
    assert_eq!(r.raw, first.raw, "replay after a restart");
    let r = c.call(&AGENT, &w).await;
    assert_eq!(r.raw, r1.raw, "a decline replays after a restart");
    let f3 = with_pin(withdrawal(&AGENT, &q, 1_000_000), "333333");
    expect(
        &mut c,
        &AGENT,
        &f3,
        "75",
        "third wrong PIN, after a restart",
    )
    .await;
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT - 1_000_100, BPNT_CREDIT - 2_500_000),
        "the other terminal's withdrawal and the PKH purchase"
    );
    drop(c);
    stop(host).await;
}

// ------------------------------------------------------------- reversals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversals_restore_once_and_remember_unknown_originals() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let p = active(15).pan();

    // A purchase and its reversal: the balance comes back.
    let f = purchase(&EWARONG, &p, &rice(3_000_000));
    expect(&mut c, &EWARONG, &f, "00", "purchase").await;
    assert_eq!(c.balances(&AGENT, &p).await.1, BPNT_CREDIT - 3_000_000);
    // Mismatching DE4 or DE2: 12, nothing reversed.
    let bad = reversal_of(&f, "0400").with(4, "000002999999");
    let r = expect(&mut c, &EWARONG, &bad, "12", "reversal with another DE4").await;
    assert_echo(&bad, &r, &[]);
    let bad = reversal_of(&f, "0400").with(2, active(16).pan());
    expect(&mut c, &EWARONG, &bad, "12", "reversal with another DE2").await;
    assert_eq!(c.balances(&AGENT, &p).await.1, BPNT_CREDIT - 3_000_000);
    let rv = reversal_of(&f, "0400");
    let r = expect(&mut c, &EWARONG, &rv, "00", "reversal").await;
    assert_echo(&rv, &r, &[]);
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));
    // Its repeat (0401, same key) and a second reversal (new STAN): 00, no
    // second credit.
    let mut rep = rv.clone();
    rep.mti = *b"0401";
    let r = expect(&mut c, &EWARONG, &rep, "00", "0401 repeat").await;
    assert_eq!(r.mti(), "0410");
    assert_echo(&rep, &r, &[]);
    let rv2 = reversal_of(&f, "0400");
    expect(&mut c, &EWARONG, &rv2, "00", "second reversal").await;
    let rv3 = reversal_of(&f, "0420");
    let r = expect(&mut c, &EWARONG, &rv3, "00", "reversal advice").await;
    assert_eq!(r.mti(), "0430");
    assert_echo(&rv3, &r, &[]);
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));
    // The reversed purchase, retransmitted, replays its 00 and posts nothing.
    let r = expect(&mut c, &EWARONG, &f, "00", "retransmitted original").await;
    assert!(r.get(38).is_some());
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));

    // Advice (0420) of a withdrawal, then its repeat (0421).
    let w = withdrawal(&AGENT, &p, 7_000_000);
    expect(&mut c, &AGENT, &w, "00", "withdrawal").await;
    let adv = reversal_of(&w, "0420");
    expect(&mut c, &AGENT, &adv, "00", "advice").await;
    let mut adv_rep = adv.clone();
    adv_rep.mti = *b"0421";
    let r = expect(&mut c, &AGENT, &adv_rep, "00", "advice repeat").await;
    assert_eq!(r.mti(), "0430");
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));

    // Reversal of an unknown original: 00, remembered; the late original
    // is 94 REVERSED and never posted (also when retransmitted).
    let late = withdrawal(&AGENT, &p, 4_000_000);
    let rv = reversal_of(&late, "0400");
    let r = expect(&mut c, &AGENT, &rv, "00", "reversal of an unknown original").await;
    assert_echo(&rv, &r, &[]);
    let rv_again = reversal_of(&late, "0400");
    expect(&mut c, &AGENT, &rv_again, "00", "another reversal of it").await;
    let r = expect(&mut c, &AGENT, &late, "94", "late original").await;
    assert_eq!(r.de44(), Some("REVERSED"));
    assert_echo(&late, &r, &[44]);
    let r = expect(&mut c, &AGENT, &late, "94", "late original again").await;
    assert_eq!(r.de44(), Some("REVERSED"));
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));

    // A reversal is not a cardholder transaction: it restores the money of
    // a card that got PIN-blocked since.
    let b = active(25).pan();
    let w = withdrawal(&AGENT, &b, 3_000_000);
    expect(&mut c, &AGENT, &w, "00", "withdrawal").await;
    for (i, pin) in ["111111", "222222", "333333"].iter().enumerate() {
        let f = with_pin(inquiry(&AGENT, &b), pin);
        let code = if i < 2 { "55" } else { "75" };
        expect(&mut c, &AGENT, &f, code, "wrong PIN").await;
    }
    expect(
        &mut c,
        &AGENT,
        &reversal_of(&w, "0400"),
        "00",
        "reversal, card PIN-blocked",
    )
    .await;

    // A reversal of a declined original: 00, nothing credited.
    let d = withdrawal(&AGENT, &p, 900_000_000);
    expect(&mut c, &AGENT, &d, "61", "declined original").await;
    expect(
        &mut c,
        &AGENT,
        &reversal_of(&d, "0400"),
        "00",
        "its reversal",
    )
    .await;
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));

    // A reversal with the same key and other content: 94.
    let w = withdrawal(&AGENT, &p, 1_000_000);
    expect(&mut c, &AGENT, &w, "00", "withdrawal").await;
    let rv = reversal_of(&w, "0400");
    expect(&mut c, &AGENT, &rv, "00", "reversal").await;
    let mut other = reversal_of(&late, "0400");
    for n in [7u8, 11] {
        other.fields.insert(n, rv.fields[&n].clone());
    }
    expect(&mut c, &AGENT, &other, "94", "reversal key reused").await;
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));
    drop(c);
    stop(host).await;
    assert_audit_clean(fx.url());
    let books = audit_balances(fx.url());
    assert_eq!(
        books[&active(25).pan()],
        (PKH_CREDIT as i64, BPNT_CREDIT as i64),
        "the PIN-blocked card's withdrawal was reversed"
    );
    assert_eq!(books[&p], (PKH_CREDIT as i64, BPNT_CREDIT as i64));
}

// ----------------------------------------------------------- pipelining

/// INTERFACE §1: requests on one connection for the same card take effect
/// in arrival order, whatever order the answers come back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_purchase_then_reversal_take_effect_in_arrival_order() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let p = active(17).pan();
    let mut sent = Vec::new();
    for _ in 0..5 {
        let f = purchase(&EWARONG, &p, &rice(1_000_000));
        let rv = reversal_of(&f, "0400");
        c.send(&encode(&f)).await;
        c.send(&encode(&rv)).await;
        sent.push(f);
        sent.push(rv);
    }
    let e = common::echo_0800();
    c.send(&e.message()).await;
    let mut got = std::collections::HashMap::new();
    for _ in 0..sent.len() + 1 {
        let r = c.recv().await;
        got.insert((r.mti().to_string(), r.get(11).unwrap().to_string()), r);
    }
    for f in &sent {
        let mti = if f.mti == *b"0200" { "0210" } else { "0410" };
        let stan = String::from_utf8(f.fields[&11].clone()).unwrap();
        let r = got
            .get(&(mti.to_string(), stan.clone()))
            .unwrap_or_else(|| panic!("no {mti} for STAN {stan}"));
        assert_eq!(r.code(), "00", "{r:?}");
        assert_echo(f, r, if mti == "0210" { &[38] } else { &[] });
    }
    assert!(got.contains_key(&("0810".to_string(), "000001".to_string())));
    assert_eq!(c.balances(&AGENT, &p).await, (PKH_CREDIT, BPNT_CREDIT));

    // A retransmission pipelined right behind its original (likely in the
    // same batch): identical answers, one debit.
    let f = purchase(&EWARONG, &p, &rice(2_000_000));
    let bytes = encode(&f);
    c.send(&bytes).await;
    c.send(&bytes).await;
    let a = c.recv().await;
    let b = c.recv().await;
    assert_eq!(a.code(), "00", "{a:?}");
    assert_eq!(a.raw, b.raw, "both copies answered alike");
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT, BPNT_CREDIT - 2_000_000)
    );
    drop(c);
    stop(host).await;
}

// ----------------------------------------------------------- cross-bank

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_of_every_bank_at_every_terminal() {
    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;

    // A BNI card at BRI terminals.
    let b = BNI.pan();
    let f = purchase(&EWARONG, &b, &rice(4_000_000));
    let r = expect(&mut c, &EWARONG, &f, "00", "BNI card, BRI e-Warong").await;
    assert_echo(&f, &r, &[38]);
    let w = withdrawal(&AGENT, &b, 10_000_000);
    expect(&mut c, &AGENT, &w, "00", "BNI card, BRI agent").await;
    let r = expect(
        &mut c,
        &EWARONG_MAC,
        &inquiry(&EWARONG_MAC, &b),
        "00",
        "MAC'd",
    )
    .await;
    assert_eq!(
        r.balances(),
        (PKH_CREDIT - 10_000_000, BPNT_CREDIT - 4_000_000)
    );
    expect(
        &mut c,
        &AGENT,
        &reversal_of(&w, "0400"),
        "00",
        "cross-bank reversal",
    )
    .await;
    assert_eq!(
        c.balances(&AGENT, &b).await,
        (PKH_CREDIT, BPNT_CREDIT - 4_000_000)
    );
    // A BRI card at the BNI agent, and the BNI card at its own bank's agent.
    let g = active(18).pan();
    let w = withdrawal(&AGENT_BNI, &g, 20_000_000);
    expect(&mut c, &AGENT_BNI, &w, "00", "BRI card, BNI agent").await;
    assert_eq!(
        c.balances(&AGENT_BNI, &g).await,
        (PKH_CREDIT - 20_000_000, BPNT_CREDIT)
    );
    expect(
        &mut c,
        &AGENT_BNI,
        &withdrawal(&AGENT_BNI, &b, 1_000_000),
        "00",
        "on-us BNI",
    )
    .await;
    let f = purchase(&AGENT_BNI, &b, &rice(1_000_000));
    expect(
        &mut c,
        &AGENT_BNI,
        &f,
        "58",
        "BPNT purchase at the BNI agent",
    )
    .await;
    // Cards of the other banks (each bank's PIN verification key).
    for card in [MANDIRI, BTN, BSI] {
        let pan = card.pan();
        assert_eq!(c.balances(&AGENT, &pan).await, (PKH_CREDIT, BPNT_CREDIT));
        let f = with_pin(withdrawal(&AGENT, &pan, 1_000_000), "654321");
        let r = expect(&mut c, &AGENT, &f, "55", "wrong PIN at another bank").await;
        assert_eq!(r.de44(), Some("TRIES-LEFT:2"));
        expect(
            &mut c,
            &AGENT,
            &withdrawal(&AGENT, &pan, 1_000_000),
            "00",
            "right PIN",
        )
        .await;
    }
    drop(c);
    stop(host).await;
    assert_audit_clean(fx.url());
}

// -------------------------------------------------------- cash-allowed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cash_allowed_rule_set_lets_bpnt_buy_anything_and_be_withdrawn() {
    let fx = Fixture::sqlite().await;
    let host = fx.start_with("cash-allowed").await;
    let mut c = Client::connect(host.addr).await;
    let p = active(19).pan();

    let f = purchase(
        &EWARONG,
        &p,
        &[("ROKK", 1, 1_000_000), ("PULS", 1, 500_000)],
    );
    let r = expect(&mut c, &EWARONG, &f, "00", "no basket check").await;
    assert_eq!(r.de44(), None);
    let f = req0200(&AGENT, &p, "016000", 2_000_000);
    expect(&mut c, &AGENT, &f, "00", "BPNT cash-out").await;
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT, BPNT_CREDIT - 3_500_000)
    );
    // Still only at agents, and still at e-Warong only for purchases.
    let f = req0200(&EWARONG, &p, "016000", 100);
    expect(&mut c, &EWARONG, &f, "58", "BPNT cash-out at an e-Warong").await;
    let f = purchase(&AGENT, &p, &rice(100));
    expect(&mut c, &AGENT, &f, "58", "BPNT purchase at an agent").await;
    // PKH and BPNT withdrawals share the daily count: 1 + 9 more, then 65.
    for i in 0..9 {
        let de3 = if i % 2 == 0 { "010000" } else { "016000" };
        let f = req0200(&AGENT, &p, de3, 100);
        expect(&mut c, &AGENT, &f, "00", &format!("withdrawal {}", i + 2)).await;
    }
    let f = req0200(&AGENT, &p, "016000", 100);
    expect(&mut c, &AGENT, &f, "65", "11th, BPNT").await;
    let f = req0200(&AGENT, &p, "010000", 100);
    expect(&mut c, &AGENT, &f, "65", "11th, PKH").await;
    drop(c);
    stop(host).await;
}

// ------------------------------------------------------------------ 91

/// The store unavailable: another connection holds SQLite's write lock, so
/// the group commit fails after the store's busy timeout (`LOCK_WAIT`, 2 s)
/// and the request is answered 91 with nothing applied. The connection stays responsive
/// meanwhile, and once the lock is gone the same request is approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_unavailable_91_then_service_resumes() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Executor};
    use std::str::FromStr;

    let fx = Fixture::sqlite().await;
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let p = active(20).pan();
    expect(
        &mut c,
        &AGENT,
        &withdrawal(&AGENT, &p, 1_000_000),
        "00",
        "before",
    )
    .await;

    let mut lock = SqliteConnectOptions::from_str(fx.url())
        .unwrap()
        .connect()
        .await
        .expect("second SQLite connection");
    lock.execute("BEGIN EXCLUSIVE")
        .await
        .expect("take the write lock");

    let t0 = Instant::now();
    let w = withdrawal(&AGENT, &p, 2_000_000);
    c.send(&encode(&w)).await;
    // Network management does not wait for the store.
    let e = common::echo_0800();
    c.send(&e.message()).await;
    let r = c.recv().await;
    assert_eq!((r.mti(), r.code()), ("0810", "00"), "echo first: {r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "echo took {:?}",
        t0.elapsed()
    );
    let r = c.recv().await;
    assert_eq!(
        r.code(),
        "91",
        "withdrawal while the store is locked: {r:?}"
    );
    assert_echo(&w, &r, &[]);
    eprintln!("91 after {:?}", t0.elapsed());

    lock.execute("ROLLBACK")
        .await
        .expect("release the write lock");
    drop(lock);

    // The same request again: processed anew (the 91 left nothing behind).
    let r = expect(&mut c, &AGENT, &w, "00", "retransmission after the lock").await;
    assert_echo(&w, &r, &[38]);
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT - 3_000_000, BPNT_CREDIT),
        "debited once"
    );
    drop(c);
    stop(host).await;
    assert_audit_clean(fx.url());
}

// ------------------------------------------------------------------ 96

/// The debug-build fault hook (`KKS_FAULT_INTERNAL_STAN`, read once per
/// process) in a `kks-switch serve` child: that STAN is answered 96, logged,
/// and nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_error_96_via_the_serve_binary() {
    let fx = Fixture::sqlite().await;
    let log = fx.db.dir().unwrap().join("serve.log");
    let stan = "424242";
    let srv = spawn_serve(
        fx.url(),
        &log,
        &[("KKS_FAULT_INTERNAL_STAN", stan), ("RUST_LOG", "info")],
    );
    let mut c = Client::connect(srv.addr).await;
    let p = active(21).pan();
    let w = withdrawal(&AGENT, &p, 1_000_000).with(11, stan);
    let r = expect(&mut c, &AGENT, &w, "96", "faulted STAN").await;
    assert_echo(&w, &r, &[]);
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT, BPNT_CREDIT),
        "nothing applied"
    );
    // A MAC terminal's 96 is MAC'd.
    let f = purchase(&EWARONG_MAC, &p, &rice(1_000_000)).with(11, stan);
    expect(&mut c, &EWARONG_MAC, &f, "96", "faulted STAN, MAC terminal").await;
    // Other STANs are served.
    expect(
        &mut c,
        &AGENT,
        &restan(w.clone()),
        "00",
        "same request, other STAN",
    )
    .await;
    assert_eq!(
        c.balances(&AGENT, &p).await,
        (PKH_CREDIT - 1_000_000, BPNT_CREDIT)
    );
    drop(c);
    assert_eq!(srv.terminate(), Some(0), "serve exits 0 on SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("internal error"),
        "the 96 is logged; log:\n{text}"
    );
}

// ------------------------------------------------------------ PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_flow_purchase_inquiry_duplicates_reversals() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    let g = GOLDEN.pan();

    let p = common::purchase();
    let r1 = c.call_raw(&p.message()).await;
    assert_eq!(r1.code(), "00", "{r1:?}");
    assert_echo(&p.fields, &r1, &[38]);
    let r2 = c.call_raw(&p.message()).await;
    assert_eq!(r1.raw, r2.raw, "retransmission replays");
    let q = common::inquiry();
    let r = c.call_raw(&q.message()).await;
    assert_eq!(r.get(54), Some("1002360C0000750000006002360C000050700000"));
    let r = c.call_raw(&common::withdrawal().message()).await;
    assert_eq!(r.code(), "00");
    let r = c.call_raw(&common::reversal().message()).await;
    assert_eq!(r.code(), "00");
    assert_eq!(c.balances(&AGENT, &g).await, (PKH_CREDIT, 50_700_000));

    let f = with_pin(withdrawal(&AGENT, &g, 1_000_000), "000000");
    let r = expect(&mut c, &AGENT, &f, "55", "wrong PIN").await;
    assert_eq!(r.de44(), Some("TRIES-LEFT:2"));
    let late = withdrawal(&AGENT, &g, 1_000_000);
    expect(
        &mut c,
        &AGENT,
        &reversal_of(&late, "0400"),
        "00",
        "early reversal",
    )
    .await;
    let r = expect(&mut c, &AGENT, &late, "94", "late original").await;
    assert_eq!(r.de44(), Some("REVERSED"));
    let b = BNI.pan();
    expect(
        &mut c,
        &EWARONG_MAC,
        &purchase(&EWARONG_MAC, &b, &rice(100)),
        "00",
        "BNI",
    )
    .await;
    let f = purchase(&EWARONG, &g, &[("BRAS", 1, 100), ("ROKK", 1, 100)]);
    let r = expect(&mut c, &EWARONG, &f, "57", "ROKK").await;
    assert_eq!(r.de44(), Some("INELIGIBLE:ROKK"));
    assert_eq!(c.balances(&AGENT, &g).await, (PKH_CREDIT, 50_700_000));
    drop(c);
    stop(host).await;

    // The books survive a restart.
    let host = fx.start().await;
    let mut c = Client::connect(host.addr).await;
    assert_eq!(c.balances(&AGENT, &g).await, (PKH_CREDIT, 50_700_000));
    let r = c.call_raw(&p.message()).await;
    assert_eq!(r.raw, r1.raw, "replay after a restart");
    drop(c);
    stop(host).await;
}
