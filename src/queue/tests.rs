//! Message fate without an emulator: [`MemoryQueue`] for the queue and a scripted [`Work`]
//! for the objects, on tokio's paused clock, so every rule of `fate` (heartbeat, delete only
//! when all is confirmed, retry backoff, poison, missing objects, shutdown, ack_messages,
//! direct mode, debug_md5) is checked in milliseconds. The moto tests (tests/e2e/fate.rs) check
//! the same rules end to end against the real SDK.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deleter::Deleter;
use super::fate::{self, InputContext, MessageFacts, ObjectFate, Work};
use super::memory::{Call, MemoryQueue};
use super::{BoxFuture, Queue};
use crate::config::{InputSettings, PoisonAction, Settings};
use crate::telemetry::{self, Metric};
use sluice_formats::notification::ObjectRef;

/// Visibility timeout of the test inputs, seconds.
const VISIBILITY: u64 = 120;

/// What the scripted work does with an object (or the body).
#[derive(Debug, Clone)]
enum Step {
    /// Ends at once with this fate.
    Now(ObjectFate),
    /// Works this long (on the paused clock), then ends with this fate.
    After(Duration, ObjectFate),
    /// Works until the hard stop fires, then reports the interruption.
    UntilStopped,
}

/// A [`Work`] whose outcomes are written in advance; objects not named are delivered.
struct Script {
    objects: HashMap<String, Step>,
    body: Step,
    md5: Result<(), String>,
    hard_stop: CancellationToken,
    /// Keys in the order they were attempted (`<body>` for direct mode, `<md5>`).
    attempted: Mutex<Vec<String>>,
}

impl Script {
    fn new(hard_stop: &CancellationToken) -> Self {
        Script {
            objects: HashMap::new(),
            body: Step::Now(ObjectFate::Delivered),
            md5: Ok(()),
            hard_stop: hard_stop.clone(),
            attempted: Mutex::new(Vec::new()),
        }
    }

    fn object(mut self, key: &str, step: Step) -> Self {
        self.objects.insert(key.to_string(), step);
        self
    }

    async fn play(&self, step: Step) -> ObjectFate {
        match step {
            Step::Now(fate) => fate,
            Step::After(d, fate) => {
                tokio::time::sleep(d).await;
                fate
            }
            Step::UntilStopped => {
                self.hard_stop.cancelled().await;
                ObjectFate::Interrupted
            }
        }
    }

    fn attempted(&self) -> Vec<String> {
        self.attempted.lock().unwrap().clone()
    }
}

impl Work for Script {
    fn object<'a>(
        &'a self,
        _message: MessageFacts<'a>,
        object: &'a ObjectRef,
    ) -> BoxFuture<'a, ObjectFate> {
        self.attempted.lock().unwrap().push(object.key.clone());
        let step = self
            .objects
            .get(&object.key)
            .cloned()
            .unwrap_or(Step::Now(ObjectFate::Delivered));
        Box::pin(self.play(step))
    }

    fn body<'a>(&'a self, _message: MessageFacts<'a>) -> BoxFuture<'a, ObjectFate> {
        self.attempted.lock().unwrap().push("<body>".into());
        Box::pin(self.play(self.body.clone()))
    }

    fn debug_md5<'a>(
        &'a self,
        _message: MessageFacts<'a>,
        _objects: &'a [ObjectRef],
    ) -> BoxFuture<'a, Result<(), String>> {
        self.attempted.lock().unwrap().push("<md5>".into());
        Box::pin(async move { self.md5.clone() })
    }
}

fn failed(repeats: bool) -> ObjectFate {
    ObjectFate::Failed {
        repeats,
        reason: if repeats { "corrupt" } else { "S3 outage" }.into(),
    }
}

/// A CloudTrail-shaped notification announcing `keys` in bucket `b`.
fn announcing(keys: &[&str]) -> String {
    serde_json::json!({"s3Bucket": "b", "s3ObjectKey": keys}).to_string()
}

const TEST_EVENT: &str = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-01-01T00:00:00.000Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;

/// Settings of an input named `name` (unique per test: metrics are process-wide).
fn input(name: &str) -> InputSettings {
    let text = format!(
        "[relay]\nurl = \"http://127.0.0.1:7700\"\n[[inputs]]\nname = \"{name}\"\n\
         base_url = \"https://sqs.us-east-1.amazonaws.com/123456789012/q\"\n\
         tag = \"my.app.test\"\nsqs_visibility_timeout = {VISIBILITY}\n"
    );
    Settings::parse(&text, "test").unwrap().inputs.remove(0)
}

