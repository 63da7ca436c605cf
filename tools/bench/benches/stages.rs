//! Criterion micro-benchmarks of the hot stages the processor benchmark
//! (`crates/formats/benches/processors.rs`) does not cover, on generated CloudTrail and VPC flow
//! data, one core:
//!
//! - `decompress`: the collector's decompress stage (`sluice_formats::decompress::open`, gzip by magic)
//!   reading a whole object;
//! - `batch_encode`: `sluice_channel::encode::BatchEncoder` at gzip levels 0, 1 and 6 (the
//!   channel's cost in the collector);
//! - `relay_check`: the relay's ingest check of a batch body (`sluice_channel::decode::check`:
//!   gunzip + line rules);
//! - `relay_framing`: the relay's Devo framing of a stored batch
//!   (`sluice_relay::output::frame::Framer`), plain and in Devo's "zip" mode.
//!
//! Throughput is per byte of raw events (decompressed object bytes, or channel lines).
//! Run: `cargo bench -p sluice-bench --bench stages` (figures in BENCHMARKS.md).

use std::hint::black_box;
use std::io::Read;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_bench::corpus::{raw_object, Kind};
use sluice_bench::roofline::{split, tag_of};
use sluice_channel::decode::DecodeLimits;
use sluice_channel::encode::BatchEncoder;
use sluice_relay::config::Framing;
use sluice_relay::output::frame::Framer;

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// (name, kind, raw object, events as owned messages)
type Corpus = (&'static str, Kind, Vec<u8>, Vec<Vec<u8>>);

fn corpora() -> Vec<Corpus> {
    [(Kind::Cloudtrail, 3000u64), (Kind::VpcFlow, 36_000)]
        .into_iter()
        .map(|(kind, units)| {
            let raw = raw_object(kind, 7, units).unwrap();
            let mut arena = Vec::new();
            let events = split(kind, &raw, &mut arena)
                .unwrap()
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            (kind.name(), kind, raw, events)
        })
        .collect()
}

fn encode(kind: Kind, events: &[Vec<u8>], level: u32) -> Vec<u8> {
    let mut e = BatchEncoder::new(level);
    for m in events {
        e.push(tag_of(kind), m);
    }
    e.finish().body.to_vec()
}

fn stages(c: &mut Criterion) {
    for (name, kind, raw, events) in corpora() {
        let lines_bytes: u64 = events
            .iter()
            .map(|m| (tag_of(kind).len() + m.len() + 2) as u64)
            .sum();

        let gz = gzip(&raw, 6);
        let mut g = c.benchmark_group(format!("decompress/{name}"));
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.sample_size(20);
        g.bench_function("gzip6_object", |b| {
            b.iter(|| {
                let input = Box::new(std::io::BufReader::new(&gz[..]));
                let (_, mut r) = sluice_formats::decompress::open(
                    input,
                    &sluice_formats::decompress::Hints::default(),
                )
                .unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let mut n = 0;
                loop {
                    let k = r.read(&mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                black_box(n)
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("batch_encode/{name}"));
        g.throughput(Throughput::Bytes(lines_bytes));
        g.sample_size(10);
        for level in [0u32, 1, 6] {
            g.bench_function(format!("level{level}"), |b| {
                b.iter(|| black_box(encode(kind, &events, level).len()))
            });
        }
        g.finish();

        let body = encode(kind, &events, 1);
        let limits = DecodeLimits {
            max_batch_bytes: u64::MAX,
            max_event_bytes: u64::from(u32::MAX),
        };
        let mut g = c.benchmark_group(format!("relay_check/{name}"));
        g.throughput(Throughput::Bytes(lines_bytes));
        g.sample_size(20);
        g.bench_function("level1_body", |b| {
            b.iter(|| black_box(sluice_channel::decode::check(&body, limits).is_ok()))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("relay_framing/{name}"));
        g.throughput(Throughput::Bytes(lines_bytes));
        g.sample_size(10);
        for (label, zip) in [("plain", None), ("zip", Some(256 * 1024))] {
            let framing = Framing {
                hostname: "benchhost".into(),
                facility: 1,
                severity: 6,
                octet_counting: false,
                zip_buffer: zip,
            };
            let mut framer = Framer::new(&framing);
            g.bench_function(label, |b| {
                b.iter(|| {
                    let mut frames = framer.batch(&body);
                    let mut out = Vec::with_capacity(1 << 20);
                    let mut total = 0usize;
                    while frames.next_chunk(&mut out, 1 << 20).unwrap().is_some() {
                        total += out.len();
                        out.clear();
                    }
                    black_box(total)
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
