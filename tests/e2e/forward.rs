//! The collector's forward stage against the real relay binary: a batch refused for its
//! size (413 under caps that shrank) or for one line (400 naming it) is repaired by a re-split
//! and loses nothing else; a peer refusing every repair ends the batch, not the loop; a multiline
//! event (a Java stack trace) reaches Devo as one line. Uses only the collector's public API
//! (`sluice::delivery::forward::Forwarder`), the channel crate and the formats crate.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use sluice::delivery::forward::{ForwardError, Forwarder, MAX_MALFORMED_DROPS};
use sluice_channel::client::ChannelClient;
use sluice_channel::encode::{BatchEncoder, EncodedBatch};
use sluice_formats::processor::Oversize;
use tokio_util::sync::CancellationToken;

/// The relay binary on a free port with `limits` as its `[limits]` table, printing Devo lines
/// on its stdout.
fn relay_with_limits(dir: &Path, limits: &str) -> (String, Proc) {
    let port = free_port();
    let relay = start_relay(dir, port, &format!("[limits]\n{limits}\n"));
    (format!("http://127.0.0.1:{port}"), relay)
}

/// A collector counter of this test process, read from its exposition.
fn counter_value(name: &str, labels: &[(&str, &str)]) -> u64 {
    metric_sum(&sluice::telemetry::render(), name, labels)
}

fn forwarder(url: &str) -> Forwarder {
    let client = ChannelClient::new(url, None, Duration::from_secs(10)).unwrap();
    Forwarder::new(Arc::new(client), "t", CancellationToken::new())
}

/// The messages the relay printed, in order, once there are `n` (polled, 20 s at most).
async fn delivered(relay: &Proc, n: usize) -> Vec<String> {
    let messages = || -> Vec<String> {
        relay
            .stdout
            .snapshot()
            .iter()
            .map(|l| {
                let (_, _, m) = parse_devo_line(l).unwrap_or_else(|| panic!("not Devo: {l}"));
                m.to_string()
            })
            .collect()
    };
    wait_for(Duration::from_secs(20), || messages().len() >= n).await;
    messages()
}

fn numbered_with_long(long: usize) -> (EncodedBatch, Vec<String>) {
    let mut e = BatchEncoder::new(1);
    let mut expected = Vec::new();
    for i in 0..50 {
        let m = format!("line {i}");
        e.push("my.app.t", m.as_bytes());
        expected.push(m);
        if i == 20 {
            e.push("my.app.t", "L".repeat(long).as_bytes());
        }
    }
    (e.finish(), expected)
}

/// Events straight into a channel batch, as the collector's batcher does.
struct Encode(BatchEncoder);

