//! Relay throughput, end to end, to a local TLS receiver (mutual TLS, certificates made here):
//! producers POST pre-encoded batches to the real `sluice-relay` binary (release build), which
//! spools them (fsync) and delivers them as Devo lines over TLS. The receiver answers the
//! relay's close (close_notify), so every batch is confirmed; the clock stops when the relay
//! counts every event delivered (confirmed). Prints events/s and MB/s of wall time, and per
//! core (per CPU-second the relay process used), and how often connections rotated.
//!
//! Run: `cargo bench -p sluice-relay --bench throughput`
//! Knobs (environment): BENCH_EVENTS (default 1000000), BENCH_BATCH (2000 events per batch),
//! BENCH_CONNECTIONS (1), BENCH_PRODUCERS (4), BENCH_CONFIRM_BYTES and
//! BENCH_CONFIRM_INTERVAL_MS (the output's `confirm_bytes`, `confirm_interval_ms`; the
//! relay's defaults when unset).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_channel::client::ChannelClient;
use sluice_channel::encode::{BatchEncoder, EncodedBatch};
use sluice_testkit::metrics::{http_get, metric_value};
use sluice_testkit::path_str;
use sluice_testkit::pki::Pki;
use sluice_testkit::process::Proc;
use sluice_testkit::procstat::cpu_seconds;
use sluice_testkit::sink::{self, Counters};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value of metric `series` at the relay's `address` (0 when absent).
fn metric(address: &str, series: &str) -> u64 {
    let (_, text) = http_get(address, "/metrics");
    metric_value(&text, series).map_or(0, |v| v as u64)
}

fn batches(total: u64, per_batch: u64) -> Vec<EncodedBatch> {
    let mut out = Vec::new();
    let mut n = 0;
    while n < total {
        let mut e = BatchEncoder::new(1);
        for _ in 0..per_batch.min(total - n) {
            let msg = format!(
                r#"{{"eventVersion":"1.08","eventTime":"2024-05-01T12:{:02}:{:02}Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"eu-west-1","sourceIPAddress":"10.{}.{}.{}","requestID":"{:016X}","n":{n}}}"#,
                n % 60,
                (n / 60) % 60,
                n % 256,
                (n / 256) % 256,
                (n / 65536) % 256,
                fastrand::u64(..)
            );
            e.push("cloud.aws.cloudtrail.events", msg.as_bytes());
            n += 1;
        }
        out.push(e.finish());
    }
    out
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let events = if quick {
        20_000
    } else {
        env("BENCH_EVENTS", 1_000_000)
    };
    let per_batch = env("BENCH_BATCH", 2000);
    let connections = env("BENCH_CONNECTIONS", 1);
    let producers = env("BENCH_PRODUCERS", 4);
    let mut confirm = String::new();
    if let Ok(v) = std::env::var("BENCH_CONFIRM_BYTES") {
        confirm.push_str(&format!("confirm_bytes = {v}\n"));
    }
    if let Ok(v) = std::env::var("BENCH_CONFIRM_INTERVAL_MS") {
        confirm.push_str(&format!("confirm_interval_ms = {v}\n"));
    }

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "", "logtrustCA", &["localhost"]).unwrap();
    let counters = Arc::new(Counters::default());
    let server = sluice_testkit::tls::server_config(&pki.server_tls(&pki)).unwrap();
    let port = sink::start("127.0.0.1:0", server, counters.clone()).unwrap();
    let address_file = dir.path().join("addr");
    let config = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\naddress_file = \"{}\"\n[spool]\ndir = \"{}\"\n\
         [[outputs]]\ntype = \"devo\"\nhostname = \"benchhost\"\ndevo_address = \"localhost:{port}\"\n\
         chain_filename = \"{chain}\"\ncert_filename = \"{cert}\"\nkey_filename = \"{key}\"\n\
         connections = {connections}\n{confirm}",
        address_file.display(),
        dir.path().join("spool").display(),
        chain = path_str(&pki.chain),
        cert = path_str(&pki.client_cert),
        key = path_str(&pki.client_key),
    );
    let config_path = dir.path().join("relay.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Proc::command(Path::new(env!("CARGO_BIN_EXE_sluice-relay")), &config_path);
    cmd.env("RUST_LOG", "warn");
    let mut relay = Proc::capture(cmd, "relay");
    let address = relay
        .wait_address_file(&address_file, Duration::from_secs(20))
        .unwrap();

    let all = batches(events, per_batch);
    let compressed: u64 = all.iter().map(|b| b.body.len() as u64).sum();
    let raw: u64 = all.iter().map(|b| b.raw_bytes).sum();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cpu0 = cpu_seconds(relay.pid()).unwrap_or(0.0);
    let t0 = Instant::now();
    let ingest_secs = rt.block_on(async {
        let client = Arc::new(
            ChannelClient::new(&format!("http://{address}"), None, Duration::from_secs(60))
                .unwrap(),
        );
        let all = Arc::new(all);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for pidx in 0..producers {
            let (client, all, next) = (client.clone(), all.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(b) = all.get(i) else { break };
                    let key = format!("bench-{pidx}-{i}");
                    loop {
                        match client.send(&key, b).await {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => {
                                tokio::time::sleep(Duration::from_millis(100)).await
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        t0.elapsed().as_secs_f64()
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    while counters.lines.load(Ordering::Relaxed) < events {
        assert!(Instant::now() < deadline, "not everything arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    let arrived = t0.elapsed().as_secs_f64();
    let delivered = "sluice_relay_events_delivered_total{output=\"devo\"}";
    while metric(&address, delivered) < events {
        assert!(Instant::now() < deadline, "not everything confirmed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t0.elapsed().as_secs_f64();
    let connects = metric(
        &address,
        "sluice_relay_output_connects_total{output=\"devo\"}",
    );
    let resent = metric(
        &address,
        "sluice_relay_output_batches_resent_total{output=\"devo\"}",
    );
    let cpu = cpu_seconds(relay.pid()).unwrap_or(0.0) - cpu0;
    let wire = counters.bytes.load(Ordering::Relaxed) as f64;
    relay.terminate();

    let mb = 1e6;
    println!("relay throughput to a local mutual-TLS receiver (2 cores shared by producer, relay and receiver)");
    println!(
        "  events {events}, batch {per_batch}, connections {connections}, producers {producers}; \
         raw {:.1} MB, compressed {:.1} MB, on the wire {:.1} MB",
        raw as f64 / mb,
        compressed as f64 / mb,
        wire / mb
    );
    println!(
        "  end to end (every event confirmed): {:.2} s wall = {:.0} events/s, {:.1} MB/s on the wire; \
         last line arrived at {:.2} s",
        wall,
        events as f64 / wall,
        wire / mb / wall,
        arrived
    );
    println!(
        "  connections opened {connects}, batches resent {resent}, {} ({})",
        if confirm.is_empty() {
            "default confirm settings"
        } else {
            "confirm settings"
        },
        confirm.trim().replace('\n', ", ")
    );
    println!(
        "  ingest (all POSTs answered 200, fsynced): {:.2} s = {:.0} events/s",
        ingest_secs,
        events as f64 / ingest_secs
    );
    println!(
        "  relay CPU {:.2} s: {:.0} events/s and {:.1} MB/s (wire) per core",
        cpu,
        events as f64 / cpu,
        wire / mb / cpu
    );
}
