//! End-to-end: objects announced on a real (moto) SQS queue arrive at the relay's stdout as
//! Devo lines, and messages are deleted only after the relay confirmed them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

const TAG: &str = "my.app.sluice.test";

fn expect_lines(expected: &[&str]) -> BTreeMap<String, usize> {
    expected.iter().map(|l| (l.to_string(), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_objects_arrive_exactly_once_and_queue_empties() {
    let moto = Moto::start();
    let wired = wire(&moto, "three").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = start_relay(dir.path(), port, "");
    let mut collector = start_collector(dir.path(), &moto, &wired, port, "");

    let mut two_members = gzip(b"gz one\r\ngz two\n");
    two_members.extend(gzip(b"gz three\n\n"));
    wired.put("logs/two-members.gz", two_members).await;
    wired
        .put("logs/plain.log", b"plain one\nplain two".to_vec())
        .await;
    wired
        .put("dir/a b+c=d.log", b"odd key line\n".to_vec())
        .await;

    let expected = expect_lines(&[
        "gz one",
        "gz two",
        "gz three",
        "plain one",
        "plain two",
        "odd key line",
    ]);
    let arrived = wait_for(Duration::from_secs(60), || {
        relay_messages(&relay, Some("testhost"), TAG).len() >= expected.len()
    })
    .await;
    assert!(
        arrived,
        "got {:?}",
        relay_messages(&relay, Some("testhost"), TAG)
    );
    // Nothing more can arrive (queue empty, every message handled, the relay printed all it
    // took): no redelivery, no duplicate.
    assert!(
        settled(&wired, &collector, Some(&relay), Duration::from_secs(20)).await,
        "not settled: queue {:?}",
        wired.depth().await
    );
    assert_eq!(relay_messages(&relay, Some("testhost"), TAG), expected);
    assert!(collector.alive());
    assert!(collector.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_then_up_loses_nothing() {
    let moto = Moto::start();
    let wired = wire(&moto, "down").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let collector = start_collector(dir.path(), &moto, &wired, port, "");
    wired.put("a.log", b"first\nsecond\n".to_vec()).await;
    wired.put("b.log", gzip(b"third\n")).await;

    // No relay: the collector waits for its limits before it takes any message.
    let waiting = wait_for(Duration::from_secs(30), || {
        !collector
            .stderr
            .matching(&["relay limits unavailable, will retry"])
            .is_empty()
    })
    .await;
    assert!(waiting, "the collector did not wait for the relay");
    let (visible, in_flight) = wired.depth().await;
    assert!(
        visible >= 2 && in_flight == 0,
        "messages taken without a relay: {visible} {in_flight}"
    );

    let relay = start_relay(dir.path(), port, "");
    let arrived = wait_for(Duration::from_secs(60), || {
        relay_messages(&relay, Some("testhost"), TAG).len() >= 3
    })
    .await;
    assert!(
        arrived,
        "got {:?}",
        relay_messages(&relay, Some("testhost"), TAG)
    );
    assert!(
        settled(&wired, &collector, Some(&relay), Duration::from_secs(20)).await,
        "not settled: queue {:?}",
        wired.depth().await
    );
    assert_eq!(
        relay_messages(&relay, Some("testhost"), TAG),
        expect_lines(&["first", "second", "third"])
    );

    // The relay dies (SIGKILL) while the collector runs: the next object's batch is retried
    // and its message kept until a relay on the same spool confirms it.
    let mut relay = relay;
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let printed = relay.stdout.snapshot().len();
    wired.put("c.log", b"fourth\n".to_vec()).await;
    let retrying = wait_for(Duration::from_secs(30), || {
        !collector
            .stderr
            .matching(&["relay not confirming, will retry"])
            .is_empty()
    })
    .await;
    assert!(retrying, "the collector did not retry the batch");
    let (visible, in_flight) = wired.depth().await;
    assert_eq!(
        visible + in_flight,
        1,
        "the unconfirmed message was deleted"
    );
    let relay = start_relay(dir.path(), port, "");
    let arrived = wait_for(Duration::from_secs(60), || {
        relay_messages(&relay, Some("testhost"), TAG).contains_key("fourth")
    })
    .await;
    assert!(
        arrived,
        "got {:?} after {printed} lines",
        relay_messages(&relay, Some("testhost"), TAG)
    );
    assert!(
        settled(&wired, &collector, Some(&relay), Duration::from_secs(20)).await,
        "not settled: queue {:?}",
        wired.depth().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_messages_false_keeps_the_message() {
    let moto = Moto::start();
    let wired = wire(&moto, "noack").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = start_relay(dir.path(), port, "");
    let mut collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        port,
        "ack_messages = false\nsqs_visibility_timeout = 3",
    );
    // The collector took moto's s3:TestEvent: it polls.
    let polling = wait_for(Duration::from_secs(30), || {
        !collector.stderr.matching(&["s3:TestEvent"]).is_empty()
    })
    .await;
    assert!(polling, "no s3:TestEvent handled");
    wired.put("keep.log", b"kept line\n".to_vec()).await;
    let arrived = wait_for(Duration::from_secs(30), || {
        relay_messages(&relay, Some("testhost"), TAG).contains_key("kept line")
    })
    .await;
    assert!(arrived);
    // Stop the collector so the message rests in the queue, then watch it come back visible:
    // ours, the one announcing keep.log (the s3:TestEvent is kept too).
    assert!(collector.terminate().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut back = false;
    while !back && std::time::Instant::now() < deadline {
        back = wired.peek().await.iter().any(|b| b.contains("keep.log"));
        if !back {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        back,
        "message not back in the queue: {:?}",
        wired.depth().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_object_is_a_clear_error_and_a_line_over_the_relays_cap_is_cut_to_it() {
    let moto = Moto::start();
    let wired = wire(&moto, "errors").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The relay takes events of 1 KiB at most; the collector allows 1 MiB, so its cap is
    // lowered to the relay's at start and a 4 KiB line arrives cut to 1 KiB, not refused.
    let mut relay = start_relay(dir.path(), port, "[limits]\nmax_event_bytes = 1024\n");
    let mut collector = start_collector(dir.path(), &moto, &wired, port, "");

    wired.put("gone.log", b"never read\n".to_vec()).await;
    wired
        .s3
        .delete_object()
        .bucket(&wired.bucket)
        .key("gone.log")
        .send()
        .await
        .unwrap();
    let long = "x".repeat(4096);
    wired
        .put("huge.log", format!("{long}\n").into_bytes())
        .await;
    wired.put("fine.log", b"still flows\n".to_vec()).await;

    let missing = wait_for(Duration::from_secs(30), || {
        !collector
            .stderr
            .matching(&["ERROR", &wired.queue_url, "errors", "gone.log"])
            .is_empty()
    })
    .await;
    assert!(missing, "no error line for the missing object");
    let arrived = wait_for(Duration::from_secs(30), || {
        let m = relay_messages(&relay, Some("testhost"), TAG);
        m.contains_key("still flows") && m.contains_key(&long[..1024])
    })
    .await;
    assert!(
        arrived,
        "got {:?}",
        relay_messages(&relay, Some("testhost"), TAG)
            .keys()
            .map(|k| k.len())
            .collect::<Vec<_>>()
    );
    assert!(
        settled(&wired, &collector, Some(&relay), Duration::from_secs(20)).await,
        "not settled: queue {:?}",
        wired.depth().await
    );
    assert_eq!(
        relay_messages(&relay, Some("testhost"), TAG),
        expect_lines(&["still flows", &long[..1024]])
    );
    assert_eq!(
        collector
            .stderr
            .matching(&[
                "lowered to fit the relay's limits",
                "inputs.test.max_event_bytes"
            ])
            .len(),
        1
    );
    assert_eq!(
        metric_sum(
            &collector.metrics_text(),
            "sluice_events_truncated_total",
            &[("input", "test")]
        ),
        1
    );
    // One error line for the missing object (deleted: it never comes back), none for the
    // long line.
    assert_eq!(collector.stderr.matching(&["ERROR", "gone.log"]).len(), 1);
    assert!(collector.stderr.matching(&["ERROR", "huge.log"]).is_empty());
    assert!(collector.alive() && relay.alive());
}

/// Lines that barely compress, so a few objects overflow a small spool.
fn noisy_lines(prefix: &str, n: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ prefix.len() as u64;
    let mut out = String::new();
    for i in 0..n {
        let mut line = format!("{prefix}-{i} ");
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            line.push_str(&format!("{state:016x}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_pushes_back_to_the_collector_then_everything_flows() {
    let moto = Moto::start();
    let wired = wire(&moto, "backpressure").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let downstream = free_port();
    // A 256 KiB spool whose second output (an in-house relay) is down: it fills and stays
    // full until that output drains.
    // `start_relay` puts this text right after `[spool] dir`, so the first line is a spool key.
    let _relay = start_relay(
        dir.path(),
        port,
        &format!(
            "max_bytes = 262144\n\n[limits]\nmax_body_bytes = 65536\n\n\
             [[outputs]]\ntype = \"relay\"\naddress = \"127.0.0.1:{downstream}\"\nbackoff_max_ms = 500\n"
        ),
    );
    let collector = start_collector_with(
        dir.path(),
        &moto,
        &wired,
        port,
        "max_bytes = 32768\nmax_age_ms = 200",
        "",
    );
    for name in ["a", "b", "c"] {
        wired
            .put(&format!("{name}.log"), noisy_lines(name, 1500))
            .await;
    }
    let pushed_back = wait_for(Duration::from_secs(60), || {
        !collector.stderr.matching(&["429"]).is_empty()
    })
    .await;
    assert!(pushed_back, "the relay never answered 429");
    let (visible, in_flight) = wired.depth().await;
    assert!(
        visible + in_flight >= 1,
        "a message was deleted while its batches were refused"
    );

    // The downstream comes up: the spool drains, the collector's retries go through.
    let receiver = Receiver::start(&format!("127.0.0.1:{downstream}"), None);
    let expected = 3 * 1500;
    let all = wait_for(Duration::from_secs(120), || {
        let mut seen: Vec<String> = receiver
            .lines()
            .iter()
            .filter_map(|l| {
                let line = String::from_utf8_lossy(l);
                parse_devo_line(line.trim_end()).map(|(_, _, m)| m.to_string())
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen.len() >= expected
    })
    .await;
    assert!(all, "only {} lines downstream", receiver.lines().len());
    assert!(
        wired.wait_empty(Duration::from_secs(20)).await,
        "queue not empty: {:?}",
        wired.depth().await
    );
}
