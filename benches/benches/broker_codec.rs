//! Micro-benchmarks of the broker's frame codec (the log's append and read are in `broker_log`).
#![allow(clippy::unwrap_used)]
#![allow(missing_docs)] // criterion_group! generates undocumented items

use broker::protocol::frame::{
    REQUEST_HEADER_BYTES, RequestHeader, begin_request, finish_frame, parse_request_header,
    split_frame,
};
use broker::protocol::{ApiKey, Record, Request};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn produce_request(n: usize) -> Request {
    Request::Produce {
        topic: "purchases".into(),
        records: (0..n)
            .map(|i| {
                Record::new(Bytes::from(vec![b'x'; 100]))
                    .with_key(format!("event-{}", i % 8))
                    .with_dedup_id(format!("d-{i}"))
            })
            .collect(),
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let req = produce_request(100);
    g.throughput(Throughput::Elements(100));
    g.bench_function("encode_produce_100x100B", |b| {
        let mut out = BytesMut::with_capacity(32 * 1024);
        b.iter(|| {
            out.clear();
            let at = begin_request(
                &mut out,
                RequestHeader {
                    api_key: ApiKey::Produce as u16,
                    version: 1,
                    correlation_id: 1,
                },
            );
            black_box(&req).encode_body(&mut out);
            finish_frame(&mut out, at);
        });
    });
    let mut frame = BytesMut::new();
    let at = begin_request(
        &mut frame,
        RequestHeader {
            api_key: ApiKey::Produce as u16,
            version: 1,
            correlation_id: 1,
        },
    );
    req.encode_body(&mut frame);
    finish_frame(&mut frame, at);
    let frame = frame.freeze();
    g.bench_function("split_and_decode_produce_100x100B", |b| {
        b.iter_batched(
            || BytesMut::from(frame.as_ref()),
            |mut buf| {
                let f = split_frame(&mut buf, 8 << 20, REQUEST_HEADER_BYTES)
                    .unwrap()
                    .unwrap();
                let (_, body) = parse_request_header(&f).unwrap();
                black_box(Request::decode_body(ApiKey::Produce, &body).unwrap());
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
