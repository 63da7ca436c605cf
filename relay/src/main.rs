//! `sluice-relay --config FILE`: runs the relay until SIGTERM or SIGINT.
//! `sluice-relay health --config FILE [--ready]`: probes a running relay's channel listener
//! (for container health checks, where the image has no shell or curl).
//!
//! Logs go to stderr only (RUST_LOG-style filter, default `info`); stdout carries nothing but
//! events (the `stdout` output). `health` sets up no logging and starts no runtime: it prints
//! one line to stderr and exits 0, 1 or 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_common::health;
use tokio_util::sync::CancellationToken;

use sluice_relay::app;
use sluice_relay::config::{ListenAddress, ListenSettings, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-relay",
    version,
    about = "Durable spool and Devo delivery for sluice",
    long_about = "Durable spool and Devo delivery for sluice.\n\n\
                  `sluice-relay --config FILE` runs the relay; \
                  `sluice-relay health --config FILE` checks a running one.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    /// The relay's TOML configuration (see docs/relay.md).
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Checks a running relay: exit 0 healthy, 1 unhealthy, 2 configuration error.
    ///
    /// Probes the relay's channel listener (`[listen] address`, TCP or unix socket) at
    /// GET /health (or /ready) and exits 0 when it answers 2xx, 1 when it does not
    /// (unreachable, non-2xx, no answer within the timeout), 2 when the configuration cannot
    /// be read or gives nothing to probe. With port 0 the address is read from
    /// `address_file`. For Docker HEALTHCHECK and Kubernetes exec probes: needs no shell, curl
    /// or token (/health and /ready are open), starts no runtime, prints one line to stderr.
    Health(HealthArgs),
}

#[derive(clap::Args, Debug)]
struct HealthArgs {
    /// The running relay's TOML configuration (the same file).
    #[arg(long, short)]
    config: PathBuf,

    /// Probe GET /ready instead: 503 while the relay shuts down or its spool has no room for
    /// another batch (a readiness probe); /health answers 200 while the listener serves at all
    /// (a liveness probe).
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

/// Runs the relay until SIGTERM or SIGINT.
fn run(config: &Path) -> anyhow::Result<()> {
    sluice_common::cli::init_logging("info");
    let settings =
        Settings::load(config).with_context(|| format!("loading {}", config.display()))?;
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

/// `sluice-relay health`: no logging set-up and no runtime, one line on stderr.
fn health_check(args: &HealthArgs) -> ExitCode {
    const WHO: &str = "sluice-relay health";
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{WHO}: cannot probe: configuration {}: {e}",
                args.config.display()
            );
            return ExitCode::from(health::EXIT_CONFIG);
        }
    };
    let address = match probe_address(&settings.listen) {
        Ok(a) => a,
        Err((code, message)) => {
            eprintln!("{WHO}: {message}");
            return ExitCode::from(code);
        }
    };
    let path = if args.ready { "/ready" } else { "/health" };
    ExitCode::from(health::check(WHO, &address, path, args.timeout))
}

/// The address to probe: `[listen] address`, or for port 0 (chosen at start-up) what the
/// running relay wrote into `address_file`. The error carries the exit code: 2 when the
/// configuration gives nothing to probe, 1 when the address file is not there (yet).
fn probe_address(listen: &ListenSettings) -> Result<String, (u8, String)> {
    match &listen.address {
        ListenAddress::Tcp(a) if a.port() == 0 => {
            let Some(file) = &listen.address_file else {
                return Err((
                    health::EXIT_CONFIG,
                    "cannot probe: [listen] address has port 0 and no address_file names \
                     the port chosen"
                        .into(),
                ));
            };
            match std::fs::read_to_string(file) {
                Ok(text) if text.ends_with('\n') && !text.trim().is_empty() => {
                    Ok(text.trim().to_string())
                }
                Ok(_) => Err((
                    health::EXIT_UNHEALTHY,
                    format!(
                        "unhealthy: address_file {} is still being written",
                        file.display()
                    ),
                )),
                Err(e) => Err((
                    health::EXIT_UNHEALTHY,
                    format!(
                        "unhealthy: cannot read address_file {}: {e}",
                        file.display()
                    ),
                )),
            }
        }
        other => Ok(other.to_string()),
    }
}
