//! S3 errors and record anomalies end to end, through moto: a purged object version is
//! missing (logged with its version id, the message deleted), refusals that repeat
//! (`NoSuchBucket`, `InvalidObjectState` for an archived object) end in the poison policy,
//! and the record-level anomaly counters reach the collector's `/metrics`. The classes themselves are unit-tested in `src/object/fetch.rs`.

use std::time::Duration;

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use crate::support::*;

/// An S3 event notification for `bucket`/`key`, naming `version_id` when given.
fn notification(bucket: &str, key: &str, version_id: Option<&str>) -> String {
    let mut object = serde_json::json!({ "key": key });
    if let Some(version) = version_id {
        object["versionId"] = version.into();
    }
    serde_json::json!({ "Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": { "bucket": { "name": bucket }, "object": object }
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_version_is_missing() {
    let moto = Moto::start();
    let (wired, _) = unwired(&moto, "versions", "versions").await;
    wired
        .s3
        .put_bucket_versioning()
        .bucket(&wired.bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let put = |body: &'static [u8]| {
        wired
            .s3
            .put_object()
            .bucket(&wired.bucket)
            .key("v.log")
            .body(body.to_vec().into())
            .send()
    };
    let purged = put(b"purged version\n").await.unwrap().version_id.unwrap();
    let kept = put(b"kept version\n").await.unwrap().version_id.unwrap();
    wired
        .s3
        .delete_object()
        .bucket(&wired.bucket)
        .key("v.log")
        .version_id(&purged)
        .send()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::ZERO);
    let collector = start_collector(dir.path(), &moto, &wired, relay.port, "");
    wired
        .send(&notification(&wired.bucket, "v.log", Some(&purged)))
        .await;
    wired
        .send(&notification(&wired.bucket, "v.log", Some(&kept)))
        .await;

    let logged = wait_for(Duration::from_secs(30), || {
        !collector
            .stderr
            .matching(&["ERROR", "v.log", &purged, "NoSuchVersion"])
            .is_empty()
    })
    .await;
    assert!(logged, "no missing line: {}", collector.stderr.text());
    // The kept version is read by its id; the purged one is never read from the key.
    assert!(
        wait_for(Duration::from_secs(30), || relay
            .lines
            .counted()
            .contains_key("kept version"))
        .await
    );
    // Both messages deleted: the missing version never comes back.
    assert!(
        wired.wait_empty(Duration::from_secs(30)).await,
        "queue {:?}",
        wired.depth().await
    );
    assert_eq!(
        relay.lines.counted().len(),
        1,
        "{:?}",
        relay.lines.counted()
    );
    assert_eq!(
        metric_sum(
            &collector.metrics_text(),
            "sluice_objects_total",
            &[("input", "test"), ("outcome", "missing")]
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_become_poison() {
    let moto = Moto::start();
    let (wired, _) = unwired(&moto, "present", "refused").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::ZERO);
    let collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "max_receive_count = 2\npoison_action = \"delete\"",
    );
    wired
        .send(&notification("no-such-bucket", "a.log", None))
        .await;
    // Archived: GetObject answers InvalidObjectState until someone restores it.
    wired
        .s3
        .put_object()
        .bucket(&wired.bucket)
        .key("cold.log")
        .storage_class(aws_sdk_s3::types::StorageClass::DeepArchive)
        .body(b"frozen\n".to_vec().into())
        .send()
        .await
        .unwrap();
    wired
        .send(&notification(&wired.bucket, "cold.log", None))
        .await;
    wired.put("fine.log", b"still flows\n".to_vec()).await;
    wired
        .send(&notification(&wired.bucket, "fine.log", None))
        .await;

    let poisoned = wait_for(Duration::from_secs(60), || {
        let log = &collector.stderr;
        !log.matching(&["poison message", "no-such-bucket"])
            .is_empty()
            && !log.matching(&["poison message", "cold.log"]).is_empty()
    })
    .await;
    assert!(poisoned, "no poison line: {}", collector.stderr.text());
    assert!(relay.lines.counted().contains_key("still flows"));
    assert!(
        wired.wait_empty(Duration::from_secs(20)).await,
        "queue {:?}",
        wired.depth().await
    );
    // Refused on both receives, as a failure that repeats.
    let text = collector.metrics_text();
    assert_eq!(
        metric_sum(
            &text,
            "sluice_objects_total",
            &[("input", "test"), ("outcome", "no_such_bucket")]
        ),
        2,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "sluice_objects_total",
            &[("input", "test"), ("outcome", "archived")]
        ),
        2,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "sluice_messages_poison_total", &[("input", "test")]),
        2
    );
    assert!(!relay.lines.counted().contains_key("frozen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_anomalies_reach_the_metrics() {
    let moto = Moto::start();
    let wired = wire(&moto, "anomalies").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The relay takes events of 1 KiB at most: the collector's cap is lowered to it, so the
    // long record is cut (truncated) by the collector.
    let mut relay = start_relay(dir.path(), port, "[limits]\nmax_event_bytes = 1024\n");
    let collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        port,
        "processor = \"json_lines\"",
    );
    let long = format!("{{\"long\":\"{}\"}}", "x".repeat(4096));
    wired
        .put(
            "odd.json",
            format!("{{\"ok\":1}}\nnot json at all\n{long}\n").into_bytes(),
        )
        .await;

    let series = |kind: &str| {
        format!(
            "sluice_record_anomalies_total{{input=\"test\",processor=\"json_lines\",kind=\"{kind}\"}}"
        )
    };
    // The object's line is logged after its anomalies are counted.
    let delivered = wait_for(Duration::from_secs(30), || {
        !collector
            .stderr
            .matching(&["object delivered", "odd.json"])
            .is_empty()
    })
    .await;
    assert!(delivered, "{}", collector.stderr.text());
    let text = collector.metrics_text();
    assert_eq!(metric_value(&text, &series("truncated")), Some(1), "{text}");
    assert_eq!(
        metric_value(&text, &series("invalid_json")),
        Some(1),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, &series("dropped_oversize")),
        None,
        "{text}"
    );
    assert!(
        !collector
            .stderr
            .matching(&[
                "object delivered",
                "odd.json",
                "truncated=1",
                "invalid_json=1"
            ])
            .is_empty(),
        "{}",
        collector.stderr.text()
    );
    assert!(relay.alive());
}
