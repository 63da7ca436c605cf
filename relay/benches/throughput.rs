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

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_channel::client::ChannelClient;
use sluice_channel::encode::{BatchEncoder, EncodedBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Pems {
    chain: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pems {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "logtrustCA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>| {
        let p = CertificateParams::new(names).unwrap();
        let k = KeyPair::generate().unwrap();
        (p.signed_by(&k, &issuer).unwrap().pem(), k.serialize_pem())
    };
    Pems {
        chain: ca_cert.pem(),
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["client".into()]),
    }
}

/// A TLS receiver that counts bytes and LFs; returns its port.
fn receiver(p: &Pems, bytes: Arc<AtomicU64>, lines: Arc<AtomicU64>) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(p.chain.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs: Vec<_> = CertificateDer::pem_slice_iter(p.server.0.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(p.server.1.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (bytes, lines) = (bytes.clone(), lines.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 256 * 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            // The relay's close_notify: answer it, confirming its writes.
                            let _ = s.shutdown().await;
                            break;
                        }
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        lines.fetch_add(
                            memchr::memchr_iter(b'\n', &buf[..n]).count() as u64,
                            Ordering::Relaxed,
                        );
                    }
                });
            }
        });
    });
    port
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// The value of the metric line starting with `name` (a plain HTTP/1.1 GET of /metrics).
fn metric(address: &str, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
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

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
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
    let p = pki();
    let chain = write(dir.path(), "chain.crt", &p.chain);
    let cert = write(dir.path(), "domain.crt", &p.client.0);
    let key = write(dir.path(), "domain.key", &p.client.1);
    let rx_bytes = Arc::new(AtomicU64::new(0));
    let rx_lines = Arc::new(AtomicU64::new(0));
    let port = receiver(&p, rx_bytes.clone(), rx_lines.clone());
    let address_file = dir.path().join("addr");
    let config = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\naddress_file = \"{}\"\n[spool]\ndir = \"{}\"\n\
         [[outputs]]\ntype = \"devo\"\nhostname = \"benchhost\"\ndevo_address = \"localhost:{port}\"\n\
         chain_filename = \"{chain}\"\ncert_filename = \"{cert}\"\nkey_filename = \"{key}\"\n\
         connections = {connections}\n{confirm}",
        address_file.display(),
        dir.path().join("spool").display()
    );
    let config_path = write(dir.path(), "relay.toml", &config);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-relay"))
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("relay: {l}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let address = loop {
        if let Ok(t) = std::fs::read_to_string(&address_file) {
            if t.ends_with('\n') {
                break t.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "relay did not start");
        std::thread::sleep(Duration::from_millis(20));
    };

    let all = batches(events, per_batch);
    let compressed: u64 = all.iter().map(|b| b.body.len() as u64).sum();
    let raw: u64 = all.iter().map(|b| b.raw_bytes).sum();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cpu0 = cpu_seconds(child.id());
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
    while rx_lines.load(Ordering::Relaxed) < events {
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
    let cpu = cpu_seconds(child.id()) - cpu0;
    let wire = rx_bytes.load(Ordering::Relaxed) as f64;
    // SAFETY: signals the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();

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
