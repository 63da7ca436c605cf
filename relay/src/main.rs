//! `sluice-relay --config FILE`: runs the relay until SIGTERM or SIGINT.
//!
//! Logs go to stderr only (RUST_LOG-style filter, default `info`); stdout carries nothing but
//! events (the `stdout` output).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use sluice_relay::app;
use sluice_relay::config::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-relay",
    version,
    about = "Durable spool and Devo delivery for sluice"
)]
struct Args {
    /// The relay's TOML configuration (see docs/relay.md).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sluice_common::cli::init_logging("info");
    let settings = Settings::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        let running = app::start(settings, stop.clone()).await?;
        sluice_common::cli::shutdown_signal().await;
        stop.cancel();
        running.wait().await;
        anyhow::Ok(())
    })
}
