//! What a bad object costs, end to end through moto and the real collector (against a
//! stand-in relay that records every line it confirms):
//!
//! - a message naming three objects whose first is a corrupt gzip: the two good objects are
//!   delivered whole, the bad one's readable lines too, and the message ends deleted by the
//!   poison policy with a log line naming the bad object;
//! - a truncated gzip: every line the truncated bytes give arrives exactly once across the
//!   redeliveries (the ledger's checkpoint), then the poison policy ends the message;
//! - a CloudTrail object with one record nested too deep among 4,000: all 4,000 arrive and
//!   the message is deleted.
//!
//! The queues have no dead-letter queue, so `poison_action` defaults to `delete`.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix} {i}\n")).collect()
}

/// The complete lines (LF-terminated) a one-member gzip stream gives before it ends or fails,
/// inflated here with zlib's own interface, output counted even in the call that fails
/// (flate2's `Read` adapters drop that call's output).
fn readable_lines(gz: &[u8]) -> Vec<String> {
    let mut z = flate2::Decompress::new_gzip(15);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let (before_in, before_out) = (z.total_in(), z.total_out());
        let input = &gz[before_in as usize..];
        let status = z.decompress(input, &mut chunk, flate2::FlushDecompress::Finish);
        let written = (z.total_out() - before_out) as usize;
        out.extend_from_slice(&chunk[..written]);
        match status {
            Ok(flate2::Status::StreamEnd) | Err(_) => break,
            Ok(_) if written == 0 && z.total_in() == before_in => break,
            Ok(_) => {}
        }
    }
    let text = String::from_utf8(out).expect("numbered lines are text");
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().map(str::to_string).collect()
}

/// An S3 notification naming `keys` in `bucket`, as S3 would send it.
fn notification(bucket: &str, keys: &[&str]) -> String {
    let records: Vec<serde_json::Value> = keys
        .iter()
        .map(|key| {
            serde_json::json!({
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key}}
            })
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}

/// Waits until `expected` all arrived, the queue is empty and `log` (all of its needles) was
/// logged; then checks every expected line arrived exactly once, also a moment later.
async fn settle(
    relay: &SlowRelay,
    wired: &Wired,
    collector: &Proc,
    expected: &[String],
    log: &[&str],
) {
    let arrived = wait_for(Duration::from_secs(90), || {
        let got = relay.lines.counted();
        expected.iter().all(|l| got.contains_key(l)) && !collector.stderr.matching(log).is_empty()
    })
    .await;
    let got = relay.lines.counted();
    let missing: Vec<&String> = expected.iter().filter(|l| !got.contains_key(*l)).collect();
    assert!(
        arrived,
        "{} of {} lines missing (first {:?}); log {log:?} seen: {}",
        missing.len(),
        expected.len(),
        missing.first(),
        !collector.stderr.matching(log).is_empty()
    );
    assert!(
        wired.wait_empty(Duration::from_secs(30)).await,
        "message not deleted: {:?}",
        wired.depth().await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = relay.lines.counted();
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} lines sent more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    let unexpected: Vec<&String> = got.keys().filter(|l| !expected.contains(l)).collect();
    assert!(unexpected.is_empty(), "unexpected lines {unexpected:?}");
}

