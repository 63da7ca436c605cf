//! One SQS message, from receipt to its fate: classify the body, run every object it
//! announces, keep the message invisible while work is unconfirmed (heartbeat), then delete
//! it — only when every batch of every object was confirmed — or hand it back for a retry.
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
    /// The processed-object ledger, when the collector has a `state_dir`.
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
    let fate = work(&ctx, &facts, &hard_stop).await;
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
            tracing::error!(
                input, queue, message_id = %id, receive_count, sent_ms, first_receive_ms,
                action = ?action,
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
            tracing::warn!(input, queue, message_id = %id, receive_count, retry_in_s = backoff.as_secs(), "message not completed; left for redelivery");
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

/// Classifies the body and runs its objects (or, in direct mode, the body itself).
async fn work(ctx: &InputContext, facts: &Facts<'_>, hard_stop: &CancellationToken) -> Fate {
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
        // The body is the event: no notification, no S3. The input's processing for an
        // empty key decides how it is split (`lines` for compact JSON, `json` otherwise).
        let Selection::Process { spec, hints } = ctx.settings.processing.select("") else {
            tracing::error!(input, message_id = %id, "direct_mode input excludes the empty key; nothing to do");
            return Fate::Retry { repeats: true };
        };
        let body = bytes::Bytes::copy_from_slice(facts.body.as_bytes());
        return match object::run_body(&job, body, spec, hints).await {
            Ok(stats) => {
                metrics::count(
                    "sluice_objects_total",
                    "Objects handled, by outcome",
                    &[("input", input), ("outcome", "ok")],
                    1,
                );
                tracing::debug!(input, message_id = %id, events = stats.events, "direct message delivered");
                Fate::Done
            }
            Err(_) if hard_stop.is_cancelled() => Fate::Interrupted,
            Err(e) => {
                metrics::count(
                    "sluice_objects_total",
                    "Objects handled, by outcome",
                    &[("input", input), ("outcome", e.label())],
                    1,
                );
                tracing::error!(input, queue, message_id = %id, error = %e, "direct message failed");
                Fate::Retry {
                    repeats: e.repeats(),
                }
            }
        };
    }
    let objects = match notification::classify(facts.body) {
        Ok(Notification::TestEvent) => {
            tracing::info!(input, queue, message_id = %id, "s3:TestEvent");
            return Fate::Done;
        }
        Ok(Notification::Control { kind }) => {
            tracing::info!(input, queue, message_id = %id, kind = %kind, "control message, no work");
            return Fate::Done;
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
            return Fate::Retry { repeats: true };
        }
    };
    if ctx.settings.debug_md5 {
        if let Err(e) = send_md5(&job, facts, &objects).await {
            tracing::error!(input, queue, message_id = %id, error = %e, "debug_md5 event not delivered");
            return if hard_stop.is_cancelled() {
                Fate::Interrupted
            } else {
                Fate::Retry { repeats: false }
            };
        }
    }

    for object in &objects {
        let (spec, hints) = match ctx.settings.processing.select(&object.key) {
            Selection::Skip { reason } => {
                metrics::count(
                    "sluice_objects_total",
                    "Objects handled, by outcome",
                    &[("input", input), ("outcome", "skipped")],
                    1,
                );
                tracing::info!(input, message_id = %id, bucket = %object.bucket, key = %object.key, reason = %reason, "object skipped");
                continue;
            }
            Selection::Process { spec, hints } => (spec, hints),
        };
        let started = std::time::Instant::now();
        match object::run(&job, object, spec, hints).await {
            Ok(None) => {
                metrics::count(
                    "sluice_objects_total",
                    "Objects handled, by outcome",
                    &[("input", input), ("outcome", "already_delivered")],
                    1,
                );
                tracing::info!(input, message_id = %id, bucket = %object.bucket, key = %object.key, "object already delivered (ledger); not sent again");
            }
            Ok(Some(stats)) => {
                metrics::count(
                    "sluice_objects_total",
                    "Objects handled, by outcome",
                    &[("input", input), ("outcome", "ok")],
                    1,
                );
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
                    tracing::warn!(input, bucket = %object.bucket, key = %object.key, truncated = stats.truncated, dropped = stats.dropped, "events over max_event_bytes");
                }
                if stats.invalid_utf8 > 0 {
                    metrics::count(
                        "sluice_events_invalid_utf8_total",
                        "Events with bytes that were not UTF-8 (decoded per `encoding`)",
                        &[("input", input)],
                        stats.invalid_utf8,
                    );
                }
                tracing::info!(input, message_id = %id, bucket = %object.bucket, key = %object.key, events = stats.events, bytes = stats.bytes_in, ms = started.elapsed().as_millis() as u64, "object delivered");
            }
            Err(e) if hard_stop.is_cancelled() => {
                tracing::info!(input, message_id = %id, bucket = %object.bucket, key = %object.key, error = %e, "object interrupted by shutdown");
                return Fate::Interrupted;
            }
            Err(e) => {
                metrics::count(
                    "sluice_objects_total",
                    "Objects handled, by outcome",
                    &[("input", input), ("outcome", e.label())],
                    1,
                );
                tracing::error!(input, queue, message_id = %id, bucket = %object.bucket, key = %object.key, error = %e, "object failed");
                if e.is_permanent() {
                    // A missing object will never appear: retrying the message would only
                    // block the queue. It is logged and counted above; the rest goes on.
                    continue;
                }
                return Fate::Retry {
                    repeats: e.repeats(),
                };
            }
        }
    }
    Fate::Done
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
    let mut encoder = sluice_relay::protocol::BatchEncoder::new(job.batch.compression_level);
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
    fn backoff_grows_and_caps() {
        assert_eq!(retry_backoff(1), Duration::from_secs(5));
        assert_eq!(retry_backoff(2), Duration::from_secs(10));
        assert_eq!(retry_backoff(50), FAILED_BACKOFF_CAP);
    }
}
