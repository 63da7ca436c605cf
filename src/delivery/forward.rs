//! Forward stage: sends finished batches to the relay and waits for its confirmation,
//! retrying what can be retried with capped exponential backoff and jitter.
//!
//! Every batch gets an idempotency key `<collector id>.<run id>:<sequence>` before its first
//! attempt and keeps it through retries, so a batch whose 200 was lost is stored once. The
//! run id makes keys unique across restarts: a restarted collector must never reuse a key
//! the relay still remembers, or its new batch would be taken for a duplicate and lost.
//!
//! A refusal never costs the other events of a batch: on 413 (the relay's caps shrank since
//! start-up) or 400 naming one line, the batch is re-read, the caps fetched again and the batch
//! re-split under them ([`crate::delivery::limits::resplit`]: over-long events truncated or dropped by the
//! input's `oversize` rule, only the named line dropped, each counted and logged), and the
//! parts are sent under fresh keys. The batch counts as delivered only when every part is.
//! It terminates: a 400 repair removes a line (at most [`MAX_MALFORMED_DROPS`] per batch), and
//! a 413 repair happens at most [`MAX_RESPLITS`] times per batch and never twice under the same
//! caps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_channel::client::{ChannelClient, ClientError, Confirmation};
use sluice_channel::encode::EncodedBatch;
use sluice_channel::limits::ChannelLimits;
use tokio_util::sync::CancellationToken;

use crate::delivery::limits::{named_line, resplit, Agreed};
use crate::telemetry::{self, BatchEvent};
use sluice_formats::processor::Oversize;

/// First retry delay.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest retry delay.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Re-splits after a 413, at most, per batch handed to [`Forwarder::deliver_with`].
pub const MAX_RESPLITS: u32 = 4;
/// Lines dropped as malformed, at most, per batch: the collector escapes what the channel
/// forbids, so more means a bug on one side. The batch is then refused as a whole (its
/// message is kept and retried, then poison) rather than emptied line by line.
pub const MAX_MALFORMED_DROPS: u32 = 10;

/// Why a batch was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The relay refused the batch and re-splitting it could not help.
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
    /// The caps agreed with the relay; refreshed when it refuses a batch.
    limits: Mutex<Agreed>,
    /// gzip level of re-split batches.
    level: u32,
}

/// One batch to send, and how it came to be.
struct Part {
    batch: EncodedBatch,
    /// The caps it was re-split under, if it was.
    split_under: Option<Agreed>,
    /// 413 re-splits in its history.
    resplits: u32,
}

