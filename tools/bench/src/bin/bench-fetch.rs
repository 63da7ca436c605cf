//! `bench-fetch` (issue 5, item 6): download throughput of one 1 GiB object through the
//! collector's own fetch code (`sluice::object::fetch::open` + `pump` + the blocking `ChunkReader`,
//! the real AWS SDK), as one stream against ranged parallel GETs.
//!
//! The object server is `sluice_bench::s3serve` on loopback (moto reads the whole object for
//! every ranged GET, which would measure moto). Each configuration runs with responses
//! unthrottled (loopback, CPU bound) and with each response capped at `--per-request-mbps`,
//! a model of S3's per-request bandwidth, where parallel parts pay off.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use sluice::object::fetch::{self, FetchSettings};
use sluice_bench::report::{f, Table};
use sluice_bench::rng::Rng;
use sluice_bench::s3serve::{self, Object};
use tokio::sync::Semaphore;

#[derive(Parser)]
struct Args {
    /// Object size, MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Per-response cap of the throttled runs, MB/s (0: skip them).
    #[arg(long, default_value_t = 80)]
    per_request_mbps: u64,
    /// Runs of each configuration (the best is kept).
    #[arg(long, default_value_t = 2)]
    runs: usize,
}

/// (label, part bytes, parallel parts, parts in flight)
fn configs(size: u64) -> Vec<(String, u64, usize, usize)> {
    vec![
        (
            "single stream (one GET)".into(),
            size.max(1 << 20) * 2,
            1,
            1,
        ),
        ("ranged, 4 MiB parts, 1 at a time".into(), 4 << 20, 1, 4),
        ("ranged, 4 MiB × 4 parallel (default)".into(), 4 << 20, 4, 4),
        ("ranged, 8 MiB × 8 parallel".into(), 8 << 20, 8, 8),
    ]
}

async fn download(s3: &aws_sdk_s3::Client, settings: FetchSettings) -> anyhow::Result<(u64, f64)> {
    let t0 = Instant::now();
    let opened = fetch::open(s3, "bench", "big.bin", None, &settings).await?;
    let (tx, mut reader) = fetch::body_channel();
    let pump = tokio::spawn(fetch::pump(
        opened,
        s3.clone(),
        "bench".into(),
        "big.bin".into(),
        settings,
        tx,
    ));
    let n = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let k = reader.read(&mut buf)?;
            if k == 0 {
                return Ok(n);
            }
            n += k as u64;
        }
    })
    .await??;
    pump.await?;
    Ok((n, t0.elapsed().as_secs_f64()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let size = args.mib << 20;
    eprintln!("generating a {} MiB object in memory", args.mib);
    let mut data = vec![0u8; size as usize];
    Rng::new(42).fill(&mut data);
    let data = bytes::Bytes::from(data);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut table = Table::new(&[
        "per-request cap",
        "configuration",
        "GETs",
        "seconds",
        "MB/s",
        "vs single stream",
    ]);
    let caps: Vec<u64> = if args.per_request_mbps > 0 {
        vec![0, args.per_request_mbps]
    } else {
        vec![0]
    };
    for cap in caps {
        let object = Arc::new(Object {
            data: data.clone(),
            etag: "\"bench-etag-1\"".into(),
            rate: cap * 1_000_000,
            requests: Default::default(),
        });
        let (endpoint, server) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let endpoint = format!("http://{}", listener.local_addr()?);
            let server = tokio::spawn(s3serve::serve(listener, object.clone()));
            anyhow::Ok((endpoint, server))
        })?;
        let (s3, _) = rt.block_on(sluice_testkit::moto::clients(&endpoint));
        let mut single = f64::NAN;
        for (label, part, parallel, permits) in configs(size) {
            let mut best = f64::INFINITY;
            let mut gets = 0;
            for _ in 0..args.runs {
                let before = object.requests.load(Ordering::Relaxed);
                let settings = FetchSettings {
                    part_size: part,
                    parallel_parts: parallel,
                    part_permits: Arc::new(Semaphore::new(permits)),
                };
                let (n, secs) = rt.block_on(download(&s3, settings))?;
                anyhow::ensure!(n == size, "{label}: got {n} of {size} bytes");
                gets = object.requests.load(Ordering::Relaxed) - before;
                best = best.min(secs);
            }
            let mbps = size as f64 / 1e6 / best;
            if single.is_nan() {
                single = mbps;
            }
            let cap_label = if cap == 0 {
                "none (loopback)".to_string()
            } else {
                format!("{cap} MB/s")
            };
            eprintln!("{cap_label}: {label}: {best:.2} s, {mbps:.0} MB/s");
            table.row(vec![
                cap_label,
                label,
                gets.to_string(),
                f(best, 2),
                f(mbps, 0),
                format!("{}×", f(mbps / single, 2)),
            ]);
        }
        server.abort();
    }
    println!(
        "### Fetch: one {} MiB object through sluice::object::fetch (best of {}), {}\n",
        args.mib,
        args.runs,
        sluice_bench::report::machine()
    );
    print!("{}", table.render());
    Ok(())
}
