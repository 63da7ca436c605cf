//! Spool speed on its own: appends batches (16 concurrent producers, group commit), then
//! three times reopens the spool (start-up verification of every record) and reads every batch
//! back through an output's reader (the delivery hot path). Prints ms, MB/s and µs per batch.
//! Every read hits the page cache (the data was just written); compare runs on the same machine.
//!
//! Run: `cargo run --release -p sluice-relay --example spool_read`
//! Knobs (environment): BODY (bytes per batch, default 2000), TOTAL (bytes, default 512 MiB),
//! TMPDIR (where the spool goes).
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sluice_relay::config::SpoolSettings;
use sluice_relay::metrics::Metrics;
use sluice_relay::spool::Spool;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let body_len: usize = std::env::var("BODY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let total: usize = std::env::var("TOTAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512 << 20);
    let n = total / body_len;
    let dir = tempfile::tempdir().unwrap();
    let s = SpoolSettings {
        dir: dir.path().to_path_buf(),
        max_bytes: 4 << 30,
        segment_bytes: 16 << 20,
        retry_after_secs: 1,
        keys_window: 100_000,
    };
    let names = vec!["a".to_string()];
    let spool = Spool::open(&s, &names, Arc::new(Metrics::new(&names))).unwrap();
    let body = Bytes::from(
        (0..body_len)
            .map(|i| (i * 7 + 13) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut tasks = Vec::new();
    for t in 0..16 {
        let spool = spool.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(16) {
                spool
                    .append(&format!("k-{i}"), 10, body.clone())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    spool.shutdown().await;
    drop(spool);
    for round in 0..3 {
        let t0 = Instant::now();
        let spool = Spool::open(&s, &names, Arc::new(Metrics::new(&names))).unwrap();
        let recovery = t0.elapsed();
        let mut r = spool.reader("a");
        let t1 = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..n {
            let b = r.next().await.unwrap();
            bytes += b.body.len();
        }
        let read = t1.elapsed();
        println!(
            "round {round}: {n} batches of {body_len} B: recovery {:.0} ms ({:.0} MB/s), read {:.0} ms ({:.0} MB/s, {:.1} us/batch)",
            recovery.as_secs_f64() * 1e3,
            bytes as f64 / recovery.as_secs_f64() / 1e6,
            read.as_secs_f64() * 1e3,
            bytes as f64 / read.as_secs_f64() / 1e6,
            read.as_secs_f64() * 1e6 / n as f64
        );
        spool.shutdown().await;
    }
}
