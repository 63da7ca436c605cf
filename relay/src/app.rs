//! Wires the relay together: opens the spool, starts one delivery task per output, binds the
//! channel listener and runs until asked to stop; then stops accepting, lets in-flight
//! requests finish, lets outputs finish the batch they hold and closes the spool.
//!
//! With `listen.drain_timeout_secs` set, the stop is a drain instead (for a relay whose disk
//! may not come back, such as a pod scaled in): it goes on accepting while producers are
//! connected (at most `shutdown_timeout_secs`), then keeps the outputs delivering until every
//! one has caught up with the spool or the drain timeout passes, and logs what was left.
//!
//! It parses no config (config.rs) and installs no signal handler (main.rs), so tests can run
//! a whole relay inside their own process.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
pub use crate::ingest::IngestError;
use crate::ingest::{self, Listener, State};
use crate::metrics::Metrics;
use crate::output::{self, OutputError};
use crate::spool::{Spool, SpoolError};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("output {name}: {source}")]
    Output { name: String, source: OutputError },
}

/// A relay that is listening.
pub struct Running {
    /// The bound address (`ip:port` or `unix:/path`).
    pub address: String,
    pub metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the relay has stopped (after `stop` was cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts a relay; it runs until `stop` is cancelled.
pub async fn start(settings: Settings, stop: CancellationToken) -> Result<Running, StartError> {
    let names: Vec<String> = settings.outputs.iter().map(|o| o.name.clone()).collect();
    let metrics = Arc::new(Metrics::new(&names));
    let spool = Spool::open(&settings.spool, &names, metrics.clone())?;

    let outputs_stop = CancellationToken::new();
    let mut outputs = Vec::new();
    for o in &settings.outputs {
        let reader = spool.reader(&o.name);
        let handle = output::spawn(o.clone(), reader, metrics.clone(), outputs_stop.clone())
            .map_err(|source| StartError::Output {
                name: o.name.clone(),
                source,
            });
        match handle {
            Ok(h) => outputs.push(h),
            Err(e) => {
                outputs_stop.cancel();
                spool.shutdown().await;
                return Err(e);
            }
        }
    }

    let listener = match Listener::bind(&settings.listen.address).await {
        Ok(l) => l,
        Err(e) => {
            outputs_stop.cancel();
            spool.shutdown().await;
            return Err(e.into());
        }
    };
    let address = listener.local_address();
    if let Some(path) = &settings.listen.address_file {
        ingest::write_address_file(path, &address)?;
    }
    tracing::info!(%address, outputs = names.len(), "relay listening");

    let state = Arc::new(State {
        spool: spool.clone(),
        limits: settings.limits,
        token: settings.listen.token.clone(),
        metrics: metrics.clone(),
        shutting_down: AtomicBool::new(false),
        body_budget: ingest::body_budget(&settings.limits),
    });
    let grace = settings.listen.shutdown_timeout;
    let drain_timeout = settings.listen.drain_timeout;
    // Only a draining relay lingers for its producers: without a drain their last batches
    // would stay on this disk anyway, and a refused batch is resent by the producer.
    let linger = if drain_timeout.is_zero() {
        std::time::Duration::ZERO
    } else {
        grace
    };
    let task = tokio::spawn(async move {
        ingest::serve(listener, state, stop, grace, linger).await;
        if !drain_timeout.is_zero() {
            drain(&spool, drain_timeout).await;
        }
        tracing::info!("listener closed; stopping outputs");
        outputs_stop.cancel();
        let all = futures_join(outputs);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                "outputs did not stop within {grace:?}; undelivered batches stay in the spool"
            );
        }
        spool.shutdown().await;
        tracing::info!("relay stopped");
    });
    Ok(Running {
        address,
        metrics,
        task,
    })
}

/// Lets the outputs (still running) deliver until none has anything left in the spool, or
/// `timeout` passes; logs what each output left behind.
async fn drain(spool: &Spool, timeout: std::time::Duration) {
    let started = tokio::time::Instant::now();
    let mut progress = spool.delivery_progress();
    let pending = |left: &[(String, u64)]| left.iter().filter(|(_, b)| *b > 0).count();
    let left = spool.undelivered();
    if pending(&left) > 0 {
        tracing::info!(
            undelivered = %describe(&left),
            "draining the spool before stopping, at most {timeout:?}"
        );
    }
    loop {
        let left = spool.undelivered();
        if pending(&left) == 0 {
            tracing::info!(elapsed = ?started.elapsed(), "spool drained: every output caught up");
            return;
        }
        tokio::select! {
            r = progress.changed() => {
                if r.is_err() {
                    // The spool's writer is gone; nothing more will be acknowledged.
                    tracing::error!("spool closed during the drain");
                    return;
                }
            }
            _ = tokio::time::sleep_until(started + timeout) => {
                tracing::warn!(
                    undelivered = %describe(&left),
                    "drain timed out after {timeout:?}; what is left stays in the spool for the next start on this disk"
                );
                return;
            }
        }
    }
}

/// `name=BYTES` for each output, for logs.
fn describe(left: &[(String, u64)]) -> String {
    left.iter()
        .map(|(name, bytes)| format!("{name}={bytes}B"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
