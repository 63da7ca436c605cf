//! `bench-roofline`: the roofline alone (see `sluice_bench::roofline`) on corpora made by
//! `bench-corpus`: CPU seconds per GB of raw events of each unavoidable part.

use std::path::PathBuf;

use clap::Parser;
use sluice_bench::corpus::{self, Kind};
use sluice_bench::report::{f, Table};
use sluice_bench::roofline::{self, PARTS};

#[derive(Parser)]
struct Args {
    /// Corpus root (as `bench-corpus --out`).
    #[arg(long)]
    corpus: PathBuf,
    /// Kinds, comma separated.
    #[arg(long, default_value = "cloudtrail,vpc_flow,cloudwatch")]
    kinds: String,
    /// Channel gzip levels to measure, comma separated.
    #[arg(long, default_value = "1")]
    levels: String,
    /// Scratch directory (throwaway certificates).
    #[arg(long, default_value = "/tmp/sluice-bench-roofline")]
    work: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let levels: Vec<u32> = args
        .levels
        .split(',')
        .map(|l| l.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut header = vec!["corpus", "level"];
    header.extend(PARTS);
    header.extend(["total CPU-s/GB", "channel ratio"]);
    let mut table = Table::new(&header);
    for name in args.kinds.split(',').map(str::trim) {
        let kind = Kind::parse(name).ok_or_else(|| anyhow::anyhow!("unknown kind {name}"))?;
        for &level in &levels {
            let r = roofline::measure(&corpus::dir_of(&args.corpus, kind), level, &args.work)?;
            let mut row = vec![name.to_string(), level.to_string()];
            row.extend((0..PARTS.len()).map(|i| f(r.per_gb(i), 2)));
            row.push(f(r.total_per_gb(), 2));
            row.push(f(r.channel_raw as f64 / r.channel_gz.max(1) as f64, 2));
            table.row(row);
        }
    }
    println!(
        "CPU seconds per GB of raw events, one thread; {}",
        sluice_bench::report::machine()
    );
    print!("{}", table.render());
    Ok(())
}
