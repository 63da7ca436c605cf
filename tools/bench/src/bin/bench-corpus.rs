//! `bench-corpus`: generates the deterministic benchmark corpus (see `sluice_bench::corpus`)
//! under `--out`, one directory per kind, skipping kinds whose manifest already matches.

use std::path::PathBuf;

use clap::Parser;
use sluice_bench::corpus::{self, Kind, Manifest};
use sluice_bench::report::{f, mb, Table};

#[derive(Parser)]
struct Args {
    /// Output directory (one subdirectory per kind).
    #[arg(long)]
    out: PathBuf,
    /// Kinds to generate, comma separated: cloudtrail, vpc_flow, cloudwatch, large.
    #[arg(long, default_value = "cloudtrail,vpc_flow,cloudwatch,large")]
    kinds: String,
    /// Seed of everything.
    #[arg(long, default_value_t = 20240101)]
    seed: u64,
    /// Approximate decompressed size of each small-object corpus, MB.
    #[arg(long, default_value_t = 1000)]
    mb: u64,
    /// Decompressed size of the CloudWatch corpus, MB.
    #[arg(long, default_value_t = 300)]
    cloudwatch_mb: u64,
    /// Decompressed size of the large object, MiB (at least 2048 for the 2 GB).
    #[arg(long, default_value_t = 2048)]
    large_mib: u64,
    /// Generator threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Regenerate even when a manifest exists.
    #[arg(long)]
    force: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut table = Table::new(&[
        "corpus", "objects", "events", "raw MB", "gzip MB", "ratio", "B/event",
    ]);
    for name in args
        .kinds
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let kind = Kind::parse(name).ok_or_else(|| anyhow::anyhow!("unknown kind {name}"))?;
        let dir = corpus::dir_of(&args.out, kind);
        let target = match kind {
            Kind::Cloudwatch => args.cloudwatch_mb * 1_000_000,
            Kind::Large => args.large_mib << 20,
            _ => args.mb * 1_000_000,
        };
        let manifest = match Manifest::load(&dir) {
            Ok(m) if !args.force && m.seed == args.seed && m.raw_bytes() >= target * 9 / 10 => {
                eprintln!("{name}: kept ({})", dir.display());
                m
            }
            _ => {
                eprintln!(
                    "{name}: generating ~{} MB into {}",
                    target / 1_000_000,
                    dir.display()
                );
                let _ = std::fs::remove_dir_all(&dir);
                let t = std::time::Instant::now();
                let m = corpus::generate(&dir, kind, args.seed, target, args.threads)?;
                eprintln!("{name}: {:.1} s", t.elapsed().as_secs_f64());
                m
            }
        };
        table.row(vec![
            name.to_string(),
            manifest.objects.len().to_string(),
            manifest.events().to_string(),
            mb(manifest.raw_bytes()),
            mb(manifest.gz_bytes()),
            f(
                manifest.raw_bytes() as f64 / manifest.gz_bytes().max(1) as f64,
                2,
            ),
            f(
                manifest.raw_bytes() as f64 / manifest.events().max(1) as f64,
                0,
            ),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}