/// A gzip of `lines` whose deflate stream is corrupt after the first `good` lines: a sync
/// flush ends a block on a byte boundary there, and the next block header is overwritten with
/// the reserved block type 3. The rest of the object is unreadable.
fn corrupt_gzip(lines: &str, good: usize) -> Vec<u8> {
    let split = lines
        .match_indices('\n')
        .nth(good - 1)
        .expect("enough lines")
        .0
        + 1;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&lines.as_bytes()[..split]).unwrap();
    enc.flush().unwrap();
    let at = enc.get_ref().len();
    enc.write_all(&lines.as_bytes()[split..]).unwrap();
    let mut gz = enc.finish().unwrap();
    gz[at] = 0x07; // BFINAL = 1, BTYPE = 11 (reserved)
    gz
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_first_object_costs_the_others_nothing() {
    let moto = Moto::start();
    let (wired, _) = unwired(&moto, "fate-three", "fate-three").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::ZERO);

    let bad_lines = numbered("bad", 0..1000);
    let bad = corrupt_gzip(&bad_lines, 600);
    let readable = readable_lines(&bad);
    assert_eq!(
        readable.len(),
        600,
        "the corruption is where the test put it"
    );
    let good_a = numbered("good-a", 0..505);
    let good_b = numbered("good-b", 0..505);
    wired.put("bad.log.gz", bad).await;
    wired.put("good-a.log", good_a.clone().into_bytes()).await;
    wired.put("good-b.log.gz", gzip(good_b.as_bytes())).await;
    wired
        .send(&notification(
            &wired.bucket,
            &["bad.log.gz", "good-a.log", "good-b.log.gz"],
        ))
        .await;

    let collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "max_receive_count = 2",
    );
    let expected: Vec<String> = good_a
        .lines()
        .chain(good_b.lines())
        .map(str::to_string)
        .chain(readable)
        .collect();
    assert_eq!(expected.len(), 1610);
    settle(
        &relay,
        &wired,
        &collector,
        &expected,
        &["poison message", "s3://fate-three/bad.log.gz", "gzip"],
    )
    .await;
    // Tried on both receives; the good objects only once (the ledger knows them after).
    assert_eq!(
        collector
            .stderr
            .matching(&["object failed", "bad.log.gz"])
            .len(),
        2
    );
    assert_eq!(
        collector
            .stderr
            .matching(&["already delivered", "good-a.log"])
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_gzip_delivers_what_it_holds_once() {
    let moto = Moto::start();
    let wired = wire(&moto, "fate-truncated").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::ZERO);
    // Small batches, so the checkpoint moves many times per receive.
    let collector = start_collector_with(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "max_events = 1000\nmax_age_ms = 200",
        "max_receive_count = 3",
    );

    let full = gzip(numbered("line", 0..12_000).as_bytes());
    let truncated = full[..full.len() * 2 / 3].to_vec();
    let expected = readable_lines(&truncated);
    assert!(
        (7_000..11_000).contains(&expected.len()),
        "{} readable lines",
        expected.len()
    );
    wired.put("cut.log.gz", truncated).await;

    settle(
        &relay,
        &wired,
        &collector,
        &expected,
        &["poison message", "s3://fate-truncated/cut.log.gz"],
    )
    .await;
    // Three receives: the first delivered everything readable, the redeliveries skipped it.
    let failures = collector.stderr.matching(&["object failed", "cut.log.gz"]);
    assert_eq!(failures.len(), 3, "{failures:#?}");
    let delivered = format!("events_delivered={}", expected.len());
    assert!(failures[0].contains(&delivered), "{}", failures[0]);
    let skipped = format!("events_skipped={}", expected.len());
    assert!(
        failures[1..]
            .iter()
            .all(|l| l.contains("events_delivered=0") && l.contains(&skipped)),
        "{failures:#?}"
    );
}

/// A CloudTrail record of about 300 bytes.
fn cloudtrail_record(i: usize) -> String {
    format!(
        r#"{{"eventVersion":"1.08","userIdentity":{{"type":"AssumedRole","accountId":"123456789012"}},"eventTime":"2024-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"eu-west-1","requestParameters":{{"key":"k/{i}"}},"eventID":"event-{i}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_too_deep_cloudtrail_record_costs_only_itself() {
    let moto = Moto::start();
    let wired = wire(&moto, "fate-deep").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = SlowRelay::start(Duration::ZERO);
    let collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        relay.port,
        "processor = \"cloudtrail\"",
    );

    let good: Vec<String> = (0..4000).map(cloudtrail_record).collect();
    let deep = format!(
        r#"{{"eventID":"deep","requestParameters":{}"x"{}}}"#,
        "{\"a\":[".repeat(150),
        "]}".repeat(150)
    );
    let mut records: Vec<&str> = good.iter().map(String::as_str).collect();
    records.insert(2000, &deep);
    let doc = format!("{{\"Records\":[\n{}\n]}}\n", records.join(",\n"));
    wired
        .put(
            "AWSLogs/123456789012/CloudTrail/eu-west-1/ct.json.gz",
            gzip(doc.as_bytes()),
        )
        .await;

    settle(
        &relay,
        &wired,
        &collector,
        &good,
        &["object delivered", "ct.json.gz"],
    )
    .await;
    assert_eq!(
        collector
            .stderr
            .matching(&["malformed records", "malformed_records=1"])
            .len(),
        1
    );
}
