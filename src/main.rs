//! `sluice`: loads the configuration, runs the collector until SIGTERM or SIGINT, and maps
//! the result to an exit code. Everything else is library code.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Drains SQS queues announcing S3 objects into Devo, through sluice-relay.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The collector's TOML configuration.
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sluice_common::cli::init_logging("info,aws_config=warn,aws_smithy_runtime=warn");
    let settings = sluice::config::Settings::load(&args.config)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        sluice::pipeline::run(settings, shutdown).await
    })?;
    Ok(())
}

/// Fires `shutdown` on the first SIGTERM or SIGINT.
async fn signals(shutdown: CancellationToken) {
    sluice_common::cli::shutdown_signal().await;
    shutdown.cancel();
}
