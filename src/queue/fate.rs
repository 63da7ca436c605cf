//! One SQS message, from receipt to its fate: classify the body, run every object it
//! announces (each one attempted whatever became of the others), keep the message invisible
//! while work is unconfirmed (heartbeat), then delete it — only when every object was
//! delivered, is gone, skipped, or already delivered per the ledger — or hand it back for a
//! retry, naming the objects that failed. The rules are `message_fate`.
//!
//! This is where the delivery guarantee is decided; each branch says why it deletes or not.
//! It reads no object and talks to no relay: the objects' work is behind [`Work`] (the
//! pipeline's is [`crate::object::work::ObjectWork`]) and the queue behind [`Queue`], so
//! every rule here is unit-tested with [`super::memory::MemoryQueue`] (see `queue/tests.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::deleter::Deleter;
use super::heartbeat::{self, Beat};
use super::{BoxFuture, Queue, Received};
use crate::config::{InputSettings, PoisonAction, DEFAULT_MAX_RECEIVE_COUNT_WITHOUT_REDRIVE};
use crate::telemetry::{MessageEvent, MessageScope};
use sluice_formats::notification::{self, Notification, ObjectRef};

/// Retry delay for a failed message's first redelivery; doubles per receive.
const FAILED_BACKOFF_START: Duration = Duration::from_secs(5);
/// Longest delay before a failed message becomes visible again.
const FAILED_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Everything a message task needs, shared by all messages of an input.
pub struct InputContext {
    /// Validated input settings.
    pub settings: InputSettings,
    /// The input's queue.
    pub queue: Arc<dyn Queue>,
    /// Runs the objects a message announces.
    pub work: Arc<dyn Work>,
    /// Poison threshold and action, resolved at start from the config and the queue's
    /// redrive policy ([`poison_policy`]); None leaves failing messages to the queue entirely.
    pub poison: Option<(u32, PoisonAction)>,
    /// Deletes confirmed messages, batching those ready together.
    pub deleter: Deleter,
}

/// The facts of the message being worked on, as the object work needs them.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    pub id: &'a str,
    pub body: &'a str,
    pub receive_count: u32,
    /// `SentTimestamp`, ms.
    pub sent_ms: Option<u64>,
}

/// What became of one object of a message (or, in direct mode, of the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectFate {
    /// Every event confirmed.
    Delivered,
    /// The ledger says this version was delivered before.
    AlreadyDelivered,
    /// Excluded by the input's selection.
    Skipped,
    /// Gone from S3: it will never appear, so retrying cannot help.
    Missing,
    /// Failed (what it read before the failure was delivered); `repeats` when it will fail
    /// the same way on the next receive. `reason` names the error for the poison log line.
    Failed { repeats: bool, reason: String },
    /// Shutdown cut it.
    Interrupted,
}

/// The work a message announces, seen from its fate. Each call logs and counts its own
/// outcome and never panics; the pipeline's implementation fetches, splits and forwards
/// ([`crate::object::work::ObjectWork`]), the unit tests script outcomes.
pub trait Work: Send + Sync {
    /// Delivers one announced object, or skips it per the input's selection.
    fn object<'a>(
        &'a self,
        message: MessageFacts<'a>,
        object: &'a ObjectRef,
    ) -> BoxFuture<'a, ObjectFate>;

    /// Direct mode: delivers the body itself as the events.
    fn body<'a>(&'a self, message: MessageFacts<'a>) -> BoxFuture<'a, ObjectFate>;

    /// `debug_md5`: sends the message's md5 event; the error says why it was not confirmed.
    fn debug_md5<'a>(
        &'a self,
        message: MessageFacts<'a>,
        objects: &'a [ObjectRef],
    ) -> BoxFuture<'a, Result<(), String>>;
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

/// Handles one received message to the end: works it under the heartbeat, then settles it.
pub async fn handle(ctx: Arc<InputContext>, message: Received, hard_stop: CancellationToken) {
    let input = ctx.settings.name.as_str();
    let scope = scope(&ctx, &message.id);
    let Some(receipt) = message.receipt.as_deref() else {
        scope.emit(MessageEvent::NoReceipt);
        return;
    };
    let facts = MessageFacts {
        id: &message.id,
        body: &message.body,
        receive_count: message.receive_count,
        sent_ms: message.sent_ms,
    };
    let beat = Beat {
        queue: ctx.queue.as_ref(),
        input,
        receipt,
        message_id: &message.id,
        visibility: ctx.settings.visibility_timeout,
    };
    let worked = {
        let work = work(&ctx, facts, &hard_stop);
        tokio::pin!(work);
        tokio::select! {
            worked = &mut work => worked,
            // The heartbeat ends early only when the receipt is gone; the work goes on.
            _ = heartbeat::keep_invisible(beat) => work.await,
        }
    };
    settle(&ctx, &message, receipt, worked).await;
}

