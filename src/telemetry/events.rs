//! The collector's outcomes as typed events: each one writes its log line and counts its
//! metrics here, in one place, so a count never exists without its line and the code that
//! decides an outcome only names it.
//!
//! Grouped as the data flows: the queue side (receives, message fates, heartbeat, deletes,
//! AWS calls), the object side (one object's outcome), the delivery side (batches). Each
//! event logs at the level its outcome deserves: error for what loses or blocks work, warn
//! for what heals, info for the normal end of a message or object.

use std::fmt::Display;
use std::time::Duration;

use super::*;
use crate::config::PoisonAction;
use crate::delivery::limits::{Agreed, Resplit};
use crate::object::Progress;
use sluice_formats::processor::ObjectStats;

// ----- The queue side -----

/// Messages a receive returned.
pub fn received(input: &str, messages: usize) {
    count(&MESSAGES_RECEIVED, &[input], messages as u64);
}

/// A ReceiveMessage call failed; the poll loop waits `retry_in` and tries again.
pub fn receive_failed(input: &str, queue: &str, error: &dyn Display, retry_in: Duration) {
    count(&RECEIVE_ERRORS, &[input], 1);
    tracing::error!(input = %input, queue = %queue, error = %error, retry_in_s = retry_in.as_secs(), "ReceiveMessage failed");
}

/// Which message an event is about.
#[derive(Debug, Clone, Copy)]
pub struct MessageScope<'a> {
    pub input: &'a str,
    pub queue: &'a str,
    pub message_id: &'a str,
}

