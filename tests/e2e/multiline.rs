//! End-to-end: multi-line records (a Java stack trace, a Kafka/MSK broker log) announced on a
//! real (moto) queue arrive at the relay's Devo output as one event per record, with the input's
//! `multiline` table (crates/formats/docs/formats.md, "Multiline").

use std::time::Duration;

use crate::support::*;

const TAG: &str = "my.app.sluice.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_traces_and_broker_logs_arrive_one_event_per_record() {
    let moto = Moto::start();
    let wired = wire(&moto, "multiline").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = start_relay(dir.path(), port, "");
    // A record starts with a timestamp, bare (log4j) or bracketed (Kafka); every other line
    // belongs to the record before it.
    let collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        port,
        "multiline = { pattern = '^\\[?\\d{4}-\\d{2}-\\d{2} ', negate = true, match = 'after' }",
    );
    let fixture = |name: &str| {
        std::fs::read(format!(
            "{}/crates/formats/fixtures/objects/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    wired
        .put("app/java.log", fixture("java_stacktrace.log"))
        .await;
    wired
        .put(
            "AWSLogs/KafkaBrokerLogs/b-1.log.gz",
            fixture("msk_broker_multiline.log.gz"),
        )
        .await;

    // Three log4j records and four broker records.
    let arrived = wait_for(Duration::from_secs(60), || {
        relay_messages(&relay, Some("testhost"), TAG).len() >= 7
    })
    .await;
    let got = relay_messages(&relay, Some("testhost"), TAG);
    assert!(arrived, "got {got:?}");
    assert!(
        settled(&wired, &collector, Some(&relay), Duration::from_secs(20)).await,
        "not settled: queue {:?}",
        wired.depth().await
    );
    let got = relay_messages(&relay, Some("testhost"), TAG);
    assert_eq!(got.len(), 7, "{got:?}");
    assert!(
        got.values().all(|&n| n == 1),
        "a record arrived twice: {got:?}"
    );
    assert!(
        got.keys()
            .all(|m| m.starts_with("2024-") || m.starts_with("[2024-")),
        "a continuation line arrived as its own event: {got:?}"
    );
    // The stack trace is one event, its lines joined by `\n` (escaped on the wire).
    let trace = got
        .keys()
        .find(|m| m.contains("job failed"))
        .expect("the failing job's record");
    assert!(
        trace.contains("\\nCaused by: java.io.FileNotFoundException")
            && trace.ends_with("... 2 more"),
        "{trace}"
    );
    let config = got
        .keys()
        .find(|m| m.contains("KafkaConfig values"))
        .expect("the broker's config record");
    assert!(config.contains("broker.id = 1"), "{config}");
}
