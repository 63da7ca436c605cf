//! The pipeline's [`Work`]: what message fate asks of the object side, done for real. Each
//! announced object is selected (or skipped) by the input's processing, fetched, split and
//! forwarded ([`super::run`]), and its outcome logged, counted and reduced to an
//! [`ObjectFate`]; direct mode does the same with the body; `debug_md5` sends its event.
//!
//! It decides no message's fate: [`crate::queue::fate`] does, from the fates returned here.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::fetch::FetchSettings;
use super::ledger::Ledger;
use super::{Delivered, Failed, ObjectJob, Progress};
use crate::config::{BatchSettings, InputSettings};
use crate::delivery::forward::{ForwardError, Forwarder};
use crate::metrics;
use crate::notification::ObjectRef;
use crate::processor::config::Selection;
use crate::queue::fate::{MessageFacts, ObjectFate, Work};
use crate::queue::BoxFuture;

/// The Devo tag of `debug_md5` events.
const MD5_TAG: &str = "my.app.sqs.message_body";

/// The object side of one input.
pub struct ObjectWork {
    /// Validated input settings (name, queue, processing, dry run).
    pub settings: InputSettings,
    /// S3, for GetObject.
    pub s3: aws_sdk_s3::Client,
    /// Batch cuts.
    pub batch: BatchSettings,
    /// The relay.
    pub forwarder: Arc<Forwarder>,
    /// Download parts (the permits are shared by all inputs).
    pub fetch: FetchSettings,
    /// The processed-object ledger (in memory, or in `state_dir`); None runs without one.
    pub ledger: Option<Ledger>,
    /// Fired at the shutdown deadline: a failure after it is an interruption.
    pub hard_stop: CancellationToken,
}

impl Work for ObjectWork {
    fn object<'a>(
        &'a self,
        message: MessageFacts<'a>,
        object: &'a ObjectRef,
    ) -> BoxFuture<'a, ObjectFate> {
        Box::pin(self.run_object(message, object))
    }

    fn body<'a>(&'a self, message: MessageFacts<'a>) -> BoxFuture<'a, ObjectFate> {
        Box::pin(self.run_body(message))
    }

    fn debug_md5<'a>(
        &'a self,
        message: MessageFacts<'a>,
        objects: &'a [ObjectRef],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.send_md5(message, objects)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl ObjectWork {
    fn job<'a>(&'a self, message: MessageFacts<'a>) -> ObjectJob<'a> {
        ObjectJob {
            input: &self.settings.name,
            s3: &self.s3,
            batch: self.batch,
            forwarder: &self.forwarder,
            fetch: &self.fetch,
            do_not_send: self.settings.do_not_send,
            message_id: message.id,
            sent_ms: message.sent_ms,
            receive_count: message.receive_count,
            ledger: self.ledger.as_ref(),
        }
    }

    /// Runs one object and logs and counts its outcome.
    async fn run_object(&self, message: MessageFacts<'_>, object: &ObjectRef) -> ObjectFate {
        let input = self.settings.name.as_str();
        let (bucket, key) = (object.bucket.as_str(), object.key.as_str());
        let (spec, hints) = match self.settings.processing.select(key) {
            Selection::Skip { reason } => {
                count_object(input, "skipped");
                tracing::info!(input, message_id = %message.id, bucket, key, reason = %reason, "object skipped");
                return ObjectFate::Skipped;
            }
            Selection::Process { spec, hints } => (spec, hints),
        };
        let started = Instant::now();
        match super::run(&self.job(message), object, spec, hints).await {
            Ok(None) => {
                count_object(input, "already_delivered");
                tracing::info!(input, message_id = %message.id, bucket, key, "object already delivered (ledger); not sent again");
                ObjectFate::AlreadyDelivered
            }
            Ok(Some(delivered)) => {
                self.delivered(message, object, &delivered, started);
                ObjectFate::Delivered
            }
            Err(f) if self.hard_stop.is_cancelled() => {
                count_skipped(input, &f.progress);
                tracing::info!(input, message_id = %message.id, bucket, key, error = %f.error, events_delivered = f.progress.confirmed, "object interrupted by shutdown");
                ObjectFate::Interrupted
            }
            Err(f) => self.failed(message, object, f),
        }
    }

    /// Logs and counts a delivered object.
    fn delivered(
        &self,
        message: MessageFacts<'_>,
        object: &ObjectRef,
        delivered: &Delivered,
        started: Instant,
    ) {
        let input = self.settings.name.as_str();
        let (bucket, key) = (object.bucket.as_str(), object.key.as_str());
        count_object(input, "ok");
        count_delivered(input, bucket, key, delivered);
        tracing::info!(
            input, message_id = %message.id, bucket, key,
            events = delivered.stats.events,
            events_confirmed = delivered.progress.confirmed,
            events_skipped = delivered.progress.skipped,
            bytes = delivered.stats.bytes_in,
            ms = started.elapsed().as_millis() as u64,
            "object delivered"
        );
    }

    /// Logs and counts a failed object; a missing one is done (it will never appear).
    fn failed(&self, message: MessageFacts<'_>, object: &ObjectRef, f: Failed) -> ObjectFate {
        let input = self.settings.name.as_str();
        let (bucket, key) = (object.bucket.as_str(), object.key.as_str());
        count_object(input, f.error.label());
        count_skipped(input, &f.progress);
        if f.progress.confirmed > 0 {
            metrics::count(
                "sluice_events_from_failed_objects_total",
                "Events delivered from objects that then failed part-way (read before the error)",
                &[("input", input)],
                f.progress.confirmed,
            );
        }
        let repeats = f.error.repeats();
        tracing::error!(
            input, queue = %self.settings.queue_url, message_id = %message.id, bucket, key,
            error = %f.error,
            offset = f.error.offset(),
            events_delivered = f.progress.confirmed,
            events_skipped = f.progress.skipped,
            repeats,
            "object failed"
        );
        if f.error.is_permanent() {
            // A missing object will never appear: retrying the message would only block the
            // queue. It is logged and counted above; the rest goes on.
            return ObjectFate::Missing;
        }
        ObjectFate::Failed {
            repeats,
            reason: f.error.to_string(),
        }
    }

    /// Direct mode: the body is the event. No notification, no S3; the input's processing
    /// for an empty key decides how it is split (`lines` for compact JSON, `json` otherwise).
    async fn run_body(&self, message: MessageFacts<'_>) -> ObjectFate {
        let input = self.settings.name.as_str();
        let Selection::Process { spec, hints } = self.settings.processing.select("") else {
            tracing::error!(input, message_id = %message.id, "direct_mode input excludes the empty key; nothing to do");
            return ObjectFate::Failed {
                repeats: true,
                reason: "direct_mode input excludes the empty key".into(),
            };
        };
        let body = bytes::Bytes::copy_from_slice(message.body.as_bytes());
        match super::run_body(&self.job(message), body, spec, hints).await {
            Ok(delivered) => {
                count_object(input, "ok");
                tracing::debug!(input, message_id = %message.id, events = delivered.stats.events, "direct message delivered");
                ObjectFate::Delivered
            }
            Err(_) if self.hard_stop.is_cancelled() => ObjectFate::Interrupted,
            Err(f) => {
                count_object(input, f.error.label());
                tracing::error!(input, queue = %self.settings.queue_url, message_id = %message.id, error = %f.error, offset = f.error.offset(), events_delivered = f.progress.confirmed, "direct message failed");
                ObjectFate::Failed {
                    repeats: f.error.repeats(),
                    reason: f.error.to_string(),
                }
            }
        }
    }

    /// Sends the `debug_md5` event of a message: md5 of the body, message id, receive count
    /// and the objects it names, as one compact JSON line.
    async fn send_md5(
        &self,
        message: MessageFacts<'_>,
        objects: &[ObjectRef],
    ) -> Result<(), ForwardError> {
        use md5::Digest;
        use std::fmt::Write;
        let digest = md5::Md5::digest(message.body.as_bytes());
        let mut hex = String::with_capacity(32);
        for b in digest {
            let _ = write!(hex, "{b:02x}");
        }
        let event = serde_json::json!({
            "md5": hex,
            "message_id": message.id,
            "receive_count": message.receive_count,
            "objects": objects
                .iter()
                .map(|o| serde_json::json!({"bucket": o.bucket, "key": o.key}))
                .collect::<Vec<_>>(),
        });
        let mut encoder = sluice_relay::protocol::BatchEncoder::new(self.batch.compression_level);
        encoder.push(MD5_TAG, event.to_string().as_bytes());
        if self.settings.do_not_send {
            return Ok(());
        }
        self.forwarder
            .deliver(&self.settings.name, &encoder.finish())
            .await
            .map(|_| ())
    }
}