impl Forwarder {
    /// A forwarder for `client`; `collector_id` prefixes the idempotency keys. `shutdown`
    /// ends retry loops. Until [`Forwarder::set_limits`], the caps are the channel's v1
    /// defaults.
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
            limits: Mutex::new(
                Agreed::new(ChannelLimits::V1_DEFAULTS).expect("the v1 defaults leave room"),
            ),
            level: 1,
        }
    }

    /// Re-split batches are compressed at `level` (the `batch.compression_level`).
    pub fn with_compression_level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// The caps agreed with the relay.
    pub fn limits(&self) -> Agreed {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the caps agreed with the relay.
    pub fn set_limits(&self, agreed: Agreed) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = agreed;
    }

    /// Asks the relay for its caps, retrying with backoff while it is unreachable or busy.
    /// None when `stop` fires first; an error when the relay answered something that retrying
    /// cannot change.
    pub async fn fetch_limits(
        &self,
        stop: &CancellationToken,
    ) -> Option<Result<ChannelLimits, ClientError>> {
        let mut delay = BACKOFF_START;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = tokio::select! {
                _ = stop.cancelled() => return None,
                r = self.client.limits() => r,
            };
            match result {
                Err(e) if e.is_retryable() => {
                    let wait = e.retry_after().unwrap_or_default().max(jitter(delay));
                    tracing::warn!(relay = %self.client.endpoint(), attempt, retry_in_ms = wait.as_millis() as u64, error = %e, "relay limits unavailable, will retry");
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
                other => return Some(other),
            }
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

    /// [`Forwarder::deliver_with`] for batches outside any input's processing (the
    /// `debug_md5` event): over-long events are truncated.
    pub async fn deliver(
        &self,
        input: &str,
        batch: &EncodedBatch,
    ) -> Result<Confirmation, ForwardError> {
        self.deliver_with(input, Oversize::Truncate, batch).await
    }

    /// Sends `batch` until the relay confirmed all of it, refused it beyond repair, or
    /// shutdown. A batch refused with 413, or with 400 naming a line, is re-split and its
    /// parts sent (see the module doc); `oversize` is the rule of the input (or selector) the
    /// events came from. `input` labels logs and metrics. The confirmation adds up the parts.
    pub async fn deliver_with(
        &self,
        input: &str,
        oversize: Oversize,
        batch: &EncodedBatch,
    ) -> Result<Confirmation, ForwardError> {
        let mut queue = VecDeque::from([Part {
            batch: batch.clone(),
            split_under: None,
            resplits: 0,
        }]);
        let mut total = Confirmation {
            events: 0,
            duplicate: true,
        };
        let mut malformed = 0u32;
        while let Some(part) = queue.pop_front() {
            match self.send(input, &part.batch).await {
                Ok(c) => {
                    total.events += c.events;
                    total.duplicate &= c.duplicate;
                }
                Err(ForwardError::Refused(e)) => {
                    match self
                        .repair(input, oversize, &part, &e, &mut malformed)
                        .await?
                    {
                        Some(parts) => {
                            for p in parts.into_iter().rev() {
                                queue.push_front(p);
                            }
                        }
                        None => {
                            telemetry::batch(input, BatchEvent::Refused);
                            return Err(ForwardError::Refused(e));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Sends one batch until the relay confirms it, refuses it, or shutdown.
    async fn send(&self, input: &str, batch: &EncodedBatch) -> Result<Confirmation, ForwardError> {
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
                    telemetry::batch(input, BatchEvent::KeyCollision { key: &key });
                    key = self.next_key();
                }
                Ok(confirmation) => {
                    telemetry::batch(
                        input,
                        BatchEvent::Confirmed {
                            events: batch.events,
                        },
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
                    telemetry::batch(
                        input,
                        BatchEvent::Retrying {
                            key: &key,
                            attempt,
                            retry_in: wait,
                            error: &e,
                        },
                    );
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(ForwardError::Shutdown),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
                Err(e) => return Err(ForwardError::Refused(e)),
            }
        }
    }

    /// Re-splits a refused part under the relay's current caps. None when a re-split cannot
    /// help (another refusal, the same caps as last time, too many re-splits, a line the batch
    /// does not have): the caller gives up on the batch.
    async fn repair(
        &self,
        input: &str,
        oversize: Oversize,
        part: &Part,
        refusal: &ClientError,
        malformed: &mut u32,
    ) -> Result<Option<Vec<Part>>, ForwardError> {
        let ClientError::Refused { status, reason, .. } = refusal else {
            return Ok(None);
        };
        let drop_line = match (*status, named_line(reason)) {
            (413, _) => None,
            (400, Some(line)) => Some(line),
            _ => return Ok(None),
        };
        if drop_line.is_some() {
            if *malformed >= MAX_MALFORMED_DROPS {
                tracing::error!(input, reason = %reason, dropped = *malformed, "the relay names line after line of this batch malformed; refusing the batch as a whole");
                return Ok(None);
            }
            *malformed += 1;
        }
        if drop_line.is_none() && part.resplits >= MAX_RESPLITS {
            tracing::warn!(input, status, reason = %reason, resplits = part.resplits, "batch refused again after re-splits; giving up on it");
            return Ok(None);
        }
        let Some(agreed) = self.refreshed_limits(input, *status, reason).await? else {
            return Ok(None);
        };
        if drop_line.is_none() && part.split_under == Some(agreed) {
            tracing::warn!(input, status, reason = %reason, limits = ?agreed.relay, "the relay refuses a batch cut within the limits it announces; giving up on it");
            return Ok(None);
        }
        let body = part.batch.body.clone();
        let level = self.level;
        let split = tokio::task::spawn_blocking(move || {
            resplit(&body, &agreed, oversize, drop_line, level)
        })
        .await;
        let split = match split {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(input, status, reason = %reason, error = %e, "batch refused; cannot re-split it");
                return Ok(None);
            }
            Err(e) => {
                tracing::error!(input, status, reason = %reason, error = %e, "re-split failed");
                return Ok(None);
            }
        };
        telemetry::batch_resplit(input, *status, reason, drop_line, &split, &agreed);
        let resplits = part.resplits + u32::from(drop_line.is_none());
        Ok(Some(
            split
                .parts
                .into_iter()
                .map(|batch| Part {
                    batch,
                    split_under: Some(agreed),
                    resplits,
                })
                .collect(),
        ))
    }

    /// The relay's caps, fetched again after a refusal (and kept when they changed). None when
    /// they cannot be known or leave no room: the refused batch cannot be re-split.
    async fn refreshed_limits(
        &self,
        input: &str,
        status: u16,
        reason: &str,
    ) -> Result<Option<Agreed>, ForwardError> {
        let fresh = match self.fetch_limits(&self.shutdown).await {
            None => return Err(ForwardError::Shutdown),
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                tracing::warn!(input, status, reason = %reason, error = %e, "batch refused and the relay's limits unknown; cannot re-split it");
                return Ok(None);
            }
        };
        let agreed = match Agreed::new(fresh) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(input, status, reason = %reason, error = %e, "batch refused; no batch fits the relay's limits");
                return Ok(None);
            }
        };
        if agreed != self.limits() {
            tracing::warn!(
                input,
                relay_max_event_bytes = fresh.max_event_bytes,
                relay_max_batch_bytes = fresh.max_batch_bytes,
                relay_max_body_bytes = fresh.max_body_bytes,
                event_cap = agreed.event_bytes,
                batch_cap = agreed.batch_bytes,
                "the relay's limits changed since start-up"
            );
            self.set_limits(agreed);
        }
        Ok(Some(agreed))
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
