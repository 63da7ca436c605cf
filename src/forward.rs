//! Forward stage: sends finished batches to the relay and waits for its confirmation,
//! retrying what can be retried with capped exponential backoff and jitter.
//!
//! Every batch gets an idempotency key `<collector id>.<run id>:<sequence>` before its first
//! attempt and keeps it through retries, so a batch whose 200 was lost is stored once. The
//! run id makes keys unique across restarts: a restarted collector must never reuse a key
//! the relay still remembers, or its new batch would be taken for a duplicate and lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_relay::client::{ChannelClient, ClientError, Confirmation};
use sluice_relay::protocol::EncodedBatch;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// First retry delay.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest retry delay.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Why a batch was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The relay refused the batch; sending it again cannot help.
    #[error(transparent)]
    Refused(ClientError),
    /// Shutdown came before a confirmation.
    #[error("shutdown before the relay confirmed the batch")]
    Shutdown,
}

/// Sends batches to one relay.
pub struct Forwarder {
    client: Arc<ChannelClient>,
    producer: String,
    sequence: AtomicU64,
    shutdown: CancellationToken,
}

impl Forwarder {
    /// A forwarder for `client`; `collector_id` prefixes the idempotency keys. `shutdown`
    /// ends retry loops.
    pub fn new(
        client: Arc<ChannelClient>,
        collector_id: &str,
        shutdown: CancellationToken,
    ) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        Forwarder {
            client,
            producer: format!("{collector_id}.{run:x}"),
            sequence: AtomicU64::new(0),
            shutdown,
        }
    }

    /// A key no batch of this run has used.
    fn next_key(&self) -> String {
        format!(
            "{}:{}",
            self.producer,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends `batch` until the relay confirms it, refuses it, or shutdown. `input` labels
    /// logs and metrics.
    pub async fn deliver(
        &self,
        input: &str,
        batch: &EncodedBatch,
    ) -> Result<Confirmation, ForwardError> {
        let mut key = self.next_key();
        let mut delay = BACKOFF_START;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(ForwardError::Shutdown),
                r = self.client.send(&key, batch) => r,
            };
            match result {
                Ok(confirmation)
                    if confirmation.duplicate && confirmation.events != batch.events =>
                {
                    // The relay knew this key for a different batch: two producers collided
                    // on a key. Taking it as confirmed would lose this batch; send it again
                    // under a fresh key.
                    metrics::count(
                        "sluice_batch_key_collisions_total",
                        "Batches whose key the relay knew for another batch",
                        &[("input", input)],
                        1,
                    );
                    tracing::warn!(input, key = %key, "idempotency key collision; resending under a new key");
                    key = self.next_key();
                }
                Ok(confirmation) => {
                    metrics::count(
                        "sluice_batches_confirmed_total",
                        "Batches the relay confirmed durable",
                        &[("input", input)],
                        1,
                    );
                    metrics::count(
                        "sluice_events_confirmed_total",
                        "Events in confirmed batches",
                        &[("input", input)],
                        batch.events,
                    );
                    return Ok(confirmation);
                }
                Err(e) if e.is_retryable() => {
                    // The relay's Retry-After is a floor: retrying earlier only earns another
                    // 429. Our own backoff, jittered, applies when it is longer or absent.
                    let wait = match e.retry_after() {
                        Some(after) => after.max(jitter(delay)),
                        None => jitter(delay),
                    };
                    metrics::count(
                        "sluice_batch_retries_total",
                        "Batch sends retried (relay unreachable or busy)",
                        &[("input", input)],
                        1,
                    );
                    // One line per backoff step, not per attempt burst: the log stays readable
                    // through a long relay outage.
                    tracing::warn!(input, key = %key, attempt, retry_in_ms = wait.as_millis() as u64, error = %e, "relay not confirming, will retry");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(ForwardError::Shutdown),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
                Err(e) => {
                    metrics::count(
                        "sluice_batches_refused_total",
                        "Batches the relay refused",
                        &[("input", input)],
                        1,
                    );
                    return Err(ForwardError::Refused(e));
                }
            }
        }
    }
}

/// A delay between half and all of `d` ("equal jitter"), so many retrying tasks spread out.
pub fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(2));
            assert!(j >= Duration::from_secs(1) && j <= Duration::from_secs(2));
        }
    }
}