/// The scope of a message's events.
fn scope<'a>(ctx: &'a InputContext, message_id: &'a str) -> MessageScope<'a> {
    MessageScope {
        input: &ctx.settings.name,
        queue: &ctx.settings.queue_url,
        message_id,
    }
}

/// Acts on a message's fate: delete, poison, retry after a backoff, or leave it.
async fn settle(ctx: &InputContext, message: &Received, receipt: &str, worked: Worked) {
    let scope = scope(ctx, &message.id);
    match worked.fate {
        Fate::Done => {
            // ack_messages = false is the Devo collector's testing mode: never delete; the
            // message comes back after its visibility timeout.
            let delete = ctx.settings.ack_messages;
            scope.emit(MessageEvent::Done { deleted: delete });
            if delete {
                ctx.deleter.delete(receipt, &message.id).await;
            }
        }
        Fate::Retry { repeats: true } if is_poison(ctx, message.receive_count) => {
            let action = ctx.poison.map(|(_, a)| a).unwrap_or(PoisonAction::Keep);
            scope.emit(MessageEvent::Poison {
                action,
                receive_count: message.receive_count,
                sent_ms: message.sent_ms,
                first_receive_ms: message.first_receive_ms,
                failed_objects: &worked.failed,
                body_preview: &notification::preview(&message.body),
            });
            // ack_messages = false means never delete, poison or not.
            if action == PoisonAction::Delete && ctx.settings.ack_messages {
                ctx.deleter.delete(receipt, &message.id).await;
            }
        }
        Fate::Retry { .. } => {
            let backoff = retry_backoff(message.receive_count).min(ctx.settings.visibility_timeout);
            scope.emit(MessageEvent::Retry {
                receive_count: message.receive_count,
                retry_in: backoff,
                failed_objects: &worked.failed,
            });
            // Never delete here: the work was not confirmed. Shorten the invisibility so the
            // retry comes after a backoff rather than a whole visibility timeout. If this
            // fails, the retry only comes later, after the visibility timeout.
            let _ = ctx.queue.change_visibility(receipt, backoff).await;
        }
        Fate::Interrupted => scope.emit(MessageEvent::Interrupted),
    }
}

/// Whether a message whose failure repeats has now failed too often.
fn is_poison(ctx: &InputContext, receive_count: u32) -> bool {
    ctx.poison.is_some_and(|(max, _)| receive_count >= max)
}

