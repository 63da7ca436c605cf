//! What both binaries do at their edge: logging to stderr and waiting for the shutdown signal.

use std::io::IsTerminal;

/// Logs to stderr only (stdout may carry events), filtered by `RUST_LOG` or else
/// `default_filter`, in colour only on a terminal.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
}

/// Resolves on the first SIGTERM or SIGINT (logged). If the SIGTERM handler cannot be
/// installed, only SIGINT ends the wait.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler; SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("SIGINT: shutting down");
        }
    }
}
