//! One SQS message, from receipt to its fate: classify the body, run every object it
//! announces (each one attempted whatever became of the others), keep the message invisible
//! while work is unconfirmed (heartbeat), then delete it — only when every object was
//! delivered, is gone, skipped, or already delivered per the ledger — or hand it back for a
//! retry, naming the objects that failed. The rules are [`message_fate`].
//!
//! This is where the delivery guarantee is decided; each branch says why it deletes or not.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use tokio_util::sync::CancellationToken;

use crate::config::{BatchSettings, InputSettings, PoisonAction};
use crate::forward::Forwarder;
use crate::metrics;
use crate::notification::{self, Notification};
use crate::object::{self, ObjectJob};
use crate::processor::config::Selection;

/// Retry delay for a failed message's first redelivery; doubles per receive.
const FAILED_BACKOFF_START: Duration = Duration::from_secs(5);
/// Longest delay before a failed message becomes visible again.
const FAILED_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Everything a message task needs, shared by all messages of an input.
pub struct InputContext {
    /// Validated input settings.
    pub settings: InputSettings,
    /// AWS clients.
    pub clients: crate::aws::Clients,
    /// Batch cuts.
    pub batch: BatchSettings,
    /// The relay.
    pub forwarder: Arc<Forwarder>,
    /// Download parts (the permits are shared by all inputs).
    pub fetch: crate::fetch::FetchSettings,
    /// Poison threshold and action, resolved at start from the config and the queue's
    /// redrive policy; None leaves failing messages to the queue entirely.
    pub poison: Option<(u32, PoisonAction)>,
    /// Deletes confirmed messages, batching those ready together.
    pub deleter: crate::ack::Deleter,
    /// The processed-object ledger (in memory, or in `state_dir`); None runs without one.
    pub ledger: Option<crate::ledger::Ledger>,
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// All work confirmed (or there was none): delete when `ack_messages`.
    Done,
    /// Something failed: make visible again after a backoff. `repeats` says the failure
    /// will happen again on every receive (an undecodable body, a corrupt object, a batch the
    /// relay refuses as malformed); only such failures count toward the poison threshold, so
    /// an outage (S3, IAM, a token rotation) never makes a message poison.
    Retry { repeats: bool },
    /// Shutdown interrupted the work: leave it, SQS redelivers after the visibility timeout.
    Interrupted,
}