/// What happened to a message; the last five are its fate (`sluice_messages_total`).
pub enum MessageEvent<'a> {
    /// No receipt handle: nothing can be done with it.
    NoReceipt,
    /// `s3:TestEvent`: no work.
    TestEvent,
    /// An SNS control message: no work.
    Control { kind: &'a str },
    /// Records of the notification that announce no new object.
    RecordsSkipped { shape: &'a str, skipped: usize },
    /// The body is no known notification.
    Undecodable { error: &'a dyn Display },
    /// The `debug_md5` event was not confirmed.
    Md5NotDelivered { error: &'a str },
    /// Direct mode, the input's processing excludes the empty key.
    DirectExcluded,
    /// Direct mode, the body's events were confirmed (`processor` split it).
    DirectDelivered {
        processor: &'static str,
        stats: &'a ObjectStats,
    },
    /// Direct mode, the body failed.
    DirectFailed {
        label: &'static str,
        error: &'a dyn Display,
        offset: Option<u64>,
        events_delivered: u64,
    },
    /// Fate: all work confirmed; deleted unless `ack_messages` is false.
    Done { deleted: bool },
    /// Fate: failed and will be received again after `retry_in`.
    Retry {
        receive_count: u32,
        retry_in: Duration,
        failed_objects: &'a [String],
    },
    /// Fate: failed `max_receive_count` times in a way that repeats (a retry, counted as
    /// one); deleted or left per `action`.
    Poison {
        action: PoisonAction,
        receive_count: u32,
        sent_ms: Option<u64>,
        first_receive_ms: Option<u64>,
        failed_objects: &'a [String],
        body_preview: &'a str,
    },
    /// Fate: shutdown cut the work; the message comes back after its visibility timeout.
    Interrupted,
}

impl MessageScope<'_> {
    pub fn emit(&self, event: MessageEvent<'_>) {
        let MessageScope {
            input,
            queue,
            message_id,
        } = *self;
        match event {
            MessageEvent::NoReceipt => {
                tracing::error!(input, queue, message_id = %message_id, "message without a receipt handle; ignored");
            }
            MessageEvent::TestEvent => {
                tracing::info!(input, queue, message_id = %message_id, "s3:TestEvent");
            }
            MessageEvent::Control { kind } => {
                tracing::info!(input, queue, message_id = %message_id, kind = %kind, "control message, no work");
            }
            MessageEvent::RecordsSkipped { shape, skipped } => {
                tracing::debug!(input, message_id = %message_id, shape, skipped, "records that announce no new object skipped");
            }
            MessageEvent::Undecodable { error } => {
                count(&MESSAGES_UNDECODABLE, &[input], 1);
                tracing::error!(input, queue, message_id = %message_id, error = %error, "undecodable message");
            }
            MessageEvent::Md5NotDelivered { error } => {
                tracing::error!(input, queue, message_id = %message_id, error = %error, "debug_md5 event not delivered");
            }
            MessageEvent::DirectExcluded => {
                tracing::error!(input, message_id = %message_id, "direct_mode input excludes the empty key; nothing to do");
            }
            MessageEvent::DirectDelivered { processor, stats } => {
                count(&OBJECTS, &[input, "ok"], 1);
                let anomalies = count_anomalies(input, processor, stats);
                if anomalies.is_some() {
                    tracing::warn!(input, message_id = %message_id, processor, anomalies = anomalies.as_deref(), events = stats.events, "direct message delivered with anomalies");
                } else {
                    tracing::debug!(input, message_id = %message_id, events = stats.events, "direct message delivered");
                }
            }
            MessageEvent::DirectFailed {
                label,
                error,
                offset,
                events_delivered,
            } => {
                count(&OBJECTS, &[input, label], 1);
                tracing::error!(input, queue, message_id = %message_id, error = %error, offset, events_delivered, "direct message failed");
            }
            MessageEvent::Done { deleted } => {
                count(&MESSAGES, &[input, "done"], 1);
                if !deleted {
                    tracing::info!(input, queue, message_id = %message_id, "done; not deleted (ack_messages = false)");
                }
            }
            MessageEvent::Retry {
                receive_count,
                retry_in,
                failed_objects,
            } => {
                count(&MESSAGES, &[input, "retry"], 1);
                tracing::warn!(input, queue, message_id = %message_id, receive_count, retry_in_s = retry_in.as_secs(), failed_objects = %failed_objects.join("; "), "message not completed; left for redelivery");
            }
            MessageEvent::Poison {
                action,
                receive_count,
                sent_ms,
                first_receive_ms,
                failed_objects,
                body_preview,
            } => {
                count(&MESSAGES, &[input, "retry"], 1);
                let label = match action {
                    PoisonAction::Keep => "keep",
                    PoisonAction::Delete => "delete",
                };
                count(&MESSAGES_POISON, &[input, label], 1);
                // Names every object that failed, so a deleted message leaves a trace of what
                // was not delivered; the objects that were are confirmed (and in the ledger).
                tracing::error!(
                    input, queue, message_id = %message_id, receive_count, sent_ms, first_receive_ms,
                    action = ?action,
                    failed_objects = %failed_objects.join("; "),
                    body = %body_preview,
                    "poison message: failed on every receive so far"
                );
            }
            MessageEvent::Interrupted => {
                count(&MESSAGES, &[input, "interrupted"], 1);
                tracing::info!(input, queue, message_id = %message_id, "interrupted by shutdown; left for redelivery");
            }
        }
    }
}

/// The heartbeat extended a message's invisibility.
pub fn visibility_extended(input: &str) {
    count(&VISIBILITY_EXTENSIONS, &[input], 1);
}

/// The heartbeat could not extend a message's invisibility.
pub fn visibility_not_extended(input: &str, message_id: &str, error: &dyn Display) {
    tracing::warn!(input = %input, message_id = %message_id, error = %error, "could not extend visibility");
}

/// A confirmed message was deleted.
pub fn message_deleted(input: &str) {
    count(&MESSAGES_DELETED, &[input], 1);
}

/// A DeleteMessageBatch call failed as a whole; its entries are retried one by one.
pub fn delete_batch_failed(input: &str, queue: &str, error: &dyn Display) {
    tracing::warn!(input, queue, error = %error, "DeleteMessageBatch failed; retrying one by one");
}

/// One attempt to delete a message alone failed.
pub fn delete_failed(
    input: &str,
    queue: &str,
    message_id: &str,
    attempt: u32,
    error: &dyn Display,
) {
    tracing::warn!(input, queue, message_id = %message_id, attempt, error = %error, "delete failed");
}

/// A confirmed message could not be deleted: it will come back, a duplicate.
pub fn delete_abandoned(input: &str, queue: &str, message_id: &str) {
    tracing::error!(input, queue, message_id = %message_id, "could not delete a confirmed message; it will be redelivered (a duplicate)");
}

/// An AWS SDK operation started (`service`: `sqs` or `s3`).
pub fn aws_operation(service: &str) {
    count(&AWS_OPERATIONS, &[service], 1);
}

/// An AWS SDK attempt started; attempts beyond operations are the SDK's retries.
pub fn aws_attempt(service: &str) {
    count(&AWS_ATTEMPTS, &[service], 1);
}

// ----- The object side -----

/// Which object an event is about.
#[derive(Debug, Clone, Copy)]
pub struct ObjectScope<'a> {
    pub input: &'a str,
    pub queue: &'a str,
    pub message_id: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    /// The version the notification announced, when it named one.
    pub version_id: Option<&'a str>,
}

/// What became of one object (`sluice_objects_total`, by outcome).
pub enum ObjectEvent<'a> {
    /// Excluded by the input's selection.
    Skipped { reason: &'a dyn Display },
    /// The ledger holds this version as delivered.
    AlreadyDelivered,
    /// Every batch confirmed; `processor` is the name of the processor that split it.
    Delivered {
        processor: &'static str,
        stats: &'a ObjectStats,
        progress: Progress,
        elapsed: Duration,
    },
    /// Shutdown cut it (not counted as an object outcome).
    Interrupted {
        error: &'a dyn Display,
        progress: Progress,
    },
    /// It failed; `label` is the outcome label, `repeats` whether a retry would fail the same.
    Failed {
        /// The processor that ran (its anomalies before the error are counted).
        processor: &'static str,
        /// What the processor counted before the error.
        stats: &'a ObjectStats,
        label: &'static str,
        error: &'a dyn Display,
        offset: Option<u64>,
        progress: Progress,
        repeats: bool,
    },
}

impl ObjectScope<'_> {
    pub fn emit(&self, event: ObjectEvent<'_>) {
        let ObjectScope {
            input,
            queue,
            message_id,
            bucket,
            key,
            version_id,
        } = *self;
        match event {
            ObjectEvent::Skipped { reason } => {
                count(&OBJECTS, &[input, "skipped"], 1);
                tracing::info!(input, message_id = %message_id, bucket, key, reason = %reason, "object skipped");
            }
            ObjectEvent::AlreadyDelivered => {
                count(&OBJECTS, &[input, "already_delivered"], 1);
                tracing::info!(input, message_id = %message_id, bucket, key, "object already delivered (ledger); not sent again");
            }
            ObjectEvent::Delivered {
                processor,
                stats,
                progress,
                elapsed,
            } => {
                count(&OBJECTS, &[input, "ok"], 1);
                self.processing_noticed(stats, progress);
                let anomalies = count_anomalies(input, processor, stats);
                tracing::info!(
                    input, message_id = %message_id, bucket, key, version_id,
                    processor,
                    anomalies = anomalies.as_deref(),
                    events = stats.events,
                    events_confirmed = progress.confirmed,
                    events_skipped = progress.skipped,
                    bytes = stats.bytes_in,
                    ms = elapsed.as_millis() as u64,
                    "object delivered"
                );
            }
            ObjectEvent::Interrupted { error, progress } => {
                count_checkpoint_skips(input, progress);
                tracing::info!(input, message_id = %message_id, bucket, key, error = %error, events_delivered = progress.confirmed, "object interrupted by shutdown");
            }
            ObjectEvent::Failed {
                processor,
                stats,
                label,
                error,
                offset,
                progress,
                repeats,
            } => {
                count(&OBJECTS, &[input, label], 1);
                let anomalies = count_anomalies(input, processor, stats);
                count_checkpoint_skips(input, progress);
                if progress.confirmed > 0 {
                    count(&EVENTS_FROM_FAILED_OBJECTS, &[input], progress.confirmed);
                }
                tracing::error!(
                    input, queue, message_id = %message_id, bucket, key, version_id,
                    error = %error,
                    offset,
                    events_delivered = progress.confirmed,
                    events_skipped = progress.skipped,
                    repeats,
                    anomalies = anomalies.as_deref(),
                    "object failed"
                );
            }
        }
    }

    /// Counts (and warns of) what processing a delivered object noticed.
    fn processing_noticed(&self, stats: &ObjectStats, progress: Progress) {
        let ObjectScope {
            input, bucket, key, ..
        } = *self;
        count_checkpoint_skips(input, progress);
        count(&OBJECT_BYTES, &[input], stats.bytes_in);
        if stats.truncated + stats.dropped > 0 {
            count(&EVENTS_TRUNCATED, &[input], stats.truncated);
            count(&EVENTS_DROPPED, &[input], stats.dropped);
            tracing::warn!(
                input,
                bucket,
                key,
                truncated = stats.truncated,
                dropped = stats.dropped,
                "events over max_event_bytes"
            );
        }
        if stats.invalid_utf8 > 0 {
            count(&EVENTS_INVALID_UTF8, &[input], stats.invalid_utf8);
        }
        if stats.malformed_records > 0 {
            count(&RECORDS_MALFORMED, &[input], stats.malformed_records);
            tracing::warn!(
                input,
                bucket,
                key,
                malformed_records = stats.malformed_records,
                "malformed records (see crates/formats/docs/formats.md, Errors)"
            );
        }
    }
}

