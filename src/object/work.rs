//! The pipeline's [`Work`]: what message fate asks of the object side, done for real. Each
//! announced object is selected (or skipped) by the input's processing, fetched, split and
//! forwarded ([`super::run`]), and its outcome logged and counted (one telemetry event) and
//! reduced to an [`ObjectFate`]; direct mode does the same with the body; `debug_md5` sends its event.
//!
//! It decides no message's fate: [`crate::queue::fate`] does, from the fates returned here.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::fetch::FetchSettings;
use super::ledger::Ledger;
use super::{Failed, ObjectJob};
use crate::config::{BatchSettings, InputSettings};
use crate::delivery::forward::{ForwardError, Forwarder};
use crate::queue::fate::{MessageFacts, ObjectFate, Work};
use crate::queue::BoxFuture;
use crate::telemetry::{MessageEvent, MessageScope, ObjectEvent, ObjectScope};
use sluice_formats::notification::ObjectRef;
use sluice_formats::processor::config::Selection;

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

    /// Runs one object; its outcome is logged and counted as one [`ObjectEvent`].
    async fn run_object(&self, message: MessageFacts<'_>, object: &ObjectRef) -> ObjectFate {
        let scope = ObjectScope {
            input: &self.settings.name,
            queue: &self.settings.queue_url,
            message_id: message.id,
            bucket: &object.bucket,
            key: &object.key,
            version_id: object.version_id.as_deref(),
        };
        let (spec, hints) = match self.settings.processing.select(&object.key) {
            Selection::Skip { reason } => {
                scope.emit(ObjectEvent::Skipped { reason: &reason });
                return ObjectFate::Skipped;
            }
            Selection::Process { spec, hints } => (spec, hints),
        };
        let processor = spec.kind.name();
        let started = Instant::now();
        match super::run(&self.job(message), object, spec, hints).await {
            Ok(None) => {
                scope.emit(ObjectEvent::AlreadyDelivered);
                ObjectFate::AlreadyDelivered
            }
            Ok(Some(delivered)) => {
                scope.emit(ObjectEvent::Delivered {
                    processor,
                    stats: &delivered.stats,
                    progress: delivered.progress,
                    elapsed: started.elapsed(),
                });
                ObjectFate::Delivered
            }
            Err(f) if self.hard_stop.is_cancelled() => {
                scope.emit(ObjectEvent::Interrupted {
                    error: &f.error,
                    progress: f.progress,
                });
                ObjectFate::Interrupted
            }
            Err(f) => failed(scope, processor, f),
        }
    }

    /// Direct mode: the body is the event. No notification, no S3; the input's processing
    /// for an empty key decides how it is split (`lines` for compact JSON, `json` otherwise).
    async fn run_body(&self, message: MessageFacts<'_>) -> ObjectFate {
        let scope = MessageScope {
            input: &self.settings.name,
            queue: &self.settings.queue_url,
            message_id: message.id,
        };
        let Selection::Process { spec, hints } = self.settings.processing.select("") else {
            scope.emit(MessageEvent::DirectExcluded);
            return ObjectFate::Failed {
                repeats: true,
                reason: "direct_mode input excludes the empty key".into(),
            };
        };
        let processor = spec.kind.name();
        let body = bytes::Bytes::copy_from_slice(message.body.as_bytes());
        match super::run_body(&self.job(message), body, spec, hints).await {
            Ok(delivered) => {
                scope.emit(MessageEvent::DirectDelivered {
                    processor,
                    stats: &delivered.stats,
                });
                ObjectFate::Delivered
            }
            Err(_) if self.hard_stop.is_cancelled() => ObjectFate::Interrupted,
            Err(f) => {
                scope.emit(MessageEvent::DirectFailed {
                    label: f.error.label(),
                    error: &f.error,
                    offset: f.error.offset(),
                    events_delivered: f.progress.confirmed,
                });
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
        let mut encoder = sluice_channel::encode::BatchEncoder::new(self.batch.compression_level);
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

/// A failed object's fate: a missing one is done (it will never appear), any other is a
/// failure that repeats or not.
fn failed(scope: ObjectScope<'_>, processor: &'static str, f: Failed) -> ObjectFate {
    let repeats = f.error.repeats();
    scope.emit(ObjectEvent::Failed {
        processor,
        stats: &f.stats,
        label: f.error.label(),
        error: &f.error,
        offset: f.error.offset(),
        progress: f.progress,
        repeats,
    });
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