fn count_object(input: &str, outcome: &str) {
    metrics::count(
        "sluice_objects_total",
        "Objects handled, by outcome",
        &[("input", input), ("outcome", outcome)],
        1,
    );
}

/// Counts the events a checkpoint kept from being sent again.
fn count_skipped(input: &str, progress: &Progress) {
    if progress.skipped > 0 {
        metrics::count(
            "sluice_events_skipped_checkpoint_total",
            "Events of a redelivered object not sent again: confirmed by an earlier attempt (ledger checkpoint)",
            &[("input", input)],
            progress.skipped,
        );
    }
}

/// Counts what a delivered object's processing noticed.
fn count_delivered(input: &str, bucket: &str, key: &str, delivered: &Delivered) {
    let stats = &delivered.stats;
    count_skipped(input, &delivered.progress);
    metrics::count(
        "sluice_object_bytes_total",
        "Decompressed bytes read from objects",
        &[("input", input)],
        stats.bytes_in,
    );
    if stats.truncated + stats.dropped > 0 {
        metrics::count(
            "sluice_events_truncated_total",
            "Events cut to max_event_bytes",
            &[("input", input)],
            stats.truncated,
        );
        metrics::count(
            "sluice_events_dropped_total",
            "Events dropped for their length",
            &[("input", input)],
            stats.dropped,
        );
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
        metrics::count(
            "sluice_events_invalid_utf8_total",
            "Events with bytes that were not UTF-8 (decoded per `encoding`)",
            &[("input", input)],
            stats.invalid_utf8,
        );
    }
    if stats.malformed_records > 0 {
        metrics::count(
            "sluice_records_malformed_total",
            "Records skipped or passed through as text: not JSON, nested too deep, or without extract_field",
            &[("input", input)],
            stats.malformed_records,
        );
        tracing::warn!(
            input,
            bucket,
            key,
            malformed_records = stats.malformed_records,
            "malformed records (see docs/formats.md, Errors)"
        );
    }
}
