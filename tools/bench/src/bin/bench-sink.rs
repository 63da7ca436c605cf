//! `bench-sink`: the benchmark's Devo stand-in. Generates a PKI into `--pki-dir` (CA, server
//! and client certificates), listens with mutual TLS, counts lines and bytes.
//!
//! Prints `listening <port>` on stdout, then obeys one command per stdin line:
//! `reset`; `stats`; `wait <lines> <timeout_ms>`. Each answer is one line
//! `lines L bytes B first_ns F last_ns X` (prefixed by `timeout ` when a wait ran out).
//! `sample` prints the first line received since the last reset. Exits at stdin EOF.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use sluice_testkit::pki::Pki;
use sluice_testkit::sink::{self, Counters};

#[derive(Parser)]
struct Args {
    /// Where the PEM files are written.
    #[arg(long)]
    pki_dir: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pki = Pki::generate(
        &args.pki_dir,
        "",
        "sluice-bench CA",
        &["localhost", "127.0.0.1"],
    )?;
    let config = sluice_testkit::tls::server_config(&pki.server_tls(&pki))?;
    let counters = Arc::new(Counters::default());
    let port = sink::start(&args.listen, config, counters.clone())?;
    let stdout = std::io::stdout();
    let answer = |prefix: &str| {
        let s = counters.snapshot();
        let mut out = stdout.lock();
        let _ = writeln!(
            out,
            "{prefix}lines {} bytes {} first_ns {} last_ns {}",
            s.lines, s.bytes, s.first_ns, s.last_ns
        );
        let _ = out.flush();
    };
    {
        let mut out = stdout.lock();
        writeln!(out, "listening {port}")?;
        out.flush()?;
    }
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["reset"] => {
                counters.reset();
                answer("");
            }
            ["stats"] => answer(""),
            ["sample"] => {
                let s = counters.sample.lock().expect("lock").clone();
                let mut out = stdout.lock();
                writeln!(out, "{}", s.unwrap_or_default())?;
                out.flush()?;
            }
            ["wait", n, timeout_ms] => {
                let n: u64 = n.parse()?;
                let deadline = Instant::now() + Duration::from_millis(timeout_ms.parse()?);
                loop {
                    if counters.snapshot().lines >= n {
                        answer("");
                        break;
                    }
                    if Instant::now() >= deadline {
                        answer("timeout ");
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            _ => {
                let mut out = stdout.lock();
                writeln!(out, "error unknown command {line:?}")?;
                out.flush()?;
            }
        }
    }
    Ok(())
}