/// Counts each non-zero anomaly of a delivered object under its kind, and returns them as
/// `kind=n …` for the object's log line (None when there were none).
fn count_anomalies(input: &str, processor: &str, stats: &ObjectStats) -> Option<String> {
    let mut listed = Vec::new();
    for (kind, n) in stats.anomalies().filter(|(_, n)| *n > 0) {
        count(&RECORD_ANOMALIES, &[input, processor, kind], n);
        listed.push(format!("{kind}={n}"));
    }
    (!listed.is_empty()).then(|| listed.join(" "))
}

/// Counts the events a checkpoint kept from being sent again.
fn count_checkpoint_skips(input: &str, progress: Progress) {
    if progress.skipped > 0 {
        count(&EVENTS_SKIPPED_CHECKPOINT, &[input], progress.skipped);
    }
}

/// A dry run (`do_not_send`) processed these events and sent none.
pub fn events_not_sent(input: &str, events: u64) {
    count(&EVENTS_NOT_SENT, &[input], events);
}

// ----- The delivery side -----

/// What happened to a batch sent to the relay.
pub enum BatchEvent<'a> {
    /// The relay confirmed it durable.
    Confirmed { events: u64 },
    /// The relay knew its key for another batch; it is resent under a new key.
    KeyCollision { key: &'a str },
    /// The relay is unreachable or busy; the send is retried after `retry_in`.
    Retrying {
        key: &'a str,
        attempt: u32,
        retry_in: Duration,
        error: &'a dyn Display,
    },
    /// Refused beyond repair (after any re-split).
    Refused,
}