fn retry_backoff(receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(16);
    (FAILED_BACKOFF_START * 2u32.pow(exp)).min(FAILED_BACKOFF_CAP)
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
        if let ObjectFate::Failed { repeats, .. } = object {
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

/// Runs the message's work: in direct mode the body itself, else the objects its
/// notification announces (after the `debug_md5` event, when asked).
async fn work(
    ctx: &InputContext,
    facts: MessageFacts<'_>,
    hard_stop: &CancellationToken,
) -> Worked {
    if ctx.settings.direct_mode {
        return direct(ctx, facts).await.into();
    }
    let objects = match announced(ctx, facts) {
        Ok(objects) => objects,
        Err(fate) => return fate.into(),
    };
    if ctx.settings.debug_md5 {
        if let Err(e) = ctx.work.debug_md5(facts, &objects).await {
            scope(ctx, facts.id).emit(MessageEvent::Md5NotDelivered { error: &e });
            return if hard_stop.is_cancelled() {
                Fate::Interrupted
            } else {
                Fate::Retry { repeats: false }
            }
            .into();
        }
    }
    run_objects(ctx, facts, &objects, hard_stop).await
}

/// The objects the body announces, or the fate of a message that announces none: a test
/// event or a control message is done; an undecodable body is retried and counts toward the
/// poison threshold.
fn announced(ctx: &InputContext, facts: MessageFacts<'_>) -> Result<Vec<ObjectRef>, Fate> {
    let scope = scope(ctx, facts.id);
    match notification::classify(facts.body) {
        Ok(Notification::TestEvent) => {
            scope.emit(MessageEvent::TestEvent);
            Err(Fate::Done)
        }
        Ok(Notification::Control { kind }) => {
            scope.emit(MessageEvent::Control { kind: &kind });
            Err(Fate::Done)
        }
        Ok(Notification::Objects {
            objects,
            skipped,
            shape,
            ..
        }) => {
            if skipped > 0 {
                scope.emit(MessageEvent::RecordsSkipped { shape, skipped });
            }
            Ok(objects)
        }
        Err(e) => {
            // Not deleted: an unknown body may be a shape we should learn, and deleting it
            // would lose it. It goes back to the queue, then to the poison policy.
            scope.emit(MessageEvent::Undecodable { error: &e });
            Err(Fate::Retry { repeats: true })
        }
    }
}

/// Runs every object, each attempted whatever became of the ones before it (only shutdown
/// stops the walk): a bad object must not cost the good ones, and what each confirmed stays
/// confirmed (ledger) when the message comes back.
async fn run_objects(
    ctx: &InputContext,
    facts: MessageFacts<'_>,
    objects: &[ObjectRef],
    hard_stop: &CancellationToken,
) -> Worked {
    let mut fates = Vec::with_capacity(objects.len());
    let mut failed = Vec::new();
    for object in objects {
        if hard_stop.is_cancelled() {
            fates.push(ObjectFate::Interrupted);
            break;
        }
        let fate = ctx.work.object(facts, object).await;
        if let ObjectFate::Failed { reason, .. } = &fate {
            failed.push(format!("s3://{}/{} ({reason})", object.bucket, object.key));
        }
        let interrupted = fate == ObjectFate::Interrupted;
        fates.push(fate);
        if interrupted {
            break;
        }
    }
    Worked {
        fate: message_fate(&fates),
        failed,
    }
}

/// Direct mode: the body is the event; its fate is the message's.
async fn direct(ctx: &InputContext, facts: MessageFacts<'_>) -> Fate {
    match ctx.work.body(facts).await {
        ObjectFate::Interrupted => Fate::Interrupted,
        ObjectFate::Failed { repeats, .. } => Fate::Retry { repeats },
        _ => Fate::Done,
    }
}

/// Resolves the poison-message policy: the configured threshold, else off when the queue has
/// a redrive policy (its dead-letter queue takes failing messages) and 5 receives otherwise
/// (Filebeat's default), so a queue without a DLQ never cycles a bad message forever.
pub async fn poison_policy(
    queue: &dyn Queue,
    input: &InputSettings,
) -> Option<(u32, PoisonAction)> {
    let redrive = match queue.has_dead_letter_queue().await {
        Ok(redrive) => redrive,
        Err(e) => {
            // Unknown: assume a DLQ exists, the choice that never deletes.
            tracing::warn!(input = %input.name, queue = %input.queue_url, error = %e, "cannot read the queue's redrive policy; assuming one exists");
            true
        }
    };
    let action = input.poison_action.unwrap_or(if redrive {
        PoisonAction::Keep
    } else {
        PoisonAction::Delete
    });
    let policy = match input.max_receive_count {
        Some(max) => Some((max, action)),
        None if redrive => None,
        None => Some((DEFAULT_MAX_RECEIVE_COUNT_WITHOUT_REDRIVE, action)),
    };
    tracing::info!(input = %input.name, redrive_policy = redrive, poison = ?policy, "poison-message policy");
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(repeats: bool) -> ObjectFate {
        ObjectFate::Failed {
            repeats,
            reason: "x".into(),
        }
    }

    #[test]
    fn message_fate_from_object_fates() {
        use ObjectFate::*;
        let ok = [Delivered, AlreadyDelivered, Skipped, Missing];
        assert_eq!(message_fate(&ok), Fate::Done);
        assert_eq!(message_fate(&[]), Fate::Done);
        // One corrupt object among good ones: back to the queue, toward the poison policy.
        assert_eq!(
            message_fate(&[failed(true), Delivered, Delivered]),
            Fate::Retry { repeats: true }
        );
        // An outage on any object keeps the message away from the poison policy.
        assert_eq!(
            message_fate(&[failed(true), failed(false)]),
            Fate::Retry { repeats: false }
        );
        assert_eq!(
            message_fate(&[Delivered, failed(false)]),
            Fate::Retry { repeats: false }
        );
        // Shutdown wins: the work was cut, not failed.
        assert_eq!(
            message_fate(&[failed(true), Interrupted]),
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
