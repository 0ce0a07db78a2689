//! Micro-benchmarks for the hot code that needs no socket:
//! request-head parsing, response-head encoding, chunked decoding, the mount
//! lookup and the date cache. Run: `cargo bench --bench h1`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use skitai::internals::{MountLookup, chunked_body, encode_hello_head, request_heads};

const WRK_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n";
const BROWSER_REQUEST: &[u8] = b"GET /static/app.js?v=42 HTTP/1.1\r\nHost: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36\r\n\
Accept: */*\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n\
Referer: https://example.com/\r\nCookie: session=abcdef0123456789; theme=dark\r\nConnection: keep-alive\r\n\r\n";

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_head");
    g.throughput(Throughput::Elements(1));
    g.bench_function("wrk", |b| b.iter(|| request_heads(black_box(WRK_REQUEST))));
    g.bench_function("browser", |b| b.iter(|| request_heads(black_box(BROWSER_REQUEST))));
    let pipelined: Vec<u8> = WRK_REQUEST.repeat(16);
    g.throughput(Throughput::Elements(16));
    g.bench_function("wrk_pipelined_x16", |b| b.iter(|| request_heads(black_box(&pipelined))));
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut dst = BytesMut::with_capacity(4096);
    c.bench_function("encode_head/hello", |b| {
        b.iter(|| {
            dst.clear();
            encode_hello_head(&mut dst);
            black_box(dst.len())
        })
    });
}

fn chunked(c: &mut Criterion) {
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(64 * 1024));
    g.bench_function("64x1KiB_whole", |b| b.iter(|| chunked_body(black_box(&body), body.len())));
    g.bench_function("64x1KiB_in_4KiB_reads", |b| b.iter(|| chunked_body(black_box(&body), 4096)));
    g.finish();
}

fn mounts(c: &mut Criterion) {
    let table = MountLookup::new(&["/", "/static/", "/api/v1", "/api/v2", "/admin/", "/ws", "/media/images/"]);
    c.bench_function("mount_lookup/root", |b| b.iter(|| table.lookup(black_box("/index.html"))));
    c.bench_function("mount_lookup/deep", |b| b.iter(|| table.lookup(black_box("/api/v2/users/42/orders"))));
}

fn date(c: &mut Criterion) {
    c.bench_function("http_date/cached", |b| b.iter(|| black_box(skitai::http::date::http_date())));
}

criterion_group!(benches, parse, encode, chunked, mounts, date);
criterion_main!(benches);
