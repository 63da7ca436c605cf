//! `sluice`: loads the configuration, runs the collector until SIGTERM or SIGINT, and maps
//! the result to an exit code; `sluice health` probes a running collector's metrics listener
//! (for container health checks, where the image has no shell or curl). Everything else is
//! library code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_common::health;
use tokio_util::sync::CancellationToken;

/// Drains SQS queues announcing S3 objects into Devo, through sluice-relay.
///
/// `sluice --config FILE` runs the collector; `sluice health --config FILE` checks a running
/// one.
#[derive(Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    /// The collector's TOML configuration.
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a running collector: exit 0 healthy, 1 unhealthy, 2 configuration error.
    ///
    /// Probes the collector's `[collector] metrics_address` (GET /health, or /ready) and
    /// exits 0 when it answers 2xx, 1 when it does not (unreachable, non-2xx, no answer within
    /// the timeout), 2 when the configuration cannot be read or sets no metrics_address. For
    /// Docker HEALTHCHECK and Kubernetes exec probes: needs no shell, curl or token, starts no
    /// runtime and prints one line to stderr.
    Health(HealthArgs),
}

#[derive(clap::Args)]
struct HealthArgs {
    /// The running collector's TOML configuration (the same file).
    #[arg(long, short)]
    config: PathBuf,

    /// Probe GET /ready instead: 200 once every input's poll loop runs, 503 while the
    /// collector starts (e.g. while it waits for the relay's limits) and once it shuts down.
    #[arg(long)]
    ready: bool,

    /// Seconds the whole probe may take (connect, send, read the status line).
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = health::parse_timeout)]
    timeout: Duration,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    match args.command {
        Some(Command::Health(h)) => Ok(health_check(&h)),
        None => {
            // clap already refuses a run without --config; this only keeps main panic-free.
            let config = args.config.context("--config is required")?;
            run(&config)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs the collector until SIGTERM or SIGINT.
fn run(config: &Path) -> anyhow::Result<()> {
    sluice_common::cli::init_logging("info,aws_config=warn,aws_smithy_runtime=warn");
    let settings = sluice::config::Settings::load(config)
        .with_context(|| format!("configuration {}", config.display()))?;
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

/// `sluice health`: no logging set-up and no runtime, one line on stderr.
fn health_check(args: &HealthArgs) -> ExitCode {
    const WHO: &str = "sluice health";
    let settings = match sluice::config::Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{WHO}: cannot probe: configuration {}: {e}",
                args.config.display()
            );
            return ExitCode::from(health::EXIT_CONFIG);
        }
    };
    let Some(address) = settings.metrics_address else {
        eprintln!(
            "{WHO}: cannot probe: health needs [collector] metrics_address (in {})",
            args.config.display()
        );
        return ExitCode::from(health::EXIT_CONFIG);
    };
    let path = if args.ready { "/ready" } else { "/health" };
    ExitCode::from(health::check(WHO, &address, path, args.timeout))
}

/// Fires `shutdown` on the first SIGTERM or SIGINT.
async fn signals(shutdown: CancellationToken) {
    sluice_common::cli::shutdown_signal().await;
    shutdown.cancel();
}