/// One input's message fate over a memory queue.
struct Harness {
    queue: Arc<MemoryQueue>,
    script: Arc<Script>,
    ctx: Arc<InputContext>,
    hard_stop: CancellationToken,
}

impl Harness {
    fn new(
        settings: InputSettings,
        poison: Option<(u32, PoisonAction)>,
        script: impl FnOnce(Script) -> Script,
    ) -> Harness {
        Harness::on(Arc::new(MemoryQueue::new()), settings, poison, script)
    }

    fn on(
        queue: Arc<MemoryQueue>,
        settings: InputSettings,
        poison: Option<(u32, PoisonAction)>,
        script: impl FnOnce(Script) -> Script,
    ) -> Harness {
        let hard_stop = CancellationToken::new();
        let script = Arc::new(script(Script::new(&hard_stop)));
        let ctx = Arc::new(InputContext {
            deleter: Deleter::start(
                queue.clone(),
                settings.queue_url.clone(),
                settings.name.clone(),
            ),
            settings,
            queue: queue.clone(),
            work: script.clone(),
            poison,
        });
        Harness {
            queue,
            script,
            ctx,
            hard_stop,
        }
    }

    /// Enqueues `body`, receives it for the `receive_count`th time and handles it to the end;
    /// returns the message id.
    async fn handle(&self, body: &str, receive_count: u32) -> String {
        let id = self.queue.send(body);
        let message = self
            .queue
            .take(&id, receive_count, Duration::from_secs(VISIBILITY));
        fate::handle(self.ctx.clone(), message, self.hard_stop.clone()).await;
        id
    }

    fn deleted(&self, id: &str) -> bool {
        !self.queue.contains(id)
    }

    /// The value of `metric` for this input and the other label values.
    fn count(&self, metric: &Metric, labels: &[&str]) -> u64 {
        let mut all = vec![self.ctx.settings.name.as_str()];
        all.extend_from_slice(labels);
        telemetry::value(metric, &all)
    }

    fn messages(&self, outcome: &str) -> u64 {
        self.count(&telemetry::MESSAGES, &[outcome])
    }
}

#[tokio::test(start_paused = true)]
async fn all_objects_delivered_deletes_the_message() {
    let h = Harness::new(input("fate-done"), None, |s| s);
    let id = h.handle(&announcing(&["k1", "k2"]), 1).await;
    assert!(h.deleted(&id));
    assert_eq!(h.script.attempted(), ["k1", "k2"]);
    assert_eq!(h.messages("done"), 1);
    assert_eq!(h.count(&telemetry::MESSAGES_DELETED, &[]), 1);
}

#[tokio::test(start_paused = true)]
async fn missing_skipped_and_already_delivered_objects_count_as_done() {
    let h = Harness::new(input("fate-gone"), None, |s| {
        s.object("gone", Step::Now(ObjectFate::Missing))
            .object("skip", Step::Now(ObjectFate::Skipped))
            .object("old", Step::Now(ObjectFate::AlreadyDelivered))
    });
    let id = h
        .handle(&announcing(&["gone", "skip", "old", "new"]), 1)
        .await;
    assert!(h.deleted(&id), "nothing left that a retry could deliver");
}

