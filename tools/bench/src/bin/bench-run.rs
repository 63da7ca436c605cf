//! `bench-run`: the whole-pipeline benchmark. On loopback, in this order:
//!
//! 1. starts moto (S3 + SQS) and the mutual-TLS line sink (`bench-sink`), and checks that the
//!    sink is far faster than the pipeline (a TLS client in this process blasts lines at it);
//! 2. measures the roofline (`sluice_bench::roofline`) of each corpus at the channel's level;
//! 3. per corpus: uploads the objects into a bucket wired to a queue (the notifications queue
//!    up: one message per object), starts `sluice-relay` (devo output, mutual TLS, to the sink)
//!    and `sluice` (release builds, default settings but the emulator's endpoint and keys), and
//!    measures until the sink has every expected line: wall time, events/s, raw MB/s, CPU
//!    seconds (user + sys, /proc/<pid>/stat) of collector, relay, moto and sink, CPU-s per GB
//!    of raw events, peak RSS (VmHWM) of collector and relay;
//! 4. light-load latency: with both processes idle, uploads one small object at a time and
//!    times its first line at the sink from the end of the upload;
//! 5. prints the tables (Markdown) and writes `results.json` into `--work`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use sluice_bench::corpus::{self, Kind, Manifest};
use sluice_bench::report::{f, machine, mib, Table};
use sluice_bench::roofline::{self, Roofline, PARTS};
use sluice_testkit::moto::{self, Moto, Wired};
use sluice_testkit::pki::Pki;
use sluice_testkit::process::Proc;
use sluice_testkit::procstat::{cpu_seconds, now_ns, peak_rss};

#[derive(Parser)]
struct Args {
    /// Corpus root made by `bench-corpus`.
    #[arg(long)]
    corpus: PathBuf,
    /// Scratch directory (configs, spools, logs, results.json).
    #[arg(long)]
    work: PathBuf,
    /// Directory holding sluice, sluice-relay and bench-sink (release builds).
    #[arg(long)]
    bins: PathBuf,
    /// The repository (for .venv/bin/moto_server).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Phases, comma separated: cloudtrail, vpc_flow, cloudwatch, large, latency.
    #[arg(long, default_value = "cloudtrail,vpc_flow,cloudwatch,large,latency")]
    phases: String,
    /// The channel's gzip level (`[batch] compression_level`); the collector default is 1.
    #[arg(long)]
    level: Option<u32>,
    /// MB the sink check blasts through TLS.
    #[arg(long, default_value_t = 2000)]
    sink_check_mb: u64,
    /// Give up on a phase after this many seconds without a new line.
    #[arg(long, default_value_t = 120)]
    stall_s: u64,
    /// Extra TOML lines for the collector's top level (e.g. "[fetch]\nparallel_parts = 1").
    #[arg(long, default_value = "")]
    collector_extra: String,
    /// Extra TOML lines inside the collector's [[inputs]] table.
    #[arg(long, default_value = "")]
    input_extra: String,
    /// Skip the roofline (when only the pipeline is wanted).
    #[arg(long)]
    no_roofline: bool,
}

/// The sink child and its command pipe.
struct Sink {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    pki: Pki,
}

#[derive(Debug, Clone, Copy, Default)]
struct SinkStats {
    lines: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    timeout: bool,
}

