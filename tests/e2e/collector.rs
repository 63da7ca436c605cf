//! The collector in production conditions, against a real moto server: visibility heartbeat
//! with a slow relay, kill -9 mid-object, poison messages, role chaining, SIGTERM.

use std::time::Duration;

use crate::support::*;

/// Waits until the collector handled moto's s3:TestEvent and deleted it: it polls, and the
/// queue holds only what the test puts next.
async fn took_the_test_event(collector: &Proc, wired: &Wired) {
    let handled = wait_for(Duration::from_secs(30), || {
        !collector.stderr.matching(&["s3:TestEvent"]).is_empty()
    })
    .await;
    assert!(handled, "no s3:TestEvent handled");
    assert!(
        wired.wait_empty(Duration::from_secs(20)).await,
        "queue not empty: {:?}",
        wired.depth().await
    );
}

fn numbered(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{prefix} {i}\n"))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_a_slow_message_invisible_until_done() {
    let moto = Moto::start();
    let wired = wire(&moto, "heartbeat").await;
    let dir = tempfile::tempdir().unwrap();
    // Five one-event batches at 1.2 s each: about three visibility timeouts of work.
    let relay = SlowRelay::start(Duration::from_millis(1200));
    let collector = start_collector_with(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "max_events = 1",
        "sqs_visibility_timeout = 2",
    );
    // The s3:TestEvent is handled and gone, so a visible message below can only be ours.
    took_the_test_event(&collector, &wired).await;
    wired.put("slow.log", numbered("slow", 5)).await;

    let mut ever_visible = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while relay.lines.counted().len() < 5 && std::time::Instant::now() < deadline {
        let (visible, _) = wired.depth().await;
        ever_visible |= visible > 0 && !relay.lines.snapshot().is_empty();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        relay.lines.counted().len(),
        5,
        "{:?}",
        relay.lines.counted()
    );
    assert!(
        !ever_visible,
        "the message became visible while it was being processed"
    );
    // Nothing more can arrive: a redelivery would have sent lines again.
    assert!(
        settled(&wired, &collector, None, Duration::from_secs(20)).await,
        "not settled: queue {:?}, collector (received, handled) {:?}",
        wired.depth().await,
        collector_messages(&collector)
    );
    assert!(
        relay.lines.counted().values().all(|&n| n == 1),
        "{:?}",
        relay.lines.counted()
    );
    assert!(
        collector.stderr.matching(&["could not extend"]).is_empty(),
        "heartbeat failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_object_then_restart_delivers_everything() {
    let moto = Moto::start();
    let wired = wire(&moto, "kill").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::from_millis(300));
    let mut collector = start_collector_with(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "max_events = 1",
        "sqs_visibility_timeout = 3",
    );
    wired.put("big.log", numbered("line", 20)).await;
    wired.put("small.log", numbered("small", 2)).await;
    assert!(
        wait_for(Duration::from_secs(30), || relay.lines.snapshot().len()
            >= 3)
        .await
    );
    collector.child.kill().unwrap();
    collector.child.wait().unwrap();
    let before = relay.lines.snapshot().len();
    assert!(before < 22, "the kill came too late to be mid-object");

    let _collector = start_collector_with(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "max_events = 1",
        "sqs_visibility_timeout = 3",
    );
    let all = wait_for(Duration::from_secs(90), || {
        relay.lines.counted().len() >= 22
    })
    .await;
    assert!(all, "missing lines: got {:?}", relay.lines.counted());
    assert!(wired.wait_empty(Duration::from_secs(30)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_retried_then_handled_while_others_flow() {
    let moto = Moto::start();
    let wired = wire(&moto, "poison").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::ZERO);
    let collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "max_receive_count = 2\npoison_action = \"delete\"\nsqs_max_messages = 10",
    );
    wired
        .sqs
        .send_message()
        .queue_url(&wired.queue_url)
        .message_body("this is not a notification")
        .send()
        .await
        .unwrap();
    wired.put("good.log", b"good line\n".to_vec()).await;

    assert!(
        wait_for(Duration::from_secs(30), || relay
            .lines
            .counted()
            .contains_key("good line"))
        .await
    );
    let poisoned = wait_for(Duration::from_secs(60), || {
        !collector.stderr.matching(&["poison message"]).is_empty()
    })
    .await;
    assert!(poisoned, "no poison line");
    // It was tried twice (one undecodable error line per receive) before being handled.
    assert_eq!(collector.stderr.matching(&["undecodable message"]).len(), 2);
    assert!(wired.wait_empty(Duration::from_secs(20)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_chaining_assumes_both_roles_with_the_external_id() {
    let moto = Moto::start();
    // moto maps assumed-role credentials to the role's account, so both roles live in the
    // account that owns the bucket and queue.
    let wired = wire(&moto, "roles").await;
    http(&moto.endpoint, "POST", "/moto-api/recorder/start-recording");
    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::ZERO);
    let _collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "aws_base_account_role = \"arn:aws:iam::123456789012:role/devo-base\"\n\
         aws_cross_account_role = \"arn:aws:iam::123456789012:role/customer-cross\"\n\
         aws_external_id = \"ext-4242\"",
    );
    wired.put("roles.log", b"assumed\n".to_vec()).await;
    assert!(
        wait_for(Duration::from_secs(30), || relay
            .lines
            .counted()
            .contains_key("assumed"))
        .await
    );
    let bodies = recorded_bodies(&moto);
    let assume_calls: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("Action=AssumeRole"))
        .collect();
    let base = assume_calls
        .iter()
        .filter(|l| l.contains("role%2Fdevo-base") && l.contains("ExternalId=ext-4242"))
        .count();
    let cross = assume_calls
        .iter()
        .filter(|l| l.contains("role%2Fcustomer-cross") && l.contains("ExternalId=ext-4242"))
        .count();
    assert!(
        base >= 1 && cross >= 1,
        "AssumeRole calls: {assume_calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_work_exits_cleanly_and_deletes_nothing_unconfirmed() {
    let moto = Moto::start();
    let wired = wire(&moto, "sigterm").await;
    let dir = tempfile::tempdir().unwrap();
    // 30 batches at 1 s each cannot finish within the 3 s shutdown deadline.
    let relay = SlowRelay::start(Duration::from_secs(1));
    let mut collector =
        start_collector_with(dir.path(), &moto, &wired, relay.port, "max_events = 1", "");
    took_the_test_event(&collector, &wired).await;
    wired.put("long.log", numbered("long", 30)).await;
    assert!(
        wait_for(Duration::from_secs(30), || !relay
            .lines
            .snapshot()
            .is_empty())
        .await
    );
    let status = collector.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(relay.lines.snapshot().len() < 30);
    let (visible, in_flight) = wired.depth().await;
    assert_eq!(
        visible + in_flight,
        1,
        "the unconfirmed message was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_skips_an_object_already_delivered() {
    let moto = Moto::start();
    let wired = wire(&moto, "ledger").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::ZERO);
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"[relay]
url = "http://127.0.0.1:{port}"

[collector]
state_dir = "{state}"

[[inputs]]
name = "ledger"
short_unique_id = "led1"
base_url = "{queue}"
endpoint_url = "{endpoint}"
region = "us-east-1"
aws_access_key_id = "testing"
aws_secret_access_key = "testing"
sqs_wait_timeout = 1
"#,
            port = relay.port,
            state = dir.path().join("state").display(),
            queue = wired.queue_url,
            endpoint = moto.endpoint,
        ),
    )
    .unwrap();
    let collector = Proc::spawn(collector_binary(), &config, "collector");
    wired.put("once.log", b"only once\n".to_vec()).await;
    assert!(
        wait_for(Duration::from_secs(30), || relay
            .lines
            .counted()
            .contains_key("only once"))
        .await
    );
    // The same announcement again, as a redelivery would bring it.
    let body = format!(
        r#"{{"Records":[{{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"{}"}},"object":{{"key":"once.log"}}}}}}]}}"#,
        wired.bucket
    );
    wired.send(&body).await;
    let skipped = wait_for(Duration::from_secs(30), || {
        !collector.stderr.matching(&["already delivered"]).is_empty()
    })
    .await;
    assert!(skipped, "the ledger did not recognise the object");
    assert!(wired.wait_empty(Duration::from_secs(20)).await);
    assert_eq!(relay.lines.counted().get("only once"), Some(&1));
    assert!(dir.path().join("state/led1/objects.ledger").exists());
}