#[tokio::test(start_paused = true)]
async fn a_failed_object_keeps_the_message_and_the_others_are_still_attempted() {
    let h = Harness::new(input("fate-partial"), None, |s| {
        s.object("bad", Step::Now(failed(false)))
    });
    let id = h.handle(&announcing(&["k1", "bad", "k3"]), 1).await;
    assert!(!h.deleted(&id), "never delete unconfirmed work");
    assert_eq!(h.script.attempted(), ["k1", "bad", "k3"]);
    // Visible again after the first backoff step, not a whole visibility timeout.
    assert_eq!(h.queue.visibility_changes(), [5]);
    assert_eq!(h.queue.invisible_for(&id), Some(Duration::from_secs(5)));
    assert_eq!(h.messages("retry"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_retry_backoff_grows_with_receives_within_the_visibility_timeout() {
    let h = Harness::new(input("fate-backoff"), None, |s| {
        s.object("bad", Step::Now(failed(false)))
    });
    for receive in [1, 2, 3, 6, 40] {
        h.handle(&announcing(&["bad"]), receive).await;
    }
    // 5 s doubling per receive, capped by the input's 120 s visibility timeout.
    assert_eq!(h.queue.visibility_changes(), [5, 10, 20, 120, 120]);
}

#[tokio::test(start_paused = true)]
async fn a_repeating_failure_below_the_threshold_is_retried() {
    let h = Harness::new(input("fate-below"), Some((3, PoisonAction::Delete)), |s| {
        s.object("bad", Step::Now(failed(true)))
    });
    let id = h.handle(&announcing(&["bad"]), 2).await;
    assert!(!h.deleted(&id));
    assert_eq!(h.queue.visibility_changes(), [10]);
    assert_eq!(h.count(&telemetry::MESSAGES_POISON, &["delete"]), 0);
}

#[tokio::test(start_paused = true)]
async fn poison_with_delete_logs_and_deletes_at_max_receive_count() {
    let h = Harness::new(
        input("fate-poison-delete"),
        Some((3, PoisonAction::Delete)),
        |s| s.object("bad", Step::Now(failed(true))),
    );
    let id = h.handle(&announcing(&["ok", "bad"]), 3).await;
    assert!(h.deleted(&id));
    assert!(h.queue.visibility_changes().is_empty());
    assert_eq!(h.count(&telemetry::MESSAGES_POISON, &["delete"]), 1);
}

#[tokio::test(start_paused = true)]
async fn poison_with_keep_leaves_the_message_to_the_dead_letter_queue() {
    let h = Harness::new(
        input("fate-poison-keep"),
        Some((3, PoisonAction::Keep)),
        |s| s.object("bad", Step::Now(failed(true))),
    );
    let id = h.handle(&announcing(&["bad"]), 5).await;
    assert!(!h.deleted(&id));
    // Neither deleted nor hurried back: the queue's redrive policy takes it on its own clock.
    assert!(h.queue.visibility_changes().is_empty());
    assert_eq!(h.count(&telemetry::MESSAGES_POISON, &["keep"]), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_never_makes_a_message_poison() {
    // One object corrupt, one caught in an outage: deleting would lose the second one.
    let h = Harness::new(input("fate-outage"), Some((3, PoisonAction::Delete)), |s| {
        s.object("bad", Step::Now(failed(true)))
            .object("down", Step::Now(failed(false)))
    });
    let id = h.handle(&announcing(&["bad", "down"]), 50).await;
    assert!(!h.deleted(&id));
    assert_eq!(h.queue.visibility_changes(), [120]);
    assert_eq!(h.count(&telemetry::MESSAGES_POISON, &["delete"]), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_policy_failures_never_become_poison() {
    let h = Harness::new(input("fate-no-policy"), None, |s| {
        s.object("bad", Step::Now(failed(true)))
    });
    let id = h.handle(&announcing(&["bad"]), 1000).await;
    assert!(!h.deleted(&id));
    assert_eq!(h.messages("retry"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_test_event_is_deleted_without_work() {
    let h = Harness::new(input("fate-test-event"), None, |s| s);
    let id = h.handle(TEST_EVENT, 1).await;
    assert!(h.deleted(&id));
    assert!(h.script.attempted().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_sns_control_message_is_deleted_without_work() {
    let h = Harness::new(input("fate-control"), None, |s| s);
    let body = r#"{"Type":"SubscriptionConfirmation","MessageId":"m","TopicArn":"arn:aws:sns:eu-west-1:000011112222:t","Message":"confirm","SubscribeURL":"https://example.invalid/","Token":"t"}"#;
    let id = h.handle(body, 1).await;
    assert!(h.deleted(&id));
    assert!(h.script.attempted().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unknown_shape_is_kept_then_goes_to_the_poison_policy() {
    let h = Harness::new(
        input("fate-unknown"),
        Some((2, PoisonAction::Delete)),
        |s| s,
    );
    let first = h.handle(r#"{"what":"no known shape"}"#, 1).await;
    assert!(!h.deleted(&first), "an unknown shape may be one to learn");
    assert_eq!(h.queue.visibility_changes(), [5]);
    let second = h.handle("not json at all", 2).await;
    assert!(h.deleted(&second), "undecodable on every receive: poison");
    assert_eq!(h.count(&telemetry::MESSAGES_UNDECODABLE, &[]), 2);
    assert!(h.script.attempted().is_empty());
}

#[tokio::test(start_paused = true)]
async fn ack_messages_false_never_deletes_not_even_poison() {
    let mut settings = input("fate-no-ack");
    settings.ack_messages = false;
    let h = Harness::new(settings, Some((1, PoisonAction::Delete)), |s| {
        s.object("bad", Step::Now(failed(true)))
    });
    let done = h.handle(&announcing(&["k1"]), 1).await;
    let poison = h.handle(&announcing(&["bad"]), 1).await;
    assert!(!h.deleted(&done));
    assert!(!h.deleted(&poison));
    assert_eq!(h.messages("done"), 1);
    assert_eq!(h.count(&telemetry::MESSAGES_POISON, &["delete"]), 1);
    assert!(!h
        .queue
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Delete { .. } | Call::DeleteBatch(_))));
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_extends_visibility_while_work_runs_and_stops_after() {
    let h = Harness::new(input("fate-heartbeat"), None, |s| {
        s.object(
            "slow",
            Step::After(Duration::from_secs(150), ObjectFate::Delivered),
        )
    });
    let id = h.handle(&announcing(&["slow"]), 1).await;
    // Every half visibility timeout (60 s) while the 150 s of work ran: at 60 and 120 s.
    assert_eq!(h.queue.visibility_changes(), [VISIBILITY, VISIBILITY]);
    assert_eq!(h.count(&telemetry::VISIBILITY_EXTENSIONS, &[]), 2);
    assert!(
        h.deleted(&id),
        "still in flight when deleted, thanks to the heartbeat"
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        h.queue.visibility_changes().len(),
        2,
        "no beat after the work"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_heartbeat_a_slow_object_loses_its_receipt() {
    // Visibility 0 turns the heartbeat off: the receipt lapses while the work runs, so the
    // delete finds no message in flight (SQS would redeliver it: a duplicate, not a loss).
    let mut settings = input("fate-no-heartbeat");
    settings.visibility_timeout = Duration::ZERO;
    let h = Harness::new(settings, None, |s| {
        s.object(
            "slow",
            Step::After(Duration::from_secs(300), ObjectFate::Delivered),
        )
    });
    let id = h.handle(&announcing(&["slow"]), 1).await;
    assert!(h.queue.visibility_changes().is_empty());
    assert!(!h.deleted(&id));
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_whose_receipt_is_gone_stops_and_the_work_goes_on() {
    let h = Harness::new(input("fate-receipt-gone"), None, |s| {
        s.object(
            "slow",
            Step::After(Duration::from_secs(400), ObjectFate::Delivered),
        )
    });
    let id = h.queue.send(&announcing(&["slow"]));
    let message = h.queue.take(&id, 1, Duration::from_secs(VISIBILITY));
    // Someone else deletes the message while the work runs (e.g. a second collector).
    let queue = h.queue.clone();
    let receipt = message.receipt.clone().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(90)).await;
        queue.delete(&receipt).await.unwrap();
    });
    fate::handle(h.ctx.clone(), message, h.hard_stop.clone()).await;
    // One beat at 60 s, a failed one at 120 s, then none: the work still ran to the end.
    assert_eq!(h.queue.visibility_changes(), [VISIBILITY, VISIBILITY]);
    assert_eq!(h.script.attempted(), ["slow"]);
    assert_eq!(h.messages("done"), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_work_leaves_the_message_for_redelivery() {
    let h = Harness::new(input("fate-shutdown"), None, |s| {
        s.object("k2", Step::UntilStopped)
    });
    let stop = h.hard_stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        stop.cancel();
    });
    let id = h.handle(&announcing(&["k1", "k2", "k3"]), 1).await;
    assert!(!h.deleted(&id));
    assert_eq!(
        h.script.attempted(),
        ["k1", "k2"],
        "the walk stops at shutdown"
    );
    // Not hurried back either: it reappears after its visibility timeout, for whoever polls.
    assert!(h.queue.visibility_changes().is_empty());
    assert_eq!(h.messages("interrupted"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_message_received_after_the_hard_stop_runs_no_object() {
    let h = Harness::new(input("fate-stopped"), None, |s| s);
    h.hard_stop.cancel();
    let id = h.handle(&announcing(&["k1"]), 1).await;
    assert!(!h.deleted(&id));
    assert!(h.script.attempted().is_empty());
    assert_eq!(h.messages("interrupted"), 1);
}

#[tokio::test(start_paused = true)]
async fn direct_mode_runs_the_body_and_takes_its_fate() {
    let mut settings = input("fate-direct");
    settings.direct_mode = true;
    let h = Harness::new(settings.clone(), None, |s| s);
    let id = h.handle("not a notification: the event itself", 1).await;
    assert!(h.deleted(&id));
    assert_eq!(h.script.attempted(), ["<body>"]);

    let h = Harness::new(settings, Some((1, PoisonAction::Delete)), |mut s| {
        s.body = Step::Now(failed(false));
        s
    });
    let id = h.handle("an event", 1).await;
    assert!(!h.deleted(&id), "an outage is not poison");
    assert_eq!(h.queue.visibility_changes(), [5]);
}

#[tokio::test(start_paused = true)]
async fn debug_md5_not_delivered_retries_before_any_object() {
    let mut settings = input("fate-md5");
    settings.debug_md5 = true;
    let h = Harness::new(settings, Some((1, PoisonAction::Delete)), |mut s| {
        s.md5 = Err("relay away".into());
        s
    });
    let id = h.handle(&announcing(&["k1"]), 1).await;
    assert!(!h.deleted(&id), "a relay outage never makes poison");
    assert_eq!(h.script.attempted(), ["<md5>"]);
    assert_eq!(h.queue.visibility_changes(), [5]);
}

#[tokio::test(start_paused = true)]
async fn a_message_without_a_receipt_is_ignored() {
    let h = Harness::new(input("fate-no-receipt"), None, |s| s);
    let id = h.queue.send(&announcing(&["k1"]));
    let mut message = h.queue.take(&id, 1, Duration::from_secs(VISIBILITY));
    message.receipt = None;
    fate::handle(h.ctx.clone(), message, h.hard_stop.clone()).await;
    assert!(h.script.attempted().is_empty());
    assert!(!h.deleted(&id));
}

#[tokio::test(start_paused = true)]
async fn a_failed_delete_is_retried_alone_and_a_lasting_one_leaves_a_duplicate() {
    let h = Harness::new(input("fate-delete-retry"), None, |s| s);
    // The batch entry fails, the first single retry fails, the second deletes.
    h.queue.fail_deletes(2);
    let id = h.handle(&announcing(&["k1"]), 1).await;
    assert!(h.deleted(&id));
    let deletes: Vec<bool> = h
        .queue
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Delete { ok, .. } => Some(ok),
            _ => None,
        })
        .collect();
    assert_eq!(deletes, [false, true]);

    h.queue.fail_deletes(100);
    let id = h.handle(&announcing(&["k1"]), 1).await;
    assert!(
        !h.deleted(&id),
        "redelivered later: a duplicate, never a loss"
    );
    assert_eq!(h.count(&telemetry::MESSAGES_DELETED, &[]), 1);
}

#[tokio::test(start_paused = true)]
async fn the_poison_policy_follows_the_config_then_the_dead_letter_queue() {
    let with_dlq = MemoryQueue::with_dead_letter_queue();
    let without = MemoryQueue::new();
    let plain = input("fate-policy");
    // No threshold configured: off with a DLQ (it takes failing messages), else 5 and delete.
    assert_eq!(fate::poison_policy(&with_dlq, &plain).await, None);
    assert_eq!(
        fate::poison_policy(&without, &plain).await,
        Some((5, PoisonAction::Delete))
    );
    // A configured threshold applies either way; the action defaults to keep with a DLQ.
    let mut configured = plain.clone();
    configured.max_receive_count = Some(3);
    assert_eq!(
        fate::poison_policy(&with_dlq, &configured).await,
        Some((3, PoisonAction::Keep))
    );
    configured.poison_action = Some(PoisonAction::Delete);
    assert_eq!(
        fate::poison_policy(&with_dlq, &configured).await,
        Some((3, PoisonAction::Delete))
    );
}

#[tokio::test(start_paused = true)]
async fn the_poll_loop_receives_within_the_cap_and_stops_at_shutdown() {
    let queue = Arc::new(MemoryQueue::new());
    let mut settings = input("fate-poll");
    settings.max_messages = 10;
    let h = Harness::on(queue.clone(), settings, None, |s| s);
    let ids: Vec<String> = (0..3).map(|_| queue.send(&announcing(&["k"]))).collect();
    let (intake, tracker) = (CancellationToken::new(), TaskTracker::new());
    // Room for two messages at a time: the third waits for a permit, never received early.
    let in_flight = Arc::new(Semaphore::new(2));
    tracker.spawn(super::poll::poll(
        h.ctx.clone(),
        in_flight,
        tracker.clone(),
        intake.clone(),
        h.hard_stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ids.iter().any(|id| queue.contains(id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "all deleted in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let receives: Vec<Vec<String>> = queue
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Receive(got) if !got.is_empty() => Some(got),
            _ => None,
        })
        .collect();
    assert!(receives.iter().all(|r| r.len() <= 2), "{receives:?}");
    intake.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(30), tracker.wait())
        .await
        .expect("the poll loop ends at shutdown");
    assert_eq!(h.messages("done"), 3);
}