/// Handles one received message to the end.
pub async fn handle(ctx: Arc<InputContext>, message: Message, hard_stop: CancellationToken) {
    let input = ctx.settings.name.as_str();
    let queue = ctx.settings.queue_url.as_str();
    let id = message.message_id().unwrap_or("-").to_string();
    let Some(receipt) = message.receipt_handle().map(str::to_string) else {
        tracing::error!(input, queue, message_id = %id, "message without a receipt handle; ignored");
        return;
    };
    let attribute = |name: MessageSystemAttributeName| {
        message
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let receive_count =
        attribute(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1) as u32;
    let sent_ms = attribute(MessageSystemAttributeName::SentTimestamp);
    let first_receive_ms = attribute(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp);

    let beat = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat(
        ctx.clone(),
        receipt.clone(),
        id.clone(),
        beat.clone(),
    ));
    let facts = Facts {
        id: &id,
        body: message.body().unwrap_or(""),
        receive_count,
        sent_ms,
    };
    let Worked { fate, failed } = work(&ctx, &facts, &hard_stop).await;
    beat.cancel();
    let _ = heartbeat.await;

    metrics::count(
        "sluice_messages_total",
        "SQS messages handled, by outcome",
        &[
            ("input", input),
            (
                "outcome",
                match fate {
                    Fate::Done => "done",
                    Fate::Retry { .. } => "retry",
                    Fate::Interrupted => "interrupted",
                },
            ),
        ],
        1,
    );
    match fate {
        Fate::Done if ctx.settings.ack_messages => {
            ctx.deleter.delete(&receipt, &id).await;
        }
        Fate::Done => {
            // ack_messages = false is the Devo collector's testing mode: never delete; the
            // message comes back after its visibility timeout.
            tracing::info!(input, queue, message_id = %id, "done; not deleted (ack_messages = false)");
        }
        Fate::Retry { repeats: true }
            if ctx.poison.is_some_and(|(max, _)| receive_count >= max) =>
        {
            let action = ctx.poison.map(|(_, a)| a).unwrap_or(PoisonAction::Keep);
            metrics::count(
                "sluice_messages_poison_total",
                "Messages that failed max_receive_count times",
                &[
                    ("input", input),
                    (
                        "action",
                        match action {
                            PoisonAction::Keep => "keep",
                            PoisonAction::Delete => "delete",
                        },
                    ),
                ],
                1,
            );
            // Names every object that failed, so a deleted message leaves a trace of what
            // was not delivered; the objects that were are confirmed (and in the ledger).
            tracing::error!(
                input, queue, message_id = %id, receive_count, sent_ms, first_receive_ms,
                action = ?action,
                failed_objects = %failed.join("; "),
                body = %notification::preview(message.body().unwrap_or("")),
                "poison message: failed on every receive so far"
            );
            // ack_messages = false means never delete, poison or not.
            if action == PoisonAction::Delete && ctx.settings.ack_messages {
                ctx.deleter.delete(&receipt, &id).await;
            }
        }
        Fate::Retry { .. } => {
            let backoff = retry_backoff(receive_count).min(ctx.settings.visibility_timeout);
            tracing::warn!(input, queue, message_id = %id, receive_count, retry_in_s = backoff.as_secs(), failed_objects = %failed.join("; "), "message not completed; left for redelivery");
            // Never delete here: the work was not confirmed. Shorten the invisibility so the
            // retry comes after a backoff rather than a whole visibility timeout.
            let _ = ctx
                .clients
                .sqs
                .change_message_visibility()
                .queue_url(queue)
                .receipt_handle(&receipt)
                .visibility_timeout(backoff.as_secs() as i32)
                .send()
                .await;
        }
        Fate::Interrupted => {
            tracing::info!(input, queue, message_id = %id, "interrupted by shutdown; left for redelivery");
        }
    }
}

fn retry_backoff(receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(16);
    (FAILED_BACKOFF_START * 2u32.pow(exp)).min(FAILED_BACKOFF_CAP)
}

/// Facts of the message being worked on.
struct Facts<'a> {
    id: &'a str,
    body: &'a str,
    receive_count: u32,
    sent_ms: Option<u64>,
}

/// What became of the work of a message.
struct Worked {
    fate: Fate,
    /// The objects that failed, `s3://bucket/key (reason)`, for the poison log line.
    failed: Vec<String>,
}

impl From<Fate> for Worked {
    fn from(fate: Fate) -> Self {
        Worked {
            fate,
            failed: Vec::new(),
        }
    }
}

/// What became of one object of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectFate {
    /// Every event confirmed.
    Delivered,
    /// The ledger says this version was delivered before.
    AlreadyDelivered,
    /// Excluded by the input's selection.
    Skipped,
    /// Gone from S3: it will never appear, so retrying cannot help.
    Missing,
    /// Failed (what it read before the failure was delivered); `repeats` when it will fail
    /// the same way on the next receive.
    Failed { repeats: bool },
    /// Shutdown cut it.
    Interrupted,
}