impl sluice_formats::processor::EventSink for Encode {
    fn emit(
        &mut self,
        tag: &str,
        message: &[u8],
    ) -> Result<(), sluice_formats::processor::SinkError> {
        self.0.push(tag, message);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiline_event_crosses_the_channel_and_the_relay_as_one_line() {
    use sluice_formats::processor::{
        process, ObjectContext, ProcessingConfig, Selection, PROCESSING_KEYS,
    };
    assert!(PROCESSING_KEYS.contains(&"multiline"));
    let p: ProcessingConfig = toml::from_str(
        "tag = 'my.app.java'\n[multiline]\npattern = '^\\d{4}-'\nnegate = true\nmatch = 'after'\n",
    )
    .unwrap();
    let p = p.resolve(256).unwrap();
    let Selection::Process { spec, .. } = p.select("app.log") else {
        panic!("skipped")
    };
    let object = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/formats/fixtures/objects/java_stacktrace.log"
    ))
    .unwrap();
    let mut sink = Encode(BatchEncoder::new(1));
    let stats = process(
        &mut &object[..],
        spec,
        &ObjectContext::new("b", "app.log"),
        &mut sink,
    )
    .unwrap();
    assert_eq!(stats.events, 3);
    let dir = tempfile::tempdir().unwrap();
    let (url, relay) = relay_with_limits(dir.path(), "max_event_bytes = 65536");
    let c = forwarder(&url)
        .deliver_with("multiline", Oversize::Truncate, &sink.0.finish())
        .await
        .unwrap();
    assert_eq!(c.events, 3);
    // Devo gets one syslog line per record; the joined lines are separated by `\n` (backslash,
    // n) in the message, tabs kept.
    let got = delivered(&relay, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[1].starts_with(
        "2024-05-01 10:00:01,456 ERROR [worker-1] com.example.Job - job failed\\njava.lang.IllegalStateException: could not open /data/in.csv\\n\tat com.example.Job.open(Job.java:42)\\n"
    ), "{}", got[1]);
    assert!(got[1].ends_with("\\n\t... 2 more"), "{}", got[1]);
    assert!(got[2].ends_with("com.example.App - done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_under_stale_limits_is_repaired_by_truncating() {
    let dir = tempfile::tempdir().unwrap();
    let (url, relay) = relay_with_limits(dir.path(), "max_event_bytes = 100");
    // Agreed with the v1 defaults (1 MiB events): the relay has shrunk since.
    let f = forwarder(&url);
    let (batch, mut expected) = numbered_with_long(500);
    let c = f
        .deliver_with("repair-truncate", Oversize::Truncate, &batch)
        .await
        .unwrap();
    assert_eq!(c.events, 51);
    expected.insert(21, "L".repeat(100));
    assert_eq!(delivered(&relay, 51).await, expected);
    assert_eq!(f.limits().event_bytes, 100, "fresh limits kept");
    let count = |action| {
        counter_value(
            "sluice_resplit_events_total",
            &[("input", "repair-truncate"), ("action", action)],
        )
    };
    assert_eq!(count("truncated"), 1);
    assert_eq!(
        counter_value(
            "sluice_batches_resplit_total",
            &[("input", "repair-truncate"), ("status", "413")]
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_repair_drops_by_the_drop_rule_and_splits_under_the_body_cap() {
    let dir = tempfile::tempdir().unwrap();
    // 400 decompressed bytes: the 50 short lines (about 830 bytes) need three parts.
    let (url, relay) = relay_with_limits(
        dir.path(),
        "max_event_bytes = 100\nmax_body_bytes = 2000\nmax_batch_bytes = 400",
    );
    let f = forwarder(&url);
    let (batch, expected) = numbered_with_long(500);
    let c = f
        .deliver_with("repair-drop", Oversize::Drop, &batch)
        .await
        .unwrap();
    assert_eq!(c.events, 50);
    assert_eq!(delivered(&relay, 50).await, expected);
    assert_eq!(
        counter_value(
            "sluice_resplit_events_total",
            &[("input", "repair-drop"), ("action", "dropped_oversize")]
        ),
        1
    );
    assert!(
        counter_value(
            "sluice_batches_confirmed_total",
            &[("input", "repair-drop")]
        ) >= 3,
        "sent in parts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_the_relay_names_malformed_is_dropped_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (url, relay) = relay_with_limits(dir.path(), "");
    let f = forwarder(&url);
    let mut e = BatchEncoder::new(1);
    e.push("my.app.t", b"before");
    e.push("single", b"a tag of one level");
    e.push("my.app.t", b"after");
    let c = f
        .deliver_with("repair-400", Oversize::Truncate, &e.finish())
        .await
        .unwrap();
    assert_eq!(c.events, 2);
    assert_eq!(delivered(&relay, 2).await, ["before", "after"]);
    assert_eq!(
        counter_value(
            "sluice_resplit_events_total",
            &[("input", "repair-400"), ("action", "dropped_malformed")]
        ),
        1
    );
}

/// A peer answering every POST with `status` and `reason`, and 404 to `GET /v1/limits`;
/// returns its URL and the count of POSTs.
async fn refusing(status: u16, reason: &'static str) -> (String, Arc<AtomicU64>) {
    let posts = Arc::new(AtomicU64::new(0));
    let count = posts.clone();
    let peer = StandIn::start(move |request| {
        if request.method == "POST" {
            count.fetch_add(1, Ordering::Relaxed);
            (status, format!("{{\"error\":\"{reason}\"}}"))
        } else {
            (404, "{}".to_string())
        }
    });
    (peer.url(), posts)
}

#[tokio::test]
async fn a_relay_refusing_every_repair_ends_the_batch_not_the_loop() {
    let (batch, _) = numbered_with_long(10);
    // 413 whatever the size: one re-split under the (default) limits, then no second
    // one under the same limits.
    let (url, posts) = refusing(413, "too large").await;
    let e = forwarder(&url)
        .deliver_with("refuse-413", Oversize::Truncate, &batch)
        .await
        .unwrap_err();
    assert!(matches!(e, ForwardError::Refused(_)), "{e}");
    assert_eq!(posts.load(Ordering::Relaxed), 2);
    // 400 naming line 1 again and again: at most MAX_MALFORMED_DROPS lines go.
    let (url, posts) = refusing(400, "line 1: bad").await;
    let e = forwarder(&url)
        .deliver_with("refuse-400", Oversize::Truncate, &batch)
        .await
        .unwrap_err();
    assert!(matches!(e, ForwardError::Refused(_)), "{e}");
    assert_eq!(
        posts.load(Ordering::Relaxed),
        u64::from(MAX_MALFORMED_DROPS) + 1
    );
    // 400 naming no line: refused at once.
    let (url, posts) = refusing(400, "body is not valid gzip").await;
    assert!(forwarder(&url)
        .deliver_with("refuse-gzip", Oversize::Truncate, &batch)
        .await
        .is_err());
    assert_eq!(posts.load(Ordering::Relaxed), 1);
    assert_eq!(
        counter_value("sluice_batches_refused_total", &[("input", "refuse-413")]),
        1
    );
}
