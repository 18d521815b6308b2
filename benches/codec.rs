//! Codec speed: decode, encode and round trip of a typical e-Warong 0200
//! (DE 2, 3, 4, 7, 11, 12, 13, 18, 32, 37, 41, 42, 48 with two basket items,
//! 49, 52). Run: `cargo bench --bench codec`. Each iteration is one message,
//! so criterion's time per iteration inverts to messages per second.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kks_switch::iso8583::{Builder, Message};

const PIN_BLOCK: [u8; 8] = [0x43, 0x99, 0x9F, 0xB4, 0x5E, 0xBF, 0x1A, 0x5D];

fn encode_0200(out: &mut BytesMut) {
    let mut b = Builder::new(out, b"0200");
    let fields: [(u8, &[u8]); 15] = [
        (2, b"6000020000000120"),
        (3, b"000000"),
        (4, b"000009300000"),
        (7, b"1125083000"),
        (11, b"000101"),
        (12, b"153000"),
        (13, b"1125"),
        (18, b"5411"),
        (32, b"002"),
        (37, b"000000000101"),
        (41, b"EW000001"),
        (42, b"EWARONG00000001"),
        (48, b"BRAS0005000006500000TELR0001000002800000"),
        (49, b"360"),
        (52, &PIN_BLOCK),
    ];
    for (n, v) in fields {
        b.field(n, v).expect("bench message fits the table");
    }
    b.finish();
}

fn decode(bytes: &[u8]) -> u64 {
    let m = Message::decode(bytes).expect("valid");
    m.validate().expect("valid");
    m.amount().unwrap_or(0) + m.get(48).map_or(0, |v| v.len() as u64)
}

fn bench(c: &mut Criterion) {
    let mut out = BytesMut::with_capacity(512);
    encode_0200(&mut out);
    let msg = out.split().freeze();
    let mut g = c.benchmark_group("iso8583_0200");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode+validate", |b| {
        b.iter(|| black_box(decode(black_box(&msg))))
    });
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode_0200(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("round_trip", |b| {
        b.iter(|| {
            out.clear();
            encode_0200(&mut out);
            black_box(decode(&out))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