/// A batch event of `input`.
pub fn batch(input: &str, event: BatchEvent<'_>) {
    match event {
        BatchEvent::Confirmed { events } => {
            count(&BATCHES_CONFIRMED, &[input], 1);
            count(&EVENTS_CONFIRMED, &[input], events);
        }
        BatchEvent::KeyCollision { key } => {
            count(&BATCH_KEY_COLLISIONS, &[input], 1);
            tracing::warn!(input, key = %key, "idempotency key collision; resending under a new key");
        }
        BatchEvent::Retrying {
            key,
            attempt,
            retry_in,
            error,
        } => {
            count(&BATCH_RETRIES, &[input], 1);
            // One line per backoff step, not per attempt burst: the log stays readable
            // through a long relay outage.
            tracing::warn!(input, key = %key, attempt, retry_in_ms = retry_in.as_millis() as u64, error = %error, "relay not confirming, will retry");
        }
        BatchEvent::Refused => {
            count(&BATCHES_REFUSED, &[input], 1);
        }
    }
}

/// A refused batch (`status` 413, or 400 naming `drop_line`) was re-split under `agreed`.
pub fn batch_resplit(
    input: &str,
    status: u16,
    reason: &str,
    drop_line: Option<u64>,
    split: &Resplit,
    agreed: &Agreed,
) {
    count(&BATCHES_RESPLIT, &[input, &status.to_string()], 1);
    for (action, n) in [
        ("truncated", split.truncated),
        ("dropped_oversize", split.dropped_oversize),
        ("dropped_malformed", split.dropped_malformed),
    ] {
        if n > 0 {
            count(&RESPLIT_EVENTS, &[input, action], n);
        }
    }
    if split.dropped_malformed > 0 {
        tracing::error!(input, line = drop_line, reason = %reason, "line dropped: the relay refuses it as malformed");
    }
    tracing::warn!(
        input, status, reason = %reason, lines = split.lines, parts = split.parts.len(),
        truncated = split.truncated, dropped_oversize = split.dropped_oversize,
        dropped_malformed = split.dropped_malformed, event_cap = agreed.event_bytes,
        batch_cap = agreed.batch_bytes,
        "batch refused; re-split under the relay's limits, parts sent under new keys"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomalies_are_counted_by_kind_and_listed_for_the_log() {
        let stats = ObjectStats {
            truncated: 2,
            malformed_records: 1,
            ..ObjectStats::default()
        };
        let listed = count_anomalies("t-anomalies", "json_lines", &stats);
        assert_eq!(listed.as_deref(), Some("truncated=2 malformed_records=1"));
        let value_of = |kind| value(&RECORD_ANOMALIES, &["t-anomalies", "json_lines", kind]);
        assert_eq!(
            (value_of("truncated"), value_of("malformed_records")),
            (2, 1)
        );
        assert_eq!(value_of("dropped_oversize"), 0);
        assert!(!render()
            .contains("input=\"t-anomalies\",processor=\"json_lines\",kind=\"dropped_oversize\""));
        assert_eq!(
            count_anomalies("t-anomalies", "json_lines", &ObjectStats::default()),
            None
        );
    }

    #[test]
    fn a_failed_object_counts_the_anomalies_met_before_its_error() {
        let stats = ObjectStats {
            invalid_json: 3,
            ..ObjectStats::default()
        };
        let scope = ObjectScope {
            input: "t-failed-anomalies",
            queue: "q",
            message_id: "m",
            bucket: "b",
            key: "k",
            version_id: None,
        };
        scope.emit(ObjectEvent::Failed {
            processor: "json",
            stats: &stats,
            label: "process",
            error: &"truncated gzip",
            offset: Some(10),
            progress: Progress::default(),
            repeats: true,
        });
        assert_eq!(
            value(
                &RECORD_ANOMALIES,
                &["t-failed-anomalies", "json", "invalid_json"]
            ),
            3
        );
    }
}