impl Sink {
    fn start(bins: &Path, work: &Path) -> anyhow::Result<Sink> {
        let pki_dir = work.join("pki");
        let mut child = Command::new(bins.join("bench-sink"))
            .arg("--pki-dir")
            .arg(&pki_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(work.join("sink.log"))?)
            .spawn()
            .context("starting bench-sink")?;
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("sink said {line:?}"))?;
        Ok(Sink {
            child,
            stdin,
            stdout,
            port,
            pki: Pki::paths(&pki_dir, ""),
        })
    }

    fn cmd(&mut self, cmd: &str) -> anyhow::Result<SinkStats> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let timeout = line.starts_with("timeout ");
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |name: &str| -> u64 {
            w.iter()
                .position(|x| *x == name)
                .and_then(|i| w.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(SinkStats {
            lines: num("lines"),
            bytes: num("bytes"),
            first_ns: num("first_ns"),
            last_ns: num("last_ns"),
            timeout,
        })
    }

    fn sample(&mut self) -> anyhow::Result<String> {
        writeln!(self.stdin, "sample")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a relay or collector (`--config`) with its stderr in `log`; killed on drop.
fn spawn_logged(program: &Path, config: &Path, log: &Path) -> anyhow::Result<Proc> {
    let mut cmd = Proc::command(program, config);
    cmd.env("RUST_LOG", "info,aws_config=warn,aws_smithy_runtime=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Proc::from_child(child))
}

/// One corpus through the pipeline.
#[derive(Debug, Clone, Default, Serialize)]
struct PhaseResult {
    corpus: String,
    objects: u64,
    events: u64,
    raw_bytes: u64,
    gz_bytes: u64,
    lines: u64,
    complete: bool,
    wall_s: f64,
    first_line_s: f64,
    collector_cpu_s: f64,
    relay_cpu_s: f64,
    moto_cpu_s: f64,
    sink_cpu_s: f64,
    collector_peak_rss: u64,
    relay_peak_rss: u64,
    roofline_cpu_s_per_gb: f64,
    note: String,
}

impl PhaseResult {
    fn gb(&self) -> f64 {
        self.raw_bytes as f64 / 1e9
    }
    fn pipeline_per_gb(&self) -> f64 {
        (self.collector_cpu_s + self.relay_cpu_s) / self.gb()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct SinkCheck {
    bytes: u64,
    lines: u64,
    wall_s: f64,
    sink_cpu_s: f64,
    client_cpu_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Latency {
    samples_first_s: Vec<f64>,
    samples_last_s: Vec<f64>,
    records_per_object: u64,
    note: String,
}

#[derive(Debug, Clone, Serialize)]
struct RooflineRow {
    corpus: String,
    level: u32,
    parts: Vec<(String, f64)>,
    total: f64,
    channel_ratio: f64,
}

#[derive(Debug, Default, Serialize)]
struct Results {
    date: String,
    machine: String,
    /// /proc/loadavg before the run (the machine may be shared).
    load_before: String,
    level: u32,
    sink_check: Option<SinkCheck>,
    roofline: Vec<RooflineRow>,
    phases: Vec<PhaseResult>,
    latency: Option<Latency>,
    sample_line: String,
}

fn bucket_name(kind: &str) -> String {
    format!("bench-{}", kind.replace('_', "-"))
}

fn relay_config(dir: &Path, sink: &Sink) -> String {
    format!(
        r#"[listen]
address = "127.0.0.1:0"
address_file = "{addr}"

[spool]
dir = "{spool}"

[[outputs]]
type = "devo"
hostname = "benchhost"
devo_address = "localhost:{port}"
chain_filename = "{ca}"
cert_filename = "{cert}"
key_filename = "{key}"
"#,
        addr = dir.join("relay.addr").display(),
        spool = dir.join("spool").display(),
        port = sink.port,
        ca = sink.pki.chain.display(),
        cert = sink.pki.client_cert.display(),
        key = sink.pki.client_key.display(),
    )
}

fn collector_config(
    relay_addr: &str,
    level: Option<u32>,
    wired: &Wired,
    endpoint: &str,
    processor: &str,
    args: &Args,
) -> String {
    let url = if relay_addr.starts_with("http") || relay_addr.starts_with("unix:") {
        relay_addr.to_string()
    } else {
        format!("http://{relay_addr}")
    };
    let batch = level
        .map(|l| format!("[batch]\ncompression_level = {l}\n\n"))
        .unwrap_or_default();
    format!(
        r#"[relay]
url = "{url}"

{batch}[collector]
id = "bench"

{extra}

[[inputs]]
name = "bench"
base_url = "{queue}"
region = "us-east-1"
endpoint_url = "{endpoint}"
aws_access_key_id = "testing"
aws_secret_access_key = "testing"
processor = "{processor}"
{input_extra}
"#,
        queue = wired.queue_url,
        extra = args.collector_extra.replace("\\n", "\n"),
        input_extra = args.input_extra.replace("\\n", "\n"),
    )
}

/// Starts the relay in `dir`; returns it and its channel address.
fn start_relay(bins: &Path, dir: &Path, sink: &Sink) -> anyhow::Result<(Proc, String)> {
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_dir_all(dir.join("spool"));
    let _ = std::fs::remove_file(dir.join("relay.addr"));
    let config = dir.join("relay.toml");
    std::fs::write(&config, relay_config(dir, sink))?;
    let mut relay = spawn_logged(&bins.join("sluice-relay"), &config, &dir.join("relay.log"))?;
    let address = relay
        .wait_address_file(&dir.join("relay.addr"), Duration::from_secs(20))
        .with_context(|| format!("relay; see {}", dir.join("relay.log").display()))?;
    Ok((relay, address))
}

/// Blasts `mb` MB of Devo-like lines at the sink over mutual TLS; the sink's CPU is measured.
fn sink_check(sink: &mut Sink, mb: u64) -> anyhow::Result<SinkCheck> {
    use sluice_testkit::procstat::thread_cpu;
    sink.cmd("reset")?;
    let mut tls = sluice_testkit::tls::connect(&sink.pki, ("127.0.0.1", sink.port))?;
    let line = format!(
        "<14>Jan  1 00:00:00 benchhost cloud.aws.cloudtrail.events: {{\"eventVersion\":\"1.09\",\"x\":\"{}\"}}\n",
        "y".repeat(1200)
    );
    let mut chunk = Vec::new();
    while chunk.len() < 256 * 1024 {
        chunk.extend_from_slice(line.as_bytes());
    }
    let per_chunk = memchr::memchr_iter(b'\n', &chunk).count() as u64;
    let chunks = (mb * 1_000_000).div_ceil(chunk.len() as u64);
    let cpu0 = cpu_seconds(sink.pid()).unwrap_or(0.0);
    let t_cpu = thread_cpu();
    let t0 = Instant::now();
    for _ in 0..chunks {
        tls.write_all(&chunk)?;
    }
    tls.flush()?;
    let client_cpu = (thread_cpu() - t_cpu).as_secs_f64();
    let s = sink.cmd(&format!("wait {} 120000", chunks * per_chunk))?;
    let wall = t0.elapsed().as_secs_f64();
    let sink_cpu = cpu_seconds(sink.pid()).unwrap_or(0.0) - cpu0;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    anyhow::ensure!(!s.timeout, "the sink did not count every line of the check");
    Ok(SinkCheck {
        bytes: s.bytes,
        lines: s.lines,
        wall_s: wall,
        sink_cpu_s: sink_cpu,
        client_cpu_s: client_cpu,
    })
}

async fn upload_all(wired: &Wired, dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for o in &manifest.objects {
        let permit = sem.clone().acquire_owned().await?;
        let wired = wired.clone();
        let path = dir.join(&o.file);
        let key = o.key.clone();
        tasks.push(tokio::spawn(async move {
            let r = wired.put_file(&key, &path).await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn wait_depth(wired: &Wired, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (visible, _) = wired.try_depth().await?;
        if visible >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {visible} of {n} notifications queued"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn run_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    moto: &Moto,
    sink: &mut Sink,
    kind: Kind,
    roofline_per_gb: f64,
) -> anyhow::Result<PhaseResult> {
    let name = kind.name();
    let dir = corpus::dir_of(&args.corpus, kind);
    let manifest = Manifest::load(&dir).with_context(|| format!("corpus {}", dir.display()))?;
    let work = args.work.join(name);
    std::fs::create_dir_all(&work)?;
    eprintln!(
        "[{name}] uploading {} objects ({:.0} MB gzip, {:.0} MB raw)",
        manifest.objects.len(),
        manifest.gz_bytes() as f64 / 1e6,
        manifest.raw_bytes() as f64 / 1e6
    );
    let wired = rt.block_on(async {
        let wired = moto::try_wire(&moto.endpoint, &bucket_name(name)).await?;
        upload_all(&wired, &dir, &manifest).await?;
        wait_depth(&wired, manifest.objects.len() as u64).await?;
        anyhow::Ok(wired)
    })?;
    let expected = manifest.events();
    let mut r = PhaseResult {
        corpus: name.to_string(),
        objects: manifest.objects.len() as u64,
        events: expected,
        raw_bytes: manifest.raw_bytes(),
        gz_bytes: manifest.gz_bytes(),
        roofline_cpu_s_per_gb: roofline_per_gb,
        ..Default::default()
    };
    sink.cmd("reset")?;
    let (mut relay, relay_addr) = start_relay(&args.bins, &work, sink)?;
    let config = work.join("collector.toml");
    std::fs::write(
        &config,
        collector_config(
            &relay_addr,
            args.level,
            &wired,
            &moto.endpoint,
            kind.processor(),
            args,
        ),
    )?;
    let moto_cpu0 = cpu_seconds(moto.pid()).unwrap_or(0.0);
    let sink_cpu0 = cpu_seconds(sink.pid()).unwrap_or(0.0);
    let relay_cpu0 = cpu_seconds(relay.pid()).unwrap_or(0.0);
    eprintln!("[{name}] collector starting; waiting for {expected} lines");
    let t0 = now_ns();
    let mut collector = spawn_logged(
        &args.bins.join("sluice"),
        &config,
        &work.join("collector.log"),
    )?;
    let mut last_progress = Instant::now();
    let mut last_lines = 0;
    let mut last_report = Instant::now();
    let stats = loop {
        let s = sink.cmd(&format!("wait {expected} 250"))?;
        if !s.timeout {
            break s;
        }
        if s.lines > last_lines {
            last_lines = s.lines;
            last_progress = Instant::now();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "[{name}] {} / {expected} lines, {:.0} s",
                s.lines,
                (now_ns() - t0) as f64 / 1e9
            );
            last_report = Instant::now();
        }
        if !collector.alive() || !relay.alive() {
            r.note = "a process exited before the end (see its log)".into();
            break s;
        }
        if last_progress.elapsed() > Duration::from_secs(args.stall_s) {
            r.note = format!("stalled: no new line for {} s", args.stall_s);
            break s;
        }
    };
    r.collector_cpu_s = cpu_seconds(collector.pid()).unwrap_or(f64::NAN);
    r.relay_cpu_s = cpu_seconds(relay.pid()).unwrap_or(f64::NAN) - relay_cpu0;
    r.moto_cpu_s = cpu_seconds(moto.pid()).unwrap_or(f64::NAN) - moto_cpu0;
    r.sink_cpu_s = cpu_seconds(sink.pid()).unwrap_or(f64::NAN) - sink_cpu0;
    r.collector_peak_rss = peak_rss(collector.pid()).unwrap_or(0);
    r.relay_peak_rss = peak_rss(relay.pid()).unwrap_or(0);
    r.lines = stats.lines;
    r.complete = stats.lines >= expected;
    let end = if stats.last_ns > 0 {
        stats.last_ns
    } else {
        now_ns()
    };
    r.wall_s = end.saturating_sub(t0) as f64 / 1e9;
    r.first_line_s = stats.first_ns.saturating_sub(t0) as f64 / 1e9;
    // Let late duplicates (if any) show before stopping.
    std::thread::sleep(Duration::from_millis(500));
    r.lines = sink.cmd("stats")?.lines;
    collector.stop(Duration::from_secs(40));
    relay.stop(Duration::from_secs(20));
    eprintln!(
        "[{name}] {} lines in {:.1} s; collector {:.1} CPU-s, relay {:.1} CPU-s, moto {:.1} CPU-s; peak RSS collector {} MiB, relay {} MiB",
        r.lines,
        r.wall_s,
        r.collector_cpu_s,
        r.relay_cpu_s,
        r.moto_cpu_s,
        mib(r.collector_peak_rss),
        mib(r.relay_peak_rss)
    );
    Ok(r)
}

fn run_latency(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    moto: &Moto,
    sink: &mut Sink,
) -> anyhow::Result<Latency> {
    let work = args.work.join("latency");
    std::fs::create_dir_all(&work)?;
    let wired = rt.block_on(moto::try_wire(&moto.endpoint, "bench-latency"))?;
    let (mut relay, addr) = start_relay(&args.bins, &work, sink)?;
    let config = work.join("collector.toml");
    std::fs::write(
        &config,
        collector_config(
            &addr,
            args.level,
            &wired,
            &moto.endpoint,
            "cloudtrail",
            args,
        ),
    )?;
    let mut collector = spawn_logged(
        &args.bins.join("sluice"),
        &config,
        &work.join("collector.log"),
    )?;
    // Let both settle into their idle state (long poll in progress, connection not yet open).
    std::thread::sleep(Duration::from_secs(4));
    let records = 100;
    let mut out = Latency {
        records_per_object: records,
        ..Default::default()
    };
    for i in 0..7u64 {
        let body = corpus::cloudtrail_object_gz(1000 + i, records)?;
        sink.cmd("reset")?;
        let t_put = rt.block_on(async {
            wired
                .s3
                .put_object()
                .bucket(&wired.bucket)
                .key(format!(
                    "AWSLogs/123456789012/CloudTrail/us-east-1/2024/01/01/latency-{i}.json.gz"
                ))
                .body(body.into())
                .send()
                .await?;
            anyhow::Ok(now_ns())
        })?;
        let s = sink.cmd(&format!("wait {records} 20000"))?;
        if s.timeout {
            out.note = format!(
                "object {i}: only {} of {records} lines within 20 s",
                s.lines
            );
            break;
        }
        out.samples_first_s
            .push(s.first_ns.saturating_sub(t_put) as f64 / 1e9);
        out.samples_last_s
            .push(s.last_ns.saturating_sub(t_put) as f64 / 1e9);
        std::thread::sleep(Duration::from_millis(2500));
    }
    collector.stop(Duration::from_secs(40));
    relay.stop(Duration::from_secs(20));
    Ok(out)
}

fn today() -> String {
    corpus::iso8601(now_ns() / 1_000_000_000)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let level = args.level.unwrap_or(1);
    let mut results = Results {
        date: today(),
        machine: machine(),
        load_before: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
        level,
        ..Default::default()
    };
    eprintln!("sluice benchmark, {}, {}", results.date, results.machine);
    let moto = Moto::launch(
        &moto::moto_program(&args.repo),
        Some(&args.work.join("moto.log")),
    )?;
    let mut sink = Sink::start(&args.bins, &args.work)?;
    if args.sink_check_mb > 0 {
        eprintln!("sink check: {} MB of lines through TLS", args.sink_check_mb);
        results.sink_check = Some(sink_check(&mut sink, args.sink_check_mb)?);
    }
    let phases: Vec<String> = args
        .phases
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut rooflines: Vec<(Kind, Roofline)> = Vec::new();
    if !args.no_roofline {
        for p in &phases {
            let Some(kind) = Kind::parse(p) else { continue };
            if kind == Kind::Large {
                continue;
            }
            eprintln!("roofline: {p}");
            let r = roofline::measure(
                &corpus::dir_of(&args.corpus, kind),
                level,
                &args.work.join("roofline-pki"),
            )?;
            results.roofline.push(RooflineRow {
                corpus: p.clone(),
                level,
                parts: PARTS
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.to_string(), r.per_gb(i)))
                    .collect(),
                total: r.total_per_gb(),
                channel_ratio: r.channel_raw as f64 / r.channel_gz.max(1) as f64,
            });
            rooflines.push((kind, r));
        }
    }
    let roof_of = |kind: Kind| -> f64 {
        let k = if kind == Kind::Large {
            Kind::Cloudtrail
        } else {
            kind
        };
        rooflines
            .iter()
            .find(|(rk, _)| *rk == k)
            .map(|(_, r)| r.total_per_gb())
            .unwrap_or(f64::NAN)
    };
    for p in &phases {
        if p == "latency" {
            eprintln!("[latency] one object of 100 records at a time, idle pipeline");
            match run_latency(&rt, &args, &moto, &mut sink) {
                Ok(l) => results.latency = Some(l),
                Err(e) => eprintln!("[latency] failed: {e:#}"),
            }
            continue;
        }
        let kind = Kind::parse(p).ok_or_else(|| anyhow::anyhow!("unknown phase {p}"))?;
        match run_phase(&rt, &args, &moto, &mut sink, kind, roof_of(kind)) {
            Ok(r) => {
                if results.sample_line.is_empty() {
                    results.sample_line = sink.sample().unwrap_or_default();
                }
                results.phases.push(r)
            }
            Err(e) => {
                eprintln!("[{p}] failed: {e:#}");
                results.phases.push(PhaseResult {
                    corpus: p.clone(),
                    note: format!("failed: {e:#}"),
                    ..Default::default()
                });
            }
        }
    }
    std::fs::write(
        args.work.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    print_results(&results);
    Ok(())
}

fn print_results(r: &Results) {
    println!("\n## sluice benchmark — {} — {}", r.date, r.machine);
    println!("load average before the run: {}", r.load_before);
    println!(
        "channel gzip level {}; GB = 10^9 bytes of decompressed objects; CPU = user + sys\n",
        r.level
    );
    let mut t = Table::new(&[
        "corpus",
        "objects",
        "events",
        "raw MB",
        "wall s",
        "events/s",
        "raw MB/s",
        "collector CPU-s",
        "relay CPU-s",
        "moto CPU-s",
        "sink CPU-s",
        "collector+relay CPU-s/GB",
        "roofline CPU-s/GB",
        "ratio",
        "collector peak RSS MiB",
        "relay peak RSS MiB",
        "first line s",
        "lines / expected",
    ]);
    for p in &r.phases {
        if p.raw_bytes == 0 {
            t.row(vec![p.corpus.clone(), p.note.clone()]);
            continue;
        }
        let per_gb = p.pipeline_per_gb();
        t.row(vec![
            p.corpus.clone(),
            p.objects.to_string(),
            p.events.to_string(),
            f(p.raw_bytes as f64 / 1e6, 0),
            f(p.wall_s, 1),
            f(p.events as f64 / p.wall_s, 0),
            f(p.raw_bytes as f64 / 1e6 / p.wall_s, 1),
            f(p.collector_cpu_s, 1),
            f(p.relay_cpu_s, 1),
            f(p.moto_cpu_s, 1),
            f(p.sink_cpu_s, 1),
            f(per_gb, 2),
            f(p.roofline_cpu_s_per_gb, 2),
            format!("{}×", f(per_gb / p.roofline_cpu_s_per_gb, 2)),
            mib(p.collector_peak_rss),
            mib(p.relay_peak_rss),
            f(p.first_line_s, 2),
            format!(
                "{} / {}{}",
                p.lines,
                p.events,
                if p.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.note)
                }
            ),
        ]);
    }
    println!("### Pipeline\n\n{}", t.render());
    if !r.roofline.is_empty() {
        let mut header = vec!["corpus", "level"];
        header.extend(PARTS);
        header.extend(["total", "channel gzip ratio"]);
        let mut t = Table::new(&header);
        for row in &r.roofline {
            let mut cells = vec![row.corpus.clone(), row.level.to_string()];
            cells.extend(row.parts.iter().map(|(_, v)| f(*v, 2)));
            cells.push(f(row.total, 2));
            cells.push(f(row.channel_ratio, 2));
            t.row(cells);
        }
        println!(
            "### Roofline (CPU-s per GB of raw events, one thread)\n\n{}",
            t.render()
        );
    }
    if let Some(s) = &r.sink_check {
        let gb = s.bytes as f64 / 1e9;
        println!(
            "### Sink check\n\n{:.0} MB ({} lines) through mutual TLS in {:.2} s = {:.0} MB/s; sink {:.2} CPU-s/GB, blasting client {:.2} CPU-s/GB\n",
            s.bytes as f64 / 1e6,
            s.lines,
            s.wall_s,
            s.bytes as f64 / 1e6 / s.wall_s,
            s.sink_cpu_s / gb,
            s.client_cpu_s / gb
        );
    }
    if let Some(l) = &r.latency {
        let mut sorted = l.samples_first_s.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        let max = sorted.last().copied().unwrap_or(f64::NAN);
        println!(
            "### Light-load latency\n\nupload done → first line at the sink, {} objects of {} records: median {:.3} s, max {:.3} s (all: {}); last line: {}{}\n",
            l.samples_first_s.len(),
            l.records_per_object,
            median,
            max,
            l.samples_first_s.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", "),
            l.samples_last_s.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", "),
            if l.note.is_empty() { String::new() } else { format!(" ({})", l.note) }
        );
    }
    if !r.sample_line.is_empty() {
        let s: String = r.sample_line.chars().take(160).collect();
        println!("first line received: `{s}…`");
    }
}