/// The fate of a message from the fates of its objects.
///
/// - Shutdown interrupted any object: Interrupted (SQS redelivers; confirmed work is in the
///   ledger).
/// - Any object failed: Retry. It `repeats` (counts toward the poison threshold) only when
///   every failure repeats: a message whose only problem is one corrupt object goes to the
///   poison policy, but one with an object caught in an outage (S3, the relay) never does,
///   or a poison `delete` would lose that object's events.
/// - Otherwise every object is delivered, skipped, gone or already delivered: Done.
fn message_fate(objects: &[ObjectFate]) -> Fate {
    if objects.contains(&ObjectFate::Interrupted) {
        return Fate::Interrupted;
    }
    let mut failed = false;
    let mut all_repeat = true;
    for object in objects {
        if let ObjectFate::Failed { repeats } = object {
            failed = true;
            all_repeat &= repeats;
        }
    }
    if failed {
        Fate::Retry {
            repeats: all_repeat,
        }
    } else {
        Fate::Done
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
fn count_skipped(input: &str, progress: &object::Progress) {
    if progress.skipped > 0 {
        metrics::count(
            "sluice_events_skipped_checkpoint_total",
            "Events of a redelivered object not sent again: confirmed by an earlier attempt (ledger checkpoint)",
            &[("input", input)],
            progress.skipped,
        );
    }
}

/// Classifies the body and runs its objects (or, in direct mode, the body itself).
async fn work(ctx: &InputContext, facts: &Facts<'_>, hard_stop: &CancellationToken) -> Worked {
    let input = ctx.settings.name.as_str();
    let queue = ctx.settings.queue_url.as_str();
    let id = facts.id;
    let job = ObjectJob {
        input,
        s3: &ctx.clients.s3,
        batch: ctx.batch,
        forwarder: &ctx.forwarder,
        fetch: &ctx.fetch,
        do_not_send: ctx.settings.do_not_send,
        message_id: id,
        sent_ms: facts.sent_ms,
        receive_count: facts.receive_count,
        ledger: ctx.ledger.as_ref(),
    };
    if ctx.settings.direct_mode {
        return direct(ctx, &job, facts, hard_stop).await.into();
    }
    let objects = match notification::classify(facts.body) {
        Ok(Notification::TestEvent) => {
            tracing::info!(input, queue, message_id = %id, "s3:TestEvent");
            return Fate::Done.into();
        }
        Ok(Notification::Control { kind }) => {
            tracing::info!(input, queue, message_id = %id, kind = %kind, "control message, no work");
            return Fate::Done.into();
        }
        Ok(Notification::Objects {
            objects,
            skipped,
            shape,
            ..
        }) => {
            if skipped > 0 {
                tracing::debug!(input, message_id = %id, shape, skipped, "records that announce no new object skipped");
            }
            objects
        }
        Err(e) => {
            metrics::count(
                "sluice_messages_undecodable_total",
                "Messages whose body is no known notification",
                &[("input", input)],
                1,
            );
            // Not deleted: an unknown body may be a shape we should learn, and deleting it
            // would lose it. It goes back to the queue, then to the poison policy.
            tracing::error!(input, queue, message_id = %id, error = %e, "undecodable message");
            return Fate::Retry { repeats: true }.into();
        }
    };
    if ctx.settings.debug_md5 {
        if let Err(e) = send_md5(&job, facts, &objects).await {
            tracing::error!(input, queue, message_id = %id, error = %e, "debug_md5 event not delivered");
            return if hard_stop.is_cancelled() {
                Fate::Interrupted
            } else {
                Fate::Retry { repeats: false }
            }
            .into();
        }
    }

    // Every object is attempted whatever became of the ones before it (only shutdown stops
    // the walk): a bad object must not cost the good ones, and what each confirmed stays
    // confirmed (ledger) when the message comes back.
    let mut fates = Vec::with_capacity(objects.len());
    let mut failed = Vec::new();
    for object in &objects {
        if hard_stop.is_cancelled() {
            fates.push(ObjectFate::Interrupted);
            break;
        }
        let fate = run_object(ctx, &job, object, hard_stop).await;
        if let (ObjectFate::Failed { .. }, Err(reason)) = &fate {
            failed.push(format!("s3://{}/{} ({reason})", object.bucket, object.key));
        }
        fates.push(fate.0);
        if fates.last() == Some(&ObjectFate::Interrupted) {
            break;
        }
    }
    Worked {
        fate: message_fate(&fates),
        failed,
    }
}

/// Runs one object and logs and counts its outcome; a failure comes with its reason.
async fn run_object(
    ctx: &InputContext,
    job: &ObjectJob<'_>,
    object: &notification::ObjectRef,
    hard_stop: &CancellationToken,
) -> (ObjectFate, Result<(), String>) {
    let input = job.input;
    let queue = ctx.settings.queue_url.as_str();
    let id = job.message_id;
    let (bucket, key) = (object.bucket.as_str(), object.key.as_str());
    let (spec, hints) = match ctx.settings.processing.select(key) {
        Selection::Skip { reason } => {
            count_object(input, "skipped");
            tracing::info!(input, message_id = %id, bucket, key, reason = %reason, "object skipped");
            return (ObjectFate::Skipped, Ok(()));
        }
        Selection::Process { spec, hints } => (spec, hints),
    };
    let started = std::time::Instant::now();
    match object::run(job, object, spec, hints).await {
        Ok(None) => {
            count_object(input, "already_delivered");
            tracing::info!(input, message_id = %id, bucket, key, "object already delivered (ledger); not sent again");
            (ObjectFate::AlreadyDelivered, Ok(()))
        }
        Ok(Some(delivered)) => {
            count_object(input, "ok");
            count_delivered(input, bucket, key, &delivered);
            tracing::info!(
                input, message_id = %id, bucket, key,
                events = delivered.stats.events,
                events_confirmed = delivered.progress.confirmed,
                events_skipped = delivered.progress.skipped,
                bytes = delivered.stats.bytes_in,
                ms = started.elapsed().as_millis() as u64,
                "object delivered"
            );
            (ObjectFate::Delivered, Ok(()))
        }
        Err(f) if hard_stop.is_cancelled() => {
            count_skipped(input, &f.progress);
            tracing::info!(input, message_id = %id, bucket, key, error = %f.error, events_delivered = f.progress.confirmed, "object interrupted by shutdown");
            (ObjectFate::Interrupted, Ok(()))
        }
        Err(f) => {
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
                input, queue, message_id = %id, bucket, key,
                error = %f.error,
                offset = f.error.offset(),
                events_delivered = f.progress.confirmed,
                events_skipped = f.progress.skipped,
                repeats,
                "object failed"
            );
            if f.error.is_permanent() {
                // A missing object will never appear: retrying the message would only
                // block the queue. It is logged and counted above; the rest goes on.
                return (ObjectFate::Missing, Ok(()));
            }
            (ObjectFate::Failed { repeats }, Err(f.error.to_string()))
        }
    }
}

/// Counts what a delivered object's processing noticed.
fn count_delivered(input: &str, bucket: &str, key: &str, delivered: &object::Delivered) {
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

/// Direct mode: the body is the event. No notification, no S3; the input's processing for an
/// empty key decides how it is split (`lines` for compact JSON, `json` otherwise).
async fn direct(
    ctx: &InputContext,
    job: &ObjectJob<'_>,
    facts: &Facts<'_>,
    hard_stop: &CancellationToken,
) -> Fate {
    let input = job.input;
    let queue = ctx.settings.queue_url.as_str();
    let id = facts.id;
    let Selection::Process { spec, hints } = ctx.settings.processing.select("") else {
        tracing::error!(input, message_id = %id, "direct_mode input excludes the empty key; nothing to do");
        return Fate::Retry { repeats: true };
    };
    let body = bytes::Bytes::copy_from_slice(facts.body.as_bytes());
    match object::run_body(job, body, spec, hints).await {
        Ok(delivered) => {
            count_object(input, "ok");
            tracing::debug!(input, message_id = %id, events = delivered.stats.events, "direct message delivered");
            Fate::Done
        }
        Err(_) if hard_stop.is_cancelled() => Fate::Interrupted,
        Err(f) => {
            count_object(input, f.error.label());
            tracing::error!(input, queue, message_id = %id, error = %f.error, offset = f.error.offset(), events_delivered = f.progress.confirmed, "direct message failed");
            Fate::Retry {
                repeats: f.error.repeats(),
            }
        }
    }
}

/// The Devo tag of `debug_md5` events.
const MD5_TAG: &str = "my.app.sqs.message_body";

/// Sends the `debug_md5` event of a message: md5 of the body, message id, receive count and
/// the objects it names, as one compact JSON line.
async fn send_md5(
    job: &ObjectJob<'_>,
    facts: &Facts<'_>,
    objects: &[notification::ObjectRef],
) -> Result<(), crate::forward::ForwardError> {
    use md5::Digest;
    use std::fmt::Write;
    let digest = md5::Md5::digest(facts.body.as_bytes());
    let mut hex = String::with_capacity(32);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    let event = serde_json::json!({
        "md5": hex,
        "message_id": facts.id,
        "receive_count": facts.receive_count,
        "objects": objects
            .iter()
            .map(|o| serde_json::json!({"bucket": o.bucket, "key": o.key}))
            .collect::<Vec<_>>(),
    });
    let mut encoder = sluice_channel::encode::BatchEncoder::new(job.batch.compression_level);
    encoder.push(MD5_TAG, event.to_string().as_bytes());
    if job.do_not_send {
        return Ok(());
    }
    job.forwarder
        .deliver(job.input, &encoder.finish())
        .await
        .map(|_| ())
}

/// Keeps the message invisible while its work runs: every half visibility timeout, extend it
/// to a full one. Stops when `stop` fires or the receipt handle is no longer valid.
async fn heartbeat(ctx: Arc<InputContext>, receipt: String, id: String, stop: CancellationToken) {
    let visibility = ctx.settings.visibility_timeout;
    if visibility.is_zero() {
        return;
    }
    let period = (visibility / 2).max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let result = ctx
            .clients
            .sqs
            .change_message_visibility()
            .queue_url(&ctx.settings.queue_url)
            .receipt_handle(&receipt)
            .visibility_timeout(visibility.as_secs() as i32)
            .send()
            .await;
        match result {
            Ok(_) => {
                metrics::count(
                    "sluice_visibility_extensions_total",
                    "Heartbeat visibility extensions",
                    &[("input", &ctx.settings.name)],
                    1,
                );
            }
            Err(e) => {
                let e = crate::aws::describe(&e);
                tracing::warn!(input = %ctx.settings.name, message_id = %id, error = %e, "could not extend visibility");
                if e.contains("ReceiptHandleIsInvalid") || e.contains("MessageNotInflight") {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_fate_from_object_fates() {
        use ObjectFate::*;
        let ok = [Delivered, AlreadyDelivered, Skipped, Missing];
        assert_eq!(message_fate(&ok), Fate::Done);
        assert_eq!(message_fate(&[]), Fate::Done);
        // One corrupt object among good ones: back to the queue, toward the poison policy.
        assert_eq!(
            message_fate(&[Failed { repeats: true }, Delivered, Delivered]),
            Fate::Retry { repeats: true }
        );
        // An outage on any object keeps the message away from the poison policy.
        assert_eq!(
            message_fate(&[Failed { repeats: true }, Failed { repeats: false }]),
            Fate::Retry { repeats: false }
        );
        assert_eq!(
            message_fate(&[Delivered, Failed { repeats: false }]),
            Fate::Retry { repeats: false }
        );
        // Shutdown wins: the work was cut, not failed.
        assert_eq!(
            message_fate(&[Failed { repeats: true }, Interrupted]),
            Fate::Interrupted
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(retry_backoff(1), Duration::from_secs(5));
        assert_eq!(retry_backoff(2), Duration::from_secs(10));
        assert_eq!(retry_backoff(50), FAILED_BACKOFF_CAP);
    }
}
